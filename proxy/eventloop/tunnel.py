"""Passthrough on the event loop: route by SNI, then splice bytes both ways (``proxy.modes.passthrough``'s twin).

Theory of operation
-------------------
A passthrough connection has two lives, as in the threaded engine::

    PassthroughSession                                   Tunnel (proxy.relay's twin)
    ------------------------------------------------     -------------------------------------------
    feed the ClientHelloReader as bytes arrive            client.on_data ──▶ origin.write ──▶ origin
      (sans-IO, proxy.tls.clienthello), one deadline      origin.on_data ──▶ client.write ──▶ client
    route_sni(name) ──no route──▶ alert 112, close        EOF on one side ──▶ FIN (shutdown_write) on
    Connect each backend in turn (refused: the next)        the other; the other direction goes on
    replay every byte read so far ──▶ Tunnel              both EOFs passed on ──▶ "closed"

The relay's four rules hold here too, by other means:

* **Back-pressure**: a direction whose sink holds more than ``HIGH_WATER`` unsent bytes
  pauses its source (``pause_reading``) until the sink drains (``on_drain``).
* **No deadlock**: there is nothing to deadlock; no call blocks, each direction moves
  when its own socket is ready.
* **Half-close**: EOF from one side becomes ``shutdown_write`` on the other, sent once
  the bytes before it are out; the tunnel ends when both directions have ended.
* **Every wait is bounded**: no byte either way for ``tunnel_idle`` seconds ends it
  ("idle", or "stalled: X stopped reading" when bytes were waiting for X).

The access-log line is the threaded engine's (``proxy.modes.passthrough.log``).
``Tunnel`` is also the CONNECT tunnel of the forward proxy (``proxy.eventloop.forward``),
after its ``200 Connection Established``.
"""

from __future__ import annotations

import time

from proxy.errors import ServiceUnavailable, TLSParseError
from proxy.eventloop.backends import Connect
from proxy.eventloop.loop import Clock
from proxy.eventloop.stream import HIGH_WATER, Stream
from proxy.lifecycle import ConnEvent
from proxy.modes.passthrough import log
from proxy.tls.clienthello import NEED_DATA, ClientHello, ClientHelloReader, unrecognized_name_alert

REFUSAL_LINGER = 1.0  # seconds: read and drop after the alert, as proxy.relay.close_gracefully


class Tunnel:
    """Bytes both ways between two plain streams until both sides are done (see the module docstring)."""

    def __init__(self, loop, client: Stream, origin: Stream, *, idle_timeout: float, done) -> None:
        self.client, self.origin = client, origin
        self.idle_timeout = idle_timeout
        self.done = done  # done(up, down, ended)
        self.names = {id(client): "client", id(origin): "origin"}
        self.sent_before = (origin.sent, client.sent)
        self.paused: set[int] = set()
        self.ended: str | None = None
        self.clock = Clock(loop, self.due, self.expired)
        for source, sink in ((client, origin), (origin, client)):
            source.on_data = lambda data, source=source, sink=sink: self.carry(data, source, sink)
            source.on_eof = lambda source=source, sink=sink: self.source_ended(source, sink)
            source.on_error = lambda error, source=source: self.finish(f"{self.names[id(source)]} reset: {error}")
            sink.on_drain = lambda sink=sink: self.drained(sink)

    def start(self, first_to_origin: bytes) -> None:
        self.origin.write(first_to_origin)
        self.client.resume_reading()
        self.origin.resume_reading()
        self.clock.check()

    def carry(self, data: bytes, source: Stream, sink: Stream) -> None:
        sink.write(data)
        if sink.buffered > HIGH_WATER:  # the sink is slower than the source: let TCP slow the source
            source.pause_reading()
            self.paused.add(id(source))

    def drained(self, sink: Stream) -> None:
        source = self.origin if sink is self.client else self.client
        if id(source) in self.paused:
            self.paused.discard(id(source))
            source.resume_reading()
        self.check_done()

    def source_ended(self, source: Stream, sink: Stream) -> None:
        sink.shutdown_write()  # our FIN: "no more bytes from my peer"
        self.check_done()

    def check_done(self) -> None:
        # A direction is over when its source said EOF and its sink got the FIN; the tunnel, when both are.
        client, origin = self.client, self.origin
        if self.ended is None and client.eof and origin.fin_sent and origin.eof and client.fin_sent:
            self.finish("closed")

    def due(self) -> float | None:
        if self.ended is not None:
            return None
        c, o = self.client, self.origin
        return max(c.last_read, o.last_read, c.last_progress, o.last_progress) + self.idle_timeout

    def expired(self, now: float) -> None:
        waiting = next((s for s in (self.client, self.origin) if s.buffered), None)
        self.finish(f"stalled: {self.names[id(waiting)]} stopped reading" if waiting else "idle")

    def finish(self, ended: str) -> None:
        if self.ended is not None:
            return
        self.ended = ended
        self.clock.stop()
        up = self.origin.sent - self.sent_before[0]
        down = self.client.sent - self.sent_before[1]
        self.done(up, down, ended)


