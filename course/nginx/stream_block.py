"""The ``stream {}`` block: passthrough listeners, written for nginx.

Theory of operation
-------------------
Passthrough never decrypts: nginx reads the ClientHello (``ssl_preread``), picks a
pool by its server_name through a ``map`` (exact names win over ``*.suffix``
patterns, route host ``"*"`` is the default, as in ``proxy/routing.py``) and splices
bytes to that pool's ``upstream``.  The TLS session is between client and origin;
the only timeouts are for the ClientHello, the backend connect and an idle tunnel.
"""

from __future__ import annotations

from proxy import config as cfg
from course.nginx.http_block import _servers
from course.nginx.syntax import _seconds, _upstream_name, _Writer

POOL_VARIABLE = "$tlsproxy_pool"


# --------------------------------------------------------------------------- stream: passthrough
def _stream_block(w: _Writer, config: cfg.Config, listeners: list[cfg.ListenerConfig]) -> None:
    t = config.timeouts
    w.comment("Passthrough: nginx reads the ClientHello (ssl_preread), picks a pool by its\n"
              "server_name and splices bytes; the TLS session is between client and origin.")
    entries, default = _sni_map(config.routes)
    with w.block(f"map $ssl_preread_server_name {POOL_VARIABLE}"):
        w("hostnames", "allow *.suffix patterns; exact names win over wildcards, as in routing.py")
        for name, pool in entries.items():
            w(f"{name} {_upstream_name(pool)}")
        if default:
            w(f"default {_upstream_name(default)}", "route host \"*\": no SNI or any other name")
        else:
            w.comment("no default: an unknown server_name gets the connection closed, as in tlsproxy")
    for name in sorted(set(entries.values()) | ({default} if default else set())):
        w.blank()
        pool = config.pool(name)
        with w.block(f"upstream {_upstream_name(pool.name)}"):
            w.comment(f"pool {pool.name!r}, strategy {pool.strategy}; backends speak TLS themselves")
            if pool.strategy == "least_connections":
                w("least_conn")
            _servers(w, pool)
    for listener in listeners:
        w.blank()
        with w.block("server"):
            w(f"listen {listener.listen}")
            w("ssl_preread on")
            w(f"preread_timeout {_seconds(t.handshake)}", "handshake: the ClientHello must arrive by then")
            w(f"proxy_pass {POOL_VARIABLE}")
            w(f"proxy_connect_timeout {_seconds(t.backend_connect)}", "backend_connect")
            w(f"proxy_timeout {_seconds(t.tunnel_idle)}", "tunnel_idle: a silent tunnel is closed")


def _sni_map(routes: tuple[cfg.RouteConfig, ...]) -> tuple[dict[str, str], str | None]:
    """server_name pattern -> pool, and the pool for "*" (Router.route_sni's choices)."""
    entries: dict[str, str] = {}
    default = None
    for route in routes:
        pattern = (route.sni or route.host).lower()
        if pattern == "*":
            default = default or route.pool
        else:
            entries.setdefault(pattern, route.pool)  # routing.py: the first route of a rank wins
    return entries, default
