"""The delay line (course/delay.py) on real sockets: it adds the round trip it promises.

Timing on a loaded 2-core machine is noisy, so every timing assertion is a *lower*
bound (the line must never deliver early) plus a generous upper one (it must not be
stuck): a round trip through a 40 ms line takes at least 40 ms and well under a
second.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from course.delay import DelayLine
from tests.conftest import REPO

RTT = 0.040
SLACK = 0.002          # clocks and scheduling: "at least RTT" allows 2 ms of rounding


class EchoServer:
    """Echoes every byte; answers EOF with EOF (half-close); records when data arrived."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)      # so close() is noticed at once
        self.address = self.listener.getsockname()[:2]
        self.peers: list[tuple[str, int]] = []
        self.threads: list[threading.Thread] = []
        self.accepted_at: list[float] = []
        self._stop = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted_at.append(time.monotonic())
            self.peers.append(peer)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self.acceptor.join(5)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def test_a_round_trip_through_the_line_takes_at_least_the_rtt(echo):
    with DelayLine(echo.address, rtt=RTT) as line, socket.create_connection(line.address, timeout=5) as sock:
        times = []
        for index in range(5):
            started = time.monotonic()
            sock.sendall(b"ping %d" % index)
            assert sock.recv(100) == b"ping %d" % index
            times.append(time.monotonic() - started)
    assert min(times) >= RTT - SLACK, times
    assert max(times) < 1.0, times


def test_without_the_line_the_same_round_trip_is_much_shorter(echo):
    """The control: loopback itself adds (almost) nothing, so the time above is the line's."""
    with socket.create_connection(echo.address, timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
        assert time.monotonic() - started < RTT / 2


def test_the_onward_connection_opens_half_an_rtt_after_the_accept(echo):
    """The target sees the connection when the SYN would have reached it: RTT/2 later."""
    with DelayLine(echo.address, rtt=RTT) as line:
        started = time.monotonic()
        with socket.create_connection(line.address, timeout=5) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
    assert echo.accepted_at and echo.accepted_at[0] - started >= RTT / 2 - SLACK


def test_bytes_arrive_in_order_and_complete(echo):
    payload = bytes(range(256)) * 4096          # 1 MiB in many writes: order must survive the queue
    received = bytearray()
    with DelayLine(echo.address, rtt=0.010) as line, socket.create_connection(line.address, timeout=10) as sock:
        reader = threading.Thread(target=lambda: _read_all(sock, received, len(payload)), daemon=True)
        reader.start()
        for start in range(0, len(payload), 10_000):
            sock.sendall(payload[start:start + 10_000])
        reader.join(20)
    assert bytes(received) == payload


def _read_all(sock: socket.socket, into: bytearray, size: int) -> None:
    while len(into) < size:
        data = sock.recv(65536)
        if not data:
            return
        into.extend(data)


def test_a_half_close_travels_with_the_same_delay(echo):
    """shutdown(SHUT_WR) reaches the target RTT/2 later; its EOF comes back after one RTT,
    and the client can still read what was in flight before it."""
    with DelayLine(echo.address, rtt=RTT) as line, socket.create_connection(line.address, timeout=5) as sock:
        sock.sendall(b"last words")
        started = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        assert _read_until_eof(sock) == b"last words"
        assert time.monotonic() - started >= RTT - SLACK


def _read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_the_source_address_is_what_the_target_sees(echo):
    with DelayLine(echo.address, rtt=0.0, source="127.0.0.2") as line, \
            socket.create_connection(line.address, timeout=5) as sock:
        sock.sendall(b"who")
        assert sock.recv(3) == b"who"
    assert echo.peers[0][0] == "127.0.0.2"


def test_a_target_that_is_not_listening_closes_the_client():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = probe.getsockname()[:2]            # closed on leaving: nothing listens there
    with DelayLine(dead, rtt=0.010) as line, socket.create_connection(line.address, timeout=5) as sock:
        sock.sendall(b"hello?")
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass                                  # a reset is an honest answer too


def test_stop_ends_connections_and_threads(echo):
    before = threading.active_count()
    line = DelayLine(echo.address, rtt=RTT).start()
    sock = socket.create_connection(line.address, timeout=5)
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    line.stop(grace=0.1)
    try:
        assert sock.recv(10) == b""               # the line closed its end
    except ConnectionResetError:
        pass
    sock.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before + len(echo.threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = [t.name for t in threading.enumerate() if t.name.startswith("delay")]
    assert names == [], names


def test_rtt_is_bounded():
    with pytest.raises(ValueError):
        DelayLine(("127.0.0.1", 9), rtt=60)


def test_the_program_reports_its_port_and_relays(echo):
    """``python -m course.delay`` (what ``tlsproxy capture --rtt`` starts) prints the line the
    capture harness reads, relays with the delay, and exits on SIGTERM."""
    process = subprocess.Popen([sys.executable, "-m", "course.delay", "--connect", "%s:%d" % echo.address,
                                "--rtt", "40"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = process.stdout.readline()
        assert line.startswith("delay line listening on 127.0.0.1:"), line
        port = int(line.split()[4].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
            assert time.monotonic() - started >= RTT - SLACK
    finally:
        process.terminate()
        assert process.wait(10) == 0
        process.stdout.close()
