"""The passthrough setup end to end: SNI routing, the origin's certificate, the splice."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proxy import config as cfg
from proxy.tls.clienthello import unrecognized_name_alert
from tests.conftest import API, REPO, WWW, both_engines, client_context, tls_connect, tlsproxy, wait_for_port
from tests.tools import require_tool

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

FIXTURES = REPO / "tests" / "fixtures" / "clienthello"
ROUTES = [cfg.RouteConfig("www", sni=WWW), cfg.RouteConfig("api", sni=API)]


@pytest.fixture
def tls_origins(pki, origin_factory):
    """Two origins that terminate TLS themselves, each with its own certificate."""
    www_cert, www_key = pki.files(WWW)
    api_cert, api_key = pki.files(API)
    return (origin_factory("tls-www", cert=www_cert, key=www_key),
            origin_factory("tls-api", cert=api_cert, key=api_key))


def get(sock: ssl.SSLSocket, host: str, path: str = "/") -> dict:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def wait_for_log(path: Path, text: str, timeout: float = 5.0) -> str:
    """The access log once it holds ``text`` (lines are written when a connection ends)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.02)


def pem_body(path) -> str:
    """The base64 of the first certificate in a PEM file (as openssl prints it)."""
    text = Path(path).read_text()
    return text[text.index("-----BEGIN CERTIFICATE-----"):text.index("-----END CERTIFICATE-----")]


def test_openssl_sees_the_origins_certificate_chosen_by_sni(pki, tls_origins, proxy_factory, tmp_path):
    openssl = require_tool("openssl")
    www, api = tls_origins
    log = tmp_path / "access.log"
    proxy = proxy_factory({"www": [www.url], "api": [api.url]}, ROUTES, mode="passthrough", access_log=str(log))
    for name in (WWW, API):
        run = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", name,
                              "-CAfile", str(pki.ca), "-verify_return_error", "-alpn", "http/1.1"],
                             input="", capture_output=True, text=True, timeout=20)
        assert run.returncode == 0, run.stderr
        assert f"subject=CN = {name}" in run.stdout
        assert "Verification: OK" in run.stdout
        # Byte for byte the origin's certificate: the proxy has none of its own.
        assert pem_body(pki.files(name)[0]) in run.stdout
    lines = wait_for_log(log, f"sni={API}").splitlines()
    assert re.search(rf"passthrough sni={WWW} alpn=http/1.1 backend={re.escape(www.url)} .*up=\d+ down=\d+",
                     lines[0]), lines


def test_tls_runs_end_to_end_to_the_origin(pki, tls_origins, proxy_factory):
    www, api = tls_origins
    proxy = proxy_factory({"www": [www.url], "api": [api.url]}, ROUTES, mode="passthrough")
    with tls_connect(proxy.port, pki, API) as sock:
        assert "api.example.test" in str(sock.getpeercert()["subject"])
        answer = get(sock, API, "/who")
    assert answer["origin"] == "tls-api"
    assert answer["tls"]["version"] == "TLSv1.3", "the origin itself terminated the client's TLS"
    names = [name.lower() for name, _ in answer["headers"]]
    assert "x-forwarded-for" not in names, "the proxy never saw the HTTP request, so it added nothing"


def test_unknown_name_gets_the_unrecognized_name_alert(pki, tls_origins, proxy_factory):
    www, _ = tls_origins
    proxy = proxy_factory({"www": [www.url]}, [cfg.RouteConfig("www", sni=WWW)], mode="passthrough")
    # A real client's ClientHello (SNI "openssl.example"), sent as captured.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall((FIXTURES / "openssl-s_client.bin").read_bytes())
        assert sock.recv(100) == unrecognized_name_alert() == b"\x15\x03\x03\x00\x02\x02\x70"
        assert sock.recv(100) == b"", "the proxy closes after the alert"
    # And what a TLS library makes of it.
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        tls_connect(proxy.port, pki, "unknown.example.test")
    assert www.requests_seen == 0


def test_openssl_reports_the_alert(pki, tls_origins, proxy_factory):
    openssl = require_tool("openssl")
    www, _ = tls_origins
    proxy = proxy_factory({"www": [www.url]}, [cfg.RouteConfig("www", sni=WWW)], mode="passthrough")
    run = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername",
                          "nope.example.test"], input="", capture_output=True, text=True, timeout=20)
    assert "unrecognized name" in run.stderr and "alert number 112" in run.stderr


def test_a_default_route_takes_names_without_a_route_and_no_sni(pki, tls_origins, proxy_factory):
    www, api = tls_origins
    proxy = proxy_factory({"www": [www.url], "api": [api.url]},
                          [cfg.RouteConfig("api", sni=API), cfg.RouteConfig("www", host="*")], mode="passthrough")
    context = client_context(pki)
    context.check_hostname = False  # no SNI: the default origin's certificate, for any name
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    with context.wrap_socket(raw, server_hostname=None) as sock:
        assert get(sock, WWW)["origin"] == "tls-www"
    with tls_connect(proxy.port, pki, API) as sock:
        assert get(sock, API)["origin"] == "tls-api"


