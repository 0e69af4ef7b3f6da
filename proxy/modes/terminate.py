"""Terminate (and re-encrypt): serve HTTP on a decrypted client connection.

Theory of operation
-------------------
By the time ``handle`` runs, the server has completed the TLS handshake: the socket
reads and writes plaintext.  This module is the HTTP half of a reverse proxy, one
request at a time, in order (pipelined requests wait their turn)::

    read request head ──▶ route (Host, path) ──▶ pick backend ──▶ borrow connection
        ──▶ send rewritten head, stream body ──▶ read response head
        ──▶ send rewritten head, stream body ──▶ return connection ──▶ next request

The *re-encrypt* setup is the same code: when the chosen backend is ``https://``,
the pool's connection is itself a TLS socket, so the request is encrypted again.

Three promises a proxy must keep, and where they are kept:

* **Never forward an ambiguous request.**  The sans-IO reader (``proxy.http1``)
  decides the body length per RFC 9112 §6.3 and raises on anything ambiguous; the
  error becomes a 4xx and the connection closes, because after a framing error no
  later byte can be trusted (request smuggling).
* **Never pass a cut body off as whole.**  If the backend fails mid-body, the
  client connection is closed without the final chunk or the missing bytes, so the
  client sees a truncated message, not a complete wrong one.
* **Never answer the wrong client.**  A backend connection returns to the pool only
  after its response was read to the exact end; one with leftover bytes is closed.
"""

from __future__ import annotations

import ssl
import time

from proxy import http1
from proxy.drive import Deadline, next_event, recv_some, send_all, set_timeout
from proxy.errors import (BadGateway, GatewayTimeout, InvalidUpstreamResponse, NotFound,
                          ProtocolError, ProxyError, RequestTimeout, UpstreamError, render_error)
from proxy.routing import normalize_host

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 §9.2.2
FLUSH_AT = 256 * 1024  # coalesce small pieces into one TLS write up to this size
DIRECT_COPY_AT = 64 * 1024  # a Content-Length body with more to come is copied socket to socket
COPY_SIZE = 256 * 1024  # the direct copy's buffer: made once per connection, reused (no mmap per read)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def via(version: str) -> str:
    """RFC 9110 §7.6.3: Via names the protocol version of the message *received*."""
    return f"{version.removeprefix('HTTP/')} tlsproxy"


class AbortConnection(Exception):
    """The response was already under way when something failed: close, don't answer."""


class ClientGone(Exception):
    """The client closed or reset the connection."""


def handle(server, conn) -> None:
    """Serve requests on ``conn`` until either side closes or a limit is reached."""
    HTTPConnectionHandler(server, conn, proto="https" if conn.tls_version else "http").run()


