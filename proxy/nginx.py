"""The scale-out path: the same configuration, written for nginx.

Theory of operation
-------------------
This proxy is written to be read, not to carry a million users.  When a setup has
to scale out, the lab's answer is nginx, and this module shows that nothing is lost
in translation: ``export_nginx(config)`` writes the ``nginx.conf`` that does what
one of our TOML files does, directive by directive, and ``NginxProcess`` runs it
beside our proxy so the tests can send the same requests to both and compare::

    TOML ──config.load()──▶ Config ──export_nginx()──▶ nginx.conf ──NginxProcess──▶ nginx -p DIR
                              └──────ProxyServer(config)──▶ our proxy        (same answers)

How each part of a ``Config`` maps:

=====================================  ===========================================================
ours                                   nginx
=====================================  ===========================================================
terminate listener, certs by SNI       ``http { server { listen ... ssl; ssl_certificate ... } }``,
                                       one ``server`` per name, each with the certificate our SNI
                                       callback would pick for that name
route host: exact > ``*.x`` > ``*``    ``server_name`` exact > wildcard > ``default_server``
route path (longest prefix wins,       ``location`` (longest prefix wins); ``/api`` becomes
matched at a segment boundary)         ``location = /api`` plus ``location /api/``
pool, round_robin                      ``upstream`` (round robin is nginx's default)
least_connections / weighted           ``least_conn;`` / ``server ... weight=N``
passive health                         ``max_fails=N fail_timeout=Ts``
pool_max_idle                          ``keepalive N`` (with HTTP/1.1 and an empty Connection)
https:// backends (re-encrypt)         ``proxy_pass https://``, ``proxy_ssl_*``
passthrough listener (SNI splice)      ``stream { map $ssl_preread_server_name ...; ssl_preread }``
forward listener                       nothing: nginx is no forward proxy (no CONNECT)
Timeouts / Limits                      see ``_http_settings`` (each line names its source)
=====================================  ===========================================================

What does not translate, said in the output as comments: active health checks
(``health.path`` is an nginx Plus feature; open-source nginx only ejects passively),
the forward proxy, and a few parsing differences (nginx matches locations on the
decoded, dot-segment-resolved path; we match the raw request-target).

The file is self-contained: ``nginx -p PREFIX -c FILE`` runs it without reading
``/etc/nginx`` or writing ``/var/log``: pid file, error log and every temporary
directory live under the prefix, and the stream module (a separate package on
Debian, ``libnginx-mod-stream``) is loaded by absolute path when it is dynamic.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from proxy import config as cfg
from proxy.errors import ConfigError
from proxy.routing import Router, host_matches, normalize_host
from proxy.tls.contexts import INTERMEDIATE_CIPHERS, _certificate_names

# Mozilla intermediate (https://ssl-config.mozilla.org/, nginx 1.22, OpenSSL 3.0): the same
# profile proxy/tls/contexts.py builds for our listeners, in nginx's spelling.
SSL_PROTOCOLS = "TLSv1.2 TLSv1.3"
SSL_ECDH_CURVE = "X25519:prime256v1:secp384r1"
# Debian's CA bundle: what our client context's load_default_certs() trusts too.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STREAM_MODULE_PACKAGE = "libnginx-mod-stream"
POOL_VARIABLE = "$tlsproxy_pool"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# --------------------------------------------------------------------------- the installed nginx
def nginx_path() -> str | None:
    """The nginx binary (PATH, then /usr/sbin), or None when nginx is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def _require_nginx() -> str:
    path = nginx_path()
    if not path:
        raise ConfigError("nginx is not installed (apt-get install nginx-light)")
    return path


@functools.lru_cache(maxsize=None)
def _build_info(path: str) -> str:
    """``nginx -V``: version and configure arguments (nginx prints them on stderr)."""
    done = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10)
    return done.stderr + done.stdout


def nginx_version() -> str:
    """'1.22.1' for the installed nginx."""
    info = _build_info(_require_nginx())
    match = re.search(r"nginx/(\S+)", info)
    if not match:
        raise ConfigError(f"cannot read the nginx version from: {info.strip()[:80]}")
    return match.group(1)


