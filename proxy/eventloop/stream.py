"""A non-blocking socket (plain or TLS) as the event loop's protocol code sees it.

Theory of operation
-------------------
This is the event loop's ``proxy.transport``: the one place that calls ``recv`` and
``send``.  The owner (a client session, a backend connection) sets four callbacks and
never touches the socket::

    stream.on_data(bytes)      bytes arrived                   stream.write(bytes)     queue, send soon
    stream.on_eof()            the peer closed its side        stream.pause_reading()  back-pressure
    stream.on_error(error)     ReadError / WriteError          stream.resume_reading()
    stream.on_drain()          the send buffer fell low        stream.close(notify=)   close_notify or not

**Writes are buffered.**  ``write`` appends to ``out`` and asks the loop to ``flush`` at
the end of this turn (``call_soon``), so a head and a small body written one after the
other leave as one TLS record and one system call (the threaded engine's ``Outbox``).
Whatever the socket does not take now waits for a WRITE event.

**Back-pressure.**  ``out`` is the only place bytes pile up, so ``buffered`` tells the
owner when to stop reading the *other* side: above ``HIGH_WATER`` the owner pauses the
source, and ``on_drain`` (below ``LOW_WATER``) resumes it.  A slow client therefore holds
at most about ``HIGH_WATER`` bytes of a response in the proxy, not the whole body: the
rest waits in the backend's socket buffers, and TCP flow control slows the backend.

**Non-blocking TLS.**  A TLS record is decrypted whole, so the TLS layer can need a
*read* to complete a ``send`` or a *write* to complete a ``recv`` (a key update, a
renegotiation in TLS 1.2).  Python says so with ``SSLWantReadError`` and
``SSLWantWriteError``, and the stream waits for that event instead.  Two traps:

* ``recv`` can raise ``SSLWantReadError`` although the selector said readable: the
  bytes that arrived were only part of a record.  That is "nothing yet", not an error.
* a record can hold more than one ``recv`` returns; the rest is decrypted and held in
  the TLS object (``pending()``), where no selector can see it.  So the stream reads
  again while ``pending()`` says bytes are there, and ``resume_reading`` tries a read at
  once instead of waiting for an event that may never come.

A send that OpenSSL could not finish must be retried with the same bytes (it may
already have written some of them as records): the buffer only ever grows at its end
and is sent from its front, so the retry always starts with the same bytes.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Callable

from proxy.errors import ReadError, WriteError
from proxy.eventloop.loop import READ, WRITE, EventLoop
from proxy.transport import RECV_SIZE, close_quietly, send_close_notify

HIGH_WATER = 256 * 1024  # pause the source above this much unsent (the threaded Outbox's FLUSH_AT)
LOW_WATER = 64 * 1024  # resume it below this
SEND_SIZE = 256 * 1024  # at most this much per send call


def _ignore(*args) -> None:
    pass


class Stream:
    """One connected, non-blocking socket (see the module docstring)."""

    def __init__(self, loop: EventLoop, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.out = bytearray()
        self.reading = False
        self.eof = False
        self.closed = False
        self.fin_sent = False
        self.received = 0
        self.sent = 0
        self.last_progress = time.monotonic()  # last byte taken by the peer: the send timeout's clock
        self.last_read = self.last_progress  # last byte received: the read timeouts' clock
        self.on_data: Callable[[bytes], None] = _ignore
        self.on_eof: Callable[[], None] = _ignore
        self.on_error: Callable[[Exception], None] = _ignore
        self.on_drain: Callable[[], None] = _ignore
        self.on_first_send: Callable[[], None] | None = None
        self._mask = 0  # what the selector watches for now
        self._flush_queued = False
        self._read_wants_write = False  # TLS: a recv waits for WRITE
        self._fin_queued = False  # shutdown_write: send FIN once ``out`` is empty
        self._write_wants_read = False  # TLS: a send waits for READ

    # ------------------------------------------------------------------ interest
    def _update(self) -> None:
        """Tell the selector what this stream waits for; a system call only when it changes."""
        if self.closed:
            return
        mask = 0
        if (self.reading and not self._read_wants_write) or self._write_wants_read:
            mask |= READ
        if (self.out and not self._write_wants_read) or self._read_wants_write:
            mask |= WRITE
        if mask != self._mask:
            self.loop.watch(self.sock, mask, self)
            self._mask = mask

    def handle_events(self, mask: int) -> None:
        if mask & WRITE:
            if self._read_wants_write:
                self._read_wants_write = False
                self._read()
            if self.out and not self.closed:
                self.flush()
        if mask & READ and not self.closed:
            if self._write_wants_read:
                self._write_wants_read = False
                self.flush()
            if self.reading and not self.closed:
                self._read()

    # ------------------------------------------------------------------ reading
    def resume_reading(self) -> None:
        if self.eof or self.closed:
            return
        if self.reading:
            # Already reading: ``_read`` drains ``pending()`` before it returns, so nothing
            # decrypted is waiting unseen.  (Trying a read anyway cost a kernel read and an
            # SSLWantReadError after about half the keep-alive responses at 1 connection.)
            return
        self.reading = True
        self._update()
        # Paused, TLS may have kept decrypted bytes no event will announce (see the
        # docstring): try one read now rather than wait.
        if self.tls:
            self.loop.call_soon(self._read)

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self._update()

    def _read(self) -> None:
        while self.reading and not self.closed:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return  # nothing yet (for TLS: only part of a record arrived)
            except ssl.SSLWantWriteError:
                self._read_wants_write = True
                self._update()
                return
            except OSError as error:  # a reset, a TLS alert, EOF inside TLS
                self.reading = False
                self._update()
                self.on_error(ReadError(str(error)))
                return
            if not data:
                self.reading = False
                self.eof = True
                self._update()
                self.on_eof()
                return
            self.received += len(data)
            self.last_read = time.monotonic()
            self.on_data(data)
            if not self.tls or not self.sock.pending():
                return  # a plain socket with more to read is readable again: the selector will say so

    # ------------------------------------------------------------------ writing
    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer."""
        return len(self.out)

    def write(self, data) -> None:
        if self.closed or not data:
            return
        if not self.out:
            self.last_progress = time.monotonic()  # the send clock starts with the first byte waiting
        self.out += data
        if not self._flush_queued:
            self._flush_queued = True
            self.loop.call_soon(self._queued_flush)

    def discard_from(self, mark: int) -> None:
        """Drop what was written after ``mark`` (a response head that never left, replaced by an error).

        Only valid while ``on_first_send`` has not fired: until then nothing was sent
        since ``mark`` was taken, so the bytes before it are exactly as they were."""
        del self.out[mark:]

    def _queued_flush(self) -> None:
        self._flush_queued = False
        if self.out and not self.closed:
            self.flush()

    def flush(self) -> None:
        """Send as much of ``out`` as the socket takes now; the rest waits for WRITE."""
        if self.on_first_send is not None:
            first, self.on_first_send = self.on_first_send, None
            first()
        out = self.out
        while out and not self.closed:
            try:
                # A bytearray is passed as it is (no copy) unless it is larger than one send.
                sent = self.sock.send(out if len(out) <= SEND_SIZE else out[:SEND_SIZE])
            except (BlockingIOError, ssl.SSLWantWriteError):
                break
            except ssl.SSLWantReadError:
                self._write_wants_read = True
                break
            except OSError as error:  # EPIPE, ECONNRESET: the peer is gone
                out.clear()
                self._update()
                self.on_error(WriteError(str(error)))
                return
            if sent == len(out):
                out.clear()
            else:
                del out[:sent]
            self.sent += sent
            self.last_progress = time.monotonic()
        if not out and self._fin_queued:
            self._send_fin()
        self._update()
        if len(out) < LOW_WATER:
            self.on_drain()

    def shutdown_write(self) -> None:
        """Half-close: FIN after what is buffered ("no more bytes from me"); reading goes on.

        Plain TCP only: a TLS stream ends with close_notify instead (``close``)."""
        self._fin_queued = True
        if not self.out:
            self._send_fin()

    def _send_fin(self) -> None:
        self._fin_queued = False
        self.fin_sent = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone; its own direction will notice

    # ------------------------------------------------------------------ closing
    def close(self, *, notify: bool = True) -> None:
        """Close now; ``notify``: send close_notify first (TLS), never after an aborted response."""
        if self.closed:
            return
        self.closed = True
        self.reading = False
        self.loop.forget(self.sock)
        if notify:
            send_close_notify(self.sock)
        close_quietly(self.sock)
        self.out = bytearray()
        # The owner holds the stream and the stream holds the owner's methods: break the
        # cycle, so the connection's objects go when the owner lets go of the stream, not
        # at the garbage collector's next full pass (proxy/eventloop/loop.py, "Garbage").
        self.on_data = self.on_eof = self.on_error = self.on_drain = _ignore
        self.on_first_send = None
