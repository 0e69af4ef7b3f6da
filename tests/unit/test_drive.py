"""proxy.drive: the two ways a socket keeps its timeout, seen on real socket pairs."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from proxy.drive import Deadline, kernel_timeouts, recv_some, send_all, set_timeout


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def kernel_rcvtimeo(sock: socket.socket) -> float:
    seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return seconds + micros / 1e6


def test_kernel_timed_socket_is_blocking_and_times_out_as_timeouterror(pair):
    a, b = pair
    kernel_timeouts(a, 0.2)
    assert a.gettimeout() is None and kernel_rcvtimeo(a) == pytest.approx(0.2)
    b.sendall(b"hello")
    assert recv_some(a, 0.2) == b"hello"
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        recv_some(a, 0.2)
    assert not isinstance(caught.value, Deadline)
    assert 0.15 < time.monotonic() - started < 2


def test_kernel_timed_socket_meets_a_deadline(pair):
    a, _ = pair
    kernel_timeouts(a, 5.0)
    started = time.monotonic()
    with pytest.raises(Deadline):
        recv_some(a, 5.0, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - started < 2


def test_send_all_to_a_peer_that_never_reads_times_out(pair):
    a, _ = pair
    kernel_timeouts(a, 0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        send_all(a, b"x" * (64 << 20))  # far more than the socket buffers hold
    assert time.monotonic() - started < 5


def test_set_timeout_changes_the_kernel_timeout_of_a_kernel_timed_socket(pair):
    a, _ = pair
    kernel_timeouts(a, 1.0)
    set_timeout(a, 2.5)
    assert a.gettimeout() is None, "still kernel-timed: no poll() before each call"
    assert kernel_rcvtimeo(a) == pytest.approx(2.5)


def test_set_timeout_keeps_python_timeouts_on_other_sockets(pair):
    a, b = pair
    a.settimeout(1.0)
    set_timeout(a, 0.2)
    assert a.gettimeout() == 0.2
    with pytest.raises(TimeoutError):
        recv_some(a, 0.2)
