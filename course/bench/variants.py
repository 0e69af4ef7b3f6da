"""Bench-only variants: a setup with one knob turned, to take a confounded figure apart.

Theory of operation
-------------------
The six setups (``course.setups``) are what the course teaches; this module adds no
seventh.  A *variant* is one of them, or nginx, run by the benchmark with one setting
changed, so that two effects the plain setups measure together can be measured apart.
It is the benchmark's business alone: the setups table, the diagrams and the captures
never see it.

The one question the variants answer today: behind setup 3 the origin's CPU per
request drops, but two things changed at once.  The origin no longer runs TLS
(*offload*), and it no longer accepts a connection per client connection, because the
proxy lends it a few kept-alive backend connections (*pooling*, ``proxy/pool.py``).
The unpooled variant keeps no idle backend connection, so its origin accepts a new
plain-HTTP connection for every request, as setup 1's does::

    terminate            loadgen ══TLS══▶ proxy ──HTTP, pooled: few connections, kept──▶ origin
    terminate-unpooled   loadgen ══TLS══▶ proxy ──HTTP, a new connection per request──▶ origin
                         (course.bench.serve --pool-max-idle 0: Limits.pool_max_idle, no idle kept)
    nginx-unpooled       the same in nginx: ``upstream`` without ``keepalive``
                         (course.nginx.terminate_conf(..., keepalive=False))

so that, per workload (``course.bench.offload``)::

    what TLS costs the origin   = origin(direct-https)       - origin(direct-http)
    what pooling saves it       = origin(terminate-unpooled) - origin(terminate)

The variants run on the workloads in ``Variant.workloads`` (keep-alive and new
connection: the two the offload chart splits) in full runs, and in ``--quick`` runs
with ``--unpooled`` (the notebook and ``make diagrams`` ask for it).

The second question: what does the *engine* change?  ``terminate-eventloop`` is setup
3's proxy started with ``--engine eventloop`` (``proxy/eventloop/``: one thread,
readiness events) instead of a thread per connection; everything else, the origin
and the certificates included, is the same.  It runs with ``--eventloop`` (on by
default in full runs) and in the concurrency sweep (``course.bench.sweep``)::

    terminate            loadgen ══TLS══▶ proxy, a thread per connection ──HTTP──▶ origin
    terminate-eventloop  loadgen ══TLS══▶ proxy, one thread, epoll ──────HTTP──▶ origin

The third: what does HTTP/2 on the client leg cost?  ``terminate-h2`` is setup 3's
proxy on the threaded engine (``proxy/modes/h2.py``) offering ``h2`` beside ``http/1.1``
said outright (``--alpn h2,http/1.1``), so the row means the same whatever
``proxy.config.DEFAULT_ALPN`` is; ``terminate-h2-eventloop`` is the same proxy on the
event-loop engine (``proxy/eventloop/h2session.py``: every stream's exchange in the
loop's one thread); ``nginx-h2`` is nginx with HTTP/2 on its listener, which nginx
leaves off unless told.  All three still speak HTTP/1.1 to the origin.  Only h2load
drives them (``course.bench.h2load``), on the ``keepalive-1k-h2`` row, with ``--h2``
(on by default in full runs when h2load is installed); ``--eventloop`` does not
govern the event-loop one, so the row compares the two engines and nginx in every
run that has it::

    terminate-h2            h2load ══TLS, h2══▶ proxy, a stream per worker thread ──HTTP/1.1──▶ origin
    terminate-h2-eventloop  h2load ══TLS, h2══▶ proxy, one thread, epoll ───────────HTTP/1.1──▶ origin
    nginx-h2                h2load ══TLS, h2══▶ nginx, 1 worker ────────────────────HTTP/1.1──▶ origin

The fourth: how much of the event loop's cost is Python's, whatever the proxy does?
``terminate-floor`` is not our proxy at all but ``course.bench.floor_relay``: one
thread, ``selectors`` and ``ssl`` as the event loop uses them, copying bytes between
the client and a backend connection without reading a single head.  It runs only in
the concurrency sweep, with ``--floor``: what it costs above nginx is the interpreter's
price for the job; what the event loop costs above it is the proxy's HTTP logic::

    terminate-floor      wrk ══TLS══▶ floor relay, one thread, epoll, no HTTP ──TCP──▶ origin
"""

from __future__ import annotations

from dataclasses import dataclass

from course.bench.workloads import ALL, NGINX
from course.setups import SETUPS

# Setup 3, found by its facts rather than its name: the proxy ends the client's TLS and
# speaks plain HTTP to the origin.
TERMINATE = next(s.name for s in SETUPS if s.client_tls_ends == "proxy" and not s.origin_tls)


