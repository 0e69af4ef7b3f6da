"""The strict HTTP/2 -> HTTP/1.1 downgrade of one request (RFC 9113 §8), sans-IO.

Theory of operation
-------------------
A TLS terminator that offers ``h2`` in ALPN speaks HTTP/2 to the client and, very
often, HTTP/1.1 to the backend: the backend pool, the keep-alive connections and the
origin all stay as they are.  Every HTTP/2 request is therefore rewritten into an
HTTP/1.1 request: the *downgrade*.  The pseudo-headers become the request-line
(``:method``, ``:path``) and the Host field (``:authority``); the regular fields are
copied; the body length, which HTTP/2 carries in its frames (DATA lengths and the
END_STREAM flag), has to be written out again as ``Content-Length`` or
``Transfer-Encoding: chunked``.

That rewrite is where request smuggling lives.  HTTP/2 is binary: a field value is a
length-prefixed byte string and may hold bytes that HTTP/1.1 uses as syntax (CR, LF,
the colon, the space of the request-line).  A ``content-length`` field travels next to
the frame lengths and may contradict them.  A terminator that copies such a request into
HTTP/1.1 text hands the backend a *different* message from the one it checked: an
extra header, a second request, another body length.  James Kettle named the families
in "HTTP/2: The Sequel is Always Worse" (PortSwigger Research, Black Hat USA 2021,
https://portswigger.net/research/http2): H2.CL (a content-length that disagrees with
the DATA frames), H2.TE (a transfer-encoding field, which HTTP/2 forbids, copied into
HTTP/1.1 where it decides the framing), and CRLF injection through field names, values
and pseudo-headers, which HTTP/1.1 cannot even express.  RFC 9113 §8.1.1 and §8.2 make
each of them "malformed", and a malformed request MUST NOT be forwarded.

So this module refuses every request whose HTTP/1.1 form could be read two ways, and
checks everything itself: the `h2` library validates much of this too (with
``validate_inbound_headers=True``: §8.2.1 characters, §8.2.2, pseudo-header order and
presence, host == :authority byte for byte, a non-empty :path; and, whatever the
setting, content-length against DATA, except when HEADERS itself ends the stream), but
not that names are tokens, not the syntax of :method, :path or :authority, not
userinfo, and none of the header checks when the proxy turns that validation off to
give its own reasons.  Nothing here relies on it.

======================================  ===================  ==================================
check                                   RFC                  attack it prevents
======================================  ===================  ==================================
content-length == sum of DATA lengths   9113 §8.1.1          H2.CL: the backend reads the
(``BodyCounter``), both directions;                          leftover DATA as a second request
one content-length, 1*DIGIT             9110 §8.6
no connection-specific field            9113 §8.2.2          H2.TE: transfer-encoding decides
(transfer-encoding, connection, ...)                         the h1 framing; connection drops
                                                             fields at the next hop
te only "trailers"                      9113 §8.2.2          a hop-by-hop request modifier
no CR, LF, NUL in names or values       9113 §8.2.1          CRLF injection: a new h1 field
                                                             line or a second request
no SP/HTAB at either end of a value     9113 §8.2.1          h1 OWS stripping changes values
no other control byte in a value        9110 §5.5            h1 parsers disagree on them
names lowercase tokens, no ":" inside   9113 §8.2, §8.2.1,   header-name injection
                                        9110 §5.1            ("x: y" hiding in a name)
pseudo-headers: known, once each,       9113 §8.3            a request-line built from
first; :status refused; :protocol                            ambiguous or extra parts
(extended CONNECT) refused              RFC 8441 §3
:method a token; :path VCHARs,          9113 §8.3.1,         request-line splitting
"/..." (or "*" for OPTIONS), no "#"     9110 §9.1
:authority host[:port], no userinfo     9113 §8.3.1          Host confusion; phishing URIs
:authority and host the same authority  9113 §8.3.1          Host confusion: the proxy routes
(scheme-based normalisation)                                 by one, the backend serves the other
exactly one host field                  9112 §3.2            the same, with two host fields
CONNECT: :method and :authority only    9113 §8.5            a tunnel to an ambiguous target
cookie crumbs joined with "; "          9113 §8.2.3          (an h1 request has one Cookie)
trailers: no pseudo-headers, the h1     9113 §8.1,           a late content-length / host
trailer filter (``prepare_trailers``)   9110 §6.5.1          merged by the next hop
======================================  ===================  ==================================

Use, per stream (the caller drives `h2`; see ``tests/unit/test_h2_downgrade.py``)::

    down = downgrade_request(event.headers, end_stream=event.stream_ended is not None,
                             limits=limits)                      # RequestReceived
    down.body.data(len(event.data))                              # each DataReceived
    trailers = downgrade_trailers(event.headers, request=down.request,
                                  end_stream=True, limits=limits)  # TrailersReceived
    down.body.end_stream()                                       # StreamEnded

Every refusal is a ``proxy.errors.ProtocolError`` (400, or 413/414/431 for a limit, 501
for CONNECT on a reverse listener) whose message names the RFC section, as the HTTP/1.1
readers' are: the caller maps it to ``ClientProtocolError`` (and, for HTTP/2, to a
stream error or a 400 on that stream).  ``down.request`` then goes through
``proxy.http1.prepare_upstream_request`` like any HTTP/1.1 request.

Choices where the RFC leaves room (each is the strict side):

* ``:authority`` and ``host`` are compared after scheme-based normalisation, as RFC
  9113 §8.3.1 tells an intermediary to (RFC 3986 §6.2.3: case-insensitive host, an
  empty or default port is the default port): ``example.com:443`` and ``example.com``
  agree under https and differ under http.  Percent-encoding is not normalised: two
  spellings of one name are refused.  The Host sent on is the ``:authority`` value.
* ``:scheme`` is checked (http or https) but does not travel: X-Forwarded-Proto says
  what the *connection* was, so ``:scheme: http`` over TLS still forwards ``https``.
* Two identical content-length fields are refused (RFC 9110 §8.6 would allow them),
  as the HTTP/1.1 reader does.
* A request with neither ``:authority`` nor ``host`` is refused: the HTTP/1.1 request
  needs a Host (RFC 9112 §3.2) and the router routes on it.
* Without content-length and without END_STREAM on HEADERS, the body goes to the
  backend chunked: the length is not known until END_STREAM, and nothing here
  buffers a body to count it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from proxy.errors import (
    ContentTooLarge,
    HeaderFieldsTooLarge,
    NotImplementedByProxy,
    ProtocolError,
    URITooLong,
)
from proxy.http1.events import Request
from proxy.http1.fields import TCHAR
from proxy.http1.forwarding import prepare_trailers
from proxy.http1.framing import CHUNKED, EMPTY_BODY, NO_BODY, TUNNEL, BodyKind, Framing, parse_content_length
from proxy.http1.head import AUTHORITY_FORM, HOST_FIELD
from proxy.http1.headers import Headers
from proxy.http1.limits import Limits

# RFC 9113 §8.3.1: the request pseudo-header fields.  (:protocol, RFC 8441, and the
# response's :status are refused by name below, with their own reasons.)
REQUEST_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":authority", b":path"})

# RFC 9113 §8.2.2: "An endpoint MUST NOT generate an HTTP/2 message containing
# connection-specific header fields ... Any message containing connection-specific header
# fields MUST be treated as malformed."  The five it names.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)

# A field name as HTTP/2 must carry it: a token (RFC 9110 §5.1, §5.6.2) in lower case
# (RFC 9113 §8.2).  The token grammar also shuts out the colon and every byte §8.2.1
# lists (0x00-0x20, 0x7f-0xff).
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_METHOD = re.compile(f"[{TCHAR}]+".encode())
# RFC 9112 §3.2: the request-target is VCHARs; RFC 3986 has no room for SP or controls.
_PATH = re.compile(rb"[\x21-\x7e]+")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*")
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

# Bytes allowed in a field value (RFC 9110 §5.5: VCHAR, obs-text, SP and HTAB inside).
# ``value.translate(None, _VALUE_BYTES)`` deletes them; whatever is left is forbidden.
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_INJECTION = {0x00: "NUL", 0x0A: "LF", 0x0D: "CR"}

Field = tuple[bytes, bytes]


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True, slots=True)
class DowngradedRequest:
    """One HTTP/2 request as the HTTP/1.1 core sees it.

    ``request`` is a ``proxy.http1.Request`` (version "HTTP/1.1": the message it becomes)
    with exactly one Host, first, and ``framing`` decided from content-length and
    END_STREAM.  ``scheme`` is the checked ``:scheme`` (None for CONNECT), for logging:
    X-Forwarded-Proto comes from the connection.  ``body`` counts the DATA frames.
    """

    request: Request
    scheme: str | None
    body: BodyCounter


class BodyCounter:
    """DATA lengths against content-length (RFC 9113 §8.1.1), and the body size limit.

    Feed it ``len(event.data)`` of every DataReceived (the payload, not the
    flow-controlled length, which counts padding) and call ``end_stream()`` on
    StreamEnded.  "A request or response is also malformed if the value of a
    content-length header field does not equal the sum of the DATA frame payload
    lengths that form the content": too much is refused as soon as it arrives, too
    little when the stream ends.  This is the H2.CL check: the backend frames the body
    by the Content-Length the proxy writes, so DATA beyond it would be read there as
    the start of the next request.
    """

    __slots__ = ("expected", "received", "ended", "max_body_size")

    def __init__(self, expected: int | None, *, max_body_size: int | None = None, ended: bool = False) -> None:
        self.expected = expected  # content-length, or None (chunked upstream, or a tunnel)
        self.received = 0
        self.ended = ended  # END_STREAM seen (on HEADERS, DATA or trailers)
        self.max_body_size = max_body_size

    def data(self, length: int) -> None:
        """One DATA frame's payload length."""
        if length < 0:
            raise ValueError("a DATA length is never negative")
        if self.ended:
            # RFC 9113 §5.1: after END_STREAM the stream is half-closed (remote); DATA
            # then is a STREAM_CLOSED error (h2 would raise it first).
            raise ProtocolError("DATA after END_STREAM (RFC 9113 §5.1)")
        self.received += length
        expected = self.expected
        if expected is not None and self.received > expected:
            raise ProtocolError(
                f"DATA frames carry more than content-length {expected} (RFC 9113 §8.1.1)"
            )
        if self.max_body_size is not None and self.received > self.max_body_size:
            raise ContentTooLarge(f"request body over {self.max_body_size} bytes")

    def end_stream(self) -> None:
        """END_STREAM arrived: the body is complete."""
        if self.ended:
            raise ProtocolError("END_STREAM twice on one stream (RFC 9113 §5.1)")
        self.ended = True
        expected = self.expected
        if expected is not None and self.received != expected:
            raise ProtocolError(
                f"the stream ended after {self.received} of content-length {expected} bytes (RFC 9113 §8.1.1)"
            )

    @property
    def remaining(self) -> int | None:
        """Bytes still due under content-length, or None when there is none."""
        return None if self.expected is None else self.expected - self.received

    def __repr__(self) -> str:
        return f"BodyCounter(expected={self.expected}, received={self.received}, ended={self.ended})"


