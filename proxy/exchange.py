"""One exchange, request and response, as a state machine: its phases and what a failure becomes.

Theory of operation
-------------------
A reverse proxy's whole job fits in one exchange: read a request, find it a backend,
send it there, bring the answer back.  What makes that hard is not the happy path but
the failures: at each step something different has already happened, so the same
error (the backend resets the connection, say) needs a different answer::

    READ_HEAD ──head──▶ ROUTE ──backend──▶ CONNECT ──connected──▶ SEND_REQUEST
                                              ▲                        │ sent
                                              └── retry (stale) ──┐    ▼
                                                               AWAIT_RESPONSE ⟲ 1xx
                                                                       │ first byte to the client
                                                                       ▼
                                                                    RESPOND ──end──▶ DONE

``TRANSITIONS`` is that picture as data, and ``ON_FAILURE`` is the table every proxy
carries in its head, here written down: for each phase and each kind of failure, what
the proxy does.  The line that matters most is between ``AWAIT_RESPONSE`` and
``RESPOND``: until the first byte of the response reaches the client, a failure can
still be answered with a clean ``502``; after it, the only honest thing left is to cut
the connection (``ABORT``: no close_notify, so the client sees a truncated message, never
a complete wrong one, RFC 9112 §9.8).

This module is sans-IO: it imports nothing that touches a socket.  The engine that
drives an exchange (``proxy.modes.terminate``, one thread per connection) moves it with
``ExchangePhase.go(event)`` and asks ``recovery(failure)`` what to do when something
fails; ``course.diagrams`` draws both tables.

The second half of the module holds the exchange's other decisions, the ones that do
not depend on how it is driven, so that every engine (``proxy.modes.terminate``, a
thread blocking in each phase; ``proxy.eventloop``, one thread woken by readiness
events) calls them instead of writing them again::

    decision                              function                 used in phase
    ------------------------------------  -----------------------  --------------
    which pool serves the request         route                    ROUTE
    the SNI a TLS backend is asked for    sni_for_backend          CONNECT
    the head sent to the backend          upstream_head, via       SEND_REQUEST
    how a body piece is forwarded         body_bytes               SEND_REQUEST, RESPOND
    what a backend read failure means     backend_read_failure     AWAIT_RESPONSE, RESPOND
    may the client send another request   client_keep_alive        RESPOND
    Strict-Transport-Security, or not     hsts_for                 RESPOND, any answer
    the bytes of an error answer          error_response           any
    may the backend connection be reused  backend_reusable         DONE
    which column of ON_FAILURE            failure_of               any
    keep, linger or close after an error  after_answer             any
    the access-log lines                  access_line, error_line  DONE

Values in, values out: nothing here touches a socket, a thread or a clock.
"""

from __future__ import annotations

from enum import Enum

from proxy import http1
from proxy.errors import (BadGateway, ClientError, ClientGone, InvalidUpstreamResponse, NotFound, ProtocolError,
                          ProxyError, ReadError, RequestTimeout, StaleConnection, render_error)
from proxy.http1.framing import BodyKind
from proxy.routing import normalize_host


class Phase(Enum):
    READ_HEAD = "reading the request head"
    ROUTE = "choosing a pool and a backend"
    CONNECT = "borrowing a connection to the backend"
    SEND_REQUEST = "sending the request head and streaming its body"
    AWAIT_RESPONSE = "waiting for the response: nothing of it has reached the client"
    RESPOND = "streaming the response: the client has part of it"
    DONE = "the exchange is complete"


class Step(Enum):
    """What moves an exchange from one phase to the next."""

    HEAD = "request head read"
    BACKEND = "backend chosen"
    CONNECTED = "connection borrowed"
    SENT = "request sent"
    INTERIM = "1xx relayed"
    RETRY = "stale connection: once more"
    FIRST_BYTE = "first byte to the client"
    END = "response complete"


