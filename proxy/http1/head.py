"""Message heads: finding where one ends, then parsing and validating it.

Theory of operation
-------------------
A head is a start-line, zero or more field lines, and an empty line, each ending in
CRLF (RFC 9112 §2.1).  The reader works in two steps:

1. ``HeadScanner.find_end`` looks for the empty line (``find(b"\\r\\n\\r\\n")``) in a
   buffer that grows as bytes arrive.  While the head is incomplete it checks the
   *new* bytes against the limits (request line, field line, head size, field
   count) and for bare CR / bare LF, so a client is refused as soon as it goes over
   (no waiting for a terminator that may never come), and each byte is looked at
   a bounded number of times however the head is split across reads.
2. Once the whole head is there, ``parse_request_head`` / ``parse_response_head``
   parse it in one pass: latin-1 decode, split on CRLF, whole-head checks for
   forbidden bytes and line endings, one regex for the start-line, then
   ``fields.parse_field_lines``.  Request-target forms and Host are checked here;
   framing (the body length) is ``framing.py``'s job.

The same scanner, without a start-line, finds the end of a chunked trailer section.
"""

from __future__ import annotations

import re

from proxy.errors import (
    HeaderFieldsTooLarge,
    HTTPVersionNotSupported,
    NotImplementedByProxy,
    ProtocolError,
    URITooLong,
)
from proxy.http1.events import Request, Response
from proxy.http1.fields import (
    TCHAR,
    check_line_endings,
    find_forbidden_byte,
    parse_field_lines,
)
from proxy.http1.headers import Headers
from proxy.http1.limits import Limits

# A CR not followed by LF, or an LF not preceded by CR (RFC 9112 §2.2).
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version, single SPs.
# The target is VCHARs only: "No whitespace is allowed in the request-target" (§3.2),
# and RFC 3986 has no room for controls or bytes above 0x7E.
_REQUEST_LINE = re.compile(rf"([{TCHAR}]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
# Leniency: the SP before an empty reason may be missing (h11, curl and browsers
# accept "HTTP/1.1 200"); the reason carries no meaning, so this cannot mislead.
_STATUS_LINE = re.compile(r"(HTTP/[0-9]\.[0-9]) ([0-9]{3})(?: ([\t \x21-\x7e\x80-\xff]*))?")
_HTTP_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
SUPPORTED_VERSIONS = ("HTTP/1.1", "HTTP/1.0")

# RFC 3986 §3.2.2 host = IP-literal / IPv4address / reg-name; port = *DIGIT.
# reg-name without the comma (a sub-delim): a comma in a singleton field reads as a
# list to a list-aware recipient, and no real host name has one.
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*"
_IP_LITERAL = r"\[[0-9A-Fa-f:.]+\]"
HOST_FIELD = re.compile(rf"(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?")
# RFC 9112 §3.2.3: authority-form = uri-host ":" port (CONNECT only; no userinfo).
AUTHORITY_FORM = re.compile(rf"({_IP_LITERAL}|{_REG_NAME}):([0-9]{{1,5}})")
# RFC 9112 §3.2.2: absolute-form = absolute-URI; we take http(s)://authority[path][?query]
_ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)")


