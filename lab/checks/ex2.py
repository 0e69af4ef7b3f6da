"""Checks for exercise 2 (forward with X-Forwarded-For and hop-by-hop stripping).

The answer key is ``proxy.http1.forwarding``: ``strip_hop_by_hop`` and
``prepare_upstream_request`` applied to the same parsed requests.  The proxy also
adds X-Forwarded-Proto, X-Forwarded-Host and Via, which the exercise does not ask
for, so those three are left out of the comparison on both sides (a student who
adds Via, as RFC 9110 §7.6.3 requires of a gateway, passes too).

``Connection: Host`` is the one place where the RFC's sentences pull two ways: an
intermediary MUST remove every field the Connection header names (RFC 9110 §7.6.1),
and a client, which the proxy is towards the origin, MUST send Host in every
HTTP/1.1 request (RFC 9112 §3.2).  The proxy never treats Host as hop-by-hop; a
student whose steps 1-2 remove it as the first sentence says passes those steps
(with a note), and step 4 then wants the Host back.  Step 5 is a live round trip:
``http.client`` ─▶ ``lab.harness.TinyForwarder`` (with the student's function in it)
─▶ ``course.origin.Origin``, which reports the header lines it received.
"""

from __future__ import annotations

import hashlib
import json

from lab.checks import Checklist, Fail, Reference, need, show
from lab.harness import TinyForwarder, http_request
from proxy.http1 import HOP_BY_HOP, Headers, Request, RequestReader, prepare_upstream_request, strip_hop_by_hop
from course.origin import Origin

CHECKLIST = Checklist("Forward with X-Forwarded-For and hop-by-hop stripping", Reference(
    forbid=("proxy.http1.forwarding",),
    allow=("proxy.http1.forwarding.HOP_BY_HOP",),  # the README hands out the list
    why="the proxy's own forwarding rules (proxy/http1/forwarding.py)"))
check = CHECKLIST.check

NOT_ASKED = {"x-forwarded-proto", "x-forwarded-host", "via"}  # the proxy adds these too


def parse(head: bytes) -> Request:
    reader = RequestReader()
    reader.feed(head)
    return reader.next_event()


