"""proxy.transport: the two ways a socket keeps its timeout, and the neutral errors, on real socket pairs."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from proxy.errors import Deadline, ReadError, ReadTimeout, WriteError, WriteTimeout
from proxy.transport import FLUSH_AT, Outbox, Transport, kernel_timeouts


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def kernel_rcvtimeo(sock: socket.socket) -> float:
    seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return seconds + micros / 1e6


def test_kernel_timed_socket_is_blocking_and_times_out_as_read_timeout(pair):
    a, b = pair
    t = Transport(a, kernel_timeout=0.2)
    assert a.gettimeout() is None and kernel_rcvtimeo(a) == pytest.approx(0.2)
    b.sendall(b"hello")
    assert t.recv(0.2) == b"hello" and t.received == 5
    started = time.monotonic()
    with pytest.raises(ReadTimeout) as caught:
        t.recv(0.2)
    assert not isinstance(caught.value, Deadline)
    assert isinstance(caught.value, TimeoutError)
    assert 0.15 < time.monotonic() - started < 2


def test_kernel_timed_socket_meets_a_deadline(pair):
    a, _ = pair
    t = Transport(a, kernel_timeout=5.0)
    started = time.monotonic()
    with pytest.raises(Deadline):
        t.recv(5.0, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - started < 2


def test_send_to_a_peer_that_never_reads_is_a_write_timeout(pair):
    a, _ = pair
    t = Transport(a, kernel_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(WriteTimeout):
        t.send(b"x" * (64 << 20), 0.2)  # far more than the socket buffers hold
    assert time.monotonic() - started < 5


def test_a_reset_peer_is_a_read_error_and_a_write_error():
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t = Transport(a)
    b.close()
    assert t.recv(1.0) == b""  # a socketpair's close is an EOF
    with pytest.raises(WriteError):
        for _ in range(3):
            t.send(b"x" * 65536, 1.0)
    a.close()


def test_set_timeout_changes_the_kernel_timeout_of_a_kernel_timed_socket(pair):
    a, _ = pair
    t = Transport(a, kernel_timeout=1.0)
    t.set_timeout(2.5)
    assert a.gettimeout() is None, "still kernel-timed: no poll() before each call"
    assert kernel_rcvtimeo(a) == pytest.approx(2.5)


def test_set_timeout_keeps_python_timeouts_on_other_sockets(pair):
    a, _ = pair
    a.settimeout(1.0)
    t = Transport(a)
    t.set_timeout(0.2)
    assert a.gettimeout() == 0.2
    with pytest.raises(ReadTimeout):
        t.recv(0.2)


def test_the_listener_helper_sets_the_kernel_timeout(pair):
    a, _ = pair
    kernel_timeouts(a, 0.7)
    assert a.gettimeout() is None and kernel_rcvtimeo(a) == pytest.approx(0.7)


def test_recv_idle_waits_across_resting_reads_until_its_deadline(pair):
    a, b = pair
    a.settimeout(0.05)  # the resting timeout: much shorter than the idle wait
    t = Transport(a)
    started = time.monotonic()
    with pytest.raises(Deadline):
        t.recv_idle(until=time.monotonic() + 0.3)
    assert 0.25 < time.monotonic() - started < 2, "it waited the whole idle time, not one resting read"
    b.sendall(b"GET")
    assert t.recv_idle(until=time.monotonic() + 1) == b"GET"


def test_outbox_coalesces_small_writes_and_says_when_the_first_byte_leaves(pair):
    a, b = pair
    b.settimeout(1.0)
    first = []
    out = Outbox(Transport(a), 1.0, on_first_send=lambda: first.append(True))
    out.write(b"head ")
    out.write(b"body")
    assert not first, "nothing was sent yet: the writes wait for a flush"
    out.flush()
    assert first == [True] and b.recv(100) == b"head body"
    received = []
    reader = threading.Thread(target=lambda: received.append(read_exactly(b, FLUSH_AT)))
    reader.start()
    out.write(b"x" * FLUSH_AT)  # at the threshold it sends by itself, without a flush
    reader.join(5)
    assert received == [b"x" * FLUSH_AT] and first == [True], "sent at the threshold; the hook ran once"


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count and (piece := sock.recv(1 << 20)):
        data += piece
    return bytes(data)
