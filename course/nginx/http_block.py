"""The ``http {}`` block: terminate and re-encrypt listeners, written for nginx.

Theory of operation
-------------------
One nginx ``server`` per name a route or a certificate knows (exact names, then
wildcards, then the ``default_server``), each with the certificate our SNI callback
would pick for that name.  Inside it, one ``location`` per route prefix, each sent
to the ``upstream`` of the pool our router would choose: the router itself is asked
(``_locations``), so the two cannot disagree.  Pools become ``upstream`` blocks
(strategy, weights, passive health, idle keep-alive); https:// pools get the
``proxy_ssl_*`` directives of nginx as a TLS client (re-encrypt), said once for the
whole block when every https pool has the same settings.  ``_http_settings``
translates Timeouts and Limits, each line naming its source.  A listener whose ALPN
offers ``h2`` gets nginx's HTTP/2 in the spelling of the target nginx version
(``_listen_http2``) and ``_http2_settings`` once for the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy import config as cfg
from proxy.errors import ConfigError
from course.nginx.installed import parse_version, target_version
from course.nginx.syntax import _quote, _seconds, _size, _upstream_name, _Writer
from proxy.routing import Router, host_matches, normalize_host
from proxy.tls.contexts import INTERMEDIATE_CIPHERS, _certificate_names

# Mozilla intermediate (https://ssl-config.mozilla.org/, nginx 1.22, OpenSSL 3.0): the same
# profile proxy/tls/contexts.py builds for our listeners, in nginx's spelling.
SSL_PROTOCOLS = "TLSv1.2 TLSv1.3"
SSL_ECDH_CURVE = "X25519:prime256v1:secp384r1"
# Debian's CA bundle: what our client context's load_default_certs() trusts too.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# https://nginx.org/en/docs/http/ngx_http_v2_module.html#http2: the `http2 on;` directive
# "appeared in version 1.25.1"; before it HTTP/2 is the `http2` parameter of `listen`
# (https://nginx.org/en/docs/http/ngx_http_core_module.html#listen), which 1.25.1 deprecated
# (CHANGES-1.25: 'the "http2" parameter of the "listen" directive is now deprecated').
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
# https://nginx.org/en/docs/http/ngx_http_v2_module.html#http2_max_concurrent_streams
NGINX_MAX_CONCURRENT_STREAMS = 128


@dataclass(frozen=True)
class _Options:
    """Knobs the benchmark turns that a TOML Config does not have."""

    protocols: str = SSL_PROTOCOLS
    upstream_keepalive: bool = True
    nginx_version: str | None = None  # the syntax to write for; None: target_version()


# --------------------------------------------------------------------------- http: terminate and re-encrypt
def _http_block(w: _Writer, config: cfg.Config, listeners: list[cfg.ListenerConfig], under, options: _Options) -> None:
    _http_settings(w, config, under, options)
    version = parse_version(options.nginx_version) if options.nginx_version else target_version()
    if any("h2" in listener.alpn for listener in listeners):
        _http2_settings(w, config, listeners, version)
    router = Router(config.routes)
    servers = [(listener, _server_names(listener, config.routes)) for listener in listeners]
    used = sorted({pool for _, names in servers for name in names
                   for pool in _locations(router, name, config.routes).values() if pool})
    # Backend TLS (re-encrypt) is per pool; when every https pool has the same settings,
    # they are said once for the whole http block instead of in every location.
    backend_tls = {name: _backend_tls(config.pool(name)) for name in used
                   if config.pool(name).backends[0].scheme == "https"}
    shared = len({"\n".join(tls.lines) for tls in backend_tls.values()}) == 1
    if shared:
        w.blank()
        w.comment("Backend TLS (re-encrypt): the same for every https:// pool.")
        w.extend(next(iter(backend_tls.values())))
    for name in used:
        w.blank()
        _http_upstream(w, config.pool(name), config, options)
    for listener, names in servers:
        for name in names:
            w.blank()
            locations = _locations(router, name, config.routes)
            _http_server(w, config, listener, name, locations, {} if shared else backend_tls, version)


def _http_settings(w: _Writer, config: cfg.Config, under, options: _Options) -> None:
    t, limits, http = config.timeouts, config.limits, config.limits.http
    w('log_format tlsproxy \'$remote_addr "$request" $status $body_bytes_sent '
      '$ssl_protocol $ssl_cipher $request_time upstream=$upstream_addr\'')
    if config.access_log is None:
        w("access_log off")
    else:
        target = "/dev/stderr" if config.access_log == "-" else config.access_log
        w(f"access_log {target} tlsproxy", "[proxy] access_log")
    w.blank()
    w.comment("Client side: Timeouts and Limits of the TOML file.")
    w(f"client_header_timeout {_seconds(t.header_read)}", "header_read; also bounds the TLS handshake (slowloris)")
    w(f"client_body_timeout {_seconds(t.body_read)}", "body_read")
    w(f"keepalive_timeout {_seconds(t.idle_keepalive)}", "idle_keepalive")
    w(f"send_timeout {_seconds(t.send)}", "send")
    w(f"keepalive_requests {limits.max_requests_per_connection}", "max_requests_per_connection")
    line = max(http.max_request_line, http.max_field_line)
    count = max(2, -(-http.max_head_size // line))
    w(f"large_client_header_buffers {count} {_size(line)}",
      "max_request_line/max_field_line; count x size ~ max_head_size (-> 414/431 beyond)")
    w(f"client_max_body_size {_size(http.max_body_size)}", "max_body_size (-> 413)")
    w("merge_slashes off", "route on the path as sent, as tlsproxy does")
    w.comment("One difference remains: nginx matches locations on the decoded, dot-segment-resolved\n"
              "path ($uri: /%61pi/ and /x/../api/ are /api/), tlsproxy on the request-target as sent.")
    w.blank()
    w.comment("TLS to clients: Mozilla intermediate, as proxy/tls/contexts.py.")
    w(f"ssl_protocols {options.protocols}")
    w(f"ssl_ciphers {INTERMEDIATE_CIPHERS}", "TLS 1.2 suites; TLS 1.3 suites are OpenSSL's (all AEAD)")
    w(f"ssl_ecdh_curve {SSL_ECDH_CURVE}")
    w("ssl_prefer_server_ciphers off", "every suite is strong: let the client pick (ChaCha20 on phones)")
    w("ssl_session_cache shared:TLS:10m")
    w("ssl_session_timeout 1d")
    # Mozilla's generator says `ssl_session_tickets off` because nginx keeps one ticket key
    # for its whole life (no forward secrecy for resumed sessions).  Our proxy issues
    # tickets, so we keep them to compare like with like; a deployment rotates keys with
    # `ssl_session_ticket_key` files.
    w("ssl_session_tickets on")
    w.blank()
    w.comment("Backend side.")
    w("proxy_http_version 1.1", "keep-alive to backends needs HTTP/1.1 ...")
    w('proxy_set_header Connection ""', "... and no `Connection: close` from nginx")
    w("proxy_set_header Host $http_host", "the client's Host, unchanged (nginx's default is the upstream name)")
    w("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for")
    w("proxy_set_header X-Forwarded-Proto $scheme")
    w("proxy_set_header X-Forwarded-Host $host")
    w(f"proxy_connect_timeout {_seconds(t.backend_connect)}", "backend_connect")
    w(f"proxy_read_timeout {_seconds(t.backend_read)}", "backend_read")
    w(f"proxy_send_timeout {_seconds(t.backend_read)}", "backend_read (nginx splits it by direction)")
    w("proxy_request_buffering off", "stream request bodies, as tlsproxy does")
    w("proxy_max_temp_file_size 0", "never spill a response to disk: memory buffers, then pass through")
    for kind in TEMP_DIRS:
        w(f"{kind}_temp_path {under(kind + '_temp')}")


def _http2_settings(w: _Writer, config: cfg.Config, listeners: list[cfg.ListenerConfig],
                    version: tuple[int, ...]) -> None:
    """HTTP/2 to clients (a listener with alpn h2), and where nginx's HTTP/2 is not ours."""
    streams = config.limits.max_concurrent_streams
    w.blank()
    # nginx CHANGES 1.19.7: "the http2_recv_timeout, http2_idle_timeout, and http2_max_requests
    # directives have been removed, the keepalive_timeout and keepalive_requests directives
    # should be used instead" (https://nginx.org/en/CHANGES).
    w.comment(f"HTTP/2 to clients (alpn h2; written for nginx {'.'.join(map(str, version))}).  Both speak\n"
              "HTTP/1.1 to the backend, and both time an idle HTTP/2 connection out with keepalive_timeout.")
    w(f"http2_max_concurrent_streams {streams}",
      f"Limits.max_concurrent_streams (nginx's default is {NGINX_MAX_CONCURRENT_STREAMS})")
    # What nginx 1.22.1 does with requests our downgrade refuses was tried live:
    # tests/integration/test_nginx_export.py::test_h2_requests_nginx_forwards_and_tlsproxy_refuses.
    w.comment("Where nginx differs: nginx normalises some HTTP/2 requests that tlsproxy refuses\n"
              "(proxy/h2/downgrade.py: RST_STREAM PROTOCOL_ERROR, nothing forwarded).  nginx forwards a\n"
              "request carrying a connection-specific field (connection, keep-alive, upgrade, `te: gzip`)\n"
              "without that field, where RFC 9113 §8.2.2 calls the request malformed; it also forwards a\n"
              "pseudo-header after a regular field, a '#' in :path and userinfo in :authority (§8.3, §8.3.1).")
    for listener in listeners:
        if "h2" in listener.alpn and "http/1.1" not in listener.alpn:
            w.comment(f"listener {listener.listen} offers h2 only; nginx always offers http/1.1 beside h2.")


