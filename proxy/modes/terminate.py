"""Terminate (and re-encrypt): serve HTTP on a decrypted client connection.

Theory of operation
-------------------
By the time ``handle`` runs, the server has completed the TLS handshake: the socket
reads and writes plaintext.  This module is the HTTP half of a reverse proxy, one
request at a time, in order (pipelined requests wait their turn).  Each request is one
*exchange*, and the code below follows its phases (``proxy.exchange``) in order::

    READ_HEAD       read_request_head      the two clocks: idle keep-alive, then the head
    ROUTE           Exchange.choose_backend Host and path -> pool -> backend
    CONNECT         Exchange.connect        a kept-alive connection from the pool
    SEND_REQUEST    Exchange.send_request   rewritten head, then the body (pump_body)
    AWAIT_RESPONSE  Exchange.read_response_head   1xx relayed; the final head
    RESPOND         Exchange.relay_response the rewritten head, then the body (pump_body)

When something fails, the read site says *who* failed (a ``ProtocolError`` from the
client is its 4xx, from the backend a 502; a timeout is the client's 408 or the
backend's 504), and ``HTTPConnectionHandler.recover`` looks up what that becomes in
this phase (``proxy.exchange.ON_FAILURE``): answer, linger, retry, abort or close.

The *re-encrypt* setup is the same code: when the chosen backend is ``https://``,
the pool's connection is itself a TLS socket, so the request is encrypted again.

Three promises a proxy must keep, and where they are kept:

* **Never forward an ambiguous request.**  The sans-IO reader (``proxy.http1``)
  decides the body length per RFC 9112 §6.3 and raises on anything ambiguous; the
  error becomes a 4xx and the connection closes, because after a framing error no
  later byte can be trusted (request smuggling).
* **Never pass a cut body off as whole.**  If the backend fails mid-body, the
  client connection is closed without the final chunk or the missing bytes
  (``Recovery.ABORT``), so the client sees a truncated message, not a complete wrong one.
* **Never answer the wrong client.**  A backend connection returns to the pool only
  after its response was read to the exact end; one with leftover bytes is closed.
"""

from __future__ import annotations

import time

from proxy import http1
from proxy.drive import next_event, pump_body
from proxy.errors import (BadGateway, ClientError, ClientGone, ClientProtocolError, GatewayTimeout, InvalidUpstreamResponse, ProtocolError, ProxyError, ReadError,
                          ReadTimeout, RequestTimeout, StaleConnection, TransportError, UpstreamError, WriteError,
                          WriteTimeout)
from proxy.exchange import ON_FAILURE, ExchangePhase, Failure, Phase, Recovery, Step, retryable
from proxy import exchange as rules  # the decisions every engine shares (the second half of proxy.exchange)
from proxy.exchange import failure_of, via
from proxy.http1.framing import BodyKind
from proxy.lifecycle import ConnEvent
from proxy.transport import Outbox, Transport

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY, CHUNKED = BodyKind.NONE, BodyKind.CHUNKED


def handle(server, conn) -> None:
    """Serve requests on ``conn`` until either side closes or a limit is reached."""
    if conn.alpn == "h2":  # ALPN chose HTTP/2 (RFC 9113 §3.2): many streams on this connection
        from proxy.modes import h2

        return h2.handle(server, conn)
    HTTPConnectionHandler(server, conn, proto="https" if conn.tls_version else "http").run()


