"""The event loop's handshake workers (``[proxy] handshake_threads``, proxy/eventloop/engine.py Handshake).

Each TLS handshake step runs in a worker thread; the loop never lets a worker wait for
the network.  These tests prove the three things that design promises: every handshake
of a burst completes and is served, a client that stalls its handshake holds no worker
(one worker, one stalled client, and others still get through), and the configuration
refuses what makes no sense.
"""

from __future__ import annotations

import socket
import threading

import pytest

from proxy import config as cfg
from proxy.errors import ConfigError
from tests.conftest import WWW, tls_connect


@pytest.fixture
def origin(origin_factory):
    return origin_factory("web", host="127.0.0.1")


def get(port: int, pki) -> bytes:
    sock = tls_connect(port, pki)
    try:
        sock.sendall(f"GET /hello HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data
    finally:
        sock.close()


def test_a_burst_of_handshakes_in_two_workers_is_served(pki, origin, proxy_factory):
    proxy = proxy_factory({"web": [origin.url]}, engine="eventloop", handshake_threads=2)
    answers: list[bytes] = []
    lock = threading.Lock()

    def client() -> None:
        data = get(proxy.port, pki)
        with lock:
            answers.append(data)

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 40 and all(a.startswith(b"HTTP/1.1 200") and b'"/hello"' in a for a in answers)
    assert proxy.stats.handshakes_full + proxy.stats.handshakes_resumed == 40
    assert any(t.name.startswith("handshake") for t in threading.enumerate()), "the steps ran in the workers"


def test_a_stalled_handshake_holds_no_worker(pki, origin, proxy_factory):
    """One worker; a client that sends half a ClientHello and waits. The next client is served at once:
    the stalled one waits in the loop (watched for READ), not in the worker."""
    proxy = proxy_factory({"web": [origin.url]}, engine="eventloop", handshake_threads=1,
                          timeouts=cfg.Timeouts(handshake=30.0))
    stalled = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a record header and the start of a hello
        assert get(proxy.port, pki).startswith(b"HTTP/1.1 200")
        assert get(proxy.port, pki).startswith(b"HTTP/1.1 200")
    finally:
        stalled.close()


def test_handshake_threads_are_for_the_event_loop(pki):
    certs = [tuple(map(str, pki.files(WWW)))]
    with pytest.raises(ConfigError, match="handshake_threads is for engine eventloop"):
        cfg.from_flags(listen="127.0.0.1:0", certs=certs, backends=["http://127.0.0.1:9"], handshake_threads=2)
    with pytest.raises(ConfigError, match="from 0 to 64"):
        cfg.from_flags(listen="127.0.0.1:0", certs=certs, backends=["http://127.0.0.1:9"], handshake_threads=-1,
                       engine="eventloop")