def stream_module_path() -> str | None:
    """Where the dynamic stream module must be, or None when nginx has it built in.

    Debian builds ``--with-stream=dynamic`` and ships the module in its own package,
    so a stock nginx-light cannot read a ``stream {}`` block until that package is
    installed and the module is loaded.
    """
    path = nginx_path()
    info = _build_info(path) if path else "--with-stream=dynamic"
    if "--with-stream=dynamic" not in info:
        return None
    modules = re.search(r"--modules-path=(\S+)", info)
    return f"{modules.group(1) if modules else '/usr/lib/nginx/modules'}/ngx_stream_module.so"


# --------------------------------------------------------------------------- writing nginx syntax
class _Writer:
    """Indented nginx directives and blocks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, directive: str, comment: str = "") -> None:
        text = f"{directive};" if directive else ""
        if comment:
            text = f"{text}  # {comment}" if text else f"# {comment}"
        self.lines.append("    " * self.depth + text)

    def comment(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.append("    " * self.depth + f"# {line}".rstrip())

    def blank(self) -> None:
        self.lines.append("")

    def extend(self, other: _Writer) -> None:
        self.lines += ["    " * self.depth + line if line else "" for line in other.lines]

    @contextlib.contextmanager
    def block(self, header: str):
        self.lines.append("    " * self.depth + header + " {")
        self.depth += 1
        yield
        self.depth -= 1
        self.lines.append("    " * self.depth + "}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _seconds(value: float) -> str:
    """nginx time syntax: 10.0 -> '10s', 0.25 -> '250ms'."""
    return f"{int(value)}s" if value == int(value) else f"{round(value * 1000)}ms"


def _size(value: int) -> str:
    """nginx size syntax: 8192 -> '8k', 1 << 30 -> '1024m' (nginx sizes stop at m)."""
    for unit, factor in (("m", 1 << 20), ("k", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:*\-$]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _upstream_name(pool: str) -> str:
    """A pool name as an nginx upstream name (one word)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pool)


# --------------------------------------------------------------------------- the export
@dataclass(frozen=True)
class _Options:
    """Knobs the benchmark turns that a TOML Config does not have."""

    protocols: str = SSL_PROTOCOLS
    upstream_keepalive: bool = True


def export_nginx(config: cfg.Config, *, prefix: str | None = None) -> str:
    """The nginx.conf that does what ``config`` does (see the module docstring).

    Paths nginx writes (pid, error log, temporary files) go under ``prefix``, or are
    left relative so that ``nginx -p PREFIX`` puts them there.  Forward listeners
    have no nginx equivalent and are skipped with a comment; ``skipped_listeners``
    tells a caller which.
    """
    return _render(config, prefix, _Options())


def skipped_listeners(config: cfg.Config) -> list[cfg.ListenerConfig]:
    """The listeners ``export_nginx`` cannot translate (forward proxies)."""
    return [listener for listener in config.listeners if listener.mode == "forward"]


def _render(config: cfg.Config, prefix: str | None, options: _Options) -> str:
    for listener in config.listeners:
        if listener.listen.port == 0 and listener.mode != "forward":
            raise ConfigError(f"listener {listener.listen}: nginx cannot listen on port 0; give a port")
    w = _Writer()
    under = (lambda name: str(Path(prefix) / name)) if prefix else (lambda name: name)
    terminate = [li for li in config.listeners if li.mode == "terminate"]
    passthrough = [li for li in config.listeners if li.mode == "passthrough"]
    w.comment("Written by `tlsproxy export nginx`: the nginx equivalent of a TLS Termination Lab config.\n"
              f"Run it with:  nginx -p {prefix or 'PREFIX'} -c {under('nginx.conf')}")
    if passthrough and (module := stream_module_path()):
        w(f"load_module {module}", f"stream {{}} needs it: apt-get install {STREAM_MODULE_PACKAGE}")
    _main_settings(w, config, under)
    for listener in skipped_listeners(config):
        w.comment(f"listener {listener.listen} (mode forward) is not exported: nginx is not a forward proxy\n"
                  "(it has no CONNECT method and no absolute-form request handling); run tlsproxy for it.")
    if terminate:
        w.blank()
        with w.block("http"):
            _http_block(w, config, terminate, under, options)
    if passthrough:
        w.blank()
        with w.block("stream"):
            _stream_block(w, config, passthrough)
    return w.text()


