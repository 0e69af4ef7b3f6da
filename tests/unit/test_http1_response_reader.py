"""ResponseReader: HEAD, 1xx, 204/304, CONNECT, close-delimited bodies, persistence."""

from __future__ import annotations

import pytest

from proxy.errors import IncompleteMessage, ProtocolError
from proxy.http1 import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ReaderState,
    Response,
    ResponseReader,
)


def run(reader: ResponseReader, limit: int = 1000) -> list:
    out = []
    for _ in range(limit):
        event = reader.next_event()
        out.append(event)
        if event is NEED_DATA or event is ConnectionClosed:
            return out
    raise AssertionError("reader did not stop")


def summary(out: list) -> list:
    """Responses as (status, framing kind, body) and sentinels as themselves."""
    result: list = []
    for event in out:
        if isinstance(event, Response):
            result.append([event.status, event.framing.kind, b""])
        elif isinstance(event, Data):
            result[-1][2] += event.data
        elif isinstance(event, EndOfMessage):
            result[-1] = tuple(result[-1])
        else:
            result.append(event)
    return result


def reader_for(method: str) -> ResponseReader:
    reader = ResponseReader()
    reader.expect_response_to(method)
    return reader


OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_content_length_response() -> None:
    reader = reader_for("GET")
    reader.feed(OK5)
    out = run(reader)
    assert summary(out) == [(200, "length", b"hello"), NEED_DATA]
    assert out[0].reason == "OK" and out[0].keep_alive is True


def two_responses(first_method: str, raw: bytes) -> list:
    """Read two responses fed at once, announcing each request before its response."""
    reader = reader_for(first_method)
    reader.feed(raw)
    first = [reader.next_event(), reader.next_event()]
    assert isinstance(first[1], EndOfMessage)
    reader.expect_response_to("GET")
    return summary(first + run(reader))


def test_head_response_has_no_body_and_the_next_response_follows() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + OK5
    assert two_responses("HEAD", raw) == [(200, "none", b""), (200, "length", b"hello"), NEED_DATA]


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status + OK5
    assert two_responses("GET", raw) == [(status, "none", b""), (200, "length", b"hello"), NEED_DATA]


def test_the_method_is_forgotten_after_the_final_response() -> None:
    reader = reader_for("GET")
    reader.feed(OK5 + OK5)
    assert summary([reader.next_event(), reader.next_event(), reader.next_event()]) == [(200, "length", b"hello")]
    with pytest.raises(ProtocolError, match="no request"):
        reader.next_event()  # the second response answers nothing


def test_100_continue_then_the_final_response() -> None:
    """Decision: a 1xx is its own message (Response, EndOfMessage); the reader then
    reads the final response to the same request."""
    reader = reader_for("POST")
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    out = run(reader)
    assert summary(out) == [(100, "none", b""), NEED_DATA]
    reader.feed(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK5)
    out = run(reader)
    assert summary(out) == [(103, "none", b""), (200, "length", b"hello"), NEED_DATA]
    assert out[0].headers.get("link") == "</s.css>"


def test_1xx_before_a_head_response_keeps_the_head_method() -> None:
    reader = reader_for("HEAD")
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert summary(run(reader)) == [(100, "none", b""), (200, "none", b""), NEED_DATA]


def test_announcing_the_request_again_after_a_1xx_is_harmless() -> None:
    reader = reader_for("HEAD")
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    interim = [reader.next_event(), reader.next_event()]
    reader.expect_response_to("HEAD")
    assert summary(interim + run(reader)) == [(100, "none", b""), (200, "none", b""), NEED_DATA]


def test_101_switching_protocols_is_a_tunnel() -> None:
    reader = reader_for("GET")
    reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    response = reader.next_event()
    assert response.framing.kind == "tunnel" and response.keep_alive is False
    assert isinstance(reader.next_event(), EndOfMessage)
    assert reader.state is ReaderState.TUNNEL
    assert reader.take_buffered() == b"\x81\x05hello"


def test_connect_2xx_is_a_tunnel_but_a_refusal_has_a_body() -> None:
    reader = reader_for("CONNECT")
    reader.feed(b"HTTP/1.1 200 Connection established\r\n\r\nTLS")
    assert summary([reader.next_event(), reader.next_event()]) == [(200, "tunnel", b"")]
    assert reader.take_buffered() == b"TLS"
    reader = reader_for("CONNECT")
    reader.feed(b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\nno")
    assert summary(run(reader)) == [(407, "length", b"no"), NEED_DATA]


def test_close_delimited_body_ends_at_eof() -> None:
    reader = reader_for("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nab")
    response = reader.next_event()
    assert response.framing.kind == "close" and response.keep_alive is False
    assert reader.next_event() == Data(b"ab")
    assert reader.next_event() is NEED_DATA
    reader.feed(b"c")
    assert reader.next_event() == Data(b"c")
    reader.feed_eof()
    assert isinstance(reader.next_event(), EndOfMessage)
    assert reader.next_event() is ConnectionClosed


def test_chunked_response_with_trailers() -> None:
    reader = reader_for("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nServer-Timing: x\r\n\r\n")
    out = run(reader)
    assert summary(out) == [(200, "chunked", b"hi"), NEED_DATA]
    assert out[2].trailers.get("server-timing") == "x"


@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n", True),
    ],
)
def test_response_keep_alive(head: bytes, keep_alive: bool) -> None:
    reader = reader_for("GET")
    reader.feed(head + b"\r\n" + OK5)
    response, end = reader.next_event(), reader.next_event()
    assert response.keep_alive is keep_alive and isinstance(end, EndOfMessage)
    reader.expect_response_to("GET")
    following = reader.next_event()
    if keep_alive:
        assert isinstance(following, Response)
    else:
        assert following is ConnectionClosed  # no response is read after "close"


def test_response_without_a_request_is_an_error() -> None:
    reader = ResponseReader()
    reader.feed(OK5)
    with pytest.raises(ProtocolError, match="no request"):
        reader.next_event()


def test_eof_before_a_response_is_connection_closed() -> None:
    reader = reader_for("GET")
    reader.feed_eof()
    assert reader.next_event() is ConnectionClosed


@pytest.mark.parametrize("cut", [b"HTTP/1.1 200 OK\r\nContent-", OK5[:-2],
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"])
def test_eof_inside_a_response_is_incomplete(cut: bytes) -> None:
    reader = reader_for("GET")
    reader.feed(cut)
    reader.feed_eof()
    with pytest.raises(IncompleteMessage):
        run(reader)


def test_close_delimited_body_streams_byte_by_byte() -> None:
    reader = reader_for("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert isinstance(reader.next_event(), Response)
    for byte in b"stream":
        reader.feed(bytes([byte]))
        assert reader.next_event() == Data(bytes([byte]))
        assert reader.next_event() is NEED_DATA
