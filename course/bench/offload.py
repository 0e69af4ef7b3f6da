"""The offload split: what TLS costs the origin, and what connection pooling saves it.

Theory of operation
-------------------
Behind the terminating proxy (setup 3) the origin spends far less CPU per request than
when it terminates TLS itself (setup 2).  Two savings make that drop, and the plain
setups measure only their sum:

* **TLS offload**: the origin no longer runs the handshake or the record layer;
* **connection pooling**: the origin no longer accepts a connection (a TCP handshake,
  a thread, a teardown) per client connection, because the proxy lends it a few
  kept-alive backend connections (``proxy/pool.py``).

Four origin figures of the same run and workload take them apart (the third is the
bench-only variant of ``course.bench.variants``, the proxy with no idle backend
connection kept)::

    tls_cost        = origin(2 direct-https)        - origin(1 direct-http)
    pooling_saving  = origin(3 terminate-unpooled)  - origin(3 terminate)
    total_drop      = origin(2 direct-https)        - origin(3 terminate)
    remainder       = origin(1 direct-http)         - origin(3 terminate-unpooled)
                    = total_drop - tls_cost - pooling_saving

nginx gives the pooling saving a second time, from a proxy written in C:
``nginx_pooling_saving = origin(nginx-unpooled) - origin(nginx)``, when both ran.

The remainder is whatever else differs between a plain client and a plain proxy as the
origin's peer.  With a new connection per request both open one plain connection per
request, so it should be near zero, and its size is the noise of the split.  With
keep-alive it is negative: the direct client keeps its four connections, while the
unpooled proxy opens one per request, so the origin behind it pays a connection per
request that direct-http's origin does not.

``split`` is the arithmetic, plain values in, numbers out.  ``decomposition`` applies
it to the summary's medians of each workload and client that has the figures, and to
each round on its own (``rounds``: the spread of one split on this machine).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from course.bench.variants import NGINX_UNPOOLED, TERMINATE, UNPOOLED
from course.bench.workloads import NGINX
from course.setups import SETUPS

# The four setups the split reads, found by their facts (course.setups) and the variant table.
DIRECT_HTTPS = next(s.name for s in SETUPS if not s.has_proxy and s.client_tls)  # 2: the origin terminates TLS
DIRECT_HTTP = next(s.name for s in SETUPS if not s.has_proxy and not s.client_tls)  # 1: no TLS at all
POOLED = TERMINATE  # 3: TLS offloaded, backend connections pooled
INPUTS = (DIRECT_HTTPS, DIRECT_HTTP, UNPOOLED, POOLED)
NGINX_INPUTS = (NGINX_UNPOOLED, NGINX)
FIGURES = ("tls_cost", "pooling_saving", "total_drop", "remainder")
WORKLOADS = ("newconn", "keepalive-1k")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def split(origin: Mapping[str, float | None]) -> dict[str, float | None]:
    """Origin CPU µs per request by setup name -> the four figures of the split (None if unmeasured)."""
    https, http, unpooled, pooled = (origin.get(name) for name in INPUTS)
    return {"tls_cost": _difference(https, http), "pooling_saving": _difference(unpooled, pooled),
            "total_drop": _difference(https, pooled), "remainder": _difference(http, unpooled)}


def _origin(row: Mapping | None) -> float | None:
    return (row.get("cpu_us_per_request") or {}).get("origin") if row else None


def decomposition(summary: list[dict], measurements: list[dict] | None = None) -> list[dict]:
    """One entry per workload and client with direct-https, direct-http and terminate measured.

    Each has the inputs (``origin_us``, nginx's two included when they ran), the split of
    the medians, ``nginx_pooling_saving``, and with
    ``measurements`` the split of every round in which all four inputs ran
    (``rounds``: figure -> list, in round order)."""
    entries = []
    clients = sorted({row["client"] for row in summary}, key=lambda c: (c != "loadgen", c))
    for workload in WORKLOADS:
        for client in clients:
            cells = {row["setup"]: row for row in summary
                     if row["workload"] == workload and row["client"] == client}
            origin = {name: _origin(cells.get(name)) for name in (*INPUTS, *NGINX_INPUTS)}
            if None in (origin[DIRECT_HTTPS], origin[DIRECT_HTTP], origin[POOLED]):
                continue
            entry = {"workload": workload, "client": client, "origin_us": origin, **split(origin),
                     "nginx_pooling_saving": _difference(origin[NGINX_UNPOOLED], origin[NGINX]),
                     "rounds": _rounds(measurements or [], workload, client)}
            entries.append(entry)
    return entries


def _rounds(measurements: list[dict], workload: str, client: str) -> dict[str, list[float]]:
    by_round: dict[int, dict[str, float | None]] = defaultdict(dict)
    for m in measurements:
        if m["workload"] == workload and m["client"] == client and m["setup"] in INPUTS:
            by_round[m.get("round", 0)][m["setup"]] = _origin(m)
    spread: dict[str, list[float]] = {figure: [] for figure in FIGURES}
    for _, origin in sorted(by_round.items()):
        for figure, value in split(origin).items():
            if value is not None:
                spread[figure].append(value)
    return spread


def find(entries: list[dict], workload: str, client: str = "loadgen") -> dict | None:
    """The decomposition entry of ``workload`` and ``client``, if the run had one."""
    return next((e for e in entries if e["workload"] == workload and e["client"] == client), None)
