"""The region-locked origin: geographic restriction, and the forward proxy that gets around it.

Theory of operation
-------------------
A service that must serve only one country (licensing, law) cannot see countries; it
sees the *source address* of each TCP connection and looks it up in a table of which
networks are where.  So the lock is really "only clients from these networks", and
it is only as good as that one fact: whoever can make a connection *from* inside the
network is inside the region.  A forward proxy placed in that network does exactly
that: the client asks the proxy, and the origin sees the proxy's address::

    client 127.0.0.1 ──────────────────────────────────▶ origin 127.0.0.3   403 region-locked
    client 127.0.0.1 ──▶ forward proxy 127.0.0.2 ──────▶ origin 127.0.0.3   200
                         (listens on .2, connects from .2: "in the region")

On one machine the whole 127.0.0.0/8 network is loopback, so three addresses stand
for three places.  ``RegionLockScenario`` starts the origin (``course.origin.Origin``
with ``allow_networks``) and the forward proxy (``ProxyServer`` in forward mode with
``source_address``) in this process, and asks the origin three ways: directly, through
the proxy with an absolute-form GET, and through a CONNECT tunnel.  The answers are
the origin's own JSON, which names the address it saw.

Nothing is hard-wired to loopback: every address is a field of ``RegionAddresses``,
and ``commands()`` spells each party as a ``tlsproxy`` command line, so the lab's
network namespaces (``lab/topology``) can run the same three parties as three
hosts::

    addresses = RegionAddresses(origin="198.18.2.30", region_network="198.18.2.20/32",
                                proxy="198.18.1.20", proxy_source="198.18.2.20",
                                client="198.18.1.10", origin_port=8080, proxy_port=3128)
    for host, argv in RegionLockScenario(addresses).commands().items(): ...

The lesson cuts both ways: this is why region locks also block the address ranges
of known VPNs and hosting providers, and why a forward proxy needs a destination
policy (``proxy.policy``): this one allows exactly one destination.
"""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

from proxy import config as cfg
from course.origin import Origin
from proxy.policy import ForwardPolicy, Rule

REQUEST_TIMEOUT = 10.0
LAB_ORIGIN_PORT = 8080  # used by commands() when the addresses say port 0
LAB_PROXY_PORT = 3128  # Squid's port, the forward proxy's traditional home


@dataclass(frozen=True)
class RegionAddresses:
    """Where each party of the scenario lives (defaults: distinct loopback addresses)."""

    origin: str = "127.0.0.3"  # the region-locked origin listens here
    region_network: str = "127.0.0.2/32"  # the only clients it serves
    proxy: str = "127.0.0.2"  # the forward proxy listens here
    proxy_source: str = "127.0.0.2"  # and connects from here: inside the region
    client: str = "127.0.0.1"  # the helpers' requests come from here: outside
    origin_port: int = 0  # 0: the kernel picks
    proxy_port: int = 0


@dataclass(frozen=True)
class Answer:
    """What the origin said, and which way the request went."""

    route: str  # "direct", "via proxy" or "via tunnel"
    status: int
    document: Any  # the origin's JSON (a dict), or the body as text

    @property
    def origin_saw(self) -> str | None:
        """The client address the origin saw (its ``your_address`` or ``client`` field)."""
        if isinstance(self.document, dict):
            return self.document.get("your_address") or self.document.get("client")
        return None

    def __str__(self) -> str:
        return f"{self.route:10} -> {self.status}, the origin saw {self.origin_saw}"


