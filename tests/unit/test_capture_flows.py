"""course.capture.flows: packets -> TCP connections -> each side's byte stream.

Packets are built by hand (no capture needed): the reassembly must put payloads at
``seq - (ISN + 1)``, survive retransmissions and reordering, find the client by its
SYN, and cope with a capture that started after the handshake.
"""

from __future__ import annotations

from course.capture.flows import CapturedPacket, connections_from_packets

CLIENT, SERVER = ("127.0.0.2", 50000), ("127.0.0.1", 8443)
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def packet(time, src, dst, flags, seq, payload=b"", ack=0):
    return CapturedPacket(time, src, dst, flags, seq, ack, payload)


def handshake(client_isn=1000, server_isn=5000):
    return [packet(0.0, CLIENT, SERVER, SYN, client_isn),
            packet(0.1, SERVER, CLIENT, SYN | ACK, server_isn, ack=client_isn + 1),
            packet(0.2, CLIENT, SERVER, ACK, client_isn + 1, ack=server_isn + 1)]


def test_streams_are_rebuilt_in_sequence_order_despite_reordering_and_retransmission():
    packets = handshake() + [
        packet(0.4, CLIENT, SERVER, PSH | ACK, 1006, b"world"),   # arrives first
        packet(0.3, CLIENT, SERVER, PSH | ACK, 1001, b"hello"),
        packet(0.5, CLIENT, SERVER, PSH | ACK, 1001, b"hello"),   # retransmitted
        packet(0.6, SERVER, CLIENT, PSH | ACK, 5001, b"answer"),
        packet(0.7, CLIENT, SERVER, FIN | ACK, 1011),
    ]
    (connection,) = connections_from_packets(packets)
    assert (connection.client, connection.server) == (CLIENT, SERVER)
    assert connection.stream("client") == b"helloworld"
    assert connection.stream("server") == b"answer"
    assert [s.flag_text for s in connection.segments][:2] == ["S", "SA"]
    assert connection.segments[-1].has("F")
    offsets = [s.offset for s in connection.segments if s.payload]
    assert offsets == [0, 5, 0, 0]          # sorted by time: hello, world, hello again, answer


def test_sequence_numbers_wrap_around_2_to_the_32():
    packets = handshake(client_isn=2**32 - 3) + [
        packet(0.3, CLIENT, SERVER, PSH | ACK, 2**32 - 2, b"ab"),
        packet(0.4, CLIENT, SERVER, PSH | ACK, 0, b"cd"),          # 2**32 wrapped to 0
    ]
    (connection,) = connections_from_packets(packets)
    assert connection.stream("client") == b"abcd"


def test_without_a_syn_the_known_server_port_decides_who_is_the_client():
    packets = [packet(1.0, SERVER, CLIENT, PSH | ACK, 7000, b"late"),
               packet(1.1, CLIENT, SERVER, PSH | ACK, 300, b"capture")]
    (connection,) = connections_from_packets(packets, server_ports=[8443])
    assert connection.client == CLIENT
    assert connection.stream("client") == b"capture"
    assert connection.stream("server") == b"late"


def test_pure_acks_are_recognised_and_connections_are_ordered_by_start():
    other = ("127.0.0.2", 50001)
    later = [packet(5.0, other, SERVER, SYN, 1), packet(5.1, SERVER, other, SYN | ACK, 9, ack=2)]
    connections = connections_from_packets(later + handshake())
    assert [c.client for c in connections] == [CLIENT, other]
    assert connections[0].segments[2].is_pure_ack
    assert not connections[0].segments[0].is_pure_ack
