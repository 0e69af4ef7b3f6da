"""Body decoders: from framed bytes to Data events and one EndOfMessage.

Theory of operation
-------------------
Once the head is parsed, ``framing.py`` has decided how the body is delimited and
the reader hands the buffer to one of these decoders until it says EndOfMessage:

=====================  ==========================================================
decoder                the body ends ...
=====================  ==========================================================
NoBodyDecoder          at once (GET, HEAD responses, 204, 304, CONNECT)
ContentLengthDecoder   after exactly ``length`` bytes (RFC 9112 §6.2)
ChunkedDecoder         at the zero-size chunk and the trailer section (RFC 9112 §7.1)
CloseDelimitedDecoder  when the connection closes (responses only, RFC 9112 §6.3 rule 8)
=====================  ==========================================================

Every decoder has the same shape: ``next_event(buffer, eof)`` consumes bytes from the
front of the reader's ``bytearray`` and returns ``Data``, ``EndOfMessage`` or
``NEED_DATA``.  A ``Data`` event carries whatever body bytes are buffered (never more
than was fed, never waiting to fill a bigger piece), so a body of any size streams
through the proxy without being held whole.  An EOF before the declared end is an
``IncompleteMessage``: a body cut short is never reported complete (RFC 9112 §8).

The chunked decoder is a small state machine, written as a table (STYLE.md rule 3)::

    SIZE --chunk-size > 0--> DATA --all bytes--> DATA_CRLF --CRLF--> SIZE
    SIZE --chunk-size = 0--> TRAILERS --empty line--> DONE
"""

from __future__ import annotations

import re
from enum import Enum

from proxy.errors import ContentTooLarge, IncompleteMessage, ProtocolError
from proxy.http1.events import NEED_DATA, Data, EndOfMessage
from proxy.http1.fields import TCHAR
from proxy.http1.head import HeadScanner, parse_trailer_section
from proxy.http1.headers import Headers
from proxy.http1.limits import Limits

# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#   chunk-size = 1*HEXDIG                          (we allow at most 16: 2**64 - 1)
#   chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string
# No sign, no "0x", no whitespace before or after the size: parsers that accept
# "0x5", "+5" or " 5" read a different length from those that do not (smuggling).
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN = f"[{TCHAR}]+".encode()
_CHUNK_EXT = rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(" + _CHUNK_EXT + rb")")
MAX_CHUNK_SIZE_DIGITS = 16


def _take(buffer: bytearray, limit: int) -> bytes:
    """Remove and return up to ``limit`` bytes from the front of ``buffer`` (one copy)."""
    if len(buffer) <= limit:
        data = bytes(buffer)
        buffer.clear()
        return data
    with memoryview(buffer) as view:
        data = bytes(view[:limit])
    del buffer[:limit]
    return data


class NoBodyDecoder:
    """The message has no body: EndOfMessage straight away."""

    __slots__ = ()

    def next_event(self, buffer: bytearray, eof: bool):
        return EndOfMessage(Headers())


