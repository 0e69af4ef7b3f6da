"""Writing heads and chunks: the inverse of the readers.

Theory of operation
-------------------
The proxy re-serialises every head it forwards (it never copies the client's bytes
through), so what the backend sees is exactly what this parser understood: one
canonical spelling, single spaces, CRLF line ends.  That is itself a defence against
request smuggling: whatever odd bytes the client sent, the backend gets our reading.

Names and values are ``str`` holding latin-1 code points, encoded back byte for
byte.  A CR or LF inside a name or value would start a new field line or end the
head early (response splitting, RFC 9112 §11.1), so the serialiser checks for them
in one pass over the finished head: the number of CRs and LFs must be exactly the
number of line ends it wrote.

Chunks: ``encode_chunk(b"")`` returns ``b""`` on purpose, because a zero-length
chunk *is* the last-chunk (RFC 9112 §7.1); ending a body is always an explicit
``encode_last_chunk()``.
"""

from __future__ import annotations

from proxy.http1.events import Request, Response
from proxy.http1.headers import Headers


def _head(start_line: str, headers: Headers) -> bytes:
    lines = [start_line]
    lines.extend([f"{name}: {value}" for _, name, value in headers._fields])
    lines.append("\r\n")
    text = "\r\n".join(lines)
    line_ends = len(lines)
    if text.count("\n") != line_ends or text.count("\r") != line_ends:
        raise ValueError("CR or LF inside a start-line, field name or value (RFC 9112 §11.1)")
    return text.encode("latin-1")


def serialize_request_head(request: Request) -> bytes:
    """``method SP target SP version CRLF *(field-line CRLF) CRLF`` (RFC 9112 §3, §5)."""
    return _head(f"{request.method} {request.target} {request.version}", request.headers)


def serialize_response_head(response: Response) -> bytes:
    """``version SP status SP reason CRLF *(field-line CRLF) CRLF`` (RFC 9112 §4, §5)."""
    return _head(f"{response.version} {response.status} {response.reason}", response.headers)


def encode_chunk(data: bytes) -> bytes:
    """One chunk (RFC 9112 §7.1): hex size CRLF data CRLF.  Empty data gives b""."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_last_chunk(trailers: Headers | None = None) -> bytes:
    """The last-chunk, the trailer section and the final CRLF (RFC 9112 §7.1.2)."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"0" + _head("", trailers)
