"""What a proxy changes in a message it forwards (RFC 9110 §7.6).

Theory of operation
-------------------
A proxy joins two connections, and some fields describe only one of them: they are
*hop-by-hop* (RFC 9110 §7.6.1).  ``Connection`` and the fields it names, keep-alive,
the transfer coding, an Upgrade offer, proxy credentials: each belongs to the hop it
arrived on and must be removed before forwarding, or the next hop would act on
promises this proxy never made (a client's "Connection: close" closing the pooled
backend connection; a "Transfer-Encoding: chunked" describing bytes the proxy has
re-framed).

What the proxy adds is end-to-end information about the hop it removed:

* ``X-Forwarded-For`` (the client's address, appended to any list already there),
  ``X-Forwarded-Proto`` (``https`` when the proxy terminated TLS) and
  ``X-Forwarded-Host`` (the Host the client asked for): the de facto headers that
  tell a backend what the proxy took away;
* ``Via`` (RFC 9110 §7.6.3): "1.1 tlsproxy" appended, which also lets a proxy notice
  a forwarding loop.

Framing is re-derived, never copied: the forwarded message gets exactly one framing
header, written from the ``Framing`` the reader decided, so a backend cannot read the
body length differently from the proxy (request smuggling, RFC 9112 §11.2).

One field is the terminator's own, not the origin's: ``Strict-Transport-Security``
(RFC 6797, HSTS), which tells a browser to use nothing but HTTPS for this host.  It is
the TLS listener's promise, so the proxy can add it to every response it sends over
TLS (``hsts=``; ``proxy.modes.redirect`` tells the whole lesson).  An origin that set its
own keeps it, alone: RFC 6797 §7.1, "If an STS header field is included, the HSTS Host
MUST include only one such header field", and a browser given two would honour only the
first (§8.1).  nginx's ``add_header`` would send both; here the origin's wins, since it
knows its subdomains better than the proxy in front of it.

Each function makes one pass over the field lines (this runs for every request and
every response): fields it drops or rewrites are skipped on the way, and what the
proxy adds goes at the end (the order of *different* field names carries no meaning,
RFC 9110 §5.3).
"""

from __future__ import annotations

from proxy.errors import InvalidUpstreamResponse
from proxy.http1.events import Request, Response
from proxy.http1.framing import parse_transfer_coding, persistent_connection
from proxy.http1.head import split_absolute_form
from proxy.http1.headers import Headers

# RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding
# and Upgrade; RFC 2616 §13.5.1 added Trailer, Proxy-Authenticate and
# Proxy-Authorization, and every major proxy (nginx, HAProxy, Go's ReverseProxy)
# still strips them.
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# Fields a client must not be able to remove by naming them in Connection.  RFC 9110
# §7.6.1 forbids a *sender* to name a field "intended for all recipients" as a connection
# option, and tells an intermediary to remove every field Connection names; a client that
# names Host anyway is broken or is trying to make the proxy forward a request without
# one.  Here this proxy departs from the RFC's removal rule and keeps Host: the backend
# needs it to pick a site.  (nginx removes no Connection-named field at all.)  Framing
# fields are re-written anyway.
_PROTECTED = frozenset({"host"})

# What prepare_upstream_request drops and writes itself.
_REWRITTEN_UPSTREAM = HOP_BY_HOP | {
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
}
_REWRITTEN_DOWNSTREAM = HOP_BY_HOP | {"via"}

