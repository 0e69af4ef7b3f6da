"""Checks for exercise 1 (parse a request head): each case is compared with proxy.http1.

The answer key is ``proxy.http1.RequestReader`` (and ``proxy.http1.fields`` for
single field lines): for every byte string in the tables below, the student's parser
must give the same method, target, version and field lines, or refuse it with a
``ProtocolError`` exactly when the proxy does.  The tables stay inside what the
exercise asks for (no absolute-form targets, no size limits), so where the proxy
refuses something here, the README has a step that says why.

Where the RFC lets a recipient choose and the proxy takes the strict choice, the
other permitted answer passes too, with a note (``ALTERNATIVES``):

* a request-line split on runs of whitespace (RFC 9112 §3: recipients MAY);
* ``HTTP/1.2`` read as HTTP/1.1 (RFC 9110 §6.2: a higher minor version SHOULD be
  processed as the highest one the recipient implements); the proxy answers 505;
* a bare LF taken as a line end (RFC 9112 §2.2: MAY); the proxy refuses it;
* a bare CR, or a NUL in a field value, replaced by SP (RFC 9112 §2.2 and RFC 9110
  §5.5: "MUST either reject ... or replace ... with SP"); the proxy rejects.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

from lab.checks import Background, Checklist, Fail, Reference, need, show
from proxy.errors import ProtocolError
from proxy.http1 import Request, RequestReader
from proxy.http1.fields import parse_field_lines

CHECKLIST = Checklist("Parse a request head", Reference(
    forbid=("proxy.http1.reader", "proxy.http1.head", "proxy.http1.fields", "proxy.drive"),
    allow=("proxy.http1.fields.TOKEN", "proxy.http1.fields.TCHAR"),  # README step 2 hands out TOKEN
    why="the proxy's own HTTP/1.1 parser, the one this exercise asks you to write"))
check = CHECKLIST.check


# --------------------------------------------------------------------------- the answer key
def reference_head(head: bytes) -> Request | ProtocolError:
    """What the proxy makes of ``head`` (without its final CRLF CRLF)."""
    reader = RequestReader()
    reader.feed(head + b"\r\n\r\n")
    try:
        return reader.next_event()
    except ProtocolError as error:
        return error


def reference_field(line: str) -> tuple[str, str] | ProtocolError:
    try:
        return list(parse_field_lines([line]))[0]
    except ProtocolError as error:
        return error


def attempt(function, *args):
    """The student's answer, or the ProtocolError they raised (other errors propagate)."""
    try:
        return function(*args)
    except ProtocolError as error:
        return error


def as_tuple(request: object) -> tuple:
    if not isinstance(request, Request):
        raise Fail(f"returned {show(request)}; expected a proxy.http1.Request")
    try:
        fields = [tuple(pair) for pair in request.headers]
    except TypeError:
        raise Fail(f"request.headers is {show(request.headers)}; expected Headers([(name, value), ...])") from None
    return request.method, request.target, request.version, fields


def same_as_proxy(mine: object, reference: object, case: bytes | str) -> None:
    if isinstance(reference, ProtocolError):
        if not isinstance(mine, ProtocolError):
            raise Fail(f"accepted {show(case)}; the proxy refuses it: {reference}")
        return
    if isinstance(mine, ProtocolError):
        raise Fail(f"refused {show(case)} ({mine}); the proxy accepts it")
    if isinstance(reference, Request):
        got, want = as_tuple(mine), as_tuple(reference)
    else:
        got, want = mine, reference
        if isinstance(got, list):
            got = tuple(got)
    if got != want:
        raise Fail(f"for {show(case, 60)} returned {show(got, 120)}; expected {show(want, 120)}")


