"""The TLS 1.3 key schedule and record protection, written out to be read (sans-IO).

Theory of operation
-------------------
A TLS 1.3 connection turns one (EC)DHE shared secret into a ladder of secrets, each
bound to the handshake transcript so far (RFC 8446 §7.1).  Every rung is
``HKDF-Extract`` (mix new key material in) or ``Derive-Secret`` (branch off a
labelled secret, bound to a transcript hash)::

                 0
                 |
     PSK (or 0) -> HKDF-Extract = early_secret
                 |
           Derive-Secret(., "derived", "")
                 |
   (EC)DHE  ->  HKDF-Extract = handshake_secret
                 +--> Derive-Secret(., "c hs traffic", ClientHello..ServerHello)
                 +--> Derive-Secret(., "s hs traffic", ClientHello..ServerHello)
           Derive-Secret(., "derived", "")
                 |
          0 ->  HKDF-Extract = master_secret
                 +--> Derive-Secret(., "c ap traffic", ClientHello..server Finished)
                 +--> Derive-Secret(., "s ap traffic", ClientHello..server Finished)
                 +--> Derive-Secret(., "exp master",   ClientHello..server Finished)
                 +--> Derive-Secret(., "res master",   ClientHello..client Finished)

A *traffic secret* then gives a key and an IV (§7.3), and each record is sealed with
an AEAD (§5.2): nonce = IV XOR the record's sequence number (§5.3), associated data
= the 5-byte record header.  Inside, the plaintext is followed by its real content
type and optional zero padding (§5.4), so on the wire every protected record looks
like ``application_data``.

OpenSSL (``SSLContext.keylog_filename``) writes the four traffic secrets to a key log
(``parse_key_log``).  With them, ``decrypt_connection`` reads a recorded TLS 1.3
connection the way Wireshark does: find the client random in the ClientHello and the
cipher suite in the ServerHello, then open each protected record in turn, switching
from handshake to application keys after each side's Finished.  That is the whole
point of the lab's "who sees what" table: the bytes on the wire are opaque to
everyone without these secrets.

Only TLS 1.3 is decrypted here (TLS 1.2 uses a different PRF and record format; the
capture tools use scapy or tshark for it), and 0-RTT early data is not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from proxy.errors import TLSDecryptError, TLSParseError
from proxy.tls.clienthello import NEED_DATA, ClientHelloReader
from proxy.tls.records import (
    MAX_CIPHERTEXT_LENGTH,
    MAX_PLAINTEXT_LENGTH,
    ByteReader,
    ContentType,
    HandshakeReassembler,
    HandshakeType,
    Record,
    iter_records,
    split_records,
)


# --------------------------------------------------------------------------- cipher suites
@dataclass(frozen=True)
class CipherSuite:
    """A TLS 1.3 suite names only its AEAD and its hash (RFC 8446 §B.4)."""

    code: int
    name: str
    hash_name: str                  # "sha256" / "sha384": the HKDF and transcript hash
    key_length: int
    aead: type                      # AESGCM or ChaCha20Poly1305 (cryptography)
    iv_length: int = 12
    tag_length: int = 16

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()

    @property
    def hash_length(self) -> int:
        return self.hash_algorithm.digest_size


TLS_AES_128_GCM_SHA256 = CipherSuite(0x1301, "TLS_AES_128_GCM_SHA256", "sha256", 16, AESGCM)
TLS_AES_256_GCM_SHA384 = CipherSuite(0x1302, "TLS_AES_256_GCM_SHA384", "sha384", 32, AESGCM)
TLS_CHACHA20_POLY1305_SHA256 = CipherSuite(0x1303, "TLS_CHACHA20_POLY1305_SHA256", "sha256", 32,
                                           ChaCha20Poly1305)
CIPHER_SUITES: dict[int, CipherSuite] = {
    suite.code: suite for suite in (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)
}


def cipher_suite(code_or_name: int | str) -> CipherSuite:
    """Look a suite up by IANA code (0x1301) or by name (as ``SSLSocket.cipher()[0]`` gives it)."""
    for suite in CIPHER_SUITES.values():
        if code_or_name in (suite.code, suite.name):
            return suite
    raise TLSParseError(f"cipher suite {code_or_name!r} is not a TLS 1.3 suite this module knows",
                        alert=40)


# --------------------------------------------------------------------------- HKDF (RFC 5869)
def hkdf_extract(salt: bytes, ikm: bytes, suite: CipherSuite) -> bytes:
    """HKDF-Extract: PRK = HMAC-Hash(salt, IKM).  Concentrates the entropy of ``ikm``."""
    mac = hmac.HMAC(salt or bytes(suite.hash_length), suite.hash_algorithm)
    mac.update(ikm)
    return mac.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int, suite: CipherSuite) -> bytes:
    """HKDF-Expand: T(i) = HMAC(PRK, T(i-1) | info | i); output = first ``length`` bytes."""
    output, block, counter = b"", b"", 1
    while len(output) < length:
        mac = hmac.HMAC(prk, suite.hash_algorithm)
        mac.update(block + info + bytes([counter]))
        block = mac.finalize()
        output += block
        counter += 1
    return output[:length]


def hkdf_expand_label(secret: bytes, label: str | bytes, context: bytes, length: int,
                      suite: CipherSuite) -> bytes:
    """RFC 8446 §7.1: HKDF-Expand with ``info`` = HkdfLabel::

        struct { uint16 length; opaque label<7..255> = "tls13 " + Label; opaque context<0..255>; }

    The label and the output length are both inside ``info``, so keys for different
    purposes (or sizes) can never coincide even when derived from one secret.
    """
    full_label = b"tls13 " + (label.encode("ascii") if isinstance(label, str) else label)
    info = (length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label
            + bytes([len(context)]) + context)
    return hkdf_expand(secret, info, length, suite)


def transcript_hash(suite: CipherSuite, *messages: bytes) -> bytes:
    """Transcript-Hash (§4.4.1): the hash of the concatenated handshake messages, each
    with its 4-byte handshake header and without record headers."""
    digest = hashes.Hash(suite.hash_algorithm)
    for message in messages:
        digest.update(message)
    return digest.finalize()


def derive_secret(secret: bytes, label: str, transcript_hash_value: bytes, suite: CipherSuite) -> bytes:
    """Derive-Secret(Secret, Label, Messages) = HKDF-Expand-Label(Secret, Label,
    Transcript-Hash(Messages), Hash.length).  Takes the hash, not the messages."""
    return hkdf_expand_label(secret, label, transcript_hash_value, suite.hash_length, suite)


# --------------------------------------------------------------------------- the schedule
@dataclass(frozen=True)
class KeySchedule:
    """Every secret of one full handshake, in the order RFC 8446 §7.1 derives them."""

    suite: CipherSuite
    early_secret: bytes
    derived_for_handshake: bytes
    handshake_secret: bytes
    client_handshake_traffic_secret: bytes
    server_handshake_traffic_secret: bytes
    derived_for_master: bytes
    master_secret: bytes
    client_application_traffic_secret_0: bytes
    server_application_traffic_secret_0: bytes
    exporter_master_secret: bytes
    resumption_master_secret: bytes | None = None

    def steps(self) -> list[tuple[str, bytes]]:
        """(name, value) pairs in derivation order, for a notebook to print."""
        return [(name, value) for name, value in vars(self).items()
                if name != "suite" and value is not None]

    def format(self) -> str:
        return "\n".join(f"{name:<38} {value.hex()}" for name, value in self.steps())


def key_schedule(suite: CipherSuite, shared_secret: bytes, hello_hash: bytes, server_finished_hash: bytes,
                 *, psk: bytes | None = None, client_finished_hash: bytes | None = None) -> KeySchedule:
    """Walk the §7.1 ladder.

    ``hello_hash`` = Transcript-Hash(ClientHello..ServerHello);
    ``server_finished_hash`` = Transcript-Hash(ClientHello..server Finished);
    ``client_finished_hash`` (optional) = ...client Finished, for the resumption secret.
    Without a PSK, its place is taken by a string of zeros (§7.1).
    """
    zeros = bytes(suite.hash_length)
    empty_hash = transcript_hash(suite)
    early_secret = hkdf_extract(zeros, psk or zeros, suite)
    derived_for_handshake = derive_secret(early_secret, "derived", empty_hash, suite)
    handshake_secret = hkdf_extract(derived_for_handshake, shared_secret, suite)
    derived_for_master = derive_secret(handshake_secret, "derived", empty_hash, suite)
    master_secret = hkdf_extract(derived_for_master, zeros, suite)
    return KeySchedule(
        suite=suite,
        early_secret=early_secret,
        derived_for_handshake=derived_for_handshake,
        handshake_secret=handshake_secret,
        client_handshake_traffic_secret=derive_secret(handshake_secret, "c hs traffic", hello_hash, suite),
        server_handshake_traffic_secret=derive_secret(handshake_secret, "s hs traffic", hello_hash, suite),
        derived_for_master=derived_for_master,
        master_secret=master_secret,
        client_application_traffic_secret_0=derive_secret(master_secret, "c ap traffic",
                                                          server_finished_hash, suite),
        server_application_traffic_secret_0=derive_secret(master_secret, "s ap traffic",
                                                          server_finished_hash, suite),
        exporter_master_secret=derive_secret(master_secret, "exp master", server_finished_hash, suite),
        resumption_master_secret=(derive_secret(master_secret, "res master", client_finished_hash, suite)
                                  if client_finished_hash is not None else None),
    )


@dataclass(frozen=True)
class TrafficKeys:
    key: bytes
    iv: bytes


def traffic_keys(suite: CipherSuite, traffic_secret: bytes) -> TrafficKeys:
    """§7.3: key = HKDF-Expand-Label(secret, "key", "", key_length); iv likewise with "iv"."""
    return TrafficKeys(hkdf_expand_label(traffic_secret, "key", b"", suite.key_length, suite),
                       hkdf_expand_label(traffic_secret, "iv", b"", suite.iv_length, suite))


def next_traffic_secret(suite: CipherSuite, traffic_secret: bytes) -> bytes:
    """§7.2: after a KeyUpdate, secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length)."""
    return hkdf_expand_label(traffic_secret, "traffic upd", b"", suite.hash_length, suite)


def finished_verify_data(suite: CipherSuite, base_key: bytes, transcript_hash_value: bytes) -> bytes:
    """§4.4.4: verify_data = HMAC(finished_key, Transcript-Hash(...)), where finished_key =
    HKDF-Expand-Label(base_key, "finished", "", Hash.length) and base_key is the
    sender's handshake traffic secret."""
    finished_key = hkdf_expand_label(base_key, "finished", b"", suite.hash_length, suite)
    mac = hmac.HMAC(finished_key, suite.hash_algorithm)
    mac.update(transcript_hash_value)
    return mac.finalize()


