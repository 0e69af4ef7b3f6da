"""course.capture.h2frames: HTTP/2 frames listed from bytes, header blocks decoded, records named.

The byte streams come from the `h2` library itself (a real client-side H2Connection's
``data_to_send``), or are written out by hand from RFC 9113 §4.1's frame layout where a
case (CONTINUATION, padding, a truncated frame) needs exact bytes.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import hpack
import pytest

from course.capture import h2frames
from course.capture.client import BODY, PATH, SECRET_HEADER, SERVER_NAME
from course.capture.h2client import request_headers
from course.capture.h2view import side_by_side


def client_bytes() -> tuple[bytes, list[int]]:
    """What the lab client writes (three writes, as h2client.exchange does), and where each write starts."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    writes = []
    connection.initiate_connection()
    writes.append(connection.data_to_send())
    connection.send_headers(1, request_headers(SERVER_NAME, PATH, SECRET_HEADER, BODY))
    writes.append(connection.data_to_send())
    connection.send_data(1, BODY, end_stream=True)
    writes.append(connection.data_to_send())
    starts = [sum(map(len, writes[:n])) for n in range(len(writes))]
    return b"".join(writes), starts


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """RFC 9113 §4.1: Length (24), Type (8), Flags (8), R + Stream Identifier (31), payload."""
    return struct.pack("!I", len(payload))[1:] + bytes([kind, flags]) + struct.pack("!I", stream) + payload


def test_the_client_stream_is_preface_settings_headers_data_with_the_request_decoded():
    data, _ = client_bytes()
    assert h2frames.is_http2(data) and data[:24] == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    frames = h2frames.split_frames(data)
    assert [(f.type, f.stream_id) for f in frames] == [("preface", 0), ("SETTINGS", 0), ("HEADERS", 1), ("DATA", 1)]
    headers = dict(frames[2].headers)
    assert headers[":method"] == "POST" and headers[":path"] == PATH
    assert headers[":authority"] == SERVER_NAME and headers["x-lab-secret"] == SECRET_HEADER[1]
    assert frames[2].flags == ("END_HEADERS",) and frames[3].flags == ("END_STREAM",)
    assert frames[3].payload == BODY and frames[3].length == len(BODY)
    assert sum(f.length + (9 if f.type != "preface" else 0) for f in frames) == len(data)   # nothing skipped
    assert frames[2].label == f"HEADERS[1]: POST {PATH}"
    assert frames[2].as_dict() == {"type": "HEADERS", "stream_id": 1, "flags": ["END_HEADERS"],
                                   "length": frames[2].length}


def test_hpack_hides_the_header_markers_but_not_the_body():
    """The lesson: grep finds the body in the decrypted stream, not the path or the secret header."""
    data, _ = client_bytes()
    assert BODY in data
    for marker in (PATH, SECRET_HEADER[1], SERVER_NAME):
        assert marker.encode() not in data
    headers = h2frames.split_frames(data)[2]
    assert all(h2frames.huffman_coded(value, headers.block)
               for value in (PATH, SECRET_HEADER[1], SERVER_NAME))
    assert len(h2frames.huffman_code(PATH)) < len(PATH)
    lines = dict(h2frames.field_lines(data))
    assert lines[f":path: {PATH}".encode()] is True
    assert lines[b":method: POST"] is False                       # a static-table index, not a Huffman literal


def test_a_header_block_split_across_continuation_and_padding_is_decoded_once():
    block = hpack.Encoder().encode([(":method", "GET"), (":path", "/split")], huffman=False)
    padded = bytes([3]) + block[:4] + b"\0\0\0"                  # PADDED: pad length, fragment, padding (§6.2)
    data = frame(0x1, 0x8, 3, padded) + frame(0x9, 0x4, 3, block[4:])
    frames = h2frames.split_frames(data)
    assert [(f.type, f.flags) for f in frames] == [("HEADERS", ("PADDED",)), ("CONTINUATION", ("END_HEADERS",))]
    assert frames[0].headers == ((":method", "GET"), (":path", "/split")) and frames[1].headers == ()
    assert not h2frames.huffman_coded("/split", frames[0].block)   # sent as plain bytes this time


def test_a_truncated_last_frame_is_left_out_and_payloads_are_described():
    settings = frame(0x4, 0, 0, struct.pack("!HIHI", 3, 100, 4, 65535))
    goaway = frame(0x7, 0, 0, struct.pack("!II", 5, 0))
    window = frame(0x8, 0, 0, struct.pack("!I", 1000))
    frames = h2frames.split_frames(settings + window + goaway + frame(0x0, 1, 1, b"abc")[:-1])
    assert [f.type for f in frames] == ["SETTINGS", "WINDOW_UPDATE", "GOAWAY"]
    assert "MAX_CONCURRENT_STREAMS=100, INITIAL_WINDOW_SIZE=65535" in frames[0].describe()
    assert "increment 1000" in frames[1].describe()
    assert "last stream 5, NO_ERROR" in frames[2].describe()
    assert h2frames.split_frames(frame(0x4, 1, 0, b""))[0].label == "SETTINGS[0] ACK"


def test_records_are_named_by_the_frames_that_start_in_them():
    data, starts = client_bytes()
    frames = h2frames.split_frames(data)
    ends = starts[1:] + [len(data)]
    details = [h2frames.record_detail(frames, s, e) for s, e in zip(starts, ends)]
    assert details == ["Magic (preface), SETTINGS[0]", f"HEADERS[1]: POST {PATH}", "DATA[1]"]
    headers_at = frames[2].offset
    assert h2frames.record_detail(frames, headers_at + 1, headers_at + 5) == f"HEADERS[1]: POST {PATH} continued"


def test_side_by_side_pads_the_shorter_column():
    assert side_by_side(["a", "b"], ["x"], width=3) == ["  a   | x", "  b   |"]


@pytest.mark.parametrize("data", [b"", b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n"])
def test_streams_without_the_whole_preface_are_not_http2(data):
    assert not h2frames.is_http2(data)
    assert all(frame.type != "preface" for frame in h2frames.split_frames(data))