TRANSITIONS: dict[tuple[Phase, Step], Phase] = {
    (Phase.READ_HEAD, Step.HEAD): Phase.ROUTE,
    (Phase.ROUTE, Step.BACKEND): Phase.CONNECT,
    (Phase.CONNECT, Step.CONNECTED): Phase.SEND_REQUEST,
    (Phase.SEND_REQUEST, Step.SENT): Phase.AWAIT_RESPONSE,
    (Phase.SEND_REQUEST, Step.RETRY): Phase.CONNECT,
    (Phase.AWAIT_RESPONSE, Step.INTERIM): Phase.AWAIT_RESPONSE,
    (Phase.AWAIT_RESPONSE, Step.RETRY): Phase.CONNECT,
    (Phase.AWAIT_RESPONSE, Step.FIRST_BYTE): Phase.RESPOND,
    (Phase.RESPOND, Step.END): Phase.DONE,
}


class Failure(Enum):
    """Who failed, and how: the four columns of ``ON_FAILURE`` (see ``proxy.errors``)."""

    CLIENT_BROKE = "the client broke HTTP or a limit (ClientError)"
    CLIENT_GONE = "the client closed, reset or went quiet (ClientGone)"
    BACKEND_FAILED = "the backend failed or broke HTTP (UpstreamError)"
    BACKEND_STALE = "a reused backend connection closed before answering (StaleConnection)"


class Recovery(Enum):
    ANSWER = "answer with the error's status; keep the connection if the request was read to its end"
    LINGER = "answer, then read and discard what the client still sends before closing"
    RETRY = "once more on a fresh backend connection (idempotent, no body); otherwise answer 502"
    ABORT = "close at once without close_notify: the client sees the response cut short"
    CLOSE = "close without a word: nobody is listening"


ANSWER, LINGER, RETRY, ABORT, CLOSE = Recovery
_ = None  # cannot happen: in that phase the proxy is not reading from that side

_BY_PHASE: dict[Phase, tuple[Recovery | None, ...]] = {
    #                      CLIENT_BROKE  CLIENT_GONE  BACKEND_FAILED  BACKEND_STALE
    Phase.READ_HEAD:      (LINGER,       CLOSE,       _,              _),
    Phase.ROUTE:          (ANSWER,       CLOSE,       ANSWER,         _),
    Phase.CONNECT:        (_,            CLOSE,       ANSWER,         _),
    Phase.SEND_REQUEST:   (LINGER,       CLOSE,       ANSWER,         RETRY),
    Phase.AWAIT_RESPONSE: (_,            CLOSE,       ANSWER,         RETRY),
    Phase.RESPOND:        (_,            CLOSE,       ABORT,          ABORT),
}

#: What a failure becomes, by phase and by who failed (the table above, as a lookup).
ON_FAILURE: dict[tuple[Phase, Failure], Recovery] = {
    (phase, failure): recovery
    for phase, row in _BY_PHASE.items()
    for failure, recovery in zip(Failure, row)
    if recovery is not None
}

#: RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.  Only
#: these, and only without a body, are retried: a POST may already have had its effect.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class ExchangePhase:
    """Where one exchange is; ``go`` follows ``TRANSITIONS`` and refuses anything else."""

    __slots__ = ("phase",)

    def __init__(self, phase: Phase = Phase.READ_HEAD) -> None:
        self.phase = phase

    def go(self, step: Step) -> Phase:
        try:
            self.phase = TRANSITIONS[self.phase, step]
        except KeyError:
            raise RuntimeError(f"an exchange cannot take {step.name} in {self.phase.name}") from None
        return self.phase

    def recovery(self, failure: Failure, *, retryable: bool = False) -> Recovery:
        """What to do about ``failure`` now (RETRY only when the request may be repeated)."""
        recovery = ON_FAILURE[self.phase, failure]
        if recovery is Recovery.RETRY and not retryable:
            return Recovery.ANSWER
        return recovery


