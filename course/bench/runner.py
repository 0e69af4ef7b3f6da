"""``tlsproxy bench``: start the setups, run the workloads in interleaved rounds, report.

Theory of operation
-------------------
One invocation measures everything it compares, so every ratio is between figures
taken minutes apart on the same machine, never across runs::

    start every setup's processes (origins, proxies, nginx)   setups.SetupLauncher
    openssl speed (everything idle)                            floor.crypto_floor
    for round in 1..R:                 ┐ interleaved: A B C, A B C, ... so a slow
        for workload in workloads:     │ moment of the machine hits one sample of
            for setup in its setups:   │ every setup, and the median drops it
                one cell (loadgen, then wrk where it can drive)   measure.run_cell
    1,000 idle connections on fresh processes (terminate, nginx)  once
    summary (medians), ratios to nginx, the offload split,
    results.json/.csv, charts, table

``--quick`` is the subset for CI and notebooks (keep-alive 1 KB and new connection
on all six setups and nginx, bulk 1 MB on terminate and nginx; 2 rounds of half a
second per cell, under a minute).  A full run measures every workload of
``workloads.WORKLOADS``; each cell is bounded in time and in requests.

``--unpooled`` (on by default in full runs) adds the bench-only variants of
``course.bench.variants``: setup 3 and nginx with no backend keep-alive, on the
keep-alive and new-connection workloads.  With them the run splits the origin's
saving behind the terminator into what TLS costs it (direct-https − direct-http) and
what connection pooling saves it (terminate-unpooled − terminate), printed after the
table and kept in ``results.json`` under ``offload`` (``course.bench.offload``).

``--eventloop`` (on by default in full runs) adds ``terminate-eventloop``, setup 3's
proxy on the event-loop engine, on keep-alive, new connection and bulk.  ``--sweep``
asks a different question and runs only it: the keep-alive and new-connection
workloads driven by wrk at 1, 4, 16, 64 and 256 connections on the threaded engine,
the event loop and nginx, interleaved (``course.bench.sweep``).

``--h2`` (on by default in full runs when ``h2load`` is installed) adds the HTTP/2
variants, ``terminate-h2`` (threads), ``terminate-h2-eventloop`` (the event loop) and
``nginx-h2``, and the ``keepalive-1k-h2`` row, which only ``h2load`` drives
(``course.bench.h2load``), interleaved with the other cells; its ratios to nginx are
each engine's CPU per request over ``nginx-h2``'s, round by round.

``--vs-nginx`` prints the proxy-over-nginx ratios with the targets of the issue and
whether each is met, beside the crypto floor.  ``--profile`` then runs the proxy
once more under cProfile (every thread) with the keep-alive workload and prints the
15 functions with the most time of their own: where the proxy's CPU goes.
``--layers`` (on by default with ``--vs-nginx``, when ``perf`` is installed) samples
tlsproxy and nginx with ``perf`` under the same workload and prints their CPU per
request by layer: own code, OpenSSL, the kernel's thread switching, the rest of the
kernel (``course.bench.layers``): why a ratio is what it is.  When the run has the
HTTP/2 row, a second table samples its three columns (threads, event loop, nginx, each
offering h2) under h2load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from course.bench import offload, results, variants
from course.bench.h2load import PACKAGE as H2LOAD_PACKAGE, h2load_path, requests_for, run_h2load_cell
from course.bench.measure import CellFailed, run_cell, run_wrk_cell, wrk_can_drive, wrk_path
from course.bench.layers import H2_SETUPS, format_layers, layer_profile, perf_path
from course.bench.variants import NGINX_H2
from course.bench.profiling import format_profile, profile_proxy
from course.bench.report import format_offload, format_table, format_vs_nginx
from course.bench.setups import SetupLauncher, instance_key
from course.bench.workloads import ALL, BY_NAME, NGINX, NOT_BENCHED, WORKLOADS, Workload, select, setups_for
from course.setups import BY_NAME as SETUP_FACTS
from proxy import config as cfg
from proxy.errors import ConfigError

FORMAT = "tlsproxy-bench/1"
H2_ROW = "keepalive-1k-h2"  # the HTTP/2 row (course.bench.workloads), which only h2load drives
IDLE_DURATION = 60.0  # the idle window's bound: opening 1,000 TLS connections takes a few seconds


@dataclass
class Options:
    out: Path = Path("build/bench")
    quick: bool = False
    rounds: int = 3
    duration: float = 1.5
    warmup: float = 0.5
    max_requests: int = 200_000
    workloads: list[str] = field(default_factory=list)
    setups: list[str] = field(default_factory=list)
    nginx: bool = True
    wrk: bool | None = None  # None: in full runs when installed
    vs_nginx: bool = False
    crypto_floor: bool | None = None  # None: in full runs and with --vs-nginx
    charts: bool = True
    certs: Path | None = None
    workdir: Path | None = None  # logs, PKI, nginx prefixes (default: OUT/work)
    profile: bool = False
    profile_seconds: float = 5.0
    profile_workload: str = "keepalive-1k"
    layers: bool | None = None  # None: with --vs-nginx, when perf is installed
    unpooled: bool | None = None  # the no-backend-keep-alive variants; None: in full runs, not --quick
    eventloop: bool | None = None  # the event-loop engine beside the threaded one; None: in full runs
    h2: bool | None = None  # the HTTP/2 variants and row (h2load); None: in full runs when h2load is installed
    sweep: bool = False  # the concurrency sweep (course.bench.sweep) instead of the workload table
    connections: tuple[int, ...] = ()  # the sweep's connection counts (default sweep.CONNECTIONS)
    floor: bool = True  # the sweep's Python floor column (course.bench.floor_relay)

    @classmethod
    def quick_defaults(cls, **overrides) -> Options:
        return cls(**{"quick": True, "rounds": 2, "duration": 0.5, "warmup": 0.2, **overrides})


# --------------------------------------------------------------------------- what to run
def want_unpooled(options: Options) -> bool:
    return options.unpooled if options.unpooled is not None else not options.quick


def want_eventloop(options: Options) -> bool:
    return options.eventloop if options.eventloop is not None else not options.quick


def want_h2(options: Options, notes: list[str] | None = None) -> bool:
    wanted = options.h2 if options.h2 is not None else (not options.quick and bool(h2load_path()))
    if wanted and not h2load_path():
        if notes is not None:
            notes.append(f"the HTTP/2 row: skipped, h2load is not installed (apt-get install {H2LOAD_PACKAGE})")
        return False
    return wanted


def available_setups(options: Options, notes: list[str]) -> list[str]:
    """The setups (and bench variants) this machine and this tree can run, in teaching order."""
    wanted = list(options.setups or ALL)
    unknown = [s for s in wanted if s not in variants.ORDER]
    if unknown and unknown[0] in NOT_BENCHED:
        raise ConfigError(f"setup {unknown[0]!r}: {NOT_BENCHED[unknown[0]]}")
    if unknown:
        raise ConfigError(f"unknown setup {unknown[0]!r} (one of {', '.join(variants.ORDER)})")
    groups = [g for g, on in (("unpooled", want_unpooled(options)), ("eventloop", want_eventloop(options)),
                              ("h2", want_h2(options, notes))) if on]
    for group in groups:  # each variant beside its base, when the base is asked for
        wanted += [v.name for v in variants.in_group(group) if v.base in wanted and v.name not in wanted]
    wanted.sort(key=variants.order)
    chosen = []
    for setup in wanted:
        base = variants.base_of(setup)
        if base in SETUP_FACTS and not SETUP_FACTS[base].available:
            notes.append(f"{setup}: skipped, proxy/modes/{SETUP_FACTS[base].mode}.py does not exist yet")
            continue
        if base == NGINX:
            from course.nginx import nginx_path

            if not options.nginx:
                continue
            if not nginx_path():
                if setup in options.setups:
                    raise ConfigError("nginx is not installed (apt-get install nginx-light)")
                notes.append(f"{setup}: skipped, nginx is not installed (apt-get install nginx-light)")
                continue
        chosen.append(setup)
    return chosen


def plan(options: Options, setups: list[str]) -> list[tuple[Workload, str, str]]:
    """One round's cells: (workload, setup, client), workloads in table order, setups interleaved."""
    use_wrk = options.wrk if options.wrk is not None else (not options.quick and bool(wrk_path()))
    cells = []
    for workload in select(options.workloads, quick=options.quick):
        if workload.kind == "idle":
            continue  # measured once, on fresh processes (see run_idle)
        columns = setups_for(workload, setups, quick=options.quick) + variants.for_workload(workload.name, setups)
        columns.sort(key=variants.order)
        if workload.http2_streams:  # HTTP/2: h2load alone (neither loadgen nor wrk speaks it)
            cells += [(workload, setup, "h2load") for setup in columns]
            continue
        for setup in columns:
            cells.append((workload, setup, "loadgen"))
        if use_wrk and wrk_path():
            for setup in columns:
                if wrk_can_drive(variants.base_of(setup), workload):
                    cells.append((workload, setup, "wrk"))
    return cells


