"""Serialisation: heads and chunks, and that what we write our own parser reads back."""

from __future__ import annotations

import pytest

from proxy.http1 import (
    ChunkedDecoder,
    Data,
    EndOfMessage,
    Headers,
    Limits,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    encode_chunk,
    encode_last_chunk,
    serialize_request_head,
    serialize_response_head,
)


def test_request_head_bytes() -> None:
    request = Request("GET", "/x?y", "HTTP/1.1", Headers([("Host", "a"), ("X-Case", "V a l"), ("x-dup", "1"), ("X-Dup", "2")]))
    assert serialize_request_head(request) == (
        b"GET /x?y HTTP/1.1\r\nHost: a\r\nX-Case: V a l\r\nx-dup: 1\r\nX-Dup: 2\r\n\r\n"
    )


def test_response_head_bytes_and_empty_reason() -> None:
    response = Response("HTTP/1.1", 200, "OK", Headers([("Content-Length", "0")]))
    assert serialize_response_head(response) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    bare = Response("HTTP/1.1", 204, "", Headers())
    assert serialize_response_head(bare) == b"HTTP/1.1 204 \r\n\r\n"  # the SP is required


def test_latin1_values_round_trip_byte_for_byte() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\n\r\n"
    reader = RequestReader()
    reader.feed(raw)
    assert serialize_request_head(reader.next_event()) == raw


@pytest.mark.parametrize(
    "request_",
    [
        Request("GET", "/", "HTTP/1.1", Headers([("X-A", "1\r\nInjected: yes")])),
        Request("GET", "/", "HTTP/1.1", Headers([("X-A", "1\nInjected: yes")])),
        Request("GET", "/", "HTTP/1.1", Headers([("X-A\r\nInjected", "yes")])),
        Request("GET", "/ HTTP/1.1\r\nInjected: yes\r\nX:", "HTTP/1.1", Headers()),
        Request("GET", "/", "HTTP/1.1", Headers([("X-A", "bare\rcr")])),
    ],
)
def test_cr_or_lf_inside_a_head_is_refused(request_: Request) -> None:
    """Response splitting / header injection (RFC 9112 §11.1)."""
    with pytest.raises(ValueError):
        serialize_request_head(request_)


def test_encode_chunk() -> None:
    assert encode_chunk(b"") == b""  # never the last-chunk by accident
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 4096)[:5] == b"1000\r"
    assert encode_chunk(bytearray(b"ab")) == b"2\r\nab\r\n"


def test_encode_last_chunk() -> None:
    assert encode_last_chunk() == b"0\r\n\r\n"
    assert encode_last_chunk(Headers()) == b"0\r\n\r\n"
    assert encode_last_chunk(Headers([("X-Sum", "1"), ("Y", "2")])) == b"0\r\nX-Sum: 1\r\nY: 2\r\n\r\n"
    with pytest.raises(ValueError):
        encode_last_chunk(Headers([("X", "a\r\n\r\nsmuggled")]))


def test_encoded_chunks_decode_back() -> None:
    pieces = [b"a", b"", b"bc" * 100, b"\r\n0\r\n\r\n"]
    trailers = Headers([("Checksum", "x")])
    wire = b"".join(encode_chunk(p) for p in pieces) + encode_last_chunk(trailers)
    decoder = ChunkedDecoder(Limits())
    buffer = bytearray(wire)
    body = b""
    while True:
        event = decoder.next_event(buffer, False)
        if isinstance(event, EndOfMessage):
            break
        assert isinstance(event, Data)
        body += event.data
    assert body == b"".join(pieces) and event.trailers == trailers and not buffer


def test_response_round_trip() -> None:
    raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX: y\r\n\r\n"
    reader = ResponseReader()
    reader.expect_response_to("GET")
    reader.feed(raw + b"abc")
    assert serialize_response_head(reader.next_event()) == raw