def retryable(method: str, has_body: bool, reused_connection: bool) -> bool:
    """May this request go once more, on a fresh connection, after a stale one failed?"""
    return reused_connection and not has_body and method in IDEMPOTENT


# =========================================================================== the shared decisions
# --------------------------------------------------------------------------- ROUTE
def route(router, request: http1.Request, *, request_done: bool) -> str:
    """The pool for ``request`` (by Host and path), or NotFound (404).

    The 404 keeps the connection only if the request was read to its end: with a body
    still coming, the next "request" would start inside it.
    """
    host = request.headers.get("host")
    path = request.target.split("?", 1)[0]
    pool = router.route(host, path)
    if pool is None:
        raise NotFound(f"no route for host {normalize_host(host)!r} and path {path!r}", close=not request_done)
    return pool


def sni_for_backend(pool_config, request: http1.Request) -> str | None:
    """The server name to send to an https backend, when the pool sends the client's Host.

    None means "the pool's default" (``tls.server_name`` or the backend's host)."""
    if pool_config.tls.sni_from_host:
        return normalize_host(request.headers.get("host"))
    return None


# --------------------------------------------------------------------------- SEND_REQUEST
def via(version: str) -> str:
    """RFC 9110 §7.6.3: Via names the protocol version of the message *received*."""
    return f"{version.removeprefix('HTTP/')} tlsproxy"


def upstream_head(request: http1.Request, *, client_ip: str, proto: str) -> bytes:
    """The request head as the backend gets it (``http1.prepare_upstream_request``), in bytes."""
    upstream = http1.prepare_upstream_request(request, client_ip=client_ip, proto=proto, via=via(request.version))
    # The proxy answers "Expect: 100-continue" itself (as nginx does) once it has a
    # backend, so the origin never waits for a 100 it would not know to send.
    upstream.headers.remove("expect")
    return http1.serialize_request_head(upstream)


def body_bytes(event, *, chunked: bool, headers: http1.Headers | None) -> bytes:
    """What one body event becomes on the next hop (a ``Data`` or the ``EndOfMessage``).

    A chunked body is re-chunked, never copied raw (RFC 9112 §7.1: a chunk-size trick
    aimed at the next hop cannot pass), and trailers are filtered (RFC 9110 §6.5.1).
    ``proxy.drive.pump_body`` applies the same rules in the threaded engine."""
    if event.__class__ is http1.Data:
        return http1.encode_chunk(event.data) if chunked else event.data
    if chunked:
        return http1.encode_last_chunk(http1.prepare_trailers(event.trailers, headers))
    return b""


# --------------------------------------------------------------------------- reading the backend
def backend_read_failure(error: Exception, backend_name: str, *, before_head: bool, reused: bool) -> Exception:
    """What a failed read from the backend (``ReadError`` or ``ProtocolError``) is, as an exchange error.

    Before any byte of the response: a reused connection that closed or reset is
    *stale* (the backend's keep-alive timeout raced our request), which may be retried;
    after that it is the backend's failure (502)."""
    if isinstance(error, ProtocolError):
        if before_head and reused and isinstance(error, http1.IncompleteMessage):
            return StaleConnection(str(error))
        return InvalidUpstreamResponse.of(error, backend_name)
    if isinstance(error, ReadError) and before_head:
        return StaleConnection(str(error))
    return BadGateway(f"backend {backend_name} failed mid-response: {error}")


# --------------------------------------------------------------------------- RESPOND
def client_keep_alive(request: http1.Request, *, request_done: bool, body_mode: str, draining: bool,
                      requests: int, max_requests: int) -> bool:
    """May the client connection carry another request after this response?

    Not when the client said close (RFC 9112 §9.3), when its body was not read to the
    end (the next bytes would be inside it), when the response is close-delimited
    (RFC 9112 §6.3 rule 8), when the proxy is shutting down, or after
    ``max_requests_per_connection`` (nginx's ``keepalive_requests``)."""
    return (http1.client_keep_alive(request) and request_done and body_mode != "close"
            and not draining and requests < max_requests)


