"""HTTP on a decrypted client connection, driven by readiness: the event loop's ``proxy.modes.terminate``.

Theory of operation
-------------------
The threaded engine serves a connection as straight-line code: read a head (block),
route, connect (block), send (block), read the response (block), relay it (block).
Here nothing may block, so the same steps become *callbacks*: each runs when bytes
arrive or a socket can take more, does what those bytes allow, and returns.  Where the
thread would have waited, the object simply remembers where it is.  "Where it is" is
not invented here: it is ``proxy.exchange.ExchangePhase``, moved by the same steps
through the same ``TRANSITIONS``, and a failure becomes what ``ON_FAILURE`` says, as in
the threaded engine.  Read the two side by side::

    threaded (proxy.modes.terminate)        event loop (this module)
    --------------------------------        -------------------------------------------
    HTTPConnectionHandler.run               HTTPSession: await_head -> exchange -> await_head
    read_request_head (two clocks)          client_data + parse_head; due(): idle, then head
    Exchange.choose_backend / route         LoopExchange.start (proxy.exchange.route)
    Exchange.connect                        LoopExchange.connect -> connected (LoopPool)
    Exchange.send_request, pump_body        connected, pump_request (proxy.exchange.body_bytes)
    Exchange.read_response_head             read_response, while response is None
    Exchange.relay_response, pump_body      start_response, then read_response streams the body
    the direct copy (Transport.copy_to)     copy_body: a large Content-Length body skips the reader
    HTTPConnectionHandler.recover           LoopExchange.fail (ON_FAILURE, after_answer)
    a timeout on each blocking call         due(): one deadline per connection (loop.Clock)

The parsers are the same objects (``RequestReader``, ``ResponseReader``): bytes are
fed as they arrive and ``next_event`` is asked until it says ``NEED_DATA``, the one
drive loop of ``proxy.drive`` with "read" replaced by "return and wait for the next
callback".

**Back-pressure.**  A body flows from one stream's reader into the other stream's
send buffer.  When that buffer passes ``HIGH_WATER`` the source is paused
(``pause_reading``), and the sink's ``on_drain`` resumes it: a slow client holds at
most a few hundred KiB of a response here, whatever its size; the rest waits in the
backend's socket, and TCP slows the backend down.

**The first byte.**  The response head is written to the client's send buffer, but the
phase turns to RESPOND only when the buffer is first flushed (``on_first_send``), as
the threaded engine's ``Outbox`` does.  Until then the head can be taken back
(``discard_from``) and a failure answered with a clean 502.
"""

from __future__ import annotations

import time

from proxy import exchange as rules  # the decisions every engine shares
from proxy import http1
from proxy.errors import (BadGateway, ClientGone, ClientProtocolError, GatewayTimeout, InvalidUpstreamResponse,
                          ProtocolError, ProxyError, RequestTimeout, StaleConnection, UpstreamError, WriteError)
from proxy.eventloop.loop import Clock
from proxy.eventloop.stream import HIGH_WATER, Stream
from proxy.exchange import ON_FAILURE, ExchangePhase, Failure, Phase, Recovery, Step, failure_of, retryable
from proxy.http1.framing import BodyKind
from proxy.lifecycle import ConnEvent
from proxy.transport import DIRECT_COPY_AT

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PIPELINE_LIMIT = 64 * 1024  # bytes read ahead from a client while its exchange runs; then it is paused
LINGER_TIME, LINGER_IDLE, LINGER_LIMIT = 2.0, 0.2, 1 << 20  # as HTTPConnectionHandler.linger (nginx lingering_*)

HEAD, EXCHANGE, LINGER, CLOSING, CLOSED = "head", "exchange", "linger", "closing", "closed"


