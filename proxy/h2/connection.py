"""One HTTP/2 connection's protocol state, for both engines: streams in, frames out, sans-IO.

Theory of operation
-------------------
The `h2` library turns bytes into events and calls into bytes (framing, HPACK, flow
control, SETTINGS, PING).  What a *proxy* must decide on top of it is written once,
here, and driven by both engines: ``proxy.modes.h2`` (a thread owns the connection,
each stream's exchange runs in a worker) and ``proxy.eventloop.h2session`` (readiness
callbacks, one thread for everything)::

    bytes from the client ──▶ receive() ──▶ new streams, each with its DowngradedRequest
                                  │           (the strict h2 -> h1 downgrade, proxy.h2.downgrade)
                                  ├──▶ stream.deliver(("data", bytes, flow) | ("end", trailers))
                                  └──▶ stream.cancel()             (RST_STREAM from the client)

    the exchange's answer ──▶ send_headers / queue_data / end_stream / answer_error / reset
                                  │
                              pump() ──▶ DATA within the client's windows (RFC 9113 §5.2)
                                  │
                              data_to_send() ──▶ bytes for the client

* **Malformed requests are stream errors** (RFC 9113 §8.1.1): ``RST_STREAM(PROTOCOL_ERROR)``
  and nothing forwarded.  A well-formed request over a limit (413, 414, 431) or with a
  method not served here (501) gets that status on its stream, as HTTP/1.1 would.
* **Request DATA is acknowledged** (``acknowledge``, WINDOW_UPDATE) by the engine only
  once it was written to the backend: a slow backend slows the client down.
* **Response DATA** waits in ``stream.pending`` until the client's windows allow it;
  ``stream.sent(n)`` tells the engine that ``n`` bytes left, so it can read more from
  the backend.
* **Graceful close** (RFC 9113 §6.8): ``go_away`` names the last stream accepted, later
  streams are refused (REFUSED_STREAM), and ``close_connection`` sends the final GOAWAY
  once the streams in flight are done.

The engines differ only in how a stream's pieces travel (a queue and a wake-up pipe
for a worker thread; a method call in the event loop), which is why ``H2Stream``'s
``deliver``, ``cancel``, ``queued`` and ``sent`` are the hooks they fill in.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Callable

import h2.connection
import h2.events
import h2.exceptions
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from proxy import exchange as rules
from proxy import http1
from proxy.config import Limits
from proxy.errors import ClientProtocolError, ProtocolError, ProxyError
from proxy.h2.downgrade import DowngradedRequest, downgrade_request, downgrade_trailers
from proxy.h2.response import error_fields

STREAM_BUFFER = 256 * 1024  # response bytes a stream may queue ahead of the client's window


class _H2Connection(h2.connection.H2Connection):
    """h2, with two of its connection errors made the stream errors RFC 9113 asks for.

    * **content-length against DATA.**  h2 checks it on its own and, when they disagree,
      ends the whole *connection* (GOAWAY); RFC 9113 §8.1.1 asks for a *stream* error,
      which ``BodyCounter`` raises here.  So each new stream's
      ``_initialize_content_length`` (a private hook of h2 4.x) is switched off; without it
      (another h2 version) h2's own check stays, which is stricter, never looser.
    * **One stream over SETTINGS_MAX_CONCURRENT_STREAMS.**  h2 raises
      ``TooManyStreamsError``, a connection error; RFC 9113 §5.1.2 says an endpoint "MUST
      treat this as a stream error (Section 5.4.2) of type PROTOCOL_ERROR or
      REFUSED_STREAM", and REFUSED_STREAM tells the client the request was not processed
      and may be retried (§8.7).  A client can do it innocently: it may open streams
      before it has read the server's first SETTINGS.  The field block is decoded all the
      same, or HPACK's dynamic table would fall out of step with the client's (§4.3).
    """

    def _receive_headers_frame(self, frame):
        sid = frame.stream_id
        if sid not in self.streams and sid > self.highest_inbound_stream_id and sid % 2 == 1 \
                and self.open_inbound_streams + 1 > self.local_settings.max_concurrent_streams:
            h2.connection._decode_headers(self.decoder, frame.data)  # keep HPACK in step (private helper of h2 4.x)
            self.highest_inbound_stream_id = sid  # the stream is used up: later frames on it meet a closed stream
            refusal = RstStreamFrame(sid)
            refusal.error_code = ErrorCodes.REFUSED_STREAM
            return [refusal], []
        return super()._receive_headers_frame(frame)

    def _begin_new_stream(self, stream_id, allowed_ids):
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        if hasattr(stream, "_initialize_content_length"):
            stream._initialize_content_length = lambda headers: None
        return stream


class H2Stream:
    """One request stream's protocol state; an engine subclasses it to carry the pieces."""

    def __init__(self, stream_id: int, down: DowngradedRequest | None = None) -> None:
        self.id = stream_id
        self.down = down  # the DowngradedRequest (None for a stream refused at its head)
        self.trailers = http1.Headers()
        self.pending: deque[bytes] = deque()  # response DATA not yet within the client's window
        self.end: list | bool | str | None = None  # True, trailer fields or "reset": how to end after pending
        self.closed = False  # END_STREAM or RST_STREAM sent
        self.cancelled = False  # the client reset it, or the connection is gone
        self.exchange_done = down is None  # the engine's exchange has finished with it

    # the engines' hooks
    def deliver(self, piece: tuple) -> None:
        """A piece of the request body: ``("data", bytes, flow_length)`` or ``("end", trailers)``."""

    def cancel(self) -> None:
        self.cancelled = True

    def queued(self, size: int) -> None:
        """``size`` response bytes were queued on the stream by the connection itself (an error answer)."""

    def sent(self, size: int) -> None:
        """``size`` bytes of ``pending`` went out in DATA frames."""


