"""Load: many connections held at once, many requests answered right, a clean shutdown under fire.

The proxy runs as ``tlsproxy serve`` in its own process (``tests.processes``), in
front of a ``tlsproxy origin`` process; the test process is only the clients.
Nothing here measures speed (CI machines vary); what is checked is correctness
under concurrency:

* 1,000 keep-alive TLS connections are held open at the same time (the proxy
  really has a thread on each), and afterwards every one of them still works;
* 50 client threads send 10,000 requests, each with its own ``X-Request-Id`` that
  the origin echoes: every response carries its own request's id (a response
  given to the wrong client would carry another's), and none is lost;
* SIGTERM under load: requests in flight complete, idle keep-alive connections are
  closed, new connections are refused, and the process exits before its deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import both_engines
from tests.fakes import RawTLSClient, client_context
from tests.processes import origin_process, proxy_config, raise_open_files_limit, serve_process, wait_until

WWW = "www.example.test"
HELD = 1000

engine = both_engines  # every test here runs on both engines (tests/conftest.py)


def on_engine(config: str, engine: str) -> str:
    """``proxy_config``'s TOML (which ends in its [proxy] table) with the engine chosen."""
    return config + f'engine = "{engine}"\n'
CLIENTS, REQUESTS = 50, 10_000


@pytest.fixture
def origin():
    with origin_process() as process:
        yield process


def echo(client: RawTLSClient, request_id: str) -> None:
    client.send(f"GET /echo-id HTTP/1.1\r\nHost: {WWW}\r\nX-Request-Id: {request_id}\r\n\r\n".encode())
    response = client.read_response()
    assert response.status == 200 and response.complete, response
    assert response.headers["x-request-id"] == request_id
    assert json.loads(response.body)["request_id"] == request_id


def test_thousand_keep_alive_tls_connections_are_held_and_all_still_work(origin, pki, tmp_path, engine):
    if not raise_open_files_limit(4 * HELD):
        pytest.skip(f"RLIMIT_NOFILE's hard limit is below {4 * HELD}: cannot hold {HELD} connections")
    config = on_engine(proxy_config(pki, origin.port, tmp_path, timeouts="worker_idle = 1.0",
                                    limits=f"max_connections = {HELD + 100}"), engine)
    with serve_process(config, tmp_path) as proxy:
        context = client_context(pki.ca)
        with RawTLSClient(proxy.port, pki.ca, context=context) as warm:
            echo(warm, "warm-up")
        baseline = proxy.threads()

        def open_some(count: int) -> list[RawTLSClient]:
            return [RawTLSClient(proxy.port, pki.ca, context=context, timeout=30) for _ in range(count)]

        with ThreadPoolExecutor(8) as pool:
            clients = [c for batch in pool.map(open_some, [HELD // 8] * 8) for c in batch]
        try:
            assert len(clients) == HELD
            if engine == "threaded":
                # Every connection has its own thread in the proxy, all at once.
                assert wait_until(lambda: proxy.threads() >= HELD, 10), proxy.threads()
            else:
                # The event loop holds every one of them on its one thread.
                assert wait_until(lambda: len(os.listdir(f"/proc/{proxy.pid}/fd")) >= HELD, 10), "not all held"
                assert proxy.threads() <= baseline, f"{proxy.threads()} threads, baseline {baseline}"
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda pair: echo(pair[1], f"held-{pair[0]}"), enumerate(clients)))
        finally:
            for client in clients:
                client.close()
        assert wait_until(lambda: proxy.threads() <= baseline, 15), \
            f"{proxy.threads()} threads after the clients left, baseline {baseline}"


def test_ten_thousand_requests_each_get_their_own_response(origin, pki, tmp_path, engine):
    config = on_engine(proxy_config(pki, origin.port, tmp_path), engine)
    with serve_process(config, tmp_path) as proxy:
        context = client_context(pki.ca)
        run = uuid.uuid4().hex[:8]
        answered: list[str] = []
        lock = threading.Lock()

        def client(number: int) -> None:
            conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=30)
            conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.port), timeout=30),
                                            server_hostname=WWW)
            mine = []
            for i in range(REQUESTS // CLIENTS):
                request_id = f"{run}-{number}-{i}"
                conn.request("GET", "/echo-id", headers={"Host": WWW, "X-Request-Id": request_id})
                response = conn.getresponse()
                body = json.loads(response.read())
                assert response.status == 200
                assert response.getheader("X-Request-Id") == request_id == body["request_id"], \
                    f"client {number} got {body['request_id']} for {request_id}"
                mine.append(request_id)
            conn.close()
            with lock:
                answered.extend(mine)

        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client, n) for n in range(CLIENTS)]:
                future.result()
        assert len(answered) == len(set(answered)) == REQUESTS
        proxy.terminate()
        assert proxy.proc.wait(15) == 0
        logged = [line for line in (tmp_path / "access.log").read_text().splitlines() if "/echo-id" in line]
        assert len(logged) == REQUESTS and all('" 200 ' in line for line in logged)


