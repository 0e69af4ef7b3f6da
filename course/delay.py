"""A delay line: added round-trip time on loopback, in userspace, without root.

Theory of operation
-------------------
On loopback a round trip takes microseconds, so TLS 1.3's one round trip and TLS 1.2's
two look the same.  Linux would add latency with ``tc qdisc add dev lo root netem
delay 20ms``, but that needs root and the ``netem`` module, which this course's
machines do not have (/work/shared/FACTS.md).  A ``DelayLine`` is a small TCP relay
that plays the long cable instead::

    client ──TCP──▶ DelayLine (listen 127.0.0.1:P) ──TCP──▶ target (the proxy)
                     holds each direction's bytes RTT/2

Every accepted connection gets one onward connection to ``target`` and two
directions.  Each direction is a queue of ``(due, bytes)``: what arrives at time *t*
is sent on at *t + RTT/2*, in order (the delay is the same for every chunk, so due
times never decrease and the queue is first in, first out).  A round trip through the
line (client → target → client) therefore takes at least one RTT.  An end of stream
(a FIN, ``recv`` returning ``b""``) travels the same way: RTT/2 later the line shuts
down the onward socket for writing, so a half-close reaches the other side, late, as
it should.  A reset (or an error) closes both sockets at once.

**What it models**: one-way delay, the same in both directions, on every byte
(handshake records, requests, responses, close_notify, FIN).  With it a capture shows
a ClientHello answered one RTT later, TLS 1.2's second round trip, a resumption
saving one, a HelloRetryRequest costing one more.

**What it does not model** (say so when you show its numbers):

* *It delays bytes, not packets.*  The line reads whatever the kernel has and sends
  it on as one chunk; the segment boundaries on the far side are the line's, not the
  sender's (TCP never promised to keep them anyway).
* *The TCP handshake is not delayed.*  The kernel answers a SYN with a SYN-ACK at
  once, before the line can do anything about it, and nothing in userspace can hold
  it back.  So the capture shows SYN and SYN-ACK back to back, and the client sends its
  ClientHello at once: over a real link it would send it one RTT later.  Add one RTT
  by hand for TCP to any "time to first byte".  (The line does open its onward
  connection RTT/2 after the accept, so the *target* sees the connection arrive when
  the SYN would have: with the ClientHello.)
* No bandwidth limit, no loss, no reordering, no jitter; every chunk waits exactly
  RTT/2.  Each direction buffers at most ``MAX_BUFFERED`` bytes; past that it stops
  reading and TCP's flow control pushes back on the sender, so bulk throughput is
  bounded by about ``MAX_BUFFERED / (RTT/2)`` (a window-limited link, roughly).
* Two TCP connections, not one: the capture of a leg through the line shows the
  connecting party's connection *to the line*, which on loopback has the address
  and the view of the connecting party's own network card (``course.capture.setups``).

Use it in a program (``python -m course.delay --listen 127.0.0.1:0 --connect
127.0.0.1:8443 --rtt 40``, which prints ``delay line listening on 127.0.0.1:PORT``) or
in a notebook::

    with DelayLine(proxy.address, rtt=0.040) as line:      # 40 ms round trip
        traced_request(line.address, "www.example.test", ca=...)

Threads: one accept thread, and two per connection (one per direction), at most
``max_connections`` connections; every socket has a timeout, ``stop()`` closes the
listener and every connection and joins the threads.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import select
import signal
import socket
import struct
import sys
import threading
import time

Address = tuple[str, int]

CHUNK = 64 * 1024
MAX_BUFFERED = 4 * 1024 * 1024     # bytes queued per direction before the line stops reading
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 60.0                # a connection with no traffic either way this long is closed
SOCKET_TIMEOUT = 30.0              # bounds every blocking send and the onward connect
POLL = 0.2                         # how often a waiting thread looks at the stop flag
MAX_RTT = 10.0                     # seconds: a lesson, not a satellite link
EOF = b""                          # the queue's marker for "the sender half-closed"


def _address(target) -> Address:
    return tuple(target.address) if hasattr(target, "address") else (target[0], int(target[1]))


class _Direction(threading.Thread):
    """One direction of one connection: read ``source``, hold each chunk ``delay`` s, send to ``sink``.

    ``sink`` is a callable returning the destination socket, because the onward socket
    of the client's direction is opened RTT/2 after the accept while the client's
    bytes must be timestamped from the moment they arrive."""

    def __init__(self, name: str, source: socket.socket, sink, delay: float, stopping: threading.Event,
                 on_abort) -> None:
        super().__init__(name=name, daemon=True)
        self.source, self.sink, self.delay = source, sink, delay
        self.stopping, self.on_abort = stopping, on_abort
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.buffered = 0
        self.last_activity = time.monotonic()
        self.forwarded = 0              # bytes sent on (for tests and curiosity)

    def run(self) -> None:
        try:
            self._pump()
        except OSError:                 # reset, broken pipe, timeout: end the connection
            self.on_abort()

    def _pump(self) -> None:
        reading = True
        while not self.stopping.is_set():
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, data = self.queue.popleft()
                destination = self.sink()
                if destination is None:
                    return              # the onward connection never opened
                if data is EOF:
                    destination.shutdown(socket.SHUT_WR)     # the FIN, RTT/2 late
                    return
                destination.sendall(data)
                self.buffered -= len(data)
                self.forwarded += len(data)
                self.last_activity = time.monotonic()
            wait = min(POLL, self.queue[0][0] - now) if self.queue else POLL
            if reading and self.buffered < MAX_BUFFERED:
                ready, _, _ = select.select([self.source], [], [], max(wait, 0))
                if ready:
                    data = self.source.recv(CHUNK)
                    arrived = time.monotonic()
                    self.queue.append((arrived + self.delay, data))
                    self.buffered += len(data)
                    self.last_activity = arrived
                    reading = bool(data)
                elif not self.queue and time.monotonic() - self.last_activity > IDLE_TIMEOUT:
                    raise TimeoutError("idle")
            else:
                self.stopping.wait(max(wait, 0))


class _Connection:
    """An accepted connection, its onward connection and its two directions."""

    def __init__(self, line: "DelayLine", client: socket.socket) -> None:
        self.line, self.client = line, client
        self.upstream: socket.socket | None = None
        self.opened = threading.Event()     # set once the onward connect succeeded or failed
        self.stopping = threading.Event()
        self.up = _Direction("delay-up", client, self._upstream, line.rtt / 2, self.stopping, self.abort)
        self.down: _Direction | None = None     # made once the onward connection is open

    def _upstream(self) -> socket.socket | None:
        while not self.opened.wait(POLL):
            if self.stopping.is_set():
                return None
        return self.upstream

    def run(self) -> None:
        self.up.start()                 # timestamps the client's bytes from now on
        try:
            # The SYN would reach the target RTT/2 after the client sent it (see the docstring).
            if self.stopping.wait(self.line.rtt / 2):
                return
            source = (self.line.source, 0) if self.line.source else None
            self.upstream = socket.create_connection(self.line.target, timeout=SOCKET_TIMEOUT,
                                                     source_address=source)
            self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.opened.set()
            self.down = _Direction("delay-down", self.upstream, lambda: self.client, self.line.rtt / 2,
                                   self.stopping, self.abort)
            self.down.start()
            self.down.join()
            self.up.join()
        except OSError:
            self.abort()
        finally:
            self.opened.set()
            self.stopping.set()
            for thread in (self.up, self.down):
                if thread is not None and thread.is_alive():
                    thread.join(SOCKET_TIMEOUT)
            for sock in (self.client, self.upstream):
                if sock is not None:
                    sock.close()

    def abort(self) -> None:
        """A reset or an error on either side: both connections end now, with a reset."""
        self.stopping.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    # SO_LINGER 0: close() sends a RST, as the far end's reset would have
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)


class DelayLine:
    """Listen on ``host:port``; relay every connection to ``target`` with ``rtt`` seconds
    of round-trip time (``rtt/2`` each way).  ``source`` binds the onward connections
    (on loopback: the client's own address, so the target logs the real client)."""

    def __init__(self, target, *, rtt: float, host: str = "127.0.0.1", port: int = 0,
                 source: str | None = None, max_connections: int = MAX_CONNECTIONS) -> None:
        if not 0 <= rtt <= MAX_RTT:
            raise ValueError(f"rtt must be between 0 and {MAX_RTT:.0f} seconds, not {rtt!r}")
        self.target, self.rtt, self.source = _address(target), float(rtt), source
        self.max_connections = max_connections
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(POLL)
        self.address: Address = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self._connections: dict[threading.Thread, _Connection] = {}
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, name="delay-accept", daemon=True)
        self.accepted = 0
        self.url: str | None = None     # the target's URL at the line's address (Playground.delay sets it)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> "DelayLine":
        self._acceptor.start()
        return self

    def __enter__(self) -> "DelayLine":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return                  # the listener was closed by stop()
            client.settimeout(SOCKET_TIMEOUT)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections = {t: c for t, c in self._connections.items() if t.is_alive()}
                if len(self._connections) >= self.max_connections:
                    client.close()      # bounded: a lesson, not a load balancer
                    continue
                connection = _Connection(self, client)
                thread = threading.Thread(target=connection.run, name="delay-connection", daemon=True)
                self._connections[thread] = connection
                self.accepted += 1
            thread.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting; give the connections ``grace`` seconds (default: one RTT and a bit)
        to deliver what they hold, closes included; then end the rest (their queued bytes
        are dropped) and join the threads."""
        self._stopping.set()
        self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(SOCKET_TIMEOUT)
        with self._lock:
            connections = dict(self._connections)
        deadline = time.monotonic() + (self.rtt + POLL if grace is None else grace)
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        for connection in connections.values():
            connection.stopping.set()
        for thread in connections:
            thread.join(SOCKET_TIMEOUT)

    def __repr__(self) -> str:
        host, port = self.address
        return f"<DelayLine {host}:{port} -> {self.target[0]}:{self.target[1]}, rtt {self.rtt * 1000:g} ms>"


# --------------------------------------------------------------------------- the program
def _parse(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    """``python -m course.delay --listen HOST:0 --connect HOST:PORT --rtt MS``: print the
    listening address, relay until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m course.delay", description=main.__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--connect", required=True, metavar="HOST:PORT", help="where each connection goes on to")
    parser.add_argument("--rtt", type=float, required=True, metavar="MS", help="round-trip time to add, in ms")
    parser.add_argument("--source", metavar="ADDRESS", help="bind the onward connections to this address")
    args = parser.parse_args(argv)
    host, port = _parse(args.listen)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    line = DelayLine(_parse(args.connect), rtt=args.rtt / 1000, host=host, port=port, source=args.source).start()
    bound_host, bound_port = line.address
    print(f"delay line listening on {bound_host}:{bound_port} (rtt {args.rtt:g} ms, to {args.connect})", flush=True)
    stop.wait()
    line.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