# --------------------------------------------------------------------------- fields
def _show(raw: bytes) -> str:
    return repr(raw[:40])[1:]  # b'...' without the b, for messages


def _field_name(name: bytes) -> str:
    """A regular field name, checked: a lowercase token (RFC 9113 §8.2, §8.2.1, RFC 9110 §5.1)."""
    if _FIELD_NAME.fullmatch(name):
        return name.decode("ascii")
    if not name:
        return _refuse("empty field name (RFC 9110 §5.1: field-name = token)")
    injected = [b for b in name if b in _INJECTION]
    if injected:
        # CRLF injection through a name: "x\r\ntransfer-encoding: chunked\r\ny" would
        # write extra field lines into the HTTP/1.1 head (Kettle 2021).
        return _refuse(f"{_INJECTION[injected[0]]} in field name {_show(name)} (RFC 9113 §8.2.1)")
    if b":" in name:
        # "x: y" as a *name* becomes the field line "x: y: value" in HTTP/1.1, where the
        # backend reads the field x.  Only pseudo-headers start with a colon.
        return _refuse(f"colon inside field name {_show(name)} (RFC 9113 §8.2.1)")
    if any(0x41 <= b <= 0x5A for b in name):
        return _refuse(f"uppercase field name {_show(name)} (RFC 9113 §8.2: names are lowercase)")
    if any(b <= 0x20 or b >= 0x7F for b in name):
        return _refuse(f"space, control or non-ASCII byte in field name {_show(name)} (RFC 9113 §8.2.1)")
    # h2's own check stops at the §8.2.1 ranges: '"', "(", ",", "/", "@", "{" ... pass it.
    return _refuse(f"field name {_show(name)} is not a token (RFC 9110 §5.1, §5.6.2)")