def same_as_proxy_or_permitted(mine: object, reference: object, case: bytes | str,
                               permitted: list[tuple[object, str]]) -> str | None:
    """Like ``same_as_proxy``, but also accept an answer the RFC permits: its note, or None.

    ``permitted`` holds (answer, note) pairs: what a parser that took the RFC's other
    choice returns for ``case`` (a Request, or a (method, target, version) tuple).
    """
    if not permitted:
        same_as_proxy(mine, reference, case)
        return None
    try:
        same_as_proxy(mine, reference, case)
        return None
    except Fail as strict:
        if not isinstance(mine, ProtocolError):
            got = as_tuple(mine) if isinstance(mine, Request) else tuple(mine) if isinstance(mine, (list, tuple)) \
                else mine
            for answer, note in permitted:
                if got == (as_tuple(answer) if isinstance(answer, Request) else answer):
                    return note
        what = "refusing it" if isinstance(reference, ProtocolError) else show(reference, 60)
        other = " or ".join(show(as_tuple(a) if isinstance(a, Request) else a, 80) for a, _ in permitted)
        raise Fail(f"{strict}; the RFC also permits {other} (the proxy's answer: {what})") from None


def joined_notes(notes: list[str | None]) -> str | None:
    """The notes of one check, each once, as one line."""
    unique = list(dict.fromkeys(note for note in notes if note))
    return "; ".join([unique[0]] + [note.removeprefix("note: ") for note in unique[1:]]) if unique else None


# --------------------------------------------------------------------------- what the RFC also permits
WHITESPACE = re.compile(r"[ \t\x0b\x0c\r]+")  # RFC 9112 §3: SP, HTAB, VT, FF or bare CR


def permitted_request_lines(line: str) -> list[tuple[object, str]]:
    """The other readings RFC 9112 §3 and RFC 9110 §6.2 allow for a request-line."""
    readings: list[tuple[object, str]] = []
    words = WHITESPACE.split(line.strip(" \t\x0b\x0c\r"))
    if len(words) == 3 and " ".join(words) != line:
        lenient = reference_head(" ".join(words).encode("latin-1") + b"\r\nHost: x")
        if isinstance(lenient, Request):
            readings.append((as_tuple(lenient)[:3], "note: you split the request-line on any whitespace, which "
                             "RFC 9112 §3 permits (MAY); the proxy accepts single SPs only, because two "
                             "parsers that split differently are a smuggling pair"))
    match = re.fullmatch(r"(\S+) (\S+) HTTP/1\.([2-9])", line)
    if match:
        method, target = match.group(1), match.group(2)
        note = ("note: you process HTTP/1.%s as HTTP/1.1, as RFC 9110 §6.2 says a recipient SHOULD; the proxy "
                "answers 505 instead (its choice, against that SHOULD: no HTTP/1.2 exists, so a client that "
                "sends one is broken or probing)" % match.group(3))
        readings += [((method, target, "HTTP/1.1"), note), ((method, target, f"HTTP/1.{match.group(3)}"), note)]
    return readings


def permitted_heads(head: bytes) -> list[tuple[object, str]]:
    """The other readings RFC 9112 §2.2 and RFC 9110 §5.5 allow for a whole head."""
    repairs: list[tuple[Callable[[bytes], bytes], str]] = [
        (lambda h: re.sub(rb"\r?\n", b"\r\n", h),
         "note: you accept a bare LF as a line end, which RFC 9112 §2.2 permits (MAY); the proxy refuses it, "
         "a stricter-than-required choice against request smuggling"),
        (lambda h: re.sub(rb"\r(?!\n)", b" ", h),
         "note: you replace a bare CR with SP, which RFC 9112 §2.2 permits (\"MUST consider that element to be "
         "invalid or replace each bare CR with SP\"); the proxy takes the other choice and refuses"),
        (lambda h: h.replace(b"\x00", b" "),
         "note: you replace NUL in a field value with SP, which RFC 9110 §5.5 permits (\"MUST either reject "
         "the message or replace each of those characters with SP\"); the proxy rejects"),
    ]
    readings: list[tuple[object, str]] = []
    for repair, note in repairs:
        repaired = repair(head)
        if repaired != head and isinstance(result := reference_head(repaired), Request):
            readings.append((result, note))
    return readings