def _listen_http2(version: tuple[int, ...]) -> tuple[str, str | None]:
    """(listen parameter, directive) that turn HTTP/2 on for ``version`` (see HTTP2_DIRECTIVE_SINCE)."""
    return ("", "http2 on") if version >= HTTP2_DIRECTIVE_SINCE else (" http2", None)


def _http_upstream(w: _Writer, pool: cfg.PoolConfig, config: cfg.Config, options: _Options) -> None:
    schemes = {b.scheme for b in pool.backends}
    if len(schemes) > 1:
        raise ConfigError(f"pool {pool.name!r} mixes http and https backends: nginx needs one scheme per upstream")
    with w.block(f"upstream {_upstream_name(pool.name)}"):
        w.comment(f"pool {pool.name!r}, strategy {pool.strategy}")
        if pool.strategy == "least_connections":
            w("least_conn")
        _servers(w, pool)
        if options.upstream_keepalive:
            w(f"keepalive {config.limits.pool_max_idle}", "Limits.pool_max_idle: idle connections kept")
            w(f"keepalive_timeout {_seconds(config.timeouts.pool_idle)}", "Timeouts.pool_idle")


def _servers(w: _Writer, pool: cfg.PoolConfig) -> None:
    """``server`` lines: passive health as max_fails/fail_timeout, weights when weighted."""
    health = pool.health
    w.comment("nginx's default proxy_next_upstream (error timeout) sends a request whose backend\n"
              "failed to the next server; tlsproxy answers 502 and retries only a stale kept-alive\n"
              "connection, once, for an idempotent request without a body.  A one-server group is\n"
              "never ejected by nginx (max_fails is ignored); tlsproxy ejects it and answers 503.")
    if health.path:
        w.comment(f"active checks of {health.path} are an nginx Plus feature (health_check);\n"
                  "open-source nginx only ejects a backend passively, after max_fails failures.")
    for backend in pool.backends:
        weight = f" weight={backend.weight}" if pool.strategy == "weighted" else ""
        w(f"server {cfg.Address(backend.host, backend.port)}{weight} "
          f"max_fails={health.max_fails} fail_timeout={_seconds(health.fail_timeout)}")


