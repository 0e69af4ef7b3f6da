"""RequestReader: pipelining, persistence, bodies, EOF, CONNECT, errors."""

from __future__ import annotations

import pytest

from proxy.errors import ContentTooLarge, IncompleteMessage, NotImplementedByProxy, ProtocolError
from proxy.http1 import (
    NEED_DATA,
    TRANSITIONS,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Limits,
    ReaderState,
    Request,
    RequestReader,
)


def events(reader: RequestReader, limit: int = 1000) -> list:
    """next_event() until NEED_DATA or ConnectionClosed (included)."""
    out = []
    for _ in range(limit):
        event = reader.next_event()
        out.append(event)
        if event is NEED_DATA or event is ConnectionClosed:
            return out
    raise AssertionError("reader did not stop")


def messages(out: list) -> list[tuple[Request, bytes, object]]:
    """Group events into (request, body, trailers) triples."""
    result = []
    for event in out:
        if isinstance(event, Request):
            result.append([event, b"", None])
        elif isinstance(event, Data):
            result[-1][1] += event.data
        elif isinstance(event, EndOfMessage):
            result[-1][2] = event.trailers
    return [tuple(m) for m in result]  # type: ignore[misc]


GET = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST_CL = b"POST /b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
)


def test_one_get() -> None:
    reader = RequestReader()
    reader.feed(GET)
    request, end, need = events(reader)
    assert isinstance(request, Request) and request.target == "/a"
    assert request.framing.kind == "none" and request.keep_alive and not request.expect_continue
    assert isinstance(end, EndOfMessage) and need is NEED_DATA


def test_pipelined_requests_in_one_feed() -> None:
    reader = RequestReader()
    reader.feed(GET + POST_CL + POST_CHUNKED + GET)
    parsed = messages(events(reader))
    assert [(r.method, r.target, body) for r, body, _ in parsed] == [
        ("GET", "/a", b""), ("POST", "/b", b"hello"), ("POST", "/c", b"abcde"), ("GET", "/a", b""),
    ]
    assert parsed[2][0].framing.kind == "chunked" and parsed[2][2].get("x-sum") == "5"
    assert parsed[1][0].framing.length == 5
    assert reader.take_buffered() == b""


@pytest.mark.parametrize("raw", [GET + POST_CL + POST_CHUNKED + GET])
def test_one_byte_at_a_time_gives_the_same_messages(raw: bytes) -> None:
    whole = RequestReader()
    whole.feed(raw)
    expected = messages(events(whole))
    reader = RequestReader()
    out = []
    for i in range(len(raw)):
        reader.feed(raw[i : i + 1])
        got = events(reader)
        for event in got:
            if isinstance(event, Data):
                assert len(event.data) == 1  # never more than was fed
        out.extend(e for e in got if e is not NEED_DATA)
    assert [(r.method, r.target, list(r.headers), b, t) for r, b, t in messages(out)] == [
        (r.method, r.target, list(r.headers), b, t) for r, b, t in expected
    ]


def test_body_is_streamed_as_it_arrives() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(reader.next_event(), Request)
    assert reader.next_event() == Data(b"abc")
    assert reader.next_event() is NEED_DATA
    reader.feed(b"defghij")
    assert reader.next_event() == Data(b"defghij")
    assert isinstance(reader.next_event(), EndOfMessage)


def test_leading_empty_lines_are_ignored_even_split() -> None:
    reader = RequestReader()
    for piece in (b"\r", b"\n\r\n", GET):
        reader.feed(piece)
        out = events(reader)
    assert isinstance(out[0], Request)


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n", False),
        (b"GET / HTTP/1.0\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
    ],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    reader = RequestReader()
    reader.feed(head + b"\r\n" + GET)
    out = events(reader)
    assert out[0].keep_alive is keep_alive
    if keep_alive:
        assert isinstance(out[2], Request)  # the pipelined GET is parsed
    else:
        # RFC 9112 §9.6: no further request is processed after "close".
        assert out[1:] == [out[1], ConnectionClosed] and isinstance(out[1], EndOfMessage)
        assert reader.next_event() is ConnectionClosed