class Progress:
    """A one-line text progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def step(self, label: str) -> None:
        width = 30
        filled = int(width * self.done / max(1, self.total))
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label}  eta {eta:.0f}s"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"bench: {self.total} cells in {time.monotonic() - self.started:.0f}s\n")
        self.stream.flush()


# --------------------------------------------------------------------------- running
def _pki(options: Options, workdir: Path):
    from proxy.pki import ensure_demo_certs

    return ensure_demo_certs(Path(options.certs).resolve() if options.certs else workdir / "pki")


def run_rounds(options: Options, setups: list[str], pki, workdir: Path, document: dict) -> None:
    cells = plan(options, setups)
    keys = sorted({instance_key(s, w.cert) for w, s, _ in cells})
    launcher = SetupLauncher(pki, workdir)
    try:
        running = launcher.start(keys) if keys else {}
        document["setups"] = {f"{s}/{c}": {"implementation": r.implementation, "pids": r.components}
                              for (s, c), r in running.items()}
        if _want_floor(options):
            document["crypto_floor"] = _floor()
        progress = Progress(options.rounds * len(cells))
        h2_rates = size_h2load_cells(options, cells, running)  # each h2load cell sized from its setup's last rate
        for round_number in range(1, options.rounds + 1):
            for workload, setup, client in cells:
                progress.step(f"round {round_number}/{options.rounds} {workload.name} {setup} ({client})")
                target = running[instance_key(setup, workload.cert)]
                try:
                    if client == "wrk":
                        m = run_wrk_cell(target, workload, duration=options.duration)
                    elif client == "h2load":
                        count = requests_for(workload, options.duration, h2_rates.get(setup), options.max_requests)
                        m = run_h2load_cell(target, workload, requests=count, duration=options.duration)
                        h2_rates[setup] = m["requests_per_second"]
                    else:
                        m = run_cell(target, workload, str(pki.ca), warmup=options.warmup,
                                     duration=options.duration, max_requests=options.max_requests)
                except CellFailed as error:
                    document["failures"].append({"round": round_number, "workload": workload.name,
                                                 "setup": setup, "client": client, "error": str(error)})
                    continue
                if not m["requests"]:  # nothing succeeded: there is no per-request figure to report
                    document["failures"].append({"round": round_number, "workload": workload.name, "setup": setup,
                                                 "client": client, "error": f"no request succeeded: {m['errors']}"})
                    continue
                m["round"] = round_number
                document["measurements"].append(m)
        progress.finish()
    finally:
        launcher.stop()


def size_h2load_cells(options: Options, cells: list[tuple[Workload, str, str]], running: dict) -> dict[str, float]:
    """One unrecorded h2load cell per HTTP/2 setup before round 1: the rate its first recorded cell is sized from.

    Without it round 1's cells would be ``FIRST_CELL_PER_STREAM`` requests per stream slot,
    which nginx serves on a few of /proc's clock ticks of CPU (``course.bench.cpu.CLOCK_TICKS``
    a second): its round-1 figure, and that round's ratios, would be read off a coarse clock."""
    rates: dict[str, float] = {}
    for workload, setup, client in cells:
        if client != "h2load" or setup in rates:
            continue
        print(f"bench: sizing {workload.name} on {setup} (h2load, not recorded)", file=sys.stderr)
        try:
            m = run_h2load_cell(running[instance_key(setup, workload.cert)], workload, duration=options.duration,
                                requests=requests_for(workload, options.duration, None, options.max_requests))
        except CellFailed:
            continue  # round 1's cell will fail as well, and be recorded as failed
        rates[setup] = m["requests_per_second"]
    return rates


