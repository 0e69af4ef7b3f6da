"""Passthrough: route a TLS connection by its SNI without decrypting it (setup 5).

Theory of operation
-------------------
The proxy has no certificate and no key for the names it serves.  It reads the
client's first flight, only as far as the ClientHello, decides by the server_name
(SNI, RFC 6066 §3) which pool gets the connection, and from then on copies bytes::

    client ── ClientHello ──▶ proxy: parse (proxy.tls.clienthello), route_sni(name)
                                 │ no route ──▶ alert unrecognized_name(112), close
                                 │ malformed ─▶ close
                                 ▼
                              connect to a backend of the pool (next one if refused)
                              replay every byte read so far ──▶ origin
                              relay both ways (proxy.relay) until both sides close

The TLS session runs from the client to the origin: the origin's certificate is the
one the client verifies, and the proxy never sees a plaintext byte.  What it does
see, and logs, is what any observer on the path sees: the SNI and the ALPN list.
That is also the limit of this setup: no Host or path routing, no X-Forwarded-For
(the origin sees the proxy's address), no HTTP-level errors (a failure can only be a
closed connection or a TLS alert).  nginx does the same with ``stream`` +
``ssl_preread`` (``tlsproxy export nginx`` writes it).

The whole ClientHello must arrive within ``timeouts.handshake`` seconds: a client that
dribbles one byte at a time must not hold a connection thread for ever (slowloris).
"""

from __future__ import annotations

import socket
import time

from proxy.drive import next_event
from proxy.errors import ReadError, ReadTimeout, ServiceUnavailable, TLSParseError, UpstreamError
from proxy.lifecycle import ConnEvent
from proxy.relay import close_gracefully, relay
from proxy.tls.clienthello import NEED_DATA, ClientHello, ClientHelloReader, unrecognized_name_alert
from proxy.transport import Transport, open_connection


def handle(server, conn) -> None:
    """Serve one passthrough connection (the server did no TLS handshake)."""
    started = time.monotonic()
    conn.life.go(ConnEvent.BYTES)  # reading the ClientHello: shutdown may cut it at once
    reader = ClientHelloReader()
    try:
        hello = read_client_hello(Transport(conn.sock), reader, timeout=server.timeouts.handshake)
    except ReadTimeout:
        log(server, conn, started, f"rejected: no complete ClientHello within {server.timeouts.handshake:g}s")
        return
    except ReadError:
        log(server, conn, started, f"client left before its ClientHello ({len(reader.raw)} bytes)")
        return
    except TLSParseError as error:
        if reader.eof:
            log(server, conn, started, f"client left before its ClientHello ({len(reader.raw)} bytes)")
        else:
            log(server, conn, started, f"rejected: malformed ClientHello: {error}")
        return
    conn.server_name = hello.server_name
    pool_name = server.router.route_sni(hello.server_name)
    if pool_name is None:
        refuse_unknown_name(conn.sock)
        log(server, conn, started, "rejected: no route for this name: alert unrecognized_name", hello)
        return
    balancer = server.balancers[pool_name]
    try:
        backend, origin = connect_to_pool(server, balancer)
    except ServiceUnavailable as error:
        log(server, conn, started, f"rejected: {error}", hello)
        return
    conn.life.go(ConnEvent.TUNNEL)
    try:
        result = relay(conn.sock, origin, idle_timeout=server.timeouts.tunnel_idle, first_to_origin=reader.raw)
    finally:
        origin.close()
        balancer.release(backend)
    server.stats.add(bytes_in=result.client_to_origin, bytes_out=result.origin_to_client)
    log(server, conn, started, f"up={result.client_to_origin} down={result.origin_to_client} ended={result.ended!r}",
        hello, backend=backend.name)


def read_client_hello(client: Transport, reader: ClientHelloReader, *, timeout: float) -> ClientHello:
    """The one drive loop (``proxy.drive``) for the ClientHello reader, under one deadline.

    A client that hangs up mid-hello makes the reader raise ``TLSParseError`` with
    ``reader.eof`` set: it is gone, not malformed.
    """
    return next_event(reader, client, timeout=timeout, deadline=time.monotonic() + timeout, need_data=NEED_DATA)


def refuse_unknown_name(sock: socket.socket) -> None:
    """RFC 6066 §3: abort with a fatal unrecognized_name alert, then close cleanly."""
    try:
        sock.settimeout(5.0)
        sock.sendall(unrecognized_name_alert())
    except OSError:
        return
    close_gracefully(sock)


def connect_to_pool(server, balancer):
    """A connected socket to a backend of the pool, trying each available one once.

    Nothing has been sent to the client yet, so a refused connection can go to the
    next backend (nginx stream's ``proxy_next_upstream on``).  Each failure counts
    against the backend's passive health, as in terminate mode.  Raises
    ServiceUnavailable when no backend is left.
    """
    tried, failures = [], []
    while True:
        try:
            backend = balancer.pick(exclude=tuple(tried))
        except ServiceUnavailable as error:
            raise ServiceUnavailable("; ".join([str(error), *failures])) from None
        try:
            origin = open_connection(backend.host, backend.port, timeout=server.timeouts.backend_connect,
                                     name=backend.name)
        except UpstreamError as error:
            balancer.report_failure(backend, str(error))
            balancer.release(backend)
            tried.append(backend)
            failures.append(str(error))
            continue
        balancer.report_success(backend)
        return backend, origin


def log(server, conn, started: float, outcome: str, hello: ClientHello | None = None, *, backend: str = "-") -> None:
    sni = (hello.server_name or "-") if hello else "-"
    alpn = (",".join(hello.alpn) or "-") if hello else "-"
    seconds = time.monotonic() - started
    server.access_log.write(f"{conn.client} passthrough sni={sni} alpn={alpn} backend={backend} "
                            f"time={seconds * 1000:.1f}ms {outcome}")
