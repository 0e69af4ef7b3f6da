"""A recording relay: a man in the middle that only copies bytes, and keeps a copy of each direction.

Theory of operation
-------------------
A packet capture (``sniff.py``, then ``flows.py``) ends in two byte streams, one per
direction of a TCP connection.  When the connection is made on purpose, between
programs of this process, the same two streams are simpler to get by standing in
the middle::

    client ──▶ RecordingRelay (listens on 127.0.0.1, port 0) ──▶ target
                 client_to_server: every byte the client sent
                 server_to_client: every byte the target sent

The relay accepts one connection, opens one to ``target`` and runs a pump thread per
direction: ``recv``, append to the copy, ``sendall``.  It changes nothing, so the TLS
inside runs end to end and the copies are what a capture would hold, minus the
TCP/IP headers: each side's records, headers included, ready for
``proxy.tls.keyschedule.decrypt_connection`` and a key log.

An EOF is passed on (``shutdown(SHUT_WR)``) rather than closing both sides, so a
half-close still works through the relay: a server's close_notify and FIN reach the
client, and the other direction keeps flowing until it ends too.  Every socket has
``timeout``, and ``thread`` ends once both directions have (join it before reading
the copies).  This is a teaching and test tool for one connection, not the proxy's
relay (``proxy.relay``: bounded buffers, back-pressure, no thread of its own).
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"


class RecordingRelay:
    """Relay one connection from ``port`` to ``target``, keeping what each side sent."""

    def __init__(self, target: tuple[str, int], *, timeout: float = 10.0):
        self.target = target
        self.timeout = timeout
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(timeout)
        self.port: int = self.listener.getsockname()[1]
        self.client_to_server = bytearray()
        self.server_to_client = bytearray()
        self.thread = threading.Thread(target=self._run, name="recording-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.listener:
            client, _ = self.listener.accept()
        with client, socket.create_connection(self.target, timeout=self.timeout) as server:
            client.settimeout(self.timeout)
            pumps = [threading.Thread(target=self._pump, args=(client, server, self.client_to_server), daemon=True),
                     threading.Thread(target=self._pump, args=(server, client, self.server_to_client), daemon=True)]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join(self.timeout)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, copy: bytearray) -> None:
        try:
            while data := source.recv(65536):
                copy.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)  # pass the EOF on
            except OSError:
                pass
