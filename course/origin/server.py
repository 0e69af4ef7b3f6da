"""A demo origin's listening side: the socket, its threads, TLS, start and stop.

Theory of operation
-------------------
In the style of ``socketserver``::

    Origin                       the Python API: start(), stop(), url, counters
      └─ OriginHTTPServer        ThreadingHTTPServer: accept, TCP_NODELAY, TLS, one
           │                     daemon thread per connection, tracked for stop()
           └─ OriginHandler      (handlers.py) one request at a time on a kept-alive
                                 connection; reads the body, routes it

Threads are made visible: the accept loop runs in one daemon thread started by
``Origin.start()``; each accepted connection gets its own daemon thread, which does
the TLS handshake (so a slow client never holds up the accept loop) and then the
requests.  Every connection socket has a timeout (``SOCKET_TIMEOUT``), and each is
tracked so ``Origin.stop()`` can close the listener, cut open connections (idle
keep-alives included) and join their threads to a deadline.  After ``stop()``,
``start()`` serves again on the same port: an origin that goes down and comes back.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from http.server import ThreadingHTTPServer

from proxy.errors import ConfigError
from course.origin.content import MAX_DELAY, SOCKET_TIMEOUT, _format_peer
from course.origin.handlers import OriginHandler
from course.origin.recording import _Tally


def _server_ssl_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The origin's TLS context, built where every context of the project is built.

    With ``client_ca`` the origin demands a client certificate signed by it (mutual
    TLS): the re-encrypt lesson where only the proxy may talk to the origin."""
    from proxy.tls.contexts import CertKey, server_context

    return server_context([CertKey(cert, key)], client_ca=client_ca)


# --------------------------------------------------------------------------- server
def _linger(sock: socket.socket, seconds: float = 0.5) -> None:
    """A lingering close after a refused handshake (e.g. no client certificate).

    In TLS 1.3 the client may already have sent its request when the server refuses
    its certificate.  Closing with those bytes unread makes the kernel send a reset,
    which can destroy the alert that says *why* before the client reads it; so stop
    sending, read and discard until the client closes (or briefly), then close.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        while sock.recv(65536):
            pass
    except OSError:
        pass


class OriginHTTPServer(ThreadingHTTPServer):
    """Accepts connections and gives each one a daemon thread (``ThreadingMixIn``)."""

    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: load tests open connections in bursts
    latency = 0.0  # seconds every answer waits before it starts (Origin(latency=...))

    def __init__(self, address, *, name, family, ssl_context, allow_networks, tally,
                 record_raw, verbose):
        self.address_family = family  # read by TCPServer.__init__ when it makes the socket
        self.name = name
        self.ssl_context = ssl_context
        self.allow_networks = allow_networks
        self.tally = tally
        self.record_raw = record_raw
        self.verbose = verbose
        self.stopping = threading.Event()  # wakes /delay sleepers on stop()
        self._connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, OriginHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can
        # stall start-up for seconds; nothing here uses the name it finds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[socket.socket, tuple]:
        sock, peer = self.socket.accept()
        # http.server writes the head and the body in separate send() calls (we merge
        # them for small answers, not for streamed ones).  With Nagle's algorithm on,
        # a small write waits for the ACK of the previous one, and the client delays
        # that ACK by ~40 ms: every keep-alive request would cost 40 ms (FACTS.md).
        # TCP_NODELAY sends each write at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SOCKET_TIMEOUT)  # no thread waits forever on a vanished client
        return sock, peer

    def finish_request(self, request: socket.socket, client_address) -> None:
        """Runs in the connection's own thread: TLS handshake, then HTTP requests."""
        key = id(threading.current_thread())
        self._track(key, request)
        connection = request
        try:
            if self.stopping.is_set():  # accepted just before stop(): do not serve it
                return
            if self.ssl_context is not None:
                # The handshake happens here, in the connection thread, so a slow or
                # failing client never holds up the accept loop.
                try:
                    connection = self.ssl_context.wrap_socket(request, server_side=True)
                except ssl.SSLError:
                    _linger(request)
                    raise
                self._track(key, connection)
            self.RequestHandlerClass(connection, client_address, self)
        except OSError as error:  # resets, timeouts, failed handshakes (ssl.SSLError)
            if self.verbose and not self.stopping.is_set():
                self.log(f"{_format_peer(client_address)} connection ended: {error}")
        finally:
            with self._connections_lock:
                self._connections.pop(key, None)
            if connection is not request:
                _close_tls(connection)

    def _track(self, key: int, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections[key] = (sock, threading.current_thread())

    def close_connections(self, deadline: float) -> None:
        """Cut every open connection (idle keep-alives included) and join its thread."""
        self.stopping.set()
        with self._connections_lock:
            open_now = list(self._connections.values())
        for sock, _thread in open_now:
            try:  # socket.socket.shutdown, not SSLSocket's: cut the TCP stream underneath
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        for _sock, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))

    def log(self, message: str) -> None:
        sys.stderr.write(f"{self.name} {message}\n")