def test_graceful_shutdown_under_load(origin, pki, tmp_path, engine):
    grace = 6.0
    delay = 2.5
    config = on_engine(proxy_config(pki, origin.port, tmp_path, timeouts=f"shutdown_grace = {grace}"), engine)
    with serve_process(config, tmp_path) as proxy:
        context = client_context(pki.ca)
        in_flight: list = []
        hammered: list = []
        problems: list[str] = []

        def slow_request(number: int) -> None:
            with RawTLSClient(proxy.port, pki.ca, context=context, timeout=30) as client:
                client.send(f"GET /delay/{delay} HTTP/1.1\r\nHost: {WWW}\r\n\r\n".encode())
                in_flight.append(client.read_response())

        def hammer(number: int) -> None:
            """Requests back to back until the proxy stops taking them; none may come back cut."""
            sent = 0
            while True:
                try:
                    client = RawTLSClient(proxy.port, pki.ca, context=context, timeout=10)
                except OSError:  # refused, or cut mid-handshake: the shutdown has begun
                    return
                with client:
                    while True:
                        request_id = f"hammer-{number}-{sent}"
                        sent += 1
                        before = len(client.received)
                        try:
                            client.send(f"GET /echo-id HTTP/1.1\r\nHost: {WWW}\r\nX-Request-Id: {request_id}\r\n\r\n".encode())
                        except OSError:
                            break
                        response = client.read_response()
                        if not response.complete:
                            if len(client.received) > before:
                                problems.append(f"a cut response for {request_id}: {client.received[before:]!r}")
                            break  # closed before answering: the keep-alive race, the request was not taken
                        if response.headers.get("x-request-id") != request_id:
                            problems.append(f"{request_id} got the response for {response.headers.get('x-request-id')}")
                        hammered.append(request_id)
                        if response.headers.get("connection") == "close":
                            break

        idle = [RawTLSClient(proxy.port, pki.ca, context=context) for _ in range(20)]
        for n, client in enumerate(idle):
            echo(client, f"idle-{n}")
        threads = [threading.Thread(target=slow_request, args=(n,)) for n in range(10)]
        threads += [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: len(hammered) >= 50, 10)
        time.sleep(0.3)  # the delayed requests are all at the origin now
        signalled = time.monotonic()
        proxy.terminate()

        # New connections are refused while the delayed requests are still in flight.
        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:  # caught in the accept queue as the listener shut: ask again
                return False
        assert wait_until(refused, delay), "the listener still accepts after SIGTERM"
        assert len(in_flight) == 0, "the delayed requests finished before the listener closed: too fast a test"
        # Idle keep-alive connections are closed at once, not left to their timeout.
        for client in idle:
            assert client.read_until_closed(timeout=delay) == b"" and client.end in ("close_notify", "eof", "reset")
            client.close()

        for thread in threads:
            thread.join(grace + 5)
        assert proxy.proc.wait(grace + 5) == 0
        exited = time.monotonic() - signalled

    assert not problems, problems[:5]
    assert len(in_flight) == 10
    for response in in_flight:
        assert response.status == 200 and response.complete, response
        assert json.loads(response.body)["delayed"] == delay
        assert response.headers.get("connection") == "close", "a draining proxy says it will close"
    assert exited < grace, f"exited {exited:.1f}s after SIGTERM: the grace period was not needed"
    assert any("shutting down" in line for line in proxy.lines)