@pytest.mark.parametrize(
    "head, expect",
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: a\r\n", False),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n", False),
        (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n", False),  # RFC 9110 §10.1.1: ignored in 1.0
    ],
)
def test_expect_continue(head: bytes, expect: bool) -> None:
    reader = RequestReader()
    reader.feed(head + b"Content-Length: 2\r\n\r\n")
    request = reader.next_event()
    assert request.expect_continue is expect
    assert reader.next_event() is NEED_DATA  # the body has not been sent yet
    reader.feed(b"hi")
    assert reader.next_event() == Data(b"hi")


# --------------------------------------------------------------------------- EOF
def test_clean_eof_between_messages() -> None:
    reader = RequestReader()
    reader.feed(GET)
    reader.feed_eof()
    out = events(reader)
    assert out[-1] is ConnectionClosed
    assert reader.state is ReaderState.CLOSED
    assert reader.next_event() is ConnectionClosed


def test_eof_at_once_is_connection_closed() -> None:
    reader = RequestReader()
    reader.feed_eof()
    assert reader.next_event() is ConnectionClosed


@pytest.mark.parametrize("cut", [b"GET / HTTP/1.1\r\nHo", POST_CL[:-1], POST_CHUNKED[:-2]])
def test_eof_inside_a_message_is_incomplete(cut: bytes) -> None:
    reader = RequestReader()
    reader.feed(cut)
    reader.feed_eof()
    with pytest.raises(IncompleteMessage) as info:
        events(reader)
    assert info.value.status == 400


def test_feed_after_eof_is_a_bug() -> None:
    reader = RequestReader()
    reader.feed_eof()
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


# --------------------------------------------------------------------------- errors
def test_an_error_is_sticky() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET)
    with pytest.raises(ProtocolError) as first:
        reader.next_event()
    assert reader.state is ReaderState.ERROR
    with pytest.raises(ProtocolError) as second:
        reader.next_event()
    assert second.value is first.value


def test_body_size_limits() -> None:
    limits = Limits(max_body_size=10)
    reader = RequestReader(limits)
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
    assert messages(events(reader))[0][1] == b"0123456789"
    reader = RequestReader(limits)
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(ContentTooLarge):
        reader.next_event()
    reader = RequestReader(limits)
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n")
    with pytest.raises(ContentTooLarge) as info:
        events(reader)
    assert info.value.status == 413


# --------------------------------------------------------------------------- CONNECT
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


def test_connect_becomes_a_tunnel() -> None:
    reader = RequestReader(allow_connect=True)
    reader.feed(CONNECT + b"\x16\x03\x01client hello")
    request = reader.next_event()
    assert request.method == "CONNECT" and request.target == "example.com:443"
    assert request.framing.kind == "tunnel" and request.keep_alive is False
    assert isinstance(reader.next_event(), EndOfMessage)
    assert reader.state is ReaderState.TUNNEL
    with pytest.raises(RuntimeError):
        reader.next_event()  # the bytes are not HTTP any more
    reader.feed(b" more")
    assert reader.take_buffered() == b"\x16\x03\x01client hello more"
    assert reader.take_buffered() == b""


def test_connect_refused_unless_allowed() -> None:
    reader = RequestReader()
    reader.feed(CONNECT)
    with pytest.raises(NotImplementedByProxy) as info:
        reader.next_event()
    assert info.value.status == 501


def test_absolute_form_only_with_the_option() -> None:
    raw = b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n"
    reader = RequestReader(allow_absolute_form=True)
    reader.feed(raw)
    assert reader.next_event().target == "http://example.com/x?y"
    reader = RequestReader()
    reader.feed(raw)
    with pytest.raises(ProtocolError):
        reader.next_event()


# --------------------------------------------------------------------------- the table
def test_transition_table_matches_the_states() -> None:
    sources = {state for state, _ in TRANSITIONS}
    assert sources == {ReaderState.HEAD, ReaderState.BODY}
    assert set(TRANSITIONS.values()) == set(ReaderState)


def test_state_follows_the_table() -> None:
    reader = RequestReader()
    assert reader.state is ReaderState.HEAD
    reader.feed(POST_CL)
    reader.next_event()
    assert reader.state is ReaderState.BODY
    reader.next_event()
    assert reader.state is ReaderState.BODY
    reader.next_event()
    assert reader.state is ReaderState.HEAD
