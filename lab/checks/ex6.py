"""Checks for exercise 6 (decrypt one TLS 1.3 record from a capture).

The answer key is ``proxy.tls.keyschedule``.  The pure steps are compared with it on
RFC 8448's published values and on records it seals for each TLS 1.3 cipher suite
(``encrypt_record``).  The live steps use a real TLS 1.3 connection made while the
check runs (``lab.harness.record_tls13_exchange``: Python ``ssl`` client and server
on loopback, a relay keeping every byte, the server's key log), which is exactly
what a packet capture plus ``SSLKEYLOGFILE`` gives Wireshark.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from lab.checks import Checklist, Fail, Reference, need, show
from lab.harness import record_tls13_exchange
from proxy.errors import TLSParseError
from proxy.tls import keyschedule as ks
from proxy.tls.records import iter_records

CHECKLIST = Checklist("Decrypt one TLS 1.3 record from a capture", Reference(
    forbid=("proxy.tls.keyschedule", "course.capture", "cryptography.hazmat.primitives.kdf"),
    allow=("proxy.tls.keyschedule.cipher_suite", "proxy.tls.keyschedule.CipherSuite"),  # README: use these
    why="ready-made key derivation or record decryption (proxy/tls/keyschedule.py, course.capture, "
        "cryptography's HKDF), where the exercise asks for your own"))
check = CHECKLIST.check

# RFC 8448 §3 (Simple 1-RTT Handshake, TLS_AES_128_GCM_SHA256): the client handshake
# traffic secret and the key and IV derived from it.
RFC8448_C_HS_TRAFFIC = bytes.fromhex("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
RFC8448_C_HS_KEY = bytes.fromhex("dbfaa693d1762c5b666af5d950258d01")
RFC8448_C_HS_IV = bytes.fromhex("5bd3c71b836e0b76bb73265f")


def recording(lab, which: str = "first"):
    request = {"first": None, "second": b"POST /login HTTP/1.1\r\nHost: www.example.test\r\n"
                                        b"Content-Length: 25\r\n\r\nuser=alice&password=hunter2"}[which]
    options = {"request": request} if request else {}
    return lab.once(f"recording-{which}", lambda: record_tls13_exchange(lab.pki, lab.tmp, **options))


def hexed(value: object) -> str:
    """Bytes as hex (how RFCs and key logs print them), anything else as its repr."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).hex()
        return text if len(text) <= 48 else text[:48] + "..."
    if isinstance(value, tuple):
        return "(" + ", ".join(hexed(v) for v in value) + ")"
    return show(value)


def expect_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise Fail(f"{what} returned {show(value)}; expected bytes")
    return bytes(value)


# --------------------------------------------------------------------------- step 1
@check(1, "parse_key_log_line splits a real key log line into label, client random and secret",
       hint="NSS key log format: LABEL <client_random hex> <secret hex>; bytes.fromhex()")
def _(student, lab):
    parse_line = need(student, "parse_key_log_line")
    key_log = recording(lab).key_log
    expected = ks.parse_key_log(key_log)
    lines = [line for line in key_log.splitlines() if line and not line.startswith("#")]
    for line in lines + [lines[0] + "\n"]:
        got = parse_line(line)
        label, random_hex, _ = line.split()
        want = (label, bytes.fromhex(random_hex), expected[bytes.fromhex(random_hex)][label])
        if not isinstance(got, tuple) or tuple(got) != want:
            raise Fail(f"for {show(line, 60)} returned {show(got)}; expected (label, random bytes, secret bytes)")


# --------------------------------------------------------------------------- step 2
@check(2, "hkdf_expand_label gives RFC 8448's client handshake key and IV",
       hint="info = length(2 bytes) + len(label)(1) + b'tls13 ' + label + len(context)(1) + context; "
            "then HKDF-Expand: T(1) = HMAC(secret, info + b'\\x01'), ...")
