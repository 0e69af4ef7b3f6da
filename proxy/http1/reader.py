"""The readers: bytes in, events out, one message after another on a connection.

Theory of operation
-------------------
``RequestReader`` (the proxy's client side) and ``ResponseReader`` (its backend side)
are sans-IO: they never touch a socket.  The caller feeds bytes and asks for events
(see ``events.py`` for the drive loop)::

    reader.feed(bytes_from_the_socket)       reader.feed_eof()   # on a clean EOF
    event = reader.next_event()   # Request/Response, Data, EndOfMessage,
                                  # NEED_DATA or ConnectionClosed; or raises a
                                  # proxy.errors.ProtocolError subclass

A reader is a state machine, and the machine is this table (``TRANSITIONS``)::

    HEAD --head-------------> BODY        a Request/Response event
    HEAD --clean EOF--------> CLOSED      ConnectionClosed
    BODY --end--------------> HEAD        EndOfMessage; the connection persists
    BODY --end, last--------> CLOSED      EndOfMessage; "Connection: close", HTTP/1.0,
                                          or a close-delimited body (RFC 9112 §9.3)
    BODY --end, tunnel------> TUNNEL      EndOfMessage after CONNECT or 101
    HEAD, BODY --error------> ERROR       a ProtocolError; the connection is done

After EndOfMessage the reader cycles by itself: the next ``next_event()`` parses the
next pipelined message already in the buffer (RFC 9112 §9.3.2).  In CLOSED it
answers ConnectionClosed for ever: RFC 9112 §9.6 says a server "MUST NOT process any
further requests" after one that said "close", so bytes after it are ignored.  In
TUNNEL it refuses to parse (``RuntimeError``): the bytes are no longer HTTP, and
``take_buffered()`` hands over what was already read.  In ERROR it raises the same
error again: after a framing error, nothing later on the connection can be trusted.

Responses have two twists, both from RFC 9110 §15.2:

* a 1xx (informational) response, such as 100 Continue, is a complete message of its
  own: ``Response(status=100)``, then ``EndOfMessage``, then the reader goes on to
  read the *final* response to the same request (there can be several 1xx first);
* 101 Switching Protocols ends HTTP on the connection: framing "tunnel", like a 2xx
  to CONNECT.

The response to a HEAD has no body whatever its headers say, and a 2xx to CONNECT
starts a tunnel, so the reader must know the request method: call
``expect_response_to(method)`` before reading the response to each request.  The
method holds until a final (non-1xx) response head arrives, so calling it again
after a 1xx is harmless.  One request at a time: the proxy never pipelines requests
to a backend, and a response that arrives with no request outstanding is an error.
"""

from __future__ import annotations

from enum import Enum

from proxy.errors import IncompleteMessage, ProtocolError
from proxy.http1.body import (
    ChunkedDecoder,
    CloseDelimitedDecoder,
    ContentLengthDecoder,
    NoBodyDecoder,
)
from proxy.http1.events import NEED_DATA, ConnectionClosed, EndOfMessage
from proxy.http1.framing import BodyKind, Framing, persistent_connection, request_framing, response_framing
from proxy.http1.head import HeadScanner, parse_request_head, parse_response_head
from proxy.http1.limits import Limits


class ReaderState(Enum):
    HEAD = "waiting for a message head"
    BODY = "reading a message body"
    TUNNEL = "the connection is a tunnel: no more HTTP"
    CLOSED = "no further message on this connection"
    ERROR = "a protocol error ended the connection"


class ReaderEvent(Enum):
    """What moves the reader from one state to the next (the labels of the diagram)."""

    HEAD = "head"
    CLEAN_EOF = "clean EOF"
    END = "end"
    END_LAST = "end, last"
    END_TUNNEL = "end, tunnel"
    ERROR = "error"


