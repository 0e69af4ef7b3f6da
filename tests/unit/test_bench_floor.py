"""course.bench.floor: ``openssl speed -mr`` output in, rates and µs per operation out."""

from __future__ import annotations

import pytest

from course.bench.floor import _speed, parse_speed, per_operation
from tests.tools import require_tool

# Lines as OpenSSL 3.0 prints them with -mr (the +DT/+R progress lines omitted): the F line
# carries the final rates.  Figures from the course machine.
SPEED_OUTPUT = "\n".join([
    "+F2:2:2048:2337.000000:48637.000000",                         # rsa2048: sign/s, verify/s
    "+F4:3:256:35134.343434:11400.000000",                         # ecdsap256: sign/s, verify/s
    "+F5:4:253:24390.000000",                                      # ecdhx25519: derive/s
    "+H:16384",
    "+F:6:AES-256-GCM:4800000000.00",                              # bytes/s at 16 KB
])


def test_parse_speed_reads_every_rate_including_the_rsa_verify_rate():
    figures = parse_speed(SPEED_OUTPUT)
    assert figures == {
        "rsa2048_sign_per_s": 2337.0, "rsa2048_verify_per_s": 48637.0,
        "ecdsa_p256_sign_per_s": pytest.approx(35134.343434), "ecdsa_p256_verify_per_s": 11400.0,
        "x25519_derive_per_s": 24390.0, "aes_256_gcm_bytes_per_s": 4.8e9,
    }


def test_per_operation_turns_rates_into_microseconds():
    per_op = per_operation(parse_speed(SPEED_OUTPUT))
    assert per_op["rsa2048_sign_us"] == pytest.approx(427.9, abs=0.01)
    assert per_op["rsa2048_verify_us"] == pytest.approx(20.56, abs=0.01)
    assert per_op["ecdsa_p256_verify_us"] == pytest.approx(87.72, abs=0.01)
    # RSA verifies faster than ECDSA; ECDSA signs faster than RSA: notebook 2's lesson.
    assert per_op["rsa2048_verify_us"] < per_op["ecdsa_p256_verify_us"]
    assert per_op["ecdsa_p256_sign_us"] < per_op["rsa2048_sign_us"]
    # One signature and two X25519 operations (key generation, derivation).
    assert per_op["tls13_ecdsa_full_handshake_server_floor_us"] == pytest.approx(
        per_op["ecdsa_p256_sign_us"] + 2 * per_op["x25519_derive_us"], abs=0.02)


def test_missing_rates_give_no_figure_rather_than_a_wrong_one():
    assert parse_speed("openssl: unknown algorithm") == {}
    assert per_operation({"rsa2048_sign_per_s": 0.0}) == {}
    assert "tls13_ecdsa_full_handshake_server_floor_us" not in per_operation({"ecdsa_p256_sign_per_s": 1e4})


def test_the_real_openssl_speed_output_parses():
    require_tool("openssl")
    figures = parse_speed(_speed("rsa2048", seconds=1))       # about 2 s: one second signing, one verifying
    assert figures["rsa2048_verify_per_s"] > figures["rsa2048_sign_per_s"] > 0
