"""``tlsproxy bench --sweep``: what one more connection costs, on two engines and nginx.

Theory of operation
-------------------
The workload table (``course.bench.workloads``) asks what each setup costs at a few
connections.  The sweep asks how that cost *moves* as connections grow, which is
the question that separates a thread per connection from an event loop (the C10K
problem, ``proxy/eventloop/__init__.py``)::

    for round in 1..R:                         interleaved, as in runner.py: a slow
        for workload in keep-alive, new conn:  moment of the machine hits one sample
            for connections in 1,4,16,64,256:  of every column, and the median drops it
                for setup in terminate (threads), terminate-eventloop, terminate-floor, nginx:
                    one wrk cell: -c connections, -t min(2, connections)

The load generator is ``wrk`` (C, epoll), never ours: a Python client cannot keep
nginx busy, and a client that cannot load the reference flatters whoever is slower
(issue 13 measured our own bench's 3.5x as 6.8x with wrk).  All three columns run
setup 3's processes: the same origin (``python -m course.origin``), the same
certificates (ECDSA P-256, TLS 1.3), access logs off; only the proxy differs.

The fourth column, ``terminate-floor`` (on by default; ``--no-floor`` leaves it out),
is no proxy: ``course.bench.floor_relay``, a TLS-terminating byte relay on the same
``selectors`` and ``ssl`` as the event loop, that parses nothing.  It splits each
row's distance from nginx in two: the floor's own distance is what doing the job in
Python costs whatever the proxy does; the event loop's distance from the floor is the
proxy's HTTP logic and bookkeeping.  A target below the floor is out of reach of any
Python proxy built this way; a target above it says how much of our own work must go.

What each row measures, said plainly:

* **keep-alive**: every connection is opened once and kept; a request is a request
  head, a 1 KB response and the record crypto.  The cost that should fall when one
  wait serves many ready sockets.
* **new connection**: ``Connection: close`` makes wrk reconnect after each response,
  and wrk keeps each connection's TLS session and offers it when it reconnects
  (its ``ssl.c`` session callback), so after a connection's first handshake every
  handshake is a **resumed** TLS 1.3 one (``psk_dhe_ke``: still an X25519 exchange,
  no certificate, no signature).  The proxy's status page counts them
  (``handshakes full / resumed``).  The full-handshake row is the workload table's
  ``newconn`` from our own load generator, which never offers a session.

Per cell the proxy's CPU (utime + stime of every thread, ``course.bench.cpu``) over
the requests wrk counted gives CPU per request; wrk's own ``--latency`` gives p99.
The summary keeps, per (workload, connections, setup), the median over rounds, the
rounds themselves, and each engine's ratio to nginx *within* each round.  Results go
to ``sweep.json`` and ``sweep.csv``, the chart to ``sweep.png``/``sweep.svg``
(``course.bench.charts.sweep``).  With the defaults a run takes about
rounds x 2 workloads x 5 counts x 4 columns x 2 s: four minutes for three rounds.

Then, where ``perf`` is installed (``--no-layers`` leaves it out), the proxy processes
(and the floor's) are sampled under keep-alive with wrk at 16 connections and their CPU per
request is split by layer (``course.bench.layers``), with context switches per request
beside it: the threaded engine's extra cost shows up as the kernel's sleeping, waking
and switching threads (every wait parks a thread, every wake-up hands the GIL over),
which the event loop replaces with one ``epoll_wait`` per batch of ready sockets.

Last, the report judges the issue's targets that a sweep can measure (``TARGETS``:
bulk transfers and slow clients have commands of their own), each with its rounds and,
beside every ratio to nginx, the Python floor's ratio in the same cell: a target below
the floor's ratio is out of reach of any Python proxy built this way.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from statistics import median

from course.bench import results, variants
from course.bench.measure import CellFailed, run_wrk_cell, wrk_path
from course.bench.setups import SetupLauncher, instance_key
from course.bench.workloads import BY_NAME, NGINX, Workload
from proxy.errors import ConfigError

FORMAT = "tlsproxy-bench-sweep/1"
CONNECTIONS = (1, 4, 16, 64, 256)
SETUPS = (variants.TERMINATE, variants.EVENTLOOP, NGINX)  # threads, event loop, the reference
FLOOR = variants.FLOOR  # with --floor (the default): the Python floor, a byte relay with no HTTP
COLUMNS = (variants.TERMINATE, variants.EVENTLOOP, FLOOR, NGINX)  # the report's order
WORKLOADS = ("keepalive-1k", "newconn")
LAYER_CONNECTIONS, LAYER_SECONDS = 16, 3.0  # the perf layer table: keep-alive, wrk at 16 connections
KINDS = ("keepalive", "newconn")  # what wrk can drive (measure.WRK_KINDS), bulk included via --workloads
ENGINE_LABEL = {variants.TERMINATE: "threads", variants.EVENTLOOP: "event loop", FLOOR: "python floor",
                NGINX: "nginx"}
# The targets of issue 13 ("threads against an event loop") that one sweep measures, each
# judged in one cell: (what, workload, setup, connections, figure, target).  "ratio" is the
# proxy's CPU per request over nginx's in the same round; "growth" is ``growth`` (64 over 4).
TARGETS = (
    ("event loop, keep-alive, 16 connections", "keepalive-1k", variants.EVENTLOOP, 16, "ratio", 2.0),
    ("event loop, keep-alive, cost at 64 / at 4", "keepalive-1k", variants.EVENTLOOP, 64, "growth", 1.2),
    ("event loop, new connection, 16 connections", "newconn", variants.EVENTLOOP, 16, "ratio", 1.4),
    ("threads, keep-alive, 4 connections", "keepalive-1k", variants.TERMINATE, 4, "ratio", 4.0),
    ("threads, new connection, 4 connections", "newconn", variants.TERMINATE, 4, "ratio", 1.8),
)
HANDSHAKE = {"keepalive": "kept connections, one handshake each",
             "newconn": "a connection per request; wrk resumes its session (TLS 1.3 psk_dhe_ke) after the first"}


def workloads_for(names: list[str]) -> list[Workload]:
    chosen = names or list(WORKLOADS)
    unknown = [n for n in chosen if n not in BY_NAME or BY_NAME[n].kind not in KINDS or BY_NAME[n].tls_version != "1.3"
               or BY_NAME[n].cert != "ecdsa" or BY_NAME[n].resume or BY_NAME[n].http2_streams]
    if unknown:
        raise ConfigError(f"the sweep cannot drive {unknown[0]!r} with wrk: choose from keepalive-1k, newconn, bulk-1m")
    return [BY_NAME[n] for n in chosen]


def setups_available(use_nginx: bool, notes: list[str], floor: bool = False) -> list[str]:
    from course.nginx import nginx_path

    chosen = [s for s in SETUPS if s != NGINX] + ([FLOOR] if floor else [])
    if not use_nginx:
        notes.append("nginx left out (--no-nginx): no ratios")
    elif not nginx_path():
        notes.append("nginx is not installed (apt-get install nginx-light): no ratios")
    else:
        chosen.append(NGINX)
    return chosen


def want_layers(options) -> bool:
    from course.bench.layers import perf_path

    return options.layers if options.layers is not None else perf_path() is not None


def plan(workloads: list[Workload], connections: tuple[int, ...], setups: list[str]) -> list[tuple[Workload, int, str]]:
    """One round's cells, in the order they run."""
    return [(w, c, s) for w in workloads for c in connections for s in setups]


