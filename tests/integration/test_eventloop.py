"""The eventloop engine on its own: what only it promises, with real clients on loopback.

The integration modules that say ``engine = both_engines`` (test_terminate,
test_backend_faults, test_vectors_live, test_trailers_live, test_reencrypt, test_limits,
test_slow_clients, test_status_page, test_load, test_real_clients, test_passthrough, test_forward) run every one
of their tests on both engines.  This module adds what is particular to the event loop:

* it is one thread, whatever the number of connections;
* a slow client does not make it buffer a whole response (back-pressure);
* ``--engine eventloop`` and ``engine = "eventloop"`` select it, for every mode (forward
  too: tests/integration/test_forward.py runs on both engines); an unknown engine is one
  line at start;
* the forward proxy's DNS lookups run in worker threads: a slow name stops nobody else;
* curl through it (GET, POST, chunked upload, keep-alive over one connection);
* the access log line and graceful shutdown, the same as the threaded engine's.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time

import pytest

from proxy import config as cfg
from proxy.errors import ConfigError
from tests.conftest import WWW, free_port, tls_connect, tlsproxy, wait_for_port
from tests.fakes import RawTLSClient
from tests.processes import wait_until
from tests.tools import require_tool


@pytest.fixture
def engine() -> str:
    return "eventloop"


def curl(pki, port, *args):
    exe = require_tool("curl")
    return subprocess.run([exe, "--silent", "--show-error", "--cacert", str(pki.ca),
                           "--resolve", f"{WWW}:{port}:127.0.0.1", *args], capture_output=True, timeout=30)


def get(port: int, pki, path: str = "/", *, extra: bytes = b"") -> bytes:
    with tls_connect(port, pki) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n".encode() + extra + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


# --------------------------------------------------------------------------- one thread
def test_many_connections_are_served_by_one_thread(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    assert proxy.engine is not None and proxy.connection_threads == 0, "no connection threads at all"
    before = set(threading.enumerate())
    clients = [RawTLSClient(proxy.port, pki.ca) for _ in range(50)]
    try:
        for n, client in enumerate(clients):
            client.send(f"GET /echo-id HTTP/1.1\r\nHost: {WWW}\r\nX-Request-Id: c{n}\r\n\r\n".encode())
        for n, client in enumerate(clients):
            response = client.read_response()
            assert response.status == 200 and response.headers["x-request-id"] == f"c{n}"
        assert proxy.stats.connections_active == 50
        # The origin runs in this process too (a thread per connection: process_request_thread);
        # the proxy started no thread for its 50 connections, and runs on one.
        started = [t.name for t in set(threading.enumerate()) - before]
        assert all("process_request_thread" in name for name in started), started
        assert [t.name for t in threading.enumerate() if t.name == "eventloop"] == ["eventloop"]
    finally:
        for client in clients:
            client.close()
    assert wait_until(lambda: proxy.stats.connections_active == 0, 5)


# --------------------------------------------------------------------------- back-pressure
def test_a_slow_client_does_not_make_the_proxy_buffer_the_response(pki, origin_factory, proxy_factory):
    """A 20 MB download read slowly: the proxy holds a bounded amount, and the body arrives whole."""
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    size = 20 * 1024 * 1024
    sock = tls_connect(proxy.port, pki)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n\r\n".encode())
    time.sleep(1.0)  # read nothing: everything the proxy did not push back is in its buffers
    (session,) = proxy.engine.sessions
    held = session.client.buffered + session.reader.buffered
    assert held <= 1024 * 1024, f"the proxy holds {held} bytes of a response its client is not reading"
    link = session.exchange.link
    assert link is not None and not link.stream.reading, "the backend is paused while the client is slow"
    received = 0
    head = b""
    while chunk := sock.recv(1 << 20):
        if not head:
            head = chunk[:chunk.index(b"\r\n\r\n") + 4]
            chunk = chunk[len(head):]
        received += len(chunk)
    sock.close()
    assert head.startswith(b"HTTP/1.1 200") and received == size


# --------------------------------------------------------------------------- selecting the engine
def test_engine_is_chosen_in_toml_and_checked(tmp_path, pki):
    cert, key = pki.files(WWW)
    base = f"""
