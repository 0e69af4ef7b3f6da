"""The live status page, and a real browser (headless Chromium) through the proxy."""

from __future__ import annotations

import http.client
import json
import subprocess
import tempfile

import pytest

from proxy import config as cfg
from proxy.pki import spki_sha256_base64
from tests.processes import wait_until
from tests.conftest import WWW, tls_connect
from tests.tools import require_tool
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = require_tool("chromium")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def proxy_with_admin(pki, origin_factory, proxy_factory):
    a, b = origin_factory("a"), origin_factory("b")
    proxy = proxy_factory({"web": [a.url, b.url]}, admin=cfg.Address("127.0.0.1", 0))
    return proxy


def test_status_json_counts_what_happened(pki, proxy_with_admin):
    proxy = proxy_with_admin
    sock = tls_connect(proxy.port, pki)
    for _ in range(3):
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
        data = b""
        while b"}" not in data:
            data += sock.recv(65536)
    host, port = proxy.admin.httpd.server_address[:2]

    def status_now() -> dict:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/status.json")
        return json.loads(conn.getresponse().read())

    # A request is counted when its exchange ends, just after its last bytes are sent: the
    # client can read the third response a moment before the counter says 3.
    assert wait_until(lambda: status_now()["requests_total"] == 3, timeout=5)
    status = status_now()
    assert status["requests_total"] == 3
    assert status["handshakes_full"] == 1
    assert status["tls_versions"] == {"TLSv1.3": 1}
    assert status["alpn"] == {"none": 1}  # tls_connect offers no ALPN
    assert status["connections_active"] >= 1
    assert [b["requests"] for b in status["pools"][0]["backends"]] == [2, 1]
    assert status["listeners"][0]["mode"] == "terminate"


def test_status_json_says_what_alpn_chose(pki, proxy_with_admin):
    """curl offers h2 and http/1.1 (ALPN, RFC 7301): h2 when the listener offers it, http/1.1 when asked."""
    proxy = proxy_with_admin
    for flag in ("--http2", "--http2", "--http1.1"):
        result = subprocess.run([require_tool("curl"), "-sS", flag, "--cacert", str(pki.ca), "-o", "/dev/null",
                                 "--resolve", f"{WWW}:{proxy.port}:127.0.0.1", f"https://{WWW}:{proxy.port}/"],
                                capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
    host, port = proxy.admin.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/status.json")
    assert json.loads(conn.getresponse().read())["alpn"] == {"h2": 2, "http/1.1": 1}


def test_admin_listener_is_separate_and_on_loopback(proxy_with_admin):
    proxy = proxy_with_admin
    assert proxy.admin.httpd.server_address[0] == "127.0.0.1"
    assert proxy.admin.httpd.server_address[1] != proxy.port


def test_status_page_renders_in_headless_chromium(pki, proxy_with_admin, tmp_path):
    proxy = proxy_with_admin
    sock = tls_connect(proxy.port, pki)
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
    sock.recv(65536)
    result = chromium("--virtual-time-budget=3000", "--dump-dom", proxy.admin.url)
    dom = result.stdout
    assert 'data-ready="1"' in dom, result.stderr[-2000:]  # the script fetched and drew the JSON
    assert "handshakes full / resumed" in dom
    assert "TLSv1.3" in dom
    assert dom.count('<td class="num"><span class="up">up</span>') == 2  # both backends drawn healthy
    shot = tmp_path / "status.png"
    chromium("--virtual-time-budget=3000", "--window-size=900,700", f"--screenshot={shot}", proxy.admin.url)
    assert shot.stat().st_size > 5000


def test_chromium_loads_a_page_through_the_terminating_proxy(pki, origin_factory, proxy_factory):
    """A real browser trusts our development CA (by SPKI hash) and loads through the proxy."""
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    spki = spki_sha256_base64(pki.files(WWW)[0])
    result = chromium(
        f"--ignore-certificate-errors-spki-list={spki}",
        f"--host-resolver-rules=MAP {WWW} 127.0.0.1:{proxy.port}",
        "--dump-dom", f"https://{WWW}:{proxy.port}/from-chromium",
    )
    dom = result.stdout
    assert "ERR_CERT" not in dom + result.stderr
    assert '"origin": "web"' in dom, result.stderr[-2000:]
    assert '"path": "/from-chromium"' in dom
    assert "X-Forwarded-Proto" in dom
