"""Redirect: a plain-HTTP listener that sends every request to HTTPS (and why HSTS must follow).

Theory of operation
-------------------
**SSL stripping.**  Someone types ``www.example.test`` into a browser, which asks for
``http://www.example.test/`` over plain TCP.  Moxie Marlinspike showed in 2009
("New Tricks for Defeating SSL in Practice", Black Hat DC, and his tool ``sslstrip``)
that a man in the middle (a café's Wi-Fi, an ARP spoof) never needs to break TLS: he
answers that first plain request himself, talks HTTPS to the real site on the victim's
behalf, and hands the pages back over HTTP with every ``https://`` link rewritten to
``http://``.  No certificate warning ever appears, because the victim's side has no TLS
at all; only the padlock is missing, and nobody looks.

**What this listener does.**  It answers every request on port 80 (here, wherever
``mode = "redirect"`` listens) with ``308 Permanent Redirect`` to the same target on
``https://``, as RFC 6797 §7.2 asks: an HSTS host receiving a request over non-secure
transport "SHOULD send an HTTP response message containing a status code indicating a
permanent redirect [...] and a Location header field value containing either the HTTP
request's original Effective Request URI [...] altered as necessary to have a URI scheme
of "https"".  It is a convenience, not a defence: the plain request, and the redirect
itself, travel unprotected, so the man in the middle simply never passes the 308 on.

**What HSTS adds.**  Over TLS, the terminator adds ``Strict-Transport-Security:
max-age=N`` (``[proxy] hsts``, ``--hsts``; ``proxy.exchange.hsts_for``).  For the next N
seconds the browser rewrites every ``http://`` URL for that host to ``https://`` before
anything is sent (RFC 6797 §8.3), and lets no one click through a certificate error
(§8.4, §12.1): ``sslstrip`` finds no plain request left to answer.  ``includeSubDomains``
(§6.1.2) covers every name below too, which also keeps a plain ``http://sub.`` from
reading cookies set for the parent.  A browser ignores the field over plain HTTP (§8.1),
so this listener never sends it (§7.2: an HSTS Host "MUST NOT include the STS header
field in HTTP responses conveyed over non-secure transport"), and never for an IP
address (§8.1.1): try it with a name, not ``127.0.0.1``.

**The gap that remains** is the first visit (and every visit after max-age runs out, or
after the browser forgets): trust on first use.  The browsers' *preload list*
(hstspreload.org, built into Chrome, Firefox, Safari and Edge) closes it: the name is
HTTPS-only before the browser ever asked.  The ``preload`` directive is that list's
opt-in convention; RFC 6797 does not define it.

Choices made here, and why:

* **308, not 301.**  RFC 6797's example is 301, but for 301 "a user agent MAY change
  the request method from POST to GET for the subsequent request" (RFC 9110 §15.4.2); a
  308 (§15.4.9) does not allow that, so a POST arrives at HTTPS as a POST with its body
  (re-sent by the client: this listener never reads it, it lingers briefly and closes).
  Whatever was sent in plain text before the redirect has been exposed all the same.
* **Which Host.**  The Location names the request's Host (its Effective Request URI,
  RFC 6797 §9) only if one of the proxy's routes serves that name (``proxy.routing``
  patterns: exact, ``*.suffix``, or ``*`` for any).  Anyone can send his *own* client
  anywhere with a forged Host, so that alone harms nobody; but a shared cache in front
  of this listener that keys its entries on something other than Host would store that
  308 and hand it to everybody (cache poisoning).  A name the routes do not serve gets
  ``421 Misdirected Request`` (RFC 9110 §15.5.20: the server is "unable or unwilling to
  produce an authoritative response for the target URI").  No Host at all (an HTTP/1.0
  request) gets 400: there is no name to redirect to.  An invalid Host was already
  refused by the parser (400, RFC 9112 §3.2).
* **Which port.**  ``https_port``, by default the port this proxy's first terminate
  listener is bound to (so a lab on 8080 -> 8443 needs no setting, port 0 included); 443,
  the default port of ``https``, is left out of the URL (RFC 3986 §6.2.3).  Behind a port
  mapping (a container on 8443 published as 443) set ``https_port = 443``.
* **One answer per connection.**  The 308 says ``Connection: close`` and the connection
  closes: a browser follows the redirect to another port anyway.

``answer`` is the whole decision, sans-IO (request in, bytes out), and both engines call
it: ``RedirectHandler`` below (the threaded engine, on ``HTTPConnectionHandler``'s head
reading) and ``proxy.eventloop.session.HTTPSession`` (its ``local_answer`` hook).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial

from proxy import exchange as rules
from proxy import http1
from proxy.errors import BadRequest, ClientError, TransportError, render_error
from proxy.http1.framing import BodyKind
from proxy.lifecycle import ConnEvent
from proxy.modes.terminate import HTTPConnectionHandler
from proxy.routing import host_matches, normalize_host

HTTPS_DEFAULT_PORT = 443


class MisdirectedRequest(ClientError):
    """RFC 9110 §15.5.20: a Host this proxy serves no route for."""

    status = 421


# --------------------------------------------------------------------------- the decision (sans-IO)
def location(request: http1.Request, *, https_port: int, names: Iterable[str]) -> str:
    """``https://HOST[:PORT]/target`` for ``request``, or a ClientError (400, 421)."""
    host = request.headers.get("host")
    name = normalize_host(host)
    if not name:
        raise BadRequest("a redirect to https needs the Host the client asked for")
    if not any(host_matches(pattern, name) for pattern in names):
        raise MisdirectedRequest(f"no route serves host {name!r}, so it is not redirected")
    if not request.target.startswith("/"):  # "*" (OPTIONS *) names no resource to send elsewhere
        raise BadRequest(f"cannot redirect request-target {request.target[:60]!r}")
    authority = f"[{name}]" if ":" in name else name
    if https_port != HTTPS_DEFAULT_PORT:
        authority = f"{authority}:{https_port}"
    return f"https://{authority}{request.target}"  # path and query as received, byte for byte