[[listeners]]
listen = "127.0.0.1:0"
mode = "MODE"
certs = [{{ cert = "{cert}", key = "{key}" }}]
[[pools]]
name = "web"
backends = ["http://127.0.0.1:9"]
[proxy]
engine = "ENGINE"
"""
    path = tmp_path / "p.toml"
    path.write_text(base.replace("MODE", "terminate").replace("ENGINE", "eventloop"))
    assert cfg.load(str(path)).engine == "eventloop"
    path.write_text(base.replace("MODE", "terminate").replace("ENGINE", "fibers"))
    with pytest.raises(ConfigError, match=r"unknown engine 'fibers' \(one of threaded, eventloop\)"):
        cfg.load(str(path))
    path.write_text(base.replace("MODE", "forward").replace("ENGINE", "eventloop"))
    loaded = cfg.load(str(path))  # the event loop serves forward listeners too (proxy/eventloop/forward.py)
    assert loaded.engine == "eventloop" and [listener.mode for listener in loaded.listeners] == ["forward"]
    path.write_text(base.replace("MODE", "terminate").replace('engine = "ENGINE"', ""))
    assert cfg.load(str(path)).engine == "threaded", "the default stays threaded"


def test_cli_engine_flag_serves_curl_get_post_chunked_and_keep_alive(pki, origin_factory, tmp_path):
    origin = origin_factory("web")
    port = free_port()
    log = tmp_path / "access.log"
    cert, key = pki.files(WWW)
    proc = tlsproxy("serve", "--engine", "eventloop", "--listen", f"127.0.0.1:{port}", "--cert", str(cert),
                    "--key", str(key), "--backend", origin.url, "--access-log", str(log))
    try:
        wait_for_port(port)
        url = f"https://{WWW}:{port}"
        got = curl(pki, port, f"{url}/hello", f"{url}/again", f"{url}/third")
        assert got.returncode == 0, got.stderr
        assert got.stdout.count(b'"origin": "web"') == 3
        upload = tmp_path / "upload.bin"
        upload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        posted = curl(pki, port, "--data-binary", f"@{upload}", "-H", "Content-Type: application/octet-stream",
                      f"{url}/upload")
        assert posted.returncode == 0 and b'"length": 1048576' in posted.stdout, posted.stdout[:300]
        chunked = curl(pki, port, "--data-binary", f"@{upload}", "-H", "Transfer-Encoding: chunked", f"{url}/upload")
        assert chunked.returncode == 0 and b'"length": 1048576' in chunked.stdout, chunked.stdout[:300]
        assert wait_until(lambda: log.exists() and log.read_text().count(" 200 ") >= 5, 5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "shutting down" in err
    lines = log.read_text().splitlines()
    # curl kept one connection for the three GETs: the same client port on each line
    ports = {re.match(r"127\.0\.0\.1:(\d+) ", line).group(1) for line in lines if "GET /" in line}
    assert len(ports) == 1, lines


def test_keep_alive_reuses_one_backend_connection(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    for n in range(5):
        assert get(proxy.port, pki, f"/n{n}").startswith(b"HTTP/1.1 200")
    assert proxy.backend_pool.opened == 1 and proxy.backend_pool.reused == 4


# --------------------------------------------------------------------------- the forward proxy's DNS
def test_a_slow_dns_lookup_does_not_stop_the_loop(origin_factory, proxy_factory, monkeypatch):
    """While one forward request waits for a slow name, another connection is served at once.

    The lookup is slowed by wrapping the real resolver: nothing on loopback can make
    getaddrinfo itself slow, and what is checked is where the waiting happens (a worker
    thread, not the loop), so the wrapped resolver sleeps, then resolves for real."""
    from proxy.eventloop import forward
    from proxy.policy import ForwardPolicy, system_resolver

    origin = origin_factory("web")
    lookups = []

    def slow_resolver(name: str, port: int) -> list[str]:
        lookups.append(threading.current_thread().name)
        time.sleep(1.5)
        return system_resolver(name, port)

    monkeypatch.setattr(forward, "system_resolver", slow_resolver)
    proxy = proxy_factory(mode="forward", forward_policy=ForwardPolicy.build())

    def fetch(url: str, answers: list) -> None:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        answers.append((time.monotonic(), data))

    slow_answer, fast_answer = [], []
    slow = threading.Thread(target=fetch, args=(f"http://localhost:{origin.port}/slow", slow_answer))
    started = time.monotonic()
    slow.start()
    assert wait_until(lambda: lookups, 5), "the name went to the resolver"
    fetch(f"http://127.0.0.1:{origin.port}/fast", fast_answer)  # an IP literal: no lookup at all
    slow.join(10)
    (fast_at, fast_data), (slow_at, slow_data) = fast_answer[0], slow_answer[0]
    assert fast_data.startswith(b"HTTP/1.1 200 ") and slow_data.startswith(b"HTTP/1.1 200 ")
    assert fast_at - started < 1.0, "the loop answered the literal while the lookup was still sleeping"
    assert slow_at - started >= 1.5 and fast_at < slow_at
    assert lookups[0].startswith("resolver"), lookups


# --------------------------------------------------------------------------- the access log and shutdown
def test_access_log_line_is_the_threaded_engines(pki, origin_factory, proxy_factory, tmp_path):
    origin = origin_factory("web")
    log = tmp_path / "access.log"
    proxy = proxy_factory({"web": [origin.url]}, access_log=str(log))
    assert get(proxy.port, pki, "/logged?x=1").startswith(b"HTTP/1.1 200")
    assert wait_until(lambda: log.exists() and "/logged" in log.read_text(), 5)
    line = log.read_text().splitlines()[-1]
    assert re.fullmatch(r'127\.0\.0\.1:\d+ "GET /logged\?x=1 HTTP/1\.1" 200 \d+ backend=http://127\.0\.0\.1:\d+ '
                        r'tls=TLSv1\.3 cipher=\S+ handshake=full/[\d.]+ms time=[\d.]+ms', line), line


def test_graceful_shutdown_finishes_in_flight_and_closes_idle(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    idle = RawTLSClient(proxy.port, pki.ca)
    idle.send(f"GET / HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
    assert idle.read_response().status == 200
    busy = RawTLSClient(proxy.port, pki.ca, timeout=10)
    busy.send(f"GET /delay/1.0 HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
    time.sleep(0.3)
    stopper = threading.Thread(target=proxy.shutdown, kwargs={"grace": 5.0})
    started = time.monotonic()
    stopper.start()
    assert idle.read_until_closed(timeout=2) == b"" and idle.end in ("close_notify", "eof")
    response = busy.read_response()
    assert response.status == 200 and response.complete and response.headers.get("connection") == "close"
    stopper.join(10)
    assert not stopper.is_alive() and time.monotonic() - started < 4, "shutdown waited past the last exchange"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    assert proxy.engine.loop.thread is not None and not proxy.engine.loop.thread.is_alive()
    idle.close()
    busy.close()


def test_shutdown_cuts_what_remains_at_the_end_of_the_grace(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    slow = RawTLSClient(proxy.port, pki.ca, timeout=10)
    slow.send(f"GET /delay/5 HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
    time.sleep(0.3)
    started = time.monotonic()
    proxy.shutdown(grace=0.5)
    assert time.monotonic() - started < 3
    slow.read_until_closed(timeout=3)
    assert slow.end in ("eof", "reset", "close_notify")
    slow.close()


def test_status_counts_connections_by_state(pki, origin_factory, proxy_factory):
    from proxy.admin import RateMeter, status

    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    client = RawTLSClient(proxy.port, pki.ca)
    client.send(f"GET / HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
    assert client.read_response().status == 200
    assert wait_until(lambda: status(proxy, RateMeter())["connections_by_state"] == {"idle": 1}, 3)
    snapshot = status(proxy, RateMeter())
    assert snapshot["requests_total"] == 1 and snapshot["handshakes_full"] == 1
    client.close()
