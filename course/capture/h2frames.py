"""HTTP/2 frames in a decrypted byte stream: listed, named and their header blocks decoded.

Theory of operation
-------------------
Once TLS is opened, an HTTP/2 connection is a sequence of *frames* in each direction
(RFC 9113 §4.1), each a 9-octet header and a payload::

    +-----------------------------------------------+
    |                 Length (24)                   |
    +---------------+---------------+---------------+
    |   Type (8)    |   Flags (8)   |
    +-+-------------+---------------+-------------------------------+
    |R|                 Stream Identifier (31)                      |
    +=+=============================================================+
    |                   Frame Payload (Length octets)             ...

The client's stream starts with the 24-octet connection preface
``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (RFC 9113 §3.4), which no HTTP/1.1 server would
take for a request, followed by its SETTINGS frame; a stream that starts with it is
HTTP/2 whatever the ALPN said (``is_http2``).

``split_frames(data)`` walks one direction's bytes and returns a ``Frame`` per frame
(and one for the preface), with its offset in the stream: the ladder diagram
(``dissect.py``) names each decrypted record by the frames that start in it, the lab
client lists what it sent and received (``client.json``), the summary prints them.

**Header blocks are HPACK-compressed** (RFC 7541): a HEADERS frame (with any
CONTINUATION frames, RFC 9113 §6.10) carries a *header block* in which a field is an
index into a static or dynamic table, or a literal whose string may be Huffman-coded
(RFC 7541 §5.2: the H bit).  So a header value sent by the client need not appear as
plain bytes in the decrypted stream at all: ``grep header-marker-7`` finds nothing.
``split_frames`` decodes each block with one ``hpack.Decoder`` per direction (the
dynamic table is per direction and per connection, RFC 7541 §2.2) and ``huffman_coded``
says whether a value is on the wire as its Huffman code, computed with the code table of
RFC 7541 Appendix B.  Sans-IO: bytes in, values out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"      # RFC 9113 §3.4
FRAME_HEADER = 9                                   # RFC 9113 §4.1
# RFC 9113 §6 (and the IANA "HTTP/2 Frame Type" registry, §11.2).
FRAME_TYPES = {0x0: "DATA", 0x1: "HEADERS", 0x2: "PRIORITY", 0x3: "RST_STREAM", 0x4: "SETTINGS",
               0x5: "PUSH_PROMISE", 0x6: "PING", 0x7: "GOAWAY", 0x8: "WINDOW_UPDATE", 0x9: "CONTINUATION"}
# The flags each type defines (RFC 9113 §6.1-§6.10); other bits are unused and ignored (§4.1).
FLAGS = {"DATA": {0x1: "END_STREAM", 0x8: "PADDED"},
         "HEADERS": {0x1: "END_STREAM", 0x4: "END_HEADERS", 0x8: "PADDED", 0x20: "PRIORITY"},
         "SETTINGS": {0x1: "ACK"}, "PING": {0x1: "ACK"},
         "PUSH_PROMISE": {0x4: "END_HEADERS", 0x8: "PADDED"}, "CONTINUATION": {0x4: "END_HEADERS"}}
SETTINGS = {0x1: "HEADER_TABLE_SIZE", 0x2: "ENABLE_PUSH", 0x3: "MAX_CONCURRENT_STREAMS",   # RFC 9113 §6.5.2
            0x4: "INITIAL_WINDOW_SIZE", 0x5: "MAX_FRAME_SIZE", 0x6: "MAX_HEADER_LIST_SIZE",
            0x8: "ENABLE_CONNECT_PROTOCOL"}                                                 # RFC 8441 §3
ERRORS = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",  # RFC 9113 §7
          0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
          0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR", 0xb: "ENHANCE_YOUR_CALM",
          0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED"}


@dataclass(frozen=True)
class Frame:
    """One frame (or the preface) of one direction of an HTTP/2 connection."""

    offset: int                                    # where it starts in the direction's stream
    type: str                                      # "DATA", "HEADERS", ..., or "preface"
    stream_id: int = 0
    flags: tuple[str, ...] = ()
    length: int = 0                                # the payload's length (the header's Length field)
    payload: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()      # the decoded header block (HEADERS, PUSH_PROMISE)
    block: bytes = b""                             # ... as it was on the wire (HPACK)

    @property
    def label(self) -> str:
        """As Wireshark's Info column names it: ``HEADERS[1]: POST /path``, ``SETTINGS[0]``."""
        if self.type == "preface":
            return "Magic (preface)"
        text = f"{self.type}[{self.stream_id}]"
        if "ACK" in self.flags:
            text += " ACK"
        fields = dict(self.headers)
        if ":method" in fields:
            text += f": {fields[':method']} {fields.get(':path', '')}"
        elif ":status" in fields:
            text += f": {fields[':status']}"
        return text

    def describe(self) -> str:
        """The label, the flags and what the payload says (settings, window, error code, size)."""
        if self.type == "preface":
            return f"Magic (preface) {PREFACE[:14].decode()}... ({len(PREFACE)} bytes, RFC 9113 §3.4)"
        parts = [self.label.split(":")[0], f"length {self.length}"]
        if self.flags:
            parts.append(" ".join(self.flags))
        if self.type == "SETTINGS" and self.payload:
            parts.append(", ".join(f"{name}={value}" for name, value in settings(self.payload)))
        elif self.type == "WINDOW_UPDATE" and len(self.payload) >= 4:
            parts.append(f"increment {struct.unpack('!I', self.payload[:4])[0] & 0x7FFFFFFF}")
        elif self.type == "GOAWAY" and len(self.payload) >= 8:
            last, code = struct.unpack("!II", self.payload[:8])
            parts.append(f"last stream {last & 0x7FFFFFFF}, {ERRORS.get(code, code)}")
        elif self.type == "RST_STREAM" and len(self.payload) >= 4:
            code = struct.unpack("!I", self.payload[:4])[0]
            parts.append(str(ERRORS.get(code, code)))
        return ", ".join(parts)

    def as_dict(self) -> dict:
        """What ``client.json`` records of a frame."""
        return {"type": self.type, "stream_id": self.stream_id, "flags": list(self.flags), "length": self.length}