# --------------------------------------------------------------------------- records
def record_nonce(iv: bytes, sequence_number: int) -> bytes:
    """§5.3: the 64-bit sequence number, left-padded to the IV length, XOR the IV.  Each
    record gets a fresh nonce without sending one; reusing a nonce under one key would
    break GCM completely (the "forbidden attack"), which is why the number must never
    wrap: at 2^64 - 1 an endpoint must rekey or close."""
    if not 0 <= sequence_number < 2**64 - 1:
        raise TLSParseError(f"sequence number {sequence_number} out of range")
    padded = sequence_number.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded))


@dataclass(frozen=True)
class InnerPlaintext:
    """TLSInnerPlaintext (§5.2): the content, its real type, and how much zero padding hid its length."""

    content_type: int
    content: bytes
    padding_length: int = 0


def encrypt_record(suite: CipherSuite, keys: TrafficKeys, sequence_number: int, content_type: int,
                   content: bytes, *, padding_length: int = 0) -> bytes:
    """Seal one record (the inverse of ``decrypt_record``; used by tests and notebooks)."""
    inner = content + bytes([content_type]) + bytes(padding_length)
    length = len(inner) + suite.tag_length
    header = bytes([ContentType.APPLICATION_DATA]) + b"\x03\x03" + length.to_bytes(2, "big")
    sealed = suite.aead(keys.key).encrypt(record_nonce(keys.iv, sequence_number), inner, header)
    return header + sealed


