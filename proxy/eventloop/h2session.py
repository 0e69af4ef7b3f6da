"""HTTP/2 on a decrypted client connection, driven by readiness: the event loop's ``proxy.modes.h2``.

Theory of operation
-------------------
The threaded engine gives an HTTP/2 connection a thread that owns the ``H2Server``
(``proxy.h2.connection``) and runs each stream's ``Exchange`` in a worker thread; the
two talk through a queue and a wake-up pipe.  Here everything already runs in the
loop's one thread, so the queue disappears: a stream's ``H2LoopExchange`` calls the
``H2Server`` directly, and the connection's bytes go through the same ``Stream``
(``proxy.eventloop.stream``) an HTTP/1.1 session uses.  Read the two side by side::

    threaded (proxy.modes.h2)                  event loop (this module)
    ---------------------------------------    ---------------------------------------------
    H2ConnectionHandler.loop: select, TICK     H2Session.client_data, client_drained, due()
    H2Server.receive -> workers.submit         H2Server.receive -> H2LoopExchange.start
    Stream.body queue, next_piece (blocks)     H2LoopStream.deliver -> exchange.pump_request
    post("headers" | "data" | "end" | "ack")   H2Server.send_headers / queue_data / end_stream / acknowledge
    wait_for_room (the worker blocks)          client_full(): the backend is paused, sent() resumes it
    H2Exchange (an Exchange)                   H2LoopExchange (a LoopExchange: routing, pool, response
                                               parsing, retries and ON_FAILURE are the HTTP/1.1 ones)

**Back-pressure, both ways.**  Request DATA is acknowledged (WINDOW_UPDATE) only after
it was written to the backend, and not while the backend's send buffer is over
``HIGH_WATER``: the client's flow-control window (RFC 9113 §5.2) then shuts, so a slow
backend slows the client down.  Response DATA leaves within the client's windows; a
stream with more than ``STREAM_BUFFER`` bytes queued pauses its backend, and the
bytes leaving (``H2LoopStream.sent``) resume it.  ``pump`` runs only while the
connection's send buffer is below ``HIGH_WATER``: a client that reads slowly holds a
bounded amount here.

**Clocks.**  One ``Clock`` per connection: its ``due()`` is the nearest deadline of the
connection (idle with no stream: ``idle_keepalive``; bytes it does not take: ``send``)
and of every stream's exchange (the backend's answer, the request body's DATA, the
client's window).

**Graceful shutdown** (RFC 9113 §6.8): the engine calls ``drain``; a GOAWAY names the
last stream accepted, later ones are refused, the streams in flight finish, then the
final GOAWAY and the close.
"""

from __future__ import annotations

import time
from functools import partial

from h2.errors import ErrorCodes

from proxy import exchange as rules
from proxy import http1
from proxy.errors import ClientGone, UpstreamError
from proxy.eventloop.loop import Clock
from proxy.eventloop.session import CLOSED, CLOSING, HIGH_WATER, HTTPSession, LoopExchange
from proxy.eventloop.stream import Stream
from proxy.exchange import Phase, Recovery, Step, failure_of
from proxy.h2.connection import STREAM_BUFFER, H2Server, H2Stream
from proxy.h2.response import response_fields, trailer_fields
from proxy.modes.h2 import log_refused, receive
from proxy.http1.framing import BodyKind

OPEN = "open"  # then CLOSING and CLOSED, HTTPSession's


class H2LoopStream(H2Stream):
    """One request stream; its pieces go straight to its exchange."""

    def __init__(self, stream_id: int, down=None) -> None:
        super().__init__(stream_id, down)
        self.exchange: H2LoopExchange | None = None
        self.body: list[tuple] = []  # request pieces not yet written to the backend
        self.buffered = 0  # response bytes queued on the stream, not yet sent
        self.last_body = time.monotonic()  # the last request DATA (the body clock)
        self.last_sent = time.monotonic()  # the last response DATA that left (the window clock)

    def deliver(self, piece: tuple) -> None:
        self.body.append(piece)
        self.last_body = time.monotonic()
        if self.exchange is not None:
            self.exchange.client_data()

    def cancel(self) -> None:
        self.cancelled = True
        self.body.clear()
        if self.exchange is not None and not self.exchange.finished:
            self.exchange.fail(ClientGone("stream reset"))

    def queued(self, size: int) -> None:
        self.buffered += size

    def sent(self, size: int) -> None:
        self.buffered -= size
        self.last_sent = time.monotonic()
        if self.exchange is not None and self.buffered < STREAM_BUFFER:
            self.exchange.client_drained()


