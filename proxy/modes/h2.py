"""HTTP/2 on the client leg (threaded engine): one connection, many streams, an HTTP/1.1 exchange each.

Theory of operation
-------------------
``proxy.modes.terminate.handle`` sends a connection here when ALPN chose ``h2`` (RFC 9113
§3.2).  The `h2` library does the framing, HPACK and flow control, and
``proxy.h2.connection.H2Server`` the proxy's decisions on top of it (the downgrade of
each request, stream errors, windows, GOAWAY), shared with the event loop
(``proxy.eventloop.h2session``).  Neither is thread-safe, so exactly one thread, the
connection's own, ever touches the ``H2Server``.  Each request stream is one ``Exchange`` (``proxy.modes.terminate``),
run in a worker thread of a small per-connection pool, against the same HTTP/1.1
backend pool, with the same routing, upstream head, response parsing and downstream
rules as an HTTP/1.1 request::

    client ══TLS══▶ connection thread ──(owns H2Connection)──────────────────────┐
                     │ select(socket, wake pipe)                                 │
                     │ RequestReceived ─▶ downgrade_request ─▶ Stream ─▶ worker ─┼─▶ backend (HTTP/1.1)
                     │ DataReceived    ─▶ BodyCounter ─▶ stream.body queue ──────┤
                     │                                                           │
                     └◀── outbox queue + one byte on the wake pipe ◀── worker: headers, data, end,
                          send_headers / send_data (within the client's window)      reset, ack

* **Streams share threads this way**: at most ``max_concurrent_streams`` workers per
  connection (SETTINGS_MAX_CONCURRENT_STREAMS: 100, HAProxy's default; nginx's
  ``http2_max_concurrent_streams`` is 128); h2 itself refuses a client that opens more.
  A worker never calls h2: it puts what it wants sent on ``outbox`` and writes a byte to
  the wake pipe, so the connection thread's ``select`` returns.
* **Malformed requests are stream errors**: RFC 9113 §8.1.1, "Malformed requests or
  responses that are detected MUST be treated as a stream error (Section 5.4.2) of type
  PROTOCOL_ERROR": ``RST_STREAM(PROTOCOL_ERROR)``, nothing forwarded.  A request that is
  well-formed but over a limit (413, 414, 431) or a method not served here (501) gets
  that status on its stream, as HTTP/1.1 would.  Workers for new streams start only
  after every frame of one read was looked at, so DATA beyond content-length that
  arrived with its HEADERS stops the request before the backend hears of it.
* **Flow control both ways**: response DATA is sent only within the client's window
  (``local_flow_control_window``); a worker buffers at most ``STREAM_BUFFER`` bytes, then
  waits (the client's WINDOW_UPDATE lets the connection thread send, which wakes it).
  Request DATA is acknowledged (``acknowledge_received_data``) only after the worker
  wrote it to the backend, so a slow backend slows the client down instead of filling
  memory.
* **Shutdown and timeouts**: when the server drains, a GOAWAY naming the last stream
  accepted goes out at once (RFC 9113 §6.8), later streams are refused
  (REFUSED_STREAM), the streams in flight finish, then a final GOAWAY and close.  A
  connection with no stream for ``idle_keepalive`` seconds says GOAWAY and closes.  A
  connection error (h2 raises) sends h2's GOAWAY and closes.  PING is answered by h2.
  The connection counts as FORWARDING (``proxy.lifecycle``) from its first frame: it
  ends itself with a GOAWAY instead of being cut by the server's shutdown.
* **Failures per stream** follow ``proxy.exchange.ON_FAILURE`` as for HTTP/1.1: an
  answer (502, 504, 404 ...) while nothing of the response was sent; after that the
  HTTP/2 form of cutting the connection, ``RST_STREAM(INTERNAL_ERROR)``, so the client
  sees that stream fail, never a complete wrong response.

The stream's request carries version "HTTP/2" (what the client spoke): the access log
says so, and Via says ``2 tlsproxy`` (RFC 9110 §7.6.3); the backend gets HTTP/1.1.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import h2.exceptions
from h2.errors import ErrorCodes

from proxy import exchange as rules
from proxy import http1
from proxy.drive import next_event
from proxy.errors import (ClientGone, GatewayTimeout, ProtocolError, ProxyError, ReadError, ReadTimeout,
                          RequestTimeout, StaleConnection, UpstreamError, WriteError, WriteTimeout)
from proxy.exchange import Recovery, Step, failure_of, via
from proxy.h2.connection import STREAM_BUFFER, H2Server, H2Stream
from proxy.h2.response import response_fields, trailer_fields
from proxy.http1.framing import BodyKind
from proxy.lifecycle import ConnEvent, ConnState
from proxy.modes.terminate import Exchange
from proxy.transport import Outbox, wake

TICK = 0.25  # seconds: how often the connection thread looks at the clocks and at server.draining
RESET = object()  # on a stream's body queue: the stream is gone


def handle(server, conn) -> None:
    H2ConnectionHandler(server, conn).run()


# The connection's side of one read and of a refusal: the same in both engines
# (proxy.eventloop.h2session calls these too).
def receive(server, conn, core: H2Server, data: bytes) -> list[H2Stream] | None:
    """``data`` through the ``H2Server``: the streams to serve, or None after a connection error.

    The first frame makes the connection FORWARDING (``proxy.lifecycle``): from then on it
    ends itself with a GOAWAY instead of being cut at shutdown.  A connection error is
    logged; h2 has queued its GOAWAY, which the caller flushes before closing."""
    if conn.state is ConnState.IDLE:
        conn.life.go(ConnEvent.BYTES)
        conn.life.go(ConnEvent.REQUEST)
    try:
        ready = core.receive(data)
    except h2.exceptions.ProtocolError as error:
        server.access_log.write(f"{conn.client} HTTP/2 connection error: {error} {conn.tls_summary()}")
        return None
    conn.requests = core.requests
    return ready


def log_refused(server, conn, error: ProxyError) -> None:
    """A request refused at its head or mid-body (``H2Server.refuse``): the log line and the count."""
    server.access_log.write(rules.error_line(conn.client, error, conn.tls_summary()))
    server.stats.statuses[error.status] += 1


class Stream(H2Stream):
    """One request stream: its protocol state (``H2Stream``), and what its worker and the connection thread share."""

    def __init__(self, stream_id: int, down=None) -> None:
        super().__init__(stream_id, down)
        self.body: queue.SimpleQueue = queue.SimpleQueue()  # ("data", bytes, flow length) | ("end", trailers) | RESET
        self.cond = threading.Condition()
        self.buffered = 0  # response bytes queued, not yet sent (the worker waits above STREAM_BUFFER)
        self.backend_conn = None  # to wake a worker blocked on the backend when the stream dies

    # ------------------------------------------------------------------ the worker's side
    def next_piece(self, timeout: float):
        try:
            piece = self.body.get(timeout=timeout)
        except queue.Empty:
            raise RequestTimeout(f"request body stalled for {timeout:g}s") from None
        if piece is RESET:
            raise ClientGone("stream reset")
        return piece

    def wait_for_room(self, size: int, timeout: float) -> None:
        with self.cond:
            while self.buffered >= STREAM_BUFFER and not self.cancelled:
                if not self.cond.wait(timeout):
                    raise ClientGone(f"the client's flow-control window stayed shut for {timeout:g}s")
            if self.cancelled:
                raise ClientGone("stream reset")
            self.buffered += size

    # ------------------------------------------------------------------ H2Stream's hooks (the connection thread)
    def deliver(self, piece: tuple) -> None:
        self.body.put(piece)

    def queued(self, size: int) -> None:
        with self.cond:
            self.buffered += size

    def sent(self, size: int) -> None:
        with self.cond:
            self.buffered -= size
            self.cond.notify_all()

    def cancel(self) -> None:
        self.cancelled = True
        self.body.put(RESET)
        with self.cond:
            self.cond.notify_all()
        if self.backend_conn is not None:
            wake(self.backend_conn.sock)  # a worker blocked reading the backend returns now


class H2ConnectionHandler:
    """One HTTP/2 connection: its thread owns the ``H2Server`` (and h2's state); workers run the streams."""

    def __init__(self, server, conn) -> None:
        self.server = server
        self.conn = conn
        self.sock = conn.sock
        self.proto = "https"
        self.hsts = rules.hsts_for(server.config.hsts, proto="https")
        self.timeouts = server.timeouts
        self.limits = server.limits
        self.core = H2Server(self.limits, hsts=self.hsts, new_stream=Stream,
                             refused=lambda error: log_refused(server, conn, error))
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()  # (stream, kind, payload) from workers
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_w.setblocking(False)
        self.workers = ThreadPoolExecutor(max_workers=self.limits.max_concurrent_streams,
                                          thread_name_prefix=f"h2-{conn.client}")
        self.received = self.sent_bytes = 0

    # ================================================================== the connection thread
    def run(self) -> None:
        try:
            self.sock.settimeout(self.timeouts.send)
            self.core.start()
            self.flush()
            self.loop()
        except (OSError, h2.exceptions.ProtocolError):
            pass  # the client is gone, or broke HTTP/2 (h2's GOAWAY was flushed if it could be)
        finally:
            self.close()

    def loop(self) -> None:
        core = self.core
        idle_since = time.monotonic()
        while True:
            if core.should_go_away(draining=self.server.draining):
                core.go_away()
            if not core.streams:
                if core.finished or time.monotonic() - idle_since > self.timeouts.idle_keepalive:
                    core.close_connection()  # the final GOAWAY; or idle too long: GOAWAY(NO_ERROR), as nginx
                    self.flush()
                    return
            if self.sock.pending():  # TLS bytes already decrypted: select() would not see them
                readable = [self.sock]
            else:
                readable, _, _ = select.select([self.sock, self.wake_r], [], [], TICK)
            if self.wake_r in readable:
                self.wake_r.recv(4096)
            if self.sock in readable and not self.read_client():
                return
            self.apply_outbox()
            core.pump()
            self.flush()
            if core.streams:
                idle_since = time.monotonic()

    def read_client(self) -> bool:
        """One read from the client, every event in it handled; False when the client is gone."""
        data = self.sock.recv(65536)
        if not data:
            return False
        self.received += len(data)
        ready = receive(self.server, self.conn, self.core, data)
        if ready is None:
            self.flush()  # h2's GOAWAY
            return False
        for stream in ready:
            self.workers.submit(self.serve_stream, stream)
        return not self.core.client_left

    # ------------------------------------------------------------------ what workers asked for
    def post(self, stream: Stream, kind: str, payload=None) -> None:
        """Called by a worker: queue an action for the connection thread and wake it."""
        self.outbox.put((stream, kind, payload))
        try:
            self.wake_w.send(b"\0")
        except OSError:  # the pipe is full (it is awake anyway) or closed (the connection is gone)
            pass

    def apply_outbox(self) -> None:
        core = self.core
        while True:
            try:
                stream, kind, payload = self.outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "headers":
                fields, end = payload
                core.send_headers(stream, fields, end=end)
            elif kind == "data":
                core.queue_data(stream, payload)
            elif kind == "end":
                core.end_stream(stream, payload or True)
            elif kind == "ack":
                core.acknowledge(stream, payload)
            elif kind == "answer":
                error, request_done = payload
                core.answer_error(stream, error, request_ended=request_done)
            elif kind == "reset":
                core.reset(stream, payload)
            elif kind == "done":
                core.done(stream)

    # ------------------------------------------------------------------ the connection's end
    def flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            self.sock.sendall(data)  # the socket's timeout is timeouts.send
            self.sent_bytes += len(data)

    def close(self) -> None:
        self.core.cancel_all()
        self.workers.shutdown(wait=True)  # bounded: every worker was woken
        self.wake_r.close()
        self.wake_w.close()
        self.server.stats.add(bytes_in=self.received, bytes_out=self.sent_bytes)

    # ================================================================== a worker
    def serve_stream(self, stream: Stream) -> None:
        started = time.perf_counter()
        exchange = H2Exchange(self, stream)
        try:
            exchange.run()
        except (ProxyError, ClientGone, StaleConnection) as error:
            self.recover(exchange, ClientGone("stream reset") if stream.cancelled else error)
        except Exception as error:  # a bug must not leave the stream hanging
            exchange.outcome = f"internal error: {error!r}"
            self.post(stream, "reset", ErrorCodes.INTERNAL_ERROR)
        finally:
            exchange.log(time.perf_counter() - started)
            self.post(stream, "done")

    def recover(self, exchange: "H2Exchange", error: BaseException) -> None:
        """``ON_FAILURE`` for one stream: answer on it, reset it, or say nothing (the client left)."""
        stream = exchange.stream
        recovery = exchange.phase.recovery(failure_of(error))
        exchange.outcome = str(error) or type(error).__name__
        if recovery is Recovery.CLOSE:
            exchange.outcome = "client-gone"
            self.post(stream, "reset", ErrorCodes.CANCEL)
            return
        if recovery is Recovery.ABORT:
            # The HTTP/2 form of cutting the connection: only this stream fails, visibly.
            exchange.outcome = f"aborted: {error}"
            self.post(stream, "reset", ErrorCodes.INTERNAL_ERROR)
            return
        exchange.status = error.status
        self.post(stream, "answer", (error, exchange.request_done))  # H2Server.answer_error

    def count_request(self, status: int) -> None:
        """Exchange.log's bookkeeping: the bytes are added per connection, at its end."""
        self.server.stats.count_request(status, 0, 0)


class H2Exchange(Exchange):
    """An ``Exchange`` whose client is one HTTP/2 stream: the body comes from and goes to the stream."""

    def __init__(self, handler: H2ConnectionHandler, stream: Stream) -> None:
        super().__init__(handler, stream.down.request)
        self.stream = stream
        self.request_done = stream.down.body.ended

    def connect(self, balancer, backend, *, fresh: bool):
        conn = super().connect(balancer, backend, fresh=fresh)
        self.stream.backend_conn = conn
        if self.stream.cancelled:
            raise ClientGone("stream reset")
        return conn

    def read_response_head(self, conn) -> http1.Response:
        """As ``Exchange``'s, except that a read the stream's reset cut short is the client's doing.

        ``Stream.cancel`` wakes this worker by shutting the backend socket down; the read
        then fails like a backend that closed.  Reported as the backend's failure, one
        client resetting one stream (a browser navigating away) would eject a healthy
        backend for every client: so it is ``ClientGone``, and the backend is not blamed."""
        try:
            return super().read_response_head(conn)
        except (ProxyError, StaleConnection):
            if self.stream.cancelled:
                raise ClientGone("stream reset") from None
            raise

    # ------------------------------------------------------------------ SEND_REQUEST
    def send_request(self, conn, head: bytes) -> None:
        """The head, then the stream's DATA as it arrives (re-chunked when the length is unknown)."""
        request, stream = self.request, self.stream
        timeouts = self.server.timeouts
        to_backend = Outbox(conn.transport, timeouts.backend_read)
        to_backend.write(head)
        chunked = request.framing.kind is BodyKind.CHUNKED
        try:
            if request.framing.kind is not BodyKind.NONE:
                if request.expect_continue:
                    self.handler.post(stream, "headers", ([(b":status", b"100")], False))
                while True:
                    if stream.body.empty():
                        to_backend.flush()  # never hold bytes while waiting
                    piece = stream.next_piece(timeouts.body_read)
                    if piece[0] == "end":
                        if chunked:
                            to_backend.write(http1.encode_last_chunk(piece[1]))  # trailers: downgrade_trailers
                        break
                    _, data, flow_length = piece
                    if data:  # an empty chunk would be the last chunk: never write one mid-body
                        to_backend.write(http1.encode_chunk(data) if chunked else data)
                    self.handler.post(stream, "ack", flow_length)  # consumed: the client may send more
            to_backend.flush()
        except (WriteTimeout, WriteError) as error:
            if stream.cancelled:  # the reset shut the backend socket: see read_response_head
                raise ClientGone("stream reset") from None
            if isinstance(error, WriteTimeout):
                raise GatewayTimeout(f"backend {self.backend.name} stopped reading the request") from None
            raise StaleConnection(str(error)) from None
        self.request_done = True

    # ------------------------------------------------------------------ AWAIT_RESPONSE, RESPOND
    def relay_interim(self, conn, response: http1.Response) -> None:
        """RFC 9110 §15.2: 1xx responses are forwarded; in HTTP/2, a HEADERS without END_STREAM."""
        end = self.backend_event(conn)
        assert isinstance(end, http1.EndOfMessage)
        out, _ = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                   request_method=self.request.method, via=via(response.version))
        self.handler.post(self.stream, "headers", (response_fields(out), False))
        conn.reader.expect_response_to(self.request.method)

    def relay_response(self, conn, response: http1.Response) -> None:
        handler, stream = self.handler, self.stream
        try:
            out, body_mode = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                               request_method=self.request.method,
                                                               via=via(response.version), hsts=handler.hsts)
            fields = response_fields(out)
        except UpstreamError:
            conn.close()
            raise
        self.status = response.status
        self.responding()
        handler.post(stream, "headers", (fields, body_mode == "none"))
        if body_mode != "none":
            self.relay_body(conn, response)
        self.phase.go(Step.END)
        self.release_backend(conn, response)

    def relay_body(self, conn, response: http1.Response) -> None:
        timeout = self.server.timeouts.backend_read
        send_timeout = self.server.timeouts.send
        try:
            while True:
                event = next_event(conn.reader, conn.transport, timeout=timeout)
                if event.__class__ is http1.Data:
                    self.stream.wait_for_room(len(event.data), send_timeout)
                    self.response_bytes += len(event.data)
                    self.handler.post(self.stream, "data", event.data)
                    continue
                trailers = trailer_fields(http1.prepare_trailers(event.trailers, response.headers))
                self.handler.post(self.stream, "end", trailers)
                return
        except (ProtocolError, ReadError, ReadTimeout) as error:
            raise self.body_read_failure(conn, error, timeout) from None
        except ClientGone:
            conn.close()
            raise
