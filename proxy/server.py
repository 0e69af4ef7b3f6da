"""The server: listeners, a bounded set of connection threads, graceful shutdown.

Theory of operation
-------------------
::

    connection threads, taking turns in accept() ──▶ TLS handshake ──▶ mode handler
      (proxy.acceptors: bounded, pre-started)          (timeouts)        (terminate,
                                                                          passthrough, forward)

* Idle connection threads wait in ``accept()`` themselves, and the one the kernel
  wakes serves that connection (leader/followers, ``proxy.acceptors``): no hand-off
  from an accepting thread to a worker.  Before accepting a thread takes a *slot*: at
  most ``max_connections`` connections exist at once, and when they are all taken
  new clients wait in the kernel's backlog instead of each costing a thread (the
  bound that keeps a flood from exhausting memory).
* A connection is served by one thread from start to end, which makes the code
  read top to bottom like the protocol.  Threads are kept warm (creating one costs
  ~60 µs, a third of a TLS handshake), with a small stack.
* Every socket operation has a timeout (``config.Timeouts``); nothing waits forever.
* SIGINT/SIGTERM start a *graceful shutdown*: listeners close (new connections are
  refused), connections with nothing in flight are closed at once (the states in
  ``proxy.lifecycle.CUT_AT_SHUTDOWN``: handshaking, idle, a head half-read), requests
  and tunnels in flight finish, and after ``shutdown_grace`` seconds whatever remains
  is cut.  ``shutdown`` returns only when every connection is closed, so the thread
  lifecycle is the one ``socketserver.ThreadingMixIn`` spells with
  ``daemon_threads = True`` and ``block_on_close = True``: connection threads are
  daemons (a bug in one can never keep the process alive), and stopping the server
  waits for them, bounded by the grace period.
* SIGHUP reloads the certificates (``reload_certificates``): new contexts from the
  same files, swapped in only if all of them load; open connections keep theirs.
  Both engines look the context up per connection, so the next handshake shows the
  new certificate.

The same server runs every setup: a listener's ``mode`` picks the handler module in
``proxy.modes``.  In *terminate* mode this module performs the TLS handshake (the
certificate chosen by SNI) before handing over the decrypted socket.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, TextIO

from proxy import config as cfg
from proxy.acceptors import Acceptors
from proxy.admission import ClientAddressLimit
from proxy.balancer import Balancer
from proxy.errors import ConfigError
from proxy.lifecycle import CUT_AT_SHUTDOWN, ConnectionLife, ConnEvent, ConnState
from proxy.pool import ConnectionPool
from proxy.routing import Router
from proxy.tls import contexts
from proxy.transport import close_quietly, send_close_notify, wake

THREAD_STACK_SIZE = 512 * 1024  # default is 8 MiB of address space per thread


# --------------------------------------------------------------------------- bookkeeping
class Stats:
    """Counters for the access log, the status page and the notebooks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.connections_total = 0
        self.connections_active = 0
        self.requests_total = 0
        self.handshakes_full = 0
        self.handshakes_resumed = 0
        self.handshake_failures = 0
        self.refused_per_client = 0  # closed at accept: over max_connections_per_client (proxy.admission)
        self.bytes_in = 0
        self.bytes_out = 0
        self.tls_versions: Counter[str] = Counter()
        self.ciphers: Counter[str] = Counter()
        self.alpn: Counter[str] = Counter()  # the protocol ALPN chose per handshake ("none": the client offered none we speak, or no ALPN)
        self.statuses: Counter[int] = Counter()

    def count_request(self, status: int, bytes_in: int, bytes_out: int) -> None:
        """One request (or tunnel) finished with ``status``, having moved these bytes."""
        with self.lock:
            self.requests_total += 1
            self.statuses[status] += 1
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "uptime": round(time.time() - self.started, 3),
                "connections_total": self.connections_total,
                "connections_active": self.connections_active,
                "requests_total": self.requests_total,
                "handshakes_full": self.handshakes_full,
                "handshakes_resumed": self.handshakes_resumed,
                "handshake_failures": self.handshake_failures,
                "refused_per_client": self.refused_per_client,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "tls_versions": dict(self.tls_versions),
                "ciphers": dict(self.ciphers),
                "alpn": dict(self.alpn),
                "statuses": {str(k): v for k, v in self.statuses.items()},
            }


