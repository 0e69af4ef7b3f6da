"""The forward proxy that reads your HTTPS: CONNECT intercepted, TLS terminated twice (lab only).

Theory of operation
-------------------
A plain forward proxy (setup 6, ``proxy.modes.forward``) answers ``CONNECT
host:port`` by opening a TCP connection and copying bytes: the client runs TLS with
the origin *through* the tunnel, verifies the origin's own certificate, and the
proxy sees nothing but the ClientHello's SNI.  RFC 9110 §9.3.6 says exactly that:
once the tunnel is up the recipient should "restrict its behavior to blind
forwarding of data, in both directions, until the tunnel is closed".  This mode
breaks that promise on purpose, to show how it is broken and how the breach shows::

    client ──CONNECT host:port──▶ proxy    policy checked (403 as ever), then the proxy
                                           opens *its own* TLS to the real host:port,
                                           verified against origin_ca (or the system store)
    client ◀──200 Connection Established── proxy    answered by the proxy itself
    client ══TLS, as if to "host"══▶ proxy ══TLS, verified══▶ origin
              certificate minted now for "host"      the origin's real certificate
              by the interception CA (proxy.tls.mint)
    GET /path  (plaintext in the proxy)  ──▶  the same HTTP core as terminate mode

The decrypted client socket goes through ``HTTPConnectionHandler`` and ``Exchange``
(``proxy.modes.terminate``), as forward mode's absolute-form requests do; only the
backend is fixed: the address the policy checked for the CONNECT, over TLS, through
the shared pool (``InterceptExchange``).  The origin connection is opened *before*
the 200, so an unreachable or unverifiable origin is the CONNECT's 502 or 504, as for
a tunnel, and the client's plaintext never reaches a server the proxy could not
authenticate.  The access log says ``intercepted`` on the CONNECT line and on every
request line, which carries the request's path: a tunnel never sees one.

**What the client must trust.**  The client checks that the certificate names the
host it asked for (RFC 9110 §4.3.4: a DNS-ID for a name, an IP-ID for an IP literal,
never the CN; the rules are RFC 9525's, which obsoletes RFC 6125) and that it chains
to a trust anchor.  The minted certificate names the host correctly; the
chain is what fails, unless the interception CA is among the client's trust
anchors.  So every interception setup begins by installing a root: corporate TLS
inspection proxies push theirs to managed machines by policy (Group Policy, MDM),
and mitmproxy asks you to install its CA yourself.  Here: ``curl --cacert
intercept-ca.pem``.  Without it, curl fails with "SSL certificate problem: unable to
get local issuer certificate" (exit 60), and the proxy's log shows the client's
``unknown_ca`` alert.

**How it is detected.**

* *The chain.*  The certificate's issuer is the interception CA ("TLS Lab
  Interception CA — lab only"), not the site's real CA: ``curl -v`` prints it as
  ``issuer:``, a browser's padlock shows it.  The key is new, too.
* *Pinning.*  An app that pins its server's key or its CA (a certificate or SPKI
  hash compiled in) refuses the minted certificate, whatever the trust store says;
  this is why many mobile apps break behind inspection proxies and why interception
  products keep bypass lists.  Browsers do not do that for locally installed roots:
  HPKP (RFC 7469) allowed a browser to skip pin validation when the chain ends at
  a user-defined trust anchor, which browsers did, and HPKP itself is obsolete
  (removed in Chrome 72, per chromestatus.com).
* *Certificate Transparency.*  A minted certificate is in no CT log (RFC 6962): logs
  accept certificates only from publicly trusted CAs.  That does not make browsers
  refuse it: Chrome requires CT for *publicly trusted* certificates only, and its
  "Certificate Transparency for Enterprises" page says CT "only applies to CAs that
  are publicly-trusted", that is CAs supported "out of the box", so a manually
  installed root that was never publicly trusted is exempt (googlechrome.github.io/
  CertificateTransparency/).  CT catches a public CA that mis-issues, not a local one.
* *At the origin.*  This proxy adds ``Via: 1.1 tlsproxy`` and ``X-Forwarded-For`` as
  on every request it forwards; a commercial interceptor may add nothing, but the
  origin still sees the *proxy's* TLS client, whose ClientHello does not match the
  browser named in User-Agent: the method of Durumeric et al., "The Security Impact
  of HTTPS Interception" (NDSS 2017).

**Why it is lab-only.**  It breaks end-to-end TLS: the proxy holds every plaintext,
passwords, cookies and tokens included, and whoever holds the interception CA's key
can impersonate every site to every client that trusts it.  The client cannot see
how, or whether, the proxy verified the origin: a proxy that verified badly (or not
at all) would silently weaken every connection behind it.  So origins are verified
as in re-encrypt (``proxy.tls.contexts.client_context``), the default policy still
allows only loopback destinations, and ``--keylog`` / ``--backend-keylog`` cover the
two legs as in re-encrypt.

**The setups.**  Setup 6 tunnels end to end: one TLS session, client to origin.
This mode terminates twice, like re-encrypt (setup 4: two sessions, plaintext in the
proxy between them), with one difference: in re-encrypt the client chose the
proxy's name and verifies the proxy's own certificate, knowingly; here the client
asked for the origin's name and is shown a certificate forged for it.

Only the threaded engine serves it so far: it starts TLS on a socket that already
carried plain HTTP, which the event loop does not do yet (``proxy.config`` refuses
``intercept_ca`` with ``engine = "eventloop"``).  HTTP/1.1 only inside the tunnel
(ALPN offers ``http/1.1``); an HTTP/2 client falls back to it.
"""

