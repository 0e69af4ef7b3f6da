"""From packets to TCP connections: the byte streams a capture holds.

Theory of operation
-------------------
A pcap is a list of packets; TLS and HTTP live in *byte streams*.  TCP numbers every
byte it sends (RFC 9293 §3.4): a segment's sequence number is the number of its
first payload byte, counted from the initial sequence number (ISN) chosen in the
SYN, which itself uses up one number (as does the FIN).  So the payload of a
segment belongs at offset ``seq - (ISN + 1)`` of its sender's stream, and laying
every segment at its offset rebuilds the stream however the packets were split,
repeated (retransmissions) or reordered::

    SYN seq=1000            ISN = 1000, stream offset 0 is seq 1001
    seq=1001 len=517        bytes 0..516     (ClientHello)
    seq=1518 len=64         bytes 517..580   (Finished)
    seq=1518 len=64         the same bytes again: a retransmission, laid over itself

``read_connections`` groups the packets of a pcap by their 4-tuple, decides which
end is the client (the one that sent the SYN without ACK; without a SYN, the end
that is not a known server port), and keeps every segment with its time, flags and
stream offset.  The ladder diagram draws the segments, the decryptors and the
"who sees what" table read the streams.  Reading a pcap needs scapy; everything
after that works on plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

Endpoint = tuple[str, int]   # (IP address, port)

# TCP header flag bits (RFC 9293 §3.1), in the order tcpdump prints them.
FLAG_NAMES = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10), ("U", 0x20))


@dataclass(frozen=True)
class Segment:
    """One TCP packet of a connection, as captured."""

    time: float                 # capture timestamp (seconds since the epoch)
    sender: str                 # "client" or "server"
    flags: int                  # the TCP flag bits
    seq: int
    ack: int
    payload: bytes = field(repr=False)
    offset: int = -1            # where ``payload`` starts in the sender's stream; -1 if empty

    @property
    def flag_text(self) -> str:
        return "".join(name for name, bit in FLAG_NAMES if self.flags & bit)

    def has(self, flag: str) -> bool:
        return flag in self.flag_text

    @property
    def is_pure_ack(self) -> bool:
        """An ACK with no data and no SYN/FIN/RST: TCP bookkeeping a diagram may leave out."""
        return not self.payload and self.flags & 0x17 == 0x10


@dataclass
class TCPConnection:
    """Both directions of one TCP connection."""

    client: Endpoint
    server: Endpoint
    segments: list[Segment] = field(default_factory=list, repr=False)

    @property
    def start(self) -> float:
        return self.segments[0].time

    @property
    def end(self) -> float:
        return self.segments[-1].time

    def stream(self, sender: str) -> bytes:
        """Everything ``sender`` ("client" or "server") sent, in order, retransmissions laid
        over themselves.  A gap (bytes never captured) is filled with zeros."""
        data = bytearray()
        for segment in self.segments:
            if segment.sender == sender and segment.payload:
                end = segment.offset + len(segment.payload)
                if end > len(data):
                    data.extend(bytes(end - len(data)))
                data[segment.offset:end] = segment.payload
        return bytes(data)

    def segments_from(self, sender: str) -> list[Segment]:
        return [s for s in self.segments if s.sender == sender]

    def __str__(self) -> str:
        return f"{format_endpoint(self.client)} -> {format_endpoint(self.server)}"


def format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class CapturedPacket:
    """The fields of one captured TCP packet that the reassembly needs."""

    time: float
    src: Endpoint
    dst: Endpoint
    flags: int
    seq: int
    ack: int
    payload: bytes


def connections_from_packets(packets: Iterable[CapturedPacket],
                             server_ports: Iterable[int] = ()) -> list[TCPConnection]:
    """Group packets into connections and lay each payload at its stream offset."""
    server_ports = set(server_ports)
    grouped: dict[frozenset, list[CapturedPacket]] = {}
    for packet in sorted(packets, key=lambda p: p.time):
        grouped.setdefault(frozenset((packet.src, packet.dst)), []).append(packet)
    connections = []
    for group in grouped.values():
        client, server = _roles(group, server_ports)
        # RFC 9293 §3.4: the SYN's sequence number is the ISN, and the SYN uses one number.
        first_byte: dict[Endpoint, int] = {}
        for packet in group:
            if packet.flags & 0x02:
                first_byte.setdefault(packet.src, packet.seq + 1)
        for packet in group:               # no SYN captured: start at the lowest seq seen
            if packet.payload and packet.src not in first_byte:
                first_byte[packet.src] = min(p.seq for p in group if p.src == packet.src and p.payload)
        segments = [
            Segment(p.time, "client" if p.src == client else "server", p.flags, p.seq, p.ack, p.payload,
                    (p.seq - first_byte[p.src]) % 2**32 if p.payload else -1)
            for p in group
        ]
        connections.append(TCPConnection(client, server, segments))
    return sorted(connections, key=lambda c: c.start)


def _roles(group: list[CapturedPacket], server_ports: set[int]) -> tuple[Endpoint, Endpoint]:
    for packet in group:
        if packet.flags & 0x12 == 0x02:                   # SYN without ACK: the client opens
            return packet.src, packet.dst
    a, b = group[0].src, group[0].dst
    if a[1] in server_ports:
        return b, a
    if b[1] in server_ports:
        return a, b
    return (a, b) if a[1] > b[1] else (b, a)              # ephemeral ports are the high ones


def packets_from_scapy(packets) -> list[CapturedPacket]:
    """Turn scapy packets (IPv4 or IPv6 over TCP) into ``CapturedPacket`` values."""
    load_scapy_layers()
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    result = []
    for packet in packets:
        if TCP not in packet:
            continue
        ip = packet[IP] if IP in packet else packet[IPv6] if IPv6 in packet else None
        if ip is None:
            continue
        tcp = packet[TCP]
        result.append(CapturedPacket(float(packet.time), (ip.src, tcp.sport), (ip.dst, tcp.dport), int(tcp.flags),
                              tcp.seq, tcp.ack, bytes(tcp.payload)))
    return result


def load_scapy_layers() -> None:
    """Register Ethernet (the link type of lo and veth), IPv4, IPv6 and TCP with scapy.
    A packet dissected before they are imported stays ``Raw``, and a pcap written from
    such packets is garbage; ``from scapy.all import *`` does this as a side effect."""
    import scapy.layers.inet  # noqa: F401
    import scapy.layers.inet6  # noqa: F401
    import scapy.layers.l2  # noqa: F401


def read_connections(pcap: str | Path, server_ports: Iterable[int] = ()) -> list[TCPConnection]:
    """Every TCP connection in a pcap file, oldest first."""
    load_scapy_layers()
    from scapy.utils import rdpcap

    return connections_from_packets(packets_from_scapy(rdpcap(str(pcap))), server_ports)
