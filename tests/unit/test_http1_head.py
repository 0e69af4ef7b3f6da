"""Heads: request-line, status-line, field lines, targets, Host, and the limits."""

from __future__ import annotations

import time

import pytest

from proxy.errors import (
    HeaderFieldsTooLarge,
    HTTPVersionNotSupported,
    NotImplementedByProxy,
    ProtocolError,
    URITooLong,
)
from proxy.http1 import NEED_DATA, Headers, Limits, Request, RequestReader, ResponseReader, split_absolute_form
from proxy.http1.head import HeadScanner, check_host, check_request_target, parse_request_head, parse_response_head


def parse(raw: bytes, **options) -> Request:
    reader = RequestReader(**options)
    reader.feed(raw)
    event = reader.next_event()
    assert isinstance(event, Request), event
    return event


def refuse(raw: bytes, limits: Limits = Limits(), **options) -> Exception:
    reader = RequestReader(limits, **options)
    reader.feed(raw)
    with pytest.raises(ProtocolError) as info:
        for _ in range(10):
            reader.next_event()
    return info.value


# --------------------------------------------------------------------------- request line
def test_request_line_and_fields_are_parsed() -> None:
    request = parse(b"POST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Mixed-Case:  v1 \t\r\nx-empty:\r\n\r\n")
    assert (request.method, request.target, request.version) == ("POST", "/a/b?c=d", "HTTP/1.1")
    # names keep their case, values lose the OWS around them (RFC 9112 §5.1)
    assert list(request.headers) == [("Host", "example.com"), ("X-Mixed-Case", "v1"), ("x-empty", "")]


def test_obs_text_is_decoded_as_latin1_and_inner_whitespace_kept() -> None:
    request = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9  au\tlait\r\n\r\n")
    assert request.headers.get("x-name") == "caf\u00e9  au\tlait"