def _field_value(name: str, value: bytes) -> str:
    """A field value, checked (RFC 9113 §8.2.1, RFC 9110 §5.5), as a latin-1 str."""
    if value:
        bad = value.translate(None, _VALUE_BYTES)
        if bad:
            byte = bad[0]
            if byte in _INJECTION:
                # "MUST NOT contain ... NUL, LF, CR at any position": copied into HTTP/1.1,
                # "a\r\ntransfer-encoding: chunked" is a second field line (CRLF injection).
                _refuse(f"{_INJECTION[byte]} in the value of {name[:40]!r} (RFC 9113 §8.2.1)")
            # RFC 9110 §5.5: other controls are not field-content; HTTP/1.1 recipients
            # differ on them (ours refuses them), so they never reach a backend.
            _refuse(f"control byte 0x{byte:02x} in the value of {name[:40]!r} (RFC 9110 §5.5)")
        if value[0] in (0x20, 0x09) or value[-1] in (0x20, 0x09):
            # "MUST NOT start or end with an ASCII whitespace character": in HTTP/1.1 it
            # would be OWS and vanish, so the backend would see another value.
            _refuse(f"leading or trailing whitespace in the value of {name[:40]!r} (RFC 9113 §8.2.1)")
    return value.decode("latin-1")


def _regular_field(name: bytes, value: bytes) -> tuple[str, str]:
    """One regular field line, with the checks every HTTP/2 field block shares."""
    lower = _field_name(name)
    text = _field_value(lower, value)
    if name in CONNECTION_SPECIFIC:
        # H2.TE: "transfer-encoding: chunked" copied into HTTP/1.1 decides the framing
        # there, while the proxy framed the body by its DATA frames (Kettle 2021).
        # "connection" would make the next hop drop the fields it names.
        _refuse(f"connection-specific field {lower!r} in an HTTP/2 request (RFC 9113 §8.2.2)")
    if name == b"te" and text.lower() != "trailers":
        # "TE ... MUST NOT contain any value other than 'trailers'"; a transfer coding the
        # client asks for would be a hop-by-hop negotiation the h2 hop cannot honour.
        _refuse(f"te {text[:40]!r}: only 'trailers' is allowed (RFC 9113 §8.2.2)")
    return lower, text