from __future__ import annotations

import ssl
import threading
import time
import weakref

from proxy import http1
from proxy import exchange as rules
from proxy.balancer import Backend
from proxy.config import is_ip
from proxy.errors import BadRequest, ClientGone, ProxyError, UpstreamError
from proxy.lifecycle import ConnEvent
from proxy.modes.forward import DIRECT, ESTABLISHED, FORWARD_POOL, ForwardHandler, destination_backends, tunnel_line
from proxy.modes.terminate import Exchange, HTTPConnectionHandler
from proxy.policy import Destination
from proxy.tls import contexts
from proxy.tls.mint import Minter, load_ca


# --------------------------------------------------------------------------- per server
class Interceptor:
    """What interception needs, made once per server: the minter and the origin-side context."""

    def __init__(self, server) -> None:
        config = server.config
        self.minter = Minter(load_ca(config.intercept.cert, config.intercept.key), keylog=config.keylog)
        # The origin is verified as a re-encrypt backend is: chain and host name (RFC 9110 §4.3.4).
        self.origin_context = contexts.client_context(ca=config.intercept.origin_ca, alpn=["http/1.1"],
                                                      keylog=config.backend_keylog)
        self.pool = server.backend_pool

    def backends(self, destination: Destination) -> list[Backend]:
        """The checked addresses as https backends of the shared pool, verified with ``origin_context``."""
        backends = destination_backends(destination, scheme="https")
        for backend in backends:
            self.pool.tls_contexts.setdefault(backend.key, self.origin_context)
        return backends


_INTERCEPTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def interceptor_for(server) -> Interceptor:
    with _LOCK:
        found = _INTERCEPTORS.get(server)
        if found is None:
            found = _INTERCEPTORS[server] = Interceptor(server)
        return found