# --------------------------------------------------------------------------- scanning
class HeadScanner:
    """Finds the end of a head (or trailer section) in a growing buffer, checking limits."""

    __slots__ = ("_limits", "_start_line", "_scanned", "_line_start", "_lines", "_small_head")

    def __init__(self, limits: Limits, start_line: str | None) -> None:
        """``start_line`` is "request", "status" or None (a trailer section)."""
        self._limits = limits
        self._start_line = start_line
        # A head no longer than every limit passes the size checks without looking
        # at its lines (the common case: a 1 KB head against 8 KB limits).
        self._small_head = min(limits.max_request_line, limits.max_field_line, limits.max_head_size)
        self.reset()

    def reset(self) -> None:
        self._scanned = 0  # bytes of the buffer already checked
        self._line_start = 0  # where the line being received begins
        self._lines = 0  # complete lines seen so far

    def find_end(self, buffer: bytearray) -> int:
        """Index of the CRLFCRLF that ends the head, or -1 if it has not arrived yet.

        Raises as soon as the bytes so far cannot be the start of a valid head.
        """
        start = self._scanned
        end = buffer.find(b"\r\n\r\n", start - 3 if start > 3 else 0)
        if end >= 0:
            self.reset()
            return end
        self._check_partial(buffer, start)
        self._scanned = len(buffer)
        return -1

    def _check_partial(self, buffer: bytearray, start: int) -> None:
        size = len(buffer)
        bare = _BARE_CR_OR_LF.search(buffer, start - 1 if start else 0)
        if bare is not None and not (bare.start() == size - 1 and buffer[-1] == 13):
            # (a CR as the very last byte may be the first half of a CRLF)
            raise ProtocolError(f"bare CR or LF in {self._what()} (RFC 9112 §2.2)")
        line_start = self._line_start
        while True:
            crlf = buffer.find(b"\r\n", max(line_start, start - 1))
            if crlf < 0:
                break
            self._check_line(crlf - line_start, self._lines)
            self._lines += 1
            line_start = crlf + 2
        self._line_start = line_start
        pending = size - line_start - (1 if buffer[-1:] == b"\r" else 0)
        self._check_line(pending, self._lines)
        fields = self._lines + (1 if pending else 0) - (1 if self._start_line else 0)
        if fields > self._limits.max_fields:
            raise HeaderFieldsTooLarge(f"more than {self._limits.max_fields} field lines")
        if size > self._limits.max_head_size:
            raise HeaderFieldsTooLarge(f"{self._what()} over {self._limits.max_head_size} bytes")

    def _check_line(self, length: int, index: int) -> None:
        limits = self._limits
        if index == 0 and self._start_line:
            if length > limits.max_request_line:
                if self._start_line == "request":
                    # RFC 9112 §3: a server MUST answer a too-long request-target 414.
                    raise URITooLong(f"request line over {limits.max_request_line} bytes")
                raise HeaderFieldsTooLarge(f"status line over {limits.max_request_line} bytes")
        elif length > limits.max_field_line:
            raise HeaderFieldsTooLarge(f"field line over {limits.max_field_line} bytes")

    def check_complete(self, lines: list[str], head_size: int) -> None:
        """The size limits, for a head that arrived whole (``lines`` split on CRLF)."""
        limits = self._limits
        field_lines = lines[1:] if self._start_line else lines
        if len(field_lines) > limits.max_fields:
            raise HeaderFieldsTooLarge(f"more than {limits.max_fields} field lines")
        if head_size <= self._small_head:
            return  # no line can be over a line limit (the common case)
        if self._start_line:
            self._check_line(len(lines[0]), 0)
        if head_size > limits.max_head_size:
            raise HeaderFieldsTooLarge(f"{self._what()} over {limits.max_head_size} bytes")
        if field_lines and max(map(len, field_lines)) > limits.max_field_line:
            raise HeaderFieldsTooLarge(f"field line over {limits.max_field_line} bytes")

    def _what(self) -> str:
        return {"request": "request head", "status": "response head"}.get(
            self._start_line or "", "trailer section"
        )


def _split_block(block: bytes, scanner: HeadScanner, what: str) -> list[str]:
    """Decode and split a complete head block (without its final CRLFCRLF), checking
    sizes, forbidden bytes and line endings for the whole block at once."""
    text = block.decode("latin-1")
    lines = text.split("\r\n")
    scanner.check_complete(lines, len(block) + 4)
    forbidden = find_forbidden_byte(block)
    if forbidden is not None:
        # RFC 9110 §5.5: NUL, CR and LF in a field value are "invalid and dangerous";
        # other controls have no place in a head (RFC 9112 §2.2, §5).
        raise ProtocolError(f"control byte 0x{forbidden:02x} in {what} (RFC 9110 §5.5)")
    check_line_endings(text, len(lines) - 1, what)
    return lines


# --------------------------------------------------------------------------- requests
def parse_request_head(
    block: bytes,
    scanner: HeadScanner,
    *,
    allow_absolute_form: bool = False,
    allow_connect: bool = False,
) -> Request:
    """A validated Request from a complete head (without the final CRLFCRLF)."""
    lines = _split_block(block, scanner, "request head")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(explain_request_line(lines[0]))
    method, target, version = match.groups()
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        # RFC 9110 §15.6.6.  Stricter than RFC 9110 §2.5 (which would read HTTP/1.2 as
        # 1.1): an unknown version is refused rather than reinterpreted.
        raise HTTPVersionNotSupported(f"{version} is not supported; use HTTP/1.1")
    headers = parse_field_lines(lines[1:], "request head")
    check_request_target(method, target, allow_absolute_form, allow_connect)
    check_host(headers, version)
    return Request(method, target, version, headers)