def measure(options, *, progress_stream=sys.stderr) -> dict:
    """Run the sweep; the document (also written to ``options.out``/sweep.json)."""
    from course.bench.runner import Progress, _pki

    if not wrk_path():
        raise ConfigError("the sweep needs wrk, a C load generator (apt-get install wrk)")
    notes: list[str] = []
    setups = setups_available(options.nginx, notes, floor=options.floor)
    workloads = workloads_for(options.workloads)
    connections = tuple(options.connections or CONNECTIONS)
    rounds, duration = options.rounds, float(max(1, round(options.duration)))  # wrk counts whole seconds: 1.5 is 2
    for note in notes:
        print(f"bench: {note}", file=progress_stream)
    out = Path(options.out)
    with tempfile.TemporaryDirectory(prefix="tlsproxy-sweep-") as scratch:
        workdir = Path(options.workdir or scratch).resolve()
        pki = _pki(options, workdir)
        document = {
            "format": FORMAT, "machine": results.machine_info(),
            "parameters": {"connections": list(connections), "rounds": rounds, "duration": duration,
                           "setups": setups, "workloads": [w.name for w in workloads], "client": "wrk",
                           "wrk_threads": "min(2, connections)", "proxy_access_log": "off (nginx: access_log off)"},
            "handshakes": {w.name: HANDSHAKE[w.kind] for w in workloads},
            "notes": notes, "measurements": [], "failures": [],
        }
        cells = plan(workloads, connections, setups)
        launcher = SetupLauncher(pki, workdir)
        try:
            running = launcher.start([instance_key(s, "ecdsa") for s in setups])
            document["pids"] = {s: running[instance_key(s, "ecdsa")].components for s in setups}
            progress = Progress(rounds * len(cells), progress_stream)
            for round_number in range(1, rounds + 1):
                for workload, count, setup in cells:
                    progress.step(f"round {round_number}/{rounds} {workload.name} c={count} {setup}")
                    cell = replace(workload, concurrency=count)
                    try:
                        m = run_wrk_cell(running[instance_key(setup, "ecdsa")], cell, duration=duration,
                                         threads=min(2, count))
                    except CellFailed as error:
                        document["failures"].append({"round": round_number, "workload": workload.name,
                                                     "connections": count, "setup": setup, "error": str(error)})
                        continue
                    m.update(round=round_number, connections=count)
                    document["measurements"].append(m)
            progress.finish()
        finally:
            launcher.stop()
        if want_layers(options):
            from course.bench.layers import layer_profile

            document["layers"] = layer_profile(pki, workdir / "layers", workload_name="keepalive-1k",
                                               seconds=LAYER_SECONDS, warmup=0.5, setups=tuple(setups),
                                               wrk_connections=LAYER_CONNECTIONS)
    document["summary"] = summarize(document["measurements"])
    document["targets"] = targets(document["summary"])
    document["files"] = write(out, document)
    if options.charts:
        from course.bench.charts import sweep as sweep_chart

        document["charts"] = [str(p) for p in sweep_chart(document, out)]
        write(out, document)
    return document