def _main_settings(w: _Writer, config: cfg.Config, under) -> None:
    w.comment("No `user` directive: started as root, nginx runs its worker as `nobody`.  That is\n"
              "enough: the master reads every certificate and key and opens every log before it\n"
              "forks, and the worker never writes a temporary file (request bodies are streamed,\n"
              "responses never spill to disk), so it needs no access to the prefix directory.")
    w("worker_processes 1", "one worker: compared with our one process, CPU for CPU")
    w("daemon off", "stay in the foreground, a child of whoever started it")
    w(f"pid {under('nginx.pid')}")
    w(f"error_log {under('error.log')} warn")
    w(f"lock_file {under('nginx.lock')}")
    w(f"worker_shutdown_timeout {_seconds(config.timeouts.shutdown_grace)}", "Timeouts.shutdown_grace")
    connections = 2 * config.limits.max_connections + 64
    w(f"worker_rlimit_nofile {connections + 64}", "a file descriptor per connection, and a few for files")
    w.blank()
    with w.block("events"):
        w(f"worker_connections {connections}",
          "Limits.max_connections x 2 (client and backend leg), plus listeners")


# --------------------------------------------------------------------------- http: terminate and re-encrypt
def _http_block(w: _Writer, config: cfg.Config, listeners: list[cfg.ListenerConfig], under, options: _Options) -> None:
    _http_settings(w, config, under, options)
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
            _http_server(w, config, listener, name, locations, {} if shared else backend_tls)


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
                 locations: dict[str, str | None], backend_tls: dict[str, _Writer]) -> None:
    default = " default_server" if not name else ""
    with w.block("server"):
        w(f"listen {listener.listen} ssl{default}")
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


# --------------------------------------------------------------------------- the benchmark's reference
def terminate_conf(listen_port: int, cert: str, key: str, upstreams: list[tuple[str, int]], *,
                   workdir: str, tls13_only: bool = False, keepalive: bool = True,
                   listen_host: str = "127.0.0.1") -> str:
    """nginx terminating TLS in front of plain-HTTP ``upstreams`` (round robin), one worker.

    The production reference of the benchmark: the terminate setup, no access log.
    ``tls13_only`` offers TLS 1.3 alone; ``keepalive=False`` opens a new backend
    connection per request (clients decide their own keep-alive).
    """
    pool = cfg.PoolConfig("origin", tuple(
        cfg.BackendConfig(url=f"http://{cfg.Address(h, p)}", scheme="http", host=h, port=p)
        for h, p in upstreams))
    config = cfg.Config(
        listeners=(cfg.ListenerConfig(cfg.Address(listen_host, listen_port), "terminate",
                                      (cfg.CertFiles(str(cert), str(key)),)),),
        pools=(pool,), routes=(cfg.RouteConfig("origin"),), access_log=None)
    options = _Options(protocols="TLSv1.3" if tls13_only else SSL_PROTOCOLS, upstream_keepalive=keepalive)
    return _render(config, str(workdir), options)


