"""The relay: copy bytes both ways between two TCP sockets until both sides are done.

Theory of operation
-------------------
Passthrough (setup 5) and a CONNECT tunnel (setup 6) end the same way: the proxy has
decided where the bytes go and no longer looks at them.  What is left is a pump::

              ┌──────── client_to_origin: buffer ────────┐
    client ───┤                                          ├─── origin
              └──────── origin_to_client: buffer ────────┘

Each direction is a ``Pipe``: read from its source into one fixed buffer, write the
buffer to its sink, repeat.  Both pipes run in the connection's own thread, driven by
``poll()`` on non-blocking sockets (one thread per connection, as everywhere in the
server; no second thread per tunnel).  Four rules make it correct:

* **Bounded memory, back-pressure.**  A pipe reads only when its buffer is empty.
  While its sink has not taken the buffer, it stops reading from its source, so the
  source's TCP window fills and the sender slows down.  A peer that stops reading
  costs the proxy one buffer per direction, never more (the alternative, reading
  whatever arrives into a growing queue, lets one slow reader exhaust memory).
* **No deadlock.**  A blocking ``sendall`` in one direction would stop the other
  direction too; when both peers write without reading (a large upload meeting a
  large download) each would wait for the other forever.  ``poll`` waits for *either*
  pipe's next step: readable source or writable sink.
* **Half-close is honoured.**  EOF from one side (its FIN) is not the end of the
  tunnel: the pipe passes it on with ``shutdown(SHUT_WR)`` on the other socket and the
  other direction keeps flowing until it ends as well.  Protocols rely on it: a client
  that sends a request then ``shutdown(SHUT_WR)``, TLS's close_notify followed by FIN.
* **Every wait is bounded.**  If no byte moves either way for ``idle_timeout`` seconds
  the relay ends ("idle", or "stalled" when one side stopped reading while data was
  waiting for it).  nginx's stream module calls this ``proxy_timeout`` (10 min).

The relay owns neither socket: the caller opened them and closes them (after the relay
returns, both directions are over).  ``first_to_origin`` carries bytes that were read
before the relay began (the ClientHello the passthrough proxy had to read to route, the
bytes a CONNECT client sent right after its request): they go out first, counted.

Buffer size: 64 KiB per direction.  FACTS.md measures 64-256 KiB reads as fast; at the
default ``max_connections`` of 1024 tunnels, 64 KiB is 128 MiB of buffers in total.
"""

from __future__ import annotations

import enum
import select
import socket
import ssl
import time
from dataclasses import dataclass

BUFFER_SIZE = 64 * 1024


_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


class PipeState(enum.Enum):
    OPEN = "copying"  # the source may send more
    CLOSED = "source sent EOF; passed on as shutdown(SHUT_WR) to the sink"


#: The pipe's life, as data (a pipe only ever reads with an empty buffer, so at EOF
#: there is nothing left to flush and the FIN is passed on at once).
TRANSITIONS: dict[tuple[PipeState, str], PipeState] = {
    (PipeState.OPEN, "eof"): PipeState.CLOSED,
}


@dataclass(frozen=True)
class RelayResult:
    """What happened in a relay, for the access log and the notebooks."""

    client_to_origin: int  # bytes delivered to the origin (including first_to_origin)
    origin_to_client: int  # bytes delivered to the client
    ended: str  # "closed" (both sides finished), "idle", "stalled: ...", "client reset: ...", ...
    seconds: float

    @property
    def clean(self) -> bool:
        return self.ended == "closed"


class _PeerError(Exception):
    """A socket operation failed: the relay ends with this reason."""


class Pipe:
    """One direction: bytes read from ``source`` wait in ``buffer`` until ``sink`` takes them."""

    def __init__(self, source: socket.socket, sink: socket.socket, source_name: str, sink_name: str,
                 *, size: int = BUFFER_SIZE, first: bytes = b""):
        self.source, self.sink = source, sink
        self.source_name, self.sink_name = source_name, sink_name
        self.buffer = memoryview(bytearray(size))
        self.pending = memoryview(first) if first else self.buffer[:0]  # read, not yet written
        self.state = PipeState.OPEN
        self.delivered = 0

    @property
    def done(self) -> bool:
        return self.state is PipeState.CLOSED and not self.pending

    def interest(self) -> tuple[socket.socket, int] | None:
        """Which socket this pipe waits on, and for what (or None: nothing to do)."""
        if self.pending:
            return self.sink, select.POLLOUT
        if self.state is PipeState.OPEN:
            return self.source, select.POLLIN
        return None

    def step(self) -> bool:
        """Read or write once if the socket is ready; True if a byte moved (or EOF passed)."""
        moved = False
        if not self.pending and self.state is PipeState.OPEN:
            try:
                n = self.source.recv_into(self.buffer)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as error:
                raise _PeerError(f"{self.source_name} reset: {error.strerror or error}") from None
            if n == 0:
                self._pass_on_eof()
                return True
            self.pending = self.buffer[:n]
            moved = True
        if self.pending:
            try:
                n = self.sink.send(self.pending)
            except (BlockingIOError, InterruptedError):
                return moved
            except OSError as error:
                raise _PeerError(f"{self.sink_name} gone: {error.strerror or error}") from None
            self.pending = self.pending[n:]
            self.delivered += n
            moved = True
        return moved

    def _pass_on_eof(self) -> None:
        self.state = TRANSITIONS[self.state, "eof"]
        try:
            self.sink.shutdown(socket.SHUT_WR)  # our FIN: "no more bytes from my peer"
        except OSError:
            pass  # the sink is already gone; its own pipe will notice


