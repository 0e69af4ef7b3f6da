"""TLS 1.2 record decryption, and why a static-RSA session can be read years later (sans-IO).

Theory of operation
-------------------
``proxy.tls.keyschedule`` reads TLS 1.3.  A TLS 1.2 capture needs a different recipe
(RFC 5246), short enough to write out, and it is the recipe behind the
forward-secrecy lesson:

1. **The master secret.**  Either the key log says it (``CLIENT_RANDOM <client random>
   <master secret>``), or it is *computed*:

   * static RSA key exchange (``TLS_RSA_WITH_AES_128_GCM_SHA256``, OpenSSL name
     ``AES128-GCM-SHA256``): the client picks a 48-byte pre-master secret and sends it
     in its ClientKeyExchange, encrypted to the public key in the server's
     certificate.  The server's RSA *private key* opens it, today or in ten years:
     whoever recorded the traffic and later obtains the key (a subpoena, a breach, a
     decommissioned disk) reads every recorded session.  That is the attack forward
     secrecy removes.
   * ECDHE: the ClientKeyExchange carries an ephemeral public key; the secret is an
     elliptic-curve Diffie-Hellman between two ephemeral keys that were never written
     down and are gone.  The server's long-term key only *signed* the exchange, so
     it cannot recover it.  TLS 1.3 kept only (EC)DHE for this reason (RFC 8446 §1.2).

   master_secret = PRF(pre_master_secret, "master secret", client_random + server_random)
   (§8.1), or with the extended master secret (RFC 7627, negotiated by extension 23,
   against the triple-handshake attack) PRF(pre_master_secret, "extended master
   secret", Hash(handshake messages up to the ClientKeyExchange)).

2. **The key block** (§6.3): PRF(master_secret, "key expansion", server_random +
   client_random), cut into client_write_key, server_write_key, client_write_IV,
   server_write_IV (AEAD suites have no MAC keys).

3. **The records.**  After each side's ChangeCipherSpec its records are protected,
   with a sequence number that starts at 0 (§6.1).  AES-GCM (RFC 5288): nonce = the
   4-byte implicit IV + 8 explicit bytes sent at the front of the record.
   ChaCha20-Poly1305 (RFC 7905): nonce = IV XOR the sequence number, as in TLS 1.3.
   The associated data is seq_num + type + version + plaintext length (§6.2.3.3):
   the header is authenticated, so a changed type or length fails the tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from proxy.errors import TLSDecryptError, TLSParseError
from proxy.tls.records import ByteReader, ContentType, HandshakeReassembler, HandshakeType, iter_records

EXTENDED_MASTER_SECRET = 23          # RFC 7627 extension number


@dataclass(frozen=True)
class Suite12:
    """What a TLS 1.2 AEAD suite needs for decryption."""

    name: str
    hash_name: str                   # the PRF hash: SHA-256 unless the name ends in SHA384
    key_length: int
    fixed_iv_length: int             # 4 for GCM (plus 8 explicit bytes per record), 12 for ChaCha20
    rsa_key_exchange: bool = False

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()

    @property
    def aead(self):
        return ChaCha20Poly1305 if self.fixed_iv_length == 12 else AESGCM


SUITES: dict[int, Suite12] = {
    0x009C: Suite12("AES128-GCM-SHA256", "sha256", 16, 4, rsa_key_exchange=True),
    0x009D: Suite12("AES256-GCM-SHA384", "sha384", 32, 4, rsa_key_exchange=True),
    0xC02B: Suite12("ECDHE-ECDSA-AES128-GCM-SHA256", "sha256", 16, 4),
    0xC02C: Suite12("ECDHE-ECDSA-AES256-GCM-SHA384", "sha384", 32, 4),
    0xC02F: Suite12("ECDHE-RSA-AES128-GCM-SHA256", "sha256", 16, 4),
    0xC030: Suite12("ECDHE-RSA-AES256-GCM-SHA384", "sha384", 32, 4),
    0xCCA8: Suite12("ECDHE-RSA-CHACHA20-POLY1305", "sha256", 32, 12),
    0xCCA9: Suite12("ECDHE-ECDSA-CHACHA20-POLY1305", "sha256", 32, 12),
}


# --------------------------------------------------------------------------- the PRF
def p_hash(secret: bytes, seed: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 5246 §5: A(0) = seed, A(i) = HMAC(secret, A(i-1)); output HMAC(secret, A(i) + seed)..."""
    def mac(data: bytes) -> bytes:
        h = hmac.HMAC(secret, algorithm)
        h.update(data)
        return h.finalize()

    output, a = b"", seed
    while len(output) < length:
        a = mac(a)
        output += mac(a + seed)
    return output[:length]


