"""Body decoders fed directly: Content-Length, chunked, close-delimited, none."""

from __future__ import annotations

import pytest

from proxy.errors import ContentTooLarge, IncompleteMessage, ProtocolError
from proxy.http1 import (
    NEED_DATA,
    ChunkedDecoder,
    CloseDelimitedDecoder,
    ContentLengthDecoder,
    Data,
    EndOfMessage,
    Headers,
    Limits,
    NoBodyDecoder,
)
from proxy.http1.body import CHUNKED_TRANSITIONS, ChunkedState


def decode(decoder, pieces: list[bytes], eof: bool = False) -> tuple[bytes, EndOfMessage | None, bytearray]:
    """Feed pieces one at a time; return the body, the EndOfMessage (if any), the leftover buffer."""
    buffer = bytearray()
    body = bytearray()
    for index, piece in enumerate(pieces):
        buffer += piece
        last = index == len(pieces) - 1
        while True:
            available = len(buffer)
            event = decoder.next_event(buffer, eof and last)
            if event is NEED_DATA:
                break
            if isinstance(event, EndOfMessage):
                return bytes(body), event, buffer
            assert isinstance(event, Data) and 0 < len(event.data) <= available  # never more than was fed
            body += event.data
    return bytes(body), None, buffer


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


# --------------------------------------------------------------------------- Content-Length
def test_content_length_stops_at_the_length_and_leaves_the_rest() -> None:
    body, end, rest = decode(ContentLengthDecoder(5), [b"hel", b"loGET /"])
    assert (body, rest) == (b"hello", bytearray(b"GET /"))
    assert end is not None and len(end.trailers) == 0


def test_content_length_emits_data_as_it_arrives() -> None:
    decoder = ContentLengthDecoder(10)
    buffer = bytearray(b"abc")
    assert decoder.next_event(buffer, False) == Data(b"abc")
    assert decoder.next_event(buffer, False) is NEED_DATA
    buffer += b"defghij"
    assert decoder.next_event(buffer, False) == Data(b"defghij")
    assert isinstance(decoder.next_event(buffer, False), EndOfMessage)


def test_content_length_one_byte_at_a_time() -> None:
    body, end, _ = decode(ContentLengthDecoder(26), bytewise(b"abcdefghijklmnopqrstuvwxyz"))
    assert body == b"abcdefghijklmnopqrstuvwxyz" and end is not None


def test_content_length_zero_ends_at_once() -> None:
    assert isinstance(ContentLengthDecoder(0).next_event(bytearray(b"next"), False), EndOfMessage)


def test_content_length_cut_short_is_incomplete() -> None:
    with pytest.raises(IncompleteMessage):
        decode(ContentLengthDecoder(10), [b"hello"], eof=True)


# --------------------------------------------------------------------------- chunked
CHUNKED_BODY = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n"


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_chunked_body_and_trailers(split: str) -> None:
    pieces = [CHUNKED_BODY + b"NEXT"] if split == "whole" else bytewise(CHUNKED_BODY + b"NEXT")
    body, end, rest = decode(ChunkedDecoder(Limits()), pieces)
    assert body == b"hello 0123456789"
    assert end is not None and end.trailers == Headers([("Checksum", "abc"), ("X-T", "1")])
    assert rest == bytearray(b"NEXT")[: len(rest)]  # bytewise: the rest is still to be fed


