"""The re-encrypt setup: TLS from the client to the proxy, a second TLS session to the origin."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time

import pytest

from proxy import config as cfg
from proxy.pki import ensure_demo_certs
from tests.conftest import WWW, client_context, tls_connect, tlsproxy, wait_for_port
from tests.tools import require_tool
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

ORIGIN_NAME = "origin.example.test"  # its certificate also names 127.0.0.1, ::1 and localhost


def https_get(port: int, pki, path: str = "/") -> tuple[int, bytes]:
    with tls_connect(port, pki, WWW) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def headers_of(answer: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in answer["headers"]}


@pytest.fixture
def secure_origin(pki, origin_factory):
    """An origin that terminates TLS and demands a client certificate from our CA (mutual TLS)."""
    cert, key = pki.files(ORIGIN_NAME)
    return origin_factory("secure", cert=cert, key=key, client_ca=str(pki.ca))


def reencrypt_proxy(proxy_factory, origin, tmp_path, **tls):
    log = tmp_path / "access.log"
    server = proxy_factory({"secure": [origin.url]}, pool_options={"secure": {"tls": cfg.BackendTLS(**tls)}},
                           access_log=str(log))
    server.log_path = log
    return server


def idle_connection(pool, timeout: float = 5.0):
    """The one idle pooled backend connection (it is released just after the response is sent)."""
    deadline = time.monotonic() + timeout
    while not (idle := [c for queue in list(pool.idle.values()) for c in queue]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(idle) == 1, idle
    return idle[0]


def wait_for_log(path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text() if path.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    return content


def test_mutual_tls_to_the_origin_with_x_forwarded(pki, secure_origin, proxy_factory, tmp_path):
    cert, key = pki.files("proxy-client")
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(pki.ca), cert=cert, key=key,
                            server_name=ORIGIN_NAME)
    status, body = https_get(proxy.port, pki, "/inside")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["path"] == "/inside"
    assert answer["tls"]["version"] == "TLSv1.3", "the origin received TLS: the proxy encrypted again"
    assert answer["tls"]["client_cert_subject"] == "CN=proxy-client", "the proxy proved who it is"
    headers = headers_of(answer)
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == WWW


def test_origin_refuses_a_proxy_without_its_client_certificate(pki, secure_origin, proxy_factory, tmp_path):
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(pki.ca), server_name=ORIGIN_NAME)
    status, body = https_get(proxy.port, pki)
    assert status == 502
    # TLS 1.3: the client's handshake is done before the server checks the certificate, so
    # the refusal (alert certificate_required) arrives when the proxy reads the response.
    # The origin closes without reading the request the proxy already sent, so its kernel
    # may answer with RST, which can destroy the alert in flight: then the proxy sees EOF.
    assert b"alert certificate required" in body or b"EOF occurred in violation of protocol" in body, body
    assert secure_origin.requests_seen == 0


def test_an_origin_certificate_from_another_ca_is_refused(pki, secure_origin, proxy_factory, tmp_path):
    other = ensure_demo_certs(tmp_path / "other-pki")  # a different CA, same names
    cert, key = pki.files("proxy-client")
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(other.ca), cert=cert, key=key,
                            server_name=ORIGIN_NAME)
    status, body = https_get(proxy.port, pki)
    assert status == 502
    # The origin sends its leaf and its intermediate (its NAME.pem chain file); the
    # intermediate's issuer, the other root, is not in our CA bundle, so path building stops there.
    reason = "certificate rejected: unable to get local issuer certificate"
    assert reason.encode() in body, body
    log = wait_for_log(proxy.log_path, reason)
    assert '"GET / HTTP/1.1" 502' in log and reason in log, log
    assert secure_origin.requests_seen == 0


def test_an_origin_certificate_for_another_name_is_refused(pki, secure_origin, proxy_factory, tmp_path):
    cert, key = pki.files("proxy-client")
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(pki.ca), cert=cert, key=key,
                            server_name="www.example.test")  # the origin's certificate does not name it
    status, body = https_get(proxy.port, pki)
    assert status == 502
    assert b"certificate rejected" in body and b"Hostname mismatch" in body, body
    assert "Hostname mismatch" in wait_for_log(proxy.log_path, "Hostname mismatch")


def test_a_second_backend_connection_resumes_the_tls_session(pki, secure_origin, proxy_factory, tmp_path):
    cert, key = pki.files("proxy-client")
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(pki.ca), cert=cert, key=key,
                            server_name=ORIGIN_NAME)
    pool = proxy.backend_pool
    assert https_get(proxy.port, pki)[0] == 200
    first = idle_connection(pool)
    assert first.tls_version == "TLSv1.3" and not first.tls_resumed
    assert len(pool.sessions) == 1, "the session (its ticket) was kept"
    pool.close_idle()  # the next request needs a new connection to the origin
    status, body = https_get(proxy.port, pki)
    assert status == 200
    second = idle_connection(pool)
    assert second is not first and second.tls_resumed, "an abbreviated handshake, no certificate exchange"
    assert json.loads(body)["tls"]["client_cert_subject"] == "CN=proxy-client", "resumption keeps the identity"


def test_keep_alive_to_the_origin_reuses_one_tls_connection(pki, secure_origin, proxy_factory, tmp_path):
    cert, key = pki.files("proxy-client")
    proxy = reencrypt_proxy(proxy_factory, secure_origin, tmp_path, ca=str(pki.ca), cert=cert, key=key,
                            server_name=ORIGIN_NAME)
    context = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=10)
    conn.sock = tls_connect(proxy.port, pki, WWW, context=context)
    clients = set()
    for _ in range(3):
        conn.request("GET", "/", headers={"Host": WWW})
        clients.add(json.loads(conn.getresponse().read())["client"])
    conn.close()
    assert len(clients) == 1, "one kept-alive TLS connection from the proxy served all three"
    assert proxy.backend_pool.opened == 1


def test_sni_from_host_keeps_one_connection_per_name(pki, origin_factory, proxy_factory, tmp_path):
    """With sni_from_host the SNI follows the client's Host, so a pooled connection opened for
    one name must not carry a request for another (it was verified for that name only)."""
    cert, key = pki.files(ORIGIN_NAME)
    origin = origin_factory("named", cert=cert, key=key)
    proxy = reencrypt_proxy(proxy_factory, origin, tmp_path, verify=False, sni_from_host=True)

    def get_as(name: str) -> str:
        with tls_connect(proxy.port, pki, name) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        return json.loads(data.partition(b"\r\n\r\n")[2])["client"]

    first_www = get_as(WWW)
    idle_connection(proxy.backend_pool)
    api = get_as("api.example.test")
    assert api != first_www, "a connection opened with SNI www.example.test was lent for api.example.test"
    deadline = time.monotonic() + 5
    while sum(len(q) for q in list(proxy.backend_pool.idle.values())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert get_as(WWW) == first_www, "the www connection is reused for www"
    assert proxy.backend_pool.opened == 2


def test_cli_serve_reencrypt_with_curl(pki, secure_origin):
    curl = require_tool("curl")
    www_cert, www_key = pki.files(WWW)
    client_cert, client_key = pki.files("proxy-client")
    process = tlsproxy("serve", "--listen", "127.0.0.1:0", "--cert", www_cert, "--key", www_key,
                       "--backend", secure_origin.url, "--backend-ca", str(pki.ca), "--backend-sni", ORIGIN_NAME,
                       "--backend-cert", client_cert, "--backend-key", client_key)
    try:
        line = ""
        deadline = time.monotonic() + 15
        while "listening on" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        port = int(re.search(r"terminate listening on 127\.0\.0\.1:(\d+)", line).group(1))
        wait_for_port(port)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        run = subprocess.run([curl, "-sS", "--cacert", str(pki.ca), "--resolve", f"{WWW}:{port}:127.0.0.1",
                              f"https://{WWW}:{port}/via-cli"], capture_output=True, text=True, timeout=20, env=env)
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        assert answer["path"] == "/via-cli" and answer["tls"]["client_cert_subject"] == "CN=proxy-client"
    finally:
        process.terminate()
        process.wait(10)
