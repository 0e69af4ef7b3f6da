"""The workloads of the benchmark, as a table.

Theory of operation
-------------------
A workload says what the load generator does on each connection, and which setups
it is run against.  Each question the benchmark asks has one row:

==================  ==========================================================
keep-alive 1 KB     the steady state: TLS already set up, small answers.  The
                    per-request cost of parsing, forwarding and record crypto.
new connection      one TCP connection, one TLS handshake, one request: the
                    handshake-bound case, where offloading TLS matters most.
resumed             the same with a session ticket (no certificate, no
                    signature): what resumption saves.
RSA / TLS 1.2       the same handshake with an RSA-2048 certificate, or the
                    older protocol: the cost of the signature algorithm.
bulk 1 MB / 20 MB   throughput: record encryption and copying dominate.
upload 1 MB         the same, client to origin.
idle 1,000/10,000   memory: kept-alive TLS connections doing nothing (the second
                    with every connection limit raised to hold them: C10K).
keep-alive HTTP/2   keep-alive 1 KB again, over HTTP/2: many streams per
                    connection, driven by h2load (``course.bench.h2load``),
                    against the proxy and nginx offering h2 (the ``-h2``
                    variants of ``course.bench.variants``).
==================  ==========================================================

``QUICK`` marks the rows (and setups) ``tlsproxy bench --quick`` runs; everything
else runs in a full run.  A row lists the setups it makes sense for: the
certificate comparison needs a TLS endpoint that can hold an RSA certificate, the
memory row compares the proxy with nginx.
"""

from __future__ import annotations

from dataclasses import dataclass

from course import setups as course_setups

# The setups the benchmark does not run, and why: interception's client must trust an
# interception CA made for the run, and neither the load generator nor proxy_flags
# (course.bench.setups) does that.  Its work per request is re-encryption's two sessions
# (setup 4, measured) plus a leaf minted per new host and cached (proxy.tls.mint).
NOT_BENCHED = {s.name: "not benchmarked: the load generator does not trust a per-run interception CA; "
                       "its two TLS sessions per request are re-encryption's (setup 4)"
               for s in course_setups.SETUPS if s.intercepts}
# The setups of DESIGN.md (course/setups.py), in teaching order, and the production reference.
SETUPS = tuple(name for name in course_setups.NAMES if name not in NOT_BENCHED)
NGINX = "nginx"
ALL = (*SETUPS, NGINX)
TLS_SETUPS = (*(s.name for s in course_setups.SETUPS if s.client_tls and s.name in SETUPS), NGINX)
CERT_SETUPS = ("direct-https", "terminate", NGINX)  # where the benchmark can swap the certificate


@dataclass(frozen=True)
class Workload:
    """One row of the table: what the load generator does, and against which setups."""

    name: str
    title: str
    kind: str  # "keepalive" (requests on kept connections), "newconn" (a connection per request),
    #            "upload" (POST a body on kept connections), "idle" (hold connections open)
    path: str = "/bytes/1k"  # the origin's generated-bytes endpoint (course/origin/handlers.py)
    upload_size: int = 0
    tls_version: str = "1.3"
    cert: str = "ecdsa"  # "ecdsa" (P-256) or "rsa" (2048): the certificate the client is shown
    resume: bool = False  # offer the previous connection's session (full vs resumed handshake)
    setups: tuple[str, ...] = ALL
    concurrency: int = 4  # load generator threads, one connection each
    quick_setups: tuple[str, ...] = ()  # the setups --quick runs this row for (empty: not in --quick)
    connections: int = 0  # "idle": how many connections to hold
    bulk: bool = False  # a throughput row: its headline figure is bytes per second
    http2_streams: int = 0  # > 0: an HTTP/2 row, driven by h2load with this many streams per connection


WORKLOADS: tuple[Workload, ...] = (
    Workload("keepalive-1k", "keep-alive, 1 KB responses, TLS 1.3", "keepalive", quick_setups=ALL),
    Workload("newconn", "new TLS 1.3 connection per request (ECDSA P-256, full handshake)", "newconn",
             quick_setups=ALL),
    Workload("newconn-resumed", "new TLS 1.3 connection per request, resumed (session ticket)", "newconn",
             resume=True, setups=TLS_SETUPS),
    Workload("newconn-rsa", "new TLS 1.3 connection per request, RSA-2048 certificate", "newconn",
             cert="rsa", setups=CERT_SETUPS),
    Workload("newconn-tls12", "new TLS 1.2 connection per request (ECDHE-ECDSA, full)", "newconn",
             tls_version="1.2", setups=CERT_SETUPS),
    Workload("newconn-tls12-resumed", "new TLS 1.2 connection per request, resumed", "newconn",
             tls_version="1.2", resume=True, setups=CERT_SETUPS),
    Workload("newconn-tls12-rsa", "new TLS 1.2 connection per request, RSA-2048 (ECDHE-RSA)", "newconn",
             tls_version="1.2", cert="rsa", setups=CERT_SETUPS),
    Workload("keepalive-1k-tls12", "keep-alive, 1 KB responses, TLS 1.2", "keepalive", tls_version="1.2",
             setups=CERT_SETUPS),
    Workload("bulk-1m", "bulk download, 1 MB responses on kept connections", "keepalive", path="/bytes/1m",
             bulk=True, concurrency=2, quick_setups=("terminate", NGINX)),
    Workload("bulk-20m", "bulk download, 20 MB responses on kept connections", "keepalive", path="/bytes/20m",
             bulk=True, concurrency=2),
    Workload("upload-1m", "upload, 1 MB request bodies on kept connections", "upload", path="/upload",
             upload_size=1 << 20, bulk=True, concurrency=2),
    # h2load -c4 -m8: four connections as in keepalive-1k, eight requests in flight on each
    # (a browser opens one connection per origin and multiplexes; RFC 9113 §5.1.2).
    Workload("keepalive-1k-h2", "keep-alive, 1 KB responses, HTTP/2 (h2load, 4 connections x 8 streams)",
             "keepalive", setups=(), http2_streams=8),
    Workload("idle-1000", "1,000 idle keep-alive TLS connections: resident memory", "idle",
             setups=("terminate", NGINX), connections=1000),
    Workload("idle-10000", "10,000 idle keep-alive TLS connections: resident memory per engine", "idle",
             setups=("terminate", NGINX), connections=10_000),
)

BY_NAME = {w.name: w for w in WORKLOADS}


def select(names: list[str] | None, *, quick: bool) -> list[Workload]:
    """The workloads to run: the named ones, the quick subset, or all."""
    if names:
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown workload {unknown[0]!r} (one of {', '.join(BY_NAME)})")
        return [BY_NAME[n] for n in names]
    if quick:
        return [w for w in WORKLOADS if w.quick_setups]
    return list(WORKLOADS)


def setups_for(workload: Workload, available: list[str], *, quick: bool) -> list[str]:
    """The setups, of those running, that ``workload`` is run against (in teaching order)."""
    wanted = workload.quick_setups if quick and workload.quick_setups else workload.setups
    return [s for s in available if s in wanted]