@dataclass(frozen=True)
class Variant:
    """A setup (or nginx) with one setting changed, run by the benchmark only."""

    name: str
    base: str  # the setup of course.setups, or nginx, whose processes it starts
    summary: str
    group: str  # the bench option that adds it: "unpooled" (--unpooled), "eventloop" (--eventloop), "h2" (--h2)
    backend_keepalive: bool = True  # False: the proxy keeps no idle connection to the origin
    engine: str = "threaded"  # proxy.config.ENGINES: the proxy's engine (--engine)
    alpn: tuple[str, ...] | None = None  # ALPN said outright (--alpn; nginx: http2 on the listener);
    #                                       None: the base's own default
    workloads: tuple[str, ...] = ("keepalive-1k", "newconn")
    front: str = "tlsproxy"  # what plays the proxy: "tlsproxy" (course.bench.serve), or "floor"
    #                          (course.bench.floor_relay: a byte relay with no HTTP, the Python floor)


VARIANTS: tuple[Variant, ...] = (
    Variant(f"{TERMINATE}-unpooled", TERMINATE,
            "setup 3 without backend keep-alive: the proxy opens a new connection to the origin per request",
            "unpooled", backend_keepalive=False),
    Variant(f"{NGINX}-unpooled", NGINX,
            "nginx without upstream keepalive: a new connection to the origin per request",
            "unpooled", backend_keepalive=False),
    Variant(f"{TERMINATE}-eventloop", TERMINATE,
            "setup 3 on the event-loop engine: one thread serves every connection (proxy/eventloop/)",
            "eventloop", engine="eventloop",
            workloads=("keepalive-1k", "newconn", "bulk-1m", "idle-1000", "idle-10000")),
    Variant(f"{TERMINATE}-h2", TERMINATE,
            "setup 3 offering HTTP/2 to clients (--alpn h2,http/1.1; threaded engine)", "h2",
            alpn=("h2", "http/1.1"), workloads=("keepalive-1k-h2",)),
    Variant(f"{TERMINATE}-h2-eventloop", TERMINATE,
            "setup 3 offering HTTP/2 to clients on the event-loop engine (--alpn h2,http/1.1 --engine eventloop)",
            "h2", engine="eventloop", alpn=("h2", "http/1.1"), workloads=("keepalive-1k-h2",)),
    Variant(f"{NGINX}-h2", NGINX, "nginx with HTTP/2 on its listener", "h2",
            alpn=("h2", "http/1.1"), workloads=("keepalive-1k-h2",)),
    Variant(f"{TERMINATE}-floor", TERMINATE,
            "not a proxy: a TLS-terminating byte relay with no HTTP (course/bench/floor_relay.py), the least "
            "a Python event loop can do per request", "floor", front="floor"),
)
BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
UNPOOLED = VARIANTS[0].name  # the one the offload decomposition reads
NGINX_UNPOOLED = VARIANTS[1].name
EVENTLOOP = VARIANTS[2].name  # the engine comparison (course.bench.sweep)
H2, H2_EVENTLOOP, NGINX_H2 = (v.name for v in VARIANTS[3:6])  # HTTP/2 to clients: ours on each engine, nginx's
FLOOR = VARIANTS[6].name  # the Python floor beside the engines (course.bench.sweep --floor)
H2_OURS = (H2, H2_EVENTLOOP)  # the h2 row's columns each compared with NGINX_H2 (course.bench.results)

# Every column the benchmark can run, in teaching order: each variant right after its base.
ORDER: tuple[str, ...] = tuple(name for base in ALL for name in (base, *(v.name for v in VARIANTS if v.base == base)))


def base_of(setup: str) -> str:
    """The setup (or nginx) whose processes ``setup`` starts: itself, unless it is a variant."""
    return BY_NAME[setup].base if setup in BY_NAME else setup


def backend_keepalive(setup: str) -> bool:
    """Does the proxy of ``setup`` keep idle connections to the origin (its pool)?"""
    return BY_NAME[setup].backend_keepalive if setup in BY_NAME else True


def engine(setup: str) -> str:
    """The engine the proxy of ``setup`` runs (nginx and the setups without a proxy: "threaded", unused)."""
    return BY_NAME[setup].engine if setup in BY_NAME else "threaded"


def front(setup: str) -> str:
    """What plays the proxy of ``setup``: "tlsproxy", or "floor" (the floor relay)."""
    return BY_NAME[setup].front if setup in BY_NAME else "tlsproxy"


def alpn(setup: str) -> tuple[str, ...] | None:
    """The ALPN list ``setup`` is started with, or None for its base's default (tlsproxy:
    ``proxy.config.DEFAULT_ALPN``; nginx: HTTP/1.1 only, ``course.nginx.terminate_conf``)."""
    return BY_NAME[setup].alpn if setup in BY_NAME else None


def in_group(group: str) -> list[Variant]:
    """The variants one bench option adds."""
    return [v for v in VARIANTS if v.group == group]


def order(setup: str) -> int:
    """A sort key: teaching order, variants after their base, anything unknown last."""
    return ORDER.index(setup) if setup in ORDER else len(ORDER)


def for_workload(workload: str, running: list[str]) -> list[str]:
    """The variants, of those ``running``, that run on ``workload``."""
    return [v.name for v in VARIANTS if v.name in running and workload in v.workloads]
