"""Shared fixtures: a development PKI, origins and proxies on loopback ports chosen by the kernel."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from proxy import config as cfg  # noqa: E402
from course.origin import Origin  # noqa: E402
from proxy.pki import ensure_demo_certs  # noqa: E402
from proxy.server import ProxyServer  # noqa: E402

WWW = "www.example.test"
API = "api.example.test"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The demo PKI (CA, www/api/origin/client certificates), made once per test run."""
    return ensure_demo_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def origin_factory():
    started: list[Origin] = []

    def start(name: str, **options) -> Origin:
        origin = Origin(name, **options).start()
        started.append(origin)
        return origin

    yield start
    for origin in started:
        origin.stop()


#: Both engines (``proxy.config.ENGINES``).  A module whose tests run on both says so with
#: ``engine = both_engines`` (a parametrized fixture that overrides the one below).
ENGINES = ("threaded", "eventloop")


@pytest.fixture
def engine() -> str:
    """The engine ``proxy_factory`` starts by default: the threaded one, unless a module overrides this."""
    return "threaded"


@pytest.fixture(params=ENGINES)
def both_engines(request) -> str:
    """Assign to ``engine`` in a test module (``engine = both_engines``) to run it on every engine."""
    return request.param


@pytest.fixture
def proxy_factory(pki, engine):
    """Start a ProxyServer on 127.0.0.1:0 in this process (on the ``engine`` fixture's engine); stopped after the test."""
    started: list[ProxyServer] = []

    def start(pools: dict[str, list[str]] | None = None, routes: list[cfg.RouteConfig] | None = None, *,
              mode: str = "terminate", strategy: str = "round_robin", certs=None, timeouts=None, limits=None,
              pool_options: dict | None = None, alpn: tuple[str, ...] | None = None, **options) -> ProxyServer:
        options.setdefault("engine", engine)
        pools = pools or {}
        pool_options = pool_options or {}
        if certs is None and mode == "terminate":
            certs = [pki.files(WWW), pki.files(API)]
        pool_configs = tuple(
            cfg.PoolConfig(name, tuple(cfg.parse_backend(u, where="test") for u in urls),
                           pool_options.get(name, {}).get("strategy", strategy),
                           **{k: v for k, v in pool_options.get(name, {}).items() if k != "strategy"})
            for name, urls in pools.items()
        )
        if routes is None:
            routes = [cfg.RouteConfig(next(iter(pools)))] if pools else []
        extra = {}
        if timeouts is not None:
            extra["timeouts"] = timeouts
        if limits is not None:
            extra["limits"] = limits
        config = cfg.validate(cfg.Config(
            listeners=(cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), mode,
                                          tuple(cfg.CertFiles(c, k) for c, k in (certs or [])),
                                          **({"alpn": tuple(alpn)} if alpn is not None else {})),),
            pools=pool_configs, routes=tuple(routes), access_log=options.pop("access_log", None), **extra, **options,
        ))
        server = ProxyServer(config).bind().start()
        server.port = server.addresses[0][1]
        started.append(server)
        return server

    yield start
    for server in started:
        if not server.stopped.is_set():
            server.shutdown(grace=1.0)


def client_context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def tls_connect(port: int, pki, server_name: str = WWW, *, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    context = context or client_context(pki)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def tlsproxy(*args: str, **kwargs) -> subprocess.Popen:
    """Start the real command-line tool as a separate process."""
    return subprocess.Popen([sys.executable, "-m", "course.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=kwargs.pop("cwd", REPO), **kwargs)
