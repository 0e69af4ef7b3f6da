"""proxy.acceptors: connection threads that accept for themselves, on real sockets."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from proxy.acceptors import Acceptors
from tests.processes import wait_until


class Harness:
    """A listening socket, Acceptors on it, and a ``serve`` that holds each connection
    until the test lets it go (so "served at the same time" can be seen)."""

    def __init__(self, *, max_connections: int = 8, min_spare: int = 2, max_spare: int = 4, idle_ttl: float = 30.0):
        self.listen = socket.create_server(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self.slots = threading.BoundedSemaphore(max_connections)
        self.draining = False
        self.release = threading.Event()
        self.served: list[bytes] = []
        self.active = 0
        self.lock = threading.Lock()
        self.acceptors = Acceptors(self.listen, self.serve, self.slots, lambda: self.draining, min_spare=min_spare,
                                   max_spare=max_spare, max_threads=max_connections + 1, idle_ttl=idle_ttl,
                                   name="test-conn").start()
        self.clients: list[socket.socket] = []

    def serve(self, sock: socket.socket, address) -> None:
        with self.lock:
            self.active += 1
        try:
            sock.settimeout(5)
            self.served.append(sock.recv(100))
            self.release.wait(10)
        finally:
            with self.lock:
                self.active -= 1
            sock.close()
            self.slots.release()

    def connect(self, hello: bytes = b"hello") -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if hello:
            client.sendall(hello)
        self.clients.append(client)
        return client

    def close(self) -> None:
        self.draining = True
        self.release.set()
        Acceptors.wake(self.listen)
        self.listen.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(**kwargs) -> Harness:
        made.append(Harness(**kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_many_clients_are_served_at_once_by_threads_that_accepted_them(harness):
    h = harness(min_spare=2)
    assert wait_until(lambda: h.acceptors.waiting == 2, 5)
    for i in range(6):
        h.connect(f"client {i}".encode())
    # Two threads were waiting; each one that took a client promoted another first.
    assert wait_until(lambda: h.active == 6, 5), h.active
    assert sorted(h.served) == sorted(f"client {i}".encode() for i in range(6))
    assert h.acceptors.waiting >= 1, "someone is always left waiting for the next client"


def test_the_slot_limit_leaves_extra_clients_in_the_backlog(harness):
    h = harness(max_connections=2, min_spare=2)
    for _ in range(3):
        h.connect()
    assert wait_until(lambda: h.active == 2, 5)
    time.sleep(0.5)
    assert h.active == 2 and len(h.served) == 2, "the third client waits in the kernel's backlog"
    h.release.set()  # the first two end: their slots come back, the third is accepted
    assert wait_until(lambda: len(h.served) == 3, 5)


def test_threads_above_the_minimum_exit_when_idle(harness):
    h = harness(min_spare=1, max_spare=8, idle_ttl=0.3)
    for _ in range(4):
        h.connect()
    assert wait_until(lambda: h.active == 4, 5)
    grown = h.acceptors.threads
    assert grown >= 5
    h.release.set()
    assert wait_until(lambda: h.acceptors.threads == 1, 5), h.acceptors.threads


def test_wake_ends_every_thread_and_refuses_new_clients(harness):
    h = harness(min_spare=3)
    assert wait_until(lambda: h.acceptors.waiting == 3, 5)
    h.draining = True
    Acceptors.wake(h.listen)
    assert wait_until(lambda: h.acceptors.threads == 0, 5), h.acceptors.threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", h.port), timeout=2)


def test_a_silent_client_is_accepted_only_after_the_deferral(harness):
    # TCP_DEFER_ACCEPT: a thread wakes when the first bytes arrive, not at connect.
    h = harness(min_spare=1)
    silent = h.connect(hello=b"")
    time.sleep(0.3)
    assert h.active == 0, "no thread spent on a client that has said nothing yet"
    silent.sendall(b"now")
    assert wait_until(lambda: h.served == [b"now"], 5)