class HTTPSession:
    """One client connection's requests, one exchange at a time (``HTTPConnectionHandler``'s twin)."""

    def __init__(self, engine, conn, stream: Stream, *, proto: str, allow_absolute_form: bool = False,
                 allow_connect: bool = False, local_answer=None) -> None:
        """The reader's options are the forward proxy's (``proxy.eventloop.forward``), as in the threaded engine;
        ``local_answer`` (request -> (status, bytes)) answers each request here, no exchange (proxy.modes.redirect)."""
        self.engine = engine
        self.server = engine.server
        self.conn = conn
        self.client = stream
        self.proto = proto
        self.local_answer = local_answer
        self.hsts = rules.hsts_for(self.server.config.hsts, proto=proto)  # RFC 6797: over TLS only
        self.timeouts = self.server.timeouts
        self.reader = http1.RequestReader(self.server.limits.http, allow_absolute_form=allow_absolute_form,
                                          allow_connect=allow_connect)
        self.state = HEAD
        self.exchange: LoopExchange | None = None
        self.idle_until: float | None = None  # clock 1: waiting, idle, for a kept-alive connection's next head
        self.head_until: float | None = None  # clock 2: from a head's first byte, the whole head
        self.linger_until = 0.0
        self.lingered = 0
        self.counted_in = self.counted_out = 0
        self.clock = Clock(engine.loop, self.due, self.expired)
        stream.on_data, stream.on_eof, stream.on_error = self.client_data, self.client_eof, self.client_error
        stream.on_drain = self.client_drained

    # ------------------------------------------------------------------ READ_HEAD
    def start(self) -> None:
        self.await_head()
        self.client.resume_reading()

    def await_head(self) -> None:
        """Wait for the next head: the two clocks of ``HTTPConnectionHandler.read_request_head``."""
        self.state = HEAD
        self.exchange = None
        now = time.monotonic()
        if self.conn.requests and not self.reader.buffered:  # kept alive: wait idle first
            self.idle_until, self.head_until = now + self.timeouts.idle_keepalive, None
        else:
            self.conn.life.go(ConnEvent.BYTES)
            self.idle_until, self.head_until = None, now + self.timeouts.header_read
        self.parse_head()  # a pipelined head may be here already
        if self.state is HEAD:
            self.clock.check()

    def client_data(self, data: bytes) -> None:
        state = self.state
        if state is LINGER:
            self.lingered += len(data)
            self.client.last_read = time.monotonic()
            if self.lingered >= LINGER_LIMIT:
                self.close_after_sending()
            return
        if state is CLOSING or state is CLOSED:
            return
        self.reader.feed(data)
        if state is HEAD:
            if self.head_until is None:  # the first bytes after an idle wait: the head clock starts
                self.conn.life.go(ConnEvent.BYTES)
                self.idle_until, self.head_until = None, time.monotonic() + self.timeouts.header_read
            self.parse_head()
            if self.state is HEAD:
                self.clock.check()  # a head still incomplete: its clock may be the nearest deadline
        else:
            self.exchange.client_data()
            if self.state is EXCHANGE and self.exchange.phase.phase is not Phase.SEND_REQUEST \
                    and self.reader.buffered > PIPELINE_LIMIT:
                self.client.pause_reading()  # read ahead no further until this exchange is done

    def client_eof(self) -> None:
        if self.state is LINGER:
            return self.close_after_sending()
        if self.state is CLOSING or self.state is CLOSED:
            return
        self.reader.feed_eof()
        if self.state is HEAD:
            self.parse_head()  # ConnectionClosed, or a head cut short (400)
        else:
            self.exchange.client_data()  # a body cut short fails; otherwise the answer still goes out

    def client_error(self, error: Exception) -> None:
        """A read or write on the client failed (reset, TLS alert): the client is gone."""
        if self.state is EXCHANGE:
            self.exchange.fail(ClientGone(str(error)))
        elif self.state is not CLOSED:
            self.close()

    def parse_head(self) -> None:
        reader = self.reader
        try:
            event = reader.next_event()
        except ProtocolError as error:
            return self.head_failed(ClientProtocolError.of(error))
        if event is http1.NEED_DATA:
            return
        if event is http1.ConnectionClosed:  # EOF, or the last request said close (RFC 9112 §9.6)
            return self.close_after_sending()
        if event.framing.kind is BodyKind.NONE:
            reader.next_event()  # a request without a body: its EndOfMessage is already here
        self.conn.life.go(ConnEvent.REQUEST)
        self.conn.requests += 1
        self.state = EXCHANGE
        self.idle_until = self.head_until = None
        if self.local_answer is not None:
            return self.answer_locally(event)
        self.exchange = self.new_exchange(event)
        self.exchange.start()

    def new_exchange(self, request: http1.Request) -> "LoopExchange":
        """Hook: the forward proxy returns its own (a destination, or a tunnel), as ``HTTPConnectionHandler``."""
        return LoopExchange(self, request)

    def answer_locally(self, request: http1.Request) -> None:
        """``local_answer``'s response, then close (lingering if a body may still come), as ``RedirectHandler``."""
        started = time.perf_counter()
        status, data = self.local_answer(request)
        self.client.write(data)
        self.count_request(status)
        if self.server.access_log.enabled:
            self.server.access_log.write(rules.access_line(self.conn.client, request, status, len(data), "-",
                                                           self.conn.tls_summary(), time.perf_counter() - started))
        if request.framing.kind is BodyKind.NONE:
            self.close_after_sending()
        else:
            self.linger()  # a body we will not read may still be on its way

    def head_failed(self, error: ProxyError | ClientGone) -> None:
        """A bad, slow or vanished head: ``ON_FAILURE[READ_HEAD, ...]``, as the threaded engine."""
        recovery = ON_FAILURE[Phase.READ_HEAD, failure_of(error)]
        if recovery is Recovery.CLOSE:
            return self.close()
        self.log_error(error)
        self.client.write(rules.error_response(error, hsts=self.hsts))
        if rules.client_may_still_send(error, self.reader.buffered):
            self.linger()
        else:
            self.close_after_sending()

    # ------------------------------------------------------------------ after an exchange
    def exchange_done(self, keep_alive: bool) -> None:
        if self.state is not EXCHANGE:
            return
        if keep_alive and not self.server.draining:
            self.conn.life.go(ConnEvent.KEEP_ALIVE)
            self.await_head()
            self.client.resume_reading()
        else:
            self.close_after_sending()

    def answered(self, plan: str) -> None:
        """An error was answered: "keep" the connection, "linger" then close, or "close"."""
        if plan == "keep":
            self.exchange_done(True)
        elif plan == "linger":
            self.linger()
        else:
            self.close_after_sending()

    # ------------------------------------------------------------------ closing
    def linger(self) -> None:
        """Read and discard what the client still sends, briefly (see ``HTTPConnectionHandler.linger``)."""
        self.conn.life.go(ConnEvent.LINGER)
        self.state = LINGER
        self.lingered = 0
        now = time.monotonic()
        self.linger_until = now + LINGER_TIME
        self.client.last_read = now
        self.client.resume_reading()
        self.clock.check()

    def close_after_sending(self) -> None:
        """Close once the send buffer is empty (the last response, or an error, must get out first)."""
        self.state = CLOSING
        self.client.pause_reading()
        if not self.client.buffered:
            return self.close()
        self.clock.check()

    def client_drained(self) -> None:
        if self.state is CLOSING and not self.client.buffered:
            self.close()
        elif self.state is EXCHANGE:
            self.exchange.client_drained()

    def cut(self) -> None:
        """Graceful shutdown's end (or a connection with nothing in flight): close now."""
        if self.exchange is not None and not self.exchange.finished:
            self.exchange.drop_link()
        self.close()

    def close(self, *, abort: bool = False) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self.clock.stop()
        if abort:
            self.conn.aborted = True  # no close_notify: the client must see the cut (RFC 9112 §9.8)
        self.client.close(notify=not self.conn.aborted)
        self.engine.connection_closed(self)
        self.exchange = None  # it points back at this session: no cycle left for the collector

    # ------------------------------------------------------------------ the clock
    def due(self) -> float | None:
        """The nearest deadline of what this connection waits for now (see ``loop.Clock``)."""
        state = self.state
        if state is HEAD:
            return self.head_until if self.head_until is not None else self.idle_until
        if state is EXCHANGE:
            return self.exchange.due()
        if state is LINGER:
            return min(self.linger_until, self.client.last_read + LINGER_IDLE)
        if state is CLOSING:
            return self.client.last_progress + self.timeouts.send
        return None

    def expired(self, now: float) -> None:
        state = self.state
        if state is HEAD:
            if self.head_until is not None and self.reader.buffered:
                # part of a head arrived, too slowly: say so (nginx answers 408 too)
                return self.head_failed(RequestTimeout(
                    f"request head not received within {self.timeouts.header_read:g}s"))
            return self.close()  # an idle connection is closed without a word
        if state is EXCHANGE:
            return self.exchange.expired(now)
        if state is LINGER:
            return self.close_after_sending()
        if state is CLOSING:
            return self.close()

    # ------------------------------------------------------------------ bookkeeping
    def count_request(self, status: int) -> None:
        client = self.client
        self.server.stats.count_request(status, client.received - self.counted_in, client.sent - self.counted_out)
        self.counted_in, self.counted_out = client.received, client.sent

    def log_error(self, error: ProxyError) -> None:
        self.server.access_log.write(rules.error_line(self.conn.client, error, self.conn.tls_summary()))
        self.server.stats.statuses[error.status] += 1


