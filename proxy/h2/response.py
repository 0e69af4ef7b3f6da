"""The response side of the downgrade: an HTTP/1.1 response head as an HTTP/2 field block, sans-IO.

Theory of operation
-------------------
The backend answers in HTTP/1.1; ``proxy.http1.prepare_downstream_response`` has already
applied the proxy's downstream rules (hop-by-hop fields removed, Via, HSTS), the same
ones an HTTP/1.1 client gets.  What is left for HTTP/2 is its framing::

    status line           ->  :status (RFC 9113 §8.3.2; HTTP/2 has no reason phrase)
    field names           ->  lower case (RFC 9113 §8.2: "field names MUST be converted
                              to lowercase when constructing an HTTP/2 message")
    connection-specific   ->  removed (RFC 9113 §8.2.2: "An intermediary transforming an
    fields                    HTTP/1.x message to HTTP/2 MUST remove connection-specific
                              header fields ... or their messages will be treated by
                              other HTTP/2 endpoints as malformed")
    Transfer-Encoding:    ->  nothing: DATA frames and END_STREAM frame the body.  A coding
    chunked                   other than chunked (gzip) has no HTTP/2 form: refused (502)
                              rather than handing the client coded bytes unannounced.

The proxy's own error answers (``proxy.errors.render_error``, the one function that
renders an error) go through the same conversion (``error_fields``), so an HTTP/2
client reads the same status and one-line reason an HTTP/1.1 client does.
"""

from __future__ import annotations

from proxy.errors import InvalidUpstreamResponse
from proxy.h2.downgrade import CONNECTION_SPECIFIC
from proxy.http1.events import Response
from proxy.http1.framing import parse_transfer_coding
from proxy.http1.headers import Headers

Field = tuple[bytes, bytes]
_DROPPED = frozenset(name.decode("ascii") for name in CONNECTION_SPECIFIC) | {"te", "trailer"}


def response_fields(response: Response) -> list[Field]:
    """``response`` (as prepared for the client) as an HTTP/2 response header block."""
    fields: list[Field] = [(b":status", b"%d" % response.status)]
    for lower, _, value in response.headers._fields:
        if lower in _DROPPED:
            if lower == "transfer-encoding" and any(c != "chunked" for c in parse_transfer_coding([value])):
                raise InvalidUpstreamResponse(
                    f"transfer coding {value!r} has no HTTP/2 form (RFC 9113 §8.2.2)")
            continue
        fields.append((lower.encode("latin-1"), value.encode("latin-1")))
    return fields


def trailer_fields(trailers: Headers) -> list[Field]:
    """A filtered trailer section (``http1.prepare_trailers``) as an HTTP/2 trailer block."""
    return [(lower.encode("latin-1"), value.encode("latin-1"))
            for lower, _, value in trailers._fields if lower not in _DROPPED]


def error_fields(rendered: bytes) -> tuple[list[Field], bytes]:
    """The HTTP/1.1 bytes of an error answer (``render_error``) as HTTP/2: (header block, body)."""
    head, _, body = rendered.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    fields: list[Field] = [(b":status", status_line.split(b" ", 2)[1])]
    for line in lines:
        name, _, value = line.partition(b":")
        lower = name.strip().lower()
        if lower.decode("latin-1") not in _DROPPED:  # "Connection: close" says nothing in HTTP/2
            fields.append((lower, value.strip()))
    return fields, body