def prf(secret: bytes, label: str, seed: bytes, length: int, suite: Suite12) -> bytes:
    return p_hash(secret, label.encode("ascii") + seed, length, suite.hash_algorithm)


# --------------------------------------------------------------------------- the handshake
@dataclass
class Handshake12:
    """What decryption needs from the plaintext part of a TLS 1.2 handshake."""

    client_random: bytes
    server_random: bytes
    suite_code: int
    extended_master_secret: bool
    resumed: bool
    encrypted_premaster: bytes | None          # static RSA only
    session_hash_messages: bytes = field(repr=False, default=b"")

    @property
    def suite(self) -> Suite12:
        try:
            return SUITES[self.suite_code]
        except KeyError:
            raise TLSParseError(f"cipher suite 0x{self.suite_code:04x} is not one this decryptor knows") from None


def _plaintext_handshake(data: bytes) -> list[bytes]:
    """The handshake messages before this side's ChangeCipherSpec (the plaintext part)."""
    reassembler, messages = HandshakeReassembler(), []
    for record in iter_records(data):
        if record.content_type == ContentType.CHANGE_CIPHER_SPEC:
            break
        if record.content_type == ContentType.HANDSHAKE:
            messages += reassembler.feed(record.fragment)
    return messages


def parse_hello(message: bytes) -> tuple[bytes, int | None, set[int]]:
    """(random, cipher suite or None for a ClientHello, extension types) of a hello."""
    reader = ByteReader(message[4:], "hello")
    reader.u16()
    random = reader.take(32)
    reader.vector(1, maximum=32, name="session_id")
    if message[0] == HandshakeType.CLIENT_HELLO:
        reader.vector(2, name="cipher_suites")
        reader.vector(1, name="compression_methods")
        suite = None
    else:
        suite = reader.u16()
        reader.u8()
    extensions = ByteReader(reader.vector(2, name="extensions") if reader.remaining else b"", "extensions")
    types = set()
    while extensions.remaining:
        types.add(extensions.u16())
        extensions.vector(2)
    return random, suite, types


def read_handshake(client_data: bytes, server_data: bytes) -> Handshake12:
    client_messages = _plaintext_handshake(client_data)
    server_messages = _plaintext_handshake(server_data)
    if not client_messages or client_messages[0][0] != HandshakeType.CLIENT_HELLO:
        raise TLSParseError("the client's bytes do not start with a ClientHello")
    if not server_messages or server_messages[0][0] != HandshakeType.SERVER_HELLO:
        raise TLSParseError("the server's bytes do not start with a ServerHello")
    client_random, _, client_extensions = parse_hello(client_messages[0])
    server_random, suite, server_extensions = parse_hello(server_messages[0])
    if 43 in server_extensions:
        raise TLSParseError("the server negotiated TLS 1.3 (supported_versions): use proxy.tls.keyschedule")
    key_exchange = next((m for m in client_messages if m[0] == HandshakeType.CLIENT_KEY_EXCHANGE), None)
    resumed = key_exchange is None               # an abbreviated handshake has no key exchange
    premaster = None
    if key_exchange is not None and SUITES.get(suite, Suite12("", "", 0, 0)).rsa_key_exchange:
        premaster = ByteReader(key_exchange[4:], "ClientKeyExchange").vector(2, name="encrypted_premaster")
    # RFC 7627 §3: session_hash covers the messages up to and including ClientKeyExchange.
    # The server's flight ends with ServerHelloDone; a NewSessionTicket after it is later.
    done = next((n for n, m in enumerate(server_messages) if m[0] == HandshakeType.SERVER_HELLO_DONE),
                len(server_messages) - 1)
    hashed = [client_messages[0]] + server_messages[:done + 1]
    if key_exchange is not None:
        hashed += client_messages[1:client_messages.index(key_exchange) + 1]
    return Handshake12(client_random, server_random, suite,
                       EXTENDED_MASTER_SECRET in client_extensions and EXTENDED_MASTER_SECRET in server_extensions,
                       resumed, premaster, b"".join(hashed))