def decrypt_record(suite: CipherSuite, keys: TrafficKeys, sequence_number: int, record: Record) -> InnerPlaintext:
    """Open one protected record (TLSCiphertext, §5.2) and unwrap its TLSInnerPlaintext."""
    if record.content_type != ContentType.APPLICATION_DATA:
        raise TLSParseError(f"a protected record always says application_data (23), this one {record.content_type}",
                            alert=10)
    if len(record.fragment) > MAX_CIPHERTEXT_LENGTH:
        raise TLSParseError(f"protected record of {len(record.fragment)} bytes", alert=22)
    try:
        # The header is the associated data: flipping its length or type breaks the tag.
        plaintext = suite.aead(keys.key).decrypt(record_nonce(keys.iv, sequence_number), record.fragment,
                                                 record.header)
    except InvalidTag:
        raise TLSDecryptError(f"record {sequence_number} did not authenticate under {suite.name}"
                              " (wrong secret, wrong sequence number, or altered bytes)") from None
    if len(plaintext) > MAX_PLAINTEXT_LENGTH + 1:
        raise TLSParseError(f"inner plaintext of {len(plaintext)} bytes exceeds 2^14 + 1", alert=22)
    unpadded = plaintext.rstrip(b"\x00")
    if not unpadded:
        # §5.4: no non-zero octet means no content type: unexpected_message.
        raise TLSParseError("protected record holds only padding", alert=10)
    return InnerPlaintext(unpadded[-1], unpadded[:-1], len(plaintext) - len(unpadded))


