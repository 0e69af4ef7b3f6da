"""The lab client's request over HTTP/2: the same markers, in frames, with the `h2` library.

Theory of operation
-------------------
``tlsproxy capture --http2`` makes the lab client (``client.py``) offer ALPN ``h2``
only; once the TLS handshake chose it (RFC 9113 §3.2), ``exchange`` here speaks HTTP/2
on the socket.  The `h2` library is sans-IO: it turns calls (``send_headers``,
``send_data``) into bytes (``data_to_send``) and bytes received into events
(``receive_data``); this module moves the bytes.  The request carries the same markers
as the HTTP/1.1 one, in HTTP/2's form (RFC 9113 §8.3.1: pseudo-header fields first,
``:authority`` in place of Host, field names in lowercase, §8.2.1)::

    HEADERS[1]  :method POST  :scheme https  :authority www.example.test
                :path /account/statement?id=path-marker-7  x-lab-secret header-marker-7 ...
    DATA[1]     card=body-marker-7                          END_STREAM

The client writes in three steps, so that each lands in its own TLS record and the
ladder diagram shows them apart: the connection preface with its SETTINGS (RFC 9113
§3.4), then HEADERS, then DATA.  (curl's nghttp2 sends all of it in one write.)  It then
reads until the response stream ends, answering what `h2` says must be answered
(SETTINGS ACK, WINDOW_UPDATE), and closes with a GOAWAY (RFC 9113 §6.8).

``exchange`` returns, for ``client.json``: every byte sent and received (base64, so
the decrypted client leg can be compared with them byte for byte), the frames of each
direction (type, stream id, flags, length: ``h2frames.split_frames``), and the response's
status, headers and body.
"""

from __future__ import annotations

import base64
import socket

# At module level: client.py imports this module before it connects, so that importing h2
# (60-130 ms here, `python -X importtime`) does not sit between the handshake and the request.
import h2.config
import h2.connection
import h2.events

from course.capture.h2frames import split_frames

MAX_READS = 1000                  # a bound on the read loop (each read waits at most the socket timeout)


def request_headers(server_name: str, path: str, secret: tuple[str, str], body: bytes) -> list[tuple[str, str]]:
    """The lab request's header list, pseudo-header fields first (RFC 9113 §8.3)."""
    return [(":method", "POST"), (":scheme", "https"), (":authority", server_name), (":path", path),
            (secret[0].lower(), secret[1]), ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", str(len(body)))]


def exchange(sock: socket.socket, server_name: str, path: str, secret: tuple[str, str], body: bytes) -> dict:
    """One HTTP/2 request on ``sock`` (TLS, ALPN h2 already chosen); the report for client.json."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    sent, received = bytearray(), bytearray()

    def flush() -> None:
        data = connection.data_to_send()
        if data:
            sock.sendall(data)
            sent.extend(data)

    connection.initiate_connection()               # preface + SETTINGS
    flush()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, request_headers(server_name, path, secret, body))
    flush()
    connection.send_data(stream, body, end_stream=True)
    flush()
    status, headers, response_body, ended = None, [], bytearray(), False
    for _ in range(MAX_READS):
        data = sock.recv(65536)
        if not data:
            break
        received.extend(data)
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                headers = [(str(n), str(v)) for n, v in event.headers]
                status = dict(headers).get(":status")
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                response_body.extend(event.data)
                connection.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and event.stream_id == stream:
                ended = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                ended = True
        flush()
        if ended:
            break
    connection.close_connection()                  # GOAWAY, NO_ERROR
    flush()
    return {"request": base64.b64encode(bytes(sent)).decode(), "response": base64.b64encode(bytes(received)).decode(),
            "frames_sent": [frame.as_dict() for frame in split_frames(bytes(sent))],
            "frames_received": [frame.as_dict() for frame in split_frames(bytes(received))],
            "response_status": status, "response_headers": headers,
            "response_body": base64.b64encode(bytes(response_body)).decode()}