def answer(request: http1.Request, *, https_port: int, names: Iterable[str]) -> tuple[int, bytes]:
    """The status and the complete response for one request on a redirect listener."""
    try:
        target = location(request, https_port=https_port, names=names)
    except ClientError as error:
        return error.status, render_error(error)
    headers = http1.Headers([("Server", "tlsproxy"), ("Location", target), ("Content-Length", "0"),
                             ("Connection", "close")])
    return 308, http1.serialize_response_head(http1.Response("HTTP/1.1", 308, "Permanent Redirect", headers))


def https_port(server, listener) -> int:
    """The listener's ``https_port``, else the bound port of the proxy's first terminate listener, else 443."""
    if listener.https_port is not None:
        return listener.https_port
    for sock, config in server.listen_sockets:
        if config.mode == "terminate":
            return sock.getsockname()[1]
    return HTTPS_DEFAULT_PORT


def answerer(server, listener) -> Callable[[http1.Request], tuple[int, bytes]]:
    """``answer`` with this listener's port and the proxy's route names filled in."""
    names = tuple(route.host for route in server.config.routes)
    return partial(answer, https_port=https_port(server, listener), names=names)


# --------------------------------------------------------------------------- the threaded engine
def handle(server, conn) -> None:
    """Answer the first request on ``conn`` with a redirect (or 400/421), then close."""
    RedirectHandler(server, conn).run()


class RedirectHandler(HTTPConnectionHandler):
    """``HTTPConnectionHandler``'s head reading (both clocks, 4xx for a bad head); no exchange."""

    def __init__(self, server, conn) -> None:
        super().__init__(server, conn, proto="http")
        self.redirect = answerer(server, conn.listener)  # not self.answer: that is the error answer

    def serve(self, request: http1.Request) -> bool:
        started = time.perf_counter()
        status, data = self.redirect(request)
        try:
            self.client.send(data, self.timeouts.send)
            sent = True
        except TransportError:
            sent = False
        self.count_request(status)
        if self.server.access_log.enabled:
            self.server.access_log.write(rules.access_line(self.conn.client, request, status, len(data), "-",
                                                           self.conn.tls_summary(), time.perf_counter() - started))
        if sent and request.framing.kind is not BodyKind.NONE:  # a body we will not read may still be on its way
            self.conn.life.go(ConnEvent.LINGER)
            self.linger()
        return False