# --------------------------------------------------------------------------- the numbers
def _proxy_cpu(m: dict) -> float | None:
    return m["cpu_us_per_request"].get("proxy")


def summarize(measurements: list[dict]) -> list[dict]:
    """Per (workload, connections, setup): medians and rounds; each engine's ratio to nginx, round by round."""
    by_cell: dict[tuple, dict[int, dict]] = {}
    for m in measurements:
        by_cell.setdefault((m["workload"], m["connections"], m["setup"]), {})[m["round"]] = m
    rows = []
    for (workload, count, setup), by_round in sorted(by_cell.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                     COLUMNS.index(kv[0][2]))):
        ms = [by_round[r] for r in sorted(by_round)]
        reference = by_cell.get((workload, count, NGINX), {})
        ratios = [round(_proxy_cpu(m) / _proxy_cpu(reference[r]), 2) for r, m in sorted(by_round.items())
                  if setup != NGINX and r in reference and _proxy_cpu(m) and _proxy_cpu(reference[r])]
        cpu = [_proxy_cpu(m) for m in ms if _proxy_cpu(m) is not None]
        p99 = [m["latency_us"].get("p99") for m in ms if m["latency_us"].get("p99") is not None]
        rows.append({
            "workload": workload, "connections": count, "setup": setup, "engine": ENGINE_LABEL[setup],
            "rounds": len(ms), "requests": sum(m["requests"] for m in ms),
            "errors": sum(m["error_count"] for m in ms),
            "requests_per_second": round(median(m["requests_per_second"] for m in ms), 1),
            "proxy_cpu_us_per_request": round(median(cpu), 1) if cpu else None,
            "proxy_cpu_us_rounds": [round(v, 1) for v in cpu],
            "p99_us": round(median(p99), 1) if p99 else None,
            "p99_us_rounds": p99,
            "switches_per_request": _median_or_none((m.get("switches_per_request") or {}).get("proxy") for m in ms),
            "ratio_to_nginx": round(median(ratios), 2) if ratios else None,
            "ratio_to_nginx_rounds": ratios,
        })
    return rows


def _median_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 2) if present else None


def growth(summary: list[dict], workload: str, setup: str, low: int = 4, high: int = 64) -> float | None:
    """Cost per request at ``high`` connections over the cost at ``low``: below 1 means it batches."""
    cost = {r["connections"]: r["proxy_cpu_us_per_request"] for r in summary
            if r["workload"] == workload and r["setup"] == setup}
    if cost.get(low) and cost.get(high):
        return round(cost[high] / cost[low], 2)
    return None


def targets(summary: list[dict]) -> list[dict]:
    """``TARGETS`` judged from a summary: the figure, its rounds, met or not, and the floor's ratio."""
    rows = {(r["workload"], r["connections"], r["setup"]): r for r in summary}
    judged = []
    for what, workload, setup, count, figure, target in TARGETS:
        row = rows.get((workload, count, setup))
        floor = rows.get((workload, count, FLOOR))
        if figure == "growth":
            value, rounds = growth(summary, workload, setup, high=count), []
        else:
            value, rounds = (row["ratio_to_nginx"], row["ratio_to_nginx_rounds"]) if row else (None, [])
        judged.append({"what": what, "figure": figure, "target": target, "value": value, "rounds": rounds,
                       "met": None if value is None else value <= target,
                       "floor_ratio": floor["ratio_to_nginx"] if floor and figure == "ratio"
                       and setup == variants.EVENTLOOP else None})  # the floor is an event loop too
    return judged