class H2Server:
    """The server side of one HTTP/2 connection (see the module docstring)."""

    def __init__(self, limits: Limits, *, hsts: str | None, new_stream: Callable[..., H2Stream],
                 refused: Callable[[ProxyError], None]) -> None:
        """``new_stream(stream_id, down)`` makes the engine's ``H2Stream``; ``refused(error)`` logs a refusal."""
        self.limits = limits
        self.hsts = hsts
        self.new_stream = new_stream
        self.refused = refused
        self.h2 = _H2Connection(config=H2Configuration(client_side=False, header_encoding=None,
                                                       validate_inbound_headers=False))
        # What the server's first SETTINGS says (RFC 9113 §6.5.2).  MAX_HEADER_LIST_SIZE is
        # what h2's HPACK decoder enforces (a larger field section is a connection error:
        # the HPACK-bomb defence, RFC 9113 §10.5.1); it is advisory for the client, and the
        # downgrade answers 431 from ``max_head_size`` of the HTTP/1.1 head, below it.
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE})
        self.streams: dict[int, H2Stream] = {}
        self.requests = 0  # streams the client opened (the per-connection request limit counts these)
        self.last_stream_id: int | None = None  # set by the first GOAWAY: later streams are refused
        self.client_left = False  # the client's GOAWAY: h2 sends nothing after it
        self._raw: list[bytes] = []  # frames written past h2 (the first GOAWAY), in order

    def start(self) -> None:
        self.h2.initiate_connection()  # the server's connection preface: a SETTINGS frame (RFC 9113 §3.4)

    # ------------------------------------------------------------------ from the client
    def receive(self, data: bytes) -> list[H2Stream]:
        """Every event in ``data``; the streams to serve, once the whole read was looked at.

        New streams are returned only after every frame of the read was handled, so DATA
        beyond content-length that arrived with its HEADERS stops the request before any
        backend hears of it.  Raises ``h2.exceptions.ProtocolError`` for a connection
        error; h2 has then queued its GOAWAY (``data_to_send``)."""
        new: list[H2Stream] = []
        for event in self.h2.receive_data(data):
            self.on_event(event, new)
        ready = []
        for stream in new:
            if not stream.cancelled:
                ready.append(stream)
            else:
                stream.exchange_done = True
                self.forget(stream)
        return ready

    def on_event(self, event, new: list[H2Stream]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event, new)
        elif isinstance(event, h2.events.DataReceived):
            self.on_data(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.live(event.stream_id)
            if stream is not None:
                try:
                    stream.trailers = downgrade_trailers(event.headers, request=stream.down.request,
                                                         end_stream=True, limits=self.limits.http)
                except ProtocolError as error:
                    self.refuse(stream, error)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.live(event.stream_id)
            if stream is not None:
                try:
                    if not stream.down.body.ended:  # END_STREAM on HEADERS was counted by the downgrade
                        stream.down.body.end_stream()
                except ProtocolError as error:
                    return self.refuse(stream, error)
                stream.deliver(("end", stream.trailers))
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.closed = True
                stream.cancel()
                self.forget(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.client_left = True
        # WindowUpdated: pump() tries every stream after each read anyway.
        # PingReceived, SettingsAcknowledged, RemoteSettingsChanged: h2 has answered them.

    def live(self, stream_id: int) -> H2Stream | None:
        """The stream, if its request is still wanted."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.down is None or stream.cancelled:
            return None
        return stream

    def on_request(self, event, new: list[H2Stream]) -> None:
        sid = event.stream_id
        if self.last_stream_id is not None and sid > self.last_stream_id:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)  # RFC 9113 §6.8: after GOAWAY
            return
        self.requests += 1
        ended = event.stream_ended is not None
        try:
            down = downgrade_request(event.headers, end_stream=ended, limits=self.limits.http)
        except ProtocolError as error:
            stream = self.streams[sid] = self.new_stream(sid, None)
            return self.refuse(stream, error, request_ended=ended)
        # The client's own protocol version, not the HTTP/1.1 it becomes: the log line and Via.
        down = dataclasses.replace(down, request=dataclasses.replace(down.request, version="HTTP/2"))
        stream = self.streams[sid] = self.new_stream(sid, down)
        new.append(stream)

    def on_data(self, event) -> None:
        stream = self.live(event.stream_id)
        if stream is None:
            # Nobody will read it: hand the window back at once, or the connection's shrinks.
            return self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        try:
            stream.down.body.data(len(event.data))
        except ProtocolError as error:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return self.refuse(stream, error)
        stream.deliver(("data", event.data, event.flow_controlled_length))

    def refuse(self, stream: H2Stream, error: ProtocolError, *, request_ended: bool = False) -> None:
        """A request the client got wrong: a stream error, or its 4xx/501 on the stream."""
        refused = ClientProtocolError.of(error)
        self.refused(refused)
        stream.cancel()
        if type(error) is ProtocolError:
            # RFC 9113 §8.1.1: malformed -> "a stream error (Section 5.4.2) of type PROTOCOL_ERROR".
            return self.reset(stream, ErrorCodes.PROTOCOL_ERROR)
        if stream.exchange_done:  # refused at its head: answer here
            self.answer_error(stream, refused, request_ended=request_ended)
        else:  # mid-body (413): the exchange may be answering already; the stream is no longer wanted
            self.reset(stream, ErrorCodes.CANCEL)

    # ------------------------------------------------------------------ to the client
    def send_headers(self, stream: H2Stream, fields: list, *, end: bool = False) -> None:
        """A response (or 1xx) header block; ``end`` when there is no body."""
        if stream.closed:
            return
        try:
            self.h2.send_headers(stream.id, fields, end_stream=end)
        except h2.exceptions.StreamClosedError:
            end = True
        if end:
            stream.closed = True
            self.forget(stream)

    def queue_data(self, stream: H2Stream, data: bytes) -> None:
        """Response body bytes, sent by ``pump`` within the client's windows."""
        if stream.closed:
            stream.sent(len(data))  # never to be sent: the engine must not wait for it
        else:
            stream.pending.append(data)

    def end_stream(self, stream: H2Stream, how: list | bool | str = True) -> None:
        """After what is pending: END_STREAM (True), trailers (a field list), or "reset" after it."""
        if not stream.closed:
            stream.end = how or True

    def answer_error(self, stream: H2Stream, error: ProxyError, *, request_ended: bool) -> None:
        """The proxy's error answer on the stream (``proxy.errors`` renders it, as for HTTP/1.1).

        RFC 9113 §8.1: after a complete response the server "MAY request that the client
        abort transmission of a request without error by sending a RST_STREAM with an
        error code of NO_ERROR": so when the request is still coming, that follows."""
        fields, body = error_fields(rules.error_response(error, hsts=self.hsts))
        self.send_headers(stream, fields)
        if stream.closed:
            return
        stream.queued(len(body))
        stream.pending.append(body)
        stream.end = True if request_ended else "reset"

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        if not stream.closed:
            try:
                self.h2.reset_stream(stream.id, code)
            except h2.exceptions.StreamClosedError:
                pass
        stream.closed = True
        stream.pending.clear()
        self.forget(stream)

    def acknowledge(self, stream: H2Stream, flow_length: int) -> None:
        """Request body bytes were consumed: the client may send as many more (WINDOW_UPDATE)."""
        self.h2.acknowledge_received_data(flow_length, stream.id)

    def done(self, stream: H2Stream) -> None:
        """The engine's exchange has finished with the stream."""
        stream.exchange_done = True
        self.forget(stream)

    def pump(self) -> None:
        """Response DATA within the client's windows (RFC 9113 §5.2), then END_STREAM or trailers."""
        h2conn = self.h2
        for stream in list(self.streams.values()):
            if stream.closed or (not stream.pending and stream.end is None):
                continue
            try:
                while stream.pending:
                    window = min(h2conn.local_flow_control_window(stream.id), h2conn.max_outbound_frame_size)
                    if window <= 0:
                        break  # wait for the client's WINDOW_UPDATE
                    piece = stream.pending[0]
                    size = min(window, len(piece))
                    h2conn.send_data(stream.id, piece[:size])
                    if size < len(piece):
                        stream.pending[0] = piece[size:]
                    else:
                        stream.pending.popleft()
                    stream.sent(size)
                if stream.pending or stream.end is None:
                    continue
                if isinstance(stream.end, list):
                    h2conn.send_headers(stream.id, stream.end, end_stream=True)  # trailers
                else:
                    h2conn.end_stream(stream.id)
                if stream.end == "reset":
                    h2conn.reset_stream(stream.id, ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
            stream.closed = True
            self.forget(stream)

    def forget(self, stream: H2Stream) -> None:
        if stream.closed and stream.exchange_done:
            self.streams.pop(stream.id, None)

    def cancel_all(self) -> None:
        """The connection is gone: every stream's exchange stops."""
        for stream in list(self.streams.values()):
            stream.cancel()

    # ------------------------------------------------------------------ the connection's end
    def should_go_away(self, *, draining: bool) -> bool:
        """Time for the first GOAWAY: the server drains, or the connection reached its request limit."""
        return self.last_stream_id is None and (draining or self.requests >= self.limits.max_requests_per_connection)

    def go_away(self) -> None:
        """The first GOAWAY of a graceful close (RFC 9113 §6.8): no stream after this one.

        Written past h2, whose state machine would refuse every frame after its own
        GOAWAY, while the streams in flight still need theirs; h2 sends the last one."""
        self.last_stream_id = self.h2.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self._raw.append(self.h2.data_to_send())  # what h2 had queued goes first
        self._raw.append(frame.serialize())

    @property
    def finished(self) -> bool:
        """A GOAWAY was sent and every stream is done: the final GOAWAY may go."""
        return self.last_stream_id is not None and not self.streams

    def close_connection(self) -> None:
        """The final GOAWAY (NO_ERROR): after the drain, or when the connection was idle too long."""
        self.h2.close_connection(last_stream_id=self.last_stream_id)

    def data_to_send(self) -> bytes:
        if self._raw:
            raw, self._raw = b"".join(self._raw), []
            return raw + self.h2.data_to_send()
        return self.h2.data_to_send()
