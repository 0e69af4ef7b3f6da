"""Every limit is set in TOML and takes effect: a live proxy configured from a file.

Each test writes a configuration file with ``[limits]`` / ``[timeouts]`` set low,
loads it with ``proxy.config.load`` (the path ``tlsproxy serve --config`` takes),
starts the proxy on it and shows the limit biting: the status the README's
"Security and limits" table promises, and the connection closed where it says so.
One more test proves every field of ``Timeouts`` and ``Limits`` is reachable from
TOML, so a limit added later without a way to set it fails here.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import fields

import pytest

from proxy import config as cfg
from proxy.errors import ConfigError
from proxy.http1 import Limits as HTTPLimits
from proxy.server import ProxyServer
from tests.conftest import both_engines
from tests.fakes import RawTLSClient
from tests.processes import wait_until

engine = both_engines  # every limit is checked on both engines ([proxy] engine in the TOML below)

HOST = b"Host: www.example.test\r\n"


def write_config(path, pki, backend: str, *, timeouts: str = "", limits: str = "", extra: str = "") -> str:
    """A one-listener, one-pool TOML file with these [timeouts] and [limits] lines; its path."""
    cert, key = pki.files("www.example.test")
    path.write_text(f"""
[[listeners]]
listen = "127.0.0.1:0"
certs = [{{ cert = "{cert}", key = "{key}" }}]

[[pools]]
name = "web"
backends = ["{backend}"]

[timeouts]
{timeouts}