class RecordDecryptor:
    """One direction's read state: the current traffic secret, its keys, the sequence number."""

    def __init__(self, suite: CipherSuite, traffic_secret: bytes):
        self.suite = suite
        self.set_traffic_secret(traffic_secret)

    def set_traffic_secret(self, traffic_secret: bytes) -> None:
        # §5.3: every new key starts again at sequence number 0.
        self.traffic_secret = traffic_secret
        self.keys = traffic_keys(self.suite, traffic_secret)
        self.sequence_number = 0

    def decrypt(self, record: Record) -> InnerPlaintext:
        inner = decrypt_record(self.suite, self.keys, self.sequence_number, record)
        self.sequence_number += 1
        return inner

    def key_update(self) -> None:
        self.set_traffic_secret(next_traffic_secret(self.suite, self.traffic_secret))


# --------------------------------------------------------------------------- key log
KEY_LOG_LABELS = (
    "CLIENT_RANDOM",                     # TLS 1.2: the 48-byte master secret
    "CLIENT_EARLY_TRAFFIC_SECRET", "EARLY_EXPORTER_SECRET",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET",
)


def parse_key_log(text: str | bytes) -> dict[bytes, dict[str, bytes]]:
    """Parse an NSS key log: ``LABEL <client_random hex> <secret hex>`` per line.

    Returns ``{client_random: {label: secret}}``.  Comment lines (``#``) and labels
    other than ``KEY_LOG_LABELS`` (e.g. NSS's old ``RSA`` lines) are skipped; a line
    that is not three fields or not hex raises ``ValueError`` naming the line.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii")
    secrets: dict[bytes, dict[str, bytes]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"key log line {number}: expected LABEL CLIENT_RANDOM SECRET, got {line[:60]!r}")
        label, random_hex, secret_hex = fields
        if label not in KEY_LOG_LABELS:
            continue
        try:
            client_random, secret = bytes.fromhex(random_hex), bytes.fromhex(secret_hex)
        except ValueError:
            raise ValueError(f"key log line {number}: not hex") from None
        if len(client_random) != 32:
            raise ValueError(f"key log line {number}: client random has {len(client_random)} bytes, not 32")
        secrets.setdefault(client_random, {})[label] = secret
    return secrets


# --------------------------------------------------------------------------- a whole connection
@dataclass(frozen=True)
class StreamRecord:
    """One record of one direction, opened if it was protected."""

    record: Record                     # as on the wire
    keys: str                          # "plaintext", "handshake", "application" ("application+1" after a KeyUpdate)
    content_type: int                  # the real type (inner type for protected records)
    content: bytes
    padding_length: int = 0
    handshake_messages: tuple[int, ...] = ()   # types of the handshake messages it completed


def decrypt_tls13_stream(suite: CipherSuite, data: bytes, handshake_traffic_secret: bytes,
                         application_traffic_secret: bytes) -> Iterator[StreamRecord]:
    """Open every record one side sent.  Plaintext records (ClientHello/ServerHello, the
    middlebox-compatibility ChangeCipherSpec of §D.4) pass through; protected ones use the
    handshake keys until this side's Finished, then the application keys, which a
    KeyUpdate (§4.6.3) ratchets forward."""
    decryptor = RecordDecryptor(suite, handshake_traffic_secret)
    keys_name, updates = "handshake", 0
    reassembler = HandshakeReassembler()
    for record in iter_records(data):
        if record.content_type != ContentType.APPLICATION_DATA:
            yield StreamRecord(record, "plaintext", record.content_type, record.fragment)
            continue
        inner = decryptor.decrypt(record)
        completed: list[int] = []
        if inner.content_type == ContentType.HANDSHAKE:
            completed = [message[0] for message in reassembler.feed(inner.content)]
        yield StreamRecord(record, keys_name, inner.content_type, inner.content, inner.padding_length,
                           tuple(completed))
        for msg_type in completed:     # key changes take effect from the *next* record (§5.1)
            if msg_type == HandshakeType.FINISHED and keys_name == "handshake":
                decryptor.set_traffic_secret(application_traffic_secret)
                keys_name = "application"
            elif msg_type == HandshakeType.KEY_UPDATE:
                decryptor.key_update()
                updates += 1
                keys_name = f"application+{updates}"


HELLO_RETRY_REQUEST_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()   # §4.1.3


def server_hello_cipher_suite(server_data: bytes) -> int:
    """The cipher suite the server chose, from its plaintext ServerHello (§4.1.3), after
    checking that it negotiated TLS 1.3 (supported_versions = 0x0304; §4.2.1)."""
    reassembler = HandshakeReassembler()
    for record in split_records(server_data)[0]:
        if record.content_type != ContentType.HANDSHAKE:
            continue
        for message in reassembler.feed(record.fragment):
            if message[0] != HandshakeType.SERVER_HELLO:
                raise TLSParseError(f"expected ServerHello, got handshake type {message[0]}", alert=10)
            reader = ByteReader(message[4:], "ServerHello")
            reader.u16()
            random = reader.take(32)
            reader.vector(1, maximum=32, name="legacy_session_id_echo")
            suite = reader.u16()
            reader.u8()
            extensions = ByteReader(reader.vector(2, name="extensions") if reader.remaining else b"", "extensions")
            selected = None
            while extensions.remaining:
                ext_type, ext_data = extensions.u16(), extensions.vector(2)
                if ext_type == 43:
                    selected = int.from_bytes(ext_data, "big")
            if selected != 0x0304:
                raise TLSParseError("the server did not negotiate TLS 1.3; this decryptor reads TLS 1.3 only",
                                    alert=70)
            if random == HELLO_RETRY_REQUEST_RANDOM:
                continue               # a HelloRetryRequest; the real ServerHello follows
            return suite
    raise TLSParseError("no ServerHello in the server's bytes")


@dataclass(frozen=True)
class DecryptedConnection:
    client_random: bytes
    suite: CipherSuite
    client_records: list[StreamRecord] = field(repr=False)
    server_records: list[StreamRecord] = field(repr=False)

    def application_data(self, sender: str) -> bytes:
        """Everything ``sender`` ("client" or "server") sent as application data, joined."""
        records = self.client_records if sender == "client" else self.server_records
        return b"".join(r.content for r in records
                        if r.keys != "plaintext" and r.content_type == ContentType.APPLICATION_DATA)


def decrypt_connection(client_data: bytes, server_data: bytes,
                       key_log: dict[bytes, dict[str, bytes]]) -> DecryptedConnection:
    """Decrypt a recorded TLS 1.3 connection (both directions, complete records) with a key log."""
    # The client random names the connection in the key log.  The reader stops at the
    # end of the first ClientHello and ignores what follows (CCS, protected records).
    reader = ClientHelloReader()
    reader.feed(client_data)
    hello = reader.next_event()
    if hello is NEED_DATA:
        raise TLSParseError("the client's bytes do not hold a complete ClientHello")
    client_random = hello.random
    secrets = key_log.get(client_random)
    if secrets is None:
        raise TLSParseError(f"no key log entry for client random {client_random.hex()}")
    suite = cipher_suite(server_hello_cipher_suite(server_data))
    try:
        client = list(decrypt_tls13_stream(suite, client_data, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"],
                                           secrets["CLIENT_TRAFFIC_SECRET_0"]))
        server = list(decrypt_tls13_stream(suite, server_data, secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"],
                                           secrets["SERVER_TRAFFIC_SECRET_0"]))
    except KeyError as missing:
        raise TLSParseError(f"the key log lacks {missing.args[0]} for this connection") from None
    return DecryptedConnection(client_random, suite, client, server)

