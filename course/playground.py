"""The notebooks' servers: start origins and proxies in this process, by name, and stop them all.

Theory of operation
-------------------
A notebook teaches by running the real thing: real sockets on loopback, the real
``ProxyServer`` and ``Origin``, real TLS.  This module keeps those cells short and
re-runnable, and nothing more; every server it starts is an ordinary object of
``proxy.server`` or ``course.origin`` that a student can inspect::

    lab = Playground("05-choosing-a-backend")     # a second Playground("05-...") stops this one
    web1 = lab.origin("web-1")                    # course.origin.Origin on 127.0.0.1:<free port>
    rp = lab.proxy("reverse", pools={"web": [web1]})   # a Proxy: .server, .address, .log
    reply = https_get(rp, "www.example.test", "/", ca=lab.pki.ca)   # course.clients
    print(rp.log.wait_for("GET /"))               # the access-log line of that request
    lab.stop()

Re-running a cell must not leave servers behind, so everything is *named*: starting
an origin or a proxy under a name that is already running stops the old one first,
and creating a ``Playground`` under a name already in use stops everything that one
started.  ``lab.stop()`` (the last cell of every notebook) stops it all.

Loopback has no distance.  ``lab.delay(name, target, rtt=0.040)`` starts a
``course.delay.DelayLine`` in front of a proxy or an origin: connect to the line (it has
an ``.address``, so ``https_get(line, ...)`` and ``traced_request(line, ...)`` take it)
and every byte waits RTT/2 each way, so handshakes cost what they would over a 40 ms
path.  (The TCP handshake itself is not delayed: see ``course.delay``.)  Put one in
front of an origin and give the line to the proxy's pool instead of the origin
(``pools={"web": [line]}``) to delay the backend leg.

The proxy's access log goes to a ``LogLines`` (a list of lines a cell can print or
search) instead of stderr.  ``lab.issue(name)`` makes one more certificate from the
demo CA.  Two small tools for the lessons: ``format_table`` prints rows as an aligned
plain-text table, and ``in_parallel`` runs a request function from several threads
(a small, bounded load).  The requests themselves are ``course.clients``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import config as cfg
from course.delay import DelayLine
from course.origin import Origin
from proxy.pki import (DEMO_API, DEMO_WWW, DemoPKI, ensure_demo_certs, file_stem, generate_leaf, load_authority,
                       save_leaf)
from proxy.policy import ForwardPolicy
from proxy.server import ProxyServer

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
    address: Address  # where it listens: (host, port), the port the kernel picked

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
        self.delays: dict[str, DelayLine] = {}
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
        """A new certificate for ``name`` from the demo intermediate, with a key of its own: (cert, key).

        Two servers answering for one name usually hold two certificates.  In
        passthrough the origin must hold one itself (the proxy never decrypts), and a
        client can tell it from the proxy's only by its bytes (``course.clients.fingerprint``).
        The file holds the leaf and the intermediate, as the demo PKI's own (``proxy.pki``).
        """
        authority = load_authority(self.pki.directory)
        cert, key = generate_leaf(authority.intermediate, authority.intermediate_key, [name])
        directory = self.pki.directory / "issued"
        directory.mkdir(exist_ok=True)
        stem = directory / f"{file_stem(name)}-{os.getpid()}-{next(_SERIAL)}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        save_leaf(cert, key, cert_path, key_path, chain=[authority.intermediate])
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
        proxy = Proxy(name, server.start(), log, server.addresses[0])
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

    # ------------------------------------------------------------------ delay lines
    def delay(self, name: str, target, *, rtt: float, source: str | None = None) -> DelayLine:
        """A delay line in front of ``target`` (a ``Proxy``, an ``Origin`` or a (host, port)):
        connections to ``line.address`` reach ``target`` with ``rtt`` seconds of round-trip
        time added.  ``source`` binds its onward connections (the target then logs that
        address as the client's)."""
        self._stop_delay(name)
        line = DelayLine(target, rtt=rtt, source=source).start()
        if isinstance(target, Origin):          # a pool may name the line in the origin's place
            scheme = target.url.split("://", 1)[0]
            line.url = f"{scheme}://{line.address[0]}:{line.port}"
        self.delays[name] = line
        return line

    def _stop_delay(self, name: str) -> None:
        old = self.delays.pop(name, None)
        if old is not None:
            old.stop(grace=0.0)

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Stop every delay line, every proxy, then every origin (idempotent)."""
        for name in list(self.delays):
            self._stop_delay(name)
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
        delays = f", delay lines {sorted(self.delays)}" if self.delays else ""
        return f"<Playground {self.name}: origins {sorted(self.origins)}, proxies {sorted(self.proxies)}{delays}>"


def _backend_value(backend) -> str | dict:
    if isinstance(backend, DelayLine):
        if backend.url is None:
            raise ValueError(f"{backend!r} is not in front of an Origin: name its URL in the pool instead")
        return backend.url
    return backend.url if isinstance(backend, Origin) else backend


@atexit.register
def stop_all() -> None:
    """Stop every playground of this process (also run when the kernel exits)."""
    with _ACTIVE_LOCK:
        running = list(_ACTIVE.values())
    for playground in running:
        playground.stop()


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
