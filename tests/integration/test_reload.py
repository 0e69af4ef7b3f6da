"""Certificates reloaded on SIGHUP without dropping a connection, on both engines.

``tlsproxy serve`` is started as a real process with its certificate and key copied
into a folder of the test's own.  The files are then replaced by another PKI's pair
and the process gets SIGHUP (``ProxyServer.reload_certificates``): the connection
opened before keeps working with the certificate it was shown, and the next
handshake shows the new one.  A reload from a file that does not load changes
nothing and says so in one line.  The client does not verify (two different CAs are
in play); which certificate was served is read from the handshake itself.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest

from proxy.pki import DEMO_WWW, ensure_demo_certs
from tests.conftest import both_engines, tlsproxy
from tests.processes import wait_until

engine = both_engines


def fingerprint_of_file(pem: Path) -> str:
    first = pem.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


class Client:
    """One kept-alive TLS connection to the proxy; which certificate it was shown."""

    def __init__(self, port: int):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                       server_hostname=DEMO_WWW)
        self.fingerprint = hashlib.sha256(self.tls.getpeercert(binary_form=True)).hexdigest()

    def get(self) -> bytes:
        self.tls.sendall(f"GET / HTTP/1.1\r\nHost: {DEMO_WWW}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.tls.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += self.tls.recv(65536)
        return head.split(b"\r\n")[0]

    def close(self) -> None:
        self.tls.close()


class StderrLines:
    """The proxy's stderr, line by line, read in the background."""

    def __init__(self, process):
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(process.stderr.readline, "")),
                                       daemon=True)
        self.thread.start()

    def wait_for(self, pattern: str) -> str:
        def matching() -> list[str]:
            return [line for line in list(self.lines) if re.search(pattern, line)]

        assert wait_until(matching, timeout=10), f"no stderr line matching {pattern!r}; got {self.lines[-5:]}"
        return matching()[0]


@pytest.fixture
def served(tmp_path, origin_factory, engine):
    first, second = ensure_demo_certs(tmp_path / "pki-a"), ensure_demo_certs(tmp_path / "pki-b")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "www.pem", live / "www.key"
    for source, target in zip(first.files(DEMO_WWW), (cert, key)):
        shutil.copy(source, target)
    origin = origin_factory("web")
    process = tlsproxy("serve", "--listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key),
                       "--backend", origin.url, "--engine", engine)
    stderr = StderrLines(process)
    try:
        port = int(re.search(r"listening on [^\s]+:(\d+)", stderr.wait_for(r"listening on")).group(1))
        yield process, stderr, port, (cert, key), second
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except Exception:
            process.kill()
            process.wait()


def test_sighup_swaps_the_certificate_and_keeps_the_open_connection(served):
    process, stderr, port, (cert, key), second = served
    old = fingerprint_of_file(cert)
    before = Client(port)
    assert before.fingerprint == old and before.get() == b"HTTP/1.1 200 OK"
    for source, target in zip(second.files(DEMO_WWW), (cert, key)):
        shutil.copy(source, target)
    new = fingerprint_of_file(cert)
    assert new != old
    process.send_signal(signal.SIGHUP)
    assert "certificates reloaded" in stderr.wait_for(r"certificates reloaded|reload failed")
    assert before.get() == b"HTTP/1.1 200 OK"  # the connection from before the reload still serves
    after = Client(port)
    assert after.fingerprint == new and after.get() == b"HTTP/1.1 200 OK"
    before.close()
    after.close()
    assert process.poll() is None


def test_a_reload_that_cannot_load_keeps_the_old_certificate(served):
    process, stderr, port, (cert, key), second = served
    old = fingerprint_of_file(cert)
    shutil.copy(second.files(DEMO_WWW)[0], cert)  # the new certificate, the old key: they do not match
    process.send_signal(signal.SIGHUP)
    line = stderr.wait_for(r"certificates reloaded|reload failed")
    assert "reload failed, keeping the old certificates" in line and "\n" not in line.rstrip("\n")
    client = Client(port)
    assert client.fingerprint == old and client.get() == b"HTTP/1.1 200 OK"
    client.close()
    assert process.poll() is None