class PassthroughSession:
    """One passthrough client connection on the event loop (see the module docstring)."""

    def __init__(self, engine, conn, stream: Stream) -> None:
        self.engine = engine
        self.server = engine.server
        self.conn = conn
        self.client = stream
        self.reader = ClientHelloReader()
        self.hello: ClientHello | None = None
        self.started = time.monotonic()
        self.balancer = self.backend = None
        self.origin: Stream | None = None
        self.tried: list = []
        self.failures: list[str] = []
        self.closed = False
        self.exchange = None  # (the engine's shutdown asks HTTP sessions for theirs)
        self.timer = None

    # ------------------------------------------------------------------ the ClientHello
    def start(self) -> None:
        self.conn.life.go(ConnEvent.BYTES)  # reading the ClientHello: shutdown may cut it at once
        stream = self.client
        stream.on_data, stream.on_eof = self.hello_data, self.hello_eof
        stream.on_error = lambda error: self.finish(
            f"client left before its ClientHello ({len(self.reader.raw)} bytes)")
        timeout = self.server.timeouts.handshake  # the whole ClientHello, under one deadline (slowloris)
        self.timer = self.engine.loop.call_later(timeout, lambda: self.finish(
            f"rejected: no complete ClientHello within {timeout:g}s"))
        stream.resume_reading()

    def hello_data(self, data: bytes) -> None:
        self.reader.feed(data)
        self.parse()

    def hello_eof(self) -> None:
        self.reader.feed_eof()
        self.parse()

    def parse(self) -> None:
        try:
            event = self.reader.next_event()
        except TLSParseError as error:
            if self.reader.eof:
                return self.finish(f"client left before its ClientHello ({len(self.reader.raw)} bytes)")
            return self.finish(f"rejected: malformed ClientHello: {error}")
        if event is NEED_DATA:
            return
        self.timer.cancel()
        self.client.pause_reading()  # what follows the hello waits in the kernel until the tunnel opens
        self.hello = event
        self.conn.server_name = event.server_name
        pool_name = self.server.router.route_sni(event.server_name)
        if pool_name is None:
            return self.refuse()
        self.balancer = self.server.balancers[pool_name]
        self.connect_next()

    def refuse(self) -> None:
        """RFC 6066 §3: abort with a fatal unrecognized_name alert, then close gracefully."""
        stream = self.client
        stream.write(unrecognized_name_alert())
        stream.shutdown_write()
        stream.on_data = lambda data: None  # read and drop, until EOF or the linger ends
        stream.on_eof = stream.on_error = lambda *_: self.close()
        stream.resume_reading()
        self.engine.loop.call_later(REFUSAL_LINGER, self.close)
        log(self.server, self.conn, self.started, "rejected: no route for this name: alert unrecognized_name",
            self.hello)

    # ------------------------------------------------------------------ the backend
    def connect_next(self) -> None:
        """Each available backend once: nothing was sent to the client yet (nginx's proxy_next_upstream)."""
        if self.closed:
            return
        try:
            self.backend = self.balancer.pick(exclude=tuple(self.tried))
        except ServiceUnavailable as error:
            self.backend = None
            return self.finish(f"rejected: {'; '.join([str(error), *self.failures])}")
        Connect(self.engine.loop, self.server.backend_pool, self.backend, None, self.connected,
                tls=False, name=self.backend.name).start()

    def connected(self, link, error: Exception | None) -> None:
        backend = self.backend
        if error is not None:
            self.balancer.report_failure(backend, str(error))
            self.balancer.release(backend)
            self.backend = None
            self.tried.append(backend)
            self.failures.append(str(error))
            return self.connect_next()
        if self.closed:  # cut (shutdown) while connecting
            self.balancer.release(backend)
            self.backend = None
            return link.stream.close()
        self.balancer.report_success(backend)
        self.origin = link.stream
        self.conn.life.go(ConnEvent.TUNNEL)
        Tunnel(self.engine.loop, self.client, self.origin, idle_timeout=self.server.timeouts.tunnel_idle,
               done=self.tunnel_done).start(self.reader.raw)

    def tunnel_done(self, up: int, down: int, ended: str) -> None:
        self.server.stats.add(bytes_in=up, bytes_out=down)
        self.finish(f"up={up} down={down} ended={ended!r}")

    # ------------------------------------------------------------------ the end
    def finish(self, outcome: str) -> None:
        if self.closed:
            return
        log(self.server, self.conn, self.started, outcome, self.hello,
            backend=self.backend.name if self.backend and self.origin else "-")
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.backend is not None:
            self.balancer.release(self.backend)
            self.backend = None
        if self.origin is not None:
            self.origin.close(notify=False)
        self.client.close(notify=False)
        self.engine.connection_closed(self)

    def cut(self) -> None:
        """Graceful shutdown's end: whatever the tunnel was doing, it stops now."""
        self.finish("cut at shutdown")