def hsts_for(hsts: str | None, *, proto: str) -> str | None:
    """The Strict-Transport-Security value a connection's responses carry, or None.

    Only over TLS: RFC 6797 §7.2, "An HSTS Host MUST NOT include the STS header field in
    HTTP responses conveyed over non-secure transport" (and §8.1: "If an HTTP response is
    received over insecure transport, the UA MUST ignore any present STS header field(s)":
    an attacker on a plain connection could otherwise pin a host, or unpin it with
    max-age=0).  Off unless configured (``[proxy] hsts``, ``--hsts``), as in nginx, which adds
    nothing by default: pinning a name to HTTPS for a year is the operator's decision."""
    return hsts if proto == "https" else None


def error_response(error: ProxyError, *, hsts: str | None = None) -> bytes:
    """``render_error``'s bytes, with Strict-Transport-Security on a TLS connection.

    The proxy's own answers (404, 502, 504, ...) carry it too: nginx's
    ``add_header Strict-Transport-Security "..." always``, where ``always`` (nginx 1.7.5)
    means "regardless of the response code"; without it nginx adds the field only to
    200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 (ngx_http_headers_module)."""
    data = render_error(error)
    if hsts is None:
        return data
    status_line = data.index(b"\r\n") + 2
    return b"%bStrict-Transport-Security: %b\r\n%b" % (data[:status_line], hsts.encode("latin-1"), data[status_line:])


def backend_reusable(response: http1.Response, leftover: bytes) -> bool:
    """May the backend connection carry another request?

    Only if its response was read to its exact end: leftover bytes mean the backend
    sent more than it framed, and the next client would get them (never answer the
    wrong client)."""
    return (response.keep_alive and not leftover
            and response.framing.kind not in (BodyKind.CLOSE, BodyKind.TUNNEL))


# --------------------------------------------------------------------------- failures
def failure_of(error: BaseException) -> Failure:
    """Which column of ``ON_FAILURE`` an error belongs to."""
    if isinstance(error, ClientError):
        return Failure.CLIENT_BROKE
    if isinstance(error, ClientGone):
        return Failure.CLIENT_GONE
    if isinstance(error, StaleConnection):
        return Failure.BACKEND_STALE
    return Failure.BACKEND_FAILED  # UpstreamError


def after_answer(recovery: Recovery, error: ProxyError, *, request_done: bool) -> str:
    """After answering ``error``: "keep" the connection, "linger" then close, or "close".

    The connection is kept only for an ANSWER to a request read to its end whose error
    does not demand a close (a 404, a 502); a client that may still be sending its
    body is read from a little longer first (lingering close, see ``linger``)."""
    if recovery is Recovery.ANSWER and request_done and not error.close:
        return "keep"
    return "close" if request_done else "linger"


def client_may_still_send(error: BaseException, buffered: int) -> bool:
    """After a bad head: do bytes past it mean the client may still be sending?

    Not after a 408: that client is slow, and lingering would hand a slowloris more time."""
    return buffered > 0 and not isinstance(error, RequestTimeout)


# --------------------------------------------------------------------------- logging
def access_line(client: str, request: http1.Request, status: int, response_bytes: int, backend: str,
                tls_summary: str, seconds: float, outcome: str = "") -> str:
    """One access-log line for a finished exchange."""
    note = f" error={outcome!r}" if outcome else ""
    return (f'{client} "{request.method} {request.target} {request.version}" {status} '
            f"{response_bytes} backend={backend} {tls_summary} time={seconds * 1000:.1f}ms{note}")


def error_line(client: str, error: ProxyError, tls_summary: str) -> str:
    """The access-log line for a request refused before it became an exchange (a bad head)."""
    return f"{client} \"-\" {error.status} rejected: {error} {tls_summary}"