def _server_names(listener: cfg.ListenerConfig, routes: tuple[cfg.RouteConfig, ...]) -> list[str]:
    """One nginx ``server`` per name a route or a certificate knows, then the default ("")."""
    names: dict[str, None] = {}
    for route in routes:
        if route.host != "*":
            names[route.host.lower()] = None
    for files in listener.certs:
        for name in _certificate_names(files.cert):
            names[name.lower().rstrip(".")] = None
    exact = [n for n in names if not n.startswith("*.")]
    wildcard = [n for n in names if n.startswith("*.")]
    return exact + wildcard + [""]


def _locations(router: Router, server_name: str, routes: tuple[cfg.RouteConfig, ...]) -> dict[str, str | None]:
    """nginx ``location`` -> pool for requests to ``server_name`` ("" = any other host).

    Our router ranks routes by (host rank, prefix length).  For a request whose longest
    matching route prefix is P, the routes that match it are exactly those that match
    P itself, so asking the router about the path P gives the pool nginx's
    ``location P`` must use.  The server name is its own stand-in host: "*.x.test"
    matches routes for "*.x.test" (and "*") but no exact name.
    """
    prefixes = {"/"} | {route.path for route in routes if _host_rank(route.host, server_name)}
    candidates: list[str] = []
    for prefix in prefixes:
        if prefix == "/" or prefix.endswith("/"):
            candidates.append(prefix)
        else:  # segment boundary: "/api" is "/api" itself and everything under "/api/"
            candidates += ["= " + prefix, prefix + "/"]
    locations: dict[str, str | None] = {}
    for location in sorted(set(candidates), key=lambda loc: (len(loc.removeprefix("= ")), loc)):
        path = location.removeprefix("= ")
        pool = router.route(server_name, path)
        # Leave out a location that sends to the same pool as the one enclosing it.
        enclosing = max((loc for loc in locations if not loc.startswith("= ") and path.startswith(loc)),
                        key=len, default=None)
        if enclosing is None or locations[enclosing] != pool:
            locations[location] = pool
    return locations


