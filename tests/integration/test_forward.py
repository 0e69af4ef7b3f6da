"""The forward proxy with real clients: CONNECT tunnels, absolute-form requests, the policy.

Nothing here resolves or connects outside loopback: denied destinations are refused
before any connection, names are "localhost" or mapped with the policy's static hosts.

Every test that starts a proxy runs on both engines (``engine = both_engines``): the
threaded one (``proxy.modes.forward``) and the event loop (``proxy.eventloop.forward``),
which must give the same answers and write the same log lines.  The last two tests
(the lab's TOML and ``serve --help``) start no proxy, so they run once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from proxy import config as cfg
from proxy.policy import ForwardPolicy, Rule
from tests.conftest import REPO, WWW, both_engines, tlsproxy, wait_for_port
from tests.tools import require_tool

engine = both_engines  # every test that starts a proxy runs on both engines (tests/conftest.py)

CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # no inherited proxies


@pytest.fixture
def web(origin_factory):
    return origin_factory("web")


@pytest.fixture
def tls_www(pki, origin_factory):
    cert, key = pki.files(WWW)
    return origin_factory("tls-www", cert=cert, key=key)


@pytest.fixture
def forward_proxy(proxy_factory, tmp_path):
    def start(**policy):
        log = tmp_path / "access.log"
        server = proxy_factory(mode="forward", access_log=str(log), forward_policy=ForwardPolicy.build(**policy))
        server.log_path = log
        return server
    return start


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("curl"), "-sS", *args], capture_output=True, text=True, timeout=20,
                          env=CLEAN_ENV)


def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes to the proxy, return everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def connect_request(port: int, authority: str) -> bytes:
    return raw_request(port, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())


def json_documents(text: str) -> list:
    """Several JSON documents one after another (curl given two URLs prints both bodies)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        while text[index].isspace():
            index += 1
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def wait_for_log(server, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = server.log_path.read_text() if server.log_path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.02)


# --------------------------------------------------------------------------- CONNECT
def test_curl_https_through_connect_verifies_the_origins_certificate(pki, tls_www, forward_proxy):
    proxy = forward_proxy(connect_ports=[tls_www.port], hosts={WWW: "127.0.0.1"})
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", "--cacert", str(pki.ca),
               f"https://{WWW}:{tls_www.port}/through/the/tunnel", "-w", "\n%{http_connect} %{ssl_verify_result}")
    assert run.returncode == 0, run.stderr
    body, _, codes = run.stdout.rpartition("\n")
    assert codes == "200 0", "CONNECT answered 200, and curl verified the certificate (result 0)"
    answer = json.loads(body)
    assert answer["origin"] == "tls-www" and answer["path"] == "/through/the/tunnel"
    assert answer["tls"]["version"] == "TLSv1.3", "TLS ran from curl to the origin, through the tunnel"
    log = wait_for_log(proxy, "ended=")
    assert re.search(rf'"CONNECT {WWW}:{tls_www.port} HTTP/1.1" 200 backend=127.0.0.1:{tls_www.port} '
                     r".*up=\d+ down=\d+ ended='(closed|client gone|client reset: .*)'", log), log
    # ("client gone" or "client reset": curl may close with the origin's last TLS records
    # unread, and its kernel then answers them with RST.)


def test_connect_denied_destination_gets_403_with_the_rule(forward_proxy):
    proxy = forward_proxy()
    answer = connect_request(proxy.port, "10.1.2.3:443")
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert answer.endswith(b"403 Forbidden: denied by rule 3: deny all (the implicit last rule) "
                           b"(destination 10.1.2.3 port 443)\n")
    # curl shows the same refusal.
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", "https://10.1.2.3/")
    assert run.returncode == 56 and "403" in run.stderr
    assert "denied by rule 3" in wait_for_log(proxy, "10.1.2.3:443")


def test_connect_to_a_port_not_allowed_gets_403(web, forward_proxy):
    proxy = forward_proxy()
    answer = connect_request(proxy.port, f"127.0.0.1:{web.port}")  # a loopback address, the wrong port
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert f"CONNECT to port {web.port} is not allowed (allowed ports: 443,8443)".encode() in answer
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", "https://127.0.0.1:22/")
    assert run.returncode == 56 and "403" in run.stderr
    assert web.requests_seen == 0


