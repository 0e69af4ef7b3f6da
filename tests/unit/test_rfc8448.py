"""proxy.tls.rfc8448: the published inputs of RFC 8448 §3 give its published secrets
through our key schedule (the notebook's walk up the ladder depends on both)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from proxy.tls import rfc8448
from proxy.tls.keyschedule import cipher_suite, key_schedule, traffic_keys


def test_the_key_shares_give_the_published_shared_secret():
    private = X25519PrivateKey.from_private_bytes(rfc8448.CLIENT_X25519_PRIVATE)
    shared = private.exchange(X25519PublicKey.from_public_bytes(rfc8448.SERVER_X25519_PUBLIC))
    assert shared == rfc8448.EXPECTED["shared_secret"]


def test_every_step_of_the_schedule_matches_the_rfc():
    suite = cipher_suite(rfc8448.SUITE)
    schedule = key_schedule(suite, rfc8448.EXPECTED["shared_secret"], rfc8448.HELLO_HASH,
                            rfc8448.SERVER_FINISHED_HASH)
    steps = dict(schedule.steps())
    assert len(steps) == 10
    for name, value in steps.items():
        assert value == rfc8448.EXPECTED[name], name


def test_the_server_handshake_keys_match_the_rfc():
    suite = cipher_suite(rfc8448.SUITE)
    keys = traffic_keys(suite, rfc8448.EXPECTED["server_handshake_traffic_secret"])
    assert keys.key == rfc8448.EXPECTED["server_handshake_key"]
    assert keys.iv == rfc8448.EXPECTED["server_handshake_iv"]