def test_a_client_hello_in_one_byte_segments_still_routes(pki, tls_origins, proxy_factory):
    """TCP may cut the ClientHello anywhere: here, after every byte (with TCP_NODELAY and a pause)."""
    _, api = tls_origins
    proxy = proxy_factory({"api": [api.url]}, [cfg.RouteConfig("api", sni=API)], mode="passthrough")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname=API)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    for i in range(len(hello)):
        sock.send(hello[i:i + 1])
        if i % 8 == 0:
            time.sleep(0.0005)

    def pump(operation):
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                if pending := outgoing.read():
                    sock.sendall(pending)
                data = sock.recv(65536)
                incoming.write(data) if data else incoming.write_eof()
                continue
            if pending := outgoing.read():
                sock.sendall(pending)
            return result

    pump(tls.do_handshake)
    assert tls.getpeercert()["subject"] == ((("commonName", API),),)
    pump(lambda: tls.write(f"GET / HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n".encode()))
    data = b""
    while True:
        try:
            chunk = pump(lambda: tls.read(65536))
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"tls-api"' in data


def test_malformed_first_bytes_are_closed_and_logged(tls_origins, proxy_factory, tmp_path):
    www, _ = tls_origins
    log = tmp_path / "access.log"
    proxy = proxy_factory({"www": [www.url]}, [cfg.RouteConfig("www", host="*")], mode="passthrough",
                          access_log=str(log))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")  # plain HTTP on a TLS port
        assert sock.recv(100) == b""
    assert www.requests_seen == 0
    content = wait_for_log(log, "malformed")
    assert "rejected: malformed ClientHello: the first record has content type 71" in content


def test_a_slow_client_hello_is_cut_at_the_handshake_timeout(tls_origins, proxy_factory):
    www, _ = tls_origins
    proxy = proxy_factory({"www": [www.url]}, mode="passthrough", timeouts=cfg.Timeouts(handshake=0.5))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall((FIXTURES / "python-ssl.bin").read_bytes()[:20])  # and then nothing
        assert sock.recv(100) == b""
        assert 0.4 < time.monotonic() - started < 5


def test_half_close_passes_through_the_splice(proxy_factory):
    """The client sends its hello and data, then shuts its sending side; the origin, seeing
    EOF, answers with a digest of all it got: the client's read side must still be open."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = {}

    def raw_origin():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            received["data"] = data
            conn.sendall(hashlib.sha256(data).hexdigest().encode())

    thread = threading.Thread(target=raw_origin, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    proxy = proxy_factory({"raw": [url]}, [cfg.RouteConfig("raw", sni="openssl.example")], mode="passthrough")
    hello = (FIXTURES / "openssl-s_client.bin").read_bytes()
    payload = b"after the hello " * 50_000
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(hello + payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    thread.join(5)
    listener.close()
    assert received["data"] == hello + payload, "the ClientHello is replayed, then every byte after it"
    assert answer == hashlib.sha256(hello + payload).hexdigest().encode()


def test_a_dead_backend_is_skipped_and_marked_down(pki, tls_origins, proxy_factory):
    www, _ = tls_origins
    dead = socket.create_server(("127.0.0.1", 0))
    dead_url = f"https://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now: connections are refused
    proxy = proxy_factory({"www": [dead_url, www.url]}, mode="passthrough")
    for _ in range(3):
        with tls_connect(proxy.port, pki, WWW) as sock:
            assert get(sock, WWW)["origin"] == "tls-www"
    dead_backend = proxy.balancers["www"].backends[0]
    assert not dead_backend.available() and "refused" in dead_backend.last_error.lower()


def test_cli_serve_mode_passthrough(pki, tls_origins, engine):
    www, _ = tls_origins
    process = tlsproxy("serve", "--engine", engine, "--mode", "passthrough", "--listen", "127.0.0.1:0",
                       "--backend", www.url)
    try:
        line = ""
        deadline = time.monotonic() + 15
        while "listening on" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        port = int(re.search(r"passthrough listening on 127\.0\.0\.1:(\d+)", line).group(1))
        wait_for_port(port)
        with tls_connect(port, pki, WWW) as sock:
            assert get(sock, WWW)["origin"] == "tls-www"
    finally:
        process.terminate()
        process.wait(10)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_cli_serve_passthrough_to_a_bare_host_port_backend(pki, origin_factory, tmp_path, host):
    """`--backend HOST:PORT` (no scheme: nothing HTTP happens on that leg) and a real TLS request."""
    if host == "::1" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    cert, key = pki.files(WWW)
    origin = origin_factory("tls-www", host=host, cert=cert, key=key)
    backend = str(cfg.Address(host, origin.port))  # "127.0.0.1:PORT" or "[::1]:PORT"
    log = tmp_path / "access.log"
    process = tlsproxy("serve", "--mode", "passthrough", "--listen", "127.0.0.1:0", "--backend", backend,
                       "--access-log", str(log))
    try:
        lines, port = [], None
        deadline = time.monotonic() + 15
        while port is None and time.monotonic() < deadline:
            lines.append(process.stderr.readline())
            if found := re.search(r"passthrough listening on 127\.0\.0\.1:(\d+)", lines[-1]):
                port = int(found.group(1))
        assert port, "".join(lines)
        wait_for_port(port)
        with tls_connect(port, pki, WWW) as sock:
            assert sock.getpeercert()["subject"] == ((("commonName", WWW),),), "the origin's own certificate"
            answer = get(sock, WWW, "/who")
        assert answer["origin"] == "tls-www" and answer["tls"]["version"] == "TLSv1.3"
        assert origin.requests_seen == 1
        assert re.search(rf"passthrough sni={WWW} .*backend={re.escape(backend)} .*up=\d+ down=\d+",
                         wait_for_log(log, f"backend={backend} "))
    finally:
        process.terminate()
        process.wait(10)
