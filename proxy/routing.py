"""Routing: which pool serves a request, by Host and path (or by SNI in passthrough).

Theory of operation
-------------------
A reverse proxy in front of several applications must decide, for each request,
which application gets it.  After TLS termination it can read everything: the
``Host`` field and the path.  In passthrough it sees only the ClientHello, so the
TLS ``server_name`` (SNI) is all it has.

Routes are tried most specific first, the way nginx picks a ``server`` by name and
then a ``location`` by longest prefix:

1. host: an exact name beats a ``*.suffix`` wildcard, which beats ``*``;
2. path: among routes for the same host kind, the longest matching prefix wins.

A path prefix matches at a segment boundary: ``/api`` matches ``/api`` and
``/api/users`` but not ``/apiary`` (nginx's ``location /api/`` idiom, spelled out).
"""

from __future__ import annotations

from proxy.config import RouteConfig


def normalize_host(host: str | None) -> str:
    """Lower-case, without port and trailing dot: 'WWW.Example.test.:8443' -> 'www.example.test'."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal: [::1]:8443
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_matches(pattern: str, host: str) -> int:
    """0 if no match, else a rank: 3 exact, 2 wildcard (longer suffix higher), 1 any."""
    pattern = pattern.lower()
    if pattern == "*":
        return 1
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.test"
        return 2 if host.endswith(suffix) and len(host) > len(suffix) else 0
    return 3 if pattern == host else 0


def path_matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix + "/") or path.startswith(prefix + "?")


class Router:
    """Chooses a pool name for (host, path) or for an SNI server_name."""

    def __init__(self, routes: tuple[RouteConfig, ...]):
        self.routes = routes

    def route(self, host: str | None, path: str) -> str | None:
        """The pool for an HTTP request, or None if no route matches (answered 404)."""
        host = normalize_host(host)
        best: tuple[int, int] | None = None
        chosen = None
        for route in self.routes:
            rank = host_matches(route.host, host)
            if rank and path_matches(route.path, path):
                key = (rank, len(route.path))
                if best is None or key > best:
                    best, chosen = key, route.pool
        return chosen

    def route_sni(self, server_name: str | None) -> str | None:
        """The pool for a passthrough connection, by SNI (routes' ``sni`` or ``host``)."""
        name = normalize_host(server_name)
        best, chosen = 0, None
        for route in self.routes:
            pattern = route.sni or route.host
            rank = host_matches(pattern, name) if (name or pattern == "*") else 0
            if rank > best:
                best, chosen = rank, route.pool
        return chosen