[limits]
{limits}
{extra}""")
    return str(path)


@pytest.fixture
def from_toml(pki, origin_factory, tmp_path, engine):
    """Start a proxy from a TOML file whose [timeouts] and [limits] are given as text."""
    origin = origin_factory("web")
    started: list[ProxyServer] = []

    def start(*, timeouts: str = "", limits: str = "") -> ProxyServer:
        path = write_config(tmp_path / f"limits-{len(started)}.toml", pki, origin.url, timeouts=timeouts,
                            limits=limits, extra=f"\n[proxy]\naccess_log = \"{tmp_path / 'access.log'}\"\n"
                                                 f"engine = \"{engine}\"\n")
        server = ProxyServer(cfg.load(path)).bind().start()
        server.port = server.addresses[0][1]
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown(grace=1.0)


def refused_with(proxy, raw: bytes, status: int, *, then_eof: bool = False):
    with RawTLSClient(proxy.port, proxy.ca) as client:
        client.send(raw)
        if then_eof:
            client.close_write()
        response = client.read_response()
        client.read_until_closed(timeout=3)
    assert response.status == status, (response, client.received[:200])
    assert response.headers.get("connection") == "close" and client.end in ("close_notify", "eof", "reset")
    return response


def accepted(proxy, raw: bytes) -> int:
    with RawTLSClient(proxy.port, proxy.ca) as client:
        client.send(raw)
        return client.read_response().status


@pytest.fixture
def start(from_toml, pki):
    def run(**sections) -> ProxyServer:
        server = from_toml(**sections)
        server.ca = pki.ca
        return server
    return run


# --------------------------------------------------------------------------- sizes
def test_max_request_line_414(start):
    proxy = start(limits="max_request_line = 1024")
    assert accepted(proxy, b"GET /" + b"a" * 900 + b" HTTP/1.1\r\n" + HOST + b"\r\n") == 200
    refused_with(proxy, b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414)


def test_max_field_line_431(start):
    proxy = start(limits="max_field_line = 512")
    assert accepted(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 400 + b"\r\n\r\n") == 200
    refused_with(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 600 + b"\r\n\r\n", 431)


def test_max_head_size_431(start):
    proxy = start(limits="max_head_size = 4096")
    lines = [b"X-%d: %s\r\n" % (i, b"v" * 400) for i in range(12)]  # each line small, ~5 KB in all
    refused_with(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"".join(lines) + b"\r\n", 431)
    assert accepted(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"".join(lines[:5]) + b"\r\n") == 200


def test_max_fields_431(start):
    proxy = start(limits="max_fields = 10")
    assert accepted(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(9)) + b"\r\n") == 200
    refused_with(proxy, b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n", 431)


def test_max_body_size_413(start):
    proxy = start(limits="max_body_size = 1000")
    post = b"POST /upload HTTP/1.1\r\n" + HOST
    assert accepted(proxy, post + b"Content-Length: 1000\r\n\r\n" + b"x" * 1000) == 200
    refused_with(proxy, post + b"Content-Length: 1001\r\n\r\n", 413)
    # chunked: the running total is checked as the chunks arrive
    refused_with(proxy, post + b"Transfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n"
                 + b"200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n", 413)


def test_max_chunk_ext_400(start):
    proxy = start(limits="max_chunk_ext = 64")
    post = b"POST /upload HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
    assert accepted(proxy, post + b"5;n=" + b"a" * 40 + b"\r\nhello\r\n0\r\n\r\n") == 200
    refused_with(proxy, post + b"5;n=" + b"a" * 100 + b"\r\nhello\r\n0\r\n\r\n", 400)


# --------------------------------------------------------------------------- time
def test_header_read_408(start):
    proxy = start(timeouts="header_read = 0.5")
    with RawTLSClient(proxy.port, proxy.ca) as client:
        client.send(b"GET / HTTP/1.1\r\n")
        response = client.read_response()
    assert response.status == 408 and b"0.5s" in response.body


def test_body_read_408(start):
    proxy = start(timeouts="body_read = 0.5")
    with RawTLSClient(proxy.port, proxy.ca) as client:
        client.send(b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nhello")
        response = client.read_response("POST")
        client.read_until_closed(timeout=3)
    assert response.status == 408 and b"body stalled" in response.body
    assert client.end in ("close_notify", "eof", "reset")


@pytest.mark.parametrize("timeouts, at_least, at_most", [
    ("idle_keepalive = 0.5", 0.4, 4),
    # Between requests the socket keeps the (shorter) send timeout; the idle limit is a
    # deadline over several such reads, so the connection lives for idle_keepalive.
    ("idle_keepalive = 1.5\nsend = 0.3", 1.3, 4),
], ids=["idle-limit", "idle-longer-than-send-timeout"])
def test_idle_keepalive_closes_an_idle_connection(start, timeouts, at_least, at_most):
    proxy = start(timeouts=timeouts)
    with RawTLSClient(proxy.port, proxy.ca) as client:
        client.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert client.read_response().status == 200
        started = time.monotonic()
        assert client.read_until_closed(timeout=6) == b"", "an idle close sends nothing (no 408)"
        waited = time.monotonic() - started
    assert client.end == "close_notify" and at_least < waited < at_most


def test_handshake_timeout_drops_a_silent_client(start):
    proxy = start(timeouts="handshake = 0.5")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        assert sock.recv(1) == b""  # closed by the proxy, long before our 5 s


# --------------------------------------------------------------------------- counts
def test_max_requests_per_connection(start):
    proxy = start(limits="max_requests_per_connection = 3")
    with RawTLSClient(proxy.port, proxy.ca) as client:
        responses = []
        for _ in range(3):
            client.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
            responses.append(client.read_response())
        client.read_until_closed(timeout=3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.headers.get("connection") for r in responses] == [None, None, "close"]
    assert client.end == "close_notify"


def test_max_connections_makes_the_next_client_wait(start):
    proxy = start(limits="max_connections = 2")
    first, second = RawTLSClient(proxy.port, proxy.ca), RawTLSClient(proxy.port, proxy.ca)
    third: list = []
    waiting = threading.Thread(target=lambda: third.append(RawTLSClient(proxy.port, proxy.ca, timeout=10)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive(), "a third connection was served past max_connections = 2"
    first.close()  # a slot frees up: the third client's handshake proceeds
    waiting.join(10)
    assert third, "the waiting client was never served"
    with third[0] as client:
        client.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert client.read_response().status == 200
    second.close()


def test_max_connections_per_client_closes_the_one_too_many_at_once(start, tmp_path):
    """One address may hold two connections; the third is closed before its handshake (proxy.admission)."""
    proxy = start(limits="max_connections_per_client = 2")
    first, second = RawTLSClient(proxy.port, proxy.ca), RawTLSClient(proxy.port, proxy.ca)
    started = time.monotonic()
    with pytest.raises(OSError):  # ssl.SSLError is one: the handshake meets a closed socket
        RawTLSClient(proxy.port, proxy.ca, timeout=5)
    assert time.monotonic() - started < 2, "the one too many was made to wait, not refused"
    with RawTLSClient(proxy.port, proxy.ca, source="127.0.0.2") as other:  # another address: its own count
        other.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert other.read_response().status == 200
    first.close()  # the address is under its limit again
    assert wait_until(lambda: proxy.per_client.open.get("127.0.0.1") == 1, 5)
    with RawTLSClient(proxy.port, proxy.ca) as again:
        again.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert again.read_response().status == 200
    second.close()
    assert wait_until(lambda: not proxy.per_client.open, 5), "every count went back to zero"
    assert proxy.stats.refused_per_client == 1
    assert "refused: over max_connections_per_client (2) from this address" in (tmp_path / "access.log").read_text()


# --------------------------------------------------------------------------- the file itself
def test_every_timeout_and_limit_can_be_set_in_toml(tmp_path, pki):
    numbers = {}
    lines = {"timeouts": [], "limits": []}
    for section, cls in (("timeouts", cfg.Timeouts), ("limits", cfg.Limits), ("limits", HTTPLimits)):
        for n, f in enumerate(fields(cls), start=1):
            if f.name == "http":
                continue
            value = n * 3 if f.type in (int, "int") else n * 0.25 + 0.5
            numbers[f.name] = value
            lines[section].append(f"{f.name} = {value}")
    path = write_config(tmp_path / "all.toml", pki, "http://127.0.0.1:9", timeouts="\n".join(lines["timeouts"]),
                        limits="\n".join(lines["limits"]))
    config = cfg.load(path)
    loaded = {**{f.name: getattr(config.timeouts, f.name) for f in fields(cfg.Timeouts)},
              **{f.name: getattr(config.limits, f.name) for f in fields(cfg.Limits) if f.name != "http"},
              **{f.name: getattr(config.limits.http, f.name) for f in fields(HTTPLimits)}}
    assert loaded == numbers


@pytest.mark.parametrize("section, line, message", [
    ("timeouts", "header_read = -1", "header_read must be positive"),
    ("limits", "max_connections = 0", "max_connections must be positive"),
    ("limits", "max_fields = 0", "max_fields must be positive"),
    ("limits", "max_connections_per_client = -1", "must be a whole number, 0 for no limit"),
    ("limits", "max_body = 10", "unknown key 'max_body'"),
    ("timeouts", "header_read = \"10s\"", "expected float"),
])
def test_a_bad_limit_is_one_config_error(section, line, message, tmp_path, pki):
    path = write_config(tmp_path / "bad.toml", pki, "http://127.0.0.1:9", **{section: line})
    with pytest.raises(ConfigError, match=message):
        cfg.load(path)