def _refuse(message: str) -> NoReturn:
    raise ProtocolError(message)


def _check_bytes(headers: Iterable[Field]) -> list[Field]:
    block = list(headers)
    for field in block:
        if len(field) != 2 or not isinstance(field[0], bytes) or not isinstance(field[1], bytes):
            raise TypeError("header fields must be (bytes, bytes): use H2Configuration(header_encoding=None)")
    return block


def _check_limits(method: str, target: str, fields: list[tuple[str, str]], limits: Limits) -> None:
    """The HTTP/1.1 reader's limits, applied to the head this request becomes."""
    request_line = len(method) + len(target) + 10  # method SP target SP HTTP/1.1
    if request_line > limits.max_request_line:
        raise URITooLong(f"request line over {limits.max_request_line} bytes")
    if len(fields) > limits.max_fields:
        raise HeaderFieldsTooLarge(f"more than {limits.max_fields} field lines")
    size = request_line + 2 + 2
    for name, value in fields:
        line = len(name) + 2 + len(value)
        if line > limits.max_field_line:
            raise HeaderFieldsTooLarge(f"field line over {limits.max_field_line} bytes")
        size += line + 2
    if size > limits.max_head_size:
        raise HeaderFieldsTooLarge(f"request head over {limits.max_head_size} bytes")


