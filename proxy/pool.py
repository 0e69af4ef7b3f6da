"""Keep-alive connections to backends: lend one, take it back, expire the stale.

Theory of operation
-------------------
Opening a TCP connection costs a round trip; opening a TLS one (the re-encrypt
setup) costs a full handshake.  So the proxy keeps connections to its backends open
between requests and lends them out: ``acquire`` returns an idle connection if one
is still good, or opens a new one; ``release`` puts it back if the response left it
reusable (HTTP/1.1 keep-alive, body fully read).

A pooled connection can die while idle: the origin closes it after *its* keep-alive
timeout (nginx: 65 s).  Two defences, both here:

* an idle connection older than ``idle_timeout`` is closed, not lent;
* before lending, the socket is polled: a readable idle socket means the peer
  closed it (or sent junk) and it is discarded.

A connection can still die in the race between that check and the request; the
mode code then retries once on a fresh connection, for idempotent methods without a
body only (RFC 9110 §9.2.2: a non-idempotent request may already have had effect).

For TLS backends the pool also keeps each backend's last TLS session, so a new
connection resumes it (an abbreviated handshake with no certificate exchange).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from proxy.balancer import Backend
from proxy.errors import BadGateway, GatewayTimeout, UpstreamTLSError
from proxy.http1 import ResponseReader, Limits as HTTPLimits
from proxy.transport import Transport, close_quietly, open_connection, send_close_notify


FRESH = 0.5  # seconds: a connection idle for less is lent without polling it


@dataclass(eq=False)
class BackendConnection:
    """A connection to one backend, with the response reader that parses it."""

    backend: Backend
    sock: socket.socket
    reader: ResponseReader
    transport: Transport | None = None  # how the exchange reads and writes it (proxy.transport)
    reused: bool = False
    requests: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    tls_version: str | None = None
    tls_resumed: bool = False
    session_kept: bool = False  # its TLS session was saved for resumption
    server_name: str | None = None  # the SNI it was opened with, when the caller chose one

    def close(self) -> None:
        send_close_notify(self.sock)  # TLS: a deliberate close, not a truncation (RFC 8446 §6.1)
        close_quietly(self.sock)


class ConnectionPool:
    """Idle keep-alive connections for every backend of the proxy."""

    def __init__(self, *, http_limits: HTTPLimits, connect_timeout: float, idle_timeout: float,
                 max_idle: int, io_timeout: float = 60.0, tls_contexts: dict[str, ssl.SSLContext] | None = None,
                 tls_server_names: dict[str, str | None] | None = None):
        self.http_limits = http_limits
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout  # each read from and write to a backend (backend_read)
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.tls_contexts = tls_contexts or {}  # backend key (pool/url) -> client SSLContext
        self.tls_server_names = tls_server_names or {}  # backend key -> SNI override
        self.idle: dict[str, deque[BackendConnection]] = {}
        self.sessions: dict[str, ssl.SSLSession] = {}
        self.lock = threading.Lock()
        self.opened = 0
        self.reused = 0

    # ------------------------------------------------------------------ lending
    def acquire(self, backend: Backend, *, server_name: str | None = None, fresh: bool = False,
                source_address: str | None = None) -> BackendConnection:
        """An idle, healthy connection to ``backend``, or a new one (from ``source_address``)."""
        if not fresh:
            while (conn := self._pop_idle(backend, server_name)) is not None:
                if self._still_good(conn):
                    conn.reused = True
                    self.reused += 1
                    return conn
                conn.close()
        return self.connect(backend, server_name=server_name, source_address=source_address)

    def release(self, conn: BackendConnection, *, reusable: bool) -> None:
        if not reusable:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        with self.lock:
            queue = self.idle.setdefault(_slot(conn.backend, conn.server_name), deque())
            if len(queue) < self.max_idle:
                queue.append(conn)
                return
        conn.close()

    def _pop_idle(self, backend: Backend, server_name: str | None = None) -> BackendConnection | None:
        with self.lock:
            queue = self.idle.get(_slot(backend, server_name))
            return queue.pop() if queue else None  # LIFO: the warmest connection first

    def _still_good(self, conn: BackendConnection) -> bool:
        idle = time.monotonic() - conn.idle_since
        if idle > self.idle_timeout:
            return False
        if idle < FRESH:
            # Used a moment ago and left open after a keep-alive response: skip the
            # poll (a system call per request).  The rare close in this window is
            # caught by the retry of idempotent requests.
            return True
        try:
            readable, _, _ = select.select([conn.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        # An idle HTTP/1.1 connection has nothing to say: readable means EOF or junk.
        return not readable

    def close_idle(self) -> None:
        with self.lock:
            queues, self.idle = self.idle, {}
        for queue in queues.values():
            for conn in queue:
                conn.close()

    # ------------------------------------------------------------------ connecting
    def connect(self, backend: Backend, *, server_name: str | None = None,
                source_address: str | None = None) -> BackendConnection:
        """Open a new connection (and TLS session, for https backends).

        ``source_address`` binds the outgoing socket to one of this host's addresses
        (the forward proxy "placed in a network", see ``course.region``)."""
        sock = open_connection(backend.host, backend.port, timeout=self.connect_timeout,
                               name=f"backend {backend.name}", source_address=source_address)
        conn = BackendConnection(backend, sock, ResponseReader(self.http_limits), server_name=server_name)
        if backend.tls:
            conn.sock = self._start_tls(backend, sock, server_name)
            conn.sock.settimeout(self.io_timeout)
            conn.tls_version = conn.sock.version()
            conn.tls_resumed = conn.sock.session_reused
            conn.transport = Transport(conn.sock)
        else:
            # Plain HTTP: the kernel keeps the timeout, so each recv and send is one
            # system call, not a poll() and then the call (proxy.transport).
            conn.transport = Transport(sock, kernel_timeout=self.io_timeout)
        self.opened += 1
        return conn

    def _start_tls(self, backend: Backend, sock: socket.socket, server_name: str | None) -> ssl.SSLSocket:
        context = self.tls_contexts[backend.key]
        sni = server_name or self.tls_server_names.get(backend.key) or backend.host
        session = self.sessions.get(_slot(backend, server_name))
        try:
            tls = context.wrap_socket(sock, server_hostname=sni, session=session)
        except ssl.SSLCertVerificationError as error:
            sock.close()
            raise UpstreamTLSError(f"backend {backend.name} certificate rejected: {error.verify_message}") from None
        except (ssl.SSLError, OSError) as error:
            sock.close()
            if isinstance(error, TimeoutError):
                raise GatewayTimeout(f"TLS handshake with backend {backend.name} timed out") from None
            raise UpstreamTLSError(f"TLS handshake with backend {backend.name} failed: {error}") from None
        return tls

    def remember_session(self, conn: BackendConnection) -> None:
        """Keep the TLS session (TLS 1.3 tickets arrive after the first read).

        Once per connection: reading ``SSLSocket.session`` copies the session (for
        TLS 1.3 CPython serialises and parses it), which costs about as much as a
        whole keep-alive request, so it is not repeated after every response.
        """
        if isinstance(conn.sock, ssl.SSLSocket) and not conn.session_kept:
            session = conn.sock.session
            if session is not None and session.has_ticket:
                self.sessions[_slot(conn.backend, conn.server_name)] = session
                conn.session_kept = True


def _slot(backend: Backend, server_name: str | None) -> str:
    """Where idle connections and sessions are kept.  With ``sni_from_host`` each name gets
    its own: a TLS connection opened for one name (its SNI, the certificate checked for it)
    must never carry a request for another (RFC 9110 §7.4, 421 Misdirected Request)."""
    return backend.key if server_name is None else f"{backend.key}#sni={server_name}"
