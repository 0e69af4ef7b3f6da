"""Malformed and borderline HTTP/1.1 requests, and what the proxy must answer.

Each row is one request as raw bytes, the outcome the proxy's parser must reach,
and the RFC section that decides it.  Most rows are request-smuggling or
request-splitting probes: two HTTP implementations that disagree on such a message
can be made to disagree on where a request ends (RFC 9112 §11.2).

``expect`` is either an HTTP status code (the proxy refuses the request with that
status and closes the connection) or ``"ok"`` (the parser accepts every message in
``raw``; through a live proxy the request is forwarded and the answer is whatever
the backend or the router gives: never 400, 413, 414, 431, 501 or 505).

``mode`` says which listener the row is for: ``"reverse"`` (``RequestReader()``:
no absolute-form, no CONNECT) or ``"forward"`` (``allow_absolute_form=True,
allow_connect=True``).

``needs_eof``: the outcome is only reached when the client then closes its sending
side (a request cut short).  Every other row is decided from the bytes alone: the
parser never waits for more data before refusing a bad request.

``body``: for an "ok" row, the decoded body of the first request, when it matters.

The table is plain data so that ``tests/vectors/test_vectors.py`` can run it
through ``RequestReader`` and an integration test can replay it against a live
proxy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestVector:
    id: str
    raw: bytes
    expect: int | str  # HTTP status, or "ok"
    rfc: str
    note: str = ""
    mode: str = "reverse"  # "reverse" | "forward"
    needs_eof: bool = False
    body: bytes | None = None


H = b"Host: example.com\r\n"
GET = b"GET / HTTP/1.1\r\n" + H
POST = b"POST /upload HTTP/1.1\r\n" + H
CHUNKED = b"Transfer-Encoding: chunked\r\n"


def _post(framing: bytes, body: bytes = b"") -> bytes:
    return POST + framing + b"\r\n" + body


def _chunked(body: bytes) -> bytes:
    return _post(CHUNKED, body)


V = RequestVector

REQUEST_VECTORS: list[RequestVector] = [
    # ------------------------------------------------------------------ well-formed
    V("ok-get", GET + b"\r\n", "ok", "RFC 9112 §3"),
    V("ok-http10-without-host", b"GET / HTTP/1.0\r\n\r\n", "ok", "RFC 9112 §3.2",
      "Host is required in HTTP/1.1 only"),
    V("ok-content-length", _post(b"Content-Length: 5\r\n", b"hello"), "ok", "RFC 9112 §6.2", body=b"hello"),
    V("ok-content-length-zero", _post(b"Content-Length: 0\r\n"), "ok", "RFC 9110 §8.6", body=b""),
    V("ok-content-length-leading-zeros", _post(b"Content-Length: 005\r\n", b"hello"), "ok",
      "RFC 9110 §8.6", "1*DIGIT allows leading zeros", body=b"hello"),
    V("ok-content-length-ows", _post(b"Content-Length: \t5 \t\r\n", b"hello"), "ok", "RFC 9112 §5.1",
      "OWS around a field value is not part of it", body=b"hello"),
    V("ok-chunked", _chunked(b"5\r\nhello\r\n0\r\n\r\n"), "ok", "RFC 9112 §7.1", body=b"hello"),
    V("ok-chunked-case-insensitive", _post(b"Transfer-Encoding: Chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
      "ok", "RFC 9112 §7", "transfer-coding names are case-insensitive", body=b"hello"),
    V("ok-chunked-upper-name-and-value", _post(b"TRANSFER-ENCODING: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
      "ok", "RFC 9110 §5.1, RFC 9112 §7", body=b"hello"),
    V("ok-te-ows-spaces", _post(b"Transfer-Encoding:   chunked   \r\n", b"5\r\nhello\r\n0\r\n\r\n"),
      "ok", "RFC 9112 §5.1", "leading/trailing OWS is not part of the value", body=b"hello"),
    V("ok-te-ows-tabs", _post(b"Transfer-Encoding:\tchunked\t\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
      "ok", "RFC 9112 §5.1", "OWS includes HTAB", body=b"hello"),
    V("ok-chunk-extension", _chunked(b"5;name=value\r\nhello\r\n0\r\n\r\n"), "ok", "RFC 9112 §7.1.1",
      body=b"hello"),
    V("ok-chunk-extension-quoted", _chunked(b'5;name="a b;c"\r\nhello\r\n0\r\n\r\n'), "ok",
      "RFC 9112 §7.1.1", body=b"hello"),
    V("ok-chunk-extension-bws", _chunked(b"5 ; name = value\r\nhello\r\n0\r\n\r\n"), "ok",
      "RFC 9112 §7.1.1", "BWS around ';' and '='", body=b"hello"),
    V("ok-chunk-size-upper-hex", _chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), "ok", "RFC 9112 §7.1",
      body=b"0123456789"),
    V("ok-chunk-size-leading-zeros", _chunked(b"0005\r\nhello\r\n0000\r\n\r\n"), "ok", "RFC 9112 §7.1",
      body=b"hello"),
    V("ok-chunk-size-16-digits", _chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"), "ok",
      "RFC 9112 §7.1", "16 hex digits is the most we read", body=b"hello"),
    V("ok-chunked-trailers", _chunked(b"5\r\nhello\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n"), "ok",
      "RFC 9112 §7.1.2", body=b"hello"),
    V("ok-leading-empty-line", b"\r\n" + GET + b"\r\n", "ok", "RFC 9112 §2.2",
      "a server SHOULD ignore at least one empty line before the request-line"),
    V("ok-options-asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", "ok", "RFC 9112 §3.2.4"),
    V("ok-host-with-port", b"GET / HTTP/1.1\r\nHost: example.com:8443\r\n\r\n", "ok", "RFC 9112 §3.2"),
    V("ok-host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", "ok", "RFC 3986 §3.2.2"),
    V("ok-host-empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", "ok", "RFC 9110 §7.2",
      "an empty Host is valid syntax (the router then finds no site)"),
    V("ok-obs-text-value", GET + b"X-Name: caf\xe9\r\n\r\n", "ok", "RFC 9110 §5.5", "obs-text is allowed"),
    V("ok-htab-inside-value", GET + b"X-List: a\tb\r\n\r\n", "ok", "RFC 9110 §5.5"),
    V("ok-pipelined", GET + b"\r\n" + _post(b"Content-Length: 2\r\n", b"hi") + GET + b"\r\n", "ok",
      "RFC 9112 §9.3.2"),
    V("ok-expect-100-continue", _post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"), "ok",
      "RFC 9110 §10.1.1", body=b"hello"),
    V("ok-absolute-form-forward", b"GET http://example.com/x HTTP/1.1\r\n" + H + b"\r\n", "ok",
      "RFC 9112 §3.2.2", mode="forward"),
    V("ok-connect-forward", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "ok",
      "RFC 9112 §3.2.3", mode="forward"),

    # ------------------------------------------------------------------ CL + TE
    V("cl-te", _post(b"Content-Length: 5\r\n" + CHUNKED, b"0\r\n\r\n"), 400, "RFC 9112 §6.3 rule 3",
      "CL.TE smuggling"),
    V("te-cl", _post(CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.3 rule 3",
      "TE.CL smuggling"),
    V("cl-te-http10", b"POST / HTTP/1.0\r\nContent-Length: 5\r\n" + CHUNKED + b"\r\n", 400,
      "RFC 9112 §6.1"),

    # ------------------------------------------------------------------ Content-Length
    V("cl-duplicate-identical", _post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), 400,
      "RFC 9112 §6.3 rule 5", "refused even when identical"),
    V("cl-duplicate-different", _post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400,
      "RFC 9112 §6.3 rule 5"),
    V("cl-list-identical", _post(b"Content-Length: 5, 5\r\n", b"hello"), 400, "RFC 9110 §8.6"),
    V("cl-list-different", _post(b"Content-Length: 5, 6\r\n", b"hello!"), 400, "RFC 9110 §8.6"),
    V("cl-plus-sign", _post(b"Content-Length: +5\r\n", b"hello"), 400, "RFC 9110 §8.6"),
    V("cl-minus-sign", _post(b"Content-Length: -5\r\n"), 400, "RFC 9110 §8.6"),
    V("cl-hex", _post(b"Content-Length: 0x5\r\n", b"hello"), 400, "RFC 9110 §8.6"),
    V("cl-space-inside", _post(b"Content-Length: 1 0\r\n", b"0123456789"), 400, "RFC 9110 §8.6"),
    V("cl-empty", _post(b"Content-Length: \r\n"), 400, "RFC 9110 §8.6"),
    V("cl-decimal-point", _post(b"Content-Length: 5.0\r\n", b"hello"), 400, "RFC 9110 §8.6"),
    V("cl-superscript-digit", _post(b"Content-Length: \xb2\r\n", b"he"), 400, "RFC 9110 §8.6",
      "latin-1 '²' passes str.isdigit() but is not DIGIT"),
    V("cl-huge", _post(b"Content-Length: 99999999999999999999999\r\n"), 413, "RFC 9112 §6.3",
      "overflow guard"),
    V("cl-over-limit", _post(b"Content-Length: 1073741825\r\n"), 413, "RFC 9110 §15.5.14",
      "over max_body_size"),
    V("cl-vertical-tab", _post(b"Content-Length: 5\x0b\r\n", b"hello"), 400, "RFC 9110 §5.5"),

    # ------------------------------------------------------------------ Transfer-Encoding
    V("te-http10", b"POST / HTTP/1.0\r\n" + CHUNKED + b"\r\n0\r\n\r\n", 400, "RFC 9112 §6.1",
      "HTTP/1.0 has no chunked: faulty framing"),
    V("te-chunked-then-other", _post(b"Transfer-Encoding: chunked, x\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.3 rule 4", "chunked must be the final coding"),
    V("te-other-then-chunked", _post(b"Transfer-Encoding: x, chunked\r\n", b"0\r\n\r\n"), 501,
      "RFC 9112 §6.1", "unknown coding before chunked"),
    V("te-gzip-chunked", _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501, "RFC 9112 §6.1"),
    V("te-chunked-gzip", _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.3 rule 4"),
    V("te-gzip-only", _post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.3 rule 4"),
    V("te-identity", _post(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.3 rule 4",
      "identity is no longer a transfer coding"),
    V("te-chunked-twice-list", _post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.1"),
    V("te-chunked-twice-lines", _post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400, "RFC 9112 §6.1"),
    V("te-gzip-line-then-chunked-line",
      _post(b"Transfer-Encoding: gzip\r\n" + CHUNKED, b"0\r\n\r\n"), 501, "RFC 9110 §5.3",
      "field lines combine into one list"),
    V("te-quoted", _post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"), 400, "RFC 9112 §6.1"),
    V("te-empty", _post(b"Transfer-Encoding: \r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.1"),
    V("te-empty-element-after", _post(b"Transfer-Encoding: chunked,\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.1", "stricter than RFC 9110 §5.6.1 on purpose"),
    V("te-empty-element-before", _post(b"Transfer-Encoding: , chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.1"),
    V("te-space-inside", _post(b"Transfer-Encoding: chun ked\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.1"),
    V("te-parameter", _post(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §6.1"),
    V("te-vertical-tab-before-value", _post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9110 §5.5"),
    V("te-form-feed-after-value", _post(b"Transfer-Encoding: chunked\x0c\r\n", b"0\r\n\r\n"), 400,
      "RFC 9110 §5.5"),
    V("te-nul-in-value", _post(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"), 400, "RFC 9110 §5.5"),
    V("te-high-byte-in-value", _post(b"Transfer-Encoding: chunked\xff\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.1", "obs-text is legal in values but not in a coding name"),
    V("te-high-byte-before-value", _post(b"Transfer-Encoding: \xa0chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §6.1", "non-breaking space is not OWS"),
    V("te-high-byte-in-name", _post(b"Transfer-Encoding\xff: chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9110 §5.6.2"),
    V("te-control-before-name", _post(b"\x0bTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9110 §5.6.2"),
    V("te-space-before-colon", _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §5.1"),
    V("te-tab-before-colon", _post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §5.1"),
    V("te-leading-space-on-line", _post(b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
      "RFC 9112 §5.2", "obs-fold: continues the previous line"),
    V("te-value-folded", _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400, "RFC 9112 §5.2"),

    # ------------------------------------------------------------------ line structure
    V("space-before-colon", GET + b"X-Name : v\r\n\r\n", 400, "RFC 9112 §5.1"),
    V("host-space-before-colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400, "RFC 9112 §5.1"),
    V("obs-fold", GET + b"X-Name: a\r\n b\r\n\r\n", 400, "RFC 9112 §5.2"),
    V("obs-fold-tab", GET + b"X-Name: a\r\n\tb\r\n\r\n", 400, "RFC 9112 §5.2"),
    V("whitespace-before-first-field", b"GET / HTTP/1.1\r\n " + H + b"\r\n", 400, "RFC 9112 §2.2"),
    V("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: example.com\n\n", 400, "RFC 9112 §2.2"),
    V("bare-lf-after-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400, "RFC 9112 §2.2"),
    V("bare-lf-in-field", GET + b"X-A: 1\nX-B: 2\r\n\r\n", 400, "RFC 9112 §2.2"),
    V("bare-lf-final-line", GET + b"\n", 400, "RFC 9112 §2.2"),
    V("bare-cr-in-field", GET + b"X-A: 1\rX-B: 2\r\n\r\n", 400, "RFC 9112 §2.2"),
    V("bare-cr-in-request-line", b"GET /\r HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §2.2"),
    V("bare-cr-before-crlf", GET + b"X-A: 1\r\r\n\r\n", 400, "RFC 9112 §2.2"),
    V("nul-in-name", GET + b"X-Na\x00me: v\r\n\r\n", 400, "RFC 9110 §5.5"),
    V("nul-in-value", GET + b"X-Name: a\x00b\r\n\r\n", 400, "RFC 9110 §5.5"),
    V("nul-in-target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2"),
    V("del-in-value", GET + b"X-Name: a\x7fb\r\n\r\n", 400, "RFC 9110 §5.5"),
    V("escape-in-value", GET + b"X-Name: a\x1bb\r\n\r\n", 400, "RFC 9110 §5.5"),
    V("empty-field-name", GET + b": v\r\n\r\n", 400, "RFC 9110 §5.1"),
    V("field-without-colon", GET + b"X-Name v\r\n\r\n", 400, "RFC 9112 §5"),
    V("non-token-field-name", GET + b"X(Name): v\r\n\r\n", 400, "RFC 9110 §5.6.2"),

    # ------------------------------------------------------------------ request line
    V("two-spaces-after-method", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3"),
    V("two-spaces-before-version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3"),
    V("trailing-space-after-version", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400, "RFC 9112 §3"),
    V("leading-space-before-method", b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3"),
    V("tab-separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3"),
    V("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2"),
    V("high-byte-in-target", b"GET /caf\xe9 HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2"),
    V("fragment-in-target", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2.1"),
    V("http09-request-line", b"GET /\r\n\r\n", 400, "RFC 9112 §3"),
    V("version-lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §2.3"),
    V("version-no-minor", b"GET / HTTP/1\r\n" + H + b"\r\n", 400, "RFC 9112 §2.3"),
    V("version-two-digit-major", b"GET / HTTP/11.1\r\n" + H + b"\r\n", 400, "RFC 9112 §2.3"),
    V("version-http2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, "RFC 9110 §15.6.6"),
    V("version-http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505, "RFC 9110 §15.6.6",
      "stricter than the RFC 9110 §2.5 SHOULD"),
    V("version-http09", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505, "RFC 9110 §15.6.6"),
    V("method-not-token", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9110 §9.1"),
    V("absolute-form-reverse", b"GET http://example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400,
      "RFC 9112 §3.2.2", "only the forward proxy accepts absolute-form"),
    V("absolute-form-userinfo", b"GET http://user@example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400,
      "RFC 9110 §4.2.4", mode="forward"),
    V("absolute-form-bad-scheme", b"GET ftp://example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400,
      "RFC 9110 §4.2", mode="forward"),
    V("authority-form-without-connect", b"GET example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 400,
      "RFC 9112 §3.2.3"),
    V("asterisk-form-without-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2.4"),
    V("connect-reverse", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501,
      "RFC 9110 §9.1", "the reverse proxy does not implement CONNECT"),
    V("connect-origin-form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2.3", mode="forward"),
    V("connect-without-port", b"CONNECT example.com HTTP/1.1\r\n" + H + b"\r\n", 400, "RFC 9112 §3.2.3",
      mode="forward"),
    V("connect-with-body", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
      400, "RFC 9110 §9.3.6", mode="forward"),
    V("request-line-too-long", b"GET /" + b"a" * 9000, 414, "RFC 9112 §3",
      "refused before any CRLF arrives"),
    V("field-line-too-long", GET + b"X-Big: " + b"a" * 9000, 431, "RFC 6585 §5"),
    V("too-many-fields", GET + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431,
      "RFC 6585 §5"),
    V("head-too-large", GET + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)), 431,
      "RFC 6585 §5"),

    # ------------------------------------------------------------------ Host
    V("host-missing", b"GET / HTTP/1.1\r\n\r\n", 400, "RFC 9112 §3.2"),
    V("host-duplicate-identical", GET + H + b"\r\n", 400, "RFC 9112 §3.2"),
    V("host-duplicate-different", GET + b"Host: evil.example\r\n\r\n", 400, "RFC 9112 §3.2",
      "routing confusion"),
    V("host-duplicate-http10", b"GET / HTTP/1.0\r\n" + H + H + b"\r\n", 400, "RFC 9112 §3.2"),
    V("host-with-space", b"GET / HTTP/1.1\r\nHost: example.com evil.example\r\n\r\n", 400, "RFC 9112 §3.2"),
    V("host-with-path", b"GET / HTTP/1.1\r\nHost: example.com/admin\r\n\r\n", 400, "RFC 9112 §3.2"),
    V("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n", 400, "RFC 9112 §3.2"),
    V("host-bad-port", b"GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n", 400, "RFC 9112 §3.2"),
    V("host-list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n", 400, "RFC 9112 §3.2"),

    # ------------------------------------------------------------------ chunked framing
    V("chunk-size-0x", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-plus", _chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-minus", _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-leading-space", _chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-trailing-space", _chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-trailing-tab", _chunked(b"5\t\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-17-digits", _chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1",
      "more than 16 hex digits"),
    V("chunk-size-overflow", _chunked(b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1",
      "integer overflow probe"),
    V("chunk-size-not-hex", _chunked(b"5g\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-empty", _chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-size-bare-lf", _chunked(b"5\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §2.2"),
    V("chunk-size-over-body-limit", _chunked(b"40000001\r\n"), 413, "RFC 9110 §15.5.14",
      "the declared size alone is over max_body_size"),
    V("chunk-ext-too-long", _chunked(b"5;x=" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400,
      "RFC 9112 §7.1.1", "chunk-extension flood"),
    V("chunk-ext-too-long-unterminated", _chunked(b"5;x=" + b"a" * 5000), 400, "RFC 9112 §7.1.1",
      "refused before the CRLF arrives"),
    V("chunk-ext-no-name", _chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1.1"),
    V("chunk-ext-space-in-value", _chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1.1"),
    V("chunk-ext-unterminated-quote", _chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400, "RFC 9112 §7.1.1"),
    V("chunk-ext-nul", _chunked(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1.1"),
    V("chunk-data-missing-crlf", _chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, "RFC 9112 §7.1",
      "the TE.0 / chunk-size desync probe"),
    V("chunk-data-too-short", _chunked(b"5\r\nhell\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-data-bare-lf", _chunked(b"5\r\nhello\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("chunk-data-bare-cr", _chunked(b"5\r\nhello\r0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    V("trailer-space-before-colon", _chunked(b"0\r\nX-T : 1\r\n\r\n"), 400, "RFC 9112 §7.1.2, §5.1"),
    V("trailer-obs-fold", _chunked(b"0\r\nX-T: 1\r\n 2\r\n\r\n"), 400, "RFC 9112 §7.1.2, §5.2"),
    V("trailer-bare-lf", _chunked(b"0\r\nX-T: 1\n\r\n"), 400, "RFC 9112 §2.2"),
    V("trailer-nul", _chunked(b"0\r\nX-T: \x00\r\n\r\n"), 400, "RFC 9110 §5.5"),

    # ------------------------------------------------------------------ cut short
    V("eof-in-head", b"GET / HTTP/1.1\r\nHost: exa", 400, "RFC 9112 §8", needs_eof=True),
    V("eof-in-content-length-body", _post(b"Content-Length: 10\r\n", b"hello"), 400, "RFC 9112 §8",
      "a cut body is never complete", needs_eof=True),
    V("eof-in-chunk-data", _chunked(b"a\r\nhello"), 400, "RFC 9112 §8", needs_eof=True),
    V("eof-before-last-chunk", _chunked(b"5\r\nhello\r\n"), 400, "RFC 9112 §8", needs_eof=True),
    V("eof-in-trailers", _chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n"), 400, "RFC 9112 §8", needs_eof=True),
]

# Every id is unique, so a failure names exactly one row.
assert len({v.id for v in REQUEST_VECTORS}) == len(REQUEST_VECTORS)