def test_method_is_case_sensitive_and_any_token() -> None:
    assert parse(b"get / HTTP/1.1\r\nHost: a\r\n\r\n").method == "get"
    assert parse(b"M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n").method == "M-SEARCH"
    assert parse(b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n").method == "PURGE"


@pytest.mark.parametrize(
    "line, error",
    [
        (b"GET / HTTP/1.1 ", ProtocolError),
        (b"GET / HTTP/3.0", HTTPVersionNotSupported),
        (b"GET / HTTP/1.10", ProtocolError),
        (b"GET / HTTPS/1.1", ProtocolError),
        (b"GET / HTTP/1.1/", ProtocolError),
        (b"GET\x00 / HTTP/1.1", ProtocolError),
        (b"GET /\x7f HTTP/1.1", ProtocolError),
        (b"GET", ProtocolError),
        (b"", ProtocolError),
    ],
)
def test_bad_request_lines(line: bytes, error: type) -> None:
    assert type(refuse(line + b"\r\nHost: a\r\n\r\n")) is error


def test_http_version_not_supported_is_505() -> None:
    error = refuse(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert error.status == 505


# --------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    "method, target",
    [("GET", "/"), ("GET", "/a?b=c/d?e"), ("GET", "//double"), ("OPTIONS", "*"), ("GET", "/%41")],
)
def test_valid_targets(method: str, target: str) -> None:
    check_request_target(method, target, False, False)


@pytest.mark.parametrize(
    "method, target",
    [("GET", "*"), ("POST", "*"), ("GET", "a/b"), ("GET", "example.com:80"), ("GET", "/x#frag"),
     ("GET", "http://example.com/")],
)
def test_invalid_targets_in_reverse_mode(method: str, target: str) -> None:
    with pytest.raises(ProtocolError):
        check_request_target(method, target, False, False)


def test_absolute_form_only_when_allowed() -> None:
    check_request_target("GET", "http://example.com:8080/x?y", True, False)
    request = parse(b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", allow_absolute_form=True)
    assert request.target == "http://example.com/x"
    assert refuse(b"GET http://example.com/x HTTP/1.1\r\nHost: a\r\n\r\n").status == 400


@pytest.mark.parametrize(
    "target, parts",
    [
        ("http://example.com", ("http", "example.com", "/")),
        ("HTTP://Example.com:81/p?q", ("http", "Example.com:81", "/p?q")),
        ("https://[::1]:8443?x", ("https", "[::1]:8443", "/?x")),
    ],
)
def test_split_absolute_form(target: str, parts: tuple) -> None:
    assert split_absolute_form(target) == parts


@pytest.mark.parametrize(
    "target", ["ftp://a/", "http:///x", "http://u:p@a/", "http://a b/", "http://:80/", "http://a#x"]
)
def test_split_absolute_form_refuses(target: str) -> None:
    with pytest.raises(ProtocolError):
        split_absolute_form(target)


def test_connect_needs_allow_connect_and_authority_form() -> None:
    with pytest.raises(NotImplementedByProxy):
        check_request_target("CONNECT", "example.com:443", False, False)
    check_request_target("CONNECT", "example.com:443", False, True)
    check_request_target("CONNECT", "[2001:db8::1]:443", False, True)
    for bad in ["example.com", ":443", "example.com:0", "example.com:65536", "/x", "http://a:1/", "a:44x"]:
        with pytest.raises(ProtocolError):
            check_request_target("CONNECT", bad, False, True)


# --------------------------------------------------------------------------- Host
@pytest.mark.parametrize("host", ["a", "example.com:8443", "[::1]", "[::1]:80", "xn--bcher-kva.example", "", "a:"])
def test_valid_host(host: str) -> None:
    check_host(Headers([("Host", host)]), "HTTP/1.1")


@pytest.mark.parametrize("host", ["a b", "a/b", "u@a", "a:b", "a,b", "[::1", "a%zz", "caf\u00e9"])
def test_invalid_host(host: str) -> None:
    with pytest.raises(ProtocolError, match="invalid Host"):
        check_host(Headers([("Host", host)]), "HTTP/1.1")


def test_host_count_rules() -> None:
    check_host(Headers(), "HTTP/1.0")  # HTTP/1.0 may omit Host
    with pytest.raises(ProtocolError, match="without Host"):
        check_host(Headers(), "HTTP/1.1")
    for version in ("HTTP/1.0", "HTTP/1.1"):
        with pytest.raises(ProtocolError, match="more than one Host"):
            check_host(Headers([("Host", "a"), ("host", "a")]), version)


# --------------------------------------------------------------------------- limits
SMALL = Limits(max_request_line=64, max_field_line=32, max_head_size=200, max_fields=3)


def test_request_line_over_the_limit_is_414_before_any_crlf() -> None:
    reader = RequestReader(SMALL)
    reader.feed(b"GET /" + b"a" * 59)  # exactly 64 bytes: still acceptable
    assert reader.next_event() is NEED_DATA
    reader.feed(b"a")  # 65 bytes and no CRLF: refuse now, do not wait
    with pytest.raises(URITooLong) as info:
        reader.next_event()
    assert info.value.status == 414


def test_request_line_at_the_limit_is_accepted() -> None:
    line = b"GET /" + b"a" * (64 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 64
    reader = RequestReader(SMALL)
    reader.feed(line + b"\r\nHost: a\r\n\r\n")
    assert isinstance(reader.next_event(), Request)
    reader = RequestReader(SMALL)
    reader.feed(line[:-1] + b"1a\r\nHost: a\r\n\r\n")  # 65 bytes, complete head
    with pytest.raises(URITooLong):
        reader.next_event()


@pytest.mark.parametrize("whole", [True, False], ids=["complete-head", "partial-head"])
def test_field_line_over_the_limit_is_431(whole: bool) -> None:
    ok = b"X: " + b"v" * 29  # 32 bytes
    assert len(ok) == 32
    reader = RequestReader(SMALL)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + ok + b"\r\n\r\n")
    assert isinstance(reader.next_event(), Request)
    reader = RequestReader(SMALL)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + ok + b"v" + (b"\r\n\r\n" if whole else b""))
    with pytest.raises(HeaderFieldsTooLarge) as info:
        reader.next_event()
    assert info.value.status == 431


@pytest.mark.parametrize("whole", [True, False], ids=["complete-head", "partial-head"])
def test_too_many_fields_is_431(whole: bool) -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n"
    reader = RequestReader(SMALL)
    reader.feed(head + b"\r\n")
    assert isinstance(reader.next_event(), Request)  # 3 fields: at the limit
    reader = RequestReader(SMALL)
    reader.feed(head + b"C: 3\r\n" + (b"\r\n" if whole else b""))
    with pytest.raises(HeaderFieldsTooLarge):
        reader.next_event()


def test_head_over_the_size_limit_is_431_as_soon_as_it_is_buffered() -> None:
    limits = Limits(max_head_size=100)
    reader = RequestReader(limits)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-1: " + b"v" * 60)  # 89 bytes
    assert reader.next_event() is NEED_DATA
    reader.feed(b"v" * 12)  # 101 bytes, still no end of head
    with pytest.raises(HeaderFieldsTooLarge):
        reader.next_event()


def test_head_size_counts_the_final_empty_line() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    reader = RequestReader(Limits(max_head_size=len(head)))
    reader.feed(head)
    assert isinstance(reader.next_event(), Request)
    reader = RequestReader(Limits(max_head_size=len(head) - 1))
    reader.feed(head)
    with pytest.raises(HeaderFieldsTooLarge):
        reader.next_event()


def test_a_final_cr_waits_for_its_lf() -> None:
    reader = RequestReader()
    for piece in (b"GET / HTTP/1.1\r", b"\nHost: a\r", b"\n\r", b"\n"):
        assert reader.next_event() is NEED_DATA
        reader.feed(piece)
    assert isinstance(reader.next_event(), Request)


def test_bare_lf_is_refused_before_the_head_ends() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\nHost: a")  # no CRLFCRLF will ever come
    with pytest.raises(ProtocolError, match="bare"):
        reader.next_event()


def test_byte_by_byte_head_scanning_is_linear() -> None:
    """Each byte is scanned a bounded number of times however the head is split:
    a 200 KB head fed one byte per call takes well under a second, where
    rescanning the buffer on every call would take minutes (a CPU-exhaustion DoS)."""
    limits = Limits(max_head_size=1 << 20, max_fields=10000)
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 60) for i in range(3000)) + b"\r\n"
    reader = RequestReader(limits)
    started = time.process_time()
    for i in range(len(raw) - 1):
        reader.feed(raw[i : i + 1])
        assert reader.next_event() is NEED_DATA
    reader.feed(raw[-1:])
    request = reader.next_event()
    assert isinstance(request, Request) and len(request.headers) == 3001
    assert time.process_time() - started < 5


