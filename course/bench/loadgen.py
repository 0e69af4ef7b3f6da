"""The load generator: a threaded HTTP/1.1 client, run as its own process.

Theory of operation
-------------------
The benchmark measures servers by the CPU their processes spend, so the client must
be a separate process whose CPU is counted apart ("client", never part of the
system's cost).  One process, ``concurrency`` threads, one connection per thread::

    python -m course.bench.loadgen --url https://www.example.test/bytes/1k \\
        --connect-to 127.0.0.1:8443 --ca certs/ca.pem --duration 2
    {"requests": 5123, "errors": {}, "latency_us": {"p50": 702.1, ...}, ...}

It runs in two phases, warm-up then the measured window, and the threads keep their
connections from one to the next, so the window sees the steady state (TLS set up,
thread pools started, caches warm)::

    start threads ─▶ warm-up (--warmup s) ─▶ "ready" ─▶ wait for "go" ─▶
    measured window (--duration s or --max-requests, whichever first) ─▶ "done" ─▶
    wait for "finish" ─▶ close connections ─▶ the JSON result

With ``--control`` the three words travel as JSON lines on stdout and stdin: the
benchmark runner reads every server's CPU time between "ready"/"go" and again at
"done", so the window it measures contains exactly the requests this process
counts, and not the warm-up or the closing of connections.  Without ``--control``
it runs straight through and prints the result (for people trying it by hand).

Workloads (``--workload``):

* ``keepalive``: GET on a kept-alive connection, again and again.
* ``newconn``: a new connection (and TLS handshake) per request, ``Connection:
  close``; with ``--resume`` each offers the previous connection's session.
* ``upload``: POST a body of ``--upload-size`` bytes on a kept-alive connection.
* ``idle``: in the window, open ``--connections`` connections, make one request on
  each and hold them; "done" is said while they are held (the runner reads the
  servers' memory then).

Every loop is bounded twice, by time and by count; every socket has a timeout.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from course.bench.httpclient import Connection, Endpoint, RequestFailed, open_connection
from course.children import raise_file_limit

ERROR_PAUSE = 0.01  # after a failed request: do not spin on a server that is down
DEFAULT_MAX_REQUESTS = 1_000_000


# --------------------------------------------------------------------------- counting
class Budget:
    """The request count shared by all threads: the second bound of every loop."""

    def __init__(self, limit: int):
        self.left = limit
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


@dataclass
class Tally:
    """What one thread did in one phase."""

    latencies: list[float] = field(default_factory=list)  # seconds, one per successful request
    errors: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    connections: int = 0
    resumed: int = 0
    statuses: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Plan:
    """Everything the command line says about the load."""

    endpoint: Endpoint
    workload: str
    path: str
    upload_size: int
    resume: bool
    concurrency: int
    warmup: float
    duration: float
    max_requests: int
    connections: int


# --------------------------------------------------------------------------- one thread
class Worker:
    """One load thread's state: its connection and TLS session live across phases."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.conn: Connection | None = None
        self.session: ssl.SSLSession | None = None
        self.tls_seen: tuple[str | None, str | None] = (None, None)
        self.held: list[Connection] = []  # idle workload

    def _connect(self, tally: Tally) -> Connection:
        conn = open_connection(self.plan.endpoint, self.session if self.plan.resume else None)
        tally.connections += 1
        tls = conn.tls
        if tls is not None:
            tally.resumed += tls.session_reused
            cipher = tls.cipher()
            self.tls_seen = (tls.version(), cipher[0] if cipher else None)
        return conn

    def one_request(self, tally: Tally) -> None:
        """One request of the workload, timed; a failure is counted, not raised."""
        plan = self.plan
        started = time.perf_counter()
        conn = None
        try:
            if plan.workload == "newconn":
                conn = self._connect(tally)
                status, _ = conn.request("GET", plan.path, close=True)
                self.session = conn.session  # the next connection offers it (--resume)
            else:
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect(tally)
                conn = self.conn
                if plan.workload == "upload":
                    status, _ = conn.request("POST", plan.path, body_size=plan.upload_size)
                else:
                    status, _ = conn.request("GET", plan.path)
        except RequestFailed as failure:
            tally.errors[failure.kind] += 1
            if conn is not None:
                self._account(conn, tally)
            time.sleep(ERROR_PAUSE)
            return
        elapsed = time.perf_counter() - started
        tally.statuses[status] += 1
        if 200 <= status < 300:
            tally.latencies.append(elapsed)
        else:
            tally.errors[f"status-{status}"] += 1
        self._account(conn, tally)
        if plan.workload == "newconn":
            conn.close()

    @staticmethod
    def _account(conn: Connection, tally: Tally) -> None:
        tally.bytes_in += conn.bytes_in
        tally.bytes_out += conn.bytes_out
        conn.bytes_in = conn.bytes_out = 0

    def run(self, until: float, budget: Budget, tally: Tally) -> None:
        while time.monotonic() < until and budget.take():
            self.one_request(tally)

    def hold(self, count: int, until: float, tally: Tally) -> None:
        """Idle workload: open ``count`` connections, one request on each, keep them."""
        for _ in range(count):
            if time.monotonic() >= until:
                return
            try:
                conn = self._connect(tally)
                started = time.perf_counter()
                status, _ = conn.request("GET", self.plan.path)
                tally.latencies.append(time.perf_counter() - started)
                tally.statuses[status] += 1
                self._account(conn, tally)
                self.held.append(conn)
            except RequestFailed as failure:
                tally.errors[failure.kind] += 1

    def close(self) -> None:
        for conn in [self.conn, *self.held]:
            if conn is not None:
                conn.close()
        self.held.clear()


