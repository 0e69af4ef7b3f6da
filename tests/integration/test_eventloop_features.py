"""The operator's features on both engines: health checks, the key log, handshake traces.

The event loop (``proxy.eventloop``) drives connections differently from the threaded
engine, but it must keep every feature a student or an operator relies on.  Each test
here runs on both engines (``engine = both_engines``, tests/conftest.py), with real
sockets, real TLS and real origins:

==========================  ================================================================
feature                     what must hold
==========================  ================================================================
active health checks        an origin that stops is marked down by the checks alone (no
(``proxy.health``)          request ever hits it, so not one 502); traffic goes to the other;
                            the origin comes back and is marked up after ``rise`` checks
key log (``keylog=``)       one connection writes the NSS key-log lines of its version
                            (five TLS 1.3 secrets, or TLS 1.2's CLIENT_RANDOM), under the
                            ClientHello's random, byte for byte what the client logged itself
``trace=True``              every handshake message is printed as it happens, in order, even
(``tlsproxy serve           after SNI switched to another certificate's context
--trace``)
``tracing(context)``        the notebooks' server-side trace is the client's, mirrored
(``course.handshakes``)
==========================  ================================================================

The status page on both engines is tests/integration/test_status_page.py.
"""

from __future__ import annotations

import re
import ssl

import pytest

from course.handshakes import tracing
from proxy import config as cfg
from proxy.tls.trace import HandshakeTrace, attach_tracer, detach_tracers, trace_available
from tests.conftest import API, WWW, both_engines, client_context, tls_connect
from tests.fakes import RawTLSClient
from tests.processes import wait_until

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

needs_trace = pytest.mark.skipif(not trace_available(), reason="this Python's ssl has no _msg_callback hook")

TLS13_LABELS = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}  # RFC 8446 §7.1
TLS12_LABELS = {"CLIENT_RANDOM"}  # the master secret (RFC 5246 §8.1)
VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


def get(client: RawTLSClient, path: str = "echo-id"):
    client.send(b"GET /%s HTTP/1.1\r\nHost: www.example.test\r\n\r\n" % path.encode())
    return client.read_response()


def served_by(client: RawTLSClient, count: int) -> list[str]:
    """The origin behind each of ``count`` requests; every one must be a 200."""
    responses = [get(client) for _ in range(count)]
    assert [r.status for r in responses] == [200] * count, [(r.status, r.body[:80]) for r in responses]
    return [r.headers["server"] for r in responses]


def one_request(port: int, pki, context: ssl.SSLContext, server_name: str = WWW) -> tuple[bytes, str]:
    """``GET /health`` on a fresh connection, read to the end; (response, TLS version)."""
    with tls_connect(port, pki, server_name, context=context) as sock:
        version = sock.version()
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response, version


def client_hello_random(trace: HandshakeTrace) -> str:
    """The 32-byte random of the ClientHello the client sent, in hex (RFC 8446 §4.1.2:
    type 1, length 3, legacy_version 2, then random 32)."""
    hello = next(e for e in trace.events if e.kind == "handshake" and e.name == "ClientHello")
    assert hello.direction == "sent"
    return hello.data[6:38].hex()


def key_log_lines(path) -> list[tuple[str, str, str]]:
    """(label, client_random, secret) of every line of an NSS key log, comments left out."""
    entries = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            label, client_random, secret = line.split(" ")
            entries.append((label, client_random, secret))
    return entries


# --------------------------------------------------------------------------- health checks
def test_active_checks_take_a_stopped_origin_out_and_bring_it_back(pki, origin_factory, proxy_factory):
    a, b = origin_factory("a", record_raw=True), origin_factory("b")
    health = cfg.HealthConfig(path="/health", interval=0.1, timeout=0.5, rise=2, fall=2,
                              max_fails=1, fail_timeout=60.0)  # a passive ejection would outlast the test
    proxy = proxy_factory({"web": [a.url, b.url]}, pool_options={"web": {"health": health}})
    backend_a = proxy.balancers["web"].backends[0]
    assert wait_until(lambda: any(r.startswith(b"GET /health ") and b"tlsproxy-health" in r.lower()
                                  for r in a.raw_requests)), "no health check reached origin a"
    with RawTLSClient(proxy.port, pki.ca) as client:
        assert served_by(client, 2) == ["tlslab-origin/a", "tlslab-origin/b"]

        a.stop()  # no request is sent until the checks have noticed: only they can take a out
        assert wait_until(lambda: backend_a.active_down), "the checks never marked the stopped origin down"
        assert backend_a.check_failures >= health.fall
        assert backend_a.last_error.startswith("health check failed")
        assert backend_a.down_until == 0.0, "a was ejected passively: a request reached it"
        assert served_by(client, 6) == ["tlslab-origin/b"] * 6, "traffic still went to the down origin"

        a.start()  # the same port: the origin comes back
        assert wait_until(lambda: not backend_a.active_down), "the checks never marked the origin up again (rise)"
        assert backend_a.check_successes >= health.rise
        assert set(served_by(client, 4)) == {"tlslab-origin/a", "tlslab-origin/b"}


# --------------------------------------------------------------------------- key log
@pytest.mark.parametrize(("tls", "server_name"), [("1.3", WWW), ("1.2", WWW), ("1.3", API)],
                         ids=["tls13", "tls12", "tls13-sni-switch"])
