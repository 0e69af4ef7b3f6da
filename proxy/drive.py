"""The one drive loop and the one body pump: how a sans-IO reader meets a socket.

Theory of operation
-------------------
Every parser in this project (HTTP requests, HTTP responses, the ClientHello) has the
same shape, borrowed from h11 and httpcore: ask for an event; if the reader needs more
bytes, read and feed them; otherwise act on the event::

    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            data = transport.recv(timeout)
            reader.feed(data) if data else reader.feed_eof()
            continue
        return event

``next_event`` is that loop, written once.  ``pump_body`` is the same loop for a whole
message body, used in both directions (the request's body to the backend, the
response's body to the client)::

    reader ──Data──▶ (re-chunk if chunked) ──▶ outbox ──▶ the other peer
      ▲                                          │
      └── source.recv() ◀── NEED_DATA: flush ────┘       (never hold bytes while waiting)
    EndOfMessage ──▶ last chunk + *filtered* trailers ──▶ flush ──▶ done

Two rules of the pump are protocol, not speed:

* **A chunked body is re-chunked, never copied raw**: the proxy writes the chunks it
  parsed, so chunk-size tricks aimed at the next hop (a smuggled second request inside
  a chunk extension or a bad size line) cannot pass through (RFC 9112 §7.1).
* **Trailer fields are filtered** (``http1.prepare_trailers``): a field that frames,
  routes or authenticates a message must not arrive late, after a proxy has already
  acted on the header section (RFC 9110 §6.5.1).

The pump knows nothing of clients and backends: a failed read raises ``ReadTimeout``,
``ReadError`` or a ``ProtocolError`` (the source), a failed write ``WriteTimeout`` or
``WriteError`` (the sink), and the caller says what each means on its side.  The speed
tricks (coalesced writes, the direct copy of large bodies) live in ``proxy.transport``.
"""

from __future__ import annotations

from typing import Any

from proxy import http1
from proxy.transport import DIRECT_COPY_AT, Outbox, Transport

NEED_DATA = http1.NEED_DATA


def next_event(reader: Any, transport: Transport, *, timeout: float, deadline: float | None = None,
               need_data: object = NEED_DATA) -> Any:
    """Drive ``reader`` until it produces an event other than ``need_data``."""
    while True:
        event = reader.next_event()
        if event is not need_data:
            return event
        data = transport.recv(timeout, deadline)
        if data:
            reader.feed(data)
        else:
            reader.feed_eof()


def pump_body(reader: Any, source: Transport, read_timeout: float, out: Outbox, *, chunked: bool,
              headers: http1.Headers | None = None) -> int:
    """Move one message body from ``reader`` (fed from ``source``) to ``out``; its size.

    ``chunked``: re-encode each piece as a chunk (the forwarded message is chunked);
    otherwise pieces go out as they are (Content-Length, or close-delimited).
    ``headers``: the message's header section as received, whose Connection field may
    name trailer fields to drop too (RFC 9110 §7.6.1).
    """
    size = 0
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            out.flush()  # send what we have before waiting for more
            remaining = reader.body_remaining()
            if remaining is not None and remaining >= DIRECT_COPY_AT:
                got = source.copy_to(out, remaining, read_timeout)
                if got:
                    reader.body_received_directly(got)
                    size += got
                    continue
                reader.feed_eof()  # the source closed early: the reader says IncompleteMessage
                continue
            data = source.recv(read_timeout)
            if data:
                reader.feed(data)
            else:
                reader.feed_eof()
        elif event.__class__ is http1.Data:
            size += len(event.data)
            out.write(http1.encode_chunk(event.data) if chunked else event.data)
        else:  # EndOfMessage
            if chunked:
                out.write(http1.encode_last_chunk(http1.prepare_trailers(event.trailers, headers)))
            out.flush()
            return size
