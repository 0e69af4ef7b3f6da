"""The event-loop engine: listeners, non-blocking TLS handshakes, the connection limit, graceful shutdown.

Theory of operation
-------------------
This is the event loop's ``proxy.server`` + ``proxy.acceptors``.  ``ProxyServer`` still
owns everything the engines share (listening sockets, configuration, router,
balancers, stats, access log, status page, health checks); when its configuration says
``engine = "eventloop"`` it starts this instead of connection threads::

    listener readable ──accept() until EAGAIN──▶ Handshake ──do_handshake() until done──▶ HTTPSession
         (at max_connections the listeners are                 (SSLWantRead/Write:        (proxy.eventloop.session)
          no longer watched: the backlog waits)                  wait for that event)

A listener without TLS skips the handshake.  ``serve`` then picks the session by the
listener's mode: ``HTTPSession`` (terminate; ``H2Session``, ``h2session.py``, when ALPN
chose h2), ``PassthroughSession`` (``tunnel.py``) or ``ForwardSession`` (``forward.py``).

**Accepting.**  A readable listening socket has connections queued; ``accept`` is
called until it says EAGAIN.  At ``max_connections`` the listeners are taken out of
the selector, so new clients wait in the kernel's backlog exactly as they do for the
threaded engine when every slot is taken, and put back when a connection ends.

**The TLS handshake without blocking.**  ``wrap_socket(do_handshake_on_connect=False)``
on a non-blocking socket, then ``do_handshake()`` whenever the socket is ready: it
raises ``SSLWantReadError`` (the client's next flight has not arrived) or
``SSLWantWriteError`` (our flight did not fit in the socket buffer) until it completes.
One timer (``handshake`` seconds) bounds it, so a client trickling its ClientHello
byte by byte is cut like in the threaded engine.

**Graceful shutdown** follows ``proxy.lifecycle.CUT_AT_SHUTDOWN`` as the threaded engine
does: the listeners close, connections with nothing in flight (handshaking, idle,
half a head) close at once, exchanges in flight finish (their responses say
``Connection: close``), and at the end of the grace period whatever remains is cut.
``shutdown`` is called from another thread (a test, ``serve_forever``): it hands the
work to the loop with ``call_soon_threadsafe`` and waits for the loop thread to end.

Only the loop thread touches sockets.  The forward proxy's DNS lookups run in a few
worker threads (``forward.Resolver``, stopped with the loop) that return addresses and
touch nothing else.  The active health checks keep their own thread
(``proxy.health``, blocking probes through the shared ``ConnectionPool``), and the
status page its own server; both read state that is already guarded by locks.
"""

from __future__ import annotations

import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from proxy.eventloop.backends import LoopPool
from proxy.eventloop.forward import ForwardSession, Resolver
from proxy.eventloop.h2session import H2Session
from proxy.eventloop.loop import READ, WRITE, EventLoop
from proxy.eventloop.session import HTTPSession
from proxy.eventloop.stream import Stream
from proxy.eventloop.tunnel import PassthroughSession
from proxy.lifecycle import CUT_AT_SHUTDOWN, ConnEvent
from proxy.modes import redirect
from proxy.transport import close_quietly

ACCEPT_BATCH = 64  # connections accepted per readiness event, at most (fairness to the others)


class Listener:
    """A listening socket in the selector: readable means connections are queued."""

    def __init__(self, engine: "EventLoopEngine", sock: socket.socket, config) -> None:
        self.engine, self.sock, self.config = engine, sock, config

    @property
    def context(self):
        """This listener's SSLContext, looked up per connection: a reload (SIGHUP) swaps them."""
        return self.engine.server.tls_contexts.get(id(self.config))

    def handle_events(self, mask: int) -> None:
        engine = self.engine
        for _ in range(ACCEPT_BATCH):
            if engine.at_limit():
                return
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE, ECONNABORTED: try again on the next event
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            engine.accepted(sock, address, self)