# (request head, client address): every case is a request a client could really send.
CASES: list[tuple[bytes, str]] = [
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
     b"TE: trailers\r\nUser-Agent: lab\r\nProxy-Authorization: Basic bGFiOmxhYg==\r\n\r\n", "10.0.0.5"),
    (b"GET /debug HTTP/1.1\r\nHost: www.example.test\r\nConnection: close, X-Debug-Token\r\n"
     b"X-Debug-Token: s3cret\r\nAccept: */*\r\n\r\n", "192.0.2.10"),
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: Host, Upgrade\r\nUpgrade: websocket\r\n\r\n",
     "192.0.2.11"),  # Connection cannot remove Host (RFC 9110 §7.6.1)
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\nconnection: X-A\r\nCONNECTION: x-b\r\nX-A: 1\r\n"
     b"x-B: 2\r\nX-C: 3\r\n\r\n", "192.0.2.12"),  # two Connection lines, any case
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n", "192.0.2.13"),
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Forwarded-For: 203.0.113.7\r\nAccept: */*\r\n"
     b"X-Forwarded-For: 198.51.100.1, 192.0.2.5\r\n\r\n", "10.1.2.3"),  # a list on two lines
    (b"POST /form HTTP/1.1\r\nHost: api.example.test\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
     b"Trailer: X-Checksum\r\n\r\n", "192.0.2.14"),
    (b"GET /old HTTP/1.0\r\nHost: www.example.test\r\nProxy-Connection: keep-alive\r\n\r\n", "::1"),
]


HOST_NOTE = ("note: you remove Host when Connection names it, as the letter of RFC 9110 §7.6.1 says; the proxy "
             "never treats Host as hop-by-hop (the client broke a MUST NOT by naming it, and RFC 9112 §3.2 makes the "
             "proxy send Host anyway): step 4 must still send it")


def names_host(headers: Headers) -> bool:
    """Does the Connection field name Host (which the sender MUST NOT do, RFC 9110 §7.6.1)?"""
    return "host" in headers.tokens("connection")


def by_name(headers) -> dict[str, list[str]]:
    """{lower-cased name: [values in order]}: the order of different names carries no meaning."""
    table: dict[str, list[str]] = {}
    for name, value in headers:
        table.setdefault(name.lower(), []).append(value)
    return table


def snapshot(request: Request) -> tuple:
    return request.method, request.target, request.version, list(request.headers)


def expect_headers(value: object, what: str) -> Headers:
    if not isinstance(value, Headers):
        raise Fail(f"{what} returned {show(value)}; expected a proxy.http1.Headers")
    return value


# --------------------------------------------------------------------------- step 1
@check(1, "hop_by_hop_names lists HOP_BY_HOP and the names in Connection, lower-cased",
       hint="RFC 9110 §7.6.1; headers.tokens('connection') gives the Connection list, lower-cased")
def _(student, lab):
    hop_by_hop_names = need(student, "hop_by_hop_names")
    note = None
    for head, _ in CASES:
        headers = parse(head).headers
        names = hop_by_hop_names(headers)
        if not isinstance(names, (set, frozenset)) or not all(isinstance(n, str) for n in names):
            raise Fail(f"returned {show(names)}; expected a set of lower-cased names")
        present = {name.lower() for name, _ in headers}
        kept = {name.lower() for name, _ in strip_hop_by_hop(headers)}
        missing = (set(HOP_BY_HOP) | (present - kept)) - names
        wrong = names & kept
        if names_host(headers) and wrong == {"host"}:
            wrong, note = set(), HOST_NOTE
        if missing:
            raise Fail(f"for {show(head, 70)} the set lacks {sorted(missing)}")
        if wrong:
            raise Fail(f"for {show(head, 70)} the set has {sorted(wrong)}, which must be forwarded")
    return note


# --------------------------------------------------------------------------- step 2
@check(2, "strip_hop_by_hop keeps exactly the fields the proxy keeps, in their order",
       hint="build Headers((name, value) for name, value in headers if name.lower() not in step 1's set)")
def _(student, lab):
    strip = need(student, "strip_hop_by_hop")
    note = None
    for head, _ in CASES:
        headers = parse(head).headers
        got = expect_headers(strip(headers), "strip_hop_by_hop")
        want = list(strip_hop_by_hop(headers))
        if names_host(headers) and list(got) == [(n, v) for n, v in want if n.lower() != "host"]:
            note = HOST_NOTE  # the letter of RFC 9110 §7.6.1
            continue
        if list(got) != want:
            raise Fail(f"for {show(head, 60)} kept {show(list(got), 150)}; expected {show(want, 150)}")
    return note


@check(2, "strip_hop_by_hop leaves the Headers it was given unchanged",
       hint="the caller may still need the original (the access log, a retry): copy, do not remove in place")
def _(student, lab):
    strip = need(student, "strip_hop_by_hop")
    for head, _ in CASES:
        headers = parse(head).headers
        before = list(headers)
        strip(headers)
        if list(headers) != before:
            raise Fail(f"the argument changed from {show(before, 100)} to {show(list(headers), 100)}")


# --------------------------------------------------------------------------- step 3
@check(3, "forwarded_for appends the client's address to the list already there",
       hint="join every X-Forwarded-For line (headers.get_all) and the client address with ', '")
def _(student, lab):
    forwarded_for = need(student, "forwarded_for")
    for head, client_ip in CASES:
        request = parse(head)
        want = prepare_upstream_request(request, client_ip=client_ip, proto="http").headers.get("x-forwarded-for")
        got = forwarded_for(request.headers, client_ip)
        if got != want:
            raise Fail(f"for {show(head, 60)} from {client_ip} returned {show(got)}; expected {show(want)}")


# --------------------------------------------------------------------------- step 4
@check(4, "rewrite_for_origin sends what prepare_upstream_request sends (bar X-Forwarded-Proto/Host, Via)",
       hint="step 2's headers, then headers.set('X-Forwarded-For', step 3's value); "
            "Request(method, target, 'HTTP/1.1', headers); Host always goes on (RFC 9112 §3.2)")
def _(student, lab):
    rewrite = need(student, "rewrite_for_origin")
    for head, client_ip in CASES:
        request = parse(head)
        got = rewrite(request, client_ip)
        if not isinstance(got, Request):
            raise Fail(f"returned {show(got)}; expected a proxy.http1.Request")
        want = prepare_upstream_request(parse(head), client_ip=client_ip, proto="http")
        if (got.method, got.target, got.version) != (want.method, want.target, want.version):
            raise Fail(f"request-line {got.method} {got.target} {got.version}; "
                       f"expected {want.method} {want.target} {want.version}")
        mine = {name: values for name, values in by_name(got.headers).items() if name not in NOT_ASKED}
        theirs = {name: values for name, values in by_name(want.headers).items() if name not in NOT_ASKED}
        if "host" not in mine:
            raise Fail(f"for {show(head, 50)}: no Host in the request to the origin; a client (the proxy, "
                       "towards the origin) MUST send Host in every HTTP/1.1 request (RFC 9112 §3.2)")
        if mine != theirs:
            extra = sorted(set(mine) - set(theirs))
            lacking = sorted(set(theirs) - set(mine))
            differ = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
            raise Fail(f"for {show(head, 50)}: " + "; ".join(part for part in [
                f"should not send {extra}" if extra else "", f"should send {lacking}" if lacking else "",
                f"values differ for {[(n, mine[n], theirs[n]) for n in differ]}" if differ else ""] if part))


@check(4, "rewrite_for_origin leaves the client's request unchanged",
       hint="return a new Request; the proxy still needs the original (keep-alive, logging)")
def _(student, lab):
    rewrite = need(student, "rewrite_for_origin")
    for head, client_ip in CASES:
        request = parse(head)
        before = snapshot(request)
        rewrite(request, client_ip)
        if snapshot(request) != before:
            raise Fail(f"the request changed from {show(before, 100)} to {show(snapshot(request), 100)}")


# --------------------------------------------------------------------------- step 5
def _through_forwarder(student, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    rewrite = need(student, "rewrite_for_origin")
    with Origin("lab-origin") as origin, TinyForwarder(rewrite, origin.address) as forwarder:
        status, answer = http_request(forwarder.port, method, path, headers, body)
        forwarder.raise_first_error()  # the real cause of a 502 (a TODO, a crash in rewrite)
    if status != 200:
        raise Fail(f"the client got status {status}: {answer[:200]!r}")
    return json.loads(answer)


@check(5, "live: through a real forwarder, the origin sees no hop-by-hop field and the right X-Forwarded-For",
       hint="README step 5: run the file and read what the origin received")
def _(student, lab):
    seen = _through_forwarder(student, "GET", "/live", {
        "Connection": "keep-alive, X-Debug-Token",
        "X-Debug-Token": "only-for-the-first-hop",
        "Proxy-Authorization": "Basic bGFiOmxhYg==",
        "X-Forwarded-For": "203.0.113.7",
    })
    received = by_name(seen["headers"])
    leaked = sorted({"connection", "x-debug-token", "proxy-authorization", "keep-alive"} & set(received))
    if leaked:
        raise Fail(f"the origin received {leaked}")
    if received.get("x-forwarded-for") != ["203.0.113.7, 127.0.0.1"]:
        raise Fail(f"the origin received X-Forwarded-For {received.get('x-forwarded-for')}; "
                   "expected ['203.0.113.7, 127.0.0.1']")
    if "host" not in received:
        raise Fail("the origin received no Host")


@check(5, "live: a POST body arrives whole (Content-Length is end-to-end, not hop-by-hop)",
       hint="only hop-by-hop fields go; Content-Length tells the origin where this body ends")
def _(student, lab):
    body = bytes(range(256)) * 40
    seen = _through_forwarder(student, "POST", "/upload", {"Content-Type": "application/octet-stream"}, body)
    want = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if seen.get("body") != want:
        raise Fail(f"the origin read body {seen.get('body')}; expected {want}")