class LoopExchange:
    """One request and its response, driven by events (``proxy.modes.terminate.Exchange``'s twin)."""

    def __init__(self, session: HTTPSession, request: http1.Request) -> None:
        self.session = session
        self.server = session.server
        self.timeouts = session.timeouts
        self.client = session.client
        self.request = request
        self.phase = ExchangePhase(Phase.READ_HEAD)
        self.phase.go(Step.HEAD)  # the session read the head: the exchange starts at ROUTE
        self.started = time.perf_counter()
        self.status = 0
        self.response_bytes = 0
        self.outcome = ""
        self.request_done = request.framing.kind is BodyKind.NONE
        self.balancer = self.backend = self.pool_name = None
        self.link = None  # the BackendLink, while the exchange holds one
        self.fresh = False  # the retry's connection: never a pooled one
        self.head = b""
        self.response: http1.Response | None = None
        self.body_mode = "none"
        self.keep_alive = False
        self.mark = 0  # where the response starts in the client's send buffer (discard_from)
        self.client_paused = self.backend_paused = False
        self.finished = False

    # ------------------------------------------------------------------ ROUTE, CONNECT
    def start(self) -> None:
        try:
            self.pool_name = rules.route(self.server.router, self.request, request_done=self.request_done)
            self.balancer = self.server.balancers[self.pool_name]
            self.backend = self.balancer.pick()
        except ProxyError as error:
            return self.fail(error)
        self.phase.go(Step.BACKEND)
        self.head = rules.upstream_head(self.request, client_ip=self.session.conn.address[0],
                                        proto=self.session.proto)
        self.connect()

    def connect(self) -> None:
        server_name = rules.sni_for_backend(self.server.pools_by_name[self.pool_name], self.request)
        self.session.engine.pool.acquire(self.backend, server_name=server_name, fresh=self.fresh, done=self.connected)

    def connected(self, link, error: Exception | None) -> None:
        if self.finished:  # the client went away while we connected
            if link is not None:
                link.close()
            return
        if error is not None:
            self.balancer.report_failure(self.backend, str(error))
            return self.fail(error)
        self.link = link
        stream = link.stream
        stream.on_data, stream.on_eof, stream.on_error = self.backend_data, self.backend_eof, self.backend_error
        stream.on_drain = self.backend_drained
        stream.resume_reading()
        self.phase.go(Step.CONNECTED)
        # ------------------------------------------------------------ SEND_REQUEST
        stream.write(self.head)
        if self.request_done:
            return self.request_sent()
        self.await_body()
        self.pump_request()  # what the client sent with its head
        self.session.clock.check(self.due())

    def await_body(self) -> None:
        """The head is with the backend; the body may come (RFC 9110 §10.1.1: 100 Continue if asked)."""
        if self.request.expect_continue:
            self.client.write(CONTINUE)
        self.client.last_read = time.monotonic()  # the body clock starts now
        self.client.resume_reading()

    def pump_request(self) -> None:
        """The client's body to the backend, as far as it has arrived (``drive.pump_body``'s loop)."""
        reader, out = self.session.reader, self.link.stream
        chunked = self.request.framing.kind is BodyKind.CHUNKED
        while True:
            try:
                event = reader.next_event()
            except ProtocolError as error:
                return self.fail(ClientProtocolError.of(error))
            if event is http1.NEED_DATA:
                return
            out.write(rules.body_bytes(event, chunked=chunked, headers=self.request.headers))
            if event.__class__ is http1.EndOfMessage:
                self.request_done = True
                return self.request_sent()
            if out.buffered > HIGH_WATER:  # the backend is slower than the client: stop reading it
                self.client_paused = True
                self.client.pause_reading()
                self.session.clock.check(self.due())
                return

    def client_data(self) -> None:
        """The session fed the reader: a body to pump, or bytes to keep for the next request."""
        if self.phase.phase is Phase.SEND_REQUEST and self.link is not None and not self.request_done:
            self.pump_request()

    def backend_drained(self) -> None:
        if self.client_paused and self.phase.phase is Phase.SEND_REQUEST:
            self.client_paused = False
            self.client.resume_reading()
            self.pump_request()

    # ------------------------------------------------------------------ AWAIT_RESPONSE, RESPOND
    def request_sent(self) -> None:
        self.phase.go(Step.SENT)
        self.link.reader.expect_response_to(self.request.method)
        self.link.stream.last_read = time.monotonic()  # the backend's clock starts now
        self.session.clock.check(self.due())
        self.read_response()  # the backend may have answered already

    def backend_data(self, data: bytes) -> None:
        reader = self.link.reader
        if self.response is not None:
            remaining = reader.body_remaining()  # a Content-Length body with nothing buffered
            if remaining is not None and remaining >= max(DIRECT_COPY_AT, len(data)):
                return self.copy_body(data, remaining)
        reader.feed(data)
        if self.phase.phase is not Phase.SEND_REQUEST:
            self.read_response()

    def copy_body(self, data: bytes, remaining: int) -> None:
        """A large Content-Length body goes to the client past the reader (``proxy.drive.pump_body``'s direct copy).

        Fed to the reader, each piece would be copied into its buffer and copied out again
        as a ``Data``: two copies of every 64 KiB read that this path does not make.  Only
        a piece that is all body comes here (``backend_data``); one that runs past the end
        goes through the reader, which catches a backend that sent more than it framed
        (``backend_reusable``).  The reader still decides where the body ends: it is told
        how many bytes went by (``body_received_directly``)."""
        self.link.reader.body_received_directly(len(data))
        self.send_body(http1.Data(data))
        if self.finished:  # the client went away as it was sent
            return
        self.response_bytes += len(data)
        if len(data) < remaining and self.client_full():
            return self.pause_backend()
        self.read_response()  # the EndOfMessage, once the body is complete

    def backend_eof(self) -> None:
        self.link.reader.feed_eof()
        if self.phase.phase is not Phase.SEND_REQUEST:
            self.read_response()

    def backend_error(self, error: Exception) -> None:
        if isinstance(error, WriteError):
            if self.phase.phase is Phase.SEND_REQUEST or self.response is None:
                return self.backend_failed(StaleConnection(str(error)))
            return self.backend_failed(BadGateway(f"backend {self.backend.name} failed: {error}"))
        self.backend_failed(rules.backend_read_failure(error, self.backend.name, before_head=self.response is None,
                                                       reused=self.link.reused))

    def read_response(self) -> None:
        """Parse what the backend sent: 1xx heads, the final head, then the body (``next_event`` loop)."""
        link = self.link
        reader = link.reader
        while not self.finished:
            try:
                event = reader.next_event()
            except ProtocolError as error:
                return self.backend_failed(rules.backend_read_failure(
                    error, self.backend.name, before_head=self.response is None, reused=link.reused))
            if event is http1.NEED_DATA:
                return
            if self.response is not None:  # the body
                self.send_body(event)
                if event.__class__ is http1.EndOfMessage:
                    return self.finish()
                self.response_bytes += len(event.data)
                if self.client_full():  # the client is slower than the backend
                    return self.pause_backend()
                continue
            if event is http1.ConnectionClosed:
                return self.backend_failed(StaleConnection("closed before responding"))
            if event.__class__ is http1.EndOfMessage:  # the end of a 1xx
                reader.expect_response_to(self.request.method)
                continue
            if event.status == 101:  # the proxy strips Upgrade, so a switch was never asked for
                return self.backend_failed(InvalidUpstreamResponse(
                    f"backend {self.backend.name} switched protocols (101) unasked"))
            if event.status < 200:
                self.relay_interim(event)
                continue
            self.balancer.report_success(self.backend)
            self.start_response(event)

    def send_body(self, event) -> None:
        """One body event (``Data`` or the ``EndOfMessage``) to the client, framed as the response says."""
        self.client.write(rules.body_bytes(event, chunked=self.body_mode == "chunked", headers=self.response.headers))

    def client_full(self) -> bool:
        return self.client.buffered > HIGH_WATER

    def pause_backend(self) -> None:
        """Read the backend no further until the client has taken some of the response."""
        if self.link is None:  # sending failed on the spot (an HTTP/2 connection that broke): nothing to pause
            return
        self.backend_paused = True
        self.link.stream.pause_reading()
        self.session.clock.check(self.due())

    def relay_interim(self, response: http1.Response) -> None:
        """RFC 9110 §15.2: a proxy forwards 1xx responses (except to HTTP/1.0 clients)."""
        if self.request.version == "HTTP/1.1":
            out, _ = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                       request_method=self.request.method,
                                                       via=rules.via(response.version))
            self.client.write(http1.serialize_response_head(out))
        self.phase.go(Step.INTERIM)

    def start_response(self, response: http1.Response) -> None:
        request, server = self.request, self.server
        try:
            out, self.body_mode = http1.prepare_downstream_response(
                response, client_version=request.version, request_method=request.method,
                via=rules.via(response.version), hsts=self.session.hsts)
        except UpstreamError as error:
            return self.backend_failed(error)
        self.keep_alive = rules.client_keep_alive(
            request, request_done=self.request_done, body_mode=self.body_mode, draining=server.draining,
            requests=self.session.conn.requests, max_requests=server.limits.max_requests_per_connection)
        if not self.keep_alive:
            out.headers.set("Connection", "close")
        self.status = response.status
        self.response = response
        self.mark = self.client.buffered
        self.client.on_first_send = self.responding
        self.client.write(http1.serialize_response_head(out))

    def responding(self) -> None:
        """The first byte of the response is leaving: from now on a failure can only abort."""
        self.phase.go(Step.FIRST_BYTE)

    def client_drained(self) -> None:
        if self.backend_paused and self.response is not None and not self.finished:
            self.backend_paused = False
            self.link.stream.resume_reading()
            self.read_response()  # what the reader already holds

    def finish(self) -> None:
        """The response is complete: give the backend connection back, log, and go on."""
        if self.client.on_first_send is not None:
            self.client.flush()  # the whole response was still buffered: it leaves now (and RESPOND begins)
            if self.finished:  # that write failed: the client is gone (fail has run)
                return
        self.phase.go(Step.END)
        self.release_link()
        self.end()
        self.session.exchange_done(self.keep_alive)

    def release_link(self) -> None:
        """The response is complete: the backend connection goes back to the pool, if it can be trusted."""
        link, self.link = self.link, None
        # Leftover bytes after the response mean the backend sent more than it framed:
        # that connection can never be trusted with another request.
        reusable = rules.backend_reusable(self.response, link.reader.take_buffered())
        if reusable:
            self.server.backend_pool.remember_session(link)
        self.session.engine.pool.release(link, reusable=reusable)

    # ------------------------------------------------------------------ failures
    def backend_failed(self, error: Exception) -> None:
        """A backend failure: retry a stale connection once if allowed, else ``fail`` (``Exchange.run``'s except)."""
        link = self.link
        if isinstance(error, StaleConnection) and link is not None:
            self.drop_link()
            may_retry = not self.fresh and retryable(self.request.method, has_body=self.request.framing.kind
                                                     is not BodyKind.NONE, reused_connection=link.reused)
            if self.phase.recovery(Failure.BACKEND_STALE, retryable=may_retry) is Recovery.RETRY:
                self.phase.go(Step.RETRY)
                self.fresh = True
                self.response = None
                return self.connect()
            if not link.reused:  # a fresh connection: the backend's fault, not a keep-alive race
                self.balancer.report_failure(self.backend, str(error))
            error = BadGateway(f"backend {self.backend.name} closed the connection: {error}")
        elif isinstance(error, GatewayTimeout) and self.response is None:
            self.balancer.report_failure(self.backend, str(error))  # nginx counts timeouts as failures too
        self.fail(error)

    def drop_link(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def fail(self, error: Exception) -> None:
        """Do what ``ON_FAILURE`` says for ``error`` in this phase (``HTTPConnectionHandler.recover``)."""
        if self.finished:
            return
        self.drop_link()
        recovery = self.phase.recovery(failure_of(error))
        self.outcome = str(error) or type(error).__name__
        session = self.session
        if recovery is Recovery.CLOSE:
            self.outcome = "client-gone"
            self.end()
            return session.close()
        if recovery is Recovery.ABORT:
            self.outcome = f"aborted: {error}"
            self.end()
            return session.close(abort=True)
        # ANSWER or LINGER: the response never left, so take back any head written for it
        self.client.discard_from(self.mark if self.response is not None else self.client.buffered)
        self.client.on_first_send = None
        self.status = error.status
        self.end()
        plan = rules.after_answer(recovery, error, request_done=self.request_done)
        self.client.write(rules.error_response(error, hsts=session.hsts))
        session.answered(plan)

    def end(self) -> None:
        """Once per exchange: give the backend back to the balancer, count and log."""
        self.finished = True
        if self.backend is not None:
            self.balancer.release(self.backend)
        self.session.count_request(self.status or 0)
        if self.server.access_log.enabled:
            conn = self.session.conn
            self.server.access_log.write(rules.access_line(
                conn.client, self.request, self.status or 0, self.response_bytes,
                self.backend.name if self.backend else "-", conn.tls_summary(),
                time.perf_counter() - self.started, self.outcome))

    # ------------------------------------------------------------------ timeouts
    def due(self) -> float | None:
        """The nearest deadline of what this exchange waits for (see ``loop.Clock``)."""
        timeouts = self.timeouts
        deadlines = self.client_deadlines()
        link = self.link
        if link is None:
            return min(deadlines) if deadlines else None  # connecting: the connect has its own timer
        if self.phase.phase is Phase.SEND_REQUEST:
            if link.stream.buffered:
                deadlines.append(link.stream.last_progress + timeouts.backend_read)
        elif not self.backend_paused:
            deadlines.append(link.stream.last_read + timeouts.backend_read)
        return min(deadlines) if deadlines else None

    def client_clocks(self) -> tuple[int, float, float]:
        """The client's side, measured: bytes it has not taken yet, when it last took some, when its body last came.

        (An HTTP/2 stream measures its own: ``proxy.eventloop.h2session``.)"""
        client = self.client
        return client.buffered, client.last_progress, client.last_read

    def client_deadlines(self) -> list[float]:
        """The client must keep taking bytes (nginx send_timeout) and keep sending the body (body_read)."""
        deadlines = []
        unsent, last_progress, last_body = self.client_clocks()
        if unsent:
            deadlines.append(last_progress + self.timeouts.send)
        if self.link is not None and self.phase.phase is Phase.SEND_REQUEST and not self.client_paused:
            deadlines.append(last_body + self.timeouts.body_read)
        return deadlines

    def client_expired(self, now: float) -> bool:
        """Fail the exchange if one of ``client_deadlines`` passed; True if it did."""
        timeouts = self.timeouts
        unsent, last_progress, last_body = self.client_clocks()
        if unsent and last_progress + timeouts.send <= now:
            self.fail(ClientGone(f"the client took no bytes for {timeouts.send:g}s"))
            return True
        if self.link is not None and self.phase.phase is Phase.SEND_REQUEST and not self.client_paused \
                and last_body + timeouts.body_read <= now:
            self.fail(RequestTimeout(f"request body stalled for {timeouts.body_read:g}s"))
            return True
        return False

    def expired(self, now: float) -> None:
        timeouts, link = self.timeouts, self.link
        if self.client_expired(now) or link is None:
            return
        if self.phase.phase is Phase.SEND_REQUEST:
            if link.stream.buffered and link.stream.last_progress + timeouts.backend_read <= now:
                return self.backend_failed(GatewayTimeout(f"backend {self.backend.name} stopped reading the request"))
        elif not self.backend_paused and link.stream.last_read + timeouts.backend_read <= now:
            if self.response is None:
                return self.backend_failed(GatewayTimeout(
                    f"backend {self.backend.name} did not answer within {timeouts.backend_read:g}s"))
            return self.backend_failed(GatewayTimeout(
                f"backend {self.backend.name} stalled mid-body for {timeouts.backend_read:g}s"))
        self.session.clock.check(self.due())