class HTTPConnectionHandler:
    """One client connection's request loop (also used by the forward proxy)."""

    def __init__(self, server, conn, *, proto: str, allow_absolute_form: bool = False, allow_connect: bool = False):
        self.server = server
        self.conn = conn
        self.client = Transport(conn.sock)
        self.proto = proto
        self.hsts = rules.hsts_for(server.config.hsts, proto=proto)  # RFC 6797: over TLS only
        self.timeouts = server.timeouts
        self.reader = http1.RequestReader(server.limits.http, allow_absolute_form=allow_absolute_form,
                                          allow_connect=allow_connect)
        self.counted_in = self.counted_out = 0  # client bytes already added to the stats

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        life = self.conn.life
        while not self.server.draining or self.conn.requests == 0:
            request = self.read_request_head()
            if request is None:
                return
            life.go(ConnEvent.REQUEST)
            self.conn.requests += 1
            if not self.serve(request):
                return
            life.go(ConnEvent.KEEP_ALIVE)

    # ------------------------------------------------------------------ READ_HEAD
    def read_request_head(self) -> http1.Request | None:
        """The next request head, or None when the client is gone, idle too long, or was answered.

        Two clocks, as nginx has them: between requests a kept-alive connection may sit
        idle for ``idle_keepalive`` seconds (``keepalive_timeout``); but from the first
        byte of a head, the whole head must arrive within ``header_read`` seconds
        (``client_header_timeout``).  A per-read timeout alone would let a client send
        one byte every few seconds for ever (slowloris).
        """
        reader = self.reader
        timeouts = self.timeouts
        try:
            try:
                event = reader.next_event()  # a pipelined head may be here already
                if event is http1.NEED_DATA:
                    if self.conn.requests and not reader.buffered:  # kept alive: wait idle first
                        data = self.client.recv_idle(until=time.monotonic() + timeouts.idle_keepalive)
                        reader.feed(data) if data else reader.feed_eof()
                    self.conn.life.go(ConnEvent.BYTES)
                    deadline = time.monotonic() + timeouts.header_read
                    event = next_event(reader, self.client, timeout=timeouts.header_read, deadline=deadline)
                else:
                    self.conn.life.go(ConnEvent.BYTES)
            except ProtocolError as error:
                raise ClientProtocolError.of(error) from None
            except ReadTimeout:
                if reader.buffered:  # part of a head arrived, too slowly: say so (nginx answers 408 too)
                    raise RequestTimeout(f"request head not received within {timeouts.header_read:g}s") from None
                raise ClientGone("idle") from None  # an idle connection is closed without a word
            except ReadError:
                raise ClientGone() from None
        except (ClientError, ClientGone) as error:
            recovery = ON_FAILURE[Phase.READ_HEAD, failure_of(error)]
            if recovery is not Recovery.CLOSE:
                self.log_error(error)
                # Bytes past a bad head mean the client may still be sending.  Not after a
                # 408: that client is slow, and lingering would hand a slowloris more time.
                still_sending = rules.client_may_still_send(error, reader.buffered)
                self.answer(error, recovery, client_may_be_sending=still_sending)
            return None
        if event is http1.ConnectionClosed:
            return None
        if event.framing.kind is NO_BODY:
            reader.next_event()  # a request without a body: its EndOfMessage is already here
        return event

    # ------------------------------------------------------------------ one exchange
    def serve(self, request: http1.Request) -> bool:
        """Proxy one request; True if the connection may carry another."""
        started = time.perf_counter()
        exchange = self.new_exchange(request)
        try:
            exchange.run()
        except (ProxyError, ClientGone, StaleConnection) as error:
            return self.recover(exchange, error)
        finally:
            exchange.log(time.perf_counter() - started)
        return exchange.keep_alive

    def new_exchange(self, request: http1.Request) -> "Exchange":
        """Hook: the forward proxy returns its own Exchange (a destination, not a pool)."""
        return Exchange(self, request)

    def recover(self, exchange: "Exchange", error: BaseException) -> bool:
        """Do what ``ON_FAILURE`` says for ``error`` in the exchange's phase; True to keep the connection."""
        recovery = exchange.phase.recovery(failure_of(error))
        exchange.outcome = str(error) or type(error).__name__
        if recovery is Recovery.CLOSE:
            exchange.outcome = "client-gone"
            return False
        if recovery is Recovery.ABORT:
            exchange.outcome = f"aborted: {error}"
            self.conn.aborted = True  # close without close_notify: the client must see the cut
            return False
        # ANSWER or LINGER (a RETRY that was not allowed has become an answer already)
        exchange.status = error.status
        plan = rules.after_answer(recovery, error, request_done=exchange.request_done)
        if plan == "keep":
            self.send_error(error)
            return True
        self.answer(error, recovery, client_may_be_sending=plan == "linger")
        return False

    def answer(self, error: ProxyError, recovery: Recovery, *, client_may_be_sending: bool) -> None:
        """Send the error, then close: lingering first if the client may still be sending."""
        self.send_error(error)
        if client_may_be_sending:
            self.conn.life.go(ConnEvent.LINGER)
            self.linger()

    def send_error(self, error: ProxyError) -> None:
        try:
            self.client.send(rules.error_response(error, hsts=self.hsts), self.timeouts.send)
        except TransportError:
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
                data = self.client.recv(idle, deadline)
                if not data:
                    return
                received += len(data)
        except TransportError:
            return

    # ------------------------------------------------------------------ bookkeeping
    def count_request(self, status: int, *, tunnel_in: int = 0, tunnel_out: int = 0) -> None:
        """Add a finished request, and the client bytes moved since the last, to the server's stats."""
        client = self.client
        self.server.stats.count_request(status, client.received - self.counted_in + tunnel_in,
                                        client.sent - self.counted_out + tunnel_out)
        self.counted_in, self.counted_out = client.received, client.sent

    def log_error(self, error: ProxyError) -> None:
        self.server.access_log.write(rules.error_line(self.conn.client, error, self.conn.tls_summary()))
        self.server.stats.statuses[error.status] += 1

    def client_send(self, data) -> None:
        """Send straight to the client (interim responses, CONNECT's 200): a failure means it is gone."""
        try:
            self.client.send(data, self.timeouts.send)
        except TransportError:
            raise ClientGone() from None