@pytest.mark.parametrize("authority, shown", [
    ("167772161:443", b"destination 10.0.0.1 port 443 for 167772161"),      # inet_aton's decimal form
    ("[::ffff:10.0.0.1]:443", b"destination 10.0.0.1 port 443"),           # IPv4-mapped IPv6
    ("inside.example.test:443", b"destination 10.0.0.9 port 443 for inside.example.test"),  # a name inside
])
def test_name_tricks_are_checked_by_the_resolved_address(forward_proxy, authority, shown):
    proxy = forward_proxy(hosts={"inside.example.test": "10.0.0.9"})
    answer = connect_request(proxy.port, authority)
    assert answer.startswith(b"HTTP/1.1 403 ") and shown in answer, answer


def test_bytes_sent_right_after_connect_are_forwarded(web, forward_proxy):
    proxy = forward_proxy(connect_ports=[web.port])
    authority = f"127.0.0.1:{web.port}"
    connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    eager = f"GET /eager HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"  # before the 200
    answer = raw_request(proxy.port, (connect + eager).encode())
    established, _, rest = answer.partition(b"\r\n\r\n")
    assert established == b"HTTP/1.1 200 Connection Established"
    assert rest.startswith(b"HTTP/1.1 200 ") and b'"path": "/eager"' in rest


def test_connect_to_a_closed_port_gets_502_and_is_logged(forward_proxy):
    with socket.socket() as placeholder:  # a loopback port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    proxy = forward_proxy(connect_ports=[port])
    answer = connect_request(proxy.port, f"127.0.0.1:{port}")
    assert answer.startswith(b"HTTP/1.1 502 ") and f"cannot connect to 127.0.0.1 port {port}".encode() in answer
    log = wait_for_log(proxy, f"CONNECT 127.0.0.1:{port}")
    assert re.search(rf'"CONNECT 127\.0\.0\.1:{port} HTTP/1\.1" 502 backend=- time=[\d.]+ms '
                     rf"error='cannot connect to 127\.0\.0\.1 port {port}: ", log), log


def test_shutdown_cuts_an_idle_tunnel_after_the_grace_period(web, forward_proxy):
    proxy = forward_proxy(connect_ports=[web.port])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{web.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        started = time.monotonic()
        proxy.shutdown(grace=0.3)  # the tunnel is in flight: it gets the grace period, then is cut
        assert not proxy.connections, "the tunnel's thread ended"
        assert 0.25 < time.monotonic() - started < 1.2
        assert sock.recv(100) == b""


# --------------------------------------------------------------------------- absolute-form
def test_curl_absolute_form_is_forwarded_as_origin_form(web, forward_proxy):
    proxy = forward_proxy()
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", f"http://127.0.0.1:{web.port}/path?x=1",
               "-H", "Proxy-Authorization: Basic c2VjcmV0")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["path"] == "/path?x=1", "the origin gets origin-form, not the absolute URI"
    headers = {name.lower(): value for name, value in answer["headers"]}
    assert headers["host"] == f"127.0.0.1:{web.port}"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    assert headers["via"].endswith("tlsproxy")
    assert "proxy-authorization" not in headers and "proxy-connection" not in headers


def test_names_are_resolved_and_connections_kept_alive_per_destination(web, forward_proxy):
    proxy = forward_proxy()
    url = f"http://localhost:{web.port}/"
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", url, url)
    assert run.returncode == 0, run.stderr
    answers = json_documents(run.stdout)
    assert len(answers) == 2
    assert {a["headers"][0][1] for a in answers} == {f"localhost:{web.port}"}
    assert answers[0]["client"] == answers[1]["client"], "the second request reused the pooled connection"
    assert proxy.backend_pool.reused >= 1


def test_denied_absolute_form_gets_403_and_the_connection_stays_usable(web, forward_proxy):
    proxy = forward_proxy()
    answer = raw_request(proxy.port, (b"GET http://10.1.2.3/admin HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n"
                                      + f"GET http://127.0.0.1:{web.port}/ok HTTP/1.1\r\nHost: x\r\n"
                                        f"Connection: close\r\n\r\n".encode()))
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert answer.index(b"denied by rule 3: deny all") < answer.index(b"HTTP/1.1 200 ")
    assert b'"path": "/ok"' in answer