# --------------------------------------------------------------------------- phases
def run_phase(workers: list[Worker], target, *args) -> list[Tally]:
    """Run ``target(worker, *args, tally)`` in one thread per worker; join them all."""
    tallies = [Tally() for _ in workers]
    threads = [threading.Thread(target=target, args=(w, *args, t), name=f"load-{i}", daemon=True)
               for i, (w, t) in enumerate(zip(workers, tallies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


def warm_up(workers: list[Worker], plan: Plan) -> None:
    if plan.workload == "idle":
        # One connection and a few requests: imports, first handshake, caches, all
        # before the baseline the memory growth is measured from.
        probe = Worker(plan)
        probe.run(time.monotonic() + plan.warmup, Budget(20), Tally())
        probe.close()
        return
    run_phase(workers, Worker.run, time.monotonic() + plan.warmup, Budget(plan.max_requests))


def measure(workers: list[Worker], plan: Plan) -> tuple[list[Tally], float, float]:
    """The measured window: (tallies, wall seconds, this process's CPU seconds)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    until = time.monotonic() + plan.duration
    if plan.workload == "idle":
        share = [plan.connections // len(workers) + (i < plan.connections % len(workers))
                 for i in range(len(workers))]
        tallies = [Tally() for _ in workers]
        threads = [threading.Thread(target=w.hold, args=(n, until, t), daemon=True)
                   for w, n, t in zip(workers, share, tallies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        tallies = run_phase(workers, Worker.run, until, Budget(plan.max_requests))
    return tallies, time.perf_counter() - wall0, time.process_time() - cpu0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize(tallies: list[Tally], seconds: float, cpu: float, workers: list[Worker], plan: Plan) -> dict:
    latencies = sorted(x for t in tallies for x in t.latencies)
    errors: Counter = sum((t.errors for t in tallies), Counter())
    statuses: Counter = sum((t.statuses for t in tallies), Counter())
    requests = len(latencies)
    tls = next((w.tls_seen for w in workers if w.tls_seen[0]), (None, None))
    bytes_in = sum(t.bytes_in for t in tallies)
    bytes_out = sum(t.bytes_out for t in tallies)
    return {
        "workload": plan.workload,
        "path": plan.path,
        "concurrency": plan.concurrency,
        "requests": requests,
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(seconds, 6),
        "requests_per_second": round(requests / seconds, 3) if seconds else 0.0,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "bytes_per_second": round((bytes_in + bytes_out) / seconds, 1) if seconds else 0.0,
        "connections_opened": sum(t.connections for t in tallies),
        "handshakes_resumed": sum(t.resumed for t in tallies),
        "connections_held": sum(len(w.held) for w in workers),
        "latency_us": {
            "p50": round(percentile(latencies, 0.50) * 1e6, 1),
            "p90": round(percentile(latencies, 0.90) * 1e6, 1),
            "p99": round(percentile(latencies, 0.99) * 1e6, 1),
            "max": round(latencies[-1] * 1e6, 1) if latencies else 0.0,
            "mean": round(sum(latencies) / requests * 1e6, 1) if requests else 0.0,
        },
        "tls_version": tls[0],
        "tls_cipher": tls[1],
        "client_cpu_seconds": round(cpu, 6),
    }


# --------------------------------------------------------------------------- control
def say(event: str, **extra) -> None:
    sys.stdout.write(json.dumps({"event": event, **extra}) + "\n")
    sys.stdout.flush()


def wait_for(word: str, timeout: float) -> None:
    """Block until the runner writes ``word`` on stdin (or stdin closes, or time runs out)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(sys.stdin.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0].strip() if result else ""
    if line and line != word:
        raise SystemExit(f"loadgen: expected {word!r} on stdin, got {line!r}")


def run(plan: Plan, control: bool, control_timeout: float = 120.0) -> dict:
    workers = [Worker(plan) for _ in range(plan.concurrency)]
    try:
        warm_up(workers, plan)
        if control:
            say("ready")
            wait_for("go", control_timeout)
        tallies, seconds, cpu = measure(workers, plan)
        result = summarize(tallies, seconds, cpu, workers, plan)
        if control:
            say("done", requests=result["requests"])
            wait_for("finish", control_timeout)
    finally:
        for worker in workers:
            worker.close()
    return result


# --------------------------------------------------------------------------- command line
def client_tls_context(ca: str | None, version: str, *, verify: bool = True) -> ssl.SSLContext:
    """The client's context: one TLS version exactly (the workload's), ALPN http/1.1."""
    context = ssl.create_default_context(cafile=ca) if verify else ssl._create_unverified_context()
    tls_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    context.minimum_version = context.maximum_version = tls_version
    context.set_alpn_protocols(["http/1.1"])
    return context


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course.bench.loadgen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--url", required=True, help="scheme, Host/SNI and path, e.g. https://www.example.test/bytes/1k")
    add("--connect-to", metavar="HOST:PORT", help="TCP destination instead of the URL's host (like curl --connect-to)")
    add("--proxy", metavar="HOST:PORT", help="forward proxy: CONNECT through it to the destination")
    add("--ca", help="CA file that signs the server certificate")
    add("--insecure", action="store_true", help="do not verify the certificate")
    add("--tls-version", choices=["1.2", "1.3"], default="1.3")
    add("--workload", choices=["keepalive", "newconn", "upload", "idle"], default="keepalive")
    add("--resume", action="store_true", help="newconn: offer the previous session (resumed handshakes)")
    add("--upload-size", type=int, default=1 << 20, help="upload: request body bytes")
    add("--concurrency", "-c", type=int, default=4, help="threads, one connection each")
    add("--warmup", type=float, default=0.5, help="seconds of warm-up before the window")
    add("--duration", "-d", type=float, default=2.0, help="seconds in the measured window")
    add("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS, help="request bound of the window")
    add("--connections", type=int, default=1000, help="idle: connections to hold")
    add("--timeout", type=float, default=10.0, help="socket timeout")
    add("--control", action="store_true", help="speak the ready/go/done/finish protocol on stdin/stdout")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SystemExit(f"loadgen: --url wants http(s)://HOST[:PORT]/PATH, not {args.url!r}")
    address = parse_hostport(args.connect_to) if args.connect_to else (
        url.hostname, url.port or (443 if url.scheme == "https" else 80))
    tls = client_tls_context(args.ca, args.tls_version, verify=not args.insecure) if url.scheme == "https" else None
    endpoint = Endpoint(address=address, host=url.hostname, tls=tls,
                        proxy=parse_hostport(args.proxy) if args.proxy else None, timeout=args.timeout)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    return Plan(endpoint=endpoint, workload=args.workload, path=path, upload_size=args.upload_size,
                resume=args.resume, concurrency=max(1, args.concurrency), warmup=args.warmup,
                duration=args.duration, max_requests=args.max_requests, connections=args.connections)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    if plan.workload == "idle":
        raise_file_limit()  # a socket per held connection
    try:
        result = run(plan, args.control)
    except Exception as error:  # reported to the runner as a line, not a traceback
        if args.control:
            say("error", message=f"{type(error).__name__}: {error}")
            return 1
        raise
    if args.control:
        say("result", result=result)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
