"""Forward proxy: absolute-form requests and CONNECT tunnels, under a destination policy (setup 6).

Theory of operation
-------------------
A reverse proxy stands in front of *its* servers; a forward proxy stands in front of
*its clients* and goes wherever they ask.  Clients know they use one (``curl --proxy``,
``HTTPS_PROXY``) and speak to it in two ways (RFC 9112 §3.2.2, RFC 9110 §9.3.6)::

    GET http://api.example.test:8080/v1?x=1 HTTP/1.1      absolute-form: "fetch this for me"
    CONNECT www.example.test:443 HTTP/1.1                  authority-form: "open a tunnel"

*Absolute-form* goes through the same HTTP core as terminate mode
(``HTTPConnectionHandler`` and ``Exchange``): the target becomes origin-form
(``GET /v1?x=1``), Host comes from the URI, hop-by-hop fields go, X-Forwarded-For and
Via are added, and connections to each destination are kept alive in the shared pool.
Only the choice of backend differs: not a routed pool but the destination in the
request, once the policy allows it (``ForwardExchange.choose_backend``).

*CONNECT* is how HTTPS crosses a forward proxy.  The proxy checks the destination,
connects, answers ``200 Connection Established`` and from then on copies bytes
(``proxy.relay``); the client runs TLS with the origin *through* the tunnel, so the
certificate it verifies is the origin's and the proxy sees only the ClientHello's
SNI go by.  Bytes the client sent right after its CONNECT head (some clients do not
wait for the 200) were already read into the request reader: ``take_buffered()``
hands them over and they are sent first.

Every destination passes ``proxy.policy`` first (ports, resolution, rules; 403 with
the rule that matched), and the proxy connects to exactly the addresses the policy
checked, from ``source_address`` when one is configured.  Two more refusals live
here: a plain ``GET /path`` (origin-form: this is not a web server) and an
``http://`` URI pointing back at this proxy's own listener, which would make it
connect to itself until its connection slots ran out (a forwarding loop).

The decisions themselves (parsing the target, the policy and the loop check, the
backends to try, the CONNECT log line) are the module-level functions below, in one
place: the event loop's forward proxy (``proxy.eventloop.forward``) imports them and
makes the same ones without a thread::

    decision                                    function                  threaded caller
    ------------------------------------------  ------------------------  ------------------------
    CONNECT's target: host and port             split_host_port           ForwardHandler.tunnel
    absolute-form's target, or its refusal      absolute_form_authority   ForwardExchange.choose_backend
    may the client go there (policy, loop)      authorize                 ForwardHandler.authorize
    the addresses to try, as backends           destination_backends      choose_backend
    the CONNECT access-log line                 tunnel_line, tunnel_note  ForwardHandler.log_tunnel

With ``[forward] intercept_ca`` (``--intercept-ca``, lab only) an allowed CONNECT is
not tunnelled but intercepted: the proxy plays the origin with a certificate minted
for it and reads every request (``proxy.modes.intercept``, threaded engine only).

**Name resolution** is the one step that may wait: ``ForwardPolicy.resolve`` needs no
network for an IP literal or a static ``hosts`` entry, but calls ``getaddrinfo`` for any
other name.  A thread may block in it; the event loop may not (one blocked callback
stops every connection).  So ``authorize`` takes the resolver as an argument, and an
engine that must not block passes ``defer_lookup``: a name that needs DNS raises
``LookupNeeded`` *after* the port check, the engine resolves it elsewhere (a worker
thread) and calls ``authorize`` again with the addresses found.  The rules see the same
addresses either way, and the proxy connects to exactly those.
"""

from __future__ import annotations

import socket
import time

from proxy import http1
from proxy.balancer import Backend
from proxy.config import BackendConfig
from proxy.errors import BadRequest, ClientGone, Forbidden, NotImplementedHere, ProxyError, UpstreamError
from proxy.lifecycle import ConnEvent
from proxy.modes.terminate import Exchange, HTTPConnectionHandler
from proxy.policy import Destination, ForwardPolicy, Resolver, normalize_address
from proxy.relay import relay
from proxy.transport import open_connection

# =========================================================================== the shared decisions
# (both engines: this module's ForwardHandler, and proxy.eventloop.forward)
ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"  # RFC 9110 §9.3.6: no framing fields
FORWARD_POOL = "forward"  # the pool name of forward destinations: apart from any reverse-proxy pool's


