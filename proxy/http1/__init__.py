"""Sans-IO HTTP/1.1 (RFC 9112): bytes in, events out; events in, bytes out.

Theory of operation
-------------------
Nothing in this package touches a socket, a TLS object or a thread (a unit test
scans the source to keep it that way), so every rule is tested with byte strings and
the same code serves the client side, the backend side, a notebook and a fuzzer.

Reading order for a student, one idea per module:

=============  =================================================================
limits.py      how much of each part the reader buffers, and why those numbers
headers.py     ``Headers``: ordered, case-insensitive field lines
fields.py      the field-line grammar and the smuggling it shuts out
head.py        finding the end of a head; request-line, status-line, Host, targets
framing.py     ``Framing``: RFC 9112 §6.3, how long the body is
events.py      ``Request``, ``Response``, ``Data``, ``EndOfMessage``, sentinels
body.py        Content-Length, chunked and close-delimited body decoders
reader.py      ``RequestReader`` / ``ResponseReader``: the state machine
serialize.py   heads and chunks back to bytes
forwarding.py  hop-by-hop stripping, X-Forwarded-*, Via, body mode for the client
=============  =================================================================

A proxy uses them in this order: ``RequestReader`` yields a ``Request``;
``prepare_upstream_request`` rewrites it; ``serialize_request_head`` and
``encode_chunk`` write it to the backend; ``ResponseReader`` (after
``expect_response_to``) yields the ``Response``; ``prepare_downstream_response``
rewrites it and says how to send the body; ``serialize_response_head`` and
``encode_chunk`` / ``encode_last_chunk`` write it to the client.
"""

# The errors the readers raise, re-exported so that ``http1.ProtocolError`` works.
from proxy.errors import HTTPVersionNotSupported, IncompleteMessage, ProtocolError
from proxy.http1.body import ChunkedDecoder, CloseDelimitedDecoder, ContentLengthDecoder, NoBodyDecoder
from proxy.http1.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    Response,
)
from proxy.http1.forwarding import (
    HOP_BY_HOP,
    client_keep_alive,
    prepare_downstream_response,
    prepare_trailers,
    prepare_upstream_request,
    strip_hop_by_hop,
)
from proxy.http1.framing import (
    Framing,
    parse_content_length,
    parse_transfer_coding,
    persistent_connection,
    request_framing,
    response_framing,
)
from proxy.http1.head import split_absolute_form
from proxy.http1.headers import Headers
from proxy.http1.limits import Limits
from proxy.http1.reader import TRANSITIONS, ReaderState, RequestReader, ResponseReader
from proxy.http1.serialize import (
    encode_chunk,
    encode_last_chunk,
    serialize_request_head,
    serialize_response_head,
)

__all__ = [
    "HOP_BY_HOP",
    "NEED_DATA",
    "HTTPVersionNotSupported",
    "IncompleteMessage",
    "ProtocolError",
    "TRANSITIONS",
    "ChunkedDecoder",
    "CloseDelimitedDecoder",
    "ConnectionClosed",
    "ContentLengthDecoder",
    "Data",
    "EndOfMessage",
    "Framing",
    "Headers",
    "Limits",
    "NoBodyDecoder",
    "ReaderState",
    "Request",
    "RequestReader",
    "Response",
    "ResponseReader",
    "client_keep_alive",
    "encode_chunk",
    "encode_last_chunk",
    "parse_content_length",
    "parse_transfer_coding",
    "persistent_connection",
    "prepare_downstream_response",
    "prepare_trailers",
    "prepare_upstream_request",
    "request_framing",
    "response_framing",
    "serialize_request_head",
    "serialize_response_head",
    "split_absolute_form",
    "strip_hop_by_hop",
]