def _close_tls(connection: ssl.SSLSocket) -> None:
    # Send close_notify so the client sees a clean end of the TLS stream (OpenSSL 3
    # reports a bare TCP close as "unexpected EOF"); wait only briefly for its reply.
    try:
        connection.settimeout(0.5)
        connection.unwrap().close()
    except (OSError, ValueError):
        connection.close()


# --------------------------------------------------------------------------- API
class Origin:
    """A demo origin serving in a background thread; a context manager.

    >>> with Origin("web") as web:          # doctest: +SKIP
    ...     urllib.request.urlopen(web.url + "/health").read()
    b'ok\\n'
    """

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, *, cert=None,
                 key=None, client_ca=None, allow_networks: Iterable[str] = (),
                 record_raw: bool = False, verbose: bool = False, latency: float = 0.0):
        if bool(cert) != bool(key):
            raise ConfigError("an origin with TLS needs both a certificate and a key")
        if client_ca and not cert:
            raise ConfigError("--client-ca needs --cert and --key (mutual TLS is TLS)")
        try:
            self.allow_networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks]
        except ValueError as error:
            raise ConfigError(f"bad --allow-network: {error}") from None
        self.name, self.host, self.port = name, host, port
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.record_raw, self.verbose = record_raw, verbose
        if not 0 <= latency <= MAX_DELAY:  # also refuses nan
            raise ConfigError(f"latency must be 0-{MAX_DELAY:g} seconds, not {latency!r}")
        self.latency = latency
        self._tally = _Tally()
        self._server: OriginHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Origin:
        if self._server is not None:
            raise RuntimeError(f"origin {self.name} is already started")
        # After stop(), start() serves again on the same port: an origin that goes down
        # and comes back, for health-check lessons.
        context = None
        if self.cert:
            try:
                context = _server_ssl_context(self.cert, self.key, self.client_ca)
            except OSError as error:  # a missing file, or ssl.SSLError for a bad one
                raise ConfigError(
                    f"cannot load TLS files for origin {self.name}: {error}") from None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._server = OriginHTTPServer(
                (self.host, self.port), name=self.name, family=family, ssl_context=context,
                allow_networks=self.allow_networks, tally=self._tally,
                record_raw=self.record_raw, verbose=self.verbose)
            self._server.latency = self.latency
        except OSError as error:
            reason = ("address already in use" if error.errno == errno.EADDRINUSE
                      else error.strerror or str(error))
            where = _format_peer((self.host, self.port))
            raise ConfigError(f"cannot listen on {where}: {reason}") from None
        self.port = self._server.server_address[1]  # port 0 -> the real one, kept for restarts
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name=f"origin-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener, cut open connections, join the threads.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout
        server.shutdown()  # serve_forever returns within its 0.1 s poll interval
        server.server_close()
        server.close_connections(deadline)
        self._thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.cert else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def requests_seen(self) -> int:
        return self._tally.requests_seen

    @property
    def raw_requests(self) -> list[bytes]:
        """A snapshot: the raw head (and up to 64 KiB of body) of each request."""
        with self._tally.lock:
            return list(self._tally.raw_requests)

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Origin {self.name} {self.url}>"