def run_idle(options: Options, setups: list[str], pki, workdir: Path, document: dict) -> None:
    """The memory workload, once, on freshly started processes (a used process's heap would hide growth)."""
    for workload in select(options.workloads, quick=options.quick):
        if workload.kind != "idle":
            continue
        columns = setups_for(workload, setups, quick=options.quick) + variants.for_workload(workload.name, setups)
        # Every connection limit raised to what the row holds (Limits.max_connections, nginx's
        # worker_connections), with room for the probe: the row measures memory, not a limit.
        limit = workload.connections + 64 if workload.connections > cfg.Limits().max_connections else None
        for setup in sorted(columns, key=variants.order):
            launcher = SetupLauncher(pki, workdir / "idle", max_connections=limit)
            try:
                target = launcher.start([instance_key(setup, workload.cert)])[instance_key(setup, workload.cert)]
                print(f"bench: {workload.name} on {setup} (fresh processes)", file=sys.stderr)
                m = run_cell(target, workload, str(pki.ca), warmup=options.warmup, duration=IDLE_DURATION,
                             max_requests=workload.connections)
                m["round"] = 1
                document["measurements"].append(m)
            except CellFailed as error:
                document["failures"].append({"round": 1, "workload": workload.name, "setup": setup,
                                             "client": "loadgen", "error": str(error)})
            finally:
                launcher.stop()