class HTTPConnectionHandler:
    """One client connection's request loop (also used by the forward proxy)."""

    def __init__(self, server, conn, *, proto: str, allow_absolute_form: bool = False, allow_connect: bool = False):
        self.server = server
        self.conn = conn
        self.sock = conn.sock
        self.proto = proto
        self.timeouts = server.timeouts
        self.reader = http1.RequestReader(server.limits.http, allow_absolute_form=allow_absolute_form,
                                          allow_connect=allow_connect)
        self.bytes_in = 0
        self.bytes_out = 0
        self.copy_buffer: bytearray | None = None  # made on the first large download

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        while not self.server.draining or self.conn.requests == 0:
            self.conn.state = "idle"
            request = self.read_request_head()
            if request is None:
                return
            self.conn.state = "busy"
            self.conn.requests += 1
            if not self.serve(request):
                return

    def read_request_head(self) -> http1.Request | None:
        """The next request head, or None when the client is gone or too slow (answered).

        Two clocks, as nginx has them: between requests a kept-alive connection may
        sit idle for ``idle_keepalive`` seconds; but from the first byte of a head, the
        whole head must arrive within ``header_read`` seconds.  A per-read timeout
        alone would let a client send one byte every few seconds for ever (slowloris).

        The idle wait is a deadline too, waited out in reads of at most the send
        timeout: that is the timeout the socket keeps between requests, because
        switching it back and forth costs a system call each way, every request.
        """
        reader = self.reader
        header_read = self.timeouts.header_read
        deadline = idle_until = None
        if self.conn.requests == 0 or reader.buffered:  # a new connection, or a pipelined head
            deadline = time.monotonic() + header_read
        else:
            idle_until = time.monotonic() + self.timeouts.idle_keepalive
        try:
            while True:
                event = reader.next_event()
                if event is not http1.NEED_DATA:
                    break
                if deadline is None:
                    try:
                        data = recv_some(self.sock, self.timeouts.send, idle_until)
                    except Deadline:
                        raise  # the idle limit itself: handled below (closed, no answer)
                    except TimeoutError:
                        continue  # one read's limit, not the idle limit: wait on
                else:
                    data = recv_some(self.sock, header_read, deadline)
                if data:
                    self.bytes_in += len(data)
                    if deadline is None:
                        deadline = time.monotonic() + header_read
                    reader.feed(data)
                else:
                    reader.feed_eof()
        except (TimeoutError, Deadline):
            if reader.buffered:  # part of a head arrived, too slowly: say so (nginx answers 408 too)
                self.send_error(RequestTimeout(f"request head not received within {header_read:g}s"))
            return None
        except ProtocolError as error:
            self.send_error(error)
            self.log_error(error)
            if reader.buffered:  # the client sent more than the head: it may still be sending
                self.linger()
            return None
        except (OSError, ssl.SSLError):
            return None
        if event is http1.ConnectionClosed:
            return None
        if event.framing.kind == "none":
            reader.next_event()  # a request without a body: its EndOfMessage is already here
        return event

    # ------------------------------------------------------------------ one request
    def serve(self, request: http1.Request) -> bool:
        """Proxy one request; True if the connection may carry another."""
        started = time.perf_counter()
        exchange = self.new_exchange(request)
        try:
            exchange.forward()
        except ClientGone:
            exchange.outcome = "client-gone"
            return False
        except AbortConnection as error:
            exchange.outcome = f"aborted: {error}"
            self.conn.aborted = True  # close without close_notify: the client must see the cut
            return False
        except ProxyError as error:
            exchange.status = error.status
            exchange.outcome = str(error)
            if exchange.response_started:
                return False
            self.send_error(error)
            # After an error the unread rest of a request body would be parsed as the
            # next request: close unless the request was read to its end.
            if not exchange.request_done:
                self.linger()
            return not error.close and exchange.request_done
        finally:
            exchange.log(time.perf_counter() - started)
        return exchange.keep_alive

    def new_exchange(self, request: http1.Request) -> "Exchange":
        """Hook: the forward proxy returns its own Exchange (a destination, not a pool)."""
        return Exchange(self, request)

    def send_error(self, error: ProxyError) -> None:
        try:
            set_timeout(self.sock, self.timeouts.send)
            data = render_error(error)
            self.sock.sendall(data)
            self.bytes_out += len(data)
        except OSError:
            pass

    def linger(self, seconds: float = 2.0, limit: int = 1 << 20, idle: float = 0.2) -> None:
        """Read and discard what the client is still sending, briefly, before closing.

        Closing a socket with unread bytes makes the kernel answer with a reset, which
        can destroy the error response we just sent (a 413 to a client still uploading)
        before the client reads it.  nginx's ``lingering_close`` does the same, bounded
        by ``lingering_time``; here two seconds and 1 MiB at most, and it stops as soon
        as the client pauses for ``idle`` seconds (nginx's ``lingering_timeout``).
        """
        deadline = time.monotonic() + seconds
        received = 0
        try:
            while received < limit:
                data = recv_some(self.sock, idle, deadline)
                if not data:
                    return
                received += len(data)
        except (TimeoutError, OSError, ssl.SSLError):
            return

    def count_request(self, status: int) -> None:
        """Add a finished request, and the bytes moved since the last, to the server's stats."""
        self.server.stats.count_request(status, self.bytes_in, self.bytes_out)
        self.bytes_in = self.bytes_out = 0

    def log_error(self, error: ProxyError) -> None:
        self.server.access_log.write(f"{self.conn.client} \"-\" {error.status} rejected: {error} {self.conn.tls_summary()}")
        self.server.stats.statuses[error.status] += 1

    # ------------------------------------------------------------------ I/O helpers
    def client_send(self, data) -> None:
        try:
            set_timeout(self.sock, self.timeouts.send)
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            raise ClientGone() from None
        self.bytes_out += len(data)

    def client_event(self):
        """The next event of the request body (Data / EndOfMessage)."""
        def count(n: int) -> None:
            self.bytes_in += n

        try:
            event = next_event(self.reader, self.sock, http1.NEED_DATA, timeout=self.timeouts.body_read, on_bytes=count)
        except TimeoutError:
            raise RequestTimeout(f"request body stalled for {self.timeouts.body_read:g}s") from None
        except (OSError, ssl.SSLError):
            raise ClientGone() from None
        return event