def test_origin_form_and_https_uris_are_refused(forward_proxy):
    proxy = forward_proxy()
    close = b"Connection: close\r\n\r\n"
    assert raw_request(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + close).startswith(b"HTTP/1.1 400 ")
    answer = raw_request(proxy.port, b"GET https://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n" + close)
    assert answer.startswith(b"HTTP/1.1 501 ") and b"use CONNECT" in answer


def test_a_request_to_the_proxy_itself_is_a_loop(forward_proxy):
    proxy = forward_proxy(connect_ports=["1-65535"])
    answer = raw_request(proxy.port, f"GET http://127.0.0.1:{proxy.port}/ HTTP/1.1\r\nHost: x\r\n"
                                     f"Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 ") and b"forwarding loop" in answer
    assert connect_request(proxy.port, f"127.0.0.1:{proxy.port}").startswith(b"HTTP/1.1 403 ")


def test_rules_by_client_network_and_port(web, forward_proxy):
    proxy = forward_proxy(rules=[Rule.parse(f"allow src=127.0.0.1 dst=127.0.0.0/8 port={web.port}")])
    url = f"http://127.0.0.1:{web.port}/"
    run = curl("--proxy", f"http://127.0.0.1:{proxy.port}", url, "-o", "/dev/null", "-w", "%{http_code}")
    assert run.stdout == "200"
    # The same request from another client address is refused by the implicit last rule.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10, source_address=("127.0.0.5", 0)) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"denied by rule 2: deny all" in answer


# --------------------------------------------------------------------------- command line and TOML
def test_cli_serve_mode_forward(pki, tls_www, engine):
    process = tlsproxy("serve", "--engine", engine, "--mode", "forward", "--listen", "127.0.0.1:0", "--access-log", "-",
                       "--connect-port", str(tls_www.port), "--forward-host", f"{WWW}=127.0.0.1",
                       "--deny", "dst=127.0.0.66", "--allow", "dst=127.0.0.0/8")
    try:
        banner = []
        deadline = time.monotonic() + 15
        while not any("rule 3" in line for line in banner) and time.monotonic() < deadline:
            banner.append(process.stderr.readline())
        text = "".join(banner)
        assert "forward policy rule 1: deny dst=127.0.0.66/32" in text
        assert "forward policy rule 2: allow dst=127.0.0.0/8" in text
        assert "forward policy rule 3: deny all (implicit)" in text
        port = int(re.search(r"forward listening on 127\.0\.0\.1:(\d+)", text).group(1))
        wait_for_port(port)
        run = curl("--proxy", f"http://127.0.0.1:{port}", "--cacert", str(pki.ca), f"https://{WWW}:{tls_www.port}/")
        assert run.returncode == 0 and json.loads(run.stdout)["origin"] == "tls-www", run.stderr
        refused = connect_request(port, f"127.0.0.66:{tls_www.port}")
        assert b"denied by rule 1: deny dst=127.0.0.66/32" in refused
    finally:
        process.terminate()
        process.wait(10)


def test_lab_forward_config_loads():
    config = cfg.load(str(REPO / "lab" / "configs" / "forward.toml"))
    assert [listener.mode for listener in config.listeners] == ["forward"]
    policy = config.forward_policy
    assert str(policy.decide("127.0.0.1", "x", 80, "169.254.169.254")).startswith("denied by rule 1")
    assert policy.decide("127.0.0.1", WWW, 9445, "127.0.0.1").allowed
    assert 9445 in policy.connect_ports and policy.hosts[WWW] == "127.0.0.1"


def test_serve_help_explains_the_modes():
    run = subprocess.run([sys.executable, "-m", "course.cli", "serve", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=20, env={**CLEAN_ENV, "COLUMNS": "200"})
    for text in ("passthrough: no certificate", "forward: an HTTP forward proxy", "--allow SPEC",
                 "--source-address IP", "--connect-port"):
        assert text in run.stdout, text
