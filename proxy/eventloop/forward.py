"""The forward proxy on the event loop: absolute-form and CONNECT (``proxy.modes.forward``'s twin).

Theory of operation
-------------------
A forward listener's connection is an ``HTTPSession`` whose reader accepts absolute-form
targets and CONNECT, and whose exchanges choose their destination from the request
instead of a route.  The decisions are the shared functions of ``proxy.modes.forward``
(as ``tunnel.py`` uses ``proxy.modes.passthrough.log``); only the waiting differs::

    threaded (proxy.modes.forward)            event loop (this module)
    ---------------------------------------   -----------------------------------------------
    ForwardHandler.authorize (DNS blocks)     ForwardSession.authorize: inline, or a lookup in
                                                a worker thread (Resolver), answer via callback
    ForwardExchange.choose_backend, connect   ForwardExchange.start, connect_next (LoopPool)
    ForwardHandler.tunnel, open_tunnel        TunnelExchange: authorize, Connect each address,
                                                200, then tunnel.Tunnel (the passthrough splice)
    proxy.relay                               proxy.eventloop.tunnel.Tunnel
    log_tunnel                                TunnelExchange.log (the same tunnel_line)

**DNS without blocking.**  ``getaddrinfo`` blocks, and on the loop thread a slow name
server would stop every connection.  The policy needs no lookup for an IP literal or a
``hosts`` entry (``--forward-host NAME=IP``): those are decided at once, on the loop.
Any other name (``localhost`` in the tests, a real name in the lab) is resolved by a
small pool of worker threads (``concurrent.futures``, at most ``RESOLVER_THREADS``); the
answer comes back to the loop with ``call_soon_threadsafe``, the loop's one way in from
another thread, and the policy then checks exactly those addresses
(``proxy.modes.forward.defer_lookup``).  The worker touches no socket of the loop's and no
session: it only returns a list of strings.

**CONNECT** reads nothing more from the client until the tunnel is open (the client is
paused, bytes wait in the kernel), answers ``200 Connection Established``, and hands
both streams to ``tunnel.Tunnel``, the splice passthrough uses, with the bytes the
client sent right after its head (``take_buffered``) sent first.  A refusal is the
error response, then close, as in the threaded engine; the tunnel's end is one log line.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from proxy import exchange as rules
from proxy import http1
from proxy.errors import BadGateway, ClientGone, ProxyError, render_error
from proxy.eventloop.backends import Connect
from proxy.eventloop.loop import EventLoop
from proxy.eventloop.session import CLOSED, HTTPSession, LoopExchange
from proxy.eventloop.tunnel import Tunnel
from proxy.exchange import ExchangePhase, Phase, Step
from proxy.lifecycle import ConnEvent
from proxy.modes.forward import (DIRECT, ESTABLISHED, FORWARD_POOL, LookupNeeded, absolute_form_authority, authorize,
                                 defer_lookup, destination_backends, split_host_port, tunnel_line, tunnel_note)
from proxy.policy import Destination, system_resolver

RESOLVER_THREADS = 4  # lookups at once; more wait in the executor's queue (threads stay bounded)
Authorized = Callable[["Destination | None", "Exception | None"], None]


class Resolver:
    """``getaddrinfo`` off the loop thread (see the module docstring); the engine owns one."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.executor: ThreadPoolExecutor | None = None  # started at the first lookup

    def lookup(self, name: str, port: int, done: Callable[[list[str] | None, Exception | None], None]) -> None:
        """Call ``done(addresses, None)`` or ``done(None, error)`` on the loop thread, later."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="resolver")
        future = self.executor.submit(system_resolver, name, port)
        # The callback runs in the worker thread: it only queues the answer for the loop.
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(lambda: _deliver(f, done)))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def _deliver(future: Future, done) -> None:
    if future.cancelled():
        return
    error = future.exception()
    done(None, error) if error is not None else done(future.result(), None)


class ForwardSession(HTTPSession):
    """A forward listener's connection: ``HTTPSession`` with absolute-form, CONNECT and the policy."""

    def __init__(self, engine, conn, stream) -> None:
        super().__init__(engine, conn, stream, proto="http", allow_absolute_form=True, allow_connect=True)
        self.policy = self.server.config.forward_policy

    def new_exchange(self, request: http1.Request):
        if request.method == "CONNECT":
            return TunnelExchange(self, request)
        return ForwardExchange(self, request)

    def authorize(self, host: str, port: int, *, connect: bool, close: bool, done: Authorized) -> None:
        """``done(destination, None)`` or ``done(None, error)``: the policy's decision, never blocking the loop."""
        def decide(resolver) -> tuple[Destination | None, Exception | None]:
            try:
                return authorize(self.policy, self.server, self.conn.address[0], host, port, connect=connect,
                                 close=close, resolver=resolver), None
            except ProxyError as error:  # 403, or 502 for a name that did not resolve
                return None, error

        try:
            outcome = decide(defer_lookup)  # literal or hosts entry: decided now
        except LookupNeeded as needed:
            name, lookup_port = needed.name, needed.port  # (``needed`` is unbound after the except block)
        else:
            return done(*outcome)

        def resolved(addresses, error) -> None:
            if error is None:  # the rules check exactly the addresses the lookup found
                return done(*decide(lambda _name, _port: addresses))
            if not isinstance(error, ProxyError):  # system_resolver raises BadGateway; anything else too
                error = BadGateway(f"cannot resolve {name!r}: {error}")
            done(None, error)

        # getaddrinfo would block the loop thread, and with it every connection: a worker does it.
        self.engine.resolver.lookup(name, lookup_port, resolved)

    @property
    def gone(self) -> bool:
        return self.state is CLOSED


