"""HSTS at the terminator and the HTTP -> HTTPS redirect listener, on real sockets, on both engines.

Each proxy here has two listeners on 127.0.0.1:0: a terminate listener (www and api
certificates) and a ``mode = "redirect"`` listener whose 308s point at the first.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess

import pytest

from proxy import config as cfg
from proxy.server import ProxyServer
from tests.conftest import API, WWW, both_engines, client_context, tls_connect
from tests.fakes import FakeBackend, refused_port
from tests.tools import require_tool

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

STS = "max-age=31536000; includeSubDomains"


@pytest.fixture
def start_proxy(pki, engine):
    """Start a terminate + redirect proxy; returns (server, https_port, redirect_port)."""
    started: list[ProxyServer] = []

    def start(backends: list[str], *, hsts: str | None = None, https_port: int | None = None,
              routes: tuple[cfg.RouteConfig, ...] = (cfg.RouteConfig("web"),)):
        certs = tuple(cfg.CertFiles(*pki.files(name)) for name in (WWW, API))
        config = cfg.validate(cfg.Config(
            listeners=(cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "terminate", certs),
                       cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "redirect", (), https_port)),
            pools=(cfg.PoolConfig("web", tuple(cfg.parse_backend(b, where="test") for b in backends)),),
            routes=routes, access_log=None, engine=engine, hsts=hsts,
            timeouts=cfg.Timeouts(backend_connect=2.0, backend_read=5.0),
        ))
        server = ProxyServer(config).bind().start()
        started.append(server)
        (_, tls_port), (_, plain_port) = server.addresses
        return server, tls_port, plain_port

    yield start
    for server in started:
        server.shutdown(grace=1.0)


def https_get(port, pki, path="/", host=WWW):
    context = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.sock = tls_connect(port, pki, host, context=context)
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def sts_fields(response) -> list[str]:
    return response.msg.get_all("Strict-Transport-Security") or []


def plain_exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the redirect listener; read until it closes.  (status, headers, everything)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):  # the listener closes after its answer: this loop ends
            received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    return int(head[0].split()[1]), headers, received


# --------------------------------------------------------------------------- HSTS
def test_hsts_on_a_proxied_200_over_tls(pki, origin_factory, start_proxy):
    origin = origin_factory("web")
    _, tls_port, _ = start_proxy([origin.url], hsts=STS)
    response = https_get(tls_port, pki, "/hello")
    assert response.status == 200
    assert sts_fields(response) == [STS]


def test_hsts_on_the_proxys_own_502_and_404(pki, start_proxy):
    # nginx's add_header ... always: the terminator's errors promise HTTPS too.
    _, tls_port, _ = start_proxy([f"http://127.0.0.1:{refused_port()}"], hsts=STS,
                                 routes=(cfg.RouteConfig("web", host=WWW),))
    bad_gateway = https_get(tls_port, pki)
    assert bad_gateway.status == 502
    assert sts_fields(bad_gateway) == [STS]
    not_found = https_get(tls_port, pki, host=API)  # no route for api: the proxy's 404
    assert not_found.status == 404
    assert sts_fields(not_found) == [STS]


def test_no_hsts_unless_configured(pki, origin_factory, start_proxy):
    origin = origin_factory("web")
    _, tls_port, plain_port = start_proxy([origin.url])
    assert sts_fields(https_get(tls_port, pki)) == []


def test_the_origins_own_sts_is_kept_not_doubled(pki, start_proxy):
    def origin_with_sts(conn):
        while conn.read_request() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\nContent-Length: 2\r\n\r\nok")

    with FakeBackend(origin_with_sts) as backend:
        _, tls_port, _ = start_proxy([backend.url], hsts=STS)
        response = https_get(tls_port, pki)
    assert response.status == 200
    assert sts_fields(response) == ["max-age=60"]  # RFC 6797 §7.1: only one such header field


# --------------------------------------------------------------------------- the redirect listener
def test_get_and_post_get_308_to_the_same_target(origin_factory, start_proxy):
    origin = origin_factory("web")
    _, tls_port, plain_port = start_proxy([origin.url], hsts=STS)
    status, headers, _ = plain_exchange(
        plain_port, b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: www.example.test:%d\r\n\r\n" % plain_port)
    assert status == 308
    assert headers["location"] == f"https://www.example.test:{tls_port}/a/b?x=1&y=2"
    assert headers["content-length"] == "0"
    assert "strict-transport-security" not in headers  # RFC 6797 §7.2: never over plain HTTP
    status, headers, _ = plain_exchange(
        plain_port, b"POST /form?id=7 HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 5\r\n\r\nhello")
    assert status == 308  # RFC 9110 §15.4.9: POST stays POST, unlike 301
    assert headers["location"] == f"https://www.example.test:{tls_port}/form?id=7"


def test_port_443_is_left_out_of_the_location(origin_factory, start_proxy):
    origin = origin_factory("web")
    _, _, plain_port = start_proxy([origin.url], https_port=443)
    status, headers, _ = plain_exchange(plain_port, b"GET /x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
    assert (status, headers["location"]) == (308, "https://api.example.test/x")


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.0\r\n\r\n", 400),  # no Host: no name to redirect to
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # RFC 9112 §3.2: HTTP/1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),  # an invalid Host
    (b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", 421),  # not a name the routes serve
])
def test_no_valid_host_no_redirect(origin_factory, start_proxy, raw, status):
    origin = origin_factory("web")
    _, _, plain_port = start_proxy([origin.url], routes=(cfg.RouteConfig("web", host=WWW),
                                                         cfg.RouteConfig("web", host="*.example.test")))
    got, headers, _ = plain_exchange(plain_port, raw)
    assert got == status
    assert "location" not in headers


def test_curl_follows_the_redirect_to_https_and_sees_hsts(pki, origin_factory, start_proxy, tmp_path):
    curl = require_tool("curl")
    origin = origin_factory("web")
    _, tls_port, plain_port = start_proxy([origin.url], hsts=STS)
    dumped = tmp_path / "headers.txt"
    result = subprocess.run(
        [curl, "-sS", "-L", "--max-redirs", "3", "--cacert", str(pki.ca), "--noproxy", "*",
         "--resolve", f"{WWW}:{plain_port}:127.0.0.1", "--resolve", f"{WWW}:{tls_port}:127.0.0.1",
         "-D", str(dumped), "-d", "posted", "-w", "\n%{url_effective} %{http_code} %{num_redirects}",
         f"http://{WWW}:{plain_port}/hello?x=1"],
        capture_output=True, text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                                          if "proxy" not in k.lower()})
    assert result.returncode == 0, result.stderr
    body, summary = result.stdout.rsplit("\n", 1)
    assert summary == f"https://{WWW}:{tls_port}/hello?x=1 200 1"
    document = json.loads(body)
    assert document["method"] == "POST"  # a 308 keeps the method and the body
    assert document["body"]["sha256"] == hashlib.sha256(b"posted").hexdigest()
    responses = dumped.read_bytes().decode("latin-1").split("\r\n\r\n")
    assert responses[0].startswith("HTTP/1.1 308")
    assert "strict-transport-security" not in responses[0].lower()
    assert f"strict-transport-security: {STS}".lower() in responses[1].lower()
