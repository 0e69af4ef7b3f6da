"""The notebooks' toolkit: start origins and proxies in this process, then ask them things.

Theory of operation
-------------------
A notebook teaches by running the real thing: real sockets on loopback, the real
``ProxyServer`` and ``Origin``, real TLS.  This module keeps those cells short and
re-runnable, and nothing more; every server it starts is an ordinary object of
``proxy.server`` or ``proxy.origin`` that a student can inspect::

    lab = Playground("05-choosing-a-backend")     # a second Playground("05-...") stops this one
    web1 = lab.origin("web-1")                    # proxy.origin.Origin on 127.0.0.1:<free port>
    rp = lab.proxy("reverse", pools={"web": [web1]})   # a Proxy: .server, .port, .log
    reply = https_get(rp, "www.example.test", "/", ca=lab.pki.ca)
    reply.status, reply.origin, reply.tls.certificate, reply.json["headers"]
    lab.stop()

Re-running a cell must not leave servers behind, so everything is *named*: starting
an origin or a proxy under a name that is already running stops the old one first,
and creating a ``Playground`` under a name already in use stops everything that one
started.  ``lab.stop()`` (the last cell of every notebook) stops it all.

The clients are one function per way of reaching a server, each returning a
``Reply`` that says what the *client* experienced: the address its TCP connection
went to, the certificate it was shown and verified, the TLS version, and the
response (the demo origins answer with JSON describing what *they* saw)::

    http_get(address, target)                 plain HTTP (absolute-form target: a forward proxy)
    https_get(address, server_name, path)     TLS with SNI and verification, then HTTP
    tunnel_get(proxy, authority, path)        CONNECT through a forward proxy, TLS inside

``format_table`` prints rows as an aligned plain-text table, ``in_parallel`` runs a
request function from several threads (a small, bounded load), and ``fingerprint``
names a certificate file the way ``TLSView`` names the certificate a client was shown.
"""

from __future__ import annotations

import atexit
import hashlib
import http.client
import itertools
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy import config as cfg
from proxy.origin import Origin
from proxy.pki import DEMO_API, DEMO_WWW, DemoPKI, ensure_demo_certs, file_stem, generate_leaf
from proxy.policy import ForwardPolicy
from proxy.server import ProxyServer

TIMEOUT = 10.0
DEFAULT_CERTS_DIR = Path(tempfile.gettempdir()) / "tlslab-playground-certs"

Address = tuple[str, int]


# --------------------------------------------------------------------------- what the proxy logs
class LogLines:
    """A stream for ``AccessLog``: keeps each access-log line in a list instead of printing it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def write(self, text: str) -> None:
        with self.changed:
            self.lines.extend(line for line in text.splitlines() if line)
            self.changed.notify_all()

    def flush(self) -> None:
        pass

    def clear(self) -> None:
        with self.changed:
            self.lines.clear()

    def matching(self, text: str) -> list[str]:
        """Every line containing ``text``."""
        with self.changed:
            return [line for line in self.lines if text in line]

    def wait_for(self, text: str, timeout: float = 5.0, *, count: int = 1) -> str | None:
        """The first line containing ``text``, once ``count`` such lines exist (or None after
        ``timeout`` seconds).  Tunnels and spliced connections are logged when they end."""
        with self.changed:
            self.changed.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout)
            return next((line for line in self.lines if text in line), None)

    def __iter__(self):
        return iter(list(self.lines))

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(eq=False)
class Proxy:
    """A running ``ProxyServer`` and its access log, as a notebook sees it."""

    name: str
    server: ProxyServer
    log: LogLines

    @property
    def address(self) -> Address:
        return self.server.addresses[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def backends(self, pool: str) -> list[dict]:
        """The balancer's view of a pool right now (``Backend.snapshot()`` of each)."""
        return self.server.balancers[pool].snapshot()["backends"]

    def stop(self) -> None:
        if not self.server.stopped.is_set():
            self.server.shutdown(grace=1.0)

    def __repr__(self) -> str:
        host, port = self.address
        modes = ",".join(listener.mode for listener in self.server.config.listeners)
        return f"<Proxy {self.name} {modes} on {host}:{port}>"


# --------------------------------------------------------------------------- the playground
_ACTIVE: dict[str, "Playground"] = {}
_ACTIVE_LOCK = threading.Lock()
_SERIAL = itertools.count(1)