TRANSITIONS: dict[tuple[ReaderState, ReaderEvent], ReaderState] = {
    (ReaderState.HEAD, ReaderEvent.HEAD): ReaderState.BODY,
    (ReaderState.HEAD, ReaderEvent.CLEAN_EOF): ReaderState.CLOSED,
    (ReaderState.BODY, ReaderEvent.END): ReaderState.HEAD,
    (ReaderState.BODY, ReaderEvent.END_LAST): ReaderState.CLOSED,
    (ReaderState.BODY, ReaderEvent.END_TUNNEL): ReaderState.TUNNEL,
    (ReaderState.HEAD, ReaderEvent.ERROR): ReaderState.ERROR,
    (ReaderState.BODY, ReaderEvent.ERROR): ReaderState.ERROR,
}

_NO_BODY = NoBodyDecoder()


def body_decoder(framing: Framing, limits: Limits, max_body_size: int | None = None):
    """The decoder for a body framed as ``framing`` (see body.py)."""
    kind = framing.kind
    if kind is BodyKind.LENGTH:
        return ContentLengthDecoder(framing.length)
    if kind is BodyKind.CHUNKED:
        return ChunkedDecoder(limits, max_body_size)
    if kind is BodyKind.CLOSE:
        return CloseDelimitedDecoder()
    return _NO_BODY  # NONE, and TUNNEL (whose bytes are not a body)