class Exchange:
    """One request and its response, from head to last byte (see ``proxy.exchange``)."""

    def __init__(self, handler: HTTPConnectionHandler, request: http1.Request):
        self.handler = handler
        self.server = handler.server
        self.request = request
        self.phase = ExchangePhase(Phase.READ_HEAD)
        self.phase.go(Step.HEAD)  # the handler read the head: the exchange starts at ROUTE
        self.status = 0
        self.response_bytes = 0
        self.backend = None
        self.pool_name = None
        self.outcome = ""
        self.request_done = request.framing.kind is NO_BODY
        self.keep_alive = False

    def run(self) -> None:
        """The phases in order; a stale pooled connection sends the exchange back to CONNECT once."""
        phase = self.phase
        balancer, backend = self.choose_backend()
        self.backend = backend
        phase.go(Step.BACKEND)
        try:
            head = self.upstream_head()
            fresh = False
            while True:
                conn = self.connect(balancer, backend, fresh=fresh)
                phase.go(Step.CONNECTED)
                try:
                    self.send_request(conn, head)
                    phase.go(Step.SENT)
                    response = self.read_response_head(conn)
                except StaleConnection as failure:
                    conn.close()
                    may_retry = not fresh and retryable(self.request.method, has_body=self.request.framing.kind
                                                        is not NO_BODY, reused_connection=conn.reused)
                    if phase.recovery(Failure.BACKEND_STALE, retryable=may_retry) is Recovery.RETRY:
                        phase.go(Step.RETRY)
                        fresh = True
                        continue
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

    # ------------------------------------------------------------------ ROUTE
    def choose_backend(self):
        """Hook: where this request goes, as (balancer, backend): a routed pool's pick.

        The forward proxy overrides it with the destination named in the request
        (``proxy.modes.forward``); ``balancer.release(backend)`` always follows."""
        self.pool_name = self.route()
        balancer = self.server.balancers[self.pool_name]
        return balancer, balancer.pick()

    def route(self) -> str:
        return rules.route(self.server.router, self.request, request_done=self.request_done)

    # ------------------------------------------------------------------ CONNECT
    def connect(self, balancer, backend, *, fresh: bool):
        try:
            return self.server.backend_pool.acquire(backend, fresh=fresh, server_name=self.sni_for_backend())
        except UpstreamError as error:
            balancer.report_failure(backend, str(error))
            raise

    def sni_for_backend(self) -> str | None:
        return rules.sni_for_backend(self.server.pools_by_name[self.pool_name], self.request)

    # ------------------------------------------------------------------ SEND_REQUEST
    def upstream_head(self) -> bytes:
        return rules.upstream_head(self.request, client_ip=self.handler.conn.address[0], proto=self.handler.proto)

    def send_request(self, conn, head: bytes) -> None:
        """Send the head, then stream the body from the client as it arrives."""
        request = self.request
        handler = self.handler
        to_backend = Outbox(conn.transport, self.server.timeouts.backend_read)
        to_backend.write(head)
        try:
            if request.framing.kind is NO_BODY:
                to_backend.flush()
                return
            if request.expect_continue:
                handler.client_send(CONTINUE)
            pump_body(handler.reader, handler.client, self.server.timeouts.body_read, to_backend,
                      chunked=request.framing.kind is CHUNKED, headers=request.headers)
        # Reading the client:
        except ProtocolError as error:
            raise ClientProtocolError.of(error) from None
        except ReadTimeout:
            raise RequestTimeout(f"request body stalled for {self.server.timeouts.body_read:g}s") from None
        except ReadError:
            raise ClientGone() from None
        # Writing to the backend:
        except WriteTimeout:
            raise GatewayTimeout(f"backend {self.backend.name} stopped reading the request") from None
        except WriteError as error:
            raise StaleConnection(str(error)) from None
        self.request_done = True

    # ------------------------------------------------------------------ AWAIT_RESPONSE
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
                self.phase.go(Step.INTERIM)
                continue
            return event

    def relay_interim(self, conn, response: http1.Response) -> None:
        """RFC 9110 §15.2: a proxy forwards 1xx responses (except to HTTP/1.0 clients)."""
        end = self.backend_event(conn)
        assert isinstance(end, http1.EndOfMessage)
        if self.request.version == "HTTP/1.1":
            out, _ = http1.prepare_downstream_response(response, client_version="HTTP/1.1",
                                                       request_method=self.request.method, via=via(response.version))
            self.handler.client_send(http1.serialize_response_head(out))
        conn.reader.expect_response_to(self.request.method)

    def backend_event(self, conn, *, before_head: bool = False):
        """The next event of the response head, read from the backend, its failures mapped."""
        timeout = self.server.timeouts.backend_read
        try:
            event = next_event(conn.reader, conn.transport, timeout=timeout)
        except ReadTimeout:
            raise GatewayTimeout(f"backend {self.backend.name} did not answer within {timeout:g}s") from None
        except (ProtocolError, ReadError) as error:
            raise rules.backend_read_failure(error, self.backend.name, before_head=before_head,
                                             reused=conn.reused) from None
        if event is http1.ConnectionClosed and before_head:
            raise StaleConnection("closed before responding")
        return event

    # ------------------------------------------------------------------ RESPOND
    def relay_response(self, conn, response: http1.Response) -> None:
        handler = self.handler
        request = self.request
        server = self.server
        try:
            out, body_mode = http1.prepare_downstream_response(response, client_version=request.version,
                                                               request_method=request.method, via=via(response.version),
                                                               hsts=handler.hsts)
        except UpstreamError:
            conn.close()
            raise
        client_keep_alive = rules.client_keep_alive(
            request, request_done=self.request_done, body_mode=body_mode, draining=server.draining,
            requests=handler.conn.requests, max_requests=server.limits.max_requests_per_connection)
        if not client_keep_alive:
            out.headers.set("Connection", "close")
        self.status = response.status
        to_client = Outbox(handler.client, server.timeouts.send, on_first_send=self.responding)
        to_client.write(http1.serialize_response_head(out))
        timeout = server.timeouts.backend_read
        try:
            self.response_bytes = pump_body(conn.reader, conn.transport, timeout, to_client,
                                            chunked=body_mode == "chunked", headers=response.headers)
        except (ProtocolError, ReadError, ReadTimeout) as error:  # reading the backend
            raise self.body_read_failure(conn, error, timeout) from None
        # Writing to the client:
        except (WriteTimeout, WriteError):
            conn.close()
            raise ClientGone() from None
        self.phase.go(Step.END)
        self.release_backend(conn, response)
        self.keep_alive = client_keep_alive

    def body_read_failure(self, conn, error: Exception, timeout: float) -> ProxyError:
        """The backend failed while its body was relayed (shared with HTTP/2): its connection is
        closed, and the error to raise is returned: 504 if it stalled, else ``backend_read_failure``'s."""
        conn.close()
        if isinstance(error, ReadTimeout):
            return GatewayTimeout(f"backend {self.backend.name} stalled mid-body for {timeout:g}s")
        return rules.backend_read_failure(error, self.backend.name, before_head=False, reused=conn.reused)

    def release_backend(self, conn, response: http1.Response) -> None:
        """The response was read to its end: give the connection back, or close it (shared with HTTP/2)."""
        # Leftover bytes after the response mean the backend sent more than it framed:
        # that connection can never be trusted with another request.
        leftover = conn.reader.take_buffered()
        reusable = rules.backend_reusable(response, leftover)
        if reusable:
            self.server.backend_pool.remember_session(conn)
        self.server.backend_pool.release(conn, reusable=reusable)

    def responding(self) -> None:
        """The first byte of the response is leaving: from now on a failure can only abort."""
        self.phase.go(Step.FIRST_BYTE)

    # ------------------------------------------------------------------ logging
    def log(self, seconds: float) -> None:
        handler = self.handler
        request = self.request
        status = self.status or 0
        handler.count_request(status)
        if not self.server.access_log.enabled:
            return  # `--access-log off`: do not even build the line
        backend = self.backend.name if self.backend else "-"
        self.server.access_log.write(rules.access_line(handler.conn.client, request, status, self.response_bytes,
                                                       backend, handler.conn.tls_summary(), seconds, self.outcome))