def test_scanner_without_start_line_counts_every_line_as_a_field() -> None:
    scanner = HeadScanner(Limits(max_fields=2), start_line=None)
    buffer = bytearray(b"A: 1\r\nB: 2\r\nC: 3")
    with pytest.raises(HeaderFieldsTooLarge):
        scanner.find_end(buffer)


def test_parse_request_head_directly() -> None:
    scanner = HeadScanner(Limits(), "request")
    request = parse_request_head(b"GET /x HTTP/1.0", scanner)
    assert (request.method, request.target, request.version, len(request.headers)) == ("GET", "/x", "HTTP/1.0", 0)


# --------------------------------------------------------------------------- responses
@pytest.mark.parametrize(
    "line, status, reason",
    [
        (b"HTTP/1.1 200 OK", 200, "OK"),
        (b"HTTP/1.1 404 Not  Found\tHere", 404, "Not  Found\tHere"),
        (b"HTTP/1.0 503 ", 503, ""),
        (b"HTTP/1.1 204", 204, ""),
        (b"HTTP/1.1 200 D\xe9j\xe0 vu", 200, "D\u00e9j\u00e0 vu"),
    ],
)
def test_status_lines(line: bytes, status: int, reason: str) -> None:
    response = parse_response_head(line + b"\r\nServer: x", HeadScanner(Limits(), "status"))
    assert (response.status, response.reason, response.headers.get("server")) == (status, reason, "x")


def test_status_line_limit_applies_to_responses() -> None:
    reader = ResponseReader(Limits(max_request_line=20))
    reader.expect_response_to("GET")
    reader.feed(b"HTTP/1.1 200 " + b"O" * 20)
    with pytest.raises(HeaderFieldsTooLarge):
        reader.next_event()