def relay(client: socket.socket, origin: socket.socket, *, idle_timeout: float,
          first_to_origin: bytes = b"", buffer_size: int = BUFFER_SIZE) -> RelayResult:
    """Copy bytes both ways until both sides have closed, one fails, or nothing moves.

    Both sockets must be plain TCP sockets (not ``ssl.SSLSocket``: their buffered
    records make ``poll`` lie).  They are left non-blocking and open.
    """
    for sock in (client, origin):
        if isinstance(sock, ssl.SSLSocket):
            raise TypeError("relay() copies raw TCP bytes; give it plain sockets")
        sock.setblocking(False)
    up = Pipe(client, origin, "client", "origin", size=buffer_size, first=first_to_origin)
    down = Pipe(origin, client, "origin", "client", size=buffer_size)
    pipes = (up, down)
    started = time.monotonic()
    idle_deadline = started + idle_timeout
    poller = select.poll()
    registered: dict[int, int] = {}
    ended = "closed"
    try:
        while not (up.done and down.done):
            _update_interest(poller, registered, pipes)
            remaining = idle_deadline - time.monotonic()
            if remaining <= 0:
                waiting = next((p for p in pipes if p.pending), None)
                ended = f"stalled: {waiting.sink_name} stopped reading" if waiting else "idle"
                break
            ready = poller.poll(remaining * 1000)
            if not ready:
                continue
            moved = False
            for pipe in pipes:
                moved = pipe.step() or moved
            if moved:
                idle_deadline = time.monotonic() + idle_timeout
            elif hung_up := [fd for fd, events in ready if events & _HANGUP]:
                # Nothing to read or write, and a socket we still owe bytes to is shut in
                # both directions or reset (a peer gone, or the server's shutdown()).
                ended = f"{'client' if hung_up[0] == client.fileno() else 'origin'} gone"
                break
    except _PeerError as error:
        ended = str(error)
    return RelayResult(up.delivered, down.delivered, ended, time.monotonic() - started)


def _update_interest(poller: select.poll, registered: dict[int, int], pipes: tuple[Pipe, ...]) -> None:
    """Register each socket for what its pipes wait on.

    A socket that a live pipe may still write to is registered even when nothing waits
    on it (mask 0: poll then reports only POLLHUP/POLLERR), so a peer that vanishes, or
    the server's ``shutdown()`` cutting the client socket, ends an otherwise idle relay.
    A socket nobody will read or write again is left out, or its POLLHUP would wake the
    loop over and over.
    """
    wanted: dict[int, int] = {}
    for pipe in pipes:
        if not pipe.done:
            wanted.setdefault(pipe.sink.fileno(), 0)
        interest = pipe.interest()
        if interest is not None:
            sock, event = interest
            wanted[sock.fileno()] = wanted.get(sock.fileno(), 0) | event
    for fd in list(registered):
        if fd not in wanted:
            poller.unregister(fd)
            del registered[fd]
    for fd, mask in wanted.items():
        if registered.get(fd) != mask:
            (poller.modify if fd in registered else poller.register)(fd, mask)
            registered[fd] = mask


def close_gracefully(sock: socket.socket, *, linger: float = 1.0) -> None:
    """Send FIN, read (and drop) what the peer still sends for up to ``linger`` seconds, close.

    Closing a socket with unread bytes in its receive buffer makes the kernel send a
    RST, which can destroy the last bytes we sent (an alert, an error response) before
    the peer reads them (RFC 9112 §9.6 describes the same "lingering close" for HTTP).
    """
    try:
        sock.setblocking(True)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + linger
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(BUFFER_SIZE):
                break
    except OSError:
        pass
    finally:
        sock.close()
