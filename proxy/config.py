"""Configuration: a TOML file (or command-line flags) turned into frozen dataclasses.

Theory of operation
-------------------
Everything the proxy can be told lives in one ``Config`` tree of frozen dataclasses,
built in exactly two ways: ``load(path)`` reads a TOML file, ``from_flags(...)``
builds the one-listener, one-pool case from ``tlsproxy serve`` flags.  Both end in
``validate()``, so a mistake is found at start and reported as one ``ConfigError``
line that names it (an unknown key, a missing file, a pool nobody defined), never
as a traceback halfway through the first request.

The file, in brief (the README documents every key; ``lab/configs/`` has examples)::

    [[listeners]]
    listen = "127.0.0.1:8443"
    mode = "terminate"                # terminate | passthrough | forward | redirect
    certs = [{ cert = "certs/www.example.test.pem", key = "certs/www.example.test.key" }]

    [[pools]]
    name = "web"
    strategy = "round_robin"          # round_robin | least_connections | weighted
    backends = ["http://127.0.0.1:9001", { url = "http://127.0.0.1:9002", weight = 2 }]

    [[routes]]
    host = "www.example.test"         # or "*.example.test", or "*" (any)
    path = "/"                        # a path prefix
    pool = "web"

A pool whose backends are ``https://`` URLs is reached over TLS: that is the
re-encrypt setup (hop-by-hop TLS: two sessions, the plaintext in the proxy between them).

A passthrough listener speaks no HTTP to its backends: it splices the client's TLS
bytes over TCP.  Its pools name backends as plain ``HOST:PORT`` (``127.0.0.1:9445``,
``[::1]:9445``); ``http://`` and ``https://`` are still accepted there (an ``https://``
passthrough pool can have active health checks, over TLS).  A terminate listener
routes HTTP to its pools, so a bare ``HOST:PORT`` there is an error that asks for
``http://`` or ``https://``: which one is the difference between setups 3 and 4.

A ``mode = "forward"`` listener needs no pools: its ``[forward]`` section (rules,
``connect_ports``, ``http_ports``, ``source_address``, ``hosts``) is parsed by
``proxy.policy.ForwardPolicy.from_table``; ``lab/configs/forward.toml`` shows it all.
Two more keys there turn the forward proxy into one that reads HTTPS (lab only,
``proxy.modes.intercept``; the threaded engine only so far)::

    [forward]
    intercept_ca = { cert = "certs/intercept-ca.pem", key = "certs/intercept-ca.key" }
    origin_ca = "certs/ca.pem"        # what the origins' certificates are checked against (default: system store)

HTTP to HTTPS, and HSTS (``proxy.modes.redirect`` tells why both, and what each
leaves open)::

    [proxy]
    hsts = "max-age=31536000; includeSubDomains"   # on every response over TLS; off by default

    [[listeners]]
    listen = "127.0.0.1:8080"
    mode = "redirect"                 # plain HTTP: every request gets 308 to https://HOST[:https_port]/...
    https_port = 8443                 # default: the port of this proxy's first terminate listener
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import ConfigError
from proxy.http1 import Limits as HTTPLimits
from proxy.http1.fields import TOKEN
from proxy.policy import ForwardPolicy

MODES = ("terminate", "passthrough", "forward", "redirect")  # redirect: HTTP -> 308 to https (proxy.modes.redirect)
#: threaded: a thread per connection (proxy.server, proxy.acceptors), the design the course starts from;
#: eventloop: one thread and non-blocking sockets (proxy.eventloop), the same exchange driven by readiness.
ENGINES = ("threaded", "eventloop")
EVENTLOOP_MODES = MODES  # what the event loop serves: every mode (forward since proxy/eventloop/forward.py)
ZERO_MEANS_NO_LIMIT = {"max_connections_per_client"}  # limits where 0 is allowed: it turns the limit off
STRATEGIES = ("round_robin", "least_connections", "weighted")


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


@dataclass(frozen=True)
class Interception:
    """``[forward] intercept_ca`` (and ``origin_ca``): the forward proxy decrypts CONNECT (proxy.modes.intercept)."""

    cert: str  # the interception CA that signs the certificates minted per host (proxy.tls.mint)
    key: str
    origin_ca: str | None = None  # verify the real origins against this CA; None: the system trust store


@dataclass(frozen=True)
class BackendConfig:
    url: str
    scheme: str  # "http", "https" (the re-encrypt setup) or "tcp" (bare HOST:PORT: passthrough)
    host: str
    port: int
    weight: int = 1
    name: str = field(init=False, compare=False)  # "http://127.0.0.1:9001" or "127.0.0.1:9445", made once

    def __post_init__(self) -> None:
        address = Address(self.host, self.port)
        object.__setattr__(self, "name", str(address) if self.scheme == "tcp" else f"{self.scheme}://{address}")


@dataclass(frozen=True)
class BackendTLS:
    """How the proxy speaks TLS to https:// backends (the re-encrypt setup)."""

    ca: str | None = None  # verify the origin's certificate against this CA
    cert: str | None = None  # present this client certificate (mutual TLS)
    key: str | None = None
    server_name: str | None = None  # SNI sent to the origin; default: the backend host
    sni_from_host: bool = False  # send the client's Host as SNI instead
    verify: bool = True