def _want_floor(options: Options) -> bool:
    return options.crypto_floor if options.crypto_floor is not None else (options.vs_nginx or not options.quick)


def _floor() -> dict | None:
    from course.bench.floor import crypto_floor

    print("bench: openssl speed (the crypto floor), ~5 s", file=sys.stderr)
    try:
        return crypto_floor()
    except (OSError, ValueError) as error:
        return {"error": str(error)}


def run_benchmark(options: Options) -> dict:
    """Measure; write results.json, results.csv, rounds.csv and the charts into ``options.out``."""
    out = Path(options.out)
    # Absolute: nginx reads the certificate paths from its configuration relative to its
    # own prefix, so a relative --out (the default, build/bench) would point it nowhere.
    workdir = Path(options.workdir or out / "work").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    setups = available_setups(options, notes)
    for note in notes:
        print(f"bench: {note}", file=sys.stderr)
    pki = _pki(options, workdir)
    document = {
        "format": FORMAT,
        "machine": results.machine_info(),
        "parameters": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
                       "setups_run": setups, "proxy_access_log": "off (nginx: access_log off)",
                       "loadgen": "python -m course.bench.loadgen (threads, one connection each)"},
        "workloads": [asdict(w) for w in select(options.workloads, quick=options.quick)],
        "notes": notes, "crypto_floor": None, "setups": {}, "measurements": [], "failures": [],
    }
    run_rounds(options, setups, pki, workdir, document)
    run_idle(options, setups, pki, workdir, document)
    document["summary"] = results.summarize(document["measurements"])
    document["vs_nginx"] = results.nginx_ratios(document["summary"], document["crypto_floor"],
                                                  document["measurements"])
    document["offload"] = offload.decomposition(document["summary"], document["measurements"])
    if options.profile:
        document["profile"] = profile_proxy(pki, workdir, out, seconds=options.profile_seconds,
                                            warmup=options.warmup, workload_name=options.profile_workload)
    if want_layers(options, setups):
        document["layers"] = layer_profile(pki, workdir, workload_name=options.profile_workload,
                                           seconds=min(options.profile_seconds, 4.0), warmup=options.warmup)
        h2_columns = h2_layer_setups(options, setups)
        if h2_columns:  # the HTTP/2 row's three columns, driven by h2load (course.bench.layers.drive_h2load)
            document["layers_h2"] = layer_profile(pki, workdir, workload_name=H2_ROW, setups=h2_columns,
                                                  seconds=min(options.profile_seconds, 4.0), warmup=options.warmup)
    document["files"] = {k: str(p) for k, p in results.write(out, document).items()}
    if options.charts:
        from course.bench.charts import draw_all

        document["charts"] = [str(p) for p in draw_all(document, out)]
        results.write(out, document)  # again, now listing the charts
    return document


