"""Every error the proxy can meet, by who caused it, and the one function that renders one.

Theory of operation
-------------------
A proxy sits between two parties that can each break the rules, and between two
networks that can each fail, so its errors come in four families:

* ``ProtocolError``: bytes that are not valid HTTP/1.1 (or TLS).  Raised by the sans-IO
  parsers, which do not know who sent the bytes, so the error is *neutral*: it carries
  the status a server would answer if a client had sent them (``status``, in the spirit
  of h11's ``RemoteProtocolError(msg, error_status_hint=431)``).  Code that reads from a
  socket maps it once, at the read site: bytes from the client become a
  ``ClientProtocolError`` (answered with that 4xx), bytes from a backend an
  ``InvalidUpstreamResponse`` (502).
* ``ClientError``: the *client* broke HTTP or a limit (a malformed request, an
  ambiguous body length, a slow sender, a refused destination).  Answered with a 4xx
  and, almost always, a closed connection: once the framing of one request is in doubt,
  every byte after it is in doubt too (request smuggling).
* ``UpstreamError``: the *backend* failed or broke HTTP (refused, timed out, sent an
  invalid response).  The client did nothing wrong; it gets 502, 503 or 504.
* Transport outcomes (``TransportError`` and the exchange outcomes below it): a read or
  write failed or timed out (neutral, like a ``ProtocolError``: ``ReadTimeout`` does not
  know whether the client or the backend was slow), the client went away, a stale pooled
  connection should be retried.  These are not answered with HTTP at all; what each
  becomes is the exchange's failure table (``proxy.exchange.ON_FAILURE``).

``ClientError`` and ``UpstreamError`` are kinds of ``ProxyError``: each knows its HTTP status and
whether the connection must close.  Only ``render_error`` turns one into response bytes,
so no parser ever writes to a socket.

Configuration problems (``ConfigError``) are not HTTP errors: they stop the program at
start with one line that names the problem.
"""

from __future__ import annotations

from http import HTTPStatus


# --------------------------------------------------------------------------- the shared shape
class StatusError(Exception):
    """An error that knows its HTTP status and whether the connection must close."""

    status: int = 500
    close: bool = True

    def __init__(self, message: str = "", *, status: int | None = None, close: bool | None = None):
        super().__init__(message or HTTPStatus(status or self.status).phrase)
        if status is not None:
            self.status = status
        if close is not None:
            self.close = close

    @property
    def message(self) -> str:
        return str(self)


# --------------------------------------------------------------------------- neutral: the parsers
class ProtocolError(StatusError):
    """Bytes that are not valid HTTP/1.1 (RFC 9112), from either peer.

    ``status`` is the answer a *client* who sent them would get (a hint: from a backend
    the same bytes are a 502).  ``close`` is always true: after a framing error no later
    byte on the connection can be trusted.
    """

    status = 400


class LengthRequired(ProtocolError):
    status = 411


class ContentTooLarge(ProtocolError):
    status = 413


class URITooLong(ProtocolError):
    status = 414


class HeaderFieldsTooLarge(ProtocolError):
    status = 431


class NotImplementedByProxy(ProtocolError):
    """A transfer coding or method the proxy does not implement (RFC 9112 §6.1 ¶13)."""

    status = 501


class IncompleteMessage(ProtocolError):
    """The peer closed the connection in the middle of a message (a head or a body).

    A body cut short is never reported as complete: a truncated upload forwarded as
    if it were whole would be silently corrupted (RFC 9112 §8, "Handling Incomplete
    Messages").
    """


class HTTPVersionNotSupported(ProtocolError):
    """A well-formed HTTP-version whose major version is not 1 (RFC 9110 §15.6.6)."""

    status = 505


# --------------------------------------------------------------------------- answered: ProxyError
class ProxyError(StatusError):
    """Base of every error that becomes an HTTP response."""


# --------------------------------------------------------------------------- client side
class ClientError(ProxyError):
    """The client broke the protocol or a limit; answered 4xx (or 501) and closed."""

    status = 400


class ClientProtocolError(ClientError):
    """A ``ProtocolError`` in bytes the *client* sent: answered with its status, closed."""

    @classmethod
    def of(cls, error: ProtocolError) -> "ClientProtocolError":
        return cls(str(error), status=error.status, close=True)


class BadRequest(ClientError):
    status = 400


class Forbidden(ClientError):
    """A policy (the forward proxy's destination rules) refused the request."""

    status = 403


class NotFound(ClientError):
    """No route matches the request's Host and path."""

    status = 404
    close = False


class RequestTimeout(ClientError):
    """The client was too slow to send its head or its body (slowloris defence)."""

    status = 408