# --------------------------------------------------------------------------- targets
def split_host_port(authority: str, default_port: int | None = None) -> tuple[str, int]:
    """``'[::1]:8443'`` -> ('::1', 8443); ``'example.test'`` -> ('example.test', default_port)."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text and default_port is not None:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise BadRequest(f"invalid host:port {authority[:80]!r}")
    return host, int(port_text)


def absolute_form_authority(request: http1.Request, *, close: bool) -> tuple[str, int]:
    """Where an absolute-form request goes (RFC 9112 §3.2.2), or why it is refused.

    ``close``: the refusal closes the connection when the request's body was not read."""
    if request.target[:1] == "/" or request.target == "*":
        raise BadRequest("this is a forward proxy: ask for an absolute URI (GET http://host/path) "
                         "or CONNECT host:port", close=close)
    scheme, authority, _ = http1.split_absolute_form(request.target)
    if scheme != "http":
        raise NotImplementedHere("the forward proxy fetches http:// URIs; for https:// use CONNECT", close=close)
    return split_host_port(authority, default_port=80)


# --------------------------------------------------------------------------- the policy
class LookupNeeded(Exception):
    """``defer_lookup``'s signal: this name needs DNS, which the caller must not wait for here."""

    def __init__(self, name: str, port: int) -> None:
        super().__init__(name)
        self.name, self.port = name, port


def defer_lookup(name: str, port: int) -> list[str]:
    """A resolver that never waits: see the module docstring."""
    raise LookupNeeded(name, port)


def authorize(policy: ForwardPolicy, server, client: str, host: str, port: int, *, connect: bool,
              close: bool = True, resolver: Resolver | None = None) -> Destination:
    """The policy's decision (403, 502), then one more refusal: a destination that is this proxy.

    An ``http://`` URI or a CONNECT pointing back at one of this proxy's own listeners would
    make it connect to itself, again and again, until its connection slots ran out (a
    forwarding loop; Squid detects it with its own ``Via``, here the address is enough)."""
    destination = policy.authorize(client, host, port, connect=connect, close=close, resolver=resolver)
    for address in destination.addresses:
        if is_own_listener(server, address, port):
            raise Forbidden(f"{host}:{port} is this proxy itself (a forwarding loop)", close=close)
    return destination


def is_own_listener(server, address: str, port: int) -> bool:
    target = normalize_address(address)
    try:
        listening = server.addresses
    except OSError:  # shutting down: the listening sockets are closed already
        return False
    for host, listen_port in listening:
        listen = normalize_address(host)
        if listen_port == port and (listen.is_unspecified or listen == target):
            return True
    return False


# --------------------------------------------------------------------------- connecting
def destination_backends(destination: Destination, *, scheme: str = "http") -> list[Backend]:
    """One Backend per checked address, in order: connect to these and to nothing else.

    ``scheme`` "http" for absolute-form (the pool keeps connections per address, under
    "forward/..."), "tcp" for a CONNECT tunnel (its name is then ``address:port``)."""
    port = destination.port
    return [Backend(BackendConfig(f"{scheme}://{bracket(a)}:{port}", scheme, a, port), pool=FORWARD_POOL)
            for a in destination.addresses]


class _Direct:
    """The "balancer" of a forward request: one destination, no health bookkeeping."""

    def release(self, backend: Backend) -> None:
        pass

    def report_success(self, backend: Backend) -> None:
        pass

    def report_failure(self, backend: Backend, reason: str) -> None:
        pass


DIRECT = _Direct()


def bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# --------------------------------------------------------------------------- logging
def tunnel_line(client: str, request: http1.Request, status: int, seconds: float, *, backend: str = "-",
                note: str = "") -> str:
    """The access-log line of one CONNECT, whichever engine served it."""
    return (f'{client} "CONNECT {request.target} {request.version}" {status} '
            f"backend={backend} time={seconds * 1000:.1f}ms {note}").rstrip()


def tunnel_note(up: int, down: int, ended: str) -> str:
    return f"up={up} down={down} ended={ended!r}"


# =========================================================================== the threaded engine
def handle(server, conn) -> None:
    """Serve forward-proxy requests on a plain-TCP client connection."""
    ForwardHandler(server, conn).run()


