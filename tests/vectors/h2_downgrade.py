"""HTTP/2 requests, and what the strict h2 -> h1 downgrade must make of them.

Each row is one HTTP/2 request as the `h2` library delivers it (``H2Configuration(
header_encoding=None)``: the header block as a list of ``(name, value)`` byte pairs),
whether the HEADERS frame carried END_STREAM, the DATA payload lengths that follow,
an optional trailer block, and the outcome ``proxy.h2.downgrade`` must reach, with the
RFC section that decides it.  Most rows are the HTTP/2 downgrade attacks (Kettle,
"HTTP/2: The Sequel is Always Worse", 2021): H2.CL, H2.TE, CRLF injection through
names, values and pseudo-headers, request-line splitting, Host confusion.

``expect`` is ``"ok"`` or the HTTP status of the refusal (400, 413, 501).  For "ok"
rows, ``head`` is the exact HTTP/1.1 head ``prepare_upstream_request`` makes of the
request (client 192.0.2.1 on a TLS connection: ``proto="https"``), and
``forwarded_trailers`` the trailer fields it passes on.  For refused rows, ``reason``
is a substring of the error message (which must name the rule, not merely be a 400).

Replay (``tests/unit/test_h2_downgrade.py``): ``downgrade_request(headers,
end_stream=...)``, then ``body.data(n)`` for each DATA length, then the trailers (if
any), then ``body.end_stream()`` unless the HEADERS frame already ended the stream.
``mode`` "forward" allows CONNECT, as the forward proxy's reader does.
"""

from __future__ import annotations

from dataclasses import dataclass

Fields = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class H2Vector:
    id: str
    headers: Fields
    expect: int | str  # "ok" or an HTTP status
    rfc: str
    head: bytes = b""  # "ok": the HTTP/1.1 head sent to the backend
    reason: str = ""  # refused: a substring of the error message
    end_stream: bool = True  # END_STREAM on the HEADERS frame
    data: tuple[int, ...] = ()  # DATA payload lengths after HEADERS
    trailers: Fields | None = None  # a trailer HEADERS frame (with END_STREAM)
    forwarded_trailers: tuple[tuple[str, str], ...] = ()
    attack: str = ""
    mode: str = "reverse"  # "reverse" | "forward"


CLIENT_IP = "192.0.2.1"
PROTO = "https"


def req(method: bytes = b"GET", path: bytes | None = b"/", *fields: tuple[bytes, bytes],
        authority: bytes | None = b"example.com", scheme: bytes | None = b"https") -> Fields:
    """A request header block: the pseudo-headers in the usual order, then ``fields``."""
    pseudo = [(b":method", method)]
    if scheme is not None:
        pseudo.append((b":scheme", scheme))
    if authority is not None:
        pseudo.append((b":authority", authority))
    if path is not None:
        pseudo.append((b":path", path))
    return tuple(pseudo) + fields


def h1(start: bytes, *lines: bytes, host: bytes = b"example.com", xff: bytes = CLIENT_IP.encode()) -> bytes:
    """The forwarded head: start-line, Host, ``lines``, then what the proxy adds."""
    return (start + b"\r\nHost: " + host + b"\r\n" + b"".join(line + b"\r\n" for line in lines)
            + b"X-Forwarded-For: " + xff + b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: " + host
            + b"\r\nVia: 1.1 tlsproxy\r\n\r\n")


GET = h1(b"GET / HTTP/1.1")
CL5 = (b"content-length", b"5")
V = H2Vector