class AccessLog:
    """One line per request (or tunnel), written under a lock."""

    def __init__(self, target: str | None):
        self.lock = threading.Lock()
        self.stream: TextIO | None
        if target is None or target == "off":  # "off" as in nginx's `access_log off`
            self.stream = None
        elif target == "-":
            self.stream = sys.stderr
        else:
            try:
                self.stream = open(target, "a", buffering=1, encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"cannot open access log {target}: {error.strerror}") from None

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def write(self, line: str) -> None:
        if self.stream is not None:
            with self.lock:
                self.stream.write(line + "\n")


@dataclass(eq=False)
class ClientConnection:
    """One accepted client connection, as the mode handlers see it."""

    sock: socket.socket
    address: tuple[str, int]
    listener: cfg.ListenerConfig
    accepted: float = field(default_factory=time.monotonic)
    life: ConnectionLife = field(default_factory=ConnectionLife)  # its state (proxy.lifecycle)
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_resumed: bool = False
    server_name: str | None = None
    handshake_ms: float | None = None
    alpn: str | None = None  # the ALPN protocol negotiated ("h2" is served by proxy.modes.h2)
    requests: int = 0
    aborted: bool = False  # a response was cut short: close without close_notify (RFC 9112 §9.8)

    @property
    def state(self) -> ConnState:
        return self.life.state

    @property
    def client(self) -> str:
        host, port = self.address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def tls_summary(self) -> str:
        if not self.tls_version:
            return "tls=-"
        kind = "resumed" if self.tls_resumed else "full"
        alpn = f" alpn={self.alpn}" if self.alpn not in (None, "http/1.1") else ""  # shown when not the default
        return (f"tls={self.tls_version} cipher={self.tls_cipher}{alpn} "
                f"handshake={kind}/{self.handshake_ms:.1f}ms")