def _host_rank(pattern: str, server_name: str) -> int:
    return host_matches(pattern, normalize_host(server_name))


def _certificate_for(listener: cfg.ListenerConfig, server_name: str) -> cfg.CertFiles:
    """The certificate our SNI callback serves for ``server_name`` (exact, wildcard, first)."""
    exact, wildcard = {}, {}
    for files in listener.certs:
        for name in _certificate_names(files.cert):
            name = name.lower().rstrip(".")
            table, key = (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
            table.setdefault(key, files)
    if server_name.startswith("*."):
        return wildcard.get(server_name[2:], listener.certs[0])
    return exact.get(server_name) or wildcard.get(server_name.partition(".")[2]) or listener.certs[0]


def _http_server(w: _Writer, config: cfg.Config, listener: cfg.ListenerConfig, name: str,
                 locations: dict[str, str | None], backend_tls: dict[str, _Writer],
                 version: tuple[int, ...]) -> None:
    default = " default_server" if not name else ""
    parameter, directive = _listen_http2(version) if "h2" in listener.alpn else ("", None)
    with w.block("server"):
        w(f"listen {listener.listen} ssl{parameter}{default}",
          "alpn h2: HTTP/2 (the listen parameter before nginx 1.25.1)" if parameter else "")
        if directive:
            w(directive, "alpn h2: HTTP/2 (nginx 1.25.1 and later)")
        w(f"server_name {name or '_'}", "any other Host (route host \"*\")" if not name else "")
        files = _certificate_for(listener, name)
        w(f"ssl_certificate {_quote(files.cert)}")
        w(f"ssl_certificate_key {_quote(files.key)}")
        for location, pool in locations.items():
            with w.block(f"location {location}"):
                if pool is None:
                    w("return 404", "no route: tlsproxy answers 404 too")
                elif config.pool(pool).backends[0].scheme == "http":
                    w(f"proxy_pass http://{_upstream_name(pool)}")
                else:
                    w(f"proxy_pass https://{_upstream_name(pool)}", "re-encrypt: TLS again to the origin")
                    if pool in backend_tls:
                        w.extend(backend_tls[pool])


def _backend_tls(pool: cfg.PoolConfig) -> _Writer:
    """The proxy_ssl_* directives for an https:// pool: nginx as a TLS client."""
    # nginx's default is *not* to verify the backend (proxy_ssl_verify off): a proxy that
    # does not verify can be pointed at anyone (a man in the middle on the backend network).
    w, tls = _Writer(), pool.tls
    w("proxy_ssl_protocols TLSv1.2 TLSv1.3")
    w("proxy_ssl_session_reuse on", "resume the backend session: one full handshake per connection kept")
    if tls.verify:
        w("proxy_ssl_verify on")
        w(f"proxy_ssl_trusted_certificate {_quote(tls.ca or SYSTEM_CA_BUNDLE)}")
        w("proxy_ssl_verify_depth 2")
    else:
        w("proxy_ssl_verify off", "verify = false in the TOML: lab only")
    w("proxy_ssl_server_name on", "send SNI")
    if tls.sni_from_host:
        w("proxy_ssl_name $host", "sni_from_host")
    else:
        _backend_server_name(w, pool)
    if tls.cert:
        w(f"proxy_ssl_certificate {_quote(tls.cert)}", "mutual TLS: the proxy's client certificate")
        w(f"proxy_ssl_certificate_key {_quote(tls.key or tls.cert)}")
    return w


def _backend_server_name(w: _Writer, pool: cfg.PoolConfig) -> None:
    if pool.tls.server_name:
        w(f"proxy_ssl_name {pool.tls.server_name}", "tls.server_name: SNI and the name verified")
        return
    hosts = sorted({b.host for b in pool.backends})
    # nginx has one name per upstream (default: the upstream's own name); we default to
    # each backend's host.
    w(f"proxy_ssl_name {hosts[0]}", "the backend host, as tlsproxy does without tls.server_name")
    if len(hosts) > 1:
        w.comment(f"WARNING: pool {pool.name!r}: nginx verifies backends {', '.join(hosts)} against one name; "
                  "set tls.server_name")
    if cfg.is_ip(hosts[0]) and pool.tls.verify:
        w.comment(f"WARNING: pool {pool.name!r}: nginx cannot verify an IP address; set tls.server_name\n"
                  "(nginx checks the name with X509_check_host(), which matches DNS names only, and\n"
                  "sends no SNI for an IP: without a DNS name from the certificate, every request is a 502;\n"
                  "Python's ssl, which tlsproxy uses, does match IP address SANs)")