def _(student, lab):
    expand_label = need(student, "hkdf_expand_label")
    key = expect_bytes(expand_label(RFC8448_C_HS_TRAFFIC, "key", b"", 16, "sha256"), "hkdf_expand_label")
    iv = expect_bytes(expand_label(RFC8448_C_HS_TRAFFIC, "iv", b"", 12, "sha256"), "hkdf_expand_label")
    if (key, iv) != (RFC8448_C_HS_KEY, RFC8448_C_HS_IV):
        raise Fail(f"key {key.hex()} iv {iv.hex()}; RFC 8448 §3 says key {RFC8448_C_HS_KEY.hex()} "
                   f"iv {RFC8448_C_HS_IV.hex()}")


@check(2, "hkdf_expand_label matches proxy.tls.keyschedule for SHA-384, a context, and long outputs",
       hint="the hash is a parameter (TLS_AES_256_GCM_SHA384 uses SHA-384); outputs longer than one "
            "HMAC need more blocks T(2), T(3) ... (RFC 5869 §2.3)")
def _(student, lab):
    expand_label = need(student, "hkdf_expand_label")
    cases = [("sha384", "c hs traffic", os.urandom(48), 48), ("sha256", "exp master", os.urandom(32), 80),
             ("sha384", "traffic upd", b"", 48), ("sha256", "finished", b"", 32)]
    for hash_name, label, context, length in cases:
        suite = ks.TLS_AES_256_GCM_SHA384 if hash_name == "sha384" else ks.TLS_AES_128_GCM_SHA256
        secret = os.urandom(suite.hash_length)
        want = ks.hkdf_expand_label(secret, label, context, length, suite)
        got = expand_label(secret, label, context, length, hash_name)
        if got != want:
            raise Fail(f"HKDF-Expand-Label({hash_name}, {label!r}, {len(context)}-byte context, {length}) "
                       f"gave {hexed(got)}; expected {hexed(want)}")


# --------------------------------------------------------------------------- step 3
@check(3, "traffic_key_and_iv derives the key and IV for each TLS 1.3 cipher suite",
       hint="RFC 8446 §7.3: key = Expand-Label(secret, 'key', '', key length), iv = ...('iv', '', 12); "
            "cipher_suite(name) knows the key length and the hash")
def _(student, lab):
    key_and_iv = need(student, "traffic_key_and_iv")
    for suite in ks.CIPHER_SUITES.values():
        secret = os.urandom(suite.hash_length)
        want = ks.traffic_keys(suite, secret)
        got = key_and_iv(secret, suite.name)
        if not isinstance(got, tuple) or tuple(got) != (want.key, want.iv):
            raise Fail(f"{suite.name}: returned {hexed(got)}; expected (key {want.key.hex()}, iv {want.iv.hex()})")


# --------------------------------------------------------------------------- step 4
@check(4, "record_nonce is the IV XOR the sequence number, left-padded to 12 bytes",
       hint="RFC 8446 §5.3: seq.to_bytes(12, 'big'), then XOR byte by byte")
def _(student, lab):
    record_nonce = need(student, "record_nonce")
    iv = bytes.fromhex("5bd3c71b836e0b76bb73265f")
    for sequence_number in (0, 1, 255, 256, 2**40 + 3):
        want = ks.record_nonce(iv, sequence_number)
        got = record_nonce(iv, sequence_number)
        if got != want:
            raise Fail(f"sequence number {sequence_number}: {hexed(got)}; expected {want.hex()}")


# --------------------------------------------------------------------------- step 5
@check(5, "decrypt_record opens records of every suite: real content type, content without padding",
       hint="AEAD.decrypt(nonce, record[5:], record[:5]): the 5-byte header is the associated data; "
            "then strip trailing zeros: the last byte left is the content type (RFC 8446 §5.2, §5.4)")