class NotImplementedHere(ClientError):
    """A well-formed request this proxy does not serve (an https:// URI to the forward proxy)."""

    status = 501


# --------------------------------------------------------------------------- upstream side
class UpstreamError(ProxyError):
    """The backend failed; the client did nothing wrong."""

    status = 502
    close = False


class BadGateway(UpstreamError):
    """Refused, reset, or closed before a complete response head arrived."""

    status = 502


class InvalidUpstreamResponse(BadGateway):
    """The backend's response is not valid HTTP/1.1; it is never forwarded."""

    @classmethod
    def of(cls, error: ProtocolError, backend: str) -> "InvalidUpstreamResponse":
        return cls(f"backend {backend} sent an invalid response: {error}")


class UpstreamTLSError(BadGateway):
    """The backend's certificate did not verify, or its TLS handshake failed."""


class GatewayTimeout(UpstreamError):
    """The backend did not connect or answer in time."""

    status = 504


class ServiceUnavailable(UpstreamError):
    """Every backend of the pool is marked down, or the proxy is at its limit."""

    status = 503


# --------------------------------------------------------------------------- transport outcomes
class TransportError(Exception):
    """A read or write on a socket failed (``proxy.transport``); which peer is the caller's to say."""


class ReadTimeout(TransportError, TimeoutError):
    """One read waited longer than its timeout."""


class Deadline(ReadTimeout):
    """An overall deadline passed (a whole head must arrive in time: slowloris)."""


class WriteTimeout(TransportError, TimeoutError):
    """The peer stopped reading: one write could not finish within its timeout."""


class ReadError(TransportError):
    """The read failed: a reset, a TLS error, an unexpected EOF inside TLS."""


class WriteError(TransportError):
    """The write failed: the peer reset or closed the connection."""


class ClientGone(Exception):
    """The client closed, reset or went quiet: nothing to answer, nobody to answer."""


class AbortConnection(Exception):
    """The response was already under way when something failed: close, don't answer.

    The client connection is closed without close_notify, so the client sees a cut
    message, never a complete wrong one (RFC 9112 §9.8)."""


class StaleConnection(Exception):
    """A reused pooled backend connection failed before any byte of the response arrived.

    The backend most likely closed it while it was idle (its keep-alive timeout); an
    idempotent request without a body may be retried once on a fresh connection."""


# --------------------------------------------------------------------------- configuration
class ConfigError(Exception):
    """Bad configuration found at start: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- rendering
def render_error(error: ProxyError, *, server: str = "tlsproxy") -> bytes:
    """The complete HTTP/1.1 response for ``error``: status line, headers, short body.

    The body is one line of plain text that says what went wrong, so that a student
    running curl sees the reason without reading the proxy's log.
    """
    phrase = HTTPStatus(error.status).phrase
    body = f"{error.status} {phrase}: {error.message}\n".encode("utf-8", "replace")
    head = [
        f"HTTP/1.1 {error.status} {phrase}",
        f"Server: {server}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
    ]
    if error.close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- TLS bytes
class TLSParseError(ProtocolError):
    """Bytes that are not a well-formed TLS record or handshake message.

    Raised by the sans-IO TLS parsers (``proxy.tls.records``, ``proxy.tls.clienthello``,
    ``proxy.tls.keyschedule``) for input that breaks RFC 8446 / RFC 5246 framing: a
    record that is not a handshake record where one must be, a length that overruns
    its container, a vector whose length is not a multiple of its element size, an
    extension sent twice (RFC 8446 §4.2), a message larger than the configured limit.

    Like every ProtocolError it is neutral (a key schedule reads bytes from either
    peer) and always closes the connection.  In passthrough mode there is no HTTP to answer with: the proxy
    closes, or sends a TLS alert.  ``alert`` carries the TLS alert description a TLS
    endpoint would send for this fault (RFC 8446 §6.2), in the spirit of h11's
    ``error_status_hint``: 50 decode_error by default, 47 illegal_parameter for a
    value that parses but is forbidden, 22 record_overflow, 10 unexpected_message.
    """

    status = 400
    alert: int = 50  # decode_error

    def __init__(self, message: str = "", *, alert: int | None = None, **kwargs):
        super().__init__(message, **kwargs)
        if alert is not None:
            self.alert = alert


class TLSDecryptError(TLSParseError):
    """A protected TLS record did not authenticate (RFC 8446 §5.2: bad_record_mac).

    The AEAD tag check failed: wrong traffic secret, wrong sequence number, the
    wrong cipher suite, or bytes changed in transit.  Raised by the teaching
    decryptor in ``proxy.tls.keyschedule``; never by the proxy's own data path.
    """

    alert = 20  # bad_record_mac