@dataclass(frozen=True)
class HealthConfig:
    """Active checks (``path`` set) and passive ejection, with nginx-like defaults."""

    path: str | None = None  # e.g. "/health"; None: no active checks
    interval: float = 2.0  # seconds between active checks
    timeout: float = 1.0
    rise: int = 2  # consecutive successes that bring a backend back (HAProxy `rise 2`)
    fall: int = 3  # consecutive failures that take it down (HAProxy `fall 3`)
    max_fails: int = 1  # passive: failures before ejection (nginx `max_fails=1`)
    fail_timeout: float = 10.0  # passive: seconds a failed backend stays out (nginx `fail_timeout=10s`)


@dataclass(frozen=True)
class PoolConfig:
    name: str
    backends: tuple[BackendConfig, ...]
    strategy: str = "round_robin"
    health: HealthConfig = field(default_factory=HealthConfig)
    tls: BackendTLS = field(default_factory=BackendTLS)


@dataclass(frozen=True)
class RouteConfig:
    pool: str
    host: str = "*"  # exact name, "*.suffix" wildcard, or "*" for any
    path: str = "/"  # path prefix (terminate mode)
    sni: str | None = None  # passthrough mode routes on the ClientHello's server_name


@dataclass(frozen=True)
class ListenerConfig:
    listen: Address
    mode: str = "terminate"
    certs: tuple[CertFiles, ...] = ()
    https_port: int | None = None  # mode "redirect": the port in Location; None: the first terminate listener's
    # ALPN offered on a terminate listener, in preference order (RFC 7301): a client that picks
    # "h2" is served HTTP/2 (proxy.modes.h2, proxy.eventloop.h2session), one that offers only
    # http/1.1, or no ALPN at all, HTTP/1.1.  ``alpn = ["http/1.1"]`` (``--alpn http/1.1``) turns
    # HTTP/2 off.  Here the default departs from nginx, whose HTTP/2 is off until enabled
    # (ngx_http_v2_module: ``http2 off;`` by default from 1.25.1, ``listen ... http2`` before).
    alpn: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True)
class Timeouts:
    """Seconds.  Defaults and where they come from."""

    handshake: float = 10.0  # TLS handshake; a client that stalls mid-handshake is dropped
    header_read: float = 10.0  # whole request head (HAProxy `timeout http-request 10s`; slowloris)
    idle_keepalive: float = 75.0  # between requests (nginx `keepalive_timeout 75s`)
    body_read: float = 60.0  # between two reads of a request body (nginx `client_body_timeout 60s`)
    backend_connect: float = 5.0  # (nginx `proxy_connect_timeout` is 60s; 5s fails faster in a lab)
    backend_read: float = 60.0  # between two reads from a backend (nginx `proxy_read_timeout 60s`)
    send: float = 60.0  # between two writes to a client (nginx `send_timeout 60s`)
    pool_idle: float = 30.0  # an idle pooled backend connection is closed after this
    # (nginx's `keepalive_timeout` on the origin side is 75s; expiring earlier avoids
    #  reusing a connection the origin has just closed)
    shutdown_grace: float = 10.0  # in-flight requests get this long after SIGTERM
    worker_idle: float = 30.0  # a spare connection thread exits after this long unused (a burst
    # of clients must not leave its threads behind; Apache's MaxSpareThreads does the same)
    tunnel_idle: float = 600.0  # passthrough / CONNECT: no byte either way for this long ends it
    # (nginx stream `proxy_timeout 10m`; HAProxy `timeout tunnel`)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1024  # concurrent client connections (nginx `worker_connections 512` x 2 workers)
    # open connections per client address (proxy.admission); 0: no limit, as nginx without stream limit_conn
    max_connections_per_client: int = 0
    max_requests_per_connection: int = 1000  # nginx `keepalive_requests 1000`
    pool_max_idle: int = 32  # idle connections kept per backend (nginx `keepalive 32` is a common setting)
    max_concurrent_streams: int = 100  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (HAProxy's 100; nginx's is 128)
    http: HTTPLimits = field(default_factory=HTTPLimits)


