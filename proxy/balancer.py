"""Load balancing: pick a backend from a pool, and remember which backends are down.

Theory of operation
-------------------
A pool is a list of ``Backend`` objects, each with its health and load.  A
``Balancer`` chooses among the *available* ones with one of three strategies:

``round_robin``
    each backend in turn.  Fair when requests cost the same.
``least_connections``
    the backend with the fewest requests in flight (ties broken in turn).  Better
    when some requests are slow: a backend stuck on a long request gets fewer new ones.
``weighted``
    smooth weighted round robin, the algorithm nginx uses for ``weight=``: every pick,
    each backend's ``current`` grows by its weight; the largest wins and pays back the
    total.  Weights 5:1:1 give ``a a b a c a a`` rather than ``a a a a a b c``.

Health is tracked two ways.  *Passive*: a request that cannot connect (refused,
reset, timeout), or whose new connection is reset or times out before the response,
counts a failure (nginx's default ``proxy_next_upstream error timeout``); after
``max_fails`` of them the backend is out for ``fail_timeout`` seconds, then tried
again (nginx's ``max_fails``/``fail_timeout``), or sooner if active checks pass.
*Active* checks (``proxy.health``) probe a path on an interval and flip the same
state after ``fall`` failures / ``rise`` successes (HAProxy's ``check rise fall``).

If every backend is down the pool answers 503 rather than hammering dead servers.
A strategy is a small class with one method, so a student can add their own
(lab exercise 4) and register it in ``STRATEGIES``, or name it in the configuration
as ``"module:Class"`` (``strategy = "mystrategies:LeastRecentlyUsed"``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from proxy.config import BackendConfig, HealthConfig
from proxy.errors import ServiceUnavailable


@dataclass(eq=False)
class Backend:
    """One origin server and what the proxy knows about it right now."""

    config: BackendConfig
    weight: int = 1
    pool: str = ""  # the pool it belongs to: the same origin in two pools is two Backends
    in_flight: int = 0  # requests being served now (least_connections)
    requests: int = 0  # requests sent, ever
    failures: int = 0  # consecutive passive failures
    down_until: float = 0.0  # passive ejection: out until this monotonic time
    active_down: bool = False  # active checks say it is down
    check_successes: int = 0
    check_failures: int = 0
    last_error: str = ""
    current: int = 0  # smooth weighted round robin state
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.name = self.config.name  # "http://127.0.0.1:9001"
        # Unique per pool: connections and TLS settings are never shared across pools.
        self.key = f"{self.pool}/{self.name}"

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def tls(self) -> bool:
        return self.config.scheme == "https"

    def available(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return not self.active_down and now >= self.down_until

    def snapshot(self) -> dict:
        """A JSON-friendly view for the status page and the notebooks."""
        return {
            "name": self.name,
            "weight": self.weight,
            "available": self.available(),
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "active_down": self.active_down,
            "last_error": self.last_error,
        }


# --------------------------------------------------------------------------- strategies
class Strategy:
    """Chooses one of ``candidates`` (never empty).  Called with the pool lock held."""

    def choose(self, candidates: list[Backend]) -> Backend:
        raise NotImplementedError


class RoundRobin(Strategy):
    def __init__(self) -> None:
        self.next = 0

    def choose(self, candidates: list[Backend]) -> Backend:
        backend = candidates[self.next % len(candidates)]
        self.next += 1
        return backend


class LeastConnections(Strategy):
    def __init__(self) -> None:
        self.tiebreak = RoundRobin()

    def choose(self, candidates: list[Backend]) -> Backend:
        fewest = min(b.in_flight for b in candidates)
        return self.tiebreak.choose([b for b in candidates if b.in_flight == fewest])


class SmoothWeighted(Strategy):
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer)."""

    def choose(self, candidates: list[Backend]) -> Backend:
        total = 0
        best = None
        for backend in candidates:
            backend.current += backend.weight
            total += backend.weight
            if best is None or backend.current > best.current:
                best = backend
        best.current -= total
        return best


STRATEGIES: dict[str, type[Strategy]] = {
    "round_robin": RoundRobin,
    "least_connections": LeastConnections,
    "weighted": SmoothWeighted,
}


def load_strategy(name: str) -> type[Strategy]:
    """A registered strategy by name, or a class named as "package.module:Class"."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    module_name, sep, class_name = name.partition(":")
    if not sep:
        raise KeyError(f"unknown strategy {name!r} (one of {', '.join(STRATEGIES)}, or module:Class)")
    import importlib

    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise KeyError(f"cannot load strategy {name!r}: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise KeyError(f"strategy {name!r} is not a proxy.balancer.Strategy subclass")
    return cls


# --------------------------------------------------------------------------- the balancer
class Balancer:
    """A pool's backends, its strategy and its passive health bookkeeping."""

    def __init__(self, name: str, backends: list[BackendConfig], strategy: str = "round_robin",
                 health: HealthConfig = HealthConfig()):
        self.name = name
        self.backends = [Backend(b, weight=b.weight, pool=name) for b in backends]
        self.strategy_name = strategy
        self.strategy = load_strategy(strategy)()
        self.health = health
        self.lock = threading.Lock()

    def pick(self, exclude: tuple[Backend, ...] = ()) -> Backend:
        """Choose a backend and count it in flight; pair with ``release``."""
        now = time.monotonic()
        with self.lock:
            candidates = [b for b in self.backends if b.available(now) and b not in exclude]
            if not candidates:
                raise ServiceUnavailable(f"no backend of pool {self.name!r} is available")
            backend = self.strategy.choose(candidates)
            backend.in_flight += 1
            backend.requests += 1
        return backend

    def release(self, backend: Backend) -> None:
        with self.lock:
            backend.in_flight -= 1

    # passive health ---------------------------------------------------------
    def report_success(self, backend: Backend) -> None:
        if backend.failures:
            with self.lock:
                backend.failures = 0

    def report_failure(self, backend: Backend, reason: str) -> None:
        """Count a failed connection; eject the backend after ``max_fails``."""
        with self.lock:
            backend.failures += 1
            backend.last_error = reason
            if backend.failures >= self.health.max_fails:
                backend.down_until = time.monotonic() + self.health.fail_timeout
                backend.failures = 0
                backend.check_successes = 0  # active checks must see it well `rise` times from now

    def snapshot(self) -> dict:
        return {"name": self.name, "strategy": self.strategy_name,
                "backends": [b.snapshot() for b in self.backends]}