def is_http2(data: bytes) -> bool:
    """Does this (client) stream open with the HTTP/2 connection preface (RFC 9113 §3.4)?"""
    return data.startswith(PREFACE)


def settings(payload: bytes) -> list[tuple[str, int]]:
    """A SETTINGS payload: 6-octet (identifier, value) pairs (RFC 9113 §6.5.1)."""
    return [(SETTINGS.get(ident, f"0x{ident:x}"), value)
            for ident, value in struct.iter_unpack("!HI", payload[:len(payload) - len(payload) % 6])]


def frame_header(data: bytes, offset: int = 0) -> tuple[int, str, int, int]:
    """(length, type name, flags byte, stream id) of the frame header at ``offset``."""
    high, low, kind, flags, stream = struct.unpack_from("!BHBBI", data, offset)
    return (high << 16) | low, FRAME_TYPES.get(kind, f"type 0x{kind:x}"), flags, stream & 0x7FFFFFFF


def _flag_names(kind: str, flags: int) -> tuple[str, ...]:
    return tuple(name for bit, name in FLAGS.get(kind, {}).items() if flags & bit)


def _header_block_fragment(kind: str, flags: tuple[str, ...], payload: bytes) -> bytes:
    """The HPACK bytes of a HEADERS / PUSH_PROMISE / CONTINUATION payload (RFC 9113 §6.2, §6.6)."""
    start, pad = 0, 0
    if "PADDED" in flags and payload:
        start, pad = 1, payload[0]
    if kind == "HEADERS" and "PRIORITY" in flags:
        start += 5                     # exclusive bit + stream dependency (4) + weight (1)
    elif kind == "PUSH_PROMISE":
        start += 4                     # the promised stream id
    return payload[start:len(payload) - pad]


def split_frames(data: bytes, decoder=None) -> list[Frame]:
    """Every complete frame in ``data`` (one direction, from its start), in order; a
    truncated last frame is left out.  Header blocks are decoded with ``decoder`` (an
    ``hpack.Decoder``; a fresh one by default), which keeps the direction's dynamic table."""
    import hpack

    decoder = decoder if decoder is not None else hpack.Decoder()
    frames: list[Frame] = []
    offset = 0
    if is_http2(data):
        frames.append(Frame(0, "preface", length=len(PREFACE), payload=PREFACE))
        offset = len(PREFACE)
    block, first = b"", None                       # a header block being collected across CONTINUATIONs
    while offset + FRAME_HEADER <= len(data):
        length, kind, flag_bits, stream = frame_header(data, offset)
        end = offset + FRAME_HEADER + length
        if end > len(data):
            break
        flags = _flag_names(kind, flag_bits)
        frame = Frame(offset, kind, stream, flags, length, data[offset + FRAME_HEADER:end])
        frames.append(frame)
        if kind in ("HEADERS", "PUSH_PROMISE", "CONTINUATION"):
            if kind != "CONTINUATION":
                block, first = b"", len(frames) - 1
            block += _header_block_fragment(kind, flags, frame.payload)
            if "END_HEADERS" in flags and first is not None:
                decoded = tuple((str(name), str(value)) for name, value in _decode(decoder, block))
                frames[first] = replace(frames[first], headers=decoded, block=block)
                block, first = b"", None
        offset = end
    return frames


def _decode(decoder, block: bytes) -> list[tuple[str, str]]:
    import hpack

    try:
        return [(name if isinstance(name, str) else name.decode("latin-1"),
                 value if isinstance(value, str) else value.decode("latin-1"))
                for name, value in decoder.decode(block, raw=False)]
    except hpack.HPACKError as error:
        return [("(undecodable header block)", str(error))]


def huffman_code(value: str) -> bytes:
    """``value`` Huffman-coded with HPACK's code (RFC 7541 §5.2, Appendix B), padded with 1 bits."""
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    return HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(value.encode("latin-1"))


def huffman_coded(value: str, block: bytes) -> bool:
    """Is ``value`` in the HPACK ``block`` as its Huffman code rather than as plain bytes?"""
    return value.encode("latin-1") not in block and huffman_code(value) in block


def frames_starting_in(frames: list[Frame], start: int, end: int) -> list[Frame]:
    """The frames whose first byte is in ``[start, end)`` of their stream."""
    return [frame for frame in frames if start <= frame.offset < end]


def record_detail(frames: list[Frame], start: int, end: int) -> str:
    """A decrypted record's label from the frames it carries: the frames starting in it,
    or, for a record that only continues a frame, that frame's name and "continued"."""
    starting = frames_starting_in(frames, start, end)
    if starting:
        return ", ".join(frame.label for frame in starting)
    before = [frame for frame in frames if frame.offset < start]
    return f"{before[-1].label} continued" if before else ""


def field_lines(data: bytes) -> list[tuple[bytes, bool]]:
    """Every decoded header field of one direction as a field line (``name: value``), and
    whether its value was Huffman-coded in the block: what a holder of the keys reads once
    HPACK is undone (``whosees``)."""
    return [(f"{name}: {value}".encode("latin-1"), huffman_coded(value, frame.block))
            for frame in split_frames(data) for name, value in frame.headers]