@dataclass(frozen=True)
class Config:
    listeners: tuple[ListenerConfig, ...]
    pools: tuple[PoolConfig, ...]
    routes: tuple[RouteConfig, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    access_log: str | None = "-"  # "-" is stderr; None disables
    keylog: str | None = None  # NSS key log of the client leg (lab only!)
    backend_keylog: str | None = None  # key log of the backend leg (re-encrypt)
    trace: bool = False  # print each TLS handshake as it happens
    admin: Address | None = None  # the status page's listener (keep it on loopback)
    forward_policy: ForwardPolicy = field(default_factory=ForwardPolicy)  # [forward]: see proxy.policy
    intercept: Interception | None = None  # [forward] intercept_ca: CONNECT decrypted (lab only)
    engine: str = "threaded"  # [proxy] engine: "threaded" or "eventloop" (ENGINES)
    # [proxy] handshake_threads: the event loop runs each TLS handshake step in one of this many
    # worker threads (0: in the loop, as an nginx worker does); see proxy.eventloop.engine.Handshake
    handshake_threads: int = 0
    hsts: str | None = None  # [proxy] hsts: Strict-Transport-Security on TLS listeners (see parse_hsts); off by default
    extra: dict[str, Any] = field(default_factory=dict)  # sections other modules own

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


# --------------------------------------------------------------------------- parsing helpers
def parse_address(text: str, *, what: str = "listen address") -> Address:
    """'127.0.0.1:8443', '[::1]:8443' or 'localhost:8443' -> Address."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"bad {what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443")
    return Address(host, int(port))


BACKEND_FORMS = "http://HOST:PORT, https://HOST:PORT (re-encrypt) or HOST:PORT (passthrough)"


def parse_backend(value: str | dict[str, Any], *, where: str) -> BackendConfig:
    """A backend URL (``http://``, ``https://``) or a bare ``HOST:PORT`` (a passthrough's TCP peer).

    Which form a listener may use is checked by ``validate``, which knows the modes.
    """
    if isinstance(value, str):
        value = {"url": value}
    _reject_unknown(value, {"url", "weight"}, where)
    url = value.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}: a backend needs a url like http://127.0.0.1:9001 (or 127.0.0.1:9445 for passthrough)")
    weight = value.get("weight", 1)
    if not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"{where}: weight must be a positive integer, got {weight!r}")
    if "://" not in url:
        return _tcp_backend(url, weight, where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: bad backend url {url!r}: expected {BACKEND_FORMS}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{where}: backend url {url!r} must not have a path")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{where}: bad port in backend url {url!r}") from None
    return BackendConfig(url=url, scheme=parts.scheme, host=parts.hostname, port=port, weight=weight)


def _tcp_backend(text: str, weight: int, where: str) -> BackendConfig:
    """'127.0.0.1:9445' or '[::1]:9445': where a passthrough splices bytes (no scheme: no HTTP)."""
    text = text.strip()
    try:
        address = parse_address(text, what="backend")
    except ConfigError:
        raise ConfigError(f"{where}: bad backend {text!r}: expected {BACKEND_FORMS}") from None
    if ":" in address.host and not text.startswith("["):  # '::1:9445': which colon starts the port?
        raise ConfigError(f"{where}: bad backend {text!r}: write an IPv6 address in brackets, e.g. [::1]:9445")
    if address.port == 0:
        raise ConfigError(f"{where}: bad backend {text!r}: port 0 cannot be connected to")
    return BackendConfig(url=text, scheme="tcp", host=address.host, port=address.port, weight=weight)


def _reject_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _dataclass_from(cls: type, table: dict[str, Any], where: str, **overrides: Any):
    """Build a flat dataclass from a TOML table, rejecting unknown keys and wrong types."""
    names = {f.name: f for f in fields(cls)}
    _reject_unknown(table, set(names) - set(overrides), where)
    values: dict[str, Any] = {}
    defaults = cls(**overrides) if overrides else cls()
    for key, value in table.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int):
            value = float(value)
        if getattr(defaults, key) is not None and not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return replace(defaults, **values)
    except ValueError as error:  # a dataclass's own check, e.g. http1.Limits: "must be positive"
        raise ConfigError(f"{where}: {error}") from None


# --------------------------------------------------------------------------- loading
def load(path: str) -> Config:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    base = os.path.dirname(os.path.abspath(path))
    return from_table(data, base_dir=base, where=path)


def from_table(data: dict[str, Any], *, base_dir: str = ".", where: str = "config") -> Config:
    known = {"listeners", "pools", "routes", "timeouts", "limits", "proxy", "forward", "admin", "health"}
    _reject_unknown(data, known, where)

    def resolve(p: str | None) -> str | None:
        return None if p is None else os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))

    listeners = []
    for i, table in enumerate(data.get("listeners", [])):
        w = f"{where}: listeners[{i}]"
        _reject_unknown(table, {"listen", "mode", "certs", "https_port", "alpn"}, w)
        if "listen" not in table:
            raise ConfigError(f"{w}: missing 'listen' (e.g. listen = \"127.0.0.1:8443\")")
        certs = []
        for j, c in enumerate(table.get("certs", [])):
            _reject_unknown(c, {"cert", "key"}, f"{w}.certs[{j}]")
            if "cert" not in c or "key" not in c:
                raise ConfigError(f"{w}.certs[{j}]: needs both cert and key")
            certs.append(CertFiles(resolve(c["cert"]), resolve(c["key"])))
        listeners.append(ListenerConfig(parse_address(table["listen"]), table.get("mode", "terminate"), tuple(certs),
                                        table.get("https_port"), parse_alpn(table.get("alpn", list(DEFAULT_ALPN)), where=w)))
        if "alpn" in table and table.get("mode", "terminate") != "terminate":
            raise ConfigError(f"{w}: alpn is for terminate listeners (HTTP/2 on the client leg)")

    pools = []
    for i, table in enumerate(data.get("pools", [])):
        w = f"{where}: pools[{i}]"
        _reject_unknown(table, {"name", "backends", "strategy", "health", "tls"}, w)
        if "name" not in table:
            raise ConfigError(f"{w}: missing 'name'")
        backends = tuple(parse_backend(b, where=f"{w}.backends") for b in table.get("backends", []))
        health = _dataclass_from(HealthConfig, table.get("health", {}), f"{w}.health")
        tls_table = dict(table.get("tls", {}))
        for key in ("ca", "cert", "key"):
            if key in tls_table:
                tls_table[key] = resolve(tls_table[key])
        tls = _dataclass_from(BackendTLS, tls_table, f"{w}.tls")
        pools.append(PoolConfig(table["name"], backends, table.get("strategy", "round_robin"), health, tls))

    routes = []
    for i, table in enumerate(data.get("routes", [])):
        w = f"{where}: routes[{i}]"
        _reject_unknown(table, {"host", "path", "sni", "pool"}, w)
        if "pool" not in table:
            raise ConfigError(f"{w}: missing 'pool'")
        routes.append(RouteConfig(table["pool"], table.get("host", "*"), table.get("path", "/"), table.get("sni")))
    if pools and not routes:  # one pool and no routes: everything goes to it
        routes.append(RouteConfig(pools[0].name))

    timeouts = _dataclass_from(Timeouts, data.get("timeouts", {}), f"{where}: timeouts")
    limits_table = dict(data.get("limits", {}))
    http_keys = {f.name for f in fields(HTTPLimits)}
    http = _dataclass_from(HTTPLimits, {k: v for k, v in limits_table.items() if k in http_keys}, f"{where}: limits")
    limits = _dataclass_from(Limits, {k: v for k, v in limits_table.items() if k not in http_keys}, f"{where}: limits", http=http)

    proxy_table = data.get("proxy", {})
    forward_table = dict(data.get("forward", {}))  # the interception keys are ours, the rest the policy's
    intercept_table, origin_ca = forward_table.pop("intercept_ca", None), forward_table.pop("origin_ca", None)
    _reject_unknown(proxy_table, {"access_log", "keylog", "backend_keylog", "trace", "engine", "hsts",
                                  "handshake_threads"}, f"{where}: proxy")
    config = Config(
        listeners=tuple(listeners),
        pools=tuple(pools),
        routes=tuple(routes),
        timeouts=timeouts,
        limits=limits,
        access_log=proxy_table.get("access_log", "-"),
        keylog=resolve(proxy_table.get("keylog")),
        backend_keylog=resolve(proxy_table.get("backend_keylog")),
        trace=bool(proxy_table.get("trace", False)),
        engine=proxy_table.get("engine", "threaded"),
        handshake_threads=proxy_table.get("handshake_threads", 0),
        hsts=proxy_table.get("hsts"),
        forward_policy=ForwardPolicy.from_table(forward_table, where=f"{where}: forward"),
        intercept=_interception(intercept_table, origin_ca, resolve, f"{where}: forward"),
        admin=_admin_address(data.get("admin", {}), where),
        extra={k: data[k] for k in ("forward", "admin") if k in data},
    )
    return validate(config)


def _interception(table: Any, origin_ca: Any, resolve, where: str) -> Interception | None:
    if table is None:
        if origin_ca is not None:
            raise ConfigError(f"{where}: origin_ca is for interception: give intercept_ca too")
        return None
    if not isinstance(table, dict) or set(table) != {"cert", "key"}:
        raise ConfigError(f'{where}: intercept_ca must be {{ cert = "CA.pem", key = "CA.key" }}')
    return Interception(resolve(table["cert"]), resolve(table["key"]), resolve(origin_ca))


def _admin_address(table: dict[str, Any], where: str) -> Address | None:
    _reject_unknown(table, {"listen"}, f"{where}: admin")
    return parse_address(table["listen"], what="admin address") if "listen" in table else None


def from_flags(
    *,
    listen: str,
    mode: str = "terminate",
    certs: list[tuple[str, str]] = (),
    backends: list[str] = (),
    strategy: str = "round_robin",
    backend_tls: BackendTLS = BackendTLS(),
    redirect_from: str | None = None,
    alpn: Any = None,
    **options: Any,
) -> Config:
    """The one-listener, one-pool configuration behind ``tlsproxy serve --backend ...``.

    ``redirect_from`` (``--redirect-from HOST:PORT``) adds a plain-HTTP listener that
    answers every request with a 308 to the ``listen`` listener (``proxy.modes.redirect``)."""
    pool = PoolConfig(
        "default",
        tuple(parse_backend(b, where="--backend") for b in backends),
        strategy,
        tls=backend_tls,
    )
    listener = ListenerConfig(parse_address(listen), mode, tuple(CertFiles(c, k) for c, k in certs),
                              alpn=parse_alpn(alpn, where="--alpn") if alpn else DEFAULT_ALPN)
    extra = (redirect_listener(redirect_from),) if redirect_from else ()
    return validate(
        Config(listeners=(listener, *extra), pools=(pool,) if backends else (), routes=(RouteConfig("default"),) if backends else (), **options)
    )


ALPN_PROTOCOLS = ("h2", "http/1.1")  # what a terminate listener can speak (RFC 7301 protocol IDs)
DEFAULT_ALPN = ListenerConfig.alpn  # offered unless alpn says otherwise


def parse_alpn(value: Any, *, where: str) -> tuple[str, ...]:
    """``"h2,http/1.1"`` (the flag) or ``["h2", "http/1.1"]`` (TOML), in preference order, checked."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f'{where}: alpn must be a list like ["h2", "http/1.1"], got {value!r}')
    for name in names:
        if name not in ALPN_PROTOCOLS:
            raise ConfigError(f"{where}: unknown ALPN protocol {name!r} (one of {', '.join(ALPN_PROTOCOLS)})")
    return tuple(dict.fromkeys(names))


def redirect_listener(address: str, https_port: int | None = None) -> ListenerConfig:
    """``--redirect-from HOST:PORT``: a ``mode = "redirect"`` listener."""
    return ListenerConfig(parse_address(address, what="--redirect-from address"), "redirect", (), https_port)


def parse_hsts(value: Any, *, where: str = "hsts ([proxy] hsts, --hsts)") -> str:
    """Check a Strict-Transport-Security value (RFC 6797 §6.1) and return it, stripped.

    The grammar: ``[ directive ] *( ";" [ directive ] )``, ``directive = directive-name
    [ "=" directive-value ]``, a token or quoted-string value.  §6.1, requirement 2: "All
    directives MUST appear only once in an STS header field"; 3: names are case-insensitive.  The RFC
    defines two directives: ``max-age`` (§6.1.1, REQUIRED: delta-seconds, a non-negative
    integer; 0 tells the browser to forget the host) and ``includeSubDomains`` (§6.1.2,
    valueless).  ``preload`` is *not* in the RFC: it is the opt-in the browsers' preload
    list asks for (hstspreload.org, which also wants ``includeSubDomains`` and a max-age of
    at least a year); it is accepted because a browser ignores a directive it does not
    know (§6.1, requirement 5).  Anything else is refused here, though browsers would ignore it: a
    misspelt ``includeSubdomain`` would be silently dropped by every one of them.
    """
    if not isinstance(value, str):
        raise ConfigError(f'{where}: expected a string like "max-age=31536000; includeSubDomains", got {value!r}')
    directives: dict[str, str | None] = {}
    for part in value.split(";"):
        name, sep, raw = (p.strip() for p in part.partition("="))
        if not part.strip():
            continue  # the grammar allows empty directives: "max-age=1;;"
        if not TOKEN.fullmatch(name):
            raise ConfigError(f"{where}: {part.strip()!r} is not a directive (RFC 6797 §6.1: name[=value]; ...)")
        name = name.lower()
        if name in directives:
            raise ConfigError(f"{where}: directive {name!r} given twice "
                              f"(RFC 6797 §6.1: all directives MUST appear only once)")
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]  # directive-value = token / quoted-string
        directives[name] = raw if sep else None
    if "max-age" not in directives:
        raise ConfigError(f"{where}: {value!r} has no max-age (RFC 6797 §6.1.1: it is REQUIRED)")
    if not re.fullmatch(r"[0-9]+", directives["max-age"] or ""):
        raise ConfigError(f"{where}: max-age must be a non-negative integer of seconds, got {directives['max-age']!r}")
    for name, raw in directives.items():
        if name not in ("max-age", "includesubdomains", "preload"):
            raise ConfigError(f"{where}: unknown directive {name!r} (RFC 6797 defines max-age and "
                              f"includeSubDomains; preload is the browsers' preload-list convention)")
        if name != "max-age" and raw is not None:
            raise ConfigError(f"{where}: {name} takes no value")
    return value.strip()


def validate(config: Config) -> Config:
    if not config.listeners:
        raise ConfigError("no listener: give --listen HOST:PORT or a [[listeners]] table")
    if config.engine not in ENGINES:
        raise ConfigError(f"unknown engine {config.engine!r} (one of {', '.join(ENGINES)})")
    if not isinstance(config.handshake_threads, int) or not 0 <= config.handshake_threads <= 64:
        raise ConfigError(f"[proxy] handshake_threads must be a whole number from 0 to 64, got {config.handshake_threads!r}")
    if config.handshake_threads and config.engine != "eventloop":
        raise ConfigError("[proxy] handshake_threads is for engine eventloop (the threaded engine's handshakes "
                          "already run in their connection threads)")
    if config.engine == "eventloop":
        for listener in config.listeners:
            if listener.mode not in EVENTLOOP_MODES:
                raise ConfigError(f"listener {listener.listen}: mode {listener.mode!r} is not supported by the "
                                  f"eventloop engine yet (only {', '.join(EVENTLOOP_MODES)}); use engine threaded")
    for section, table in (("timeouts", config.timeouts), ("limits", config.limits)):
        for f in fields(table):  # zero or negative would crash later, in every connection
            value = getattr(table, f.name)
            if f.name in ZERO_MEANS_NO_LIMIT:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ConfigError(f"[{section}] {f.name} must be a whole number, 0 for no limit, got {value!r}")
            elif isinstance(value, (int, float)) and not value > 0:
                raise ConfigError(f"[{section}] {f.name} must be positive, got {value!r}")
    pool_names = [p.name for p in config.pools]
    for name in pool_names:
        if pool_names.count(name) > 1:
            raise ConfigError(f"pool {name!r} is defined twice")
    for listener in config.listeners:
        if listener.mode not in MODES:
            raise ConfigError(f"listener {listener.listen}: unknown mode {listener.mode!r} (one of {', '.join(MODES)})")
        if listener.alpn != DEFAULT_ALPN and listener.mode != "terminate":
            raise ConfigError(f"listener {listener.listen}: alpn is for terminate listeners (HTTP/2 on the client leg)")
        if listener.mode == "terminate" and not listener.certs:
            raise ConfigError(f"listener {listener.listen}: terminate mode needs a certificate (--cert and --key)")
        _check_redirect_listener(config, listener)
        if listener.mode not in ("forward", "redirect") and not config.pools:
            raise ConfigError(f"listener {listener.listen}: no backend to forward to (give --backend URL)")
        for files in listener.certs:
            for path in (files.cert, files.key):
                if not os.path.isfile(path):
                    raise ConfigError(f"certificate file {path} not found")
    for pool in config.pools:
        from proxy.balancer import load_strategy  # here: balancer imports this module

        try:
            load_strategy(pool.strategy)
        except KeyError as error:
            raise ConfigError(f"pool {pool.name!r}: {error.args[0]}") from None
        if not pool.backends:
            raise ConfigError(f"pool {pool.name!r} has no backends")
        for path in (pool.tls.ca, pool.tls.cert, pool.tls.key):
            if path and not os.path.isfile(path):
                raise ConfigError(f"pool {pool.name!r}: file {path} not found")
        if bool(pool.tls.cert) != bool(pool.tls.key):
            raise ConfigError(f"pool {pool.name!r}: a client certificate needs both cert and key")
        _check_tcp_backends(config, pool)
    if config.hsts is not None:
        config = replace(config, hsts=parse_hsts(config.hsts))
    if config.intercept is not None:
        _check_interception(config)
    for route in config.routes:
        if route.pool not in pool_names:
            raise ConfigError(f"route to pool {route.pool!r}, but no pool has that name")
        if not route.path.startswith("/"):
            raise ConfigError(f"route path {route.path!r} must start with '/'")
    return config


def _check_interception(config: Config) -> None:
    """The interception CA loads (a CA, with its own key), beside a forward listener, on the threaded engine."""
    if config.engine == "eventloop":
        raise ConfigError("intercept_ca: interception runs on the threaded engine only so far (use engine threaded)")
    if not any(listener.mode == "forward" for listener in config.listeners):
        raise ConfigError("intercept_ca: interception is a forward-proxy mode; it needs a mode = \"forward\" listener")
    intercept = config.intercept
    if intercept.origin_ca and not os.path.isfile(intercept.origin_ca):
        raise ConfigError(f"origin CA file {intercept.origin_ca} not found")
    from proxy.tls.mint import load_ca  # here: only a configuration that intercepts needs it

    load_ca(intercept.cert, intercept.key)


def _check_redirect_listener(config: Config, listener: ListenerConfig) -> None:
    """A redirect listener speaks plain HTTP and redirects only the names the routes serve."""
    port = listener.https_port
    if listener.mode != "redirect":
        if port is not None:
            raise ConfigError(f"listener {listener.listen}: https_port is for mode = \"redirect\" only")
        return
    if listener.certs:
        raise ConfigError(f"listener {listener.listen}: a redirect listener speaks plain HTTP: it takes no certificate")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535):
        raise ConfigError(f"listener {listener.listen}: https_port must be a port number (1-65535), got {port!r}")
    if not config.routes:
        raise ConfigError(f"listener {listener.listen}: a redirect listener redirects the host names of the "
                          f"routes, and there are none (give --backend, or [[routes]])")


def _check_tcp_backends(config: Config, pool: PoolConfig) -> None:
    """A bare HOST:PORT backend gets spliced TLS bytes: only a passthrough listener may use it.

    Routes are shared by every listener, so a terminate listener next to a passthrough
    one could route an HTTP request to the pool: that too is refused.  A forward
    listener uses no pool, so beside a passthrough listener it is no objection.
    """
    tcp = next((b for b in pool.backends if b.scheme == "tcp"), None)
    if tcp is None:
        return
    modes = {listener.mode for listener in config.listeners}
    if "terminate" in modes or "passthrough" not in modes:
        mode = "terminate" if "terminate" in modes else "forward"
        raise ConfigError(
            f"pool {pool.name!r}: backend {tcp.url!r} has no scheme, which is for passthrough only; "
            f"a {mode} listener speaks HTTP to its backends: write http://{tcp.name} "
            f"or https://{tcp.name} (re-encrypt)")
    if pool.health.path:  # proxy.health sends GET over plain HTTP to a non-https backend
        raise ConfigError(
            f"pool {pool.name!r}: active health checks (health.path) speak HTTP, but backend {tcp.url!r} "
            f"is a TCP splice: write https://{tcp.name} to check it over TLS, or drop health.path")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
