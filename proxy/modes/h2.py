"""HTTP/2 on the client leg (threaded engine): one connection, many streams, an HTTP/1.1 exchange each.

Theory of operation
-------------------
``proxy.modes.terminate.handle`` sends a connection here when ALPN chose ``h2`` (RFC 9113
§3.2).  The `h2` library does the framing, HPACK and flow control; it is *not*
thread-safe, so exactly one thread, the connection's own, ever touches the
``H2Connection``.  Each request stream is one ``Exchange`` (``proxy.modes.terminate``),
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

import dataclasses
import queue
import select
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import h2.connection
import h2.events
import h2.exceptions
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from proxy import exchange as rules
from proxy import http1
from proxy.drive import next_event
from proxy.errors import (ClientGone, ClientProtocolError, GatewayTimeout, ProtocolError, ProxyError, ReadError,
                          ReadTimeout, RequestTimeout, StaleConnection, UpstreamError, WriteError, WriteTimeout)
from proxy.exchange import Recovery, Step, failure_of, via
from proxy.h2 import downgrade_request, downgrade_trailers
from proxy.h2.response import error_fields, response_fields, trailer_fields
from proxy.http1.framing import BodyKind
from proxy.lifecycle import ConnEvent, ConnState
from proxy.modes.terminate import Exchange
from proxy.transport import Outbox, wake

STREAM_BUFFER = 256 * 1024  # response bytes a worker may queue ahead of the client's window
TICK = 0.25  # seconds: how often the connection thread looks at the clocks and at server.draining
RESET = object()  # on a stream's body queue: the stream is gone


def handle(server, conn) -> None:
    H2ConnectionHandler(server, conn).run()


class _H2Connection(h2.connection.H2Connection):
    """h2, with its own content-length accounting left to ``BodyCounter``.

    h2 checks content-length against DATA on its own and, when they disagree, ends the
    whole *connection* (GOAWAY); RFC 9113 §8.1.1 asks for a *stream* error, which
    ``BodyCounter`` raises here.  So each new stream's ``_initialize_content_length`` (a
    private hook of h2 4.x) is switched off; without it (another h2 version) h2's own
    check stays, which is stricter, never looser.
    """

    def _begin_new_stream(self, stream_id, allowed_ids):
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        if hasattr(stream, "_initialize_content_length"):
            stream._initialize_content_length = lambda headers: None
        return stream


class Stream:
    """One request stream: what the connection thread and its worker share."""

    def __init__(self, stream_id: int, down=None) -> None:
        self.id = stream_id
        self.down = down  # the DowngradedRequest (None for a stream refused at its head)
        self.body: queue.SimpleQueue = queue.SimpleQueue()  # ("data", bytes, flow length) | ("end", trailers) | RESET
        self.trailers = http1.Headers()
        self.cond = threading.Condition()
        self.buffered = 0  # response bytes queued, not yet sent (the worker waits above STREAM_BUFFER)
        self.cancelled = False  # the client reset it, or the connection is gone
        self.backend_conn = None  # to wake a worker blocked on the backend when the stream dies
        # the connection thread's side
        self.pending: deque[bytes] = deque()
        self.end: list | bool | None = None  # True, or trailer fields: end the stream after pending
        self.closed = False  # END_STREAM or RST_STREAM sent
        self.worker_done = down is None

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

    # ------------------------------------------------------------------ the connection thread's side
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
    """One HTTP/2 connection: its thread owns the H2Connection; workers run the streams."""

    def __init__(self, server, conn) -> None:
        self.server = server
        self.conn = conn
        self.sock = conn.sock
        self.proto = "https"
        self.hsts = rules.hsts_for(server.config.hsts, proto="https")
        self.timeouts = server.timeouts
        self.limits = server.limits
        self.h2 = _H2Connection(config=H2Configuration(client_side=False, header_encoding=None,
                                                       validate_inbound_headers=False))
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams})
        self.streams: dict[int, Stream] = {}
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()  # (stream, kind, payload) from workers
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_w.setblocking(False)
        self.workers = ThreadPoolExecutor(max_workers=self.limits.max_concurrent_streams,
                                          thread_name_prefix=f"h2-{conn.client}")
        self.last_stream_id: int | None = None  # set by the first GOAWAY: later streams are refused
        self.received = self.sent_bytes = 0
        self.client_left = False  # the client's GOAWAY: h2 sends nothing after it, so the connection ends

    # ================================================================== the connection thread
    def run(self) -> None:
        try:
            self.sock.settimeout(self.timeouts.send)
            self.h2.initiate_connection()
            self.flush()
            self.loop()
        except (OSError, h2.exceptions.ProtocolError):
            pass  # the client is gone, or broke HTTP/2 (h2's GOAWAY was flushed if it could be)
        finally:
            self.close()

    def loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            if (self.server.draining or self.conn.requests >= self.limits.max_requests_per_connection) \
                    and self.last_stream_id is None:
                self.go_away()
            if not self.streams:
                if self.last_stream_id is not None:
                    self.h2.close_connection(last_stream_id=self.last_stream_id)  # the final GOAWAY
                    self.flush()
                    return
                if time.monotonic() - idle_since > self.timeouts.idle_keepalive:
                    self.h2.close_connection()  # idle too long: GOAWAY(NO_ERROR), as nginx does
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
            self.send_pending()
            self.flush()
            if self.streams:
                idle_since = time.monotonic()

    def read_client(self) -> bool:
        """One read from the client, every event in it handled; False when the client is gone."""
        data = self.sock.recv(65536)
        if not data:
            return False
        self.received += len(data)
        if self.conn.state is ConnState.IDLE:
            self.conn.life.go(ConnEvent.BYTES)
            self.conn.life.go(ConnEvent.REQUEST)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self.server.access_log.write(f"{self.conn.client} HTTP/2 connection error: {error} "
                                         f"{self.conn.tls_summary()}")
            self.flush()  # h2 has queued its GOAWAY
            return False
        new: list[Stream] = []
        for event in events:
            self.on_event(event, new)
        for stream in new:  # after the whole read: see the module docstring
            if stream.down is not None and not stream.cancelled:
                self.workers.submit(self.serve_stream, stream)
            elif stream.down is not None:
                stream.worker_done = True
                self.forget(stream)
        return not self.client_left

    def on_event(self, event, new: list[Stream]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event, new)
        elif isinstance(event, h2.events.DataReceived):
            self.on_data(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.down is not None and not stream.cancelled:
                try:
                    stream.trailers = downgrade_trailers(event.headers, request=stream.down.request,
                                                         end_stream=True, limits=self.limits.http)
                except ProtocolError as error:
                    self.refuse(stream, error)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.down is not None and not stream.cancelled:
                try:
                    if not stream.down.body.ended:  # END_STREAM on HEADERS was counted by the downgrade
                        stream.down.body.end_stream()
                except ProtocolError as error:
                    self.refuse(stream, error)
                    return
                stream.body.put(("end", stream.trailers))
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.closed = True
                stream.cancel()
                self.forget(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.client_left = True
        # WindowUpdated: send_pending() tries every stream after each read anyway.
        # PingReceived, SettingsAcknowledged, RemoteSettingsChanged: h2 has answered them.

    def on_request(self, event, new: list[Stream]) -> None:
        sid = event.stream_id
        if self.last_stream_id is not None and sid > self.last_stream_id:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)  # RFC 9113 §6.8: after GOAWAY
            return
        self.conn.requests += 1
        ended = event.stream_ended is not None
        try:
            down = downgrade_request(event.headers, end_stream=ended, limits=self.limits.http)
        except ProtocolError as error:
            stream = self.streams[sid] = Stream(sid)
            self.refuse(stream, error, request_ended=ended)
            return
        # The client's own protocol version, not the HTTP/1.1 it becomes: the log line and Via.
        down = dataclasses.replace(down, request=dataclasses.replace(down.request, version="HTTP/2"))
        stream = self.streams[sid] = Stream(sid, down)
        new.append(stream)

    def on_data(self, event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.down is None or stream.cancelled:
            # Nobody will read it: hand the window back at once, or the connection's shrinks.
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        try:
            stream.down.body.data(len(event.data))
        except ProtocolError as error:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.refuse(stream, error)
            return
        stream.body.put(("data", event.data, event.flow_controlled_length))

    def refuse(self, stream: Stream, error: ProtocolError, *, request_ended: bool = False) -> None:
        """A request the client got wrong: a stream error, or its 4xx/501 on the stream."""
        refused = ClientProtocolError.of(error)
        self.server.access_log.write(rules.error_line(self.conn.client, refused, self.conn.tls_summary()))
        self.server.stats.statuses[refused.status] += 1
        stream.cancel()
        if type(error) is ProtocolError:
            # RFC 9113 §8.1.1: malformed -> "a stream error (Section 5.4.2) of type PROTOCOL_ERROR".
            self.reset(stream, ErrorCodes.PROTOCOL_ERROR)
            return
        if stream.worker_done:  # refused at its head: answer here
            self.queue_error(stream, refused, request_ended=request_ended)
        else:  # mid-body (413): the worker may be answering already; the stream is no longer wanted
            self.reset(stream, ErrorCodes.CANCEL)

    def queue_error(self, stream: Stream, error: ProxyError, *, request_ended: bool) -> None:
        fields, body = error_fields(rules.error_response(error, hsts=self.hsts))
        try:
            self.h2.send_headers(stream.id, fields)
        except h2.exceptions.StreamClosedError:
            return
        stream.pending.append(body)
        stream.buffered += len(body)
        stream.end = True
        if not request_ended:
            stream.end = "reset"  # RFC 9113 §8.1: a complete response, then RST_STREAM(NO_ERROR)

    # ------------------------------------------------------------------ what workers asked for
    def post(self, stream: Stream, kind: str, payload=None) -> None:
        """Called by a worker: queue an action for the connection thread and wake it."""
        self.outbox.put((stream, kind, payload))
        try:
            self.wake_w.send(b"\0")
        except OSError:  # the pipe is full (it is awake anyway) or closed (the connection is gone)
            pass

    def apply_outbox(self) -> None:
        while True:
            try:
                stream, kind, payload = self.outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "done":
                stream.worker_done = True
                self.forget(stream)
                continue
            if kind == "ack":
                self.h2.acknowledge_received_data(payload, stream.id)
                continue
            if stream.closed:
                if kind == "data":
                    stream.sent(len(payload))
                continue
            if kind == "headers":
                fields, end = payload
                try:
                    self.h2.send_headers(stream.id, fields, end_stream=end)
                except h2.exceptions.StreamClosedError:
                    end = True
                if end:
                    stream.closed = True
                    self.forget(stream)
            elif kind == "data":
                stream.pending.append(payload)
            elif kind == "end":
                stream.end = payload or True
            elif kind == "reset":
                self.reset(stream, payload)

    def send_pending(self) -> None:
        """Response DATA within the client's windows (RFC 9113 §5.2), then END_STREAM or trailers."""
        for stream in list(self.streams.values()):
            if stream.closed or (not stream.pending and stream.end is None):
                continue
            try:
                while stream.pending:
                    window = min(self.h2.local_flow_control_window(stream.id), self.h2.max_outbound_frame_size)
                    if window <= 0:
                        break  # wait for the client's WINDOW_UPDATE
                    piece = stream.pending[0]
                    size = min(window, len(piece))
                    self.h2.send_data(stream.id, piece[:size])
                    if size < len(piece):
                        stream.pending[0] = piece[size:]
                    else:
                        stream.pending.popleft()
                    stream.sent(size)
                if stream.pending or stream.end is None:
                    continue
                if isinstance(stream.end, list):
                    self.h2.send_headers(stream.id, stream.end, end_stream=True)  # trailers
                else:
                    self.h2.end_stream(stream.id)
                if stream.end == "reset":
                    self.h2.reset_stream(stream.id, ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
            stream.closed = True
            self.forget(stream)

    def reset(self, stream: Stream, code: ErrorCodes) -> None:
        if not stream.closed:
            try:
                self.h2.reset_stream(stream.id, code)
            except h2.exceptions.StreamClosedError:
                pass
        stream.closed = True
        stream.pending.clear()
        self.forget(stream)

    def forget(self, stream: Stream) -> None:
        if stream.closed and stream.worker_done:
            self.streams.pop(stream.id, None)

    # ------------------------------------------------------------------ the connection's end
    def go_away(self) -> None:
        """The first GOAWAY of a graceful close (RFC 9113 §6.8): no stream after this one.

        Written past h2, whose state machine would refuse every frame after its own
        GOAWAY, while the streams in flight still need theirs; h2 sends the last one."""
        self.last_stream_id = self.h2.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.flush()
        self.send(frame.serialize())

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.send(data)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)  # the socket's timeout is timeouts.send
        self.sent_bytes += len(data)

    def close(self) -> None:
        for stream in list(self.streams.values()):
            stream.cancel()
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
        fields, body = error_fields(rules.error_response(error, hsts=self.hsts))
        self.post(stream, "headers", (fields, False))
        self.post(stream, "data", body)
        with stream.cond:
            stream.buffered += len(body)
        # RFC 9113 §8.1: after a complete response the server "MAY request that the client
        # abort transmission of a request without error by sending a RST_STREAM with an
        # error code of NO_ERROR".
        self.post(stream, "end", None if exchange.request_done else "reset")

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
        except WriteTimeout:
            raise GatewayTimeout(f"backend {self.backend.name} stopped reading the request") from None
        except WriteError as error:
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
