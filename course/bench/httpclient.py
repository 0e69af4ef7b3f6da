"""The load generator's HTTP/1.1 client: one connection, plain, TLS, or through CONNECT.

Theory of operation
-------------------
A benchmark client must be cheap, predictable and honest about failures, so this is
a deliberately small client rather than ``http.client`` (which reads a head line
by line through a buffered file, costing the client CPU the benchmark then cannot
spend on load) and rather than the proxy's own ``proxy.http1`` (the client should be
an independent implementation, as the origin is, so a parser bug cannot hide by
being on both ends)::

    open_connection(endpoint)
        TCP connect ──(endpoint.proxy?)──▶ "CONNECT host:port" ──▶ 200
                    ──(endpoint.tls?)────▶ TLS handshake (SNI, session= to resume)
        ──▶ Connection
    Connection.request("GET", "/bytes/1k")  ──▶ (status, body bytes)

Responses are framed by Content-Length, chunked coding, or the end of the
connection (RFC 9112 §6.3); bodies are counted, never kept: a 20 MB download goes
through one 256 KB buffer (``recv_into``: Python's ssl moves 1.6-2.2 GB/s per core
with 64-256 KB reads and noticeably less with 16 KB, FACTS.md).  Anything unexpected
raises ``RequestFailed`` with a short ``kind`` the load generator counts.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

PIECE = 256 * 1024  # read size and upload write size
MAX_HEAD = 64 * 1024  # a response head larger than this is an error, not a benchmark
USER_AGENT = "tlsproxy-bench"
_UPLOAD = memoryview(b"u" * PIECE)  # upload bodies are slices of this one buffer


class RequestFailed(Exception):
    """A request did not complete; ``kind`` names the failure for the error counts."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect.

    ``address`` is the TCP destination (the origin, the reverse proxy, or, with
    ``proxy`` set, the CONNECT destination); ``host`` goes in the Host header and,
    with ``tls``, in the SNI and the certificate check.
    """

    address: tuple[str, int]
    host: str
    tls: ssl.SSLContext | None = None
    proxy: tuple[str, int] | None = None  # a forward proxy to CONNECT through
    timeout: float = 10.0


def open_connection(endpoint: Endpoint, session: ssl.SSLSession | None = None) -> Connection:
    """A ready connection: TCP, then CONNECT if through a proxy, then TLS if asked."""
    first_hop = endpoint.proxy or endpoint.address
    try:
        sock = socket.create_connection(first_hop, timeout=endpoint.timeout)
    except OSError as error:
        raise RequestFailed("connect", str(error)) from None
    # Nagle's algorithm holds a small write until the previous one is acknowledged, and
    # the peer delays its ACK by up to ~40 ms hoping to piggyback it: a request head
    # written in two pieces (or a CONNECT, then a ClientHello) would wait 40 ms each
    # time (FACTS.md).  TCP_NODELAY sends every write at once.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if endpoint.proxy:
            _connect_tunnel(sock, endpoint.address)
        if endpoint.tls is not None:
            try:
                sock = endpoint.tls.wrap_socket(sock, server_hostname=endpoint.host, session=session)
            except (ssl.SSLError, ssl.CertificateError) as error:
                raise RequestFailed("tls-handshake", str(error)) from None
    except (RequestFailed, OSError) as error:
        sock.close()
        if isinstance(error, RequestFailed):
            raise
        raise RequestFailed("connect", str(error)) from None
    return Connection(sock, endpoint.host)


def _connect_tunnel(sock: socket.socket, destination: tuple[str, int]) -> None:
    """Ask a forward proxy for a tunnel (RFC 9110 §9.3.6); return when it says 2xx."""
    host, port = destination
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = bytearray()
    # Byte-exact: read only up to the end of the proxy's head; what follows belongs
    # to the tunnel (the origin's TLS).  A 2xx CONNECT response has no body (§9.3.6).
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise RequestFailed("connect-tunnel", "proxy closed before answering CONNECT")
        head += byte
        if len(head) > MAX_HEAD:
            raise RequestFailed("connect-tunnel", "CONNECT response head too large")
    status = head.split(b" ", 2)[1:2]
    if not status or not status[0].startswith(b"2"):
        raise RequestFailed("connect-tunnel", head.split(b"\r\n", 1)[0].decode(errors="replace"))


class Connection:
    """One kept-alive connection; ``request`` may be called until ``closed``."""

    def __init__(self, sock: socket.socket, host: str):
        self.sock = sock
        self.host = host
        self.buffer = bytearray()  # received, not yet consumed
        self.scratch = bytearray(PIECE)
        self.closed = False
        self.session: ssl.SSLSession | None = None  # kept at close: an SSLSocket forgets it then
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def tls(self) -> ssl.SSLSocket | None:
        return self.sock if isinstance(self.sock, ssl.SSLSocket) else None

    def request(self, method: str, path: str, *, body_size: int = 0, close: bool = False) -> tuple[int, int]:
        """Send one request, read the whole response; (status, body length)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"User-Agent: {USER_AGENT}"]
        if body_size or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {body_size}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            self._send(head, body_size)
            status, length, keep_alive = self._read_response(method)
        except (OSError, ssl.SSLError) as error:  # TimeoutError is an OSError
            self.close()
            kind = "timeout" if isinstance(error, TimeoutError) else "io"
            raise RequestFailed(kind, str(error)) from None
        except RequestFailed:
            self.close()
            raise
        if not keep_alive or close:
            self.close()
        return status, length

    # ------------------------------------------------------------------ sending
    def _send(self, head: bytes, body_size: int) -> None:
        if body_size <= PIECE - len(head):  # small: head and body in one write, one TLS record
            self.sock.sendall(head + bytes(_UPLOAD[:body_size]))
            self.bytes_out += len(head) + body_size
            return
        self.sock.sendall(head)
        remaining = body_size
        while remaining:
            piece = _UPLOAD[: min(PIECE, remaining)]
            self.sock.sendall(piece)
            remaining -= len(piece)
        self.bytes_out += len(head) + body_size

    # ------------------------------------------------------------------ receiving
    def _fill(self) -> None:
        got = self.sock.recv_into(self.scratch)
        if not got:
            raise RequestFailed("closed", "connection closed by the server")
        self.bytes_in += got
        self.buffer += memoryview(self.scratch)[:got]

    def _read_response(self, method: str) -> tuple[int, int, bool]:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD:
                raise RequestFailed("bad-response", "response head too large")
            self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *field_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise RequestFailed("bad-response", f"status line {status_line[:60]!r}")
        status = int(parts[1])
        fields = {}
        for line in field_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        keep_alive = "close" not in fields.get("connection", "") and parts[0] == "HTTP/1.1"
        # RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304; then chunked; then
        # Content-Length; otherwise the body runs to the end of the connection.
        if method == "HEAD" or status < 200 or status in (204, 304):
            return status, 0, keep_alive
        if "chunked" in fields.get("transfer-encoding", ""):
            return status, self._read_chunked(), keep_alive
        if "content-length" in fields:
            if not fields["content-length"].isdigit():
                raise RequestFailed("bad-response", "invalid Content-Length")
            return status, self._read_exactly(int(fields["content-length"])), keep_alive
        return status, self._read_to_close(), False

    def _read_exactly(self, length: int) -> int:
        """Consume ``length`` body bytes: what is buffered, then straight reads (no copies)."""
        taken = min(length, len(self.buffer))
        del self.buffer[:taken]
        remaining = length - taken
        view = memoryview(self.scratch)
        while remaining:
            got = self.sock.recv_into(view[: min(PIECE, remaining)])
            if not got:
                raise RequestFailed("truncated", f"body ended {remaining} bytes early")
            self.bytes_in += got
            remaining -= got
        return length

    def _read_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise RequestFailed("bad-response", "chunk line too long")
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _read_chunked(self) -> int:
        total = 0
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise RequestFailed("bad-response", f"chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line():  # trailer fields, up to the empty line
                    pass
                return total
            total += self._read_exactly(size)
            if self._read_line():
                raise RequestFailed("bad-response", "chunk not followed by CRLF")

    def _read_to_close(self) -> int:
        total = len(self.buffer)
        self.buffer.clear()
        while got := self.sock.recv_into(self.scratch):
            self.bytes_in += got
            total += got
        return total

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.tls is not None:
            # TLS 1.3 tickets arrive after the handshake, so the session is complete only
            # now that the response was read; take it before close() drops the SSL object.
            self.session = self.sock.session
        try:
            self.sock.close()
        except OSError:
            pass