# Fields that must not travel in a trailer section.  RFC 9110 §6.5.1 ¶2: "Many fields
# cannot be processed outside the header section because their evaluation is necessary
# prior to receiving the content, such as those that describe message framing, routing,
# authentication, request modifiers, response controls, or content format.  A sender
# MUST NOT generate a trailer field unless [...] the definition permits [it]"; ¶3: "A
# recipient MUST NOT merge a trailer field into a header section unless [...]".  The
# proxy's own decisions (framing, route, backend) are made from the header section and
# "cannot be unmade by the later discovery of trailer fields" (§6.5 ¶2); but a next hop
# that merges trailers anyway would act on a late field the proxy never checked.  So
# the proxy does not forward what a sender may not send.  RFC 9110 names categories
# only; the examples are RFC 7230 §4.1.2's (obsoleted, but the list RFC 9110
# condensed), which also said "A recipient MUST ignore (or consider as an error) any
# fields that are forbidden to be sent in a trailer, since processing them [...] might
# bypass external security filters".
_TRAILER_FRAMING = {
    # RFC 9112 §6.3: the body length.  A late "Content-Length: 0" that a next hop merged
    # re-frames a body already sent, and the rest is read as a second, smuggled request.
    "content-length",
    "transfer-encoding",
}
_TRAILER_ROUTING = {
    # RFC 9110 §7.2: Host picks the site.  A late Host re-routes a request after the
    # proxy routed (and authorised) it by the first one.
    "host",
}
_TRAILER_REQUEST_MODIFIERS = {
    # RFC 7231 §5.1 "controls" (RFC 9110 §7.6.2 Max-Forwards, §10.1.1 Expect, §14.2
    # Range; RFC 9111 §5.2 Cache-Control, §5.4 Pragma) and §5.2 "conditionals" (RFC 9110
    # §13.1): they change what the request asks for, and the origin must know them
    # before it acts: a late If-Match would make a write conditional after it was done.
    # (TE is hop-by-hop, below.)
    "cache-control", "expect", "max-forwards", "pragma", "range",
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
}
_TRAILER_AUTHENTICATION = {
    # RFC 9110 §11 (RFC 7235) and RFC 6265 (cookies): credentials and challenges.  A
    # late Authorization or Cookie would authenticate a request after the fact, past
    # any check made on the header section; a late Set-Cookie fixes a session the
    # proxy never saw being set.  (Proxy-Authorization, Proxy-Authenticate: below.)
    "authorization", "www-authenticate", "cookie", "set-cookie",
}
_TRAILER_RESPONSE_CONTROLS = {
    # RFC 7231 §7.1 "control data" (RFC 9110 §6.6.1 Date, §10.2 Location, Retry-After,
    # §12.5.5 Vary; RFC 9111 §5 Age, Cache-Control, Expires, Warning): how a cache stores
    # the response and where the client goes next, decided when the header arrived.
    "age", "cache-control", "date", "expires", "location", "retry-after", "vary", "warning",
}
_TRAILER_CONTENT_FORMAT = {
    # RFC 9110 §8.3 Content-Type, §8.4 Content-Encoding, §14.4 Content-Range, §6.6.2
    # Trailer: how to read the content (and which fields follow it).  A late
    # Content-Type turns an upload into HTML after a filter judged it harmless.
    "content-encoding", "content-type", "content-range", "trailer",
}
_TRAILER_FORWARDING = {
    # What this proxy writes itself (RFC 9110 §7.6.3 Via; RFC 7239 Forwarded and the de
    # facto X-Forwarded-*): a client must not get back, in a trailer, the spoofed client
    # address or scheme that ``prepare_upstream_request`` replaced in the header.
    "via", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
}
# Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection, and never go to the next.
_NOT_IN_TRAILERS: frozenset[str] = frozenset(
    HOP_BY_HOP
    | _TRAILER_FRAMING
    | _TRAILER_ROUTING
    | _TRAILER_REQUEST_MODIFIERS
    | _TRAILER_AUTHENTICATION
    | _TRAILER_RESPONSE_CONTROLS
    | _TRAILER_CONTENT_FORMAT
    | _TRAILER_FORWARDING
)


def _connection_options(headers: Headers) -> frozenset[str] | set[str]:
    """The field names a Connection field declares hop-by-hop (RFC 9110 §7.6.1)."""
    if not headers._values("connection"):
        return frozenset()
    return set(headers.tokens("connection")) - _PROTECTED


def strip_hop_by_hop(headers: Headers) -> Headers:
    """A copy of ``headers`` without hop-by-hop fields or the fields Connection names."""
    drop = HOP_BY_HOP | _connection_options(headers)
    return Headers._from_fields([f for f in headers._fields if f[0] not in drop])


def client_keep_alive(request: Request) -> bool:
    """RFC 9112 §9.3: may the client send another request on this connection?"""
    if request.framing.kind == "tunnel":
        return False
    return persistent_connection(request.version, request.headers)


def prepare_upstream_request(
    request: Request,
    *,
    client_ip: str,
    proto: str,
    via: str = "1.1 tlsproxy",
    default_host: str = "",
) -> Request:
    """The request to send to the backend; ``request`` itself is not changed.

    * hop-by-hop fields removed (see ``strip_hop_by_hop``), Content-Length too;
    * exactly one framing header, from ``request.framing``: ``Content-Length: n`` for
      "length", ``Transfer-Encoding: chunked`` for "chunked", none for "none";
    * version HTTP/1.1 (the proxy speaks 1.1 to the backend whatever the client spoke);
    * an absolute-form target (forward proxy) becomes origin-form, and Host is set
      from the URI (RFC 9112 §3.2.2: the URI's authority overrides Host);
    * X-Forwarded-For += client_ip; X-Forwarded-Proto = proto; X-Forwarded-Host = Host;
      Via += via;
    * an HTTP/1.0 request without Host gets ``Host: default_host``, because the
      HTTP/1.1 request it becomes MUST have one (RFC 9112 §3.2; an empty value is
      what RFC 9110 §7.2 prescribes when there is no authority to name).
    No Connection field is added: persistence to the backend is the pool's business.
    """
    source = request.headers
    options = _connection_options(source)
    forwarded_for: list[str] = []
    prior_via: list[str] = []
    fields: list[tuple[str, str, str]] = []
    append = fields.append
    target = request.target
    host = authority = None
    if target[:1] != "/" and target != "*" and "://" in target:
        _, authority, target = split_absolute_form(target)
        host = authority
        append(("host", "Host", authority))
    for field in source._fields:
        lower = field[0]
        if lower in options:
            continue
        if lower in _REWRITTEN_UPSTREAM:
            if lower == "x-forwarded-for":
                forwarded_for.append(field[2])
            elif lower == "via":
                prior_via.append(field[2])
            continue
        if lower == "host":
            if authority is not None:
                continue  # the URI's authority replaces Host
            host = field[2]
        append(field)

    if host is None:
        append(("host", "Host", default_host))
    framing = request.framing
    if framing.kind == "length":
        append(("content-length", "Content-Length", str(framing.length)))
    elif framing.kind == "chunked":
        append(("transfer-encoding", "Transfer-Encoding", "chunked"))
    forwarded_for.append(client_ip)
    append(("x-forwarded-for", "X-Forwarded-For", ", ".join(forwarded_for)))
    append(("x-forwarded-proto", "X-Forwarded-Proto", proto))
    if host:
        append(("x-forwarded-host", "X-Forwarded-Host", host))
    prior_via.append(via)
    append(("via", "Via", ", ".join(prior_via)))
    return Request(
        request.method,
        target,
        "HTTP/1.1",
        Headers._from_fields(fields),
        framing=framing,
        keep_alive=request.keep_alive,
        expect_continue=request.expect_continue,
    )