class ForwardExchange(LoopExchange):
    """An absolute-form request: the destination comes from the URI (``proxy.modes.forward.ForwardExchange``)."""

    session: ForwardSession

    def start(self) -> None:
        close = not self.request_done
        try:
            host, port = absolute_form_authority(self.request, close=close)
        except ProxyError as error:
            return self.fail(error)
        self.session.authorize(host, port, connect=False, close=close, done=self.authorized)

    def authorized(self, destination: Destination | None, error: Exception | None) -> None:
        if self.finished or self.session.gone:  # cut while the name was being resolved
            return
        if error is not None:
            return self.fail(error)
        self.pool_name = FORWARD_POOL
        # One Backend per checked address; the pool keeps connections per address
        # (under "forward/...", apart from any reverse-proxy pool's connections).
        self.candidates = destination_backends(destination)
        self.balancer, self.backend = DIRECT, self.candidates[0]
        self.phase.go(Step.BACKEND)
        self.head = rules.upstream_head(self.request, client_ip=self.session.conn.address[0],
                                        proto=self.session.proto)
        self.connect()

    def connect(self) -> None:
        """The first checked address that answers (and nothing else); also the stale-connection retry."""
        self.untried = list(self.candidates)
        self.connect_next()

    def connect_next(self) -> None:
        self.backend = self.untried.pop(0)
        self.session.engine.pool.acquire(self.backend, server_name=None, fresh=self.fresh, done=self.tried,
                                         source_address=self.session.policy.source_address)

    def tried(self, link, error: Exception | None) -> None:
        if self.session.gone:  # cut (shutdown) while connecting
            if link is not None:
                link.close()
            return
        if error is not None and self.untried and not self.finished:
            return self.connect_next()
        if error is not None:
            self.backend = self.candidates[0]  # as the threaded engine logs a destination that failed
        self.connected(link, error)