def master_secret_from_rsa_key(handshake: Handshake12, private_key_pem: bytes) -> bytes:
    """Static RSA: open the pre-master secret with the server's private key (§7.4.7.1),
    then derive the master secret.  Fails for ECDHE, where there is nothing to open."""
    if handshake.encrypted_premaster is None:
        raise TLSDecryptError(f"{handshake.suite.name} is not an RSA key exchange: the server's private key "
                              "cannot recover its secret (forward secrecy)")
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TLSDecryptError("static RSA decryption needs an RSA private key")
    try:
        premaster = key.decrypt(handshake.encrypted_premaster, padding.PKCS1v15())
    except ValueError:
        raise TLSDecryptError("the private key does not open this pre-master secret (another server's key?)") \
            from None
    suite = handshake.suite
    if handshake.extended_master_secret:
        digest = hashes.Hash(suite.hash_algorithm)
        digest.update(handshake.session_hash_messages)
        return prf(premaster, "extended master secret", digest.finalize(), 48, suite)
    return prf(premaster, "master secret", handshake.client_random + handshake.server_random, 48, suite)


# --------------------------------------------------------------------------- the records
@dataclass(frozen=True)
class Record12:
    content_type: int
    content: bytes
    protected: bool


@dataclass(frozen=True)
class DecryptedConnection12:
    handshake: Handshake12
    master_secret: bytes = field(repr=False)
    client_records: list[Record12] = field(repr=False)
    server_records: list[Record12] = field(repr=False)

    def application_data(self, sender: str) -> bytes:
        records = self.client_records if sender == "client" else self.server_records
        return b"".join(r.content for r in records if r.protected and r.content_type == ContentType.APPLICATION_DATA)


def _open_records(data: bytes, suite: Suite12, key: bytes, iv: bytes) -> list[Record12]:
    aead, result, sequence, protected = suite.aead(key), [], 0, False
    for record in iter_records(data):
        if not protected:
            result.append(Record12(record.content_type, record.fragment, False))
            protected = record.content_type == ContentType.CHANGE_CIPHER_SPEC
            continue
        fragment = record.fragment
        if suite.fixed_iv_length == 4:        # GCM: 8 explicit nonce bytes lead the record
            nonce, sealed = iv + fragment[:8], fragment[8:]
        else:                                  # ChaCha20-Poly1305: IV XOR sequence number
            nonce, sealed = bytes(a ^ b for a, b in zip(iv, sequence.to_bytes(12, "big"))), fragment
        length = len(sealed) - 16
        associated = sequence.to_bytes(8, "big") + record.header[:3] + length.to_bytes(2, "big")
        try:
            plaintext = aead.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise TLSDecryptError(f"record {sequence} did not authenticate under {suite.name} "
                                  "(wrong master secret?)") from None
        result.append(Record12(record.content_type, plaintext, True))
        sequence += 1
    return result


def decrypt_connection12(client_data: bytes, server_data: bytes, *, master_secret: bytes | None = None,
                         key_log: dict[bytes, dict[str, bytes]] | None = None,
                         server_private_key: bytes | None = None) -> DecryptedConnection12:
    """Decrypt a recorded TLS 1.2 connection with its master secret, a key log, or (static
    RSA only) the server's private key (PEM)."""
    handshake = read_handshake(client_data, server_data)
    suite = handshake.suite
    if master_secret is None and key_log is not None:
        master_secret = key_log.get(handshake.client_random, {}).get("CLIENT_RANDOM")
    if master_secret is None and server_private_key is not None:
        master_secret = master_secret_from_rsa_key(handshake, server_private_key)
    if master_secret is None:
        raise TLSDecryptError(f"no master secret for client random {handshake.client_random.hex()}")
    block = prf(master_secret, "key expansion", handshake.server_random + handshake.client_random,
                2 * suite.key_length + 2 * suite.fixed_iv_length, suite)
    k, i = suite.key_length, suite.fixed_iv_length
    client_key, server_key = block[:k], block[k:2 * k]
    client_iv, server_iv = block[2 * k:2 * k + i], block[2 * k + i:2 * k + 2 * i]
    return DecryptedConnection12(handshake, master_secret,
                                 _open_records(client_data, suite, client_key, client_iv),
                                 _open_records(server_data, suite, server_key, server_iv))