def test_key_log_holds_the_secrets_the_client_used(pki, origin_factory, proxy_factory, tmp_path, tls, server_name):
    """``api.example.test`` is the second certificate: SNI switches the connection to another
    context, and the key log must follow it (proxy.tls.contexts)."""
    origin = origin_factory("web")
    proxy_log, client_log = tmp_path / "proxy-keys.log", tmp_path / "client-keys.log"
    proxy = proxy_factory({"web": [origin.url]}, keylog=str(proxy_log))
    context = client_context(pki)
    context.maximum_version = VERSIONS[tls]
    context.keylog_filename = str(client_log)
    client_trace = HandshakeTrace()
    assert attach_tracer(context, client_trace.collect) or not trace_available()

    response, version = one_request(proxy.port, pki, context, server_name)
    detach_tracers(context)
    assert response.startswith(b"HTTP/1.1 200 ") and version == f"TLSv{tls}"

    labels = TLS13_LABELS if tls == "1.3" else TLS12_LABELS
    assert wait_until(lambda: proxy_log.exists() and len(key_log_lines(proxy_log)) >= len(labels))
    proxy_entries = key_log_lines(proxy_log)
    assert {label for label, _, _ in proxy_entries} == labels
    assert len({client_random for _, client_random, _ in proxy_entries}) == 1, "one connection, one client random"
    assert all(re.fullmatch(r"[0-9a-f]{64}", r) and re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{96}", s)
               for _, r, s in proxy_entries), proxy_entries
    assert sorted(proxy_entries) == sorted(key_log_lines(client_log)), "the proxy logged other secrets than the client's"
    if trace_available():
        assert proxy_entries[0][1] == client_hello_random(client_trace), "not the random of this ClientHello"


# --------------------------------------------------------------------------- traces
def mirror(trace: HandshakeTrace) -> list[tuple[str, str]]:
    """The message flow the other endpoint saw: what one sent, the other received."""
    return [("received" if direction == "sent" else "sent", name) for direction, name in trace.message_flow()]


TRACE_LINE = re.compile(r"^tls #(\d+) +[\d.]+ ms +(sent|received) +(client|server) -> (client|server) +(.+) \(\d+ bytes\)$")


@needs_trace
@pytest.mark.parametrize("server_name", [WWW, API], ids=["default-cert", "sni-switch"])
def test_trace_prints_every_handshake_message_in_order(pki, origin_factory, proxy_factory, capsys, server_name):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]}, trace=True)  # its log is sys.stderr: capsys reads it
    capsys.readouterr()
    context = client_context(pki)
    client_trace = HandshakeTrace()
    attach_tracer(context, client_trace.collect)
    response, _ = one_request(proxy.port, pki, context, server_name)
    assert response.startswith(b"HTTP/1.1 200 ")

    def printed() -> list[tuple[str, str, str]]:
        return [(m[1], m[2], m[5]) for line in capsys.readouterr().err.splitlines()
                if (m := TRACE_LINE.match(line))]

    mirrored = mirror(client_trace)
    lines: list[tuple[str, str, str]] = []
    # OpenSSL reports a message it sent *after* writing it, so the client can have read
    # the proxy's close_notify before the proxy printed it: wait (bounded) for the line.
    wait_until(lambda: lines.extend(printed()) or len(lines) >= len(mirrored))
    assert {number for number, _, _ in lines} == {"1"}, "one connection, one trace number"
    flow = [(direction, name) for _, direction, name in lines]
    assert [m for m in flow if m[1] != "ChangeCipherSpec"][:7] == [
        ("received", "ClientHello"), ("sent", "ServerHello"), ("sent", "EncryptedExtensions"),
        ("sent", "Certificate"), ("sent", "CertificateVerify"), ("sent", "Finished"), ("received", "Finished")], flow
    assert flow == mirrored, "the proxy printed other messages than the client exchanged"


@needs_trace
@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_tracing_the_proxys_context_mirrors_the_client(pki, origin_factory, proxy_factory, tls):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW)])  # one context: no SNI switch
    server_context = next(iter(proxy.tls_contexts.values()))
    context = client_context(pki)
    context.maximum_version = VERSIONS[tls]
    client_trace = HandshakeTrace()
    attach_tracer(context, client_trace.collect)
    with tracing(server_context) as server_trace:
        response, version = one_request(proxy.port, pki, context)
        mirrored = mirror(client_trace)
        wait_until(lambda: len(server_trace.message_flow()) >= len(mirrored))  # see the test above
    assert response.startswith(b"HTTP/1.1 200 ") and version == f"TLSv{tls}"
    assert getattr(server_context, "_msg_callback", None) is None  # detached again

    assert server_trace.is_complete and server_trace.side == "server" and client_trace.side == "client"
    messages = server_trace.handshake_messages()
    expected = (["ClientHello", "ServerHello", "EncryptedExtensions", "Certificate", "CertificateVerify",
                 "Finished", "Finished"] if tls == "1.3" else
                ["ClientHello", "ServerHello", "Certificate", "ServerKeyExchange", "ServerHelloDone",
                 "ClientKeyExchange", "Finished"])
    assert messages[:7] == expected, server_trace.format()
    assert messages == client_trace.handshake_messages()
    assert server_trace.message_flow() == mirrored, server_trace.format()