class _Reader:
    """What both readers share: the buffer, EOF, the state table, the body phase."""

    _start_line = "request"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._eof = False
        self._state = ReaderState.HEAD
        self._scanner = HeadScanner(limits, self._start_line)
        self._decoder = _NO_BODY
        self._after_body = ReaderEvent.END  # which transition EndOfMessage takes
        self._error: ProtocolError | None = None

    @property
    def state(self) -> ReaderState:
        return self._state

    def _go(self, transition: ReaderEvent) -> None:
        self._state = TRANSITIONS[self._state, transition]

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        self._buffer += data

    def feed_eof(self) -> None:
        """The peer closed its sending side: no more bytes will come."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """How many bytes were fed and not yet parsed (e.g. part of the next head)."""
        return len(self._buffer)

    def body_remaining(self) -> int | None:
        """Bytes of a Content-Length body still to come, once the buffer is drained.

        For the proxy's fast path: instead of feeding a large body through the reader
        (copy into the buffer, copy out as Data), it may read those bytes straight from
        the socket into its own buffer and report them with ``body_received_directly``.
        The reader still decides where the body ends.  None when that does not apply.
        """
        decoder = self._decoder
        if self._state is ReaderState.BODY and decoder.__class__ is ContentLengthDecoder and not self._buffer:
            return decoder.remaining
        return None

    def body_received_directly(self, count: int) -> None:
        """``count`` body bytes were read by the caller (see ``body_remaining``)."""
        remaining = self.body_remaining()
        if remaining is None or not 0 < count <= remaining:
            raise RuntimeError(f"{count} body bytes received directly, but {remaining} may be")
        self._decoder.remaining = remaining - count

    def take_buffered(self) -> bytes:
        """Remove and return the bytes fed but not yet parsed (e.g. a tunnel's first bytes)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def next_event(self):
        """The next event (see the module docstring); raises ProtocolError subclasses."""
        state = self._state
        try:
            if state is ReaderState.BODY:
                event = self._decoder.next_event(self._buffer, self._eof)
                if event.__class__ is EndOfMessage:
                    self._go(self._after_body)
                return event
            if state is ReaderState.HEAD:
                return self._read_head()
        except ProtocolError as error:
            self._error = error
            self._go(ReaderEvent.ERROR)
            raise
        if state is ReaderState.CLOSED:
            return ConnectionClosed
        if state is ReaderState.ERROR:
            raise self._error
        raise RuntimeError("the connection is a tunnel now: use take_buffered(), not next_event()")

    def _read_head(self):
        raise NotImplementedError

    def _find_head(self) -> bytes | None:
        """The complete head block (consumed from the buffer), or None if not here yet."""
        buffer = self._buffer
        if not buffer:
            return None  # nothing to scan (the usual state between keep-alive messages)
        end = self._scanner.find_end(buffer)
        if end < 0:
            return None
        block = bytes(buffer[:end])
        del buffer[: end + 4]
        return block


class RequestReader(_Reader):
    """Reads requests from a client connection (see the module docstring).

    ``allow_absolute_form`` and ``allow_connect`` are for the forward proxy; a
    reverse proxy refuses absolute-form targets (400) and CONNECT (501).
    """

    _start_line = "request"

    def __init__(
        self,
        limits: Limits = Limits(),
        *,
        allow_absolute_form: bool = False,
        allow_connect: bool = False,
    ) -> None:
        super().__init__(limits)
        self.allow_absolute_form = allow_absolute_form
        self.allow_connect = allow_connect

    def _read_head(self):
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
            # request-line (some clients add a CRLF after a POST body).
            while buffer[:2] == b"\r\n":
                del buffer[:2]
            self._scanner.reset()
        block = self._find_head()
        if block is None:
            if self._eof:
                if not buffer:
                    self._go(ReaderEvent.CLEAN_EOF)
                    return ConnectionClosed
                raise IncompleteMessage("connection closed in the middle of a request head")
            return NEED_DATA
        request = parse_request_head(
            block,
            self._scanner,
            allow_absolute_form=self.allow_absolute_form,
            allow_connect=self.allow_connect,
        )
        version = request.version
        headers = request.headers
        framing = request_framing(request.method, version, headers, self.limits.max_body_size)
        request.framing = framing
        if framing.kind is BodyKind.TUNNEL:
            request.keep_alive = False
            self._after_body = ReaderEvent.END_TUNNEL
        else:
            request.keep_alive = keep_alive = persistent_connection(version, headers)
            self._after_body = ReaderEvent.END if keep_alive else ReaderEvent.END_LAST
            # RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request.
            if version == "HTTP/1.1" and headers._values("expect"):
                request.expect_continue = "100-continue" in headers.tokens("expect")
        self._decoder = body_decoder(framing, self.limits, self.limits.max_body_size)
        self._go(ReaderEvent.HEAD)
        return request


class ResponseReader(_Reader):
    """Reads responses from a backend connection (see the module docstring)."""

    _start_line = "status"

    def __init__(self, limits: Limits = Limits()) -> None:
        super().__init__(limits)
        self._request_method: str | None = None

    def expect_response_to(self, method: str) -> None:
        """Say which request the next response answers (needed for HEAD, CONNECT)."""
        self._request_method = method

    def _read_head(self):
        block = self._find_head()
        if block is None:
            if self._eof:
                if not self._buffer:
                    self._go(ReaderEvent.CLEAN_EOF)
                    return ConnectionClosed
                raise IncompleteMessage("connection closed in the middle of a response head")
            return NEED_DATA
        method = self._request_method
        if method is None:
            raise ProtocolError("a response arrived with no request outstanding")
        response = parse_response_head(block, self._scanner)
        status = response.status
        framing = response_framing(status, response.version, response.headers, method)
        response.framing = framing
        kind = framing.kind
        if status < 200 and kind is not BodyKind.TUNNEL:
            # RFC 9110 §15.2: a 1xx is interim; the final response to the same
            # request follows, so the method stays.
            self._after_body = ReaderEvent.END
        else:
            self._request_method = None
            if kind is BodyKind.TUNNEL:
                response.keep_alive = False
                self._after_body = ReaderEvent.END_TUNNEL
            else:
                response.keep_alive = keep_alive = kind is not BodyKind.CLOSE and persistent_connection(
                    response.version, response.headers
                )
                self._after_body = ReaderEvent.END if keep_alive else ReaderEvent.END_LAST
        self._decoder = body_decoder(framing, self.limits)
        self._go(ReaderEvent.HEAD)
        return response