class Playground:
    """Everything one notebook started, by name; ``stop()`` ends it all."""

    def __init__(self, name: str, *, certs_dir: str | Path | None = None):
        with _ACTIVE_LOCK:
            previous = _ACTIVE.pop(name, None)
        if previous is not None:
            previous.stop()  # the notebook's setup cell ran again
        self.name = name
        self.pki: DemoPKI = ensure_demo_certs(certs_dir or DEFAULT_CERTS_DIR)
        self.origins: dict[str, Origin] = {}
        self.proxies: dict[str, Proxy] = {}
        with _ACTIVE_LOCK:
            _ACTIVE[name] = self

    # ------------------------------------------------------------------ origins
    def origin(self, name: str, *, host: str = "127.0.0.1", tls: str | None = None,
               require_client_cert: bool = False, **options: Any) -> Origin:
        """Start a demo origin.  ``tls="www.example.test"`` makes it terminate TLS with that
        demo certificate; ``require_client_cert`` demands one signed by the demo CA (mutual
        TLS).  Other options go to ``Origin`` (``allow_networks``, ``latency``, ...)."""
        self._stop_origin(name)
        if tls:
            cert, key = self.pki.files(tls)
            options.update(cert=cert, key=key)
        if require_client_cert:
            options["client_ca"] = str(self.pki.ca)
        origin = Origin(name, host=host, **options).start()
        self.origins[name] = origin
        return origin

    def issue(self, name: str) -> tuple[str, str]:
        """A new certificate for ``name`` from the demo CA, with a key of its own: (cert, key).

        Two servers answering for one name usually hold two certificates.  In
        passthrough the origin must hold one itself (the proxy never decrypts), and a
        client can tell it from the proxy's only by its bytes (``TLSView.fingerprint``).
        """
        ca_cert = x509.load_pem_x509_certificate(self.pki.ca.read_bytes())
        ca_key = serialization.load_pem_private_key((self.pki.directory / "ca.key").read_bytes(), password=None)
        cert, key = generate_leaf(ca_cert, ca_key, [name])
        directory = self.pki.directory / "issued"
        directory.mkdir(exist_ok=True)
        stem = directory / f"{file_stem(name)}-{os.getpid()}-{next(_SERIAL)}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private from the start
        with os.fdopen(fd, "wb") as file:
            file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    def _stop_origin(self, name: str) -> None:
        old = self.origins.pop(name, None)
        if old is not None:
            old.stop()

    # ------------------------------------------------------------------ proxies
    def proxy(self, name: str, *, mode: str = "terminate", pools: dict[str, Sequence] | None = None,
              routes: Sequence[cfg.RouteConfig] | None = None, host: str = "127.0.0.1",
              certs: Sequence[str] | None = None, strategy: str = "round_robin",
              health: cfg.HealthConfig | None = None, backend_tls: cfg.BackendTLS | None = None,
              timeouts: cfg.Timeouts | None = None, forward_policy: ForwardPolicy | None = None) -> Proxy:
        """Start a ``ProxyServer`` with one listener on ``host`` and a free port.

        ``pools`` maps a pool name to its backends: ``Origin`` objects, URLs, or
        ``{"url": ..., "weight": 3}``.  Without ``routes``, everything goes to the first
        pool.  ``certs`` names demo certificates for a terminate listener (default: www
        and api, chosen by SNI).  ``strategy``, ``health`` and ``backend_tls`` apply to
        every pool; ``backend_tls`` with an https backend is the re-encrypt setup.
        """
        self._stop_proxy(name)
        config = self.proxy_config(mode=mode, pools=pools or {}, routes=routes, host=host, certs=certs,
                                   strategy=strategy, health=health, backend_tls=backend_tls,
                                   timeouts=timeouts, forward_policy=forward_policy)
        server = ProxyServer(config).bind()
        log = LogLines()
        server.access_log.stream = log  # the AccessLog writes its lines here (under its lock)
        proxy = Proxy(name, server.start(), log)
        self.proxies[name] = proxy
        return proxy

    def proxy_config(self, *, mode: str, pools: dict[str, Sequence], routes, host: str, certs,
                     strategy: str, health, backend_tls, timeouts, forward_policy) -> cfg.Config:
        """The ``config.Config`` that ``proxy()`` starts (printable, and what a TOML file would say)."""
        if certs is None:
            certs = (DEMO_WWW, DEMO_API) if mode == "terminate" else ()
        pool_configs = tuple(
            cfg.PoolConfig(pool, tuple(cfg.parse_backend(_backend_value(b), where=f"pool {pool}") for b in backends),
                           strategy, health or cfg.HealthConfig(), backend_tls or cfg.BackendTLS())
            for pool, backends in pools.items())
        if routes is None:
            routes = [cfg.RouteConfig(next(iter(pools)))] if pools else []
        listener = cfg.ListenerConfig(cfg.Address(host, 0), mode,
                                      tuple(cfg.CertFiles(*self.pki.files(c)) for c in certs))
        extra: dict[str, Any] = {}
        if timeouts is not None:
            extra["timeouts"] = timeouts
        if forward_policy is not None:
            extra["forward_policy"] = forward_policy
        return cfg.validate(cfg.Config(listeners=(listener,), pools=pool_configs, routes=tuple(routes),
                                       access_log=None, **extra))

    def _stop_proxy(self, name: str) -> None:
        old = self.proxies.pop(name, None)
        if old is not None:
            old.stop()

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Stop every proxy, then every origin (idempotent)."""
        for name in list(self.proxies):
            self._stop_proxy(name)
        for name in list(self.origins):
            self._stop_origin(name)
        with _ACTIVE_LOCK:
            if _ACTIVE.get(self.name) is self:
                del _ACTIVE[self.name]

    def __enter__(self) -> "Playground":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<Playground {self.name}: origins {sorted(self.origins)}, proxies {sorted(self.proxies)}>")


def _backend_value(backend) -> str | dict:
    return backend.url if isinstance(backend, Origin) else backend


@atexit.register
def stop_all() -> None:
    """Stop every playground of this process (also run when the kernel exits)."""
    with _ACTIVE_LOCK:
        running = list(_ACTIVE.values())
    for playground in running:
        playground.stop()


# --------------------------------------------------------------------------- what the client saw
@dataclass(frozen=True)
class TLSView:
    """The TLS session as the client saw it, and the certificate it verified."""

    version: str
    cipher: str
    certificate: str  # the leaf's subject common name
    issuer: str
    fingerprint: str  # the first 16 hex digits of SHA-256 over the DER: same bytes, same value

    @classmethod
    def of(cls, sock: ssl.SSLSocket) -> "TLSView":
        der = sock.getpeercert(binary_form=True) or b""
        cert = sock.getpeercert() or {}
        return cls(sock.version() or "?", (sock.cipher() or ("?",))[0], _common_name(cert.get("subject", ())),
                   _common_name(cert.get("issuer", ())), hashlib.sha256(der).hexdigest()[:16])


def fingerprint(cert_path: str | Path) -> str:
    """The ``TLSView.fingerprint`` of a PEM certificate file: which file did the client see?"""
    der = ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())
    return hashlib.sha256(der).hexdigest()[:16]


def _common_name(name: Iterable) -> str:
    return next((value for rdn in name for key, value in rdn if key == "commonName"), "?")


@dataclass
class Reply:
    """One request's outcome, from the client's side."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    connected_to: str  # the address:port the client's TCP connection went to
    local: str  # the client's own address:port
    tls: TLSView | None = None  # None: no TLS between the client and what it connected to
    connect_status: int | None = None  # tunnel_get: the proxy's answer to CONNECT
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> dict | None:
        """The origin's JSON description of what it received (None for other bodies)."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    @property
    def origin(self) -> str | None:
        """Which demo origin answered (its X-Origin header), or None (e.g. the proxy itself)."""
        return self.header("X-Origin")

    def seen_header(self, name: str) -> str | None:
        """A header line as the *origin* received it (from its JSON), or None."""
        document = self.json or {}
        return next((v for k, v in document.get("headers", []) if k.lower() == name.lower()), None)


def _address(target) -> Address:
    """(host, port) from a tuple, a ``Proxy`` or an ``Origin``."""
    address = getattr(target, "address", target)
    return address[0], address[1]


def _show(address) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect(address: Address, source: str | None, timeout: float) -> tuple[socket.socket, tuple[str, str]]:
    """A TCP connection, and (peer, local) as text, read now: a peer that aborts later takes them along."""
    sock = socket.create_connection(address, timeout=timeout, source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, (_show(sock.getpeername()), _show(sock.getsockname()))


def client_context(ca: str | Path, *, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """What a browser or curl does: verify the chain and the name (here: against the demo CA),
    and offer ALPN ``http/1.1`` (RFC 7301), which a passthrough proxy can see and log."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _exchange(sock: socket.socket, where: tuple[str, str], method: str, target: str, host: str,
              headers: dict | None, body: bytes | None, **extra) -> Reply:
    """Send one request on an open (plain or TLS) socket, read the whole response, close."""
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)  # it never connects: it gets our socket
    conn.sock = sock
    conn.request(method, target, body=body, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    if not response.will_close:  # else http.client has closed it already
        close_politely(sock)
    return _reply(response, data, where, **extra)


def close_politely(sock: socket.socket) -> None:
    """End a connection as a careful client does: say "no more" and let the server close too.

    TLS first gets close_notify (RFC 8446 §6.1), then TCP a FIN; the server answers in
    kind and we read to its end.  Closing with the server's last bytes still unread
    would make the kernel send a reset instead (RFC 1122 §4.2.2.13), and the proxy's
    log would say the client reset the connection.
    """
    try:
        sock.settimeout(1.0)
        if isinstance(sock, ssl.SSLSocket):
            sock = sock.unwrap()
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except (OSError, ValueError):
        pass
    finally:
        sock.close()


def _reply(response: http.client.HTTPResponse, data: bytes, where: tuple[str, str], **extra) -> Reply:
    return Reply(response.status, response.reason, response.getheaders(), data,
                 connected_to=where[0], local=where[1], **extra)


def http_get(target_address, target: str = "/", *, host: str | None = None, headers: dict | None = None,
             source: str | None = None, method: str = "GET", body: bytes | None = None,
             timeout: float = TIMEOUT) -> Reply:
    """Plain HTTP to ``target_address``.  ``target`` may be absolute-form (a forward proxy)."""
    address = _address(target_address)
    sock, where = _connect(address, source, timeout)
    with sock:
        if host is None:
            host = target.split("/")[2] if target.startswith("http://") else _show(address)
        return _exchange(sock, where, method, target, host, headers, body)


def https_get(target_address, server_name: str, path: str = "/", *, ca: str | Path,
              client_cert: tuple[str, str] | None = None, headers: dict | None = None,
              source: str | None = None, method: str = "GET", body: bytes | None = None,
              timeout: float = TIMEOUT) -> Reply:
    """Connect to ``target_address``, do TLS for ``server_name`` (SNI, verified), send ``path``.

    Like ``curl --resolve NAME:PORT:ADDRESS https://NAME:PORT/path``: the name decides
    the SNI, the certificate check and the Host header; the address only where to connect.
    """
    context = client_context(ca, cert=client_cert[0] if client_cert else None,
                             key=client_cert[1] if client_cert else None)
    sock, where = _connect(_address(target_address), source, timeout)
    with context.wrap_socket(sock, server_hostname=server_name) as tls:
        return _exchange(tls, where, method, path, server_name, headers, body, tls=TLSView.of(tls))


def tunnel_get(proxy_address, authority: str, path: str = "/", *, ca: str | Path,
               server_name: str | None = None, headers: dict | None = None, source: str | None = None,
               timeout: float = TIMEOUT) -> Reply:
    """``CONNECT authority`` through a forward proxy, then TLS and ``GET path`` inside the tunnel.

    What ``curl --proxy http://PROXY https://NAME/path`` does (RFC 9110 §9.3.6).  If the
    proxy refuses the CONNECT, the reply is the proxy's own answer (``connect_status``
    is its status, ``tls`` is None).
    """
    server_name = server_name or authority.rsplit(":", 1)[0].strip("[]")
    sock, where = _connect(_address(proxy_address), source, timeout)
    with sock:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
        answer = http.client.HTTPResponse(sock, method="CONNECT")
        answer.begin()
        if answer.status != 200:
            return _reply(answer, answer.read(), where, connect_status=answer.status)
        answer.close()  # only the head was read: the tunnel's bytes are still in the socket
        # From here on the bytes go through the proxy untouched: TLS runs client <-> origin.
        with client_context(ca).wrap_socket(sock, server_hostname=server_name) as tls:
            return _exchange(tls, where, "GET", path, server_name, headers, None, tls=TLSView.of(tls),
                             connect_status=200)


# --------------------------------------------------------------------------- load and tables
def in_parallel(task: Callable[[int], Any], count: int, *, workers: int = 4) -> list[Any]:
    """``[task(0), ..., task(count - 1)]`` run from ``workers`` threads (results in order).

    Bounded on purpose (at most 64 threads, 10,000 calls): a lesson, not a load test."""
    if not 0 < workers <= 64 or not 0 <= count <= 10_000:
        raise ValueError("in_parallel: 1-64 workers and at most 10,000 calls")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="playground") as pool:
        return list(pool.map(task, range(count)))


def format_table(rows: Sequence[dict] | Sequence[Sequence], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts, or sequences with ``columns``) as an aligned plain-text table."""
    if rows and isinstance(rows[0], dict):
        columns = list(columns or rows[0].keys())
        cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    else:
        columns = list(columns or [])
        cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)