# --------------------------------------------------------------------------- one CONNECT
def serve(handler: ForwardHandler, request: http1.Request, destination: Destination, started: float) -> bool:
    """Answer an allowed CONNECT by intercepting it; the connection ends with it (returns False)."""
    host, port = destination.host, destination.port
    server, conn = handler.server, handler.conn
    interceptor = interceptor_for(server)
    try:
        handler.reader.next_event()  # EndOfMessage: the reader is now in its TUNNEL state
        if handler.reader.take_buffered():
            # The ClientHello came before our 200 (an optimistic client): it is in the
            # request reader, and an SSLSocket cannot be given bytes already read.
            raise BadRequest("interception needs the TLS ClientHello after the 200; this client sent it early")
        try:
            context = interceptor.minter.context_for(host)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        origin, backend = open_origin(handler, interceptor, destination)
    except ProxyError as error:
        handler.send_error(error)
        log_connect(handler, request, error.status, started, note=f"error={str(error)!r}")
        return False
    try:
        handler.client_send(ESTABLISHED)
        conn.life.go(ConnEvent.KEEP_ALIVE)  # the CONNECT exchange is over; TLS and requests follow
        if not handshake(server, conn, context):
            origin.close()
            log_connect(handler, request, 200, started, backend=backend.name, note="error='client handshake failed'")
            return False
    except ClientGone:
        origin.close()
        log_connect(handler, request, 200, started, backend=backend.name, note="error='client-gone'")
        return False
    inner = InterceptHandler(server, conn, authority=request.target, backend=backend, ready=origin,
                             server_name=None if is_ip(host) else host)
    try:
        inner.run()
    finally:
        if inner.ready is not None:  # the client never sent a request
            inner.ready.close()
    log_connect(handler, request, 200, started, backend=backend.name, note=f"requests={conn.requests - 1}")
    return False


def open_origin(handler: ForwardHandler, interceptor: Interceptor, destination: Destination):
    """A verified TLS connection to the first checked address that answers (and to nothing else)."""
    server_name = None if is_ip(destination.host) else destination.host
    failure: UpstreamError | None = None
    for backend in interceptor.backends(destination):
        try:
            return interceptor.pool.connect(backend, server_name=server_name,
                                            source_address=handler.policy.source_address), backend
        except UpstreamError as error:
            failure = error
    raise failure


def handshake(server, conn, context: ssl.SSLContext) -> bool:
    """The TLS handshake with the client, as ``host``, on the socket that carried the CONNECT: the
    server's own (``ProxyServer.tls_handshake``), logged as intercepted; the connection's lifecycle
    stays where the CONNECT put it."""
    return server.tls_handshake(conn, context, what="intercepted TLS handshake")


def log_connect(handler: ForwardHandler, request: http1.Request, status: int, started: float, *,
                backend: str = "-", note: str = "") -> None:
    handler.count_request(status)
    seconds = time.perf_counter() - started
    handler.server.access_log.write(tunnel_line(handler.conn.client, request, status, seconds, backend=backend,
                                                note=f"intercepted {note}"))


# --------------------------------------------------------------------------- the decrypted requests
class InterceptHandler(HTTPConnectionHandler):
    """The request loop of terminate mode, on the decrypted client socket, to one fixed origin."""

    def __init__(self, server, conn, *, authority: str, backend: Backend, ready, server_name: str | None):
        super().__init__(server, conn, proto="https")
        self.policy = server.config.forward_policy
        self.authority = authority  # the CONNECT's host:port, for the log
        self.backend = backend
        self.ready = ready  # the origin connection opened before the 200, for the first request
        self.server_name = server_name  # SNI and the name the origin's certificate must carry

    def new_exchange(self, request: http1.Request) -> Exchange:
        return InterceptExchange(self, request)


class InterceptExchange(Exchange):
    """A decrypted request: no routing, the CONNECT's destination; logged as intercepted."""

    handler: InterceptHandler

    def choose_backend(self):
        self.pool_name = FORWARD_POOL
        return DIRECT, self.handler.backend

    def connect(self, balancer, backend, *, fresh: bool):
        handler = self.handler
        if handler.ready is not None and not fresh:
            conn, handler.ready = handler.ready, None
            return conn
        return self.server.backend_pool.acquire(backend, fresh=fresh, server_name=handler.server_name,
                                                source_address=handler.policy.source_address)

    def sni_for_backend(self) -> str | None:
        return self.handler.server_name

    def log(self, seconds: float) -> None:
        handler = self.handler
        handler.count_request(self.status or 0)
        if not self.server.access_log.enabled:
            return
        backend = self.backend.name if self.backend else "-"
        line = rules.access_line(handler.conn.client, self.request, self.status or 0, self.response_bytes, backend,
                                 handler.conn.tls_summary(), seconds, self.outcome)
        self.server.access_log.write(f"{line} intercepted={handler.authority}")