class Handshake:
    """The client leg's TLS handshake, one readiness event at a time.

    Each step is one non-blocking ``do_handshake()``: it does what the bytes that arrived
    allow (the crypto: key exchange, signature) and says what it waits for next.  With
    ``handshake_threads`` the step runs in a worker thread instead of the loop's: CPython
    releases the GIL inside ``SSL_do_handshake``, so the handshakes of a reconnection wave
    use every core while the loop goes on serving requests.  A worker only ever *computes*:
    the socket is non-blocking, the loop stops watching it while a step is out, and no
    worker ever waits for the network, so a client that stalls its handshake holds no thread
    (unlike the threaded engine, where it holds its connection thread until the timeout)."""

    def __init__(self, engine: "EventLoopEngine", conn, context: ssl.SSLContext) -> None:
        self.engine = engine
        self.conn = conn
        self.started = time.perf_counter()
        self.stepping = False  # a worker is running a step: nobody else touches the socket
        self.ended: BaseException | None = None  # failed (timeout, shutdown) while a step was out
        conn.life.go(ConnEvent.TLS)
        conn.sock.setblocking(False)
        conn.sock = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        timeout = engine.server.timeouts.handshake
        self.timer = engine.loop.call_later(timeout, lambda: self.failed(TimeoutError("handshake timed out")))

    def handle_events(self, mask: int = 0) -> None:
        workers = self.engine.handshake_workers
        if workers is None:
            return self.stepped(self.step())
        self.engine.loop.watch(self.conn.sock, 0, self)
        self.stepping = True
        workers.submit(self.step_in_worker)

    def step(self):
        """One ``do_handshake()``: None when done, READ or WRITE for what it waits for, or the error."""
        try:
            self.conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            return READ
        except ssl.SSLWantWriteError:
            return WRITE
        except (ssl.SSLError, OSError) as error:
            return error
        return None

    def step_in_worker(self) -> None:
        result = self.step()
        self.engine.loop.call_soon_threadsafe(lambda: self.stepped(result))

    def stepped(self, result) -> None:
        """Back in the loop's thread: wait for the next flight, fail, or hand the connection on."""
        self.stepping = False
        if self.ended is not None:  # the timer or the shutdown came while the step was out
            return self.failed(self.ended)
        loop, sock = self.engine.loop, self.conn.sock
        if result is READ or result is WRITE:
            return loop.watch(sock, result, self)
        if result is not None:
            return self.failed(result)
        self.timer.cancel()
        loop.forget(sock)  # the Stream registers it again, with its own interest
        self.engine.handshakes.discard(self)
        self.engine.server._handshake_done(self.conn, sock, self.started)
        self.engine.serve(self.conn)

    def failed(self, error: BaseException) -> None:
        if self.stepping:  # never close a socket a worker is using: its descriptor could be reused
            self.ended = error
            return
        self.timer.cancel()
        self.engine.server._handshake_failed(self.conn, error)
        self.engine.loop.forget(self.conn.sock)
        self.engine.handshakes.discard(self)
        self.engine.release(self.conn)


