"""course.capture.tls12: the TLS 1.2 PRF, record decryption, and static RSA with the server's key.

The PRF is checked against the published TLS 1.2 (P_SHA256) test vector; decryption
against the bundled captures (see course/data/example-capture/README.md), whose key logs
and server key were written by OpenSSL.
"""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")

from course.capture import tls12  # noqa: E402
from course.capture.bundle import load_example  # noqa: E402
from course.capture.secrecy import example_lesson  # noqa: E402
from proxy.errors import TLSDecryptError, TLSParseError  # noqa: E402
from proxy.tls.keyschedule import parse_key_log  # noqa: E402


def test_prf_sha256_matches_the_published_test_vector():
    # The TLS 1.2 PRF test vector circulated on the IETF TLS list (P_SHA256, 100 bytes).
    output = tls12.prf(bytes.fromhex("9bbe436ba940f017b17652849a71db35"), "test label",
                       bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100, tls12.SUITES[0x009C])
    assert output.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14ba"
        "f9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a51"
        "10fff70187347b66")


def test_key_log_decrypts_a_tls12_ecdhe_capture():
    bundle = load_example("terminate", "1.2")
    (connection,) = bundle.connections("client")
    opened = tls12.decrypt_connection12(connection.stream("client"), connection.stream("server"),
                                        key_log=parse_key_log(bundle.keys_log.read_text()))
    assert opened.handshake.suite.name.startswith("ECDHE-")
    assert opened.handshake.extended_master_secret            # OpenSSL negotiates RFC 7627 by default
    assert opened.application_data("client").startswith(b"POST /account/statement?id=path-marker-7 HTTP/1.1\r\n")
    assert opened.application_data("server").startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_wrong_master_secret_fails_authentication_instead_of_giving_garbage():
    (connection,) = load_example("terminate", "1.2").connections("client")
    with pytest.raises(TLSDecryptError, match="did not authenticate"):
        tls12.decrypt_connection12(connection.stream("client"), connection.stream("server"),
                                   master_secret=bytes(48))


def lesson_connection(name):
    from course.capture.flows import read_connections

    (connection,) = read_connections(example_lesson() / f"{name}.pcap")
    return connection


def test_static_rsa_is_decrypted_with_the_server_private_key_alone():
    connection = lesson_connection("static-rsa")
    key = (example_lesson() / "www-rsa.example.test.key").read_bytes()
    opened = tls12.decrypt_connection12(connection.stream("client"), connection.stream("server"),
                                        server_private_key=key)
    assert opened.handshake.suite.rsa_key_exchange
    assert opened.application_data("client").startswith(b"GET /account/statement?id=path-marker-7")
    assert b"balance" in opened.application_data("server")


def test_ecdhe_cannot_be_decrypted_with_the_server_private_key():
    connection = lesson_connection("ecdhe")
    key = (example_lesson() / "www-rsa.example.test.key").read_bytes()
    with pytest.raises(TLSDecryptError, match="forward secrecy"):
        tls12.decrypt_connection12(connection.stream("client"), connection.stream("server"),
                                   server_private_key=key)


def test_tls13_is_refused_with_a_pointer_to_the_key_schedule():
    (connection,) = load_example("terminate", "1.3").connections("client")
    with pytest.raises(TLSParseError, match="keyschedule"):
        tls12.read_handshake(connection.stream("client"), connection.stream("server"))
