"""The transport: one socket as the protocol code sees it, and every speed trick in one place.

Theory of operation
-------------------
The protocol code (``proxy.drive``, ``proxy.modes``) asks for very little of a socket::

    transport.recv(timeout, deadline)   bytes, b"" at EOF      (ReadTimeout, Deadline, ReadError)
    transport.recv_idle(until)          the first bytes of the next request, waiting idle
    transport.send(data, timeout)       all of it              (WriteTimeout, WriteError)
    transport.copy_to(outbox, count)    a body piece straight from this socket to another
    Outbox(transport, timeout)          small writes coalesced into few large ones

and every failure comes back as one of the neutral errors of ``proxy.errors``
(``ReadTimeout``, ``WriteError``, ...): whether the client or the backend was slow is
for the caller to say, once, where it reads.  Behind that interface sit the tricks a
student can skip on a first reading.  Each one was measured on this project's machine
(strace, perf, ``tlsproxy bench``; see the README's "Measured" section):

=============================  ======================================================
trick                          what it buys
=============================  ======================================================
64 KiB reads (``RECV_SIZE``)   below glibc's 128 KiB mmap threshold: ``recv(256 KiB)``
                               cost an mmap, mremap and munmap on every read
timeouts set only on change    each ``settimeout`` is an ioctl; strace showed two per
                               keep-alive request before
kernel-kept timeouts           a plain backend socket is blocking with SO_RCVTIMEO /
                               SO_SNDTIMEO: each recv/send is one system call, not a
                               poll() and then the call (11 -> 5 calls per request).
                               Not for TLS: Python's ssl module retries a read the
                               kernel timed out, for ever.  An expired wait surfaces as
                               EAGAIN (``BlockingIOError``), turned into ``ReadTimeout``
idle waits in resting slices   between requests the client socket keeps the timeout it
                               already has; the idle keep-alive wait is a deadline over
                               reads of that length, so no timeout changes per request
coalesced writes (``Outbox``)  a small head and body go out as one TLS record and one
                               system call; flushed at ``FLUSH_AT`` and before every
                               wait, so nothing is held back while the proxy waits
direct copy (``copy_to``)      a large Content-Length body moves through one reused
                               buffer, socket to socket, instead of through the
                               parser's buffer and a ``Data`` event per piece (bulk
                               downloads: 0.73x nginx before, about parity after)
=============================  ======================================================

The module also holds the small chores every connection ends with (``close_notify``,
``close``).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from proxy.errors import BadGateway, Deadline, GatewayTimeout, ReadError, ReadTimeout, WriteError, WriteTimeout

RECV_SIZE = 64 * 1024  # FACTS: 64-256 KiB reads are fast; and below the mmap threshold
FLUSH_AT = 256 * 1024  # coalesce pieces into one write up to this size
DIRECT_COPY_AT = 64 * 1024  # a Content-Length body with at least this much to come is copied directly
COPY_SIZE = 256 * 1024  # the direct copy's buffer: made once per connection, reused


class Transport:
    """One connected socket (plain or TLS); see the module docstring."""

    __slots__ = ("sock", "timeout", "kernel_timed", "received", "sent", "_copy_buffer")

    def __init__(self, sock: socket.socket, *, kernel_timeout: float | None = None) -> None:
        self.sock = sock
        self.received = 0  # bytes read, for the access log and the status page
        self.sent = 0
        self._copy_buffer: bytearray | None = None
        self.kernel_timed = kernel_timeout is not None
        if self.kernel_timed:
            self._set_kernel_timeout(kernel_timeout)  # blocking: the kernel keeps the limit
        else:
            self.timeout = sock.gettimeout()

    # ------------------------------------------------------------------ timeouts
    def set_timeout(self, seconds: float) -> None:
        """Give the socket this timeout, only when it changes: each change is a system call."""
        if seconds != self.timeout:
            if self.kernel_timed:
                self._set_kernel_timeout(seconds)
            else:
                self.sock.settimeout(seconds)
                self.timeout = seconds

    def _set_kernel_timeout(self, seconds: float) -> None:
        kernel_timeouts(self.sock, seconds)
        self.timeout = seconds

    # ------------------------------------------------------------------ reading
    def recv(self, timeout: float, deadline: float | None = None) -> bytes:
        """One read of at most ``timeout`` seconds, never past ``deadline``; b"" at EOF."""
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline("deadline passed")
            if remaining < timeout:
                self.set_timeout(remaining)  # a shrinking deadline: always a new value
                try:
                    data = self.sock.recv(RECV_SIZE)
                except (TimeoutError, BlockingIOError):
                    raise Deadline("deadline passed") from None
                except OSError as error:
                    raise ReadError(str(error)) from None
                self.received += len(data)
                return data
        self.set_timeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO expired
            raise ReadTimeout(f"no byte within {timeout:g}s") from None
        except OSError as error:  # a reset, a TLS alert, EOF inside TLS (ssl.SSLError is an OSError)
            raise ReadError(str(error)) from None
        self.received += len(data)
        return data

    def recv_idle(self, until: float) -> bytes:
        """The first bytes of the next message, waiting at most until ``until``.

        Between keep-alive requests the socket keeps the timeout it already has
        (changing it costs a system call each way, every request), so the idle wait
        is a loop of reads of that length, the last one cut to the deadline.
        """
        resting = self.timeout or 1.0
        while True:
            try:
                return self.recv(resting, until)
            except Deadline:
                raise
            except ReadTimeout:
                continue  # one read's limit, not the idle limit: wait on

    # ------------------------------------------------------------------ writing
    def send(self, data, timeout: float) -> None:
        """Send all of ``data`` within ``timeout`` seconds per write."""
        self.set_timeout(timeout)
        try:
            self.sock.sendall(data)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_SNDTIMEO expired
            raise WriteTimeout(f"the peer took no bytes for {timeout:g}s") from None
        except OSError as error:
            raise WriteError(str(error)) from None
        self.sent += len(data)

    # ------------------------------------------------------------------ the direct copy
    def copy_to(self, outbox: "Outbox", count: int, timeout: float) -> int:
        """Read up to ``count`` body bytes into a reused buffer and send them on; 0 at EOF."""
        if self._copy_buffer is None:
            self._copy_buffer = bytearray(COPY_SIZE)
        buffer = self._copy_buffer
        self.set_timeout(timeout)
        try:
            got = self.sock.recv_into(buffer, min(len(buffer), count))
        except (TimeoutError, BlockingIOError):
            raise ReadTimeout(f"no byte within {timeout:g}s") from None
        except OSError as error:
            raise ReadError(str(error)) from None
        self.received += got
        if got:
            outbox.send_now(memoryview(buffer)[:got])
        return got

    # ------------------------------------------------------------------ closing
    def close_notify(self) -> None:
        """End the TLS stream with close_notify, "no more data" (RFC 8446 §6.1).

        Without it a client cannot tell a close-delimited body that ended from one cut
        short (a truncation attack; RFC 9112 §9.8), so it is sent after a clean end and
        never after an aborted response.  Non-blocking: OpenSSL writes the alert and
        returns at "want read"; the peer's own close_notify is not waited for.
        """
        send_close_notify(self.sock)

    def close(self) -> None:
        close_quietly(self.sock)


class Outbox:
    """Bytes on their way to one peer, coalesced into few large writes (see the module docstring).

    ``on_first_send`` is called once, just before the first bytes leave: the exchange
    uses it to mark the moment the client has part of the response.
    """

    __slots__ = ("transport", "timeout", "pending", "on_first_send")

    def __init__(self, transport: Transport, timeout: float, on_first_send=None) -> None:
        self.transport = transport
        self.timeout = timeout
        self.pending = bytearray()
        self.on_first_send = on_first_send

    def write(self, data) -> None:
        self.pending += data
        if len(self.pending) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send_now(self.pending)
            self.pending = bytearray()

    def send_now(self, data) -> None:
        """Send ``data`` after whatever is pending (the direct copy's path)."""
        if self.on_first_send is not None:
            first, self.on_first_send = self.on_first_send, None
            first()
        if self.pending and data is not self.pending:
            pending, self.pending = self.pending, bytearray()
            self.transport.send(pending, self.timeout)
        self.transport.send(data, self.timeout)


def open_connection(host: str, port: int, *, timeout: float, name: str,
                    source_address: str | None = None) -> socket.socket:
    """A TCP connection to ``host:port`` (from ``source_address``), with Nagle's algorithm off.

    Every outgoing connection of the proxy starts here: the pool's, passthrough's and
    CONNECT's.  A failure is the gateway's error, naming ``name``: 504 when nothing
    answered in ``timeout`` seconds, 502 when the connection was refused or unroutable.
    TCP_NODELAY because small requests and responses must not wait for Nagle's
    algorithm (FACTS: ~40 ms stalls with delayed ACKs).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source_address, 0) if source_address else None)
    except TimeoutError:
        raise GatewayTimeout(f"{name} did not accept a connection in {timeout:g}s") from None
    except OSError as error:
        raise BadGateway(f"cannot connect to {name}: {error.strerror or error}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, with ``seconds`` as the kernel's limit on every recv, send and accept."""
    sock.settimeout(None)
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))  # struct timeval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def send_close_notify(sock: socket.socket) -> None:
    """close_notify on a TLS socket (see ``Transport.close_notify``); a plain socket is left alone."""
    if not isinstance(sock, ssl.SSLSocket):
        return
    try:
        sock.setblocking(False)
        sock.unwrap()
    except (OSError, ValueError):  # ssl.SSLWantReadError (the usual case), or already shut
        pass


def close_quietly(sock: socket.socket) -> None:
    """Close without ceremony (for TLS, call ``send_close_notify`` first when due)."""
    try:
        sock.close()
    except OSError:
        pass


def wake(sock: socket.socket) -> None:
    """Make a thread blocked in ``recv``/``accept`` on ``sock`` return at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
