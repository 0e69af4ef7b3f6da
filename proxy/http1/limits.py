"""Size limits for everything the HTTP/1.1 reader buffers.

Theory of operation
-------------------
A parser that buffers "until the head is complete" must say how much it is willing
to buffer, or one client can make the proxy hold gigabytes of header bytes (or spend
its CPU rescanning them).  Each limit below bounds one thing the reader holds in
memory, and each maps to the status code a client gets when it goes over:

=================  ======  ==================================================
limit              status  what it bounds
=================  ======  ==================================================
max_request_line   414     one request-line (RFC 9112 §3: "MUST respond 414")
max_field_line     431     one field line of a head or trailer section
max_head_size      431     a whole head (start-line + fields + empty line)
max_fields         431     the number of field lines in a head
max_body_size      413     one request body (declared or running total)
max_chunk_ext      400     one chunk-size line's extensions (RFC 9112 §7.1.1)
=================  ======  ==================================================

The reader checks each limit as soon as the buffered bytes exceed it, never only
when a terminator finally arrives: a client that sends 1 GB without a CRLF is
refused after 8 KB, not after 1 GB (slowloris-style memory exhaustion).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of each message part the reader accepts before refusing it."""

    # nginx `large_client_header_buffers 4 8k`: a request line must fit one 8 KB buffer.
    # RFC 9112 §3 recommends supporting at least 8000 octets.
    max_request_line: int = 8192
    # Same nginx source: one field line must also fit one 8 KB buffer.
    max_field_line: int = 8192
    # nginx: four 8 KB buffers, so a whole head of at most 32 KB.
    max_head_size: int = 32768
    # HAProxy `tune.http.maxhdr` is 101; h11 and Go default to about 100 as well.
    max_fields: int = 100
    # nginx `client_max_body_size` (default 1m), set high here so the 20 MB upload
    # lessons pass; a deployment lowers it.  Applies to request bodies only.
    max_body_size: int = 1 << 30
    # h11 bounds a chunk header line and nginx refuses oversized ones; 4 KB of
    # chunk extensions is far more than any real client sends (they send none).
    max_chunk_ext: int = 4096

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")