class H2Session:
    """One HTTP/2 client connection in the loop (``H2ConnectionHandler``'s twin)."""

    def __init__(self, engine, conn, stream: Stream) -> None:
        self.engine = engine
        self.server = engine.server
        self.conn = conn
        self.client = stream
        self.proto = "https"
        self.hsts = rules.hsts_for(self.server.config.hsts, proto="https")
        self.timeouts = self.server.timeouts
        self.core = H2Server(self.server.limits, hsts=self.hsts, new_stream=H2LoopStream,
                             refused=partial(log_refused, self.server, conn))  # (a lambda would hold self)
        self.state = OPEN
        self.busy = self.again = False  # progress() is running; it must run once more
        self.idle_since = time.monotonic()
        self.clock = Clock(engine.loop, self.due, self.expired)
        stream.on_data, stream.on_eof, stream.on_error = self.client_data, self.client_eof, self.client_error
        stream.on_drain = self.client_drained
        self.exchange = None  # the engine's shutdown looks for an HTTP/1.1 exchange: there is none here

    def start(self) -> None:
        self.core.start()
        self.flush()
        self.client.resume_reading()
        self.clock.check()

    # ------------------------------------------------------------------ from the client
    def client_data(self, data: bytes) -> None:
        if self.state is not OPEN:
            return
        ready = receive(self.server, self.conn, self.core, data)  # proxy.modes.h2's, shared
        if ready is None:
            self.flush()  # h2's GOAWAY
            return self.close_after_sending()
        for stream in ready:
            stream.exchange = H2LoopExchange(self, stream)
            stream.exchange.start()
        if self.core.client_left:
            self.flush()
            return self.close_after_sending()
        self.progress()

    def client_eof(self) -> None:
        if self.state is OPEN:
            self.close()

    def client_error(self, error: Exception) -> None:
        if self.state is not CLOSED:
            self.close()

    # ------------------------------------------------------------------ to the client
    def progress(self) -> None:
        """After anything happened: send what the windows allow, end the connection when it is time.

        Sending can make room on a stream (``H2LoopStream.sent``), which lets its
        exchange read more of the response, which calls here again: that call only
        asks for another round, so ``H2Server.pump`` is never re-entered."""
        if self.busy:
            self.again = True
            return
        self.busy = True
        try:
            self.again = True
            while self.again and self.state is OPEN:
                self.again = False
                self._progress()
        finally:
            self.busy = False

    def _progress(self) -> None:
        core = self.core
        if core.should_go_away(draining=self.server.draining):
            core.go_away()
        if self.client.buffered < HIGH_WATER:
            core.pump()
        if core.streams:
            self.idle_since = time.monotonic()
        elif core.finished:
            core.close_connection()  # the final GOAWAY
            self.flush()
            return self.close_after_sending()
        self.flush()
        if self.clock.timer is None or not core.streams:
            # Only then: each exchange arms the clock for its own waits (LoopExchange), and an
            # armed timer asks due() again within Clock.TICK; due() walks every stream, and
            # asking it on every event would cost O(streams) per frame.
            self.clock.check()

    def flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            self.client.write(data)

    def client_drained(self) -> None:
        if self.state is CLOSING and not self.client.buffered:
            return self.close()
        self.progress()

    def drain(self) -> None:
        """The server is shutting down: the first GOAWAY now (the engine calls this)."""
        self.progress()

    def stream_done(self, stream: H2LoopStream) -> None:
        stream.exchange = None  # the exchange points back at its stream: no cycle left for the collector
        self.core.done(stream)
        self.progress()

    def count_request(self, status: int) -> None:
        """LoopExchange.end's bookkeeping: the bytes are added per connection, at its end."""
        self.server.stats.count_request(status, 0, 0)

    # ------------------------------------------------------------------ closing
    close_after_sending = HTTPSession.close_after_sending  # the same rule: what is queued leaves first

    def cut(self) -> None:
        """Graceful shutdown's end: close now."""
        self.close()

    def close(self, *, abort: bool = False) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        for stream in list(self.core.streams.values()):
            if isinstance(stream, H2LoopStream) and stream.exchange is not None and not stream.exchange.finished:
                stream.exchange.drop_link()
        self.core.cancel_all()
        self.clock.stop()
        self.client.close(notify=not abort)
        self.server.stats.add(bytes_in=self.client.received, bytes_out=self.client.sent)
        self.engine.connection_closed(self)

    # ------------------------------------------------------------------ the clock
    def due(self) -> float | None:
        if self.state is CLOSING:
            return self.client.last_progress + self.timeouts.send
        if self.state is CLOSED:
            return None
        deadlines = []
        if self.client.buffered:
            deadlines.append(self.client.last_progress + self.timeouts.send)
        if not self.core.streams:
            deadlines.append(self.idle_since + self.timeouts.idle_keepalive)
        for stream in self.core.streams.values():
            exchange = getattr(stream, "exchange", None)
            if exchange is not None and not exchange.finished:
                when = exchange.due()
                if when is not None:
                    deadlines.append(when)
        return min(deadlines) if deadlines else None

    def expired(self, now: float) -> None:
        if self.state is CLOSING:
            return self.close()
        if self.client.buffered and self.client.last_progress + self.timeouts.send <= now:
            return self.close()  # the client takes no bytes at all: every stream with it
        if not self.core.streams:
            if self.idle_since + self.timeouts.idle_keepalive <= now:
                self.core.close_connection()  # idle too long: GOAWAY(NO_ERROR), as nginx does
                self.flush()
                return self.close_after_sending()
        for stream in list(self.core.streams.values()):
            exchange = getattr(stream, "exchange", None)
            if exchange is not None and not exchange.finished:
                when = exchange.due()
                if when is not None and when <= now:
                    exchange.expired(now)
        self.progress()