# --------------------------------------------------------------------------- the tables
GOOD_REQUEST_LINES = [
    "GET / HTTP/1.1",
    "POST /upload?id=7 HTTP/1.1",
    "HEAD /index.html HTTP/1.0",
    "OPTIONS * HTTP/1.1",
    "PURGE /cache/item HTTP/1.1",  # any token is a method (RFC 9110 §9.1)
]
BAD_REQUEST_LINES = [
    # The proxy refuses all of these.  The first four are grammar errors that RFC 9112 §3
    # lets a recipient parse leniently anyway (MAY: whitespace-delimited words), and
    # HTTP/1.2 is one RFC 9110 §6.2 says SHOULD be read as 1.1: see permitted_request_lines.
    "GET  / HTTP/1.1",  # two spaces: parsers that split on runs of whitespace disagree (§3)
    " GET / HTTP/1.1",
    "GET / HTTP/1.1 ",
    "GET\t/ HTTP/1.1",  # a tab is not SP
    "GET /",
    "GET / HTTP/1.1 extra",
    "GET / http/1.1",  # HTTP-name is case-sensitive (RFC 9112 §2.3)
    "GET / HTTP/2.0",  # another major version: another syntax; 505 (RFC 9110 §6.2, §15.6.6)
    "GET / HTTP/1.2",  # the proxy answers 505; RFC 9110 §6.2 would read it as 1.1
    "G(T / HTTP/1.1",  # "(" is not a tchar
]
GOOD_FIELD_LINES = [
    "Host: www.example.test",
    "Accept:   */*  ",
    "X-Tab:\tvalue\t",
    "X-Empty:",
    "Referer: http://www.example.test/a?b=c",  # only the first colon separates
    "x-lower-case: Value Keeps Its Case",
]
BAD_FIELD_LINES = [
    "Host : www.example.test",  # RFC 9112 §5.1: a server MUST reject this (smuggling)
    "Host\t: www.example.test",
    " X-Folded: continued",  # obs-fold (RFC 9112 §5.2)
    "\tcontinued",
    "No colon here",
    ": no-name",
    "Bad Name: x",
    "X(y): z",
]
GOOD_HEADS = [
    b"GET / HTTP/1.1\r\nHost: www.example.test",
    b"POST /form HTTP/1.1\r\nHost: api.example.test\r\nContent-Type: text/plain\r\nContent-Length: 5",
    b"GET /old HTTP/1.0",  # HTTP/1.0 did not require Host
    b"GET / HTTP/1.1\r\nhost: lower.example.test\r\nAccept: text/html\r\nAccept: */*",
    b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Spaces:   padded value   \r\nX-Empty:",
    b"GET /cafe HTTP/1.1\r\nHost: www.example.test\r\nX-Latin1: caf\xe9",  # obs-text: decode latin-1
]
LINE_ENDING_HEADS = [
    # RFC 9112 §2.2: a bare LF MAY be taken as a line end; a bare CR MUST make the element
    # invalid or be replaced by SP.  The proxy refuses both; the other readings pass.
    b"GET / HTTP/1.1\nHost: www.example.test",  # bare LF ends the request-line
    b"GET / HTTP/1.1\r\nHost: www.example.test\nX-Injected: 1",
    b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-A: 1\rX-Injected: 1",  # bare CR inside a value
]
HOST_HEADS = [
    b"GET / HTTP/1.1\r\nAccept: */*",  # no Host in HTTP/1.1
    b"GET / HTTP/1.1\r\nHost: a.example.test\r\nHost: b.example.test",  # which one?
    b"GET / HTTP/1.0\r\nHost: a.example.test\r\nhost: b.example.test",
    b"GET / HTTP/1.0\r\nHost: a.example.test",  # fine
]
CONTROL_HEADS = [
    b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Nul: a\x00b",  # reject, or NUL -> SP (RFC 9110 §5.5)
    # Other controls are "also invalid" (RFC 9110 §5.5); retaining them is allowed only in
    # a context no downstream HTTP parser reads, which a proxy's head is not.
    b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Escape: \x1b[31m",
    b"GET / HTTP/1.1\r\nHost: www.example.test\r\nContent-Length : 5",  # step 3's rule, inside a head
]
HEAD = b"GET /pieces?x=1 HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: lab-check\r\nAccept: */*\r\n\r\n"


# --------------------------------------------------------------------------- step 1
@check(1, "split_head finds the empty line that ends a head",
       hint='bytes.find(b"\\r\\n\\r\\n"); the head excludes those 4 bytes, rest is everything after them')
def _(student, lab):
    split_head = need(student, "split_head")
    cases = [
        (HEAD + b"body", (HEAD[:-4], b"body")),
        (HEAD, (HEAD[:-4], b"")),
        (HEAD + HEAD, (HEAD[:-4], HEAD)),  # pipelining: the next request stays in rest
    ]
    for data, want in cases:
        got = split_head(data)
        if got is None or tuple(got) != want:
            raise Fail(f"split_head({show(data, 50)}) returned {show(got)}; expected {show(want)}")


@check(1, "split_head says None until the whole head has arrived",
       hint="README step 1: a head can arrive cut anywhere, even between the \\r and the \\n")
def _(student, lab):
    split_head = need(student, "split_head")
    for cut in (0, 1, 15, len(HEAD) - 3, len(HEAD) - 2, len(HEAD) - 1):
        got = split_head(HEAD[:cut])
        if got is not None:
            raise Fail(f"split_head({show(HEAD[:cut][-30:])} ...) returned {show(got)}; expected None")


# --------------------------------------------------------------------------- step 2
@check(2, "parse_request_line splits method, target and version like the proxy",
       hint="RFC 9112 §3: method SP request-target SP HTTP-version, exactly one space between")
def _(student, lab):
    parse_request_line = need(student, "parse_request_line")
    for line in GOOD_REQUEST_LINES:
        reference = reference_head(line.encode() + b"\r\nHost: x")
        same_as_proxy(attempt(parse_request_line, line), as_tuple(reference)[:3], line)


@check(2, "parse_request_line refuses malformed request-lines with ProtocolError (or reads them as the RFC permits)",
       hint="README step 2: 3 non-empty parts, a token method (proxy.http1.fields.TOKEN), HTTP-name in "
            "capitals; the proxy also refuses extra whitespace and HTTP/1.2, where the RFC would let you choose")
def _(student, lab):
    parse_request_line = need(student, "parse_request_line")
    notes = []
    for line in BAD_REQUEST_LINES:
        reference = reference_head(line.encode() + b"\r\nHost: x")
        notes.append(same_as_proxy_or_permitted(attempt(parse_request_line, line), reference, line,
                                                permitted_request_lines(line)))
    return joined_notes(notes)


# --------------------------------------------------------------------------- step 3
@check(3, "parse_field_line returns (name as spelled, value without surrounding spaces)",
       hint="RFC 9112 §5: split at the first colon; strip spaces and tabs (OWS) from the value only")
def _(student, lab):
    parse_field_line = need(student, "parse_field_line")
    for line in GOOD_FIELD_LINES:
        same_as_proxy(attempt(parse_field_line, line), reference_field(line), line)


@check(3, "parse_field_line refuses whitespace before the colon, obs-fold and bad names",
       hint="RFC 9112 §5.1 and §5.2: the name must be a token; 'Host : x' is how smuggling "
            "attacks hide a header from one of two parsers")
def _(student, lab):
    parse_field_line = need(student, "parse_field_line")
    for line in BAD_FIELD_LINES:
        same_as_proxy(attempt(parse_field_line, line), reference_field(line), line)


# --------------------------------------------------------------------------- step 4
@check(4, "parse_request_head gives the same Request as proxy.http1 for valid heads",
       hint="README step 4: decode latin-1, split on CRLF, then steps 2 and 3; keep field order")
def _(student, lab):
    parse_request_head = need(student, "parse_request_head")
    for head in GOOD_HEADS:
        same_as_proxy(attempt(parse_request_head, head), reference_head(head), head)


@check(4, "parse_request_head handles a bare LF or bare CR as RFC 9112 §2.2 allows",
       hint="RFC 9112 §2.2: refuse (what the proxy does), or take a bare LF as a line end (MAY) and "
            "replace a bare CR with SP; never keep a CR or LF inside a field value")
def _(student, lab):
    parse_request_head = need(student, "parse_request_head")
    notes = [same_as_proxy_or_permitted(attempt(parse_request_head, head), reference_head(head), head,
                                        permitted_heads(head))
             for head in LINE_ENDING_HEADS]
    return joined_notes(notes)


@check(4, "parse_request_head wants exactly one Host in HTTP/1.1, at most one in HTTP/1.0",
       hint="RFC 9112 §3.2: 400 for a missing Host in 1.1 and for two Host lines (routing confusion)")
def _(student, lab):
    parse_request_head = need(student, "parse_request_head")
    for head in HOST_HEADS:
        same_as_proxy(attempt(parse_request_head, head), reference_head(head), head)


@check(4, "parse_request_head refuses control characters and bad field lines inside a head",
       hint="RFC 9110 §5.5: CR, LF and NUL in a value are 'invalid and dangerous' (reject, or replace with SP), "
            "other controls invalid; use step 3 on every field line")
def _(student, lab):
    parse_request_head = need(student, "parse_request_head")
    notes = [same_as_proxy_or_permitted(attempt(parse_request_head, head), reference_head(head), head,
                                        permitted_heads(head) if b"\x00" in head else [])
             for head in CONTROL_HEADS]
    return joined_notes(notes)


# --------------------------------------------------------------------------- step 5
def _connected_pair() -> tuple[socket.socket, socket.socket]:
    """A real TCP connection on loopback: (client side, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    server.settimeout(3)
    return client, server


def _send_in_pieces(sock: socket.socket, data: bytes, size: int, then_close: bool) -> None:
    for start in range(0, len(data), size):
        sock.sendall(data[start:start + size])
        time.sleep(0.002)  # separate TCP segments, so separate recv() calls
    if then_close:
        sock.shutdown(socket.SHUT_WR)


@check(5, "read_request reads a head that arrives over TCP in small pieces",
       hint="README step 5: loop recv -> append -> split_head until it is not None; return what is left too")
def _(student, lab):
    read_request = need(student, "read_request")
    client, server = _connected_pair()
    with client, server:
        sender = Background(_send_in_pieces, client, HEAD + b"BODY", 7, False)
        result = read_request(server)
        sender.join()
    if not isinstance(result, tuple) or len(result) != 2:
        raise Fail(f"returned {show(result)}; expected (request, rest)")
    request, rest = result
    same_as_proxy(request, reference_head(HEAD[:-4]), HEAD)
    if not b"BODY".startswith(bytes(rest)):
        raise Fail(f"rest is {show(rest)}; it should be the bytes after the head (a prefix of b'BODY')")


@check(5, "read_request raises ProtocolError when the client hangs up mid-head",
       hint="recv() returning b'' means the peer closed: raise IncompleteMessage, never loop for ever")
def _(student, lab):
    read_request = need(student, "read_request")
    client, server = _connected_pair()
    with client, server:
        sender = Background(_send_in_pieces, client, HEAD[:30], 10, True)
        try:
            result = read_request(server)
        except ProtocolError:
            sender.join()
            return
        except TimeoutError:
            raise Fail("read_request kept waiting after the client closed (recv() returned b'')") from None
    raise Fail(f"returned {show(result)} for a head cut off by the client; expected ProtocolError")
