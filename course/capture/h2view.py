"""HTTP/2 on the client leg, HTTP/1.1 on the backend leg: the two side by side, from a capture.

Theory of operation
-------------------
With ``tlsproxy capture --http2`` the client and the proxy speak HTTP/2 (ALPN ``h2``,
RFC 9113 §3.2) and the proxy forwards each stream to the origin as an HTTP/1.1 request
(``proxy/h2/downgrade.py``).  This module shows that translation from the captured bytes:

* ``connection_frames`` lists the frames of the client leg's HTTP/2 connection, from the
  bytes our key schedule decrypted (``h2frames.split_frames``);
* ``tshark_frames`` asks Wireshark's HTTP/2 dissector for the same list, from the pcap
  and the key log alone (``-o tls.keylog_file:``, the port decoded as TLS; once the
  records are open, the ALPN ``h2`` in the handshake makes tshark hand them to its HTTP/2
  dissector: seen with tshark 4.0.17), with the header fields it decoded; ``same_frames``
  compares the two lists frame by frame;
* ``format_http2`` writes the summary's section: the client's frames on the left, the
  request the origin got on the right, then what the proxy answered in frames, and what
  HPACK did to the marked header values (``h2frames.huffman_coded``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from course.capture.h2frames import (
    FRAME_TYPES,
    PREFACE,
    Frame,
    huffman_code,
    huffman_coded,
    is_http2,
    settings,
    split_frames,
)

COLUMN = 62                    # characters in the left column of the side-by-side view
AGGREGATOR = "\x1f"            # joins a field's occurrences in one packet (no header value holds it)


@dataclass(frozen=True)
class TsharkFrame:
    """One HTTP/2 frame as tshark decoded it."""

    packet: int                            # tshark's frame.number (a captured packet)
    sender: str                            # "client" or "server"
    type: str                              # "preface", "SETTINGS", "HEADERS", ...
    stream_id: int = 0
    flags: int = 0
    length: int = 0
    headers: tuple[tuple[str, str], ...] = ()   # the packet's decoded header fields, on its first HEADERS


def is_http2_bundle(bundle, decryptions: dict) -> bool:
    """Does the client leg carry an HTTP/2 connection (its client data opens with the preface)?"""
    check = decryptions.get("client")
    return check is not None and any(is_http2(data) for result in check.ran.values() for data in result.client_data)


def connection_frames(decryptions: dict) -> tuple[list[Frame], list[Frame]]:
    """(client's frames, server's frames) of the client leg's first HTTP/2 connection, from
    what our key schedule (else any method that ran) decrypted."""
    check = decryptions["client"]
    for name in ("keyschedule", *check.ran):
        result = check.ran.get(name)
        if result is None:
            continue
        for client, server in zip(result.client_data, result.server_data):
            if is_http2(client):
                return split_frames(client), split_frames(server)
    return [], []


def tshark_frames(pcap: str | Path, key_log: str | Path, server_port: int) -> list[TsharkFrame]:
    """Every HTTP/2 frame tshark finds in ``pcap``, decrypted with ``key_log``, in order."""
    from course.capture.decrypt import _tshark

    fields = ("frame.number", "tcp.srcport", "http2.magic", "http2.type", "http2.streamid", "http2.flags",
              "http2.length", "http2.header.name", "http2.header.value")
    output = _tshark(["-r", str(pcap), "-d", f"tcp.port=={server_port},tls", "-o", f"tls.keylog_file:{key_log}",
                      "-Y", "http2", "-T", "fields", "-E", "separator=/t", "-E", f"aggregator={AGGREGATOR}",
                      *[arg for field in fields for arg in ("-e", field)]])
    frames: list[TsharkFrame] = []
    for line in output.splitlines():
        packet, port, magic, types, streams, flags, lengths, names, values = (line.split("\t") + [""] * 9)[:9]
        if not packet.isdigit():
            continue
        sender = "server" if port == str(server_port) else "client"
        headers = tuple(zip(_split(names), _split(values)))
        if magic:
            frames.append(TsharkFrame(int(packet), sender, "preface", length=len(PREFACE)))
        for index, (kind, stream, flag, length) in enumerate(zip(_split(types), _split(streams), _split(flags),
                                                                  _split(lengths))):
            name = FRAME_TYPES.get(int(kind), f"type {kind}")
            first_headers = name == "HEADERS" and not any(f.packet == int(packet) and f.headers for f in frames)
            frames.append(TsharkFrame(int(packet), sender, name, int(stream), int(flag, 16), int(length),
                                      headers if first_headers else ()))
    return frames


def _split(field: str) -> list[str]:
    return field.split(AGGREGATOR) if field else []


def same_frames(ours: tuple[list[Frame], list[Frame]], theirs: list[TsharkFrame]) -> bool:
    """Do our frames and tshark's agree, direction by direction (type, stream id, length)?"""
    def key(frame) -> tuple:
        return frame.type, frame.stream_id, frame.length

    return all([key(f) for f in frames] == [key(f) for f in theirs if f.sender == sender]
               for sender, frames in zip(("client", "server"), ours))