class ContentLengthDecoder:
    """Exactly ``length`` bytes (RFC 9112 §6.2)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def next_event(self, buffer: bytearray, eof: bool):
        remaining = self.remaining
        if not remaining:
            return EndOfMessage(Headers())
        if not buffer:
            if eof:
                raise IncompleteMessage(f"connection closed with {remaining} body bytes missing")
            return NEED_DATA
        data = _take(buffer, remaining)
        self.remaining = remaining - len(data)
        return Data(data)


class CloseDelimitedDecoder:
    """Everything until the connection closes (RFC 9112 §6.3 rule 8, responses only)."""

    __slots__ = ()

    def next_event(self, buffer: bytearray, eof: bool):
        if buffer:
            data = bytes(buffer)
            buffer.clear()
            return Data(data)
        if eof:
            return EndOfMessage(Headers())
        return NEED_DATA


class ChunkedState(Enum):
    __hash__ = object.__hash__  # members are singletons; skip Enum's slower hash

    SIZE = "expecting a chunk-size line"
    DATA = "inside chunk-data"
    DATA_CRLF = "expecting the CRLF after chunk-data"
    TRAILERS = "expecting the trailer section"
    DONE = "message complete"


CHUNKED_TRANSITIONS: dict[tuple[ChunkedState, str], ChunkedState] = {
    (ChunkedState.SIZE, "chunk-size > 0"): ChunkedState.DATA,
    (ChunkedState.SIZE, "chunk-size = 0"): ChunkedState.TRAILERS,
    (ChunkedState.DATA, "chunk-data complete"): ChunkedState.DATA_CRLF,
    (ChunkedState.DATA_CRLF, "CRLF"): ChunkedState.SIZE,
    (ChunkedState.TRAILERS, "empty line"): ChunkedState.DONE,
}


class ChunkedDecoder:
    """The chunked transfer coding (RFC 9112 §7.1), bounded by ``limits``.

    ``max_body_size`` (None for responses) bounds the running total of chunk sizes:
    the check runs when a chunk-size line declares the bytes, before they arrive.
    """

    __slots__ = ("_state", "_remaining", "_total", "_limits", "_max_body_size", "_trailers")

    def __init__(self, limits: Limits, max_body_size: int | None = None) -> None:
        self._state = ChunkedState.SIZE
        self._remaining = 0
        self._total = 0
        self._limits = limits
        self._max_body_size = max_body_size
        self._trailers = HeadScanner(limits, start_line=None)

    def _go(self, transition: str) -> None:
        self._state = CHUNKED_TRANSITIONS[self._state, transition]

    def next_event(self, buffer: bytearray, eof: bool):
        while True:
            state = self._state
            if state is ChunkedState.DATA:
                if not buffer:
                    break
                data = _take(buffer, self._remaining)
                self._remaining -= len(data)
                if not self._remaining:
                    self._go("chunk-data complete")
                return Data(data)
            if state is ChunkedState.SIZE:
                if not self._read_chunk_size(buffer):
                    break
            elif state is ChunkedState.DATA_CRLF:
                if len(buffer) < 2:
                    if buffer and buffer[0] != 13:
                        raise ProtocolError("chunk-data not followed by CRLF (RFC 9112 §7.1)")
                    break
                if buffer[0] != 13 or buffer[1] != 10:
                    # RFC 9112 §7.1: chunk-data CRLF.  A decoder that skipped to the next
                    # CRLF instead would take the attacker's "data" as the next size line.
                    raise ProtocolError("chunk-data not followed by CRLF (RFC 9112 §7.1)")
                del buffer[:2]
                self._go("CRLF")
            elif state is ChunkedState.TRAILERS:
                trailers = self._read_trailers(buffer)
                if trailers is None:
                    break
                self._go("empty line")
                return EndOfMessage(trailers)
            else:
                raise RuntimeError("ChunkedDecoder used after the end of the message")
        if eof:
            raise IncompleteMessage(f"connection closed inside a chunked body ({self._state.value})")
        return NEED_DATA

    def _read_chunk_size(self, buffer: bytearray) -> bool:
        """Consume one chunk-size line; False if it has not fully arrived."""
        max_line = MAX_CHUNK_SIZE_DIGITS + self._limits.max_chunk_ext
        end = buffer.find(b"\r\n")
        if end < 0:
            if b"\n" in buffer or b"\r" in buffer[:-1]:
                raise ProtocolError("bare CR or LF in a chunk-size line (RFC 9112 §2.2)")
            if len(buffer) > max_line + 1:
                # RFC 9112 §7.1.1: a server ought to limit chunk extensions (4xx);
                # unbounded ones let a client make us buffer forever.
                raise ProtocolError("chunk-size line or chunk extensions too long (RFC 9112 §7.1.1)")
            return False
        if end > max_line:
            raise ProtocolError("chunk-size line or chunk extensions too long (RFC 9112 §7.1.1)")
        line = bytes(buffer[:end])
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(f"invalid chunk-size line {line[:40]!r} (RFC 9112 §7.1)")
        size_digits, extensions = match.groups()
        if len(extensions) > self._limits.max_chunk_ext:
            raise ProtocolError("chunk extensions too long (RFC 9112 §7.1.1)")
        del buffer[: end + 2]
        size = int(size_digits, 16)
        if not size:
            self._go("chunk-size = 0")
            return True
        self._total += size
        if self._max_body_size is not None and self._total > self._max_body_size:
            raise ContentTooLarge(f"chunked body over {self._max_body_size} bytes")
        self._remaining = size
        self._go("chunk-size > 0")
        return True

    def _read_trailers(self, buffer: bytearray) -> Headers | None:
        """The trailer section and its final empty line; None if not all here yet."""
        if buffer[:2] == b"\r\n":
            del buffer[:2]
            return Headers()
        end = self._trailers.find_end(buffer)
        if end < 0:
            return None
        block = bytes(buffer[:end])
        del buffer[: end + 4]
        return parse_trailer_section(block, self._trailers)
