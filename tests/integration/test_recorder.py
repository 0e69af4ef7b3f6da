"""course.capture.recorder: a relay that copies bytes unchanged and keeps each direction."""

from __future__ import annotations

import socket
import threading

from course.capture.recorder import RecordingRelay


def test_both_directions_are_relayed_unchanged_and_recorded_with_half_close():
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def upper_echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            while data := conn.recv(4096):  # until the client's FIN arrives through the relay
                received.extend(data)
            conn.sendall(bytes(received).upper())

    thread = threading.Thread(target=upper_echo, daemon=True)
    thread.start()
    relay = RecordingRelay(server.getsockname()[:2], timeout=5)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as client:
        client.sendall(b"hello, ")
        client.sendall(b"relay")
        client.shutdown(socket.SHUT_WR)  # half-close: the answer must still come back
        answer = bytearray()
        while data := client.recv(4096):
            answer.extend(data)
    relay.thread.join(5)
    thread.join(5)
    server.close()
    assert bytes(answer) == b"HELLO, RELAY"
    assert relay.client_to_server == b"hello, relay" == received
    assert relay.server_to_client == b"HELLO, RELAY"