# --------------------------------------------------------------------------- pseudo-headers
def _split_block(block: list[Field]) -> tuple[dict[bytes, bytes], list[tuple[str, str]], list[str]]:
    """Pseudo-headers (checked for §8.3), regular fields (checked), and the host values."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[str, str]] = []
    hosts: list[str] = []
    cookies: list[str] = []
    cookie_at = -1
    for name, value in block:
        if name[:1] == b":":
            if fields or hosts or cookies:
                # "All pseudo-header fields MUST appear in a field block before all
                # regular field lines": a late ":path" is the one a lenient peer takes.
                _refuse(f"pseudo-header {_show(name)} after a regular field (RFC 9113 §8.3)")
            if name == b":status":
                _refuse("response pseudo-header :status in a request (RFC 9113 §8.3)")
            if name == b":protocol":
                # RFC 8441 §3: a client sends :protocol only after the server's
                # SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, which this proxy never sends.
                _refuse(":protocol (extended CONNECT, RFC 8441 §4) is not supported by this proxy (RFC 8441 §3)")
            if name not in REQUEST_PSEUDO_HEADERS:
                _refuse(f"unknown pseudo-header {_show(name)} (RFC 9113 §8.3)")
            if name in pseudo:
                # Two :path values are two request-lines: which one did the proxy route?
                _refuse(f"pseudo-header {_show(name)} repeated (RFC 9113 §8.3)")
            _field_value(name.decode("ascii"), value)
            pseudo[name] = value
            continue
        lower, text = _regular_field(name, value)
        if lower == "host":
            hosts.append(text)
        elif lower == "cookie":
            # RFC 9113 §8.2.3: a client may split Cookie into crumbs for HPACK; "these
            # MUST be concatenated into a single octet string using the two-octet
            # delimiter of 0x3b, 0x20 (the ASCII string "; ")" before going to HTTP/1.1.
            if cookie_at < 0:
                cookie_at = len(fields)
                fields.append(("cookie", ""))
            cookies.append(text)
        else:
            fields.append((lower, text))
    if cookies:
        fields[cookie_at] = ("cookie", "; ".join(cookies))
    return pseudo, fields, hosts


def _method(pseudo: dict[bytes, bytes]) -> str:
    method = pseudo.get(b":method")
    if method is None:
        _refuse("no :method pseudo-header (RFC 9113 §8.3.1)")
    if not _METHOD.fullmatch(method):
        # "GET /admin HTTP/1.1\r\n..." as a method, or one with a space, would split the
        # HTTP/1.1 request-line the proxy writes: request-line injection.
        _refuse(f":method {_show(method)} is not a token (RFC 9113 §8.3.1, RFC 9110 §9.1)")
    return method.decode("ascii")


def _scheme(pseudo: dict[bytes, bytes]) -> str:
    scheme = pseudo.get(b":scheme")
    if scheme is None:
        _refuse("no :scheme pseudo-header (RFC 9113 §8.3.1)")
    if not _SCHEME.fullmatch(scheme):
        _refuse(f":scheme {_show(scheme)} is not a URI scheme (RFC 9113 §8.3.1, RFC 3986 §3.1)")
    text = scheme.decode("ascii").lower()
    if text not in SCHEMES:
        # RFC 9113 §8.3.1 lets a proxy translate other schemes; this one serves http(s).
        _refuse(f"unsupported :scheme {text[:20]!r} (RFC 9110 §4.2)")
    return text


def _path(pseudo: dict[bytes, bytes], method: str) -> str:
    path = pseudo.get(b":path")
    if path is None:
        _refuse("no :path pseudo-header (RFC 9113 §8.3.1)")
    if not path:
        _refuse("empty :path (RFC 9113 §8.3.1: it MUST NOT be empty for http or https)")
    if not _PATH.fullmatch(path):
        # "/ HTTP/1.1" + more: a space in :path ends the request-target of the line the
        # proxy writes and starts something else (request-line splitting).
        _refuse(f":path {_show(path)} has a space or control byte (RFC 9113 §8.3.1, RFC 9112 §3.2)")
    text = path.decode("ascii")
    if text == "*":
        if method != "OPTIONS":
            _refuse(":path '*' is only for OPTIONS (RFC 9113 §8.3.1)")
        return text
    if text[0] != "/":
        # :path is "the path and query parts of the target URI": never absolute-form,
        # whose host a backend would prefer to Host (routing confusion).
        _refuse(f":path {text[:60]!r} must start with '/' (RFC 9113 §8.3.1)")
    if "#" in text:
        # No fragment in a target (RFC 9112 §3.2.1); recipients disagree where it ends.
        _refuse("fragment ('#') in :path (RFC 9113 §8.3.1, RFC 9112 §3.2.1)")
    return text


def _authority(value: str, what: str) -> tuple[str, str | None]:
    """``host[:port]`` from an :authority or host value, checked; (host, port or None)."""
    if not value:
        _refuse(f"empty {what} (RFC 9110 §4.2.1: an http(s) URI has a non-empty host)")
    if "@" in value:
        # "The authority MUST NOT include the deprecated userinfo subcomponent": the
        # "trusted.example@evil.example" phishing form (RFC 9110 §4.2.4).
        _refuse(f"userinfo in {what} {value[:60]!r} (RFC 9113 §8.3.1)")
    if HOST_FIELD.fullmatch(value) is None or value[0] == ":":
        _refuse(f"{what} {value[:60]!r} is not host[:port] (RFC 9113 §8.3.1, RFC 3986 §3.2.2)")
    if value.endswith("]") or ":" not in value:
        return value, None
    host, _, port = value.rpartition(":")  # the only ':' outside an IP-literal
    if len(port) > 5 or (port and int(port) > 65535):
        _refuse(f"port {port[:10]!r} in {what} is out of range (RFC 9113 §8.3.1, RFC 3986 §3.2.3)")
    return host, port


def _same_authority(a: tuple[str, str | None], b: tuple[str, str | None], scheme: str | None) -> bool:
    """RFC 9113 §8.3.1: "other servers MUST perform scheme-based normalization (see
    Section 6.2.3 of [RFC3986]) of the two fields": the host is case-insensitive, and
    an empty or absent port is the scheme's default port."""
    default = DEFAULT_PORTS.get(scheme or "")

    def normal(authority: tuple[str, str | None]) -> tuple[str, int | None]:
        host, port = authority
        return host.lower(), int(port) if port else default

    return normal(a) == normal(b)