class EventLoopEngine:
    """One thread, one selector, every connection (see the module docstring)."""

    def __init__(self, server) -> None:
        self.server = server
        self.loop = EventLoop()
        self.pool = LoopPool(self.loop, server.backend_pool)
        self.resolver = Resolver(self.loop)  # the forward proxy's DNS, in worker threads (proxy.eventloop.forward)
        self.listeners: list[Listener] = []
        self.sessions: set[HTTPSession] = set()
        self.handshakes: set[Handshake] = set()
        threads = server.config.handshake_threads
        self.handshake_workers = ThreadPoolExecutor(threads, thread_name_prefix="handshake") if threads else None
        self.active = 0
        self.listening = False
        self.deadline: float | None = None  # of the graceful shutdown

    # ------------------------------------------------------------------ starting
    def start(self) -> "EventLoopEngine":
        for sock, config in self.server.listen_sockets:
            sock.setblocking(False)
            if hasattr(socket, "TCP_DEFER_ACCEPT"):  # as in proxy.acceptors: wake only once bytes are there
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            self.listeners.append(Listener(self, sock, config))
        self.watch_listeners(True)
        self.loop.call_later(1.0, self.tick)
        self.loop.start_thread(name="eventloop")
        return self

    def watch_listeners(self, on: bool) -> None:
        if on != self.listening:
            self.listening = on
            for listener in self.listeners:
                self.loop.watch(listener.sock, READ if on else 0, listener)

    def tick(self) -> None:
        """Once a second: expire idle backend connections."""
        self.pool.expire()
        self.loop.call_later(1.0, self.tick)

    # ------------------------------------------------------------------ connections
    def at_limit(self) -> bool:
        if self.active >= self.server.limits.max_connections:
            self.watch_listeners(False)  # the kernel's backlog holds the next clients
            return True
        return False

    def accepted(self, sock: socket.socket, address, listener: Listener) -> None:
        from proxy.server import ClientConnection  # here: proxy.server starts this engine

        if not self.server.admit(sock, address):  # over max_connections_per_client: closed already
            return
        conn = ClientConnection(sock, address, listener.config)
        self.active += 1
        with self.server.connections_lock:
            self.server.connections.add(conn)
        self.server.stats.add(connections_total=1, connections_active=1)
        if listener.context is None:
            return self.serve(conn)
        handshake = Handshake(self, conn, listener.context)
        self.handshakes.add(handshake)
        handshake.handle_events()

    def serve(self, conn) -> None:
        conn.life.go(ConnEvent.READY)
        stream = Stream(self.loop, conn.sock)
        if conn.listener.mode == "passthrough":
            session = PassthroughSession(self, conn, stream)
        elif conn.listener.mode == "forward":
            session = ForwardSession(self, conn, stream)
        elif conn.listener.mode == "redirect":  # plain HTTP, every request answered 308 (proxy.modes.redirect)
            answer = redirect.answerer(self.server, conn.listener)
            session = HTTPSession(self, conn, stream, proto="http", local_answer=answer)
        elif conn.alpn == "h2":  # ALPN chose HTTP/2 (RFC 9113 §3.2): many streams on this connection
            session = H2Session(self, conn, stream)
        else:
            session = HTTPSession(self, conn, stream, proto="https" if conn.tls_version else "http")
        self.sessions.add(session)
        session.start()

    def connection_closed(self, session: HTTPSession) -> None:
        self.sessions.discard(session)
        self.release(session.conn)

    def release(self, conn) -> None:
        """A connection ended (the session closed its socket, or a handshake failed)."""
        if conn.state.name != "CLOSED":
            conn.life.go(ConnEvent.CLOSE)
        close_quietly(conn.sock)
        with self.server.connections_lock:
            self.server.connections.discard(conn)
        self.server.stats.add(connections_active=-1)
        self.server.per_client.release(conn.address[0])
        self.active -= 1
        if self.deadline is None:
            self.watch_listeners(True)  # below the limit again
        elif not self.sessions and not self.handshakes:
            self.loop.stop()  # shutting down, and the last connection is gone

    # ------------------------------------------------------------------ stopping
    def shutdown(self, grace: float) -> None:
        """From any thread: stop accepting, let exchanges finish for ``grace`` seconds, then cut."""
        self.loop.call_soon_threadsafe(lambda: self._begin_shutdown(grace))
        if self.loop.thread is not None:
            self.loop.thread.join(grace + 2.0)
        self.resolver.close()  # lookups still running finish in their threads; their answers are dropped
        if self.handshake_workers is not None:
            self.handshake_workers.shutdown(wait=False)  # a step is CPU only: the ones still queued end at once

    def _begin_shutdown(self, grace: float) -> None:
        self.deadline = time.monotonic() + grace
        self.watch_listeners(False)
        for listener in self.listeners:
            close_quietly(listener.sock)
        self._cut(lambda conn: conn.state in CUT_AT_SHUTDOWN)
        for session in list(self.sessions):
            if isinstance(session, H2Session):
                session.drain()  # HTTP/2 says GOAWAY and lets its streams finish (RFC 9113 §6.8)
        self.loop.call_at(self.deadline, lambda: self._cut(lambda conn: True))
        if not self.sessions and not self.handshakes:
            self.loop.stop()

    def _cut(self, which) -> None:
        for handshake in list(self.handshakes):
            handshake.failed(ConnectionAbortedError("shutting down"))
        for session in list(self.sessions):
            if which(session.conn):
                session.cut()
        self.pool.close_idle()
        if not self.sessions:
            self.loop.stop()