# --------------------------------------------------------------------------- the server
class ProxyServer:
    """All listeners of one configuration, and everything they share."""

    def __init__(self, config: cfg.Config, *, log: TextIO | None = None):
        self.config = config
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.log = log or sys.stderr
        self.stats = Stats()
        self.access_log = AccessLog(config.access_log)
        self.router = Router(config.routes)
        self.balancers = {p.name: Balancer(p.name, list(p.backends), p.strategy, p.health) for p in config.pools}
        self.pools_by_name = {p.name: p for p in config.pools}
        self.backend_pool = self._make_backend_pool()
        self.tls_contexts = {
            id(listener): self._server_context(listener)
            for listener in config.listeners if listener.mode == "terminate"
        }
        self.handlers = {m: importlib.import_module(f"proxy.modes.{m}").handle
                         for m in {listener.mode for listener in config.listeners}}
        self.slots = threading.BoundedSemaphore(self.limits.max_connections)
        self.per_client = ClientAddressLimit(self.limits.max_connections_per_client)  # both engines ask it
        self.acceptors: list[Acceptors] = []  # one set of connection threads per listener
        self.listen_sockets: list[tuple[socket.socket, cfg.ListenerConfig]] = []
        self.connections: set[ClientConnection] = set()
        self.connections_lock = threading.Lock()
        self.draining = False
        self.stopped = threading.Event()
        self.health_checker = None
        self.admin = None  # the status page (proxy.admin), when config.admin is set
        self.hooks: list[Callable[["ProxyServer"], None]] = []  # run at start (e.g. the status page)
        self.engine = None  # the event loop (proxy.eventloop), when config.engine is "eventloop"

    # ------------------------------------------------------------------ setup
    def _server_context(self, listener: cfg.ListenerConfig) -> ssl.SSLContext:
        pairs = [contexts.CertKey(c.cert, c.key) for c in listener.certs]
        ctx = contexts.server_context(pairs, alpn=listener.alpn, keylog=self.config.keylog)
        if self.config.trace:
            from proxy.tls import trace  # imported only when asked: it uses a private ssl hook

            trace.print_traces(ctx, stream=self.log)
        return ctx

    def _make_backend_pool(self) -> ConnectionPool:
        tls_contexts, server_names = {}, {}
        for pool in self.config.pools:
            for backend in pool.backends:
                if backend.scheme == "https":
                    t = pool.tls
                    tls_contexts[f"{pool.name}/{backend.name}"] = contexts.client_context(
                        ca=t.ca, cert=t.cert, key=t.key, verify=t.verify, keylog=self.config.backend_keylog)
                    server_names[f"{pool.name}/{backend.name}"] = t.server_name
        return ConnectionPool(
            http_limits=self.limits.http,
            connect_timeout=self.timeouts.backend_connect,
            idle_timeout=self.timeouts.pool_idle,
            io_timeout=self.timeouts.backend_read,
            max_idle=self.limits.pool_max_idle,
            tls_contexts=tls_contexts,
            tls_server_names=server_names,
        )

    def bind(self) -> "ProxyServer":
        """Open every listening socket; a port in use is a one-line ConfigError."""
        for listener in self.config.listeners:
            address = listener.listen
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address.host, address.port))
                sock.listen(1024)
            except OSError as error:
                sock.close()
                self.close_listeners()
                reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
                raise ConfigError(f"cannot listen on {address}: {reason}") from None
            self.listen_sockets.append((sock, listener))
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of every listener: port 0 becomes the real port."""
        return [s.getsockname()[:2] for s, _ in self.listen_sockets]

    def start(self) -> "ProxyServer":
        if not self.listen_sockets:
            self.bind()
        if self.config.engine == "eventloop":
            # By name, as the modes are: the engine is chosen by the configuration.
            self.engine = importlib.import_module("proxy.eventloop").EventLoopEngine(self).start()
        else:
            if any("h2" in listener.alpn for listener in self.config.listeners if listener.mode == "terminate"):
                # Imported now, not on the first h2 connection, which would wait ~200 ms for h2 + hpack.
                importlib.import_module("proxy.modes.h2")
            self._start_connection_threads()
        if any(p.health.path for p in self.config.pools):
            from proxy.health import HealthChecker

            self.health_checker = HealthChecker(self)
            self.health_checker.start()
        if self.config.admin is not None:
            from proxy.admin import AdminServer

            try:
                self.admin = AdminServer(self, self.config.admin).start()
            except OSError as error:
                raise ConfigError(f"cannot listen on {self.config.admin} (admin): {error.strerror}") from None
        for hook in self.hooks:
            hook(self)
        return self

    def _start_connection_threads(self) -> None:
        """The threaded engine: a set of connection threads per listener (proxy.acceptors)."""
        threading.stack_size(THREAD_STACK_SIZE)
        for sock, listener in self.listen_sockets:
            serve = self._connection_server(listener)
            self.acceptors.append(Acceptors(
                sock, serve, self.slots, lambda: self.draining, max_threads=self.limits.max_connections + 1,
                idle_ttl=self.timeouts.worker_idle, name=f"conn-{listener.listen.port or 'any'}").start())

    # ------------------------------------------------------------------ accepting
    def _connection_server(self, listener: cfg.ListenerConfig) -> Callable[[socket.socket, tuple], None]:
        """What a connection thread runs for each connection it accepts on ``listener``."""
        handler = self.handlers[listener.mode]

        def serve(sock: socket.socket, address: tuple) -> None:
            if not self.admit(sock, address):
                self.slots.release()  # refused before it held the slot for long
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Looked up per connection, not once: a reload (SIGHUP) swaps the contexts.
            self._serve(ClientConnection(sock, address, listener), handler, self.tls_contexts.get(id(listener)))

        return serve

    @property
    def connection_threads(self) -> int:
        """Threads serving or waiting for connections, over all listeners."""
        return sum(a.threads for a in self.acceptors)

    def _serve(self, conn: ClientConnection, handler, tls_context: ssl.SSLContext | None) -> None:
        with self.connections_lock:
            self.connections.add(conn)
        self.stats.add(connections_total=1, connections_active=1)
        try:
            if tls_context is not None and not self._handshake(conn, tls_context):
                return
            conn.life.go(ConnEvent.READY)
            handler(self, conn)
        except Exception as error:  # a bug must not kill the worker thread silently
            print(f"tlsproxy: internal error serving {conn.client}: {error!r}", file=self.log)
        finally:
            conn.life.go(ConnEvent.CLOSE)
            if conn.tls_version and not conn.aborted:
                send_close_notify(conn.sock)
            close_quietly(conn.sock)
            with self.connections_lock:
                self.connections.discard(conn)
            self.stats.add(connections_active=-1)
            self.per_client.release(conn.address[0])
            self.slots.release()

    def admit(self, sock: socket.socket, address: tuple) -> bool:
        """The per-client-address limit, right after accept (both engines): False means closed, refused."""
        if self.per_client.admit(address[0]):
            return True
        close_quietly(sock)  # before any handshake: a refused connection costs no TLS and holds no thread
        self.stats.add(refused_per_client=1)
        self.access_log.write(f"{address[0]}:{address[1]} refused: over max_connections_per_client "
                              f"({self.per_client.limit}) from this address")
        return False

    def _handshake(self, conn: ClientConnection, context: ssl.SSLContext) -> bool:
        """The TLS handshake of the client leg; False if it failed (already logged)."""
        conn.life.go(ConnEvent.TLS)
        return self.tls_handshake(conn, context)

    def tls_handshake(self, conn: ClientConnection, context: ssl.SSLContext, *, what: str = "TLS handshake") -> bool:
        """Wrap ``conn.sock`` as the server side and complete the handshake, with the bookkeeping
        either way (also the intercepting proxy's, on the socket that carried the CONNECT)."""
        started = time.perf_counter()
        try:
            conn.sock.settimeout(self.timeouts.handshake)
            tls = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls
            tls.do_handshake()
        except (ssl.SSLError, OSError) as error:
            self._handshake_failed(conn, error, what=what)
            return False
        self._handshake_done(conn, tls, started)
        return True

    # The bookkeeping of a handshake, shared with the event loop (proxy.eventloop.engine).
    def _handshake_failed(self, conn: ClientConnection, error: BaseException, *, what: str = "TLS handshake") -> None:
        self.stats.add(handshake_failures=1)
        reason = getattr(error, "reason", None) or type(error).__name__
        self.access_log.write(f"{conn.client} {what} failed: {reason}")

    def _handshake_done(self, conn: ClientConnection, tls: ssl.SSLSocket, started: float) -> None:
        conn.handshake_ms = (time.perf_counter() - started) * 1000
        # Record these now: after the peer closes, version() returns None (FACTS.md).
        info = contexts.describe(tls)
        conn.tls_version = info["version"]
        conn.tls_cipher = info["cipher"] or "?"
        conn.tls_resumed = info["session_reused"]
        conn.server_name = info["server_name"]  # the SNI the client sent (None without one)
        conn.alpn = info["alpn"]
        with self.stats.lock:
            if conn.tls_resumed:
                self.stats.handshakes_resumed += 1
            else:
                self.stats.handshakes_full += 1
            self.stats.tls_versions[conn.tls_version] += 1
            self.stats.ciphers[conn.tls_cipher] += 1
            self.stats.alpn[conn.alpn or "none"] += 1

    # ------------------------------------------------------------------ stopping
    def close_listeners(self) -> None:
        for sock, _ in self.listen_sockets:
            Acceptors.wake(sock)  # threads blocked in accept() return; new clients are refused
            close_quietly(sock)

    def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let requests in flight finish, then cut what remains."""
        grace = self.timeouts.shutdown_grace if grace is None else grace
        self.draining = True
        if self.engine is None:
            self.close_listeners()
        if self.health_checker is not None:
            self.health_checker.stop()
        if self.admin is not None:
            self.admin.stop()
        if self.engine is not None:  # the event loop does the same from its own thread
            self.engine.shutdown(grace)
        deadline = time.monotonic() + grace
        while self.engine is None:
            with self.connections_lock:
                remaining = list(self.connections)
            for conn in remaining:
                if conn.state in CUT_AT_SHUTDOWN or time.monotonic() >= deadline:
                    wake(conn.sock)  # a thread blocked in recv() returns at once
            if not remaining or time.monotonic() >= deadline + 1.0:
                break
            time.sleep(0.02)
        self.backend_pool.close_idle()
        self.stopped.set()

    def reload_certificates(self) -> bool:
        """Read every TLS listener's certificate and key files again (SIGHUP); True if swapped.

        How real terminators rotate certificates without dropping a connection (nginx
        re-reads its configuration on SIGHUP; HAProxy's ``set ssl cert`` does it live): new
        contexts are built from the same paths, and only when every one of them loads are
        they swapped in, all at once.  A connection already open keeps the session it has
        (its SSLSocket holds the old context); the next handshake uses the new
        certificate.  A file that does not load (a half-copied PEM, a key that does not
        match) changes nothing, and says so in one line.  The new contexts have new
        session-ticket keys, so tickets issued before the reload no longer resume.
        """
        try:
            fresh = {key: self._server_context(listener) for key, listener in
                     ((id(listener), listener) for listener in self.config.listeners) if key in self.tls_contexts}
        except (ConfigError, OSError, ssl.SSLError) as error:
            print(f"tlsproxy: certificate reload failed, keeping the old certificates: {error}", file=self.log,
                  flush=True)
            return False
        self.tls_contexts = fresh  # one assignment: a connection sees the old set or the new, never a mix
        names = sorted({c.cert for listener in self.config.listeners if id(listener) in fresh for c in listener.certs})
        print(f"tlsproxy: certificates reloaded from {', '.join(names)}", file=self.log, flush=True)
        return True

    def serve_forever(self, stop_requested: threading.Event | None = None) -> None:
        """Run until SIGINT or SIGTERM (or ``stop_requested``), then shut down gracefully; SIGHUP reloads
        the certificates (``reload_certificates``)."""
        restore = None
        if stop_requested is None:
            stop_requested, restore = install_stop_signals()
        reload_requested = getattr(stop_requested, "reload", None)  # a Signals: SIGHUP sets it
        try:
            while not stop_requested.wait(0.2):
                if reload_requested is not None and reload_requested.is_set():
                    reload_requested.clear()  # here, not in the handler: a handler may interrupt anything
                    self.reload_certificates()
            print(f"tlsproxy: shutting down, letting requests finish (up to {self.timeouts.shutdown_grace:g}s)",
                  file=self.log)
            self.shutdown()
        finally:
            if restore is not None:
                restore()

    def __enter__(self) -> "ProxyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self.stopped.is_set():
            self.shutdown(grace=2.0)


class Signals(threading.Event):
    """Set by SIGINT or SIGTERM (stop gracefully); ``reload`` is set by SIGHUP (reload the certificates)."""

    def __init__(self) -> None:
        super().__init__()
        self.reload = threading.Event()


def install_stop_signals() -> tuple[Signals, Callable[[], None]]:
    """SIGINT and SIGTERM set the returned event, SIGHUP its ``reload``; the function restores the
    old handlers.

    Installed *before* the listeners open, so a signal that arrives the moment the
    port accepts still means "shut down gracefully", never "die mid-request" (and a
    SIGHUP, whose default action ends the process, means "reload").
    """
    requested = Signals()
    previous = {s: signal.signal(s, lambda signum, frame: requested.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: requested.reload.set())

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return requested, restore


# --------------------------------------------------------------------------- CLI
def configure_cli(parser) -> None:
    parser.description = (
        "Run the proxy.  Either give one listener and its backends with flags, or a TOML file with "
        "--config (see lab/configs/).  Ctrl-C or SIGTERM shuts down gracefully; SIGHUP reloads the "
        "certificate and key files (open connections keep theirs; a file that does not load changes nothing)."
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (listeners, pools, routes, limits)")
    parser.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8443",
                        help="address to listen on (default %(default)s)")
    parser.add_argument("--mode", choices=cfg.MODES, default="terminate",
                        help="terminate: TLS ends here, HTTP is routed by Host and path (an https:// --backend "
                             "makes it re-encrypt); passthrough: no certificate, the ClientHello's SNI picks "
                             "the pool and TLS bytes are spliced to the origin; forward: an HTTP forward proxy "
                             "(absolute-form GET and CONNECT tunnels) under a destination policy")
    parser.add_argument("--cert", action="append", default=[], metavar="PEM",
                        help="certificate (repeat with --key for several names; chosen by SNI, first is default)")
    parser.add_argument("--key", action="append", default=[], metavar="PEM", help="private key for the --cert before it")
    parser.add_argument("--backend", action="append", default=[], metavar="URL",
                        help="origin server, http://HOST:PORT or https://HOST:PORT (re-encrypt); for "
                             "--mode passthrough plain HOST:PORT or [::1]:PORT (TLS bytes are spliced over "
                             "TCP, no HTTP); repeat for a pool")
    parser.add_argument("--strategy", default="round_robin", metavar="NAME",
                        help="load balancing: round_robin (default), least_connections, weighted, "
                             "or your own Strategy class as module:Class")
    parser.add_argument("--backend-ca", metavar="PEM", help="CA that signs https backends' certificates")
    parser.add_argument("--backend-cert", metavar="PEM", help="client certificate shown to https backends (mutual TLS)")
    parser.add_argument("--backend-key", metavar="PEM", help="key of --backend-cert")
    parser.add_argument("--backend-sni", metavar="NAME", help="server name sent to https backends")
    parser.add_argument("--backend-sni-from-host", action="store_true",
                        help="send the client's Host as the server name to https backends (one pooled "
                             "connection per name)")
    parser.add_argument("--access-log", metavar="FILE", default="-", help="access log file, '-' for stderr (default), 'off' for none")
    parser.add_argument("--keylog", metavar="FILE",
                        help="write TLS secrets of the client leg (NSS key log, for Wireshark). LAB ONLY")
    parser.add_argument("--backend-keylog", metavar="FILE", help="the same for the backend leg (re-encrypt)")
    parser.add_argument("--trace", action="store_true", help="print every TLS handshake message as it happens")
    forward = parser.add_argument_group(
        "forward mode", "Who may go where through the forward proxy (see proxy/policy.py). Rules are tried in "
        "order, first match wins, and an implicit 'deny all' ends the list. Without rules only loopback "
        "destinations are allowed. SPEC is criteria like 'src=127.0.0.0/8 host=*.example.test dst=127.0.0.0/8 "
        "port=443,8000-8999' or 'all'.")
    forward.add_argument("--allow", action=_RuleAction, dest="forward_rules", metavar="SPEC",
                         help="allow destinations matching SPEC (repeat; order matters)")
    forward.add_argument("--deny", action=_RuleAction, dest="forward_rules", metavar="SPEC",
                         help="deny destinations matching SPEC (repeat; order matters)")
    forward.add_argument("--connect-port", action="append", metavar="PORT[-PORT]",
                         help="ports CONNECT may reach (repeat; default 443 and 8443)")
    forward.add_argument("--source-address", metavar="IP",
                         help="make outgoing connections from this local address (the proxy 'placed in a network')")
    forward.add_argument("--forward-host", action="append", default=[], metavar="NAME=IP",
                         help="resolve NAME to IP without DNS (checked by the rules like any DNS answer)")
    forward.add_argument("--intercept-ca", nargs=2, metavar=("CERT", "KEY"),
                         help="LAB ONLY: decrypt CONNECT tunnels, presenting certificates minted per host and "
                              "signed by this CA (make one: python -m proxy.tls.mint --make-ca DIR); origins "
                              "are verified against --backend-ca, else the system store (proxy/modes/intercept.py)")
    parser.add_argument("--hsts", metavar="VALUE",
                        help='add Strict-Transport-Security: VALUE (e.g. "max-age=31536000; includeSubDomains") to '
                             "every response sent over TLS, the proxy's own errors included; an origin's own field "
                             "is kept instead (RFC 6797; proxy/modes/redirect.py). Off by default. Overrides [proxy] hsts")
    parser.add_argument("--redirect-from", metavar="HOST:PORT",
                        help="also listen for plain HTTP here and answer every request with 308 Permanent Redirect "
                             "to https://HOST on the --listen port (mode redirect, proxy/modes/redirect.py)")
    parser.add_argument("--alpn", metavar="LIST",
                        help="ALPN protocols a terminate listener offers, in order: h2,http/1.1 (the default: "
                             "HTTP/2 to clients that pick it, HTTP/1.1 to backends always; proxy/modes/h2.py, "
                             "proxy/eventloop/h2session.py) or http/1.1 (HTTP/2 off). With --config it replaces every terminate listener's alpn")
    parser.add_argument("--admin", metavar="HOST:PORT",
                        help="serve the live status page (HTML and /status.json) here; keep it on loopback")
    parser.add_argument("--engine", choices=cfg.ENGINES, default=None,
                        help="how connections are served. threaded (default): a thread per connection, "
                             "blocking calls with timeouts, code that reads top to bottom (proxy/server.py, "
                             "proxy/modes/terminate.py). eventloop: one thread, non-blocking sockets and TLS, "
                             "selectors (epoll) and a timer heap; the same exchange phases driven by readiness "
                             "events (proxy/eventloop/); every mode. Overrides [proxy] engine")
    parser.add_argument("--handshake-threads", type=int, metavar="N", default=None,
                        help="eventloop only: run each TLS handshake step (the key exchange and signature) in one "
                             "of N worker threads, so handshakes use every core while the loop serves requests "
                             "(default 0: in the loop, as an nginx worker does). Overrides [proxy] handshake_threads")


class _RuleAction(argparse.Action):
    """--allow SPEC / --deny SPEC into one ordered list of rule lines ("allow SPEC")."""

    def __call__(self, parser, namespace, value, option_string=None):
        rules = list(getattr(namespace, self.dest, None) or [])
        rules.append(f"{option_string.lstrip('-')} {value}")
        setattr(namespace, self.dest, rules)


def forward_policy_from_args(args):
    """The [forward] section spelled as flags (see proxy.policy)."""
    from proxy.policy import ForwardPolicy, Rule

    rules = getattr(args, "forward_rules", None)
    hosts = {}
    for entry in getattr(args, "forward_host", None) or []:
        name, sep, address = entry.partition("=")
        if not sep:
            raise ConfigError(f"--forward-host {entry!r}: expected NAME=IP")
        hosts[name] = address
    return ForwardPolicy.build(
        rules=None if rules is None else [Rule.parse(r, where="--allow/--deny") for r in rules],
        connect_ports=getattr(args, "connect_port", None), source_address=getattr(args, "source_address", None),
        hosts=hosts, where="forward flags")


def config_from_args(args) -> cfg.Config:
    engine = getattr(args, "engine", None)
    hsts, redirect_from = getattr(args, "hsts", None), getattr(args, "redirect_from", None)
    intercept_ca = getattr(args, "intercept_ca", None)
    intercept = cfg.Interception(*intercept_ca, origin_ca=getattr(args, "backend_ca", None)) if intercept_ca else None
    if args.config:
        config = cfg.load(args.config)
        overrides = {key: value for key, value in (("engine", engine), ("hsts", hsts), ("intercept", intercept),
                                                   ("handshake_threads", getattr(args, "handshake_threads", None)))
                     if value is not None}
        if getattr(args, "alpn", None):
            alpn = cfg.parse_alpn(args.alpn, where="--alpn")
            overrides["listeners"] = tuple(replace(listener, alpn=alpn) if listener.mode == "terminate" else listener
                                           for listener in config.listeners)
        if redirect_from:
            overrides["listeners"] = (*overrides.get("listeners", config.listeners), cfg.redirect_listener(redirect_from))
        return cfg.validate(replace(config, **overrides)) if overrides else config
    if len(args.cert) != len(args.key):
        raise ConfigError("give one --key for every --cert")
    tls = cfg.BackendTLS(ca=args.backend_ca, cert=args.backend_cert, key=args.backend_key,
                         server_name=args.backend_sni, sni_from_host=args.backend_sni_from_host)
    return cfg.from_flags(
        listen=args.listen, mode=args.mode, certs=list(zip(args.cert, args.key)), backends=args.backend,
        strategy=args.strategy, backend_tls=tls, access_log=args.access_log,
        keylog=args.keylog, backend_keylog=args.backend_keylog, trace=args.trace,
        forward_policy=forward_policy_from_args(args),
        admin=cfg.parse_address(args.admin, what="admin address") if args.admin else None,
        engine=engine or "threaded", hsts=hsts, redirect_from=redirect_from, intercept=intercept,
        alpn=getattr(args, "alpn", None), handshake_threads=getattr(args, "handshake_threads", None) or 0,
    )


def run_cli(args) -> int:
    stop_requested, restore = install_stop_signals()
    config = config_from_args(args)
    if config.keylog or config.backend_keylog:
        print("tlsproxy: WARNING: key logging is on: anyone with the key log file can decrypt this "
              "traffic. Use it in the lab only.", file=sys.stderr)
    if config.intercept is not None:
        print("tlsproxy: WARNING: interception is on: CONNECT tunnels are decrypted and every request, passwords "
              "and cookies included, is read here. Use it in the lab only.", file=sys.stderr)
    server = ProxyServer(config).bind()
    server.start()
    for (host, port), listener in zip(server.addresses, config.listeners):
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print(f"tlsproxy: {listener.mode} listening on {shown}", file=sys.stderr)
    for pool in config.pools:
        print(f"tlsproxy: pool {pool.name} ({pool.strategy}): {', '.join(b.url for b in pool.backends)}",
              file=sys.stderr)
    if any(listener.mode == "forward" for listener in config.listeners):
        for line in config.forward_policy.describe():
            print(f"tlsproxy: forward policy {line}", file=sys.stderr)
    if server.admin is not None:
        print(f"tlsproxy: status page on {server.admin.url}", file=sys.stderr)
    try:
        server.serve_forever(stop_requested)
    finally:
        restore()
    return 0
