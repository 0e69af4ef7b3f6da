"""One HTTP/2 cell of the benchmark, driven by ``h2load`` (nghttp2's C load generator).

Theory of operation
-------------------
Neither our load generator nor ``wrk`` speaks HTTP/2, so the HTTP/2 row
(``keepalive-1k-h2`` in ``course.bench.workloads``) is driven by ``h2load``
(Debian package ``nghttp2-client``).  It runs against the three bench variants that
offer ``h2`` in ALPN (``course.bench.variants``): setup 3's proxy with ``--alpn
h2,http/1.1`` on the threaded engine (``proxy/modes/h2.py``) and on the event loop
(``proxy/eventloop/h2session.py``), and nginx with HTTP/2 on its listener
(``course.nginx.terminate_conf(..., http2=True)``)::

    h2load -c CONNS -m STREAMS -D SECONDS ══TLS 1.3, ALPN h2══▶ proxy or nginx ──HTTP/1.1──▶ origin
           CONNS connections, each with up to STREAMS requests in flight

The cell is shaped like a wrk cell (``course.bench.measure.run_wrk_cell``): the
servers' CPU is read from ``/proc`` just before h2load starts and just after it
exits, h2load's own from ``wait4``; its connection set-ups fall inside the window.
It is bounded in count by ``-n`` and in time by a timer that kills a hung h2load.
Count, not ``-D``: when ``-D`` runs out, h2load closes its connections with streams
still in flight, and the server sees those streams reset, which is a different
workload (one that, before the fix tested by
tests/integration/test_h2_real_clients.py::test_a_client_resetting_its_stream_does_not_eject_the_backend,
ejected the threaded engine's backend).  ``requests_for`` sizes each cell from
the rate the same setup reached in its previous cell, so that a cell lasts about
``--duration``; a setup's first cell, which the runner does not record
(``course.bench.runner.size_h2load_cells``), asks ``FIRST_CELL_PER_STREAM`` requests per
stream.  No cell asks more than ``Limits.max_requests_per_connection`` per connection:
both servers end a connection with GOAWAY there (nginx's ``keepalive_requests``,
which the export sets to it, governs HTTP/2 since 1.19.7), and h2load does not
reconnect: the rest would be counted as errors.  A cell whose connections did not negotiate ``h2`` fails: an HTTP/1.1
fallback would be a different row.

What h2load prints, and what is kept (``parse_h2load``): "finished in", the
"requests:" line ("succeeded" is the count; "failed" the errors, which include the
"errored" ones (stream or connection errors) and the 4xx/5xx answers of the "status
codes:" line, as the run against an ejected backend showed: 0 succeeded, N failed,
N 5xx), "traffic:" (bytes in) and "time for request" (mean and max; h2load prints no
percentiles).
"""

from __future__ import annotations

import re
import shutil

from proxy import config as cfg
from course.bench.measure import SLACK, CellFailed, _measurement, add_switches, run_tool
from course.bench.setups import RunningSetup
from course.bench.workloads import Workload

PACKAGE = "nghttp2-client"  # Debian: h2load
FIRST_CELL_PER_STREAM = 25  # a setup's first cell: 25 requests per stream slot (4 x 8 slots: 800)
SLOWER_BOUND = 10  # a cell is killed after 10 x the duration it was sized for (plus measure.SLACK)
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def h2load_path() -> str | None:
    return shutil.which("h2load")


def _duration_us(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * _UNITS[unit]


def parse_h2load(text: str) -> dict:
    """h2load's summary -> requests, seconds, bytes, errors, latency (µs) and the protocol it spoke."""
    finished = re.search(r"finished in ([\d.]+(?:us|ms|s|m)),", text)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", text)
    if not finished or not counts:
        raise CellFailed(f"cannot read h2load's output: {text.strip()[-200:]!r}")
    seconds = _duration_us(finished.group(1)) / 1e6
    succeeded, failed, errored, timeout = (int(counts.group(i)) for i in (4, 5, 6, 7))
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    refused = sum(int(statuses.group(i)) for i in (3, 4)) if statuses else 0
    # "failed" holds the other three; the breakdown says which (it may not add up: a stream
    # can be answered 2xx and still error afterwards).
    errors = {kind: n for kind, n in (("status-4xx-5xx", refused), ("stream-or-connection", errored),
                                      ("timeout", timeout)) if n}
    traffic = re.search(r"traffic: \S+ \((\d+)\) total", text)
    bytes_in = int(traffic.group(1)) if traffic else 0
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)  # min, max, mean
    protocol = re.search(r"Application protocol: (\S+)", text)
    requests = succeeded
    return {"requests": requests, "seconds": seconds,
            "requests_per_second": round(requests / seconds, 3) if seconds else 0.0,
            "bytes_in": bytes_in, "bytes_out": 0, "bytes_per_second": round(bytes_in / seconds, 1) if seconds else 0.0,
            "errors": errors, "error_count": failed,
            "latency_us": ({"mean": round(_duration_us(latency.group(3)), 1),
                            "max": round(_duration_us(latency.group(2)), 1)} if latency else {}),
            "protocol": protocol.group(1) if protocol else None}


def requests_for(workload: Workload, duration: float, previous_rate: float | None, max_requests: int,
                 per_connection: int = cfg.Limits().max_requests_per_connection) -> int:
    """How many requests a cell asks for: about ``duration`` at the setup's previous rate, at most
    ``per_connection`` on each connection (the servers' GOAWAY) and ``max_requests`` in all."""
    slots = workload.concurrency * workload.http2_streams
    wanted = round(previous_rate * duration) if previous_rate else FIRST_CELL_PER_STREAM * slots
    return max(slots, min(wanted, max_requests, per_connection * workload.concurrency))


def h2load_argv(running: RunningSetup, workload: Workload, *, requests: int) -> list[str]:
    """The command line: TLS to ``running``'s port, the certificate's name as SNI and :authority."""
    host, port = running.host_for(workload.cert), running.connect_to[1]
    return [h2load_path(), f"-c{workload.concurrency}", f"-m{workload.http2_streams}", "-t1", f"-n{requests}",
            "--connect-to", "%s:%d" % running.connect_to, f"https://{host}:{port}{workload.path}"]


def run_h2load_cell(running: RunningSetup, workload: Workload, *, requests: int, duration: float = 1.0) -> dict:
    """One HTTP/2 cell of ``requests`` (sized for ``duration`` s): ``concurrency`` connections x ``http2_streams``."""
    if not h2load_path():
        raise CellFailed(f"h2load is not installed (apt-get install {PACKAGE})")
    connections, streams = workload.concurrency, workload.http2_streams
    argv = h2load_argv(running, workload, requests=requests)
    bound = SLOWER_BOUND * duration + SLACK  # a cell ten times slower than its size said is killed
    run = run_tool(argv, running, bound=bound)  # the wrk cells' runner (course.bench.measure)
    if run.returncode != 0:
        raise CellFailed(f"h2load {workload.name} on {running.name} exited {run.returncode}: "
                         f"{run.output.strip()[-200:]}")
    result = parse_h2load(run.output)
    if result["protocol"] != "h2":
        raise CellFailed(f"h2load {workload.name} on {running.name}: ALPN chose {result['protocol']!r}, not h2")
    result["connections_opened"] = connections
    measurement = _measurement(running, workload, "h2load", result, run.spent, run.seconds)
    measurement.update(http_version="2", streams_per_connection=streams, connections=connections)
    add_switches(measurement, run.switches)
    return measurement