def want_layers(options: Options, setups: list[str]) -> bool:
    if NGINX not in setups:
        return False
    if options.layers is None:
        return options.vs_nginx and perf_path() is not None
    return options.layers


def h2_layer_setups(options: Options, setups: list[str]) -> tuple[str, ...]:
    """The HTTP/2 columns of the layer table: those of the run, when it ran the HTTP/2 row and nginx-h2."""
    if H2_ROW not in [w.name for w in select(options.workloads, quick=options.quick)] or NGINX_H2 not in setups:
        return ()
    return tuple(s for s in H2_SETUPS if s in setups)


# --------------------------------------------------------------------------- command line
def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Start the six setups (and nginx when installed) as processes on loopback, run the "
                          "workloads in interleaved rounds, and report CPU per request per component, throughput "
                          "and latency, with charts.")
    add = parser.add_argument
    add("--out", default="build/bench", type=Path, help="folder for results.json/.csv and charts (default %(default)s)")
    add("--quick", action="store_true", help="the small subset for CI and notebooks (under a minute)")
    add("--rounds", type=int, help="interleaved rounds (default 3; --quick 2)")
    add("--duration", type=float, help="seconds per cell (default 1.5; --quick 0.5)")
    add("--warmup", type=float, help="warm-up seconds per cell (default 0.5; --quick 0.2)")
    add("--max-requests", type=int, default=200_000, help="request bound per cell (default %(default)s)")
    add("--workloads", help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    add("--setups", help=f"comma-separated subset of: {', '.join(variants.ORDER)}")
    add("--no-nginx", action="store_true", help="leave nginx out")
    add("--wrk", action=argparse.BooleanOptionalAction, default=None,
        help="also drive the setups wrk can reach with wrk (default: in full runs, when installed)")
    add("--vs-nginx", action="store_true", help="print the course/nginx ratios against the targets")
    add("--unpooled", action=argparse.BooleanOptionalAction, default=None,
        help="also run terminate and nginx with no backend keep-alive (bench-only variants), to split the "
             "origin's saving into TLS offload and connection pooling (default: in full runs)")
    add("--eventloop", action=argparse.BooleanOptionalAction, default=None,
        help="also run setup 3's proxy on the event-loop engine (terminate-eventloop) on keep-alive, new "
             "connection and bulk (default: in full runs)")
    add("--h2", action=argparse.BooleanOptionalAction, default=None,
        help="also run keep-alive 1 KB over HTTP/2 with h2load against terminate-h2 (--alpn h2,http/1.1), "
             "terminate-h2-eventloop (the same on --engine eventloop) and nginx-h2 (default: in full runs, when "
             "h2load is installed: apt-get install nghttp2-client)")
    add("--sweep", action="store_true",
        help="run only the concurrency sweep: wrk at each of --connections on the threaded engine, the event "
             "loop, the Python floor (--floor) and nginx (terminate), keep-alive and new connection, interleaved "
             "rounds; sweep.png/.svg")
    add("--connections", metavar="N,N,...",
        help="the sweep's connection counts (default 1,4,16,64,256)")
    add("--floor", action=argparse.BooleanOptionalAction, default=True,
        help="the sweep's Python floor column: a TLS-terminating byte relay with no HTTP "
             "(course/bench/floor_relay.py), what the interpreter, ssl and selectors cost on their own "
             "(default: on)")
    add("--crypto-floor", action=argparse.BooleanOptionalAction, default=None,
        help="run openssl speed for the floor (default: full runs and --vs-nginx)")
    add("--no-charts", action="store_true", help="skip the charts")
    add("--certs", type=Path, help="reuse the demo PKI in this folder (default: OUT/work/pki)")
    add("--profile", action="store_true", help="afterwards, profile the proxy under keep-alive (cProfile, top 15)")
    add("--profile-seconds", type=float, default=5.0, help="length of the profiled run (default %(default)s)")
    add("--profile-workload", default="keepalive-1k", metavar="NAME",
        choices=[w.name for w in WORKLOADS if w.kind != "idle" and not w.http2_streams],  # loadgen's rows
        help="the workload of the profiled run (default %(default)s)")
    add("--layers", action=argparse.BooleanOptionalAction, default=None,
        help="afterwards, sample tlsproxy and nginx with perf under the --profile-workload and print where "
             "their CPU goes by layer (default: with --vs-nginx, when perf is installed)")


def options_from_args(args: argparse.Namespace) -> Options:
    base = Options.quick_defaults() if args.quick else Options()
    overrides = {k: v for k, v in (("rounds", args.rounds), ("duration", args.duration), ("warmup", args.warmup))
                 if v is not None}
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()] if text else []  # noqa: E731
    options = replace(base, out=args.out, max_requests=args.max_requests, workloads=split(args.workloads),
                      setups=split(args.setups), nginx=not args.no_nginx, wrk=args.wrk, vs_nginx=args.vs_nginx,
                      crypto_floor=args.crypto_floor, charts=not args.no_charts, certs=args.certs,
                      profile=args.profile, profile_seconds=args.profile_seconds,
                      profile_workload=args.profile_workload, layers=args.layers, unpooled=args.unpooled,
                      eventloop=args.eventloop, h2=args.h2, sweep=args.sweep,
                      connections=_connections(args.connections), floor=args.floor,
                      **overrides)
    if options.rounds < 1 or options.duration <= 0 or options.warmup < 0:
        raise ConfigError("--rounds must be at least 1 and --duration positive")
    try:
        select(options.workloads, quick=options.quick)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return options