def explain_request_line(line: str) -> str:
    """Say why ``line`` is not ``method SP request-target SP HTTP-version``."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # RFC 9112 §3: exactly one SP between the three parts.  Parsers that split on
        # any run of whitespace disagree with strict ones about the target.
        return "request line must be method SP request-target SP HTTP-version (RFC 9112 §3)"
    method, target, version = parts
    if not re.fullmatch(f"[{TCHAR}]+", method):
        return f"method {method[:40]!r} is not a token (RFC 9110 §9.1)"
    if not _HTTP_VERSION.fullmatch(version):
        return f"invalid HTTP-version {version[:40]!r} (RFC 9112 §2.3)"
    return f"request-target {target[:60]!r} has a byte that is not a VCHAR (RFC 9112 §3.2)"


def check_request_target(method: str, target: str, allow_absolute_form: bool, allow_connect: bool) -> None:
    """RFC 9112 §3.2: the four request-target forms, each only where it belongs."""
    if method == "CONNECT":
        if not allow_connect:
            # RFC 9110 §9.1: a method the server does not implement gets 501.
            raise NotImplementedByProxy("CONNECT is not supported on this listener")
        match = AUTHORITY_FORM.fullmatch(target)
        if match is None or not match.group(1) or not 0 < int(match.group(2)) < 65536:
            # RFC 9112 §3.2.3: CONNECT uses authority-form, host ":" port, only.
            raise ProtocolError(f"CONNECT target {target[:60]!r} is not host:port (RFC 9112 §3.2.3)")
        return
    first = target[0]
    if first == "/":
        if "#" in target:
            # RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]; a fragment
            # is never sent, and proxies disagree about where a path with one ends.
            raise ProtocolError("fragment ('#') in request-target (RFC 9112 §3.2.1)")
        return
    if target == "*":
        if method != "OPTIONS":
            raise ProtocolError("asterisk-form is only for OPTIONS (RFC 9112 §3.2.4)")
        return
    if _ABSOLUTE_FORM.match(target):
        if not allow_absolute_form:
            # RFC 9112 §3.2.2 makes servers accept absolute-form, but a reverse proxy
            # that did would route on the URI's host while the backend trusts Host
            # (a routing/SSRF confusion); only the forward proxy accepts it.
            raise ProtocolError("absolute-form request-target is only accepted by the forward proxy")
        split_absolute_form(target)  # validates
        return
    raise ProtocolError(f"invalid request-target {target[:60]!r} (RFC 9112 §3.2)")


def split_absolute_form(target: str) -> tuple[str, str, str]:
    """``http://host:port/path?q`` -> ("http", "host:port", "/path?q"); raises if invalid.

    For the forward proxy: RFC 9112 §3.2.2 says the host comes from the URI, and the
    request sent on to the origin uses origin-form.
    """
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        raise ProtocolError(f"invalid absolute-form request-target {target[:60]!r} (RFC 9112 §3.2.2)")
    scheme, authority, rest = match.groups()
    if scheme.lower() not in ("http", "https"):
        raise ProtocolError(f"unsupported URI scheme {scheme!r} (RFC 9110 §4.2)")
    if not authority or "@" in authority or HOST_FIELD.fullmatch(authority) is None or authority[0] == ":":
        # RFC 9110 §4.2.4: userinfo ("user:pass@") is deprecated and a phishing tool.
        raise ProtocolError(f"invalid authority {authority[:60]!r} in request-target (RFC 9110 §4.2)")
    if rest and rest[0] not in "/?":
        raise ProtocolError("invalid path in absolute-form request-target (RFC 9112 §3.2.2)")
    if rest[:1] != "/":
        rest = "/" + rest
    return scheme.lower(), authority, rest


def check_host(headers: Headers, version: str) -> None:
    """RFC 9112 §3.2: exactly one valid Host in HTTP/1.1, at most one in HTTP/1.0.

    "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    request message that lacks a Host header field and to any request message that
    contains more than one Host header field line or a Host header field with an
    invalid field value."  Two Host lines are a routing-confusion attack: the proxy
    routes on one, the backend serves the other.
    """
    hosts = headers._values("host") or ()
    if len(hosts) == 1:
        if HOST_FIELD.fullmatch(hosts[0]) is None:
            raise ProtocolError(f"invalid Host {hosts[0][:60]!r} (RFC 9112 §3.2, RFC 3986 §3.2.2)")
    elif hosts:
        raise ProtocolError("more than one Host field line (RFC 9112 §3.2)")
    elif version == "HTTP/1.1":
        raise ProtocolError("HTTP/1.1 request without Host (RFC 9112 §3.2)")


# --------------------------------------------------------------------------- responses
def parse_response_head(block: bytes, scanner: HeadScanner) -> Response:
    """A validated Response from a complete head (without the final CRLFCRLF)."""
    lines = _split_block(block, scanner, "response head")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"invalid status line {lines[0][:60]!r} (RFC 9112 §4)")
    version, status_text, reason = match.groups()
    if version not in SUPPORTED_VERSIONS:
        raise HTTPVersionNotSupported(f"response version {version} is not supported")
    status = int(status_text)
    if status < 100 or status > 599:
        # RFC 9110 §15: "Values outside the range 100..599 are invalid."
        raise ProtocolError(f"status code {status} outside 100..599 (RFC 9110 §15)")
    headers = parse_field_lines(lines[1:], "response head")
    return Response(version, status, reason or "", headers)


def parse_trailer_section(block: bytes, scanner: HeadScanner) -> Headers:
    """Trailer fields (RFC 9112 §7.1.2): the field-line rules and limits of a head."""
    lines = _split_block(block, scanner, "trailer section")
    return parse_field_lines(lines, "trailer section")