# --------------------------------------------------------------------------- running nginx
class NginxProcess:
    """nginx on a configuration text, as a child process; a context manager.

    >>> with NginxProcess(export_nginx(config), workdir) as nginx:   # doctest: +SKIP
    ...     print(nginx.pid, nginx.worker_pids())

    ``start`` writes ``workdir/nginx.conf``, checks it with ``nginx -t`` (a mistake is a
    ``ConfigError`` carrying nginx's own one-line message), starts the master in the
    foreground and waits until every ``listen`` port accepts.
    """

    def __init__(self, conf_text: str, workdir: str | os.PathLike[str], *, ready_timeout: float = 10.0):
        self.conf_text = conf_text
        self.workdir = Path(workdir).resolve()
        self.conf = self.workdir / "nginx.conf"
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def _command(self, *extra: str) -> list[str]:
        return [_require_nginx(), "-p", f"{self.workdir}/", "-c", str(self.conf), *extra]

    def check(self) -> None:
        """``nginx -t``: raise ConfigError with nginx's first complaint."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.conf_text)
        done = subprocess.run(self._command("-t", "-q"), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise ConfigError(f"nginx rejected {self.conf}: {_first_complaint(done.stderr)}")

    def start(self) -> NginxProcess:
        self.check()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "nginx.pid").unlink()
        stderr = open(self.workdir / "stderr.log", "wb")  # a file: a full pipe would stall nginx
        with stderr:
            self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The master's pid."""
        if self.process is None:
            raise RuntimeError("nginx is not started")
        return self.process.pid

    def listen_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every ``listen`` in the configuration."""
        addresses = []
        for text in re.findall(r"^\s*listen\s+(\S+?)[\s;]", self.conf_text, re.MULTILINE):
            address = cfg.parse_address(text if ":" in text else f"0.0.0.0:{text}")
            addresses.append((address.host, address.port))
        return list(dict.fromkeys(addresses))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the pid file exists (nginx writes it after binding every socket),
        every listen port accepts and the worker runs."""
        deadline = time.monotonic() + timeout
        pending = self.listen_addresses()
        pid_file = self.workdir / "nginx.pid"
        while True:
            if self.process.poll() is not None:
                raise ConfigError(f"nginx exited with status {self.process.returncode}: {self._complaint()}")
            if pid_file.exists() and self.worker_pids():
                pending = [a for a in pending if not _accepts(a)]
                if not pending:
                    return
            if time.monotonic() > deadline:
                raise ConfigError(f"nginx not ready after {timeout}s (waiting for {pending}): {self._complaint()}")
            time.sleep(0.02)

    def worker_pids(self) -> list[int]:
        """The master's children: with ``worker_processes 1``, the one worker."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in children.read_text().split()]
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return found

    def pids(self) -> list[int]:
        """Master and workers: the processes whose CPU time a benchmark adds up."""
        return [self.pid, *self.worker_pids()]

    def _complaint(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.workdir / name).read_text(errors="replace")
        return _first_complaint(text)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGQUIT (graceful: finish requests in flight), then SIGTERM, then SIGKILL.  Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
                return

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except OSError:
        return False
    return True


def _first_complaint(text: str) -> str:
    """nginx's first [emerg]/[alert]/[crit] line, without the 'nginx: ' prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        match = re.match(r"(?:nginx: )?(?:[\d/]+ [\d:]+ )?\[(emerg|alert|crit)\] (?:\d+#\d+: )?(.*)", line)
        if match:
            line = f"[{match.group(1)}] {match.group(2)}"
            if "ngx_stream_module.so" in line or 'unknown directive "stream"' in line:
                line += f" (install it: apt-get install {STREAM_MODULE_PACKAGE})"
            return line
    return lines[0] if lines else "no message"


# --------------------------------------------------------------------------- tlsproxy export
def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write the nginx configuration that does what a tlsproxy TOML file does "
                          "(terminate, re-encrypt, passthrough; forward listeners have no nginx equivalent).")
    parser.add_argument("target", choices=["nginx"], help="what to export to (nginx only, for now)")
    parser.add_argument("--config", required=True, metavar="FILE", help="tlsproxy TOML configuration")
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--prefix", metavar="DIR",
                        help="where nginx keeps its pid, logs and temp files (default: nginx -p decides)")


def run_cli(args: argparse.Namespace) -> int:
    config = cfg.load(args.config)
    prefix = os.path.abspath(args.prefix) if args.prefix else None
    text = export_nginx(config, prefix=prefix)
    warnings = [line.strip().removeprefix("# ") for line in text.splitlines() if "# WARNING:" in line]
    for warning in dict.fromkeys(warnings):
        print(f"tlsproxy export: {warning}", file=sys.stderr)
    for listener in skipped_listeners(config):
        print(f"tlsproxy export: listener {listener.listen} is a forward proxy; nginx has no equivalent "
              "(no CONNECT), so it is left out", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text)
        print(f"tlsproxy export: wrote {args.out}; run it with: nginx -p {prefix or 'DIR'} -c "
              f"{os.path.abspath(args.out)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
