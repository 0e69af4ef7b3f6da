"""``tlsproxy serve`` started as a user would, driven by curl and openssl s_client."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess

import pytest

from tests.conftest import API, WWW, both_engines, free_port, tlsproxy, wait_for_port
from tests.tools import require_tool


engine = both_engines  # every test of `served` runs on both engines (--engine)


@pytest.fixture
def served(pki, origin_factory, engine):
    """`tlsproxy serve` in its own process with two certificates and two origins."""
    a, b = origin_factory("a"), origin_factory("b")
    port = free_port()
    proc = tlsproxy("serve", "--engine", engine, "--listen", f"127.0.0.1:{port}",
                    "--cert", str(pki.files(WWW)[0]), "--key", str(pki.files(WWW)[1]),
                    "--cert", str(pki.files(API)[0]), "--key", str(pki.files(API)[1]),
                    "--backend", a.url, "--backend", b.url)
    try:
        wait_for_port(port)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def curl(pki, port, *args, host=WWW):
    exe = require_tool("curl")
    cmd = [exe, "--silent", "--show-error", "--cacert", str(pki.ca),
           "--resolve", f"{host}:{port}:127.0.0.1", *args]
    return subprocess.run(cmd, capture_output=True, timeout=60)


def test_curl_get_verifies_the_certificate(pki, served):
    port, _ = served
    result = curl(pki, port, f"https://{WWW}:{port}/")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["origin"] in ("a", "b")


def test_curl_reuses_one_connection_for_several_urls(pki, served):
    port, _ = served
    urls = [f"https://{WWW}:{port}/{i}" for i in range(4)]
    outputs = [arg for _ in urls for arg in ("--output", "/dev/null")]
    result = curl(pki, port, "--write-out", "%{num_connects}\n", *outputs, *urls)
    assert result.returncode == 0, result.stderr
    # one new TCP+TLS connection for the first URL, none for the others (keep-alive)
    assert result.stdout.decode().split() == ["1", "0", "0", "0"]


@pytest.mark.parametrize("version, interim", [("--http1.1", b"< HTTP/1.1 100 Continue"), ("--http2", b"< HTTP/2 100")])
def test_curl_20mb_upload_with_expect_100_continue(pki, served, tmp_path, version, interim):
    """RFC 9110 §10.1.1: the 100 is forwarded, as a status line in HTTP/1.1, as a HEADERS frame in HTTP/2."""
    port, _ = served
    payload = tmp_path / "upload.bin"
    data = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)
    payload.write_bytes(data)
    result = curl(pki, port, version, "-v", "-H", "Expect: 100-continue", "--data-binary", f"@{payload}",
                  f"https://{WWW}:{port}/upload")
    assert result.returncode == 0, result.stderr
    assert interim in result.stderr, "the proxy must answer Expect: 100-continue"
    body = json.loads(result.stdout)
    assert body["body"] == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_curl_chunked_upload(pki, served, tmp_path):
    port, _ = served
    payload = tmp_path / "upload.bin"
    data = b"chunk me " * 100_000
    payload.write_bytes(data)
    result = curl(pki, port, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{payload}",
                  f"https://{WWW}:{port}/upload")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body"]["sha256"] == hashlib.sha256(data).hexdigest()


def s_client(port, *args):
    exe = require_tool("openssl")
    return subprocess.run([exe, "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          input=b"", capture_output=True, timeout=30)


@pytest.mark.parametrize("name", [WWW, API])
def test_openssl_sees_the_certificate_chosen_by_sni(pki, served, name):
    port, _ = served
    result = s_client(port, "-servername", name, "-CAfile", str(pki.ca), "-verify_return_error")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"CN = {name}" in out or f"CN={name}" in out
    assert "Verify return code: 0 (ok)" in out
    assert "TLSv1.3" in out


def test_openssl_tls12_works_and_tls11_is_refused(pki, served):
    port, _ = served
    ok = s_client(port, "-servername", WWW, "-tls1_2")
    assert ok.returncode == 0 and b"TLSv1.2" in ok.stdout
    old = s_client(port, "-servername", WWW, "-tls1_1")
    assert old.returncode != 0


def test_sigterm_shuts_down_cleanly(served):
    port, proc = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "shutting down" in proc.stderr.read()


def test_port_in_use_is_one_clear_line(pki, served):
    port, _ = served
    proc = tlsproxy("serve", "--listen", f"127.0.0.1:{port}", "--cert", str(pki.files(WWW)[0]),
                    "--key", str(pki.files(WWW)[1]), "--backend", "http://127.0.0.1:9")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"tlsproxy serve: cannot listen on 127.0.0.1:{port}: address already in use"]


@pytest.mark.parametrize("args, message", [
    (["--cert", "/nonexistent.pem", "--key", "/nonexistent.key", "--backend", "http://127.0.0.1:9"],
     "certificate file /nonexistent.pem not found"),
    (["--backend", "http://127.0.0.1:9"], "terminate mode needs a certificate"),
    (["--config", "/nonexistent.toml"], "config file /nonexistent.toml not found"),
])
def test_bad_configuration_is_one_clear_line(args, message):
    proc = tlsproxy("serve", "--listen", "127.0.0.1:0", *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_mismatched_key_is_one_clear_line(pki):
    proc = tlsproxy("serve", "--listen", "127.0.0.1:0", "--cert", str(pki.files(WWW)[0]),
                    "--key", str(pki.files(API)[1]), "--backend", "http://127.0.0.1:9")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert len(err.strip().splitlines()) == 1, err


def test_demo_once_runs_and_shows_termination(tmp_path):
    proc = tlsproxy("demo", "--once", "--port", "0", "--certs", str(tmp_path / "certs"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "TLSv1.3" in out
    assert "web-1" in out and "web-2" in out and "api" in out
    assert "X-Forwarded-For    127.0.0.1" in out
    assert "curl --cacert" in out