def _host(pseudo: dict[bytes, bytes], hosts: list[str], scheme: str | None) -> str:
    """The one Host the HTTP/1.1 request gets (RFC 9113 §8.3.1, RFC 9112 §3.2)."""
    if len(hosts) > 1:
        # Two Host fields: the proxy routes by one, the backend serves the other.
        _refuse("more than one host field (RFC 9112 §3.2)")
    raw = pseudo.get(b":authority")
    authority = raw.decode("latin-1") if raw is not None else None
    parsed = _authority(authority, ":authority") if authority is not None else None
    if hosts:
        host = hosts[0]
        host_parsed = _authority(host, "host")
        if parsed is None:
            return host  # an intermediary's translation of HTTP/1.1 may send host only
        if not _same_authority(parsed, host_parsed, scheme):
            # Host confusion: "SHOULD treat a request as malformed if it contains a Host
            # header field that identifies an entity that differs from the entity in the
            # :authority pseudo-header field".  Strict here: always malformed.
            _refuse(f"host {host[:60]!r} and :authority {authority[:60]!r} differ (RFC 9113 §8.3.1)")
    if authority is None:
        _refuse("neither :authority nor host: the HTTP/1.1 request needs a Host (RFC 9113 §8.3.1, RFC 9112 §3.2)")
    # "An intermediary that forwards a request over HTTP/1.1 MUST construct a Host
    # header field if one is not present in a request by copying the value of the
    # :authority pseudo-header field."  Present and equivalent: the :authority wins.
    return authority