def _connections(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--connections {text!r}: expected numbers separated by commas, e.g. 1,4,16") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"--connections {text!r}: every count must be at least 1")
    return counts


def run_cli(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if options.sweep:
        from course.bench import sweep

        return sweep.run_cli(options)
    document = run_benchmark(options)
    print(format_table(document))
    if document.get("offload"):
        print(format_offload(document))
    if options.vs_nginx:
        print(format_vs_nginx(document))
    if document.get("profile"):
        print(format_profile(document["profile"]))
    for key in ("layers", "layers_h2"):
        if document.get(key):
            print(format_layers(document[key]))
    for failure in document["failures"]:
        print(f"bench: FAILED {failure['workload']} on {failure['setup']} ({failure['client']}, round "
              f"{failure['round']}): {failure['error']}", file=sys.stderr)
    print(f"\nbench: results in {document['files']['json']}, {document['files']['csv']}"
          + (f"; {len(document.get('charts', []))} chart files in {options.out}" if document.get("charts") else ""))
    return 1 if document["failures"] else 0


def regenerate_committed_figures(out: str = "diagrams/bench") -> list[Path]:
    """The ``make diagrams`` hook: a --quick run (crypto floor, unpooled variants) whose charts land in ``out``.

    The results.json and results.csv they were drawn from are written beside them, so
    a committed figure always comes with its machine and parameters.
    """
    with tempfile.TemporaryDirectory(prefix="tlsproxy-bench-") as workdir:  # logs and keys stay out of git
        options = Options.quick_defaults(out=Path(out), workdir=Path(workdir), crypto_floor=True, vs_nginx=True,
                                         unpooled=True)
        document = run_benchmark(options)
    return [Path(p) for p in document.get("charts", [])]


if __name__ == "__main__":
    from course.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