class ForwardHandler(HTTPConnectionHandler):
    """The request loop of terminate mode, with absolute-form, CONNECT and the policy."""

    def __init__(self, server, conn):
        super().__init__(server, conn, proto="http", allow_absolute_form=True, allow_connect=True)
        self.policy = server.config.forward_policy

    def serve(self, request: http1.Request) -> bool:
        if request.method == "CONNECT":
            return self.tunnel(request)
        return super().serve(request)

    def new_exchange(self, request: http1.Request) -> Exchange:
        return ForwardExchange(self, request)

    # ------------------------------------------------------------------ the policy
    def authorize(self, host: str, port: int, *, connect: bool, close: bool = True) -> Destination:
        """The policy and the forwarding-loop check (``authorize`` above); DNS may block here (a thread may)."""
        return authorize(self.policy, self.server, self.conn.address[0], host, port, connect=connect, close=close)

    # ------------------------------------------------------------------ CONNECT
    def tunnel(self, request: http1.Request) -> bool:
        """Answer a CONNECT: check, connect, 200, relay.  The connection ends with the tunnel."""
        started = time.perf_counter()
        try:
            host, port = split_host_port(request.target)
            destination = self.authorize(host, port, connect=True)
            if self.server.config.intercept is not None:  # lab only: decrypt it instead (proxy.modes.intercept)
                from proxy.modes import intercept  # here: intercept imports this module

                return intercept.serve(self, request, destination, started)
            upstream, address = self.open_tunnel(destination)
        except ProxyError as error:
            self.send_error(error)
            self.log_tunnel(request, error.status, started, note=f"error={str(error)!r}")
            return False
        backend = f"{bracket(address)}:{port}"
        try:
            self.reader.next_event()  # EndOfMessage: the reader is now in its TUNNEL state
            early = self.reader.take_buffered()
            self.client_send(ESTABLISHED)
            self.conn.life.go(ConnEvent.TUNNEL)
            result = relay(self.client.sock, upstream, idle_timeout=self.timeouts.tunnel_idle, first_to_origin=early)
        except ClientGone:
            self.log_tunnel(request, 200, started, backend=backend, note="error='client-gone'")
            return False
        finally:
            upstream.close()
        self.log_tunnel(request, 200, started, backend=backend, tunnel_in=result.client_to_origin,
                        tunnel_out=result.origin_to_client,
                        note=tunnel_note(result.client_to_origin, result.origin_to_client, result.ended))
        return False

    def open_tunnel(self, destination: Destination) -> tuple[socket.socket, str]:
        """Connect to the first checked address that answers (and to nothing else)."""
        source = self.policy.source_address
        failure: UpstreamError | None = None
        for address in destination.addresses:
            try:
                return open_connection(address, destination.port, timeout=self.timeouts.backend_connect,
                                       name=f"{address} port {destination.port}", source_address=source), address
            except UpstreamError as error:
                failure = error
        raise failure

    def log_tunnel(self, request: http1.Request, status: int, started: float, *, backend: str = "-",
                   note: str = "", tunnel_in: int = 0, tunnel_out: int = 0) -> None:
        self.count_request(status, tunnel_in=tunnel_in, tunnel_out=tunnel_out)
        seconds = time.perf_counter() - started
        self.server.access_log.write(tunnel_line(self.conn.client, request, status, seconds, backend=backend,
                                                 note=note))


class ForwardExchange(Exchange):
    """An absolute-form request: the destination comes from the URI, not from a route."""

    handler: ForwardHandler

    def choose_backend(self):
        close = not self.request_done
        host, port = absolute_form_authority(self.request, close=close)
        destination = self.handler.authorize(host, port, connect=False, close=close)
        self.pool_name = FORWARD_POOL
        # One Backend per checked address; the pool keeps connections per address
        # (under "forward/...", apart from any reverse-proxy pool's connections).
        self.candidates = destination_backends(destination)
        return DIRECT, self.candidates[0]

    def connect(self, balancer, backend, *, fresh: bool):
        failure: UpstreamError | None = None
        for candidate in self.candidates:
            try:
                conn = self.server.backend_pool.acquire(candidate, fresh=fresh,
                                                        source_address=self.handler.policy.source_address)
            except UpstreamError as error:
                failure = error
                continue
            self.backend = candidate
            return conn
        raise failure

    def sni_for_backend(self) -> str | None:
        return None  # http:// destinations only: no TLS to the origin