class RegionLockScenario:
    """Start the region-locked origin and a forward proxy in its region; a context manager."""

    def __init__(self, addresses: RegionAddresses = RegionAddresses(), *, origin_name: str = "region-origin",
                 access_log: str | None = None):
        self.addresses = addresses
        self.origin_name = origin_name
        self.access_log = access_log
        self.origin: Origin | None = None
        self.proxy = None  # a proxy.server.ProxyServer once started

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RegionLockScenario:
        from proxy.server import ProxyServer  # the server imports the mode modules; keep this one light

        a = self.addresses
        self.origin = Origin(self.origin_name, host=a.origin, port=a.origin_port,
                             allow_networks=[a.region_network]).start()
        try:
            config = self.proxy_config(self.origin.port)
            self.proxy = ProxyServer(config).bind().start()
        except BaseException:
            self.origin.stop()
            raise
        self.addresses = replace(a, origin_port=self.origin.port, proxy_port=self.proxy.addresses[0][1])
        return self

    def proxy_config(self, origin_port: int) -> cfg.Config:
        """A forward proxy that may reach the origin and nothing else, from ``proxy_source``."""
        a = self.addresses
        policy = ForwardPolicy.build(
            rules=[Rule.parse(f"allow dst={a.origin}/{32 if ':' not in a.origin else 128} port={origin_port}")],
            connect_ports=[origin_port], source_address=a.proxy_source,
            http_ports=None if origin_port > 1024 else [80, "1025-65535", origin_port])
        listener = cfg.ListenerConfig(cfg.Address(a.proxy, a.proxy_port), "forward")
        return cfg.validate(cfg.Config(listeners=(listener,), pools=(), routes=(), access_log=self.access_log,
                                       forward_policy=policy))

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.shutdown(grace=1.0)
            self.proxy = None
        if self.origin is not None:
            self.origin.stop()
            self.origin = None

    def __enter__(self) -> RegionLockScenario:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ where things are
    @property
    def origin_url(self) -> str:
        return f"http://{_host(self.addresses.origin)}:{self.addresses.origin_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://{_host(self.addresses.proxy)}:{self.addresses.proxy_port}"

    # ------------------------------------------------------------------ asking the origin
    def direct(self, path: str = "/region") -> Answer:
        """Ask the origin straight from the client address: outside the region."""
        a = self.addresses
        conn = http.client.HTTPConnection(a.origin, a.origin_port, timeout=REQUEST_TIMEOUT,
                                          source_address=(a.client, 0))
        return self._ask(conn, "direct", path)

    def via_proxy(self, path: str = "/region") -> Answer:
        """Ask through the forward proxy with an absolute-form request (GET http://origin/...)."""
        a = self.addresses
        conn = http.client.HTTPConnection(a.proxy, a.proxy_port, timeout=REQUEST_TIMEOUT,
                                          source_address=(a.client, 0))
        return self._ask(conn, "via proxy", self.origin_url + path)

    def via_tunnel(self, path: str = "/region") -> Answer:
        """Ask through a CONNECT tunnel (what an HTTPS client does; plain HTTP inside here)."""
        a = self.addresses
        conn = http.client.HTTPConnection(a.proxy, a.proxy_port, timeout=REQUEST_TIMEOUT,
                                          source_address=(a.client, 0))
        conn.set_tunnel(_host(a.origin), a.origin_port)
        return self._ask(conn, "via tunnel", path)

    def _ask(self, conn: http.client.HTTPConnection, route: str, target: str) -> Answer:
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        try:
            document: Any = json.loads(body)
        except ValueError:
            document = body.decode("utf-8", "replace")
        return Answer(route, response.status, document)

    # ------------------------------------------------------------------ as separate processes
    def commands(self, python: str = sys.executable) -> dict[str, list[str]]:
        """The three parties as command lines, e.g. for ``Topology.popen(host, argv)``."""
        a = self.addresses
        origin_port = a.origin_port or LAB_ORIGIN_PORT
        proxy_port = a.proxy_port or LAB_PROXY_PORT
        origin = f"{_host(a.origin)}:{origin_port}"
        proxy = f"{_host(a.proxy)}:{proxy_port}"
        return {
            "origin": [python, "-m", "course.cli", "origin", "--name", self.origin_name, "--listen", origin,
                       "--allow-network", a.region_network],
            "proxy": [python, "-m", "course.cli", "serve", "--mode", "forward", "--listen", proxy,
                      "--allow", f"dst={a.origin} port={origin_port}", "--connect-port", str(origin_port),
                      "--source-address", a.proxy_source],
            "client-direct": ["curl", "-sS", f"http://{origin}/region"],
            "client-via-proxy": ["curl", "-sS", "--proxy", f"http://{proxy}", f"http://{origin}/region"],
        }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
