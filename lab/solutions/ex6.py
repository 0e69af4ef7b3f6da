"""Exercise 6, reference solution: decrypt one TLS 1.3 record from a capture.

The student's file is ``lab/ex6_decrypt_record/student.py``; this is the same file
with every TODO done.  Check it with ``python -m lab.check 6 --solution``.
"""

from __future__ import annotations

import hmac

from proxy.tls.clienthello import parse_client_hello
from proxy.tls.keyschedule import cipher_suite
from proxy.tls.records import iter_records


# Step 1 ------------------------------------------------------------------------------
def parse_key_log_line(line: str) -> tuple[str, bytes, bytes]:
    """``LABEL <client_random hex> <secret hex>`` -> (label, client_random, secret)."""
    label, client_random, secret = line.split()
    return label, bytes.fromhex(client_random), bytes.fromhex(secret)


# Step 2 ------------------------------------------------------------------------------
def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_name: str) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label, on RFC 5869 HKDF-Expand with HMAC-``hash_name``."""
    full_label = b"tls13 " + label.encode("ascii")
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + bytes([len(context)]) + context
    output, block, counter = b"", b"", 1
    while len(output) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hash_name).digest()
        output += block
        counter += 1
    return output[:length]


# Step 3 ------------------------------------------------------------------------------
def traffic_key_and_iv(secret: bytes, suite_name: str) -> tuple[bytes, bytes]:
    """RFC 8446 §7.3: the AEAD key and the IV a traffic secret gives for ``suite_name``."""
    suite = cipher_suite(suite_name)
    key = hkdf_expand_label(secret, "key", b"", suite.key_length, suite.hash_name)
    iv = hkdf_expand_label(secret, "iv", b"", 12, suite.hash_name)
    return key, iv


# Step 4 ------------------------------------------------------------------------------
def record_nonce(iv: bytes, sequence_number: int) -> bytes:
    """RFC 8446 §5.3: the sequence number, left-padded to 12 bytes, XOR the IV."""
    padded = sequence_number.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded))


# Step 5 ------------------------------------------------------------------------------
def decrypt_record(record: bytes, key: bytes, iv: bytes, sequence_number: int, suite_name: str) -> tuple[int, bytes]:
    """Open one protected record (header included): (real content type, content)."""
    header, ciphertext = record[:5], record[5:]
    aead = cipher_suite(suite_name).aead(key)  # AESGCM or ChaCha20Poly1305 from cryptography
    plaintext = aead.decrypt(record_nonce(iv, sequence_number), ciphertext, header)  # header = AAD
    unpadded = plaintext.rstrip(b"\x00")  # RFC 8446 §5.4: zeros may pad the length
    return unpadded[-1], unpadded[:-1]


# Step 6 ------------------------------------------------------------------------------
def first_request(key_log: str, client_bytes: bytes, suite_name: str) -> bytes:
    """The first application data the client sent, from the capture and the key log."""
    client_random = parse_client_hello(client_bytes).random
    secret = next(secret for label, random, secret in map(parse_key_log_line, _lines(key_log))
                  if label == "CLIENT_TRAFFIC_SECRET_0" and random == client_random)
    key, iv = traffic_key_and_iv(secret, suite_name)
    protected = [record for record in iter_records(client_bytes) if record.content_type == 23]
    # protected[0] is the client's Finished, under the *handshake* keys; the
    # application keys start at protected[1], with sequence number 0 again.
    content_type, content = decrypt_record(protected[1].to_bytes(), key, iv, 0, suite_name)
    return content


def _lines(key_log: str) -> list[str]:
    return [line for line in key_log.splitlines() if line.strip() and not line.startswith("#")]


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
    demo()
