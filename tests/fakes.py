"""Misbehaving peers for fault tests: raw socket backends that fail on cue, and a raw client.

Theory of operation
-------------------
``course.origin`` is a well-behaved server built on ``http.server``; it cannot send
a response longer than its Content-Length or reset a connection halfway through a
body.  The fault tests need a backend that does exactly that, on a real socket, so
``FakeBackend`` is a bare TCP server on ``127.0.0.1:0``: every accepted connection
runs a *handler*, a plain function of one ``FakeConnection``::

    def reset_mid_body(conn):
        conn.read_request()                      # recorded in backend.requests
        conn.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 1000\\r\\n\\r\\n" + b"x" * 10)
        conn.reset()                             # RST, not FIN (SO_LINGER 0)

    with FakeBackend(reset_mid_body) as backend:   # backend.url -> the proxy's pool
        ...
    assert len(backend.requests) == 1              # what the backend really received

``refused_port()`` and ``unaccepting_listener()`` make the two connect faults
(refused, and a connect that never completes: a listener whose accept queue is
full, so the kernel drops the SYN) without leaving loopback.

The client side (``RawTLSClient``, ``RawTCPClient``) reads responses with h11, an HTTP parser
independent of the proxy's own, and reports *how* the connection ended: a TLS
``close_notify``, an EOF without one (truncation, RFC 9112 §9.8), or a reset.
Everything is bounded: every socket has a timeout, every thread is joined.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

READ_TIMEOUT = 5.0


# --------------------------------------------------------------------------- backends
class FakeConnection:
    """One accepted connection of a ``FakeBackend``, as its handler sees it."""

    def __init__(self, backend: "FakeBackend", sock: socket.socket, index: int):
        self.backend = backend
        self.sock = sock
        self.index = index  # 0 for the backend's first connection, 1 for the next ...
        self.buffer = b""
        sock.settimeout(READ_TIMEOUT)

    def read_request(self) -> bytes | None:
        """Read one request (head, and a Content-Length or chunked body); None on EOF.

        The proxy is trusted to frame what it sends, so this reader is simple; the
        bytes are recorded in ``backend.requests`` before the handler sees them.
        """
        head_end = self._fill_until(lambda b: b.find(b"\r\n\r\n"))
        if head_end < 0:
            return None
        lower = self.buffer[: head_end + 4].lower()
        body_end = head_end + 4
        if b"\r\ntransfer-encoding: chunked" in lower:
            # The last chunk: "0" at the start of a line, then trailers and an empty line.
            body_end = self._fill_until(lambda b: _last_chunk_end(b, head_end + 2))
        elif b"\r\ncontent-length:" in lower:
            start = lower.index(b"\r\ncontent-length:") + 17
            end = head_end + 4 + int(lower[start: lower.index(b"\r\n", start)])
            body_end = self._fill_until(lambda b: end if len(b) >= end else -1)
        if body_end < 0:
            return None  # closed in the middle of the body (recorded as it was)
        request, self.buffer = self.buffer[:body_end], self.buffer[body_end:]
        self.backend.record(request)
        return request

    def _fill_until(self, find: Callable[[bytes], int]) -> int:
        while (at := find(self.buffer)) < 0:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                if self.buffer:
                    self.backend.record(self.buffer)  # a request cut short: still "received"
                    self.buffer = b""
                return -1
            self.buffer += data
        return at

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER on, timeout 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hold(self, seconds: float = READ_TIMEOUT) -> None:
        """Keep the connection open, saying nothing, until the backend stops or ``seconds`` pass."""
        self.backend.stopping.wait(seconds)

    def serve_ok(self, body: bytes = b"ok") -> bool:
        """Answer one request with a keep-alive 200; False if the peer closed instead."""
        if self.read_request() is None:
            return False
        self.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True


def _last_chunk_end(buffer: bytes, start: int) -> int:
    last = buffer.find(b"\r\n0\r\n", start)
    if last < 0:
        return -1
    end = buffer.find(b"\r\n\r\n", last + 3)
    return end + 4 if end >= 0 else -1


class FakeBackend:
    """A raw TCP server whose connections each run ``handler(FakeConnection)``."""

    def __init__(self, handler: Callable[[FakeConnection], None], *, name: str = "fake"):
        self.handler = handler
        self.name = name
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.settimeout(0.02)  # how soon stop() is noticed
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.requests: list[bytes] = []  # every request read, in arrival order
        self.connections = 0
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self.accept_thread = threading.Thread(target=self._accept_loop, name=f"fake-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, request: bytes) -> None:
        with self.lock:
            self.requests.append(request)

    def start(self) -> "FakeBackend":
        self.accept_thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.accept_thread.join(5)
        self.listener.close()
        with self.lock:
            socks, threads = list(self.socks), list(self.threads)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> "FakeBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                index = self.connections
                self.connections += 1
                self.socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, index), daemon=True,
                                      name=f"fake-{self.name}-{index}")
            with self.lock:
                self.threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            self.handler(FakeConnection(self, sock, index))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def refused_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused (RST)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def unaccepting_listener() -> Iterator[int]:
    """A listener that never accepts, its accept queue full: a new connect() hangs.

    ``listen(0)`` leaves room for one finished handshake in Linux's accept queue;
    once that is taken by a connection nobody accepts, the kernel drops further
    SYNs (counted as ListenOverflows), so a client's connect() times out, the way a
    saturated or firewalled server behaves, all on loopback.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                filler.close()
                break
            fillers.append(filler)
        else:
            raise RuntimeError("the accept queue never filled up")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------------- the client side