H2_VECTORS: list[H2Vector] = [
    # ------------------------------------------------------------------ accepted
    V("ok-get", req(), "ok", "RFC 9113 §8.3.1", GET),
    V("ok-fields-kept-in-order", req(b"GET", b"/a", (b"user-agent", b"curl/7.88"), (b"accept", b"*/*")), "ok",
      "RFC 9113 §8.3.1", h1(b"GET /a HTTP/1.1", b"user-agent: curl/7.88", b"accept: */*")),
    V("ok-query", req(b"GET", b"/search?q=a%20b&x=1"), "ok", "RFC 9113 §8.3.1",
      h1(b"GET /search?q=a%20b&x=1 HTTP/1.1")),
    V("ok-content-length", req(b"POST", b"/upload", CL5), "ok", "RFC 9113 §8.1.1",
      h1(b"POST /upload HTTP/1.1", b"Content-Length: 5"), end_stream=False, data=(5,)),
    V("ok-content-length-over-two-data", req(b"POST", b"/upload", CL5), "ok", "RFC 9113 §8.1.1",
      h1(b"POST /upload HTTP/1.1", b"Content-Length: 5"), end_stream=False, data=(2, 0, 3)),
    V("ok-content-length-zero", req(b"POST", b"/upload", (b"content-length", b"0")), "ok", "RFC 9110 §8.6",
      h1(b"POST /upload HTTP/1.1", b"Content-Length: 0")),
    V("ok-content-length-leading-zeros", req(b"POST", b"/upload", (b"content-length", b"005")), "ok",
      "RFC 9110 §8.6", h1(b"POST /upload HTTP/1.1", b"Content-Length: 5"), end_stream=False, data=(5,),
      attack="1*DIGIT allows leading zeros; the proxy writes its own canonical value"),
    V("ok-no-length-goes-chunked", req(b"POST", b"/upload", (b"content-type", b"text/plain")), "ok",
      "RFC 9113 §8.1, RFC 9112 §7.1", h1(b"POST /upload HTTP/1.1", b"content-type: text/plain",
                                         b"Transfer-Encoding: chunked"), end_stream=False, data=(3, 4),
      attack="the length is known only at END_STREAM: HTTP/1.1 says that with chunked"),
    V("ok-trailers-filtered", req(b"POST", b"/upload", (b"te", b"trailers")), "ok", "RFC 9113 §8.1, RFC 9110 §6.5.1",
      h1(b"POST /upload HTTP/1.1", b"Transfer-Encoding: chunked"), end_stream=False, data=(5,),
      trailers=((b"checksum", b"abc"), (b"host", b"admin.internal"), (b"content-length", b"0")),
      forwarded_trailers=(("checksum", "abc"),),
      attack="a late host or content-length, merged by the next hop, re-routes or re-frames"),
    V("ok-trailers-after-content-length-dropped", req(b"POST", b"/upload", CL5), "ok", "RFC 9112 §7.1.2",
      h1(b"POST /upload HTTP/1.1", b"Content-Length: 5"), end_stream=False, data=(5,),
      trailers=((b"checksum", b"abc"),), forwarded_trailers=(),
      attack="a Content-Length body has no trailer section in HTTP/1.1: checked, then dropped"),
    V("ok-te-trailers", req(b"GET", b"/", (b"te", b"trailers")), "ok", "RFC 9113 §8.2.2", GET,
      attack="te: trailers is allowed, and removed as hop-by-hop (RFC 9110 §7.6.1)"),
    V("ok-te-trailers-any-case", req(b"GET", b"/", (b"te", b"Trailers")), "ok", "RFC 9110 §10.1.4", GET),
    V("ok-host-without-authority", req(b"GET", b"/", (b"host", b"example.com"), authority=None), "ok",
      "RFC 9113 §8.3.1", GET, attack="an intermediary's translation of HTTP/1.1 may carry host only"),
    V("ok-authority-and-host-equal", req(b"GET", b"/", (b"host", b"example.com")), "ok", "RFC 9113 §8.3.1", GET),
    V("ok-authority-default-port-vs-host", req(b"GET", b"/", (b"host", b"example.com"), authority=b"example.com:443"),
      "ok", "RFC 9113 §8.3.1, RFC 3986 §6.2.3", h1(b"GET / HTTP/1.1", host=b"example.com:443"),
      attack="same authority after scheme-based normalisation (https: 443 is the default); :authority is sent"),
    V("ok-authority-host-case", req(b"GET", b"/", (b"host", b"example.com"), authority=b"Example.COM"), "ok",
      "RFC 3986 §6.2.2.1", h1(b"GET / HTTP/1.1", host=b"Example.COM"), attack="the host is case-insensitive"),
    V("ok-ipv6-authority", req(authority=b"[::1]:8443"), "ok", "RFC 3986 §3.2.2",
      h1(b"GET / HTTP/1.1", host=b"[::1]:8443")),
    V("ok-scheme-http-over-tls", req(scheme=b"http"), "ok", "RFC 9113 §8.3.1", GET,
      attack=":scheme may differ from the connection; X-Forwarded-Proto comes from the connection (https)"),
    V("ok-cookie-crumbs-joined", req(b"GET", b"/", (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")),
      "ok", "RFC 9113 §8.2.3", h1(b"GET / HTTP/1.1", b"cookie: a=1; b=2", b"accept: */*")),
    V("ok-path-double-slash", req(b"GET", b"//a"), "ok", "RFC 3986 §3.3", h1(b"GET //a HTTP/1.1"),
      attack="a valid absolute-path (empty first segment), forwarded as is, as the HTTP/1.1 reader does"),
    V("ok-options-asterisk", req(b"OPTIONS", b"*"), "ok", "RFC 9113 §8.3.1", h1(b"OPTIONS * HTTP/1.1")),
    V("ok-obs-text-in-value", req(b"GET", b"/", (b"x-name", b"caf\xe9")), "ok", "RFC 9110 §5.5",
      h1(b"GET / HTTP/1.1", b"x-name: caf\xe9")),
    V("ok-empty-value", req(b"GET", b"/", (b"x-empty", b"")), "ok", "RFC 9110 §5.5",
      h1(b"GET / HTTP/1.1", b"x-empty: ")),
    V("ok-inner-space-in-value", req(b"GET", b"/", (b"user-agent", b"a b\tc")), "ok", "RFC 9113 §8.2.1",
      h1(b"GET / HTTP/1.1", b"user-agent: a b\tc")),
    V("ok-forwarding-rules-apply", req(b"GET", b"/", (b"x-forwarded-for", b"203.0.113.9"),
                                       (b"x-forwarded-proto", b"http"), (b"via", b"2 edge")), "ok",
      "RFC 9110 §7.6.3", h1(b"GET / HTTP/1.1", xff=b"203.0.113.9, 192.0.2.1").replace(
          b"Via: 1.1 tlsproxy", b"Via: 2 edge, 1.1 tlsproxy"),
      attack="the same X-Forwarded-* and Via rules as an HTTP/1.1 request: a client cannot set the proto"),
    V("ok-connect-forward", req(b"CONNECT", None, authority=b"example.com:443", scheme=None), "ok",
      "RFC 9113 §8.5", h1(b"CONNECT example.com:443 HTTP/1.1", host=b"example.com:443"), end_stream=False,
      mode="forward"),
    # ------------------------------------------------------------------ H2.CL
    V("cl-more-data-than-declared", req(b"POST", b"/upload", CL5), 400, "RFC 9113 §8.1.1",
      reason="more than content-length 5", end_stream=False, data=(5, 1),
      attack="H2.CL: the extra DATA would be read by the backend as the next request"),
    V("cl-less-data-than-declared", req(b"POST", b"/upload", CL5), 400, "RFC 9113 §8.1.1",
      reason="ended after 3 of content-length 5", end_stream=False, data=(3,),
      attack="H2.CL: the backend would wait for (or take) bytes of the next request"),
    V("cl-zero-with-data", req(b"POST", b"/upload", (b"content-length", b"0")), 400, "RFC 9113 §8.1.1",
      reason="more than content-length 0", end_stream=False, data=(30,),
      attack="H2.CL: 'content-length: 0' with a smuggled request in the DATA"),
    V("cl-on-headers-with-end-stream", req(b"POST", b"/upload", CL5), 400, "RFC 9113 §8.1.1",
      reason="ended the stream", attack="a declared body that can never arrive"),
    V("cl-duplicate-different", req(b"POST", b"/upload", CL5, (b"content-length", b"6")), 400, "RFC 9112 §6.3",
      reason="more than one Content-Length", end_stream=False, data=(5,)),
    V("cl-duplicate-identical", req(b"POST", b"/upload", CL5, CL5), 400, "RFC 9110 §8.6",
      reason="more than one Content-Length", end_stream=False, data=(5,),
      attack="allowed by RFC 9110 §8.6, refused here as in HTTP/1.1 (h2 itself accepts it)"),
    V("cl-plus-sign", req(b"POST", b"/upload", (b"content-length", b"+5")), 400, "RFC 9110 §8.6",
      reason="not 1*DIGIT", end_stream=False, data=(5,)),
    V("cl-leading-space", req(b"POST", b"/upload", (b"content-length", b" 5")), 400, "RFC 9113 §8.2.1",
      reason="leading or trailing whitespace", end_stream=False, data=(5,)),
    V("cl-inner-space", req(b"POST", b"/upload", (b"content-length", b"5 5")), 400, "RFC 9110 §8.6",
      reason="not 1*DIGIT", end_stream=False, data=(5,)),
    V("cl-list", req(b"POST", b"/upload", (b"content-length", b"5, 5")), 400, "RFC 9110 §8.6",
      reason="not 1*DIGIT", end_stream=False, data=(5,)),
    V("cl-over-body-limit", req(b"POST", b"/upload", (b"content-length", b"2147483648")), 413, "RFC 9110 §15.5.14",
      reason="over the limit", end_stream=False, data=(1,)),
    V("data-after-end-stream", req(), 400, "RFC 9113 §5.1", reason="DATA after END_STREAM", data=(4,)),
    # ------------------------------------------------------------------ H2.TE and connection-specific fields
    V("te-transfer-encoding-chunked", req(b"POST", b"/upload", (b"transfer-encoding", b"chunked")), 400,
      "RFC 9113 §8.2.2", reason="connection-specific field 'transfer-encoding'", end_stream=False, data=(5,),
      attack="H2.TE: chunked framing written into the h1 head while the proxy framed by DATA"),
    V("connection-field", req(b"GET", b"/", (b"connection", b"x-secret")), 400, "RFC 9113 §8.2.2",
      reason="connection-specific field 'connection'", attack="makes the next hop drop the fields it names"),
    V("proxy-connection-field", req(b"GET", b"/", (b"proxy-connection", b"keep-alive")), 400, "RFC 9113 §8.2.2",
      reason="'proxy-connection'"),
    V("keep-alive-field", req(b"GET", b"/", (b"keep-alive", b"timeout=5")), 400, "RFC 9113 §8.2.2",
      reason="'keep-alive'"),
    V("upgrade-field", req(b"GET", b"/", (b"upgrade", b"websocket")), 400, "RFC 9113 §8.2.2",
      reason="'upgrade'", attack="an h1 Upgrade turns the pooled backend connection into a tunnel"),
    V("te-gzip", req(b"GET", b"/", (b"te", b"gzip")), 400, "RFC 9113 §8.2.2", reason="only 'trailers'"),
    V("te-trailers-and-gzip", req(b"GET", b"/", (b"te", b"trailers, gzip")), 400, "RFC 9113 §8.2.2",
      reason="only 'trailers'"),
    # ------------------------------------------------------------------ CRLF injection: values
    V("crlf-in-value", req(b"GET", b"/", (b"x", b"a\r\ntransfer-encoding: chunked")), 400, "RFC 9113 §8.2.1",
      reason="CR in the value of 'x'", attack="CRLF injection: a second field line in the h1 head"),
    V("lf-in-value", req(b"GET", b"/", (b"x", b"a\nhost: admin.internal")), 400, "RFC 9113 §8.2.1",
      reason="LF in the value", attack="bare-LF injection, for backends that end lines at LF"),
    V("nul-in-value", req(b"GET", b"/", (b"x", b"a\x00b")), 400, "RFC 9113 §8.2.1", reason="NUL in the value",
      attack="C-string backends truncate at NUL"),
    V("obs-fold-in-value", req(b"GET", b"/", (b"x", b"a\r\n b")), 400, "RFC 9113 §8.2.1, RFC 9112 §5.2",
      reason="CR in the value", attack="obs-fold: one field to one parser, two to another"),
    V("control-in-value", req(b"GET", b"/", (b"x", b"a\x01b")), 400, "RFC 9110 §5.5",
      reason="control byte 0x01"),
    V("value-leading-space", req(b"GET", b"/", (b"x", b" a")), 400, "RFC 9113 §8.2.1",
      reason="leading or trailing whitespace"),
    V("value-trailing-tab", req(b"GET", b"/", (b"x", b"a\t")), 400, "RFC 9113 §8.2.1",
      reason="leading or trailing whitespace"),
    # ------------------------------------------------------------------ field names
    V("crlf-in-name", req(b"GET", b"/", (b"x\r\ntransfer-encoding", b"chunked")), 400, "RFC 9113 §8.2.1",
      reason="CR in field name", attack="CRLF injection through a name"),
    V("empty-name", req(b"GET", b"/", (b"", b"x")), 400, "RFC 9110 §5.1", reason="empty field name"),
    V("colon-inside-name", req(b"GET", b"/", (b"x:y", b"z")), 400, "RFC 9113 §8.2.1",
      reason="colon inside field name", attack="h1 'x:y: z' is the field x with value 'y: z'"),
    V("uppercase-name", req(b"GET", b"/", (b"Content-Type", b"text/plain")), 400, "RFC 9113 §8.2",
      reason="uppercase field name"),
    V("space-in-name", req(b"GET", b"/", (b"transfer-encoding ", b"chunked")), 400, "RFC 9113 §8.2.1",
      reason="space, control or non-ASCII byte in field name",
      attack="'Transfer-Encoding : chunked' read as framing by a lenient h1 backend"),
    V("name-not-a-token", req(b"GET", b"/", (b"x(y)", b"z")), 400, "RFC 9110 §5.1",
      reason="is not a token", attack="passes h2's own §8.2.1 check; not a valid h1 field-name"),
    # ------------------------------------------------------------------ pseudo-headers
    V("no-method", req(b"GET")[1:], 400, "RFC 9113 §8.3.1", reason="no :method"),
    V("no-scheme", req(scheme=None), 400, "RFC 9113 §8.3.1", reason="no :scheme"),
    V("no-path", req(path=None), 400, "RFC 9113 §8.3.1", reason="no :path"),
    V("path-repeated", req() + ((b":path", b"/admin"),), 400, "RFC 9113 §8.3", reason=":path' repeated",
      attack="two request-lines: the proxy routes one, the backend serves the other"),
    V("unknown-pseudo-header", req() + ((b":foo", b"bar"),), 400, "RFC 9113 §8.3",
      reason="unknown pseudo-header"),
    V("pseudo-after-regular", req(b"GET", None, (b"accept", b"*/*")) + ((b":path", b"/admin"),), 400,
      "RFC 9113 §8.3", reason="after a regular field", attack="a late :path is the one a lenient peer takes"),
    V("status-in-request", req() + ((b":status", b"200"),), 400, "RFC 9113 §8.3", reason=":status in a request"),
    V("extended-connect-refused", req(b"CONNECT", b"/chat") + ((b":protocol", b"websocket"),), 400, "RFC 8441 §3",
      reason="extended CONNECT", mode="forward", end_stream=False,
      attack="RFC 8441 tunnels need SETTINGS_ENABLE_CONNECT_PROTOCOL, which this proxy never sends"),
    V("path-empty", req(b"GET", b""), 400, "RFC 9113 §8.3.1", reason="empty :path"),
    V("path-relative", req(b"GET", b"a/b"), 400, "RFC 9113 §8.3.1", reason="must start with '/'"),
    V("path-absolute-form", req(b"GET", b"https://admin.internal/"), 400, "RFC 9113 §8.3.1",
      reason="must start with '/'", attack="a backend would route by the URI's host, not Host"),
    V("path-asterisk-not-options", req(b"GET", b"*"), 400, "RFC 9113 §8.3.1", reason="only for OPTIONS"),
    V("path-fragment", req(b"GET", b"/a#b"), 400, "RFC 9113 §8.3.1", reason="fragment"),
    V("path-space", req(b"GET", b"/a HTTP/1.1"), 400, "RFC 9113 §8.3.1", reason="space or control byte",
      attack="request-line splitting: 'GET /a HTTP/1.1 HTTP/1.1'"),
    V("path-crlf-request-injection", req(b"GET", b"/ HTTP/1.1\r\nHost: admin.internal\r\n\r\nGET /x"), 400,
      "RFC 9113 §8.2.1", reason="CR in the value of ':path'",
      attack="a whole second request injected through :path"),
    V("method-space", req(b"GET /admin HTTP/1.1\r\nX: y", b"/"), 400, "RFC 9113 §8.2.1",
      reason="CR in the value of ':method'", attack="request-line injection through :method"),
    V("method-not-token", req(b"GET /admin", b"/"), 400, "RFC 9113 §8.3.1", reason=":method",
      attack="request-line splitting: 'GET /admin / HTTP/1.1'"),
    V("scheme-unsupported", req(scheme=b"ftp"), 400, "RFC 9110 §4.2", reason="unsupported :scheme"),
    # ------------------------------------------------------------------ authority and Host
    V("authority-userinfo", req(authority=b"user:pass@example.com"), 400, "RFC 9113 §8.3.1", reason="userinfo",
      attack="'trusted.example@evil.example' reads as trusted.example to a human"),
    V("authority-with-path", req(authority=b"example.com/evil"), 400, "RFC 9113 §8.3.1",
      reason="is not host[:port]"),
    V("authority-empty", req(authority=b""), 400, "RFC 9110 §4.2.1", reason="empty :authority"),
    V("authority-port-out-of-range", req(authority=b"example.com:99999"), 400, "RFC 3986 §3.2.3",
      reason="out of range"),
    V("host-differs-from-authority", req(b"GET", b"/", (b"host", b"admin.internal")), 400, "RFC 9113 §8.3.1",
      reason="differ", attack="Host confusion: routed by :authority, served by host"),
    V("host-443-under-http-scheme", req(b"GET", b"/", (b"host", b"example.com"), authority=b"example.com:443",
                                        scheme=b"http"), 400, "RFC 9113 §8.3.1, RFC 3986 §6.2.3", reason="differ",
      attack="under http the default port is 80: example.com:443 is another authority"),
    V("host-twice", req(b"GET", b"/", (b"host", b"example.com"), (b"host", b"admin.internal"), authority=None), 400,
      "RFC 9112 §3.2", reason="more than one host"),
    V("no-authority-no-host", req(authority=None), 400, "RFC 9113 §8.3.1", reason="neither :authority nor host"),
    V("host-userinfo", req(b"GET", b"/", (b"host", b"user@example.com"), authority=None), 400, "RFC 9113 §8.3.1",
      reason="userinfo in host"),
    # ------------------------------------------------------------------ CONNECT
    V("connect-on-reverse-listener", req(b"CONNECT", None, authority=b"example.com:443", scheme=None), 501,
      "RFC 9110 §9.1", reason="CONNECT is not supported", end_stream=False),
    V("connect-with-path", req(b"CONNECT", b"/", authority=b"example.com:443", scheme=None), 400, "RFC 9113 §8.5",
      reason="CONNECT with :scheme or :path", mode="forward", end_stream=False),
    V("connect-without-port", req(b"CONNECT", None, authority=b"example.com", scheme=None), 400, "RFC 9113 §8.5",
      reason="is not host:port", mode="forward", end_stream=False),
    V("connect-without-authority", req(b"CONNECT", None, authority=None, scheme=None), 400, "RFC 9113 §8.5",
      reason="CONNECT without :authority", mode="forward", end_stream=False),
    # ------------------------------------------------------------------ trailers
    V("trailer-pseudo-header", req(b"POST", b"/upload"), 400, "RFC 9113 §8.1", reason="in a trailer section",
      end_stream=False, data=(5,), trailers=((b":path", b"/admin"),)),
    V("trailer-crlf", req(b"POST", b"/upload"), 400, "RFC 9113 §8.2.1", reason="CR in the value",
      end_stream=False, data=(5,), trailers=((b"checksum", b"a\r\nhost: admin.internal"),)),
    V("trailer-transfer-encoding", req(b"POST", b"/upload"), 400, "RFC 9113 §8.2.2",
      reason="connection-specific field", end_stream=False, data=(5,),
      trailers=((b"transfer-encoding", b"chunked"),)),
]