def test_chunked_without_trailers_leaves_the_next_message() -> None:
    body, end, rest = decode(ChunkedDecoder(Limits()), [b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1"])
    assert (body, rest) == (b"abc", bytearray(b"GET / HTTP/1.1"))
    assert end is not None and len(end.trailers) == 0


def test_chunk_data_is_streamed_not_buffered() -> None:
    decoder = ChunkedDecoder(Limits())
    buffer = bytearray(b"10\r\n0123")
    assert decoder.next_event(buffer, False) == Data(b"0123")
    assert decoder.next_event(buffer, False) is NEED_DATA
    buffer += b"456789abcdef\r\n"
    assert decoder.next_event(buffer, False) == Data(b"456789abcdef")


def test_each_chunk_is_its_own_data_event() -> None:
    decoder = ChunkedDecoder(Limits())
    buffer = bytearray(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    assert decoder.next_event(buffer, False) == Data(b"ab")
    assert decoder.next_event(buffer, False) == Data(b"cd")
    assert isinstance(decoder.next_event(buffer, False), EndOfMessage)


def test_running_total_over_max_body_size_is_413_at_the_size_line() -> None:
    decoder = ChunkedDecoder(Limits(), max_body_size=10)
    buffer = bytearray(b"6\r\nabcdef\r\n5\r\n")  # 11 declared: refused before the data
    assert decoder.next_event(buffer, False) == Data(b"abcdef")
    with pytest.raises(ContentTooLarge):
        decoder.next_event(buffer, False)


def test_running_total_at_max_body_size_is_fine() -> None:
    body, end, _ = decode(ChunkedDecoder(Limits(), max_body_size=10), [b"6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n"])
    assert body == b"abcdefghij" and end is not None


def test_chunk_extension_limit_boundary() -> None:
    limits = Limits(max_chunk_ext=10)
    ok = b"5;abcd=xyz"  # extension ";abcd=xyz" is 9 bytes
    body, _, _ = decode(ChunkedDecoder(limits), [ok + b"\r\nhello\r\n0\r\n\r\n"])
    assert body == b"hello"
    with pytest.raises(ProtocolError, match="too long"):
        decode(ChunkedDecoder(limits), [b"5;abcd=xyzzy\r\nhello\r\n0\r\n\r\n"])


def test_unterminated_size_line_is_refused_once_over_the_bound() -> None:
    decoder = ChunkedDecoder(Limits(max_chunk_ext=10))
    buffer = bytearray(b"5;a=" + b"b" * 22)  # 26 bytes: 16 digits + 10 of extensions
    assert decoder.next_event(buffer, False) is NEED_DATA
    buffer += b"bb"
    with pytest.raises(ProtocolError, match="too long"):
        decoder.next_event(buffer, False)


def test_bare_lf_in_size_line_is_refused_before_a_crlf_arrives() -> None:
    with pytest.raises(ProtocolError, match="bare"):
        ChunkedDecoder(Limits()).next_event(bytearray(b"5\nhello"), False)


def test_chunked_cut_short_is_incomplete_in_every_state() -> None:
    for cut in [b"", b"5", b"5\r\nhel", b"5\r\nhello", b"5\r\nhello\r", b"5\r\nhello\r\n0\r\n", b"5\r\nhello\r\n0\r\nX: 1\r\n"]:
        with pytest.raises(IncompleteMessage):
            decode(ChunkedDecoder(Limits()), [cut], eof=True)


def test_trailer_limits_apply() -> None:
    limits = Limits(max_fields=1)
    with pytest.raises(ProtocolError):
        decode(ChunkedDecoder(limits), [b"0\r\nA: 1\r\nB: 2\r\n\r\n"])


def test_using_a_finished_decoder_is_a_bug() -> None:
    decoder = ChunkedDecoder(Limits())
    decode(decoder, [b"0\r\n\r\n"])
    with pytest.raises(RuntimeError):
        decoder.next_event(bytearray(), False)


def test_chunked_state_table_is_a_cycle_plus_an_exit() -> None:
    sources = {state for state, _ in CHUNKED_TRANSITIONS}
    targets = set(CHUNKED_TRANSITIONS.values())
    assert sources == set(ChunkedState) - {ChunkedState.DONE}
    assert targets == set(ChunkedState)  # every state is reachable


# --------------------------------------------------------------------------- others
def test_close_delimited_reads_until_eof() -> None:
    decoder = CloseDelimitedDecoder()
    buffer = bytearray(b"abc")
    assert decoder.next_event(buffer, False) == Data(b"abc")
    assert decoder.next_event(buffer, False) is NEED_DATA
    buffer += b"def"
    assert decoder.next_event(buffer, True) == Data(b"def")
    assert isinstance(decoder.next_event(buffer, True), EndOfMessage)


def test_no_body_ends_at_once_and_leaves_the_buffer() -> None:
    buffer = bytearray(b"GET / HTTP/1.1\r\n")
    assert isinstance(NoBodyDecoder().next_event(buffer, False), EndOfMessage)
    assert buffer == bytearray(b"GET / HTTP/1.1\r\n")