def _frame_lines(frame: Frame) -> list[str]:
    """A frame on one line, then its settings, header fields or data, indented, one per line."""
    if frame.type == "SETTINGS" and frame.payload:
        return [frame.describe().partition(", length")[0] + f", length {frame.length}",
                *[f"    {name}={value}" for name, value in settings(frame.payload)]]
    lines = [frame.describe()]
    lines += [f"    {name}: {value}" for name, value in frame.headers]
    if frame.type == "DATA" and frame.payload:
        text = " ".join(frame.payload.decode("latin-1").split())
        lines.append("    " + (text if len(text) <= COLUMN - 4 else text[:COLUMN - 8] + " ..."))
    return lines


def side_by_side(left: list[str], right: list[str], width: int = COLUMN) -> list[str]:
    """Two columns, ``left`` cut to ``width`` characters."""
    rows = max(len(left), len(right))
    left, right = left + [""] * (rows - len(left)), right + [""] * (rows - len(right))
    return [f"  {a[:width]:<{width}} | {b}".rstrip() for a, b in zip(left, right)]


def _hpack_notes(frames: list[Frame], markers: dict) -> list[str]:
    """What HPACK did to the marked values, computed from the client's header blocks."""
    notes = []
    sent = b"".join(frame.payload for frame in frames)
    wanted = {markers["path"]: "the path", markers["header"].partition(": ")[2]: "the secret header's value",
              markers["host"]: "the Host"}
    for frame in frames:
        for name, value in frame.headers:
            if value in wanted and value.encode("latin-1") not in sent:
                how = (f"as its {len(huffman_code(value))}-byte Huffman code (RFC 7541 §5.2, Appendix B)"
                       if huffman_coded(value, frame.block) else "as an index into HPACK's tables (RFC 7541 §2.3)")
                notes.append(f"  {name}: {value} ({wanted[value]}, {len(value)} bytes) is nowhere in the "
                             f"client's decrypted bytes: HPACK sent the value {how}")
    return notes


def format_http2(bundle, decryptions: dict) -> str:
    """The summary's HTTP/2 section (see the module docstring)."""
    from course.capture.decrypt import tshark_path

    client, server = connection_frames(decryptions)
    alpn = next((c.get("alpn") for c in bundle.client_report.get("connections", []) if c.get("alpn")), None)
    lines = ["== HTTP/2 on the client leg, HTTP/1.1 on the backend leg",
             f"  ALPN chosen in the handshake (the lab client's report): {alpn}"]
    leg = bundle.legs["client"]
    if tshark_path():
        try:
            theirs = tshark_frames(leg.pcap, bundle.keys_log, leg.server_port)
            verdict = "the same frames" if same_frames((client, server), theirs) else "DIFFERENT frames"
            lines.append(f"  tshark's HTTP/2 dissector, from the pcap and the key log, lists {verdict} "
                         f"({len(theirs)}) as our key schedule's decryption")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            lines.append(f"  tshark could not list the frames: {error}")
    backend = decryptions.get("backend")
    request = backend.requests[0] if backend is not None and backend.requests else b""
    # Three blocks side by side: what comes before the request, the HEADERS frame beside the
    # origin's request head, the DATA frame (and what follows it) beside the body.
    blocks: dict[str, list[str]] = {"before": [], "HEADERS": [], "DATA": []}
    current = "before"
    for frame in client:
        if frame.type in ("HEADERS", "DATA") and not blocks[frame.type]:
            current = frame.type
        blocks[current] += _frame_lines(frame)
    head, _, body = request.partition(b"\r\n\r\n")
    right = {"before": [], "HEADERS": head.decode("latin-1").split("\r\n") if head else [],
             "DATA": [body.decode("latin-1")] if body else []}
    if not blocks["HEADERS"]:
        right["before"], right["HEADERS"] = right["HEADERS"], []
    rows = [row for name, block in blocks.items() for row in side_by_side(block, right[name])]
    lines += ["", side_by_side(["client -> proxy (HTTP/2 frames, decrypted)"], ["proxy -> origin (HTTP/1.1)"])[0],
              *rows, "", "  proxy -> client (HTTP/2 frames, decrypted):"]
    lines += ["    " + line for frame in server for line in _frame_lines(frame)]
    notes = _hpack_notes(client, bundle.markers)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