@dataclass
class ReceivedResponse:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; last value wins
    body: bytes = b""
    complete: bool = False  # h11 saw the end of the message (length, last-chunk, or clean close)
    interim: list[int] = field(default_factory=list)  # 1xx statuses before it
    error: str = ""  # why h11 stopped early, if it did


def client_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


class RawClient:
    """A client that sends raw bytes and reads responses with h11 (see ``RawTLSClient``)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)
        # None while open; then "close_notify" (a clean TLS close), "eof" (TLS closed
        # without close_notify), "fin" (plain TCP close), "reset", "timeout" or a TLS error.
        self.end: str | None = None
        self.received = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        """Half-close: no more bytes from us, the response may still come."""
        self.sock.shutdown(socket.SHUT_WR)

    def _recv(self) -> bytes:
        if self.end is not None:
            return b""
        try:
            data = self.sock.recv(65536)
        except ssl.SSLEOFError:
            self.end = "eof"
            return b""
        except ssl.SSLZeroReturnError:  # close_notify, after we had sent ours (close_write)
            self.end = "close_notify"
            return b""
        except TimeoutError:
            self.end = "timeout"
            return b""
        except (ConnectionResetError, BrokenPipeError):
            self.end = "reset"
            return b""
        except ssl.SSLError as error:  # e.g. an alert
            self.end = f"tls error: {error}"
            return b""
        if not data:
            self.end = "close_notify" if isinstance(self.sock, (ssl.SSLSocket, MemoryTLS)) else "fin"
        self.received += data
        return data

    def read_response(self, method: str = "GET") -> ReceivedResponse:
        """The next response (to a request with ``method``, sent with ``send``), read with h11.

        h11 is told of a matching request (it needs the method to frame a HEAD
        response); h11 only speaks HTTP/1.1, which reads a response to an HTTP/1.0
        request the same way.
        """
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        out = ReceivedResponse()
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                out.error = str(error)
                break
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv())
                continue
            if isinstance(event, h11.InformationalResponse):
                out.interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                out.status = event.status_code
                out.headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.complete = True
                break
            else:  # ConnectionClosed or PAUSED
                out.error = type(event).__name__
                break
        out.body = bytes(body)
        return out

    def read_until(self, ending: bytes) -> bytes:
        """Read until everything received so far ends with ``ending`` (or the peer stops)."""
        while not self.received.endswith(ending) and self.end is None:
            self._recv()
        return self.received

    def read_until_closed(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Everything the peer sends until it closes (or ``timeout``); sets ``end``."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        data = b""
        while self.end is None:
            if time.monotonic() > deadline:
                self.end = "timeout"
                break
            data += self._recv()
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RawTCPClient(RawClient):
    """Plain TCP (the forward proxy's listener)."""

    def __init__(self, port: int, *, timeout: float = READ_TIMEOUT):
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=timeout))


class MemoryTLS:
    """A TLS client connection driven through memory buffers (``ssl.SSLObject`` over two
    ``MemoryBIO``s), with the few socket methods ``RawClient`` calls.

    Why not an ``SSLSocket``: its ``unwrap()`` calls OpenSSL's ``SSL_shutdown`` twice, the
    second time reading from the socket; a response that arrives between the two calls
    (the proxy runs in this process and answers as soon as it sees our close_notify) is
    then an error, APPLICATION_DATA_AFTER_CLOSE_NOTIFY, and the response is lost. Here
    OpenSSL only ever reads what ``recv`` handed it, so a half-close writes our
    close_notify and nothing else.
    """

    def __init__(self, raw: socket.socket, context: ssl.SSLContext, server_name: str):
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLError:
                self._flush()  # our alert (e.g. bad_certificate) goes out, as SSLSocket's would
                raise
        self._flush()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.raw.sendall(self.outgoing.read())

    def _fill(self) -> None:
        data = self.raw.recv(65536)  # TimeoutError and ConnectionResetError reach the caller
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()  # OpenSSL then says whether close_notify came first

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv(self, size: int) -> bytes:
        """Like ``SSLSocket.recv`` with ``suppress_ragged_eofs=False``: b"" on the peer's
        close_notify (SSLZeroReturnError once ours went too), SSLEOFError on a bare EOF."""
        while True:
            try:
                data = self.tls.read(size)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            self._flush()  # a read may have produced output (e.g. a key update's answer)
            return data

    def close_write(self) -> None:
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:  # the second SSL_shutdown found nothing buffered: expected
            pass
        self._flush()

    def version(self) -> str | None:
        return self.tls.version()

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def fileno(self) -> int:  # for select(): bytes OpenSSL already holds are not counted
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


class RawTLSClient(RawClient):
    """TLS, where an EOF without close_notify is reported, not turned into an empty
    read, so ``end`` tells a clean close from a cut (see ``MemoryTLS``)."""

    def __init__(self, port: int, ca: str, server_name: str = "www.example.test", *, timeout: float = READ_TIMEOUT,
                 context: ssl.SSLContext | None = None, source: str | None = None):
        # ``source``: another loopback address to connect from (127.0.0.2: another client, as the proxy counts)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        context = context or client_context(ca)
        try:
            super().__init__(MemoryTLS(raw, context, server_name))
        except BaseException:
            raw.close()
            raise

    def close_write(self) -> None:
        """Send TLS close_notify (our half-close) without waiting for the peer's."""
        self.sock.close_write()


def self_signed_localhost(directory: Path) -> Path:
    """A self-signed ECDSA certificate for "localhost" and its key, in one PEM file (for bare TLS tests)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / "localhost.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path
