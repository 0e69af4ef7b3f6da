"""Connection threads that take turns accepting: the leader/followers pattern.

Theory of operation
-------------------
The textbook threaded server has one thread blocked in ``accept()`` that hands each
new connection to a worker through a queue.  That costs two thread wake-ups per
connection (the acceptor's, then the worker's) and a lock hand-off between them;
the benchmark's new-connection workload counted about ten context switches per
connection in the proxy, against two in nginx.

Here the idle connection threads themselves wait in ``accept()`` on the listening
socket.  For each connection the kernel wakes exactly one of them (Linux queues
``accept`` waiters exclusively: no thundering herd), and that thread serves it, start
to end, with no hand-off::

         ┌──────────── waiting in accept() (the followers) ◀─────────────┐
         │                                                               │
    connection ──▶ the woken thread (the leader)                         │
                     1. if no one else is waiting, start a thread        │
                     2. TLS handshake, requests, close ──────────────────┘
                     (or exit, if enough others are waiting already)

Step 1 is the "promote a follower" of leader/followers (Schmidt, O'Ryan, Pyarali,
Kircher and Buschmann, 2000): the next client never waits for this one to finish.

Bounds, all kept here:

* **Slots.**  A thread takes one of ``max_connections`` slots *before* it accepts,
  and the server gives it back when the connection ends.  At the limit nobody is
  in ``accept()``, so new clients wait in the kernel's backlog instead of each
  costing a thread (the bound that keeps a flood from exhausting memory).
* **Spare threads.**  At most ``max_spare`` wait in ``accept()``; a thread coming
  back from a connection beyond that exits.  One that waits ``idle_ttl`` seconds
  with no client exits too, down to ``min_spare`` (Apache's MinSpareThreads and
  MaxSpareThreads), so a burst does not leave its threads behind.  The wait is the
  kernel's (``SO_RCVTIMEO`` bounds ``accept()``): no poll before each accept.
* **Deferred accept.**  ``TCP_DEFER_ACCEPT`` wakes a thread only once the client's
  first bytes are there, saving a sleep and a wake-up per connection.
* **Shutdown.**  ``shutdown(SHUT_RDWR)`` on the listening socket wakes every thread
  blocked in ``accept()`` (Linux fails the call with EINVAL), and ``draining``
  tells them to exit.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from proxy.transport import kernel_timeouts

SLOT_WAIT = 0.5  # seconds: how often a thread waiting for a slot looks at ``draining``


class Acceptors:
    """The threads that accept and serve the connections of one listening socket."""

    def __init__(self, listen_sock: socket.socket, serve: Callable[[socket.socket, tuple], None],
                 slots: threading.Semaphore, draining: Callable[[], bool], *, min_spare: int = 8,
                 max_spare: int = 16, max_threads: int = 1024, idle_ttl: float = 30.0, name: str = "conn"):
        """``serve(sock, address)`` owns the connection and must ``slots.release()`` when it ends."""
        self.listen_sock = listen_sock
        self.serve = serve
        self.slots = slots
        self.draining = draining
        self.min_spare = min(min_spare, max_threads)
        self.max_spare = max(max_spare, self.min_spare)
        self.max_threads = max_threads
        self.idle_ttl = idle_ttl
        self.name = name
        self.lock = threading.Lock()
        self.threads = 0  # alive
        self.waiting = 0  # holding a slot, in accept()
        self.serial = 0

    def start(self) -> "Acceptors":
        kernel_timeouts(self.listen_sock, self.idle_ttl)  # accept() gives up after idle_ttl
        if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
            # In every mode the client speaks first (a ClientHello, or an HTTP request to
            # the forward proxy), so let the kernel hold a connection until its first
            # bytes arrive: the woken thread has work at once (nginx's ``listen ...
            # deferred``).  A client that connects and stays silent is handed over after
            # about a second anyway, and then meets the handshake timeout as before.
            self.listen_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        with self.lock:
            for _ in range(self.min_spare):
                self._spawn_locked()
        return self

    def _spawn_locked(self) -> None:
        self.threads += 1
        self.serial += 1
        threading.Thread(target=self._run, name=f"{self.name}-{self.serial}", daemon=True).start()

    def _run(self) -> None:
        try:
            while not self.draining():
                if not self.slots.acquire(timeout=SLOT_WAIT):
                    continue  # at the connection limit: the backlog holds new clients
                accepted = self._accept()
                if accepted is None:
                    if self._retire(idle=True):
                        return
                    continue
                self.serve(*accepted)  # releases the slot when the connection ends
                if self._retire(idle=False):
                    return
        finally:
            with self.lock:
                self.threads -= 1

    def _accept(self) -> tuple[socket.socket, tuple] | None:
        """A new connection, or None (slot released) on timeout, error or shutdown."""
        with self.lock:
            self.waiting += 1
        try:
            sock, address = self.listen_sock.accept()
        except OSError as error:  # BlockingIOError: idle_ttl passed; EINVAL: shut down
            with self.lock:
                self.waiting -= 1
            self.slots.release()
            if not isinstance(error, BlockingIOError) and not self.draining():
                time.sleep(0.01)  # e.g. EMFILE: back off instead of spinning
            return None
        with self.lock:
            self.waiting -= 1
            if self.waiting == 0 and self.threads < self.max_threads:
                self._spawn_locked()  # promote a follower: the next client is accepted meanwhile
        return sock, address

    def _retire(self, *, idle: bool) -> bool:
        """Should this thread exit rather than wait in accept() again?"""
        with self.lock:
            if idle:  # waited idle_ttl with no client: a spare above the minimum goes
                return self.threads > self.min_spare
            return self.waiting >= self.max_spare

    @staticmethod
    def wake(listen_sock: socket.socket) -> None:
        """Make every ``accept()`` on ``listen_sock`` return (and the port refuse new clients)."""
        try:
            listen_sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
