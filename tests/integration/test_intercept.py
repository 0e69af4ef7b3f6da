"""The intercepting forward proxy (proxy.modes.intercept) with real clients: curl, Python's ssl, the CLI.

A real TLS origin (course.origin with the demo PKI's origin.example.test certificate),
the proxy in forward mode with an interception CA made by ``proxy.tls.mint``, and curl
through it.  What is checked is what a client and the log observe: the certificate the
client was shown (issued by the interception CA, with a key that is not the origin's),
curl's own failure when it does not trust that CA, the request path in the proxy's
log (a tunnel never sees one), the policy's 403, and the origin verified before any
plaintext leaves the proxy.  Threaded engine only (the event loop refuses the option).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy import config as cfg
from proxy.errors import ConfigError
from proxy.policy import ForwardPolicy, Rule
from proxy.tls import mint
from tests.conftest import tlsproxy, wait_for_port
from tests.tools import require_tool

ORIGIN = "origin.example.test"
BLOCKED = "blocked.example.test"
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # no inherited proxies
UNTRUSTED = "SSL certificate problem: unable to get local issuer certificate"


@pytest.fixture(scope="module")
def intercept_ca(tmp_path_factory) -> tuple[Path, Path]:
    return mint.make_ca(tmp_path_factory.mktemp("intercept-ca"))


@pytest.fixture
def origin(pki, origin_factory):
    cert, key = pki.files(ORIGIN)
    return origin_factory("tls-origin", cert=cert, key=key)


def policy(**overrides) -> ForwardPolicy:
    options = dict(connect_ports=["1025-65535"], hosts={ORIGIN: "127.0.0.1", BLOCKED: "127.0.0.1"},
                   rules=[Rule.parse(f"deny host={BLOCKED}"), Rule.parse("allow dst=127.0.0.0/8")])
    return ForwardPolicy.build(**{**options, **overrides})


@pytest.fixture
def intercepting(proxy_factory, pki, intercept_ca, tmp_path):
    def start(origin_ca: str | None = str(pki.ca)):
        log = tmp_path / "access.log"
        server = proxy_factory(mode="forward", access_log=str(log), forward_policy=policy(),
                               intercept=cfg.Interception(str(intercept_ca[0]), str(intercept_ca[1]), origin_ca))
        server.log_path = log
        return server
    return start


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("curl"), "-sS", *args], capture_output=True, text=True, timeout=20,
                          env=CLEAN_ENV)


def log_lines(server, needle: str, count: int = 1) -> list[str]:
    """The access-log lines containing ``needle``, once ``count`` are there (a CONNECT logs at its end)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in server.log_path.read_text().splitlines() if needle in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def through_proxy(proxy_port: int, authority: str) -> socket.socket:
    """A socket on which CONNECT was answered 200: what the client's TLS then runs over."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200 "), head
    return sock


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------- the client's view
def test_curl_trusting_the_interception_ca_gets_the_page_and_a_minted_certificate(intercepting, origin, intercept_ca):
    server = intercepting()
    run = curl("-v", "--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(intercept_ca[0]),
               f"https://{ORIGIN}:{origin.port}/account?session=42")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["origin"] == "tls-origin" and body["path"] == "/account?session=42"
    # The origin sees the proxy (it cannot see the client's TLS): Via and X-Forwarded-For were added.
    assert ["Via", "1.1 tlsproxy"] in body["headers"]
    assert "< HTTP/1.1 200 Connection Established" in run.stderr
    issuer = re.search(r"issuer: (.*)", run.stderr).group(1)
    assert "CN=TLS Lab Interception CA" in issuer and "lab only" in issuer
    assert f'subjectAltName: host "{ORIGIN}" matched' in run.stderr


def test_the_certificate_seen_through_the_tunnel_is_not_the_origins(intercepting, origin, intercept_ca, pki):
    """Python's ssl through the CONNECT: issuer, SAN, EKU; and a key that is new, not the origin's."""
    server = intercepting()
    context = ssl.create_default_context(cafile=str(intercept_ca[0]))
    with context.wrap_socket(through_proxy(server.port, f"{ORIGIN}:{origin.port}"), server_hostname=ORIGIN) as tls:
        seen = tls.getpeercert()
        der = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET /whoami HTTP/1.1\r\nHost: {ORIGIN}:{origin.port}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"tls-origin"' in answer
    assert dict(item[0] for item in seen["issuer"])["commonName"] == mint.CA_COMMON_NAME
    assert seen["subjectAltName"] == (("DNS", ORIGIN),)
    minted = x509.load_der_x509_certificate(der)
    real = x509.load_pem_x509_certificates(Path(pki.files(ORIGIN)[0]).read_bytes())[0]
    assert spki(minted) != spki(real)  # what pinning would catch
    assert minted.issuer != real.issuer


def test_curl_that_does_not_trust_the_interception_ca_refuses(intercepting, origin, pki):
    server = intercepting()
    run = curl("--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(pki.ca),  # the origin's real CA
               f"https://{ORIGIN}:{origin.port}/")
    assert run.returncode == 60, run.stderr
    assert f"curl: (60) {UNTRUSTED}" in run.stderr
    assert log_lines(server, "intercepted TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA")


def test_an_ip_literal_gets_an_ip_address_certificate(intercepting, origin, intercept_ca):
    server = intercepting()
    run = curl("-v", "--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(intercept_ca[0]),
               f"https://127.0.0.1:{origin.port}/by-address")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["path"] == "/by-address"
    assert 'subjectAltName: host "127.0.0.1" matched' in run.stderr


# --------------------------------------------------------------------------- the proxy's view
def test_the_access_log_says_intercepted_and_shows_every_path(intercepting, origin, intercept_ca):
    server = intercepting()
    base = f"https://{ORIGIN}:{origin.port}"
    run = curl("--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(intercept_ca[0]),
               f"{base}/login?user=alice", f"{base}/inbox")  # two requests in one tunnel (keep-alive)
    assert run.returncode == 0, run.stderr
    [connect] = log_lines(server, '"CONNECT ')
    assert f'"CONNECT {ORIGIN}:{origin.port} HTTP/1.1" 200' in connect
    assert "intercepted requests=2" in connect
    login, inbox = log_lines(server, f"intercepted={ORIGIN}:{origin.port}", count=2)
    assert '"GET /login?user=alice HTTP/1.1" 200' in login and '"GET /inbox HTTP/1.1" 200' in inbox
    assert f"backend=https://127.0.0.1:{origin.port}" in login and "tls=TLSv1.3" in login


def test_the_policy_still_refuses_a_denied_destination(intercepting, origin, intercept_ca):
    server = intercepting()
    run = curl("--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(intercept_ca[0]),
               f"https://{BLOCKED}:{origin.port}/")
    assert run.returncode != 0 and "403" in run.stderr, run.stderr
    [line] = log_lines(server, f'"CONNECT {BLOCKED}:{origin.port} HTTP/1.1" 403')
    assert f"denied by rule 1: deny host={BLOCKED}" in line  # the same 403 and line as a tunnel's
    assert not log_lines(server, "GET /")  # nothing was decrypted


def test_an_origin_the_proxy_cannot_verify_gets_no_plaintext(intercepting, origin, intercept_ca):
    """origin_ca is the interception CA, which did not sign the origin: 502 to the CONNECT, no 200."""
    server = intercepting(origin_ca=str(intercept_ca[0]))
    run = curl("-v", "--proxy", f"http://127.0.0.1:{server.port}", "--cacert", str(intercept_ca[0]),
               f"https://{ORIGIN}:{origin.port}/secret")
    assert run.returncode != 0 and "< HTTP/1.1 502" in run.stderr, run.stderr
    [line] = log_lines(server, '"CONNECT ')
    assert " 502 " in line and "certificate rejected" in line


# --------------------------------------------------------------------------- configuration and the CLI
def test_the_event_loop_refuses_interception(intercept_ca):
    listener = cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "forward", ())
    with pytest.raises(ConfigError, match="interception runs on the threaded engine only so far"):
        cfg.validate(cfg.Config(listeners=(listener,), pools=(), routes=(), engine="eventloop",
                                intercept=cfg.Interception(str(intercept_ca[0]), str(intercept_ca[1]))))


def test_the_toml_keys(tmp_path, intercept_ca, pki):
    path = tmp_path / "intercept.toml"
    path.write_text(f'[[listeners]]\nlisten = "127.0.0.1:0"\nmode = "forward"\n\n[forward]\n'
                    f'intercept_ca = {{ cert = "{intercept_ca[0]}", key = "{intercept_ca[1]}" }}\n'
                    f'origin_ca = "{pki.ca}"\nconnect_ports = [8443]\n')
    config = cfg.load(str(path))
    assert config.intercept == cfg.Interception(str(intercept_ca[0]), str(intercept_ca[1]), str(pki.ca))
    assert config.forward_policy.connect_ports == ForwardPolicy.build(connect_ports=[8443]).connect_ports
    path.write_text(path.read_text().replace(f'key = "{intercept_ca[1]}"', f'key = "{pki.files(ORIGIN)[1]}"'))
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        cfg.load(str(path))


def test_the_cli_flag(origin, intercept_ca, pki):
    process = tlsproxy("serve", "--mode", "forward", "--listen", "127.0.0.1:0", "--access-log", "-",
                       "--intercept-ca", str(intercept_ca[0]), str(intercept_ca[1]), "--backend-ca", str(pki.ca),
                       "--connect-port", str(origin.port), "--forward-host", f"{ORIGIN}=127.0.0.1")
    try:
        banner = []
        deadline = time.monotonic() + 15
        while not any("listening on" in line for line in banner) and time.monotonic() < deadline:
            banner.append(process.stderr.readline())
        text = "".join(banner)
        assert "WARNING: interception is on" in text
        port = int(re.search(r"forward listening on 127\.0\.0\.1:(\d+)", text).group(1))
        wait_for_port(port)
        run = curl("--proxy", f"http://127.0.0.1:{port}", "--cacert", str(intercept_ca[0]),
                   f"https://{ORIGIN}:{origin.port}/via-cli")
        assert run.returncode == 0 and json.loads(run.stdout)["path"] == "/via-cli", run.stderr
    finally:
        process.terminate()
        process.wait(10)
