"""The demo origin on real sockets, driven by http.client, curl, openssl and raw bytes."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.errors import ConfigError
from course.origin import Origin, generated_bytes, parse_size
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers
def get(origin: Origin, path: str, **kwargs) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(*origin.address, timeout=10, **kwargs)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("curl"), "--silent", "--show-error", *args],
                          capture_output=True, timeout=30)


def make_cert(directory: Path, name: str, *, issuer=None, client=False, ca=False):
    """Write NAME.pem and NAME.key: self-signed, or signed by ``issuer`` (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TLS Termination Lab")])
    issuer_cert, issuer_key = issuer or (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key


@pytest.fixture
def web():
    with Origin("web", record_raw=True) as origin:
        yield origin


# --------------------------------------------------------------------------- JSON answer
def test_answer_describes_the_request_it_saw(web):
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("GET", "/hello?x=1", headers={"X-First": "1", "x-second": "two"})
    response = connection.getresponse()
    document = json.loads(response.read())
    client_ip, client_port = connection.sock.getsockname()
    connection.close()

    assert response.status == 200
    assert response.getheader("X-Origin") == "web"
    assert response.getheader("Server") == "tlslab-origin/web"
    assert response.getheader("Content-Type") == "application/json"
    assert document["origin"] == "web"
    assert document["client"] == f"{client_ip}:{client_port}"  # the TCP peer it saw
    assert document["method"] == "GET"
    assert document["path"] == "/hello?x=1"
    assert document["http_version"] == "HTTP/1.1"
    names = [name for name, _ in document["headers"]]
    assert names == ["Host", "Accept-Encoding", "X-First", "x-second"]  # in order, case kept
    assert ["x-second", "two"] in document["headers"]
    assert document["tls"] is None
    assert "body" not in document


def test_any_method_is_answered(web):
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("BREW", "/pot")
    document = json.loads(connection.getresponse().read())
    connection.close()
    assert document["method"] == "BREW"


# --------------------------------------------------------------------------- request bodies
def test_body_is_hashed_for_content_length_and_chunked_uploads(web):
    body = os.urandom(300_000)
    expected = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("POST", "/upload", body=body)
    assert json.loads(connection.getresponse().read())["body"] == expected
    # Same connection: chunked framing decoded by hand, pieces of uneven size.
    pieces = [body[:1], body[1:70_001], body[70_001:]]
    connection.request("PUT", "/upload", body=iter(pieces), encode_chunked=True)
    document = json.loads(connection.getresponse().read())
    connection.close()
    assert ["Transfer-Encoding", "chunked"] in document["headers"]
    assert document["body"] == expected


def test_curl_uploads_with_content_length_and_chunked(web, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(1_500_000))
    expected = {"length": 1_500_000, "sha256": hashlib.sha256(upload.read_bytes()).hexdigest()}
    plain = curl("--data-binary", f"@{upload}", web.url + "/up")
    chunked = curl("--data-binary", f"@{upload}", "-H", "Transfer-Encoding: chunked",
                   web.url + "/up")
    assert plain.returncode == 0, plain.stderr
    assert chunked.returncode == 0, chunked.stderr
    plain_doc, chunked_doc = json.loads(plain.stdout), json.loads(chunked.stdout)
    assert plain_doc["body"] == expected
    assert ["Content-Length", "1500000"] in plain_doc["headers"]
    assert chunked_doc["body"] == expected
    assert ["Transfer-Encoding", "chunked"] in chunked_doc["headers"]


def test_broken_chunked_framing_gets_400_and_close(web):
    with socket.create_connection(web.address, timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\nhello\r\n0\r\n\r\n")
        answer = sock.makefile("rb").read()  # read() to EOF: the origin closed
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer
    assert b"invalid chunk size" in answer


def test_transfer_encoding_wins_over_content_length_and_the_connection_closes(web):
    # RFC 9112 §6.3 rule 3: chunked framing decides; the bytes after the chunked body
    # would be a smuggled request, so the origin closes instead of reading them.
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    with socket.create_connection(web.address, timeout=10) as sock:
        sock.sendall(request + smuggled)
        answer = sock.makefile("rb").read()
    assert answer.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answer
    assert b'"length": 0' in answer
    assert web.raw_requests == [request]
    assert web.requests_seen == 1


def test_invalid_content_length_gets_400(web):
    with socket.create_connection(web.address, timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!")
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"invalid Content-Length" in answer


# --------------------------------------------------------------------------- generated bodies
def test_bytes_20m_with_curl(web, tmp_path):
    target = tmp_path / "download"
    result = curl("--output", str(target), "--write-out", "%{http_code} %{size_download}",
                  web.url + "/bytes/20m")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"200 20971520"
    assert target.read_bytes() == generated_bytes(20 * 1024 * 1024)


def test_chunked_download_and_sizes(web):
    response, content = get(web, "/chunked/300001")  # one full 256 KiB chunk and a rest
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    assert content == generated_bytes(300001)
    response, content = get(web, "/bytes/0")
    assert (response.status, content) == (200, b"")
    assert get(web, "/bytes/2g")[0].status == 400  # over the 1 GiB bound
    assert get(web, "/bytes/lots")[0].status == 400
    assert parse_size("1k") == 1024 and parse_size("3M") == 3 << 20 and parse_size("7") == 7


def test_head_gets_headers_without_body(web):
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("HEAD", "/bytes/1m")
    response = connection.getresponse()
    assert response.getheader("Content-Length") == str(1 << 20)
    assert response.read() == b""
    connection.request("GET", "/health")  # the connection is still in step
    assert connection.getresponse().read() == b"ok\n"
    connection.close()


# --------------------------------------------------------------------------- other endpoints
def test_status_delay_echo_id_and_health(web):
    response, content = get(web, "/status/204")
    assert (response.status, content, response.getheader("X-Origin")) == (204, b"", "web")
    response, content = get(web, "/status/418")
    assert response.status == 418 and json.loads(content)["status"] == 418
    assert get(web, "/status/99")[0].status == 400

    started = time.monotonic()
    response, content = get(web, "/delay/0.3")
    assert response.status == 200 and time.monotonic() - started >= 0.3
    assert get(web, "/delay/31")[0].status == 400  # bounded at 30 s

    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("GET", "/echo-id", headers={"X-Request-Id": "req-42"})
    response = connection.getresponse()
    assert json.loads(response.read())["request_id"] == "req-42"
    assert response.getheader("X-Request-Id") == "req-42"
    connection.close()

    response, content = get(web, "/health")
    assert (response.status, content) == (200, b"ok\n")


def test_keep_alive_serves_many_requests_on_one_connection(web):
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    clients = set()
    for i in range(5):
        connection.request("GET", f"/n/{i}")
        response = connection.getresponse()
        document = json.loads(response.read())
        assert document["path"] == f"/n/{i}" and not response.will_close
        clients.add(document["client"])
    connection.close()
    assert len(clients) == 1  # the same TCP connection every time
    assert web.requests_seen == 5


def test_stop_cuts_idle_keep_alive_connections_and_in_flight_delays():
    origin = Origin("short").start()
    idle = socket.create_connection(origin.address, timeout=10)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"\r\n\r\nok\n"):
        answer += idle.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200 ")  # and the connection is kept alive
    sleeper = socket.create_connection(origin.address, timeout=10)
    sleeper.sendall(b"GET /delay/30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    started = time.monotonic()
    origin.stop()
    origin.stop()  # idempotent
    assert time.monotonic() - started < 3
    assert idle.recv(4096) == b""  # the kept-alive connection was closed
    idle.close()
    sleeper.close()
    with pytest.raises(OSError):
        socket.create_connection(origin.address, timeout=2).close()
    port = origin.port
    with origin:  # start() again: comes back on the same port, as a restarted backend would
        assert origin.port == port and get(origin, "/health")[0].status == 200


# --------------------------------------------------------------------------- raw recording
def test_record_raw_keeps_exactly_the_bytes_of_each_request(web):
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    second = b"GET /b HTTP/1.1\r\nhost:  spaced \r\nConnection: close\r\n\r\n"
    with socket.create_connection(web.address, timeout=10) as sock:
        sock.sendall(first + second)  # pipelined: two requests in one write
        answers = sock.makefile("rb").read()  # to EOF: the second asked to close
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert web.raw_requests == [first, second]
    assert web.requests_seen == 2


def test_record_raw_caps_the_body(web):
    body = b"x" * 200_000
    connection = http.client.HTTPConnection(*web.address, timeout=10)
    connection.request("POST", "/big", body=body)
    assert json.loads(connection.getresponse().read())["body"]["length"] == 200_000
    connection.close()
    (raw,) = web.raw_requests
    head, _, kept_body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /big HTTP/1.1\r\n")
    assert kept_body == body[: 64 * 1024]


# --------------------------------------------------------------------------- region lock
def test_region_lock_refuses_outside_and_serves_inside():
    with Origin("geo", allow_networks=["127.0.0.2/32"]) as geo:
        response, content = get(geo, "/region")
        refusal = json.loads(content)
        assert response.status == 403
        assert refusal["error"] == "region-locked"
        assert refusal["your_address"] == "127.0.0.1"
        assert refusal["allowed"] == ["127.0.0.2/32"]

        response, content = get(geo, "/region", source_address=("127.0.0.2", 0))
        assert response.status == 200
        assert json.loads(content)["your_address"] == "127.0.0.2"
        response, content = get(geo, "/", source_address=("127.0.0.2", 0))
        assert json.loads(content)["client"].startswith("127.0.0.2:")


# --------------------------------------------------------------------------- TLS
def test_tls_origin_with_curl_and_openssl(tmp_path):
    make_cert(tmp_path, "origin")
    cert, key = tmp_path / "origin.pem", tmp_path / "origin.key"
    with Origin("secure", cert=cert, key=key) as secure:
        assert secure.url.startswith("https://127.0.0.1:")
        result = curl("--cacert", str(cert), secure.url + "/who")  # verified, not -k
        assert result.returncode == 0, result.stderr
        tls = json.loads(result.stdout)["tls"]
        assert tls["version"] in ("TLSv1.2", "TLSv1.3")
        assert tls["cipher"] and tls["client_cert_subject"] is None

        host, port = secure.address
        s_client = subprocess.run(
            [require_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-tls1_3",
             "-CAfile", str(cert), "-verify_return_error", "-quiet"],
            input=b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            capture_output=True, timeout=30)
        assert s_client.returncode == 0, s_client.stderr
        assert s_client.stdout.startswith(b"HTTP/1.1 200 ")
        assert s_client.stdout.endswith(b"\r\n\r\nok\n")


def test_mutual_tls_requires_a_client_certificate(tmp_path):
    # The project's PKI: strict verification (VERIFY_X509_STRICT) wants complete extensions.
    from proxy.pki import write_certs
    write_certs(tmp_path, ["127.0.0.1"])
    write_certs(tmp_path, ["student"], client=True)
    with Origin("vault", cert=tmp_path / "127.0.0.1.pem", key=tmp_path / "127.0.0.1.key",
                client_ca=tmp_path / "ca.pem") as vault:
        refused = curl("--cacert", str(tmp_path / "ca.pem"), vault.url + "/")
        assert refused.returncode != 0  # handshake alert: certificate required

        admitted = curl("--cacert", str(tmp_path / "ca.pem"),
                        "--cert", str(tmp_path / "student.pem"),
                        "--key", str(tmp_path / "student.key"), vault.url + "/")
        assert admitted.returncode == 0, admitted.stderr
        subject = json.loads(admitted.stdout)["tls"]["client_cert_subject"]
        assert "CN=student" in subject
        assert vault.requests_seen == 1  # the refused client never got to send a request


def test_bad_tls_files_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Origin("x", cert=tmp_path / "missing.pem", key=tmp_path / "missing.key").start()
    with pytest.raises(ConfigError):
        Origin("x", cert=tmp_path / "only-a-cert.pem")


# --------------------------------------------------------------------------- IPv6
def test_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with Origin("six", host="::1") as six:
        assert six.url.startswith("http://[::1]:")
        response, content = get(six, "/")
        assert json.loads(content)["client"].startswith("[::1]:")


# --------------------------------------------------------------------------- command line
def test_cli_prints_where_it_listens_serves_and_exits_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "course.origin", "--name", "cli", "--listen", "127.0.0.1:0",
         "--verbose"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = process.stdout.readline().decode()
        assert line.startswith("origin cli listening on http://127.0.0.1:")
        url = line.split()[-1]
        result = curl(url + "/bytes/1k", url + "/health")  # two requests, one connection
        assert result.returncode == 0 and result.stdout.endswith(b"ok\n")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert out == b""
    log = err.decode().splitlines()  # --verbose: one line per request, nothing else
    assert len(log) == 2 and '"GET /bytes/1k HTTP/1.1" 200 1024' in log[0]


def test_cli_is_quiet_without_verbose_and_exits_cleanly_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "course.cli", "origin", "--listen", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = process.stdout.readline().decode().split()[-1]
        assert curl(url + "/").returncode == 0
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert err == b""


def test_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            Origin("x", port=port).start()
        assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
        result = subprocess.run(
            [sys.executable, "-m", "course.cli", "origin", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode() == (
        f"tlsproxy origin: cannot listen on 127.0.0.1:{port}: address already in use\n")