# --------------------------------------------------------------------------- the downgrade
def downgrade_request(
    headers: Iterable[Field],
    *,
    end_stream: bool,
    limits: Limits = Limits(),
    allow_connect: bool = False,
) -> DowngradedRequest:
    """One HTTP/2 request header block (as h2 delivers it: raw bytes) as an HTTP/1.1 Request.

    ``end_stream``: the HEADERS frame carried END_STREAM (no body follows).
    ``allow_connect``: for the forward proxy, like ``RequestReader(allow_connect=True)``;
    a reverse listener answers CONNECT with 501.  Raises ``ProtocolError`` (see the
    module docstring) when the request is malformed or over a limit.
    """
    block = _check_bytes(headers)
    pseudo, fields, hosts = _split_block(block)
    method = _method(pseudo)
    if method == "CONNECT":
        return _downgrade_connect(pseudo, fields, hosts, end_stream, limits, allow_connect)
    scheme = _scheme(pseudo)
    target = _path(pseudo, method)
    host = _host(pseudo, hosts, scheme)
    fields.insert(0, ("host", host))
    _check_limits(method, target, fields, limits)
    framing = _framing(fields, end_stream, limits)
    request = _request(method, target, fields, framing)
    if any(name == "expect" for name, _ in fields):
        request.expect_continue = "100-continue" in request.headers.tokens("expect")
    counter = BodyCounter(
        framing.length if framing.kind is BodyKind.LENGTH else (0 if end_stream else None),
        max_body_size=limits.max_body_size,
        ended=end_stream,
    )
    return DowngradedRequest(request, scheme, counter)


def _framing(fields: list[tuple[str, str]], end_stream: bool, limits: Limits) -> Framing:
    """The HTTP/1.1 framing this body gets: from content-length, or chunked."""
    lengths = [value for name, value in fields if name == "content-length"]
    if not lengths:
        # No declared length: the body's end is END_STREAM, which HTTP/1.1 can only say
        # with the chunked coding (RFC 9112 §7.1); no body at all is RFC 9112 §6.3 rule 7.
        return NO_BODY if end_stream else CHUNKED
    # Exactly one 1*DIGIT: "+5", " 5", "5, 5" and two lines are refused as in HTTP/1.1
    # (RFC 9110 §8.6, RFC 9112 §6.3 rule 5): a backend could read another number.
    length = parse_content_length(lengths)
    if length > limits.max_body_size:
        raise ContentTooLarge(f"request body of {length} bytes is over the limit")
    if end_stream and length:
        # H2.CL the other way: a length that no DATA frame can ever deliver.
        _refuse(f"content-length {length} on a HEADERS frame that ended the stream (RFC 9113 §8.1.1)")
    return EMPTY_BODY if length == 0 else Framing(BodyKind.LENGTH, length)


