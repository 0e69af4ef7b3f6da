"""The Python floor: a TLS-terminating byte relay that knows no HTTP, to measure what Python costs.

Theory of operation
-------------------
The event-loop engine costs a few times nginx's CPU per keep-alive request.  Is that
our proxy's logic, or the price of doing this job in Python at all?  This module is the
measuring stick: the least a Python event loop can do per request and still carry one
through TLS termination, and nothing more::

    wrk ══TLS══▶ floor relay (one thread, selectors/epoll, ssl) ──TCP──▶ origin

* one thread, the standard library's ``selectors`` (epoll), non-blocking sockets,
  Python's ``ssl`` with the proxy's own server context (``proxy.tls.contexts``), so
  the handshakes and records cost what the proxy's cost;
* each client connection gets one backend connection, opened when the handshake ends
  and kept for the client's lifetime (as the proxy's pool would lend it one);
* bytes are copied as they come: ``recv`` on one side, ``send`` on the other.  No head
  is parsed, nothing is checked or rewritten, no timeout, no log, no limit.  The origin
  closing its side (``Connection: close``) closes the client's, once what the origin sent
  has left.

It is **not a proxy**: it forwards whatever it is sent, smuggled requests included, and
holds a client forever.  It exists so that the benchmark can print a row that says what
the interpreter, ``ssl`` and ``selectors`` cost on their own: whatever the event loop
costs above this row is the proxy's HTTP logic and bookkeeping; whatever this row costs
above nginx is Python's (``tlsproxy bench --sweep --floor``).

A partial ``send`` keeps the rest in a buffer and waits for WRITE; TLS's
``SSLWantReadError``/``SSLWantWriteError`` are waited out like the engine's
``proxy.eventloop.stream`` does (a record only half arrived is "nothing yet").  That is
the one care taken, because without it the relay would lose bytes and the row would
measure errors::

    python -m course.bench.floor_relay --listen 127.0.0.1:0 --cert C --key K --backend 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import ssl
import sys

from proxy.tls.contexts import CertKey, server_context
from proxy.transport import RECV_SIZE

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Side:
    """One socket of a relayed pair: what it still owes its peer, and the peer."""

    __slots__ = ("sock", "peer", "out", "mask", "handshaking", "closing")

    def __init__(self, sock: socket.socket, handshaking: bool = False) -> None:
        self.sock = sock
        self.peer: Side | None = None
        self.out = bytearray()  # bytes for this socket that it did not take yet
        self.mask = READ
        self.handshaking = handshaking
        self.closing = False  # its peer is gone: close it once ``out`` has left


class FloorRelay:
    def __init__(self, listener: ssl.SSLSocket, backend: tuple[str, int]) -> None:
        self.listener = listener
        self.backend = backend
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, READ, None)
        self.running = True

    def run(self) -> None:
        select = self.selector.select
        while self.running:
            for key, mask in select(1.0):
                if key.data is None:
                    self.accept()
                else:
                    self.ready(key.data, mask)

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, ssl.SSLError, OSError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the proxy: no Nagle wait
            side = Side(sock, handshaking=True)
            self.selector.register(sock, READ, side)
            self.handshake(side)

    def handshake(self, side: Side) -> None:
        try:
            side.sock.do_handshake()
        except ssl.SSLWantReadError:
            return self.want(side, READ)
        except ssl.SSLWantWriteError:
            return self.want(side, WRITE)
        except (ssl.SSLError, OSError):
            return self.close(side)
        side.handshaking = False
        backend = socket.create_connection(self.backend)  # loopback: done at once
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        backend.setblocking(False)
        other = Side(backend)
        side.peer, other.peer = other, side
        self.selector.register(backend, READ, other)
        self.want(side, READ)
        self.pull(side)  # TLS may hold a request decrypted with the handshake's last flight

    def ready(self, side: Side, mask: int) -> None:
        if side.handshaking:
            return self.handshake(side)
        if side.out:  # (a TLS send may have waited for READ as well as WRITE)
            self.push(side, b"")
        if mask & READ:
            self.pull(side)

    def pull(self, side: Side) -> None:
        """Everything ``side`` has for its peer, now (TLS: while decrypted bytes are pending)."""
        while side.peer is not None:
            try:
                data = side.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                return self.want(side, WRITE)
            except OSError:
                return self.close(side)
            if not data:  # the peer closed: close both, once what it sent has left
                return self.close(side) if not side.peer.out else self.close_after_flush(side)
            self.push(side.peer, data)
            if not isinstance(side.sock, ssl.SSLSocket) or not side.sock.pending():
                return

    def push(self, side: Side, data: bytes) -> None:
        out = side.out
        out += data
        while out:
            try:
                sent = side.sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                return self.want(side, WRITE if side.closing else READ | WRITE)
            except ssl.SSLWantReadError:
                return self.want(side, READ)
            except OSError:
                return self.close(side)
            del out[:sent]
        if side.closing:
            return self.close(side)
        if side.mask != READ:
            self.want(side, READ)

    def want(self, side: Side, mask: int) -> None:
        if mask != side.mask:
            self.selector.modify(side.sock, mask, side)
            side.mask = mask

    def close_after_flush(self, side: Side) -> None:
        """``side`` is at EOF and its peer still owes bytes: close ``side`` now, the peer when they are sent."""
        other = side.peer
        self.selector.unregister(side.sock)
        side.sock.close()
        side.peer = other.peer = None
        other.closing = True
        self.want(other, WRITE)

    def close(self, side: Side) -> None:
        for each in (side, side.peer):
            if each is None or each.sock.fileno() < 0:
                continue
            self.selector.unregister(each.sock)
            each.sock.close()
            each.peer = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.bench.floor_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--cert", action="append", required=True, help="certificate chain (PEM); repeatable")
    parser.add_argument("--key", action="append", required=True, help="its key (PEM), one per --cert")
    parser.add_argument("--backend", required=True, help="HOST:PORT of the plain-HTTP origin")
    args = parser.parse_args(argv)
    if len(args.cert) != len(args.key):
        parser.error("give one --key for each --cert")
    context = server_context([CertKey(c, k) for c, k in zip(args.cert, args.key)], keylog="")
    host, _, port = args.listen.rpartition(":")
    backend_host, _, backend_port = args.backend.rpartition(":")
    plain = socket.create_server((host, int(port)), backlog=1024)
    plain.setblocking(False)
    listener = context.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
    relay = FloorRelay(listener, (backend_host, int(backend_port)))

    def stop(*_):
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The line the benchmark's launcher waits for (course.bench.setups: READY), as the proxy prints it.
    print(f"floor relay: listening on {host}:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
