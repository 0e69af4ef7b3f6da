"""Malformed and borderline HTTP/1.1 responses from a backend, and the outcome.

A proxy reads responses from backends it trusts more than its clients, but a
response it misreads is just as dangerous: a body length the proxy gets wrong
desynchronises the pooled backend connection (response splitting, RFC 9112 §11.1)
and the next client gets someone else's response.

``expect``:

* ``"ok"``: ``ResponseReader`` accepts the response (``framing`` says how it read
  the body, ``body`` what the body was);
* ``502``: the response head (or its framing) is invalid; the proxy never forwards
  it and answers the client 502 Bad Gateway (RFC 9112 §6.3 rule 5);
* ``"abort"``: the head was fine but the body is broken (a bad chunk) or cut short
  (the backend closed early).  By then the proxy has usually forwarded the head, so
  it cannot answer 502: it closes the client connection without ending the body,
  so the client cannot mistake the cut body for a complete one (RFC 9112 §8).

``request_method`` is the method the response answers (HEAD and CONNECT change the
framing); ``needs_eof`` means the backend closes the connection after ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseVector:
    id: str
    raw: bytes
    expect: int | str  # "ok", 502 or "abort"
    rfc: str
    note: str = ""
    request_method: str = "GET"
    needs_eof: bool = False
    framing: str | None = None  # for "ok": the expected Framing.kind
    body: bytes | None = None  # for "ok": the expected body of the final response


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
V = ResponseVector

RESPONSE_VECTORS: list[ResponseVector] = [
    # ------------------------------------------------------------------ well-formed
    V("ok-content-length", OK + b"Content-Length: 5\r\n\r\nhello", "ok", "RFC 9112 §6.3 rule 6",
      framing="length", body=b"hello"),
    V("ok-chunked", OK + CHUNKED + b"\r\n5\r\nhello\r\n0\r\n\r\n", "ok", "RFC 9112 §6.3 rule 4",
      framing="chunked", body=b"hello"),
    V("ok-chunked-case-insensitive", OK + b"Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "ok",
      "RFC 9112 §7", framing="chunked", body=b"hello"),
    V("ok-gzip-chunked", OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "ok",
      "RFC 9112 §6.1", "the proxy forwards the gzip coding as is", framing="chunked", body=b"abc"),
    V("ok-close-delimited", OK + b"\r\nhello", "ok", "RFC 9112 §6.3 rule 8", needs_eof=True,
      framing="close", body=b"hello"),
    V("ok-te-not-chunked-is-close-delimited", OK + b"Transfer-Encoding: gzip\r\n\r\nhello", "ok",
      "RFC 9112 §6.3 rule 4", needs_eof=True, framing="close", body=b"hello"),
    V("ok-head-with-content-length", OK + b"Content-Length: 100\r\n\r\n", "ok", "RFC 9112 §6.3 rule 1",
      request_method="HEAD", framing="none", body=b""),
    V("ok-head-with-chunked", OK + CHUNKED + b"\r\n", "ok", "RFC 9112 §6.3 rule 1",
      request_method="HEAD", framing="none", body=b""),
    V("ok-204", b"HTTP/1.1 204 No Content\r\n\r\n", "ok", "RFC 9112 §6.3 rule 1", framing="none", body=b""),
    V("ok-304-with-content-length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "ok",
      "RFC 9112 §6.3 rule 1", framing="none", body=b""),
    V("ok-100-then-200", b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nhi", "ok",
      "RFC 9110 §15.2", "1xx, then the final response", framing="length", body=b"hi"),
    V("ok-two-1xx-then-200",
      b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
      + OK + b"Content-Length: 2\r\n\r\nhi", "ok", "RFC 9110 §15.2", framing="length", body=b"hi"),
    V("ok-connect-200-tunnel", b"HTTP/1.1 200 Connection established\r\n\r\n", "ok", "RFC 9112 §6.3 rule 2",
      request_method="CONNECT", framing="tunnel", body=b""),
    V("ok-empty-reason", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "ok", "RFC 9112 §4",
      framing="length", body=b""),
    V("ok-missing-reason", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "ok", "RFC 9112 §4",
      "tolerated: the reason carries no meaning", framing="length", body=b""),
    V("ok-http10", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", "ok", "RFC 9112 §2.3",
      framing="length", body=b"hi"),
    V("ok-chunked-trailers", OK + CHUNKED + b"\r\n2\r\nhi\r\n0\r\nServer-Timing: db;dur=5\r\n\r\n", "ok",
      "RFC 9112 §7.1.2", framing="chunked", body=b"hi"),

    # ------------------------------------------------------------------ framing
    V("te-and-cl", OK + CHUNKED + b"Content-Length: 5\r\n\r\n0\r\n\r\n", 502, "RFC 9112 §6.3 rule 3",
      "response splitting probe"),
    V("cl-duplicate-identical", OK + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi", 502,
      "RFC 9112 §6.3 rule 5"),
    V("cl-duplicate-different", OK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi!", 502,
      "RFC 9112 §6.3 rule 5"),
    V("cl-list", OK + b"Content-Length: 2, 2\r\n\r\nhi", 502, "RFC 9110 §8.6"),
    V("cl-not-digits", OK + b"Content-Length: abc\r\n\r\n", 502, "RFC 9110 §8.6"),
    V("cl-negative", OK + b"Content-Length: -1\r\n\r\n", 502, "RFC 9110 §8.6"),
    V("cl-invalid-on-304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n", 502, "RFC 9110 §8.6",
      "framing fields are validated even when there is no body"),
    V("te-in-http10-response", b"HTTP/1.0 200 OK\r\n" + CHUNKED + b"\r\n0\r\n\r\n", 502, "RFC 9112 §6.1"),
    V("te-chunked-twice", OK + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 502, "RFC 9112 §6.1"),
    V("te-quoted", OK + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n', 502, "RFC 9112 §6.1"),
    V("te-empty-element", OK + b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 502, "RFC 9112 §6.1"),
    V("chunk-size-0x", OK + CHUNKED + b"\r\n0x2\r\nhi\r\n0\r\n\r\n", "abort", "RFC 9112 §7.1"),
    V("chunk-size-17-digits", OK + CHUNKED + b"\r\n00000000000000002\r\nhi\r\n0\r\n\r\n", "abort", "RFC 9112 §7.1"),
    V("chunk-data-missing-crlf", OK + CHUNKED + b"\r\n2\r\nhiXX0\r\n\r\n", "abort", "RFC 9112 §7.1"),

    # ------------------------------------------------------------------ head syntax
    V("space-before-colon", OK + b"Content-Length : 2\r\n\r\nhi", 502, "RFC 9112 §5.1"),
    V("obs-fold", OK + b"X-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §5.2",
      "a proxy MUST reject (502) or unfold"),
    V("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 502, "RFC 9112 §2.2"),
    V("bare-cr", OK + b"X-A: 1\rContent-Length: 0\r\n\r\n", 502, "RFC 9112 §2.2"),
    V("nul-in-value", OK + b"X-A: \x00\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9110 §5.5"),
    V("status-two-digits", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §4"),
    V("status-four-digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §4"),
    V("status-600", b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9110 §15"),
    V("status-099", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9110 §15"),
    V("version-http2", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §2.3"),
    V("version-lowercase", b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §2.3"),
    V("double-space-after-version", b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §4"),
    V("control-in-reason", b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", 502, "RFC 9112 §4"),
    V("not-http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", 502, "RFC 9112 §4"),
    V("head-too-large", OK + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)), 502,
      "RFC 6585 §5"),

    # ------------------------------------------------------------------ cut short
    V("eof-in-head", b"HTTP/1.1 200 OK\r\nContent-Le", 502, "RFC 9112 §8", needs_eof=True),
    V("eof-in-content-length-body", OK + b"Content-Length: 10\r\n\r\nhello", "abort", "RFC 9112 §8",
      needs_eof=True),
    V("eof-in-chunked-body", OK + CHUNKED + b"\r\n5\r\nhello\r\n", "abort", "RFC 9112 §8",
      needs_eof=True),
]

assert len({v.id for v in RESPONSE_VECTORS}) == len(RESPONSE_VECTORS)
