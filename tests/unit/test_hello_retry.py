"""HelloRetryRequest, by name: a ServerHello whose random is SHA-256("HelloRetryRequest").

RFC 8446 §4.1.3: the HelloRetryRequest has the ServerHello's structure and type (2);
only its random tells it apart.  The trace (proxy/tls/trace.py), the dissector
(course/capture/dissect.py) and so the ladder must name it, and the lab client's
OpenSSL configuration for ``--hrr`` must really make its only key share a P-521 one.
Bytes in, names out; the last test runs a Python with that configuration (no network).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from course.capture import dissect, setups
from course.capture.ladder import Arrow, notes
from proxy.tls import trace
from proxy.tls.records import ContentType
from tests.conftest import REPO

HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def server_hello(random: bytes) -> bytes:
    """A minimal TLS 1.3 ServerHello (or HelloRetryRequest) handshake message, header included."""
    extensions = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x02\x00\x1d"   # supported_versions, key_share(X25519)
    body = (b"\x03\x03" + random + b"\x00" + b"\x13\x01" + b"\x00"
            + len(extensions).to_bytes(2, "big") + extensions)
    return b"\x02" + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize("random, name", [(HRR_RANDOM, "HelloRetryRequest"), (bytes(range(32)), "ServerHello")],
                         ids=["hrr", "server-hello"])
def test_the_trace_names_a_hello_retry_request_by_its_random(random, name):
    event = trace.make_event(server_side=True, direction="write", version=0x0304,
                             content_type=ContentType.HANDSHAKE, data=server_hello(random))
    assert event.name == name and event.kind == "handshake"
    assert trace.flow_name(event) == name


def test_the_constant_is_rfc_8446s():
    # RFC 8446 §4.1.3 prints it: CF 21 AD 74 E5 9A 61 11 BE 1D 8C 02 1E 65 B8 91 C2 A2 11 16 7A BB 8C 5E 07 9E 09 E2 C8 A8 33 9C
    assert trace.HELLO_RETRY_REQUEST_RANDOM.hex().upper() == (
        "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


@pytest.mark.parametrize("random, name", [(HRR_RANDOM, "HelloRetryRequest"), (b"\x07" * 32, "ServerHello")],
                         ids=["hrr", "server-hello"])
def test_the_dissector_names_it_too(random, name):
    assert dissect.message_name(server_hello(random)) == name


def test_a_sealed_stream_with_a_retry_is_named_record_by_record():
    """HelloRetryRequest, the middlebox ChangeCipherSpec, then the real ServerHello: what an
    observer without keys reads from the server's bytes."""
    def record(content_type: int, fragment: bytes) -> bytes:
        return bytes([content_type, 3, 3]) + len(fragment).to_bytes(2, "big") + fragment

    stream = (record(22, server_hello(HRR_RANDOM)) + record(20, b"\x01")
              + record(22, server_hello(b"\x05" * 32)) + record(23, b"\x00" * 40))
    views, _, _ = dissect._sealed_views(stream, "tls1.3")
    assert [v.names for v in views] == [("HelloRetryRequest",), ("ChangeCipherSpec",), ("ServerHello",),
                                        ("Application Data",)]


def test_the_ladder_explains_a_retry():
    arrows = [Arrow(0.0, "client", "proxy", "ClientHello", "plaintext", "client", 1),
              Arrow(0.04, "proxy", "client", "HelloRetryRequest, ChangeCipherSpec", "plaintext", "client", 1,
                    (("HelloRetryRequest, ChangeCipherSpec", "plaintext"),))]
    assert any(line.startswith("HelloRetryRequest:") and "§4.1.4" in line for line in notes(arrows))
    assert not any(line.startswith("HelloRetryRequest:") for line in notes(arrows[:1]))


def test_the_lab_clients_configuration_offers_a_p521_key_share_only(tmp_path):
    """The file ``tlsproxy capture --hrr`` gives the lab client (OPENSSL_CONF): its ClientHello
    lists P-521 then X25519, and carries a key share for P-521 alone (group 0x0019)."""
    conf = tmp_path / "client-openssl.cnf"
    conf.write_text(setups.HRR_OPENSSL_CONF.format(groups=setups.HRR_GROUPS))
    program = (
        "import ssl\n"
        "from proxy.tls.clienthello import parse_client_hello\n"
        "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
        "out = ssl.MemoryBIO(); s = c.wrap_bio(ssl.MemoryBIO(), out, server_hostname='www.example.test')\n"
        "try:\n    s.do_handshake()\nexcept ssl.SSLWantReadError:\n    pass\n"
        "hello = parse_client_hello(out.read())\n"
        "groups, shares = hello.extension(10), hello.extension(51)\n"
        "print(groups[2:].hex(), shares[2:4].hex(), int.from_bytes(shares[:2], 'big') == 4 + int.from_bytes(shares[4:6], 'big'))\n"
    )
    env = {**os.environ, "OPENSSL_CONF": str(conf), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    groups, first_share, only_one = done.stdout.split()
    assert groups == "0019001d" and first_share == "0019" and only_one == "True"
