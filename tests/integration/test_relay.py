"""The relay on real TCP sockets: half-close, back-pressure, timeouts, resets, byte counts."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time

import pytest

from proxy.relay import relay


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


class Tunnel:
    """client <-> [client_end  relay  origin_end] <-> origin, the relay in a thread."""

    def __init__(self, **options):
        self.client, self.client_end = tcp_pair()
        self.origin_end, self.origin = tcp_pair()
        for sock in (self.client, self.origin):
            sock.settimeout(10)
        self.result = None
        self.thread = threading.Thread(target=self._run, kwargs=options, daemon=True)
        self.thread.start()

    def _run(self, **options):
        options.setdefault("idle_timeout", 10)
        self.result = relay(self.client_end, self.origin_end, **options)

    def finish(self, timeout=10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the relay did not end"
        for sock in (self.client, self.client_end, self.origin, self.origin_end):
            sock.close()
        return self.result


def read_all(sock) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def test_half_close_each_way_and_byte_counts():
    """The client sends, then shuts its sending side; the origin still answers after that EOF."""
    tunnel = Tunnel(first_to_origin=b"HELLO ")
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB: many buffers' worth

    def origin_side():
        received = read_all(tunnel.origin)  # ends only when the client's FIN came through
        tunnel.origin.sendall(hashlib.sha256(received).hexdigest().encode())
        tunnel.origin.shutdown(socket.SHUT_WR)

    origin = threading.Thread(target=origin_side)
    origin.start()
    tunnel.client.sendall(payload)
    tunnel.client.shutdown(socket.SHUT_WR)  # half-close: we still read
    answer = read_all(tunnel.client)
    origin.join(10)
    result = tunnel.finish()
    assert answer == hashlib.sha256(b"HELLO " + payload).hexdigest().encode()
    assert result.client_to_origin == len(payload) + 6
    assert result.origin_to_client == 64
    assert result.ended == "closed" and result.clean


def test_a_peer_that_stops_reading_is_not_buffered_without_bound():
    """The origin reads nothing: the relay stops reading the client, whose sends then block."""
    tunnel = Tunnel(idle_timeout=0.5)
    tunnel.client.setblocking(False)
    block = b"x" * (1 << 20)
    sent, limit = 0, 256 << 20
    while sent < limit:
        try:
            sent += tunnel.client.send(block)
        except BlockingIOError:
            time.sleep(0.05)  # give the relay a chance to drain into the origin's socket
            try:
                sent += tunnel.client.send(block)
            except BlockingIOError:
                break
    assert sent < limit, "the relay kept reading from a client whose bytes nobody takes"
    result = tunnel.finish()
    assert result.ended == "stalled: origin stopped reading"
    # The kernel buffers took some; the relay moved into the origin's socket what fitted.
    assert 0 < result.client_to_origin <= sent


def test_idle_timeout_ends_a_silent_tunnel():
    tunnel = Tunnel(idle_timeout=0.3)
    started = time.monotonic()
    result = tunnel.finish()
    assert result.ended == "idle"
    assert 0.25 < time.monotonic() - started < 3


def test_traffic_keeps_the_tunnel_alive_past_the_idle_timeout():
    tunnel = Tunnel(idle_timeout=0.4)
    for i in range(6):  # 6 x 0.15 s = 0.9 s in all, but never 0.4 s of silence
        tunnel.client.sendall(b"ping %d\n" % i)
        assert tunnel.origin.recv(100) == b"ping %d\n" % i
        time.sleep(0.15)
    tunnel.client.close()
    tunnel.origin.close()
    assert tunnel.finish().ended == "closed"


def test_a_reset_ends_the_relay_at_once():
    tunnel = Tunnel()
    tunnel.client.sendall(b"before")
    assert tunnel.origin.recv(100) == b"before"
    # SO_LINGER 0: close() sends RST instead of FIN.
    tunnel.origin.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tunnel.origin.close()
    result = tunnel.finish(timeout=5)
    assert "origin reset" in result.ended or "origin gone" in result.ended, result.ended
    assert result.client_to_origin == 6


def test_plain_sockets_only():
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    a, b = tcp_pair()
    wrapped = context.wrap_socket(a, server_hostname="x", do_handshake_on_connect=False)
    with pytest.raises(TypeError):
        relay(wrapped, b, idle_timeout=1)
    wrapped.close()
    b.close()


def test_cutting_the_client_socket_ends_an_idle_tunnel():
    """What ProxyServer.shutdown() does after its grace period: shutdown(SHUT_RDWR) on the
    client's socket.  The relay must end, not wait out its idle timeout."""
    tunnel = Tunnel(idle_timeout=30)
    time.sleep(0.1)
    started = time.monotonic()
    tunnel.client_end.shutdown(socket.SHUT_RDWR)
    result = tunnel.finish(timeout=5)
    assert time.monotonic() - started < 2
    assert result.ended == "client gone"