def write(out: Path, document: dict) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "sweep.json", "csv": out / "sweep.csv"}
    paths["json"].write_text(json.dumps(document, indent=1) + "\n")
    fields = ("workload", "connections", "setup", "engine", "rounds", "requests", "errors", "requests_per_second",
              "proxy_cpu_us_per_request", "p99_us", "switches_per_request", "ratio_to_nginx")
    with open(paths["csv"], "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*fields, "proxy_cpu_us_rounds", "ratio_to_nginx_rounds"])
        writer.writeheader()
        for row in document.get("summary", []):
            writer.writerow({**{k: row[k] for k in fields},
                             "proxy_cpu_us_rounds": " ".join(map(str, row["proxy_cpu_us_rounds"])),
                             "ratio_to_nginx_rounds": " ".join(map(str, row["ratio_to_nginx_rounds"]))})
    return {k: str(p) for k, p in paths.items()}


# --------------------------------------------------------------------------- the report
def format_sweep(document: dict) -> str:
    lines = []
    setups = document["parameters"]["setups"]
    for workload in document["parameters"]["workloads"]:
        rows = {(r["connections"], r["setup"]): r for r in document["summary"] if r["workload"] == workload}
        lines.append(f"\n{workload} ({document['handshakes'][workload]}), driven by wrk; proxy CPU µs per "
                     "request, median of rounds [ratio to nginx per round]; p99 ms")
        header = f"  {'conns':>5}"
        for setup in setups:
            header += f"  {ENGINE_LABEL[setup]:>30}"
        lines.append(header)
        for count in document["parameters"]["connections"]:
            line = f"  {count:>5}"
            for setup in setups:
                r = rows.get((count, setup))
                if r is None or r["proxy_cpu_us_per_request"] is None:
                    line += f"  {'-':>30}"
                    continue
                ratio = (f" [{' '.join(f'{x:.1f}' for x in r['ratio_to_nginx_rounds'])}x]"
                         if r["ratio_to_nginx_rounds"] else "")
                p99 = f" {r['p99_us'] / 1000:.1f}ms" if r["p99_us"] is not None else ""
                cell = f"{r['proxy_cpu_us_per_request']:.0f}{ratio}{p99}"
                if r["errors"]:
                    cell += f" !{r['errors']}err"
                line += f"  {cell:>30}"
            lines.append(line)
        for setup in setups:
            g = growth(document["summary"], workload, setup)
            if g is not None:
                lines.append(f"  {ENGINE_LABEL[setup]}: cost per request at 64 connections / at 4 = {g:.2f}"
                             + (" (falls: it batches)" if g < 1 else " (rises)" if g > 1 else ""))
    judged = [t for t in targets(document["summary"]) if t["value"] is not None]
    if judged:
        lines.append("\ntargets (issue 13) judged from this sweep; a ratio is CPU per request over nginx's")
        for t in judged:
            rounds = f"  rounds {min(t['rounds']):.2f}-{max(t['rounds']):.2f}x" if t["rounds"] else ""
            floor = f"  python floor {t['floor_ratio']:.2f}x" if t["floor_ratio"] is not None else ""
            lines.append(f"  {t['what']:<44} {t['value']:>5.2f}{'x' if t['figure'] == 'ratio' else ' '}"
                         f"  <= {t['target']:<4g} {'yes' if t['met'] else 'NO ':<3}{rounds}{floor}")
    for failure in document["failures"]:
        lines.append(f"  FAILED round {failure['round']} {failure['workload']} c={failure['connections']} "
                     f"{failure['setup']}: {failure['error']}")
    return "\n".join(lines)


def regenerate_committed_figures(out: str = "diagrams/bench/sweep") -> list[Path]:
    """The ``make diagrams`` hook: the default sweep (wrk at 1..256 connections, three rounds, the
    layer table), its sweep.json/.csv beside the chart, as notebook 7 reads them without wrk."""
    from course.bench.runner import Options

    if not wrk_path():
        print("bench: the sweep needs wrk (apt-get install wrk): diagrams/bench/sweep left as it is",
              file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory(prefix="tlsproxy-sweep-") as workdir:  # logs and keys stay out of git
        document = measure(Options(out=Path(out), workdir=Path(workdir), sweep=True))
    return [Path(p) for p in document.get("charts", [])]


def run_cli(options) -> int:
    document = measure(options)
    print(format_sweep(document))
    if document.get("layers"):
        from course.bench.layers import format_layers

        print(format_layers(document["layers"]))
    print(f"\nbench: sweep results in {document['files']['json']}, {document['files']['csv']}"
          + (f"; chart {', '.join(document.get('charts', []))}" if document.get("charts") else ""))
    return 1 if document["failures"] else 0
