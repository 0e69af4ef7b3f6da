"""Backend connections without blocking: connect, TLS handshake, and a pool of kept-alive ones.

Theory of operation
-------------------
The threaded engine's ``proxy.pool.ConnectionPool`` blocks in ``connect`` and in the TLS
handshake.  Here both are split into steps driven by readiness::

    socket(), connect_ex() ─EINPROGRESS─▶ wait for WRITE ─SO_ERROR == 0─▶ (https) do_handshake()
                                                                             ├─ SSLWantReadError:  wait for READ
                                                                             ├─ SSLWantWriteError: wait for WRITE
                                                                             └─ done ─▶ connected(link)

A non-blocking ``connect`` returns at once with EINPROGRESS; the kernel completes the
TCP handshake in the background and reports the outcome as writability, with the
error (ECONNREFUSED, ...) in ``SO_ERROR``.  One timer bounds the whole of it
(``backend_connect``): the 504 of the threaded engine.

``LoopPool`` keeps idle connections keyed exactly like ``proxy.pool`` (``_slot``: the
backend, and the SNI when ``sni_from_host`` chose one), last in first out, at most
``pool_max_idle`` per key.  It keeps them *in* the server's ``ConnectionPool`` (its
``idle`` table, under its lock), and uses that pool's TLS contexts, SNI overrides, saved
TLS sessions (so a new connection resumes) and counters (``opened``, ``reused``): the
status page, the tests and ``close_idle`` see one pool whichever engine runs.  Only the
lending differs, because lending here must not block.

An idle connection stays watched for READ.  A kept-alive HTTP/1.1 connection has
nothing to say between responses, so readable means the backend closed it (its own
keep-alive timeout) or sent junk: it is closed at once, and never lent.  That replaces
the threaded pool's ``select`` before lending; the race that remains (the backend
closes just as a request goes out) is the stale-connection retry of ``proxy.exchange``.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import threading
import time
from collections import deque
from typing import Callable

from proxy.balancer import Backend
from proxy.errors import BadGateway, GatewayTimeout, UpstreamTLSError
from proxy.eventloop.loop import READ, WRITE, EventLoop
from proxy.eventloop.stream import Stream
from proxy.http1 import ResponseReader
from proxy.pool import ConnectionPool, _slot

Done = Callable[["BackendLink | None", Exception | None], None]


class BackendLink:
    """One connection to a backend, as the event loop holds it (``proxy.pool.BackendConnection``'s twin)."""

    def __init__(self, backend: Backend, stream: Stream, reader: ResponseReader, server_name: str | None) -> None:
        self.backend = backend
        self.stream = stream
        self.sock = stream.sock  # ConnectionPool.remember_session reads the TLS session from here
        self.reader = reader
        self.server_name = server_name
        self.reused = False
        self.requests = 0
        self.idle_since = time.monotonic()
        self.tls_version: str | None = None
        self.tls_resumed = False
        self.session_kept = False

    def close(self) -> None:
        loop = self.stream.loop
        if loop.running and threading.current_thread() is not loop.thread:
            # ConnectionPool.close_idle, from another thread: only the loop thread touches its sockets.
            loop.call_soon_threadsafe(self.close)
            return
        self.stream.close(notify=True)  # TLS: a deliberate close, not a truncation (RFC 8446 §6.1)


class Connect:
    """Opening one backend connection, step by step (see the module docstring)."""

    def __init__(self, loop: EventLoop, pool: ConnectionPool, backend: Backend, server_name: str | None,
                 done: Done, *, tls: bool | None = None, name: str | None = None,
                 source_address: str | None = None) -> None:
        """``tls``: False for a splice (TCP only, whatever the scheme); ``name``: for errors;
        ``source_address``: bind the socket to this local address first (the forward proxy's, see
        ``proxy.transport.open_connection``)."""
        self.loop = loop
        self.pool = pool
        self.backend = backend
        self.server_name = server_name
        self.done = done
        self.tls_wanted = backend.tls if tls is None else tls
        self.name = name or f"backend {backend.name}"
        self.source_address = source_address
        self.sock: socket.socket | None = None
        self.tls: ssl.SSLSocket | None = None
        self.timer = None

    def start(self) -> None:
        backend = self.backend
        try:
            # Resolving a literal address never waits; a name would (getaddrinfo blocks):
            # the configuration names backends by address in every setup of the course, and the
            # forward proxy connects only to addresses its policy checked (proxy.eventloop.forward).
            family, kind, proto, _, address = socket.getaddrinfo(backend.host, backend.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            if self.source_address:
                self.sock = sock  # closed by _fail if the bind fails
                sock.bind((self.source_address, 0))  # binding never waits
        except OSError as error:
            return self._fail(BadGateway(f"cannot connect to {self.name}: {error.strerror or error}"))
        sock.setblocking(False)
        # Small requests and responses must not wait for Nagle (FACTS: ~40 ms stalls).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            return self._fail(BadGateway(f"cannot connect to {self.name}: {os.strerror(code)}"))
        timeout = self.pool.connect_timeout
        self.timer = self.loop.call_later(timeout, lambda: self._fail(GatewayTimeout(
            f"{self.name} did not accept a connection in {timeout:g}s")))
        self.loop.watch(sock, WRITE, self)

    def handle_events(self, mask: int) -> None:
        if self.tls is None:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                return self._fail(BadGateway(f"cannot connect to {self.name}: {os.strerror(code)}"))
            if not self.tls_wanted:
                return self._succeed(self.sock)
            self.loop.forget(self.sock)  # the SSLSocket below is a new object on the same descriptor
            self.tls = self._wrap()
            if self.tls is None:
                return
        self._handshake()

    def _wrap(self) -> ssl.SSLSocket | None:
        backend, pool = self.backend, self.pool
        sni = self.server_name or pool.tls_server_names.get(backend.key) or backend.host
        session = pool.sessions.get(_slot(backend, self.server_name))
        try:
            return pool.tls_contexts[backend.key].wrap_socket(
                self.sock, server_hostname=sni, session=session, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as error:
            self._fail(UpstreamTLSError(f"TLS handshake with backend {backend.name} failed: {error}"))
            return None

    def _handshake(self) -> None:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return self.loop.watch(self.tls, READ, self)
        except ssl.SSLWantWriteError:
            return self.loop.watch(self.tls, WRITE, self)
        except ssl.SSLCertVerificationError as error:
            return self._fail(UpstreamTLSError(
                f"backend {self.backend.name} certificate rejected: {error.verify_message}"))
        except (ssl.SSLError, OSError) as error:
            return self._fail(UpstreamTLSError(f"TLS handshake with backend {self.backend.name} failed: {error}"))
        self._succeed(self.tls)

    def _succeed(self, sock: socket.socket) -> None:
        self.timer.cancel()
        self.loop.forget(sock)  # the Stream registers it again, with its own interest
        link = BackendLink(self.backend, Stream(self.loop, sock), ResponseReader(self.pool.http_limits),
                           self.server_name)
        if self.tls is not None:
            link.tls_version = self.tls.version()
            link.tls_resumed = self.tls.session_reused
        self.pool.opened += 1
        self.done(link, None)

    def _fail(self, error: Exception) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for sock in (self.tls, self.sock):
            if sock is not None:
                self.loop.forget(sock)
                sock.close()
        self.tls = self.sock = None
        done, self.done = self.done, _done_already
        done(None, error)


def _done_already(link, error) -> None:
    """A connect that already reported (a timeout racing a late completion): nothing more to say."""


class LoopPool:
    """Idle keep-alive backend connections of the event loop (see the module docstring)."""

    def __init__(self, loop: EventLoop, shared: ConnectionPool) -> None:
        self.loop = loop
        self.shared = shared  # contexts, SNI names, TLS sessions, limits, counters, and the idle table

    def acquire(self, backend: Backend, *, server_name: str | None, fresh: bool, done: Done,
                source_address: str | None = None) -> None:
        """Call ``done(link, None)`` with a kept-alive or new connection (from ``source_address``), or
        ``done(None, error)``."""
        if not fresh:
            now = time.monotonic()
            while (link := self._pop(_slot(backend, server_name))) is not None:
                if now - link.idle_since <= self.shared.idle_timeout and not link.stream.closed:
                    link.reused = True
                    self.shared.reused += 1
                    return done(link, None)
                link.close()
        Connect(self.loop, self.shared, backend, server_name, done, source_address=source_address).start()

    def release(self, link: BackendLink, *, reusable: bool) -> None:
        if not reusable or link.stream.closed:
            link.close()
            return
        link.idle_since = time.monotonic()
        link.requests += 1
        stream = link.stream
        # Idle: any byte or EOF means the backend is done with it (see the module docstring).
        stream.on_data = stream.on_eof = stream.on_error = lambda *_: self._discard(link)
        stream.on_drain = _ignore
        stream.resume_reading()
        with self.shared.lock:
            queue = self.shared.idle.setdefault(_slot(link.backend, link.server_name), deque())
            if len(queue) < self.shared.max_idle:
                queue.append(link)
                return
        link.close()

    def _pop(self, slot: str) -> BackendLink | None:
        with self.shared.lock:
            queue = self.shared.idle.get(slot)
            return queue.pop() if queue else None  # LIFO: the warmest connection first

    def _discard(self, link: BackendLink) -> None:
        with self.shared.lock:
            queue = self.shared.idle.get(_slot(link.backend, link.server_name))
            if queue is not None and link in queue:
                queue.remove(link)
        link.close()

    def expire(self) -> None:
        """Close connections idle longer than ``pool_idle`` (called by the engine every second)."""
        limit = time.monotonic() - self.shared.idle_timeout
        expired = []
        with self.shared.lock:
            for queue in self.shared.idle.values():
                while queue and queue[0].idle_since < limit:  # the oldest are at the left
                    expired.append(queue.popleft())
        for link in expired:
            link.close()

    def close_idle(self) -> None:
        self.shared.close_idle()


def _ignore(*args) -> None:
    pass