class Exchange:
    """One request and its response, from head to last byte."""

    def __init__(self, handler: HTTPConnectionHandler, request: http1.Request):
        self.handler = handler
        self.server = handler.server
        self.request = request
        self.status = 0
        self.response_bytes = 0
        self.backend = None
        self.outcome = ""
        self.request_done = request.framing.kind == "none"
        self.response_started = False
        self.keep_alive = False

    # ------------------------------------------------------------------ routing
    def route(self) -> str:
        request = self.request
        host = request.headers.get("host")
        path = request.target.split("?", 1)[0]
        pool = self.server.router.route(host, path)
        if pool is None:
            raise NotFound(f"no route for host {normalize_host(host)!r} and path {path!r}", close=not self.request_done)
        return pool

    def upstream_head(self) -> bytes:
        request = self.request
        upstream = http1.prepare_upstream_request(request, client_ip=self.handler.conn.address[0],
                                                  proto=self.handler.proto, via=via(request.version))
        # The proxy answers "Expect: 100-continue" itself (as nginx does) once it has a
        # backend, so the origin never waits for a 100 it would not know to send.
        upstream.headers.remove("expect")
        return http1.serialize_request_head(upstream)

    # ------------------------------------------------------------------ the exchange
    def choose_backend(self):
        """Hook: where this request goes, as (balancer, backend): a routed pool's pick.

        The forward proxy overrides it with the destination named in the request
        (``proxy.modes.forward``); ``balancer.release(backend)`` always follows."""
        self.pool_name = self.route()
        balancer = self.server.balancers[self.pool_name]
        return balancer, balancer.pick()

    def forward(self) -> None:
        balancer, backend = self.choose_backend()
        self.backend = backend
        try:
            head = self.upstream_head()
            retryable = self.request.method in IDEMPOTENT and self.request.framing.kind == "none"
            for attempt in (1, 2):
                conn = self.connect(balancer, backend, fresh=attempt == 2)
                try:
                    self.send_request(conn, head)
                    response = self.read_response_head(conn)
                except _RetryableFailure as failure:
                    conn.close()
                    if attempt == 1 and conn.reused and retryable:
                        continue  # a stale pooled connection: once more on a fresh one
                    if not conn.reused:  # a fresh connection: the backend's fault, not a keep-alive race
                        balancer.report_failure(backend, str(failure))
                    raise BadGateway(f"backend {backend.name} closed the connection: {failure}") from None
                except GatewayTimeout as error:  # nginx counts timeouts as failures too (proxy_next_upstream)
                    conn.close()
                    balancer.report_failure(backend, str(error))
                    raise
                except BaseException:
                    conn.close()
                    raise
                break
            balancer.report_success(backend)
            self.relay_response(conn, response)
        finally:
            balancer.release(backend)

    def connect(self, balancer, backend, *, fresh: bool):
        try:
            return self.server.backend_pool.acquire(backend, fresh=fresh, server_name=self.sni_for_backend())
        except UpstreamError as error:
            balancer.report_failure(backend, str(error))
            raise

    def sni_for_backend(self) -> str | None:
        pool_cfg = self.server.pools_by_name[self.pool_name]
        if pool_cfg.tls.sni_from_host:
            return normalize_host(self.request.headers.get("host"))
        return None

    def send_request(self, conn, head: bytes) -> None:
        """Send the head, then stream the body from the client as it arrives."""
        request = self.request
        sock = conn.sock
        # (The pool opened it with the backend_read timeout on every read and write.)
        if request.framing.kind == "none":
            self.backend_send(sock, head)
            return
        if request.expect_continue:
            self.handler.client_send(CONTINUE)
        chunked = request.framing.kind == "chunked"
        reader = self.handler.reader
        pending = bytearray(head)
        while True:
            event = reader.next_event()
            if event is http1.NEED_DATA:  # send what we have before waiting for more
                if pending:
                    self.backend_send(sock, pending)
                    pending = bytearray()
                event = self.handler.client_event()
            if isinstance(event, http1.Data):
                pending += http1.encode_chunk(event.data) if chunked else event.data
                if len(pending) >= FLUSH_AT:
                    self.backend_send(sock, pending)
                    pending = bytearray()
            elif isinstance(event, http1.EndOfMessage):
                if chunked:
                    pending += http1.encode_last_chunk(event.trailers)
                self.backend_send(sock, pending)
                self.request_done = True
                return

    def backend_send(self, sock, data) -> None:
        try:
            send_all(sock, data)
        except TimeoutError:
            raise GatewayTimeout(f"backend {self.backend.name} stopped reading the request") from None
        except (OSError, ssl.SSLError) as error:
            raise _RetryableFailure(str(error)) from None

    def read_response_head(self, conn) -> http1.Response:
        reader = conn.reader
        reader.expect_response_to(self.request.method)
        while True:
            event = self.backend_event(conn, before_head=True)
            if not isinstance(event, http1.Response):
                raise InvalidUpstreamResponse(f"backend {self.backend.name} sent {type(event).__name__} before a response")
            if event.status == 101:  # the proxy strips Upgrade, so a switch was never asked for
                raise InvalidUpstreamResponse(f"backend {self.backend.name} switched protocols (101) unasked")
            if 100 <= event.status < 200:
                self.relay_interim(conn, event)
                continue
            return event

    def relay_interim(self, conn, response: http1.Response) -> None:
        """RFC 9110 §15.2: a proxy forwards 1xx responses (except to HTTP/1.0 clients)."""
        end = self.backend_event(conn)
        assert isinstance(end, http1.EndOfMessage)
        if response.status != 101 and self.request.version == "HTTP/1.1":
            out, _ = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                       request_method=self.request.method, via=via(response.version))
            self.handler.client_send(http1.serialize_response_head(out))
        conn.reader.expect_response_to(self.request.method)

    def backend_event(self, conn, *, before_head: bool = False):
        try:
            event = next_event(conn.reader, conn.sock, http1.NEED_DATA, timeout=self.server.timeouts.backend_read)
        except TimeoutError:
            raise GatewayTimeout(f"backend {self.backend.name} did not answer within "
                                 f"{self.server.timeouts.backend_read:g}s") from None
        except ProtocolError as error:
            if before_head and conn.reused and isinstance(error, http1.IncompleteMessage):
                raise _RetryableFailure(str(error)) from None
            raise InvalidUpstreamResponse(f"backend {self.backend.name} sent an invalid response: {error}") from None
        except (OSError, ssl.SSLError) as error:
            if before_head:
                raise _RetryableFailure(str(error)) from None
            raise
        if event is http1.ConnectionClosed and before_head:
            raise _RetryableFailure("closed before responding")
        return event

    def relay_response(self, conn, response: http1.Response) -> None:
        handler = self.handler
        request = self.request
        out, body_mode = http1.prepare_downstream_response(response, client_version=request.version,
                                                           request_method=request.method, via=via(response.version))
        client_keep_alive = (http1.client_keep_alive(request) and self.request_done and body_mode != "close"
                             and not self.server.draining
                             and handler.conn.requests < self.server.limits.max_requests_per_connection)
        if not client_keep_alive:
            out.headers.set("Connection", "close")
        self.status = response.status
        pending = bytearray(http1.serialize_response_head(out))
        chunked = body_mode == "chunked"
        reusable = response.keep_alive
        while True:
            try:
                event = conn.reader.next_event()
                if event is http1.NEED_DATA:
                    if pending:
                        self.flush(pending)
                        pending = bytearray()
                    if body_mode == "length" and (conn.reader.body_remaining() or 0) >= DIRECT_COPY_AT:
                        self.copy_body(conn)
                        continue
                    event = self.backend_event(conn)
            except ProxyError as error:
                conn.close()
                if isinstance(error, ProtocolError):  # the parser's error, but the *backend* broke HTTP
                    error = InvalidUpstreamResponse(f"backend {self.backend.name} sent an invalid response: {error}")
                if not self.response_started:
                    raise error from None
                raise AbortConnection(str(error)) from None
            except (OSError, ssl.SSLError) as error:
                conn.close()
                if not self.response_started and not pending:
                    raise BadGateway(f"backend {self.backend.name} failed mid-response: {error}") from None
                raise AbortConnection(f"backend {self.backend.name} failed mid-response: {error}") from None
            if isinstance(event, http1.Data):
                self.response_bytes += len(event.data)
                pending += http1.encode_chunk(event.data) if chunked else event.data
                if len(pending) >= FLUSH_AT:
                    self.flush(pending)
                    pending = bytearray()
            elif isinstance(event, http1.EndOfMessage):
                if chunked:
                    pending += http1.encode_last_chunk(event.trailers)
                self.flush(pending)
                break
            else:  # ConnectionClosed mid-message cannot happen: the reader raises IncompleteMessage
                conn.close()
                raise AbortConnection("backend closed mid-response")
        # Leftover bytes after the response mean the backend sent more than it framed:
        # that connection can never be trusted with another request.
        leftover = conn.reader.take_buffered()
        reusable = reusable and not leftover and response.framing.kind not in ("close", "tunnel")
        if reusable:
            self.server.backend_pool.remember_session(conn)
        self.server.backend_pool.release(conn, reusable=reusable)
        self.keep_alive = client_keep_alive

    def copy_body(self, conn) -> None:
        """The rest of a large Content-Length body, straight from backend to client.

        The fast path for downloads: one ``recv_into`` a reused buffer and one TLS
        write per piece, instead of copying every byte into and out of the parser's
        buffer.  The reader is told each count, so it still decides where the body
        ends, and a backend that closes early is still an incomplete message.
        """
        handler = self.handler
        if handler.copy_buffer is None:
            handler.copy_buffer = bytearray(COPY_SIZE)
        buffer = handler.copy_buffer
        view = memoryview(buffer)
        sock = conn.sock
        reader = conn.reader
        timeout = self.server.timeouts.backend_read
        while (remaining := reader.body_remaining()):
            try:
                count = sock.recv_into(buffer, min(len(buffer), remaining))
            except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's SO_RCVTIMEO expired
                raise GatewayTimeout(f"backend {self.backend.name} stalled mid-body for {timeout:g}s") from None
            if not count:
                raise http1.IncompleteMessage(f"backend closed with {remaining} body bytes missing")
            reader.body_received_directly(count)
            self.response_bytes += count
            self.flush(view[:count])

    def flush(self, pending: bytearray) -> None:
        self.response_started = True
        self.handler.client_send(pending)

    # ------------------------------------------------------------------ logging
    def log(self, seconds: float) -> None:
        handler = self.handler
        request = self.request
        status = self.status or 0
        handler.count_request(status)
        if not self.server.access_log.enabled:
            return  # `--access-log off`: do not even build the line
        backend = self.backend.name if self.backend else "-"
        note = f" error={self.outcome!r}" if self.outcome else ""
        self.server.access_log.write(
            f'{handler.conn.client} "{request.method} {request.target} {request.version}" {status} '
            f"{self.response_bytes} backend={backend} {handler.conn.tls_summary()} time={seconds * 1000:.1f}ms{note}"
        )


class _RetryableFailure(Exception):
    """The backend failed before any byte of the response arrived."""