def _(student, lab):
    decrypt = need(student, "decrypt_record")
    for suite in ks.CIPHER_SUITES.values():
        keys = ks.TrafficKeys(os.urandom(suite.key_length), os.urandom(12))
        for sequence_number, content_type, content, padding in [
            (0, 23, b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n", 0),
            (7, 22, b"\x04\x00\x00\x01\x00", 12),
            (1, 21, b"\x01\x00", 0),
            (2, 23, b"ends in zeros\x00\x00", 3),  # the content's own zeros stay: the type byte is not zero
        ]:
            record = ks.encrypt_record(suite, keys, sequence_number, content_type, content, padding_length=padding)
            got = decrypt(record, keys.key, keys.iv, sequence_number, suite.name)
            if not isinstance(got, tuple) or tuple(got) != (content_type, content):
                raise Fail(f"{suite.name}, record {sequence_number}: returned {show(got)}; "
                           f"expected ({content_type}, {show(content, 40)})")


@check(5, "decrypt_record refuses a record that was altered, or opened with the wrong sequence number",
       hint="let cryptography's InvalidTag propagate (or raise proxy.errors.TLSDecryptError); "
            "never return unauthenticated bytes")
def _(student, lab):
    decrypt = need(student, "decrypt_record")
    suite = ks.TLS_AES_128_GCM_SHA256
    keys = ks.TrafficKeys(os.urandom(16), os.urandom(12))
    record = ks.encrypt_record(suite, keys, 3, 23, b"transfer 100 EUR to alice")
    cases = {
        "a flipped ciphertext bit": (record[:10] + bytes([record[10] ^ 1]) + record[11:], 3),
        "an altered header (version 0x0302)": (record[:1] + b"\x03\x02" + record[3:], 3),
        "the wrong sequence number": (record, 4),
    }
    for case, (data, sequence_number) in cases.items():
        try:
            got = decrypt(data, keys.key, keys.iv, sequence_number, suite.name)
        except (InvalidTag, TLSParseError):
            continue
        raise Fail(f"{case}: returned {show(got)}; expected InvalidTag (authentication failure)")


@check(5, "live: the server's first record under its application keys is a NewSessionTicket",
       hint="take SERVER_TRAFFIC_SECRET_0 from the key log; sequence numbers restart at 0 with new keys")
def _(student, lab):
    key_and_iv = need(student, "traffic_key_and_iv")
    decrypt = need(student, "decrypt_record")
    capture = recording(lab)
    opened = ks.decrypt_connection(capture.client_bytes, capture.server_bytes, ks.parse_key_log(capture.key_log))
    first_app = next(r for r in opened.server_records if r.keys == "application")
    secret = ks.parse_key_log(capture.key_log)[opened.client_random]["SERVER_TRAFFIC_SECRET_0"]
    key, iv = key_and_iv(secret, capture.cipher)
    got = decrypt(first_app.record.to_bytes(), key, iv, 0, capture.cipher)
    if not isinstance(got, tuple) or tuple(got) != (first_app.content_type, first_app.content):
        raise Fail(f"returned {show(got)}; expected (22, a NewSessionTicket message starting b'\\x04')")


# --------------------------------------------------------------------------- step 6
@check(6, "live: first_request recovers the request from a real TLS 1.3 connection and its key log",
       hint="find the client random in the ClientHello, its CLIENT_TRAFFIC_SECRET_0 in the key log; the "
            "first protected client record is its Finished (handshake keys): skip it")
def _(student, lab):
    first_request = need(student, "first_request")
    capture = recording(lab)
    got = first_request(capture.key_log, capture.client_bytes, capture.cipher)
    if got != capture.request:
        records = [(r.content_type, len(r.fragment)) for r in iter_records(capture.client_bytes)]
        raise Fail(f"returned {show(got)}; the client sent {show(capture.request, 60)} "
                   f"(its records: {records})")


@check(6, "live: with two connections in one key log, first_request uses the right secret",
       hint="a key log holds every connection; the client random (ClientHello.random) says which lines are this one's")
def _(student, lab):
    first_request = need(student, "first_request")
    one, two = recording(lab), recording(lab, "second")
    got = first_request(one.key_log + two.key_log, two.client_bytes, two.cipher)
    if got != two.request:
        raise Fail(f"returned {show(got)}; the second connection's client sent {show(two.request, 60)}")