class TunnelExchange:
    """A CONNECT: check, connect, 200, splice (``proxy.modes.forward.ForwardHandler.tunnel``'s twin).

    It stands where an exchange stands in its ``HTTPSession`` (the session asks it for
    ``due``, ``fail``, ``drop_link``...); the connection ends with the tunnel."""

    def __init__(self, session: ForwardSession, request: http1.Request) -> None:
        self.session = session
        self.server = session.server
        self.client = session.client
        self.request = request
        self.phase = ExchangePhase(Phase.ROUTE)  # a tunnel never sends a request: it stays here
        self.started = time.perf_counter()
        self.finished = False
        self.untried: list = []
        self.backend = None
        self.origin = None
        self.tunnel: Tunnel | None = None

    def start(self) -> None:
        self.client.pause_reading()  # what follows the head waits in the kernel until the tunnel opens
        try:
            host, port = split_host_port(self.request.target)
        except ProxyError as error:
            return self.fail(error)
        self.session.authorize(host, port, connect=True, close=True, done=self.authorized)

    def authorized(self, destination: Destination | None, error: Exception | None) -> None:
        if self.finished or self.session.gone:
            return
        if error is not None:
            return self.fail(error)
        self.untried = destination_backends(destination, scheme="tcp")
        self.connect_next()

    def connect_next(self) -> None:
        self.backend = backend = self.untried.pop(0)
        Connect(self.session.engine.loop, self.server.backend_pool, backend, None, self.connected, tls=False,
                name=f"{backend.host} port {backend.port}",
                source_address=self.session.policy.source_address).start()

    def connected(self, link, error: Exception | None) -> None:
        if self.finished or self.session.gone:  # cut (shutdown) while connecting
            if link is not None:
                link.stream.close(notify=False)
            return
        if error is not None:
            return self.connect_next() if self.untried else self.fail(error)
        self.origin = link.stream
        reader = self.session.reader
        reader.next_event()  # EndOfMessage: the reader is now in its TUNNEL state
        early = reader.take_buffered()
        self.client.write(ESTABLISHED)
        self.client.flush()  # the 200 leaves before the splice starts counting bytes
        if self.finished:  # that write failed: the client is gone (fail has run)
            return
        self.session.conn.life.go(ConnEvent.TUNNEL)
        self.tunnel = Tunnel(self.session.engine.loop, self.client, self.origin,
                             idle_timeout=self.server.timeouts.tunnel_idle, done=self.tunnel_done)
        self.tunnel.start(early)

    def tunnel_done(self, up: int, down: int, ended: str) -> None:
        self.finished = True
        self.log(200, backend=self.backend.name, note=tunnel_note(up, down, ended))
        self.origin.close(notify=False)
        self.session.close()

    # ------------------------------------------------------------------ what the session asks
    def fail(self, error: Exception) -> None:
        """A refusal is answered, then the connection closes; a client gone is only logged."""
        if self.finished:
            return
        self.finished = True
        if self.origin is not None:
            self.origin.close(notify=False)
        if isinstance(error, ClientGone) or not isinstance(error, ProxyError):
            self.log(200 if self.origin is not None else 0, backend=self.backend.name if self.origin else "-",
                     note="error='client-gone'")
            return self.session.close()
        self.client.write(render_error(error))
        self.client.flush()  # sent before it is counted, as the threaded engine's send_error then log_tunnel
        self.log(error.status, note=f"error={str(error)!r}")
        self.session.close_after_sending()

    def drop_link(self) -> None:
        """Graceful shutdown's end: the tunnel stops now (and says so in its log line)."""
        if self.tunnel is not None:
            return self.tunnel.finish("cut at shutdown")
        self.finished = True  # resolving or connecting: the answer, when it comes, is dropped

    def client_data(self) -> None:
        pass  # bytes after the head wait in the reader: they are the tunnel's first

    def client_drained(self) -> None:
        pass

    def due(self) -> float | None:
        return None  # the connect has its own timer, the tunnel its own clock

    def expired(self, now: float) -> None:
        pass

    def log(self, status: int, *, backend: str = "-", note: str = "") -> None:
        session = self.session
        session.count_request(status)  # the client stream counted the tunnel's bytes too
        seconds = time.perf_counter() - self.started
        self.server.access_log.write(tunnel_line(session.conn.client, self.request, status, seconds,
                                                 backend=backend, note=note))
