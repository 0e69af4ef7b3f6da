"""Trailer sections of chunked messages, and which of their fields a proxy may pass on.

A chunked message can end with a *trailer section*: field lines after the last chunk
(RFC 9112 §7.1.2).  RFC 9110 §6.5.1 says why most fields cannot be trusted there:

    "Many fields cannot be processed outside the header section because their
    evaluation is necessary prior to receiving the content, such as those that
    describe message framing, routing, authentication, request modifiers, response
    controls, or content format.  A sender MUST NOT generate a trailer field unless
    the sender knows the corresponding header field name's definition permits the
    field to be sent in trailers."

and what a recipient must not do with them anyway:

    "A recipient MUST NOT merge a trailer field into a header section unless the
    recipient understands the corresponding header field definition and that
    definition explicitly permits and defines how trailer field values can be
    safely merged."

The proxy made its decisions (where the body ends, which backend, who the client is)
from the header section, and those "cannot be unmade by the later discovery of
trailer fields" (§6.5 ¶2).  A next hop that merges trailers would act on a field the
proxy never checked: a second Content-Length smuggles a request, a late Host re-routes
it, a late Authorization or Cookie authenticates it after the fact.  So the proxy
forwards only fields a sender may put there (``proxy.http1.prepare_trailers``).

Each row: ``trailer`` is the raw trailer field lines (each ending in CRLF, without
the empty line that ends the section); ``forwarded`` the field lines, as
``(name, value)`` in order, that must arrive exactly as sent; ``dropped`` the field
names (lower-case) that must not arrive at all; ``connection`` an optional Connection
field for the message's *header* section (RFC 9110 §7.6.1: the fields it names are
removed from the trailer section too).  Every row runs in both directions: a client's
request to the origin, and an origin's response to the client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrailerVector:
    id: str
    trailer: bytes
    forwarded: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...]
    rfc: str
    attack: str = ""
    connection: str | None = None  # a Connection field in the header section


CHECKSUM = ("Checksum", "abc")
T = CHECKSUM[0].encode() + b": " + CHECKSUM[1].encode() + b"\r\n"
V = TrailerVector

TRAILER_VECTORS: list[TrailerVector] = [
    # ------------------------------------------------------------------ forwarded
    V("none", b"", (), (), "RFC 9112 §7.1.2", "an empty trailer section is the common case"),
    V("checksum", T, (CHECKSUM,), (), "RFC 9110 §6.5",
      "\"Trailer fields can be useful for supplying message integrity checks\""),
    V("server-timing", b"Server-Timing: db;dur=53\r\n", (("Server-Timing", "db;dur=53"),), (),
      "RFC 9110 §6.5, W3C Server Timing", "\"delivery metrics\": defined for use in trailers"),
    V("content-digest", b"Content-Digest: sha-256=:LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=:\r\n",
      (("Content-Digest", "sha-256=:LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=:"),), (),
      "RFC 9530 §2", "allowed in trailers by its definition: not every Content-* field is dropped"),
    V("repeated-safe-field-keeps-order", b"Server-Timing: a\r\nServer-Timing: b\r\n",
      (("Server-Timing", "a"), ("Server-Timing", "b")), (), "RFC 9110 §6.5.2 ¶2",
      "\"trailer fields with the same name are processed in the order received\""),
    # ------------------------------------------------------------------ framing
    V("content-length", T + b"Content-Length: 0\r\n", (CHECKSUM,), ("content-length",),
      "RFC 9110 §6.5.1, RFC 9112 §6.3",
      "a second Content-Length, merged by a next hop, re-frames the body: request smuggling"),
    V("content-length-odd-case", b"content-LENGTH: 7\r\n" + T, (CHECKSUM,), ("content-length",),
      "RFC 9110 §5.1", "field names are case-insensitive: so is the filter"),
    V("transfer-encoding", T + b"Transfer-Encoding: chunked\r\n", (CHECKSUM,), ("transfer-encoding",),
      "RFC 9110 §6.5.1, RFC 9112 §6.1", "message framing; also hop-by-hop (RFC 9110 §7.6.1)"),
    # ------------------------------------------------------------------ routing
    V("host", b"Host: admin.internal\r\n" + T, (CHECKSUM,), ("host",), "RFC 9110 §6.5.1, §7.2",
      "re-routing by a late Host, after the proxy routed by the first"),
    # ------------------------------------------------------------------ authentication
    V("authorization", T + b"Authorization: Basic YWRtaW46YWRtaW4=\r\n", (CHECKSUM,), ("authorization",),
      "RFC 9110 §6.5.1, §11.6.2", "authenticating after the fact, past checks made on the header"),
    V("proxy-authorization", b"Proxy-Authorization: Basic YWRtaW46YWRtaW4=\r\n" + T, (CHECKSUM,),
      ("proxy-authorization",), "RFC 9110 §6.5.1, §11.7.2",
      "credentials for this proxy: authentication, and never meant for the next hop"),
    V("cookie", T + b"Cookie: session=stolen\r\n", (CHECKSUM,), ("cookie",), "RFC 9110 §6.5.1, RFC 6265 §5.4",
      "a session cookie is authentication: a late one logs the request in after the fact"),
    V("set-cookie", T + b"Set-Cookie: session=fixated; Path=/\r\n", (CHECKSUM,), ("set-cookie",),
      "RFC 9110 §6.5.1, RFC 6265 §4.1", "a late Set-Cookie fixes a session the header never set"),
    V("www-authenticate", T + b"WWW-Authenticate: Basic realm=\"x\"\r\n", (CHECKSUM,), ("www-authenticate",),
      "RFC 9110 §6.5.1, §11.6.1", "an authentication challenge after the content"),
    # ------------------------------------------------------------------ hop-by-hop
    V("connection-in-trailer", b"Connection: X-Hop\r\nX-Hop: secret\r\n" + T, (CHECKSUM,),
      ("connection", "x-hop"), "RFC 9110 §7.6.1",
      "Connection is hop-by-hop, and so is the field it names"),
    V("header-connection-names-a-trailer-field", b"X-Hop: secret\r\n" + T, (CHECKSUM,), ("x-hop",),
      "RFC 9110 §7.6.1 ¶5",
      "\"remove any header or trailer field(s) from the message with the same name as the connection-option\"",
      connection="X-Hop"),
    V("hop-by-hop", b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n" + T,
      (CHECKSUM,), ("keep-alive", "te", "upgrade", "proxy-connection"), "RFC 9110 §7.6.1",
      "fields of one connection never reach the next"),
    V("trailer", b"Trailer: Authorization\r\n" + T, (CHECKSUM,), ("trailer",), "RFC 9110 §6.6.2, RFC 7230 §4.1.2",
      "\"and Trailer\" itself: it announces fields before the content, not after"),
    # ------------------------------------------------------------------ content format
    V("content-type", T + b"Content-Type: text/html\r\n", (CHECKSUM,), ("content-type",),
      "RFC 9110 §6.5.1, §8.3", "a late type turns content a filter judged harmless into HTML"),
    V("content-encoding", T + b"Content-Encoding: gzip\r\n", (CHECKSUM,), ("content-encoding",),
      "RFC 9110 §6.5.1, §8.4", "the same bytes decoded differently after they were checked"),
    V("content-range", T + b"Content-Range: bytes 0-4/5\r\n", (CHECKSUM,), ("content-range",),
      "RFC 9110 §6.5.1, §14.4", "content format: which part of a representation this is"),
    # ------------------------------------------------------------------ modifiers and controls
    V("request-modifiers", b"Expect: 100-continue\r\nMax-Forwards: 0\r\nRange: bytes=0-0\r\n"
      b"If-Match: \"x\"\r\nIf-None-Match: *\r\nPragma: no-cache\r\n" + T, (CHECKSUM,),
      ("expect", "max-forwards", "range", "if-match", "if-none-match", "pragma"),
      "RFC 9110 §6.5.1, §13.1, RFC 7231 §5", "controls and conditionals change what is asked, before it is done"),
    V("response-controls", b"Cache-Control: public, max-age=31536000\r\nExpires: Thu, 01 Jan 2099 00:00:00 GMT\r\n"
      b"Vary: *\r\nLocation: https://evil.example/\r\nAge: 0\r\n" + T, (CHECKSUM,),
      ("cache-control", "expires", "vary", "location", "age"),
      "RFC 9110 §6.5.1, RFC 7231 §7.1", "a cache decided on the header; a late control would poison it"),
    # ------------------------------------------------------------------ what the proxy writes
    V("forwarding-identity", b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: admin\r\n"
      b"Forwarded: for=127.0.0.1\r\nVia: 1.1 trusted\r\n" + T, (CHECKSUM,),
      ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via"),
      "RFC 9110 §7.6.3, RFC 7239",
      "the proxy rewrote these in the header: a trailer must not bring back a spoofed (trusted, internal) address"),
    # ------------------------------------------------------------------ together
    V("several-at-once",
      b"Checksum: abc\r\nContent-Length: 0\r\nHost: admin.internal\r\nServer-Timing: db;dur=53\r\n"
      b"Authorization: Bearer forged\r\nSet-Cookie: session=fixated\r\nTransfer-Encoding: chunked\r\n"
      b"Cookie: session=stolen\r\nX-Request-Trace: 7\r\nContent-Type: text/html\r\n",
      (CHECKSUM, ("Server-Timing", "db;dur=53"), ("X-Request-Trace", "7")),
      ("content-length", "host", "authorization", "set-cookie", "transfer-encoding", "cookie", "content-type"),
      "RFC 9110 §6.5.1", "safe fields keep their order around the dropped ones"),
    V("only-unsafe", b"Content-Length: 0\r\nHost: admin.internal\r\nAuthorization: Bearer forged\r\n", (),
      ("content-length", "host", "authorization"), "RFC 9110 §6.5.1",
      "every field dropped: the section goes out empty, the message still ends"),
]


def trailer_fields(vector: TrailerVector) -> list[tuple[str, str]]:
    """The vector's trailer lines as (name, value), split the plain way (for building Headers)."""
    fields = []
    for line in vector.trailer.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            fields.append((name, value.strip(" \t")))
    return fields
