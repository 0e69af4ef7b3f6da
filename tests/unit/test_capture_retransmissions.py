"""course.capture.decrypt._without_retransmissions: a data segment sent twice reaches scapy once.

scapy's TCPSession reassembles a retransmitted segment a second time and loses its place in
the TLS stream (seen live on the HTTP/2 capture's tail-loss probe); the receiver keeps only
the first copy (RFC 9293 §3.10.7.4), and so does the decryption.  Packets built with scapy.
"""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from course.capture.decrypt import _without_retransmissions  # noqa: E402


def segment(seq: int, payload: bytes = b"", source: str = "127.0.0.2", flags: str = "PA"):
    packet = IP(src=source, dst="127.0.0.1") / TCP(sport=40000, dport=443, seq=seq, flags=flags)
    return packet / Raw(payload) if payload else packet


def test_an_exact_repeat_is_dropped_and_everything_else_kept():
    first, again = segment(100, b"record one"), segment(100, b"record one")
    other_data_same_seq = segment(100, b"record two")            # not a copy: kept
    ack = segment(110, flags="A")
    ack_again = segment(110, flags="A")                           # pure ACKs repeat legitimately
    other_side = segment(100, b"record one", source="127.0.0.3")
    kept = _without_retransmissions([first, ack, again, other_data_same_seq, ack_again, other_side])
    assert kept == [first, ack, other_data_same_seq, ack_again, other_side]
