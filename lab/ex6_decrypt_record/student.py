"""Exercise 6: decrypt one TLS 1.3 record from a capture.  This is your file.

Run it:             .venv/bin/python lab/ex6_decrypt_record/student.py
Check your work:    .venv/bin/python -m lab.check 6        (or: make check LAB=6)

Read README.md in this folder first.  You write the key derivation and the record
decryption; the AEAD ciphers come from ``cryptography`` (through
``proxy.tls.keyschedule.cipher_suite(name).aead``), record splitting and the
ClientHello parser from the ``proxy`` package.  ``proxy/tls/keyschedule.py`` is the
version to compare with when you are done.
"""

from __future__ import annotations

import hmac  # noqa: F401  (you will need these)

from proxy.tls.clienthello import parse_client_hello  # noqa: F401
from proxy.tls.keyschedule import cipher_suite
from proxy.tls.records import iter_records


# Step 1 ------------------------------------------------------------------------------
def parse_key_log_line(line: str) -> tuple[str, bytes, bytes]:
    """``LABEL <client_random hex> <secret hex>`` -> (label, client_random, secret)."""
    # TODO step 1
    raise NotImplementedError("step 1: parse_key_log_line")


# Step 2 ------------------------------------------------------------------------------
def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_name: str) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label, on RFC 5869 HKDF-Expand with HMAC-``hash_name``.

    ``hash_name`` is "sha256" or "sha384" (``hmac.new(key, message, hash_name)``).
    """
    # TODO step 2
    raise NotImplementedError("step 2: hkdf_expand_label")


# Step 3 ------------------------------------------------------------------------------
def traffic_key_and_iv(secret: bytes, suite_name: str) -> tuple[bytes, bytes]:
    """RFC 8446 §7.3: the AEAD key and the 12-byte IV a traffic secret gives.

    ``cipher_suite(suite_name)`` has ``.key_length`` and ``.hash_name``.
    """
    # TODO step 3
    raise NotImplementedError("step 3: traffic_key_and_iv")


# Step 4 ------------------------------------------------------------------------------
def record_nonce(iv: bytes, sequence_number: int) -> bytes:
    """RFC 8446 §5.3: the sequence number, left-padded to 12 bytes, XOR the IV."""
    # TODO step 4
    raise NotImplementedError("step 4: record_nonce")


# Step 5 ------------------------------------------------------------------------------
def decrypt_record(record: bytes, key: bytes, iv: bytes, sequence_number: int, suite_name: str) -> tuple[int, bytes]:
    """Open one protected record (5-byte header included): (real content type, content).

    ``cipher_suite(suite_name).aead(key)`` is an AESGCM or ChaCha20Poly1305 object
    with ``.decrypt(nonce, ciphertext_and_tag, associated_data)``.
    """
    # TODO step 5
    raise NotImplementedError("step 5: decrypt_record")


# Step 6 ------------------------------------------------------------------------------
def first_request(key_log: str, client_bytes: bytes, suite_name: str) -> bytes:
    """The first application data the client sent, from the capture and the key log.

    ``client_bytes`` is everything the client sent (its ClientHello first);
    ``key_log`` may hold lines for many connections.
    """
    # TODO step 6
    raise NotImplementedError("step 6: first_request")


def demo() -> None:
    """Record a real TLS 1.3 connection on loopback, then take it apart step by step."""
    import tempfile

    from lab.harness import record_tls13_exchange
    from proxy.pki import ensure_demo_certs

    with tempfile.TemporaryDirectory() as scratch:
        capture = record_tls13_exchange(ensure_demo_certs(f"{scratch}/pki"), scratch)
    print(f"cipher suite {capture.cipher}; the key log:\n{capture.key_log}")
    records = list(iter_records(capture.client_bytes))
    print("the client's records (content type, length):", [(r.content_type, len(r.fragment)) for r in records])
    line = next(line for line in capture.key_log.splitlines() if line.startswith("CLIENT_TRAFFIC_SECRET_0"))
    label, client_random, secret = parse_key_log_line(line)
    print(f"step 1: {label}, random {client_random.hex()[:16]}..., secret of {len(secret)} bytes")
    print("step 2:", hkdf_expand_label(secret, "key", b"", 16, cipher_suite(capture.cipher).hash_name).hex())
    key, iv = traffic_key_and_iv(secret, capture.cipher)
    print(f"step 3: key {key.hex()}  iv {iv.hex()}")
    print(f"step 4: nonce 0 {record_nonce(iv, 0).hex()}  nonce 1 {record_nonce(iv, 1).hex()}")
    protected = [r for r in records if r.content_type == 23]
    print("step 5:", decrypt_record(protected[1].to_bytes(), key, iv, 0, capture.cipher))
    print("step 6:", first_request(capture.key_log, capture.client_bytes, capture.cipher))


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 6")