STS = "strict-transport-security"


def prepare_downstream_response(
    response: Response, *, client_version: str, request_method: str, via: str = "1.1 tlsproxy",
    hsts: str | None = None,
) -> tuple[Response, str]:
    """The response to send to the client, and how to send its body.

    ``body_mode`` is "none", "length" (Content-Length kept), "chunked" (the proxy
    chunk-encodes what it reads) or "close" (raw bytes, then close the connection).
    A chunked or close-delimited upstream body goes out chunked to an HTTP/1.1
    client and close-delimited to an HTTP/1.0 client, who does not know chunked
    (RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request).
    The response's version is HTTP/1.1 (RFC 9110 §2.5: a server sends its own
    version).  The caller adds Connection as it decides (close for "close" mode),
    and must not forward a 1xx to an HTTP/1.0 client (RFC 9110 §15.2).

    ``hsts`` (only on a TLS listener: RFC 6797 §7.2) is added as Strict-Transport-Security
    unless the origin sent its own (see the module docstring); not to a 1xx.
    """
    source = response.headers
    options = _connection_options(source)
    drop = _REWRITTEN_DOWNSTREAM | options
    kind = response.framing.kind
    if request_method == "HEAD" or kind == "none" or kind == "tunnel":
        mode = "none"
    elif kind == "length":
        mode = "length"
    else:
        # Chunked or close-delimited upstream: re-framed here, so no Content-Length.
        drop = drop | {"content-length"}
        # Keep any transfer coding the backend applied besides chunked (gzip, ...):
        # dropping it with Transfer-Encoding would hand the client coded bytes unannounced.
        codings = [
            c for c in parse_transfer_coding(source._values("transfer-encoding") or []) if c != "chunked"
        ]
        if client_version == "HTTP/1.1":
            mode = "chunked"
        elif codings:
            raise InvalidUpstreamResponse(
                "a transfer coding other than chunked cannot be sent to an HTTP/1.0 client"
            )
        else:
            mode = "close"
    prior_via = [] if "via" in options else (source._values("via") or [])
    fields = [f for f in source._fields if f[0] not in drop]
    if mode == "chunked":
        fields.append(("transfer-encoding", "Transfer-Encoding", ", ".join(codings + ["chunked"])))
    fields.append(("via", "Via", ", ".join(prior_via + [via])))
    if hsts is not None and response.status >= 200 and (STS in options or not source._values(STS)):
        fields.append((STS, "Strict-Transport-Security", hsts))
    forwarded = Response(
        "HTTP/1.1",
        response.status,
        response.reason,
        Headers._from_fields(fields),
        framing=response.framing,
        keep_alive=response.keep_alive,
    )
    return forwarded, mode


def prepare_trailers(trailers: Headers, headers: Headers | None = None) -> Headers:
    """The trailer fields safe to forward; ``trailers`` itself is not changed.

    Dropped: every field of ``_NOT_IN_TRAILERS``, and every field a Connection field
    names: RFC 9110 §7.6.1 ¶5, an intermediary must "remove any header or trailer
    field(s) from the message with the same name as the connection-option".  Pass the
    message's header section as ``headers`` for its Connection to count; a Connection
    line inside the trailer section is dropped too, and what it names with it (a sender
    that declared a field hop-by-hop did not mean it for the next hop).  Everything
    else (a checksum, ``Server-Timing``, ``Content-Digest``) is kept, in order: fields
    of the same name are processed in the order received (RFC 9110 §6.5.2 ¶2).
    """
    drop = _NOT_IN_TRAILERS
    options = _connection_options(trailers)
    if headers is not None:
        options = options | _connection_options(headers)
    if options:
        drop = drop | options
    return Headers._from_fields([f for f in trailers._fields if f[0] not in drop])