class H2LoopExchange(LoopExchange):
    """A ``LoopExchange`` whose client is one HTTP/2 stream: the body comes from and goes to the stream."""

    def __init__(self, session: H2Session, stream: H2LoopStream) -> None:
        super().__init__(session, stream.down.request)
        self.stream = stream
        self.core = session.core  # request_done stays LoopExchange's: "the backend has the whole body"
        self.ended = False  # END_STREAM (or trailers) queued

    # ------------------------------------------------------------------ SEND_REQUEST
    def await_body(self) -> None:
        if self.request.expect_continue:
            self.core.send_headers(self.stream, [(b":status", b"100")])  # RFC 9113 §8.1: a 1xx HEADERS
        self.stream.last_body = time.monotonic()

    def pump_request(self) -> None:
        """The stream's DATA to the backend (re-chunked when its length is unknown), acknowledged once written."""
        stream, out = self.stream, self.link.stream
        chunked = self.request.framing.kind is BodyKind.CHUNKED
        while stream.body:
            if out.buffered > HIGH_WATER:  # the backend is slower: no WINDOW_UPDATE until it takes more
                self.client_paused = True
                return
            piece = stream.body.pop(0)
            if piece[0] == "end":
                if chunked:
                    out.write(http1.encode_last_chunk(piece[1]))  # trailers: downgrade_trailers filtered them
                self.request_done = True
                return self.request_sent()
            _, data, flow_length = piece
            if data:  # an empty chunk would be the last chunk: never write one mid-body
                out.write(http1.encode_chunk(data) if chunked else data)
            self.core.acknowledge(stream, flow_length)  # consumed: the client may send more
        self.session.progress()

    # client_data is LoopExchange's: new DATA on the stream is pumped while the request is being sent

    def backend_drained(self) -> None:
        if self.client_paused and self.phase.phase is Phase.SEND_REQUEST:
            self.client_paused = False  # acknowledging again opens the client's window (no socket to resume)
            self.pump_request()

    # ------------------------------------------------------------------ AWAIT_RESPONSE, RESPOND
    def relay_interim(self, response: http1.Response) -> None:
        """RFC 9110 §15.2: 1xx responses are forwarded; in HTTP/2, a HEADERS without END_STREAM."""
        out, _ = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                   request_method=self.request.method,
                                                   via=rules.via(response.version))
        self.core.send_headers(self.stream, response_fields(out))
        self.phase.go(Step.INTERIM)
        self.session.progress()

    def start_response(self, response: http1.Response) -> None:
        try:
            out, self.body_mode = http1.prepare_downstream_response(
                response, client_version="HTTP/1.1", request_method=self.request.method,
                via=rules.via(response.version), hsts=self.session.hsts)
            fields = response_fields(out)
        except UpstreamError as error:
            return self.backend_failed(error)
        self.status = response.status
        self.response = response
        self.responding()  # the HEADERS go to h2 now: from here a failure can only reset the stream
        self.ended = self.body_mode == "none"
        self.core.send_headers(self.stream, fields, end=self.ended)
        self.session.progress()

    def send_body(self, event) -> None:
        if event.__class__ is http1.Data:
            if event.data:
                self.stream.queued(len(event.data))
                self.core.queue_data(self.stream, event.data)
        elif not self.ended:
            self.ended = True
            trailers = trailer_fields(http1.prepare_trailers(event.trailers, self.response.headers))
            self.core.end_stream(self.stream, trailers or True)
        self.session.progress()

    def client_full(self) -> bool:
        return self.stream.buffered > STREAM_BUFFER

    def finish(self) -> None:
        self.phase.go(Step.END)
        self.release_link()
        self.end()
        self.session.stream_done(self.stream)

    # ------------------------------------------------------------------ failures
    def fail(self, error: Exception) -> None:
        """``ON_FAILURE`` for one stream: answer on it, reset it, or say nothing (the client left)."""
        if self.finished:
            return
        self.drop_link()
        stream = self.stream
        recovery = self.phase.recovery(failure_of(error))
        self.outcome = str(error) or type(error).__name__
        if recovery is Recovery.CLOSE:
            self.outcome = "client-gone"
            self.core.reset(stream, ErrorCodes.CANCEL)
        elif recovery is Recovery.ABORT:
            # The HTTP/2 form of cutting the connection: only this stream fails, visibly.
            self.outcome = f"aborted: {error}"
            self.core.reset(stream, ErrorCodes.INTERNAL_ERROR)
        else:
            self.status = error.status
            self.core.answer_error(stream, error, request_ended=stream.down.body.ended)  # the client's END_STREAM
        self.end()
        self.session.stream_done(stream)

    # ------------------------------------------------------------------ timeouts
    def client_clocks(self) -> tuple[int, float, float]:
        """LoopExchange's client deadlines, measured on the stream: bytes its window holds back, when
        some last left, when its request DATA last came."""
        stream = self.stream
        return stream.buffered, stream.last_sent, stream.last_body