def _request(method: str, target: str, fields: list[tuple[str, str]], framing: Framing) -> Request:
    headers = Headers._from_fields([(name, "Host" if name == "host" else name, value) for name, value in fields])
    return Request(method, target, "HTTP/1.1", headers, framing=framing, keep_alive=framing is not TUNNEL)


def _downgrade_connect(
    pseudo: dict[bytes, bytes],
    fields: list[tuple[str, str]],
    hosts: list[str],
    end_stream: bool,
    limits: Limits,
    allow_connect: bool,
) -> DowngradedRequest:
    """RFC 9113 §8.5: "The :scheme and :path pseudo-header fields MUST be omitted"; the
    :authority is the host and port to connect to (authority-form, RFC 9112 §3.2.3)."""
    if b":scheme" in pseudo or b":path" in pseudo:
        _refuse("CONNECT with :scheme or :path (RFC 9113 §8.5; extended CONNECT is not supported)")
    raw = pseudo.get(b":authority")
    if raw is None:
        _refuse("CONNECT without :authority (RFC 9113 §8.5)")
    authority = raw.decode("latin-1")
    if "@" in authority:
        _refuse(f"userinfo in :authority {authority[:60]!r} (RFC 9113 §8.3.1)")
    match = AUTHORITY_FORM.fullmatch(authority)
    if match is None or not match.group(1) or not 0 < int(match.group(2)) < 65536:
        _refuse(f"CONNECT :authority {authority[:60]!r} is not host:port (RFC 9113 §8.5)")
    host = _host(pseudo, hosts, None)
    fields.insert(0, ("host", host))
    _check_limits("CONNECT", authority, fields, limits)
    lengths = [value for name, value in fields if name == "content-length"]
    if lengths and parse_content_length(lengths):
        # RFC 9110 §9.3.6: CONNECT has no content; DATA frames are tunnel bytes.
        _refuse("CONNECT request with content (RFC 9110 §9.3.6)")
    if not allow_connect:
        # RFC 9110 §9.1: a method the server does not implement gets 501.
        raise NotImplementedByProxy("CONNECT is not supported on this listener")
    request = _request("CONNECT", authority, fields, TUNNEL)
    return DowngradedRequest(request, None, BodyCounter(None, ended=end_stream))


def downgrade_trailers(
    headers: Iterable[Field],
    *,
    request: Request,
    end_stream: bool,
    limits: Limits = Limits(),
) -> Headers:
    """An HTTP/2 trailer block (a second HEADERS), checked and filtered for HTTP/1.1.

    RFC 9113 §8.1: trailers are a HEADERS frame that carries END_STREAM, and
    "Trailers MUST NOT include pseudo-header fields".  Each field gets the same checks as
    a header field; then the HTTP/1.1 trailer rules (``prepare_trailers``: no framing,
    routing, authentication ... fields, nothing the request's Connection would name).
    A request framed by Content-Length has nowhere to put trailers in HTTP/1.1 (only the
    chunked coding carries them, RFC 9112 §7.1.2): the checked block is then dropped.
    The caller calls ``BodyCounter.end_stream()`` as well.
    """
    if not end_stream:
        _refuse("a trailer section without END_STREAM (RFC 9113 §8.1)")
    fields: list[tuple[str, str]] = []
    for name, value in _check_bytes(headers):
        if name[:1] == b":":
            # A ":path" after the body would be a second request-line to a lenient peer.
            _refuse(f"pseudo-header {_show(name)} in a trailer section (RFC 9113 §8.1)")
        fields.append(_regular_field(name, value))
    if len(fields) > limits.max_fields:
        raise HeaderFieldsTooLarge(f"more than {limits.max_fields} trailer field lines")
    if any(len(name) + 2 + len(value) > limits.max_field_line for name, value in fields):
        raise HeaderFieldsTooLarge(f"trailer field line over {limits.max_field_line} bytes")
    if request.framing.kind is not BodyKind.CHUNKED:
        return Headers()
    return prepare_trailers(Headers(fields), request.headers)
