"""The crypto floor: what the algorithms in use cost on this machine, from ``openssl speed``.

Theory of operation
-------------------
No TLS server can be cheaper than the cryptography it must do.  A full TLS 1.3
handshake with an ECDSA P-256 certificate costs the server at least one ECDSA
signature (CertificateVerify, RFC 8446 §4.4.3) and one X25519 key share (a key
generation and a shared-secret derivation); a resumed one skips the signature; a
bulk transfer costs AES-256-GCM per byte.  The client's side is the verifications:
RSA signs slowly and verifies fast (a small public exponent, 65537), ECDSA the other
way round, so both rates of each algorithm are kept.  ``openssl speed`` measures each on one
core::

    openssl speed -seconds 1 -mr ecdsap256                      sign/s, verify/s
    openssl speed -seconds 1 -mr ecdhx25519                     derive/s
    openssl speed -seconds 1 -mr rsa2048                        sign/s, verify/s (the RSA certificate)
    openssl speed -seconds 1 -mr -evp aes-256-gcm -bytes 16384  bytes/s (one 16 KB TLS record)

``-mr`` is the machine-readable output (``+F4:...`` lines).  The figures go beside the
proxy-versus-nginx ratios: the distance between nginx and the floor is what a
server in C adds to OpenSSL; the distance between our proxy and nginx is what
Python adds.  The runs are short (a second each) and sequential, and happen while
every setup is idle, so they do not disturb the measurement or each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess

SECONDS = 1
RECORD = 16384  # TLS's largest record: the size bulk transfers encrypt in


def _speed(*args: str, seconds: int = SECONDS) -> str:
    openssl = shutil.which("openssl")
    if not openssl:
        raise FileNotFoundError("openssl")
    done = subprocess.run([openssl, "speed", "-seconds", str(seconds), "-mr", *args],
                          capture_output=True, text=True, timeout=60 + 10 * seconds)
    return done.stdout + done.stderr


def parse_speed(text: str) -> dict[str, float]:
    """The figures of ``openssl speed -mr`` output, by the kinds of line it prints."""
    figures: dict[str, float] = {}
    if match := re.search(r"^\+F4:\d+:256:([\d.]+):([\d.]+)", text, re.MULTILINE):  # ECDSA: sign/s, verify/s
        figures["ecdsa_p256_sign_per_s"] = float(match.group(1))
        figures["ecdsa_p256_verify_per_s"] = float(match.group(2))
    if match := re.search(r"^\+F5:\d+:253:([\d.]+)", text, re.MULTILINE):  # ECDH X25519 (253 bits)
        figures["x25519_derive_per_s"] = float(match.group(1))
    if match := re.search(r"^\+F2:\d+:2048:([\d.]+):([\d.]+)", text, re.MULTILINE):  # RSA: sign/s, verify/s
        figures["rsa2048_sign_per_s"] = float(match.group(1))
        figures["rsa2048_verify_per_s"] = float(match.group(2))
    if match := re.search(r"^\+F:\d+:AES-256-GCM:([\d.]+)", text, re.MULTILINE):  # bytes/s per block size
        figures["aes_256_gcm_bytes_per_s"] = float(match.group(1))
    return figures


def per_operation(figures: dict[str, float]) -> dict[str, float]:
    """Operations per second turned into µs per operation, and the server's handshake floor."""
    per_op = {f"{name}_us": round(1e6 / figures[f"{name}_per_s"], 2)
              for name in ("ecdsa_p256_sign", "ecdsa_p256_verify", "x25519_derive", "rsa2048_sign", "rsa2048_verify")
              if figures.get(f"{name}_per_s")}
    if {"ecdsa_p256_sign_us", "x25519_derive_us"} <= per_op.keys():
        # One signature, one key share generated and one derived (keygen ~ derive in cost).
        per_op["tls13_ecdsa_full_handshake_server_floor_us"] = round(
            per_op["ecdsa_p256_sign_us"] + 2 * per_op["x25519_derive_us"], 2)
    return per_op


def crypto_floor(seconds: int = SECONDS) -> dict:
    """Run the four measurements; figures per second and the derived per-operation costs (µs)."""
    figures: dict[str, float] = {}
    commands = [("ecdsap256",), ("ecdhx25519",), ("rsa2048",), ("-evp", "aes-256-gcm", "-bytes", str(RECORD))]
    for args in commands:
        figures.update(parse_speed(_speed(*args, seconds=seconds)))
    return {"commands": [f"openssl speed -seconds {seconds} -mr {' '.join(a)}" for a in commands],
            "per_second": figures, "per_operation": per_operation(figures)}
