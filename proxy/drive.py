"""The one drive loop: ask a sans-IO reader for an event, read from the socket when it needs data.

Every parser in this project (HTTP requests, HTTP responses, the ClientHello) has the
same shape, borrowed from h11 and httpcore::

    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.feed(sock.recv(...))   # or feed_eof() when the peer closed
            continue
        return event

``next_event`` below is that loop, once, with the two kinds of time limit a proxy
needs: a per-read ``timeout`` (how long one ``recv`` may wait) and an overall
``deadline`` (how long the whole head may take, so a client sending one byte every
few seconds, the *slowloris* attack, cannot hold a thread forever).

Every socket in the proxy has a timeout, kept one of two ways:

* **Python's** (``settimeout``): the socket is non-blocking and Python polls before
  every ``recv``/``send``.  TLS sockets must use this one: Python's ssl module
  retries a read or write that the kernel timed out, for ever.
* **The kernel's** (``kernel_timeouts``): a blocking socket with ``SO_RCVTIMEO`` and
  ``SO_SNDTIMEO``, so each ``recv``/``send`` is one system call instead of two.  The
  plain-HTTP backend connections use it; an expired wait surfaces as
  ``BlockingIOError`` (EAGAIN), which ``recv_some`` and ``send_all`` turn back
  into ``TimeoutError`` so callers see one kind of timeout.

Changing either costs a system call, so ``set_timeout`` only changes it when the
value differs (strace showed two ioctls per keep-alive request before it did).

The module also holds the small socket chores every connection ends with
(``send_close_notify``, ``close_quietly``), shared by the server and the pool.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import weakref
from typing import Any

# Reads of up to 64 KiB: large enough for few system calls (FACTS: 64-256 KB), and below
# glibc's 128 KiB mmap threshold.  ``recv(256 KiB)`` allocates its bytes object with mmap,
# shrinks it with mremap and frees it with munmap: three extra system calls (and page
# faults) for every read, which strace showed on every keep-alive request.
RECV_SIZE = 64 * 1024


# The kernel timeout of each kernel-timed socket (a socket has no room for attributes).
_KERNEL_TIMEOUTS: "weakref.WeakKeyDictionary[socket.socket, float]" = weakref.WeakKeyDictionary()


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, with ``seconds`` as the kernel's limit on every recv and send."""
    sock.settimeout(None)
    _set_kernel_timeout(sock, seconds)


def _set_kernel_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))  # struct timeval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    _KERNEL_TIMEOUTS[sock] = seconds


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Give ``sock`` this timeout, only when it changes: each change is a system call."""
    current = sock.gettimeout()
    if current is None and (kernel := _KERNEL_TIMEOUTS.get(sock)) is not None:
        if kernel != seconds:
            _set_kernel_timeout(sock, seconds)
    elif current != seconds:
        sock.settimeout(seconds)


class Deadline(TimeoutError):
    """The overall deadline passed (distinct from one slow read)."""


def recv_some(sock: socket.socket, timeout: float, deadline: float | None = None) -> bytes:
    """One ``recv`` that waits at most ``timeout`` seconds and never past ``deadline``."""
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline("deadline passed")
        if remaining < timeout:
            set_timeout(sock, remaining)  # a shrinking deadline: always a new value
            try:
                return sock.recv(RECV_SIZE)
            except (TimeoutError, BlockingIOError):
                raise Deadline("deadline passed") from None
    set_timeout(sock, timeout)
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:  # a kernel-timed socket's SO_RCVTIMEO expired
        raise TimeoutError("timed out") from None


def send_all(sock: socket.socket, data) -> None:
    """``sock.sendall(data)``; a kernel-timed socket's expired SO_SNDTIMEO is a TimeoutError too."""
    try:
        sock.sendall(data)
    except BlockingIOError:
        raise TimeoutError("timed out") from None


def next_event(reader: Any, sock: socket.socket, need_data: object, *, timeout: float,
               deadline: float | None = None, on_bytes=None) -> Any:
    """Drive ``reader`` until it produces an event other than ``need_data``.

    ``on_bytes(n)`` is called with the size of every read (byte counters, and
    knowing whether a client sent anything at all before a timeout).
    """
    while True:
        event = reader.next_event()
        if event is not need_data:
            return event
        data = recv_some(sock, timeout, deadline)
        if data:
            if on_bytes is not None:
                on_bytes(len(data))
            reader.feed(data)
        else:
            reader.feed_eof()


def send_close_notify(sock: ssl.SSLSocket) -> None:
    """End the TLS stream with close_notify, "no more data" (RFC 8446 §6.1).

    Without it a client cannot tell a close-delimited body that ended from one cut
    short (a truncation attack; RFC 9112 §9.8), so it is sent after a clean end and
    never after an aborted response.  Non-blocking: OpenSSL writes the alert and
    returns at "want read"; the peer's own close_notify is not waited for.
    """
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
