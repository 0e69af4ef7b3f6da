"""Where the proxy's CPU goes, by layer: ``perf`` samples of tlsproxy and of nginx, side by side.

Theory of operation
-------------------
cProfile (``course.bench.profiling``) sees Python functions only; it cannot say how
much of the process's time the *kernel* spent putting its threads to sleep and
waking them, nor how much went into OpenSSL or the interpreter loop itself.  Linux's
``perf`` can: ``perf record -e cpu-clock -g -p PID`` samples the process about a
thousand times a second wherever it runs, in user space or in the kernel on its
behalf, and ``perf report --sort dso,sym`` says in which library and function each
sample landed.  (``cpu-clock`` is a software timer, so it works in a virtual
machine without hardware counters.)

``layer_of`` files every sampled function into one of a few layers::

    code        the server's own code: libpython (the bytecode loop, objects,
                memory) for tlsproxy, the nginx executable for nginx
    openssl     libssl and libcrypto: records, AES-GCM, handshakes
    scheduler   the kernel switching and waking threads: finish_task_switch,
                try_to_wake_up, futex (Python's GIL and locks), schedule
    kernel      the rest of the kernel: system calls, TCP/IP on loopback
    libc, other

One caveat, written where the figures are printed: in a virtual machine a sample
taken while interrupts are off is counted when they come back on, so the
scheduler's lock releases (``_raw_spin_unlock_irqrestore``) stand for the waking
done under those locks, the peer's wake-up on a socket write included.

``layer_profile`` runs one workload against the terminate setup and nginx, records
each proxy process during the measured window, and turns the shares into CPU
microseconds per request (share x that cell's CPU per request).  The cell is a run of
its own, with perf sampling, so its totals sit a little above the benchmark table's.
The concurrency sweep (``course.bench.sweep``) asks for the event-loop variant too,
driven by wrk at 16 connections: the two engines' columns side by side show where the
thread-per-connection design spends what the event loop does not (the scheduler row).

The HTTP/2 row (``keepalive-1k-h2``) is driven by h2load, which ends when each connection
has made its ``max_requests_per_connection`` (nginx's ``keepalive_requests``: h2load does
not reconnect after the GOAWAY), about a second against nginx.  So the sampled window is
filled with h2load cells run back to back (``drive_h2load``, bounded in count), and the
CPU per request is that of all of them together; its three columns are the threaded
engine, the event loop and nginx, each offering h2 (``course.bench.variants``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from dataclasses import replace

from course.bench.h2load import requests_for, run_h2load_cell
from course.bench.measure import run_cell, run_wrk_cell
from course.bench.setups import SetupLauncher, instance_key
from course.bench.variants import EVENTLOOP, FLOOR, H2, H2_EVENTLOOP, NGINX_H2
from course.bench.workloads import BY_NAME, NGINX

# The column each setup's proxy process gets in the table.
COLUMNS = {"terminate": "tlsproxy", EVENTLOOP: "tlsproxy eventloop", FLOOR: "python floor", NGINX: "nginx",
           H2: "tlsproxy h2", H2_EVENTLOOP: "tlsproxy h2 eventloop", NGINX_H2: "nginx h2"}
H2_SETUPS = (H2, H2_EVENTLOOP, NGINX_H2)  # the HTTP/2 row's columns
MAX_H2LOAD_CELLS = 50  # drive_h2load's bound: cells of at least one request per stream slot each

LAYERS = ("code", "openssl", "scheduler", "kernel", "libc", "other")
LAYER_TITLES = {
    "code": "own code (the Python interpreter; nginx)",
    "openssl": "OpenSSL (libssl, libcrypto)",
    "scheduler": "kernel: sleeping, waking, switching threads",
    "kernel": "kernel: system calls, TCP/IP",
    "libc": "libc (malloc, memcpy, ...)",
    "other": "other",
}
# Kernel functions that are the scheduler's work: a thread going to sleep (schedule,
# futex waits: the GIL), being switched to (finish_task_switch) or woken (try_to_wake_up).
_SCHEDULER = re.compile(r"finish_task_switch|__schedule|^schedule|try_to_wake_up|_raw_spin_unlock_irq|"
                        r"futex|pick_next|dequeue_task|enqueue_task|update_curr|select_task_rq|ttwu|"
                        r"switch_mm|__switch_to|psi_|sched_")
# One line of `perf report --no-children --sort dso,sym --stdio -g none`:
#     18.37%  [kernel.kallsyms]        [k] finish_task_switch.isra.0
_REPORT_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[([k.])\]\s+(.+?)\s*$")


def layer_of(dso: str, symbol: str, kernel: bool) -> str:
    """Which layer a sample's function belongs to (see the module docstring)."""
    if kernel:
        return "scheduler" if _SCHEDULER.search(symbol) else "kernel"
    if "libpython" in dso or dso.startswith("python") or dso == "nginx":
        return "code"
    if "libssl" in dso or "libcrypto" in dso or "_ssl" in dso:  # _ssl: CPython's module around them
        return "openssl"
    if dso.startswith("libc.") or dso.startswith("libc-") or "ld-linux" in dso:
        return "libc"
    return "other"


def parse_report(text: str) -> dict[str, float]:
    """Shares (0..1) per layer from ``perf report``'s flat text."""
    shares = dict.fromkeys(LAYERS, 0.0)
    for line in text.splitlines():
        match = _REPORT_LINE.match(line)
        if match is None:
            continue
        percent, dso, mode, symbol = match.groups()
        shares[layer_of(dso, symbol, mode == "k")] += float(percent) / 100
    total = sum(shares.values())
    return {layer: round(share / total, 4) for layer, share in shares.items()} if total else shares


def perf_path() -> str | None:
    return shutil.which("perf")


RECORD_TRIES = 8  # perf record -p fails now and then, silently, under the h2 row (see record)


def record(pids: list[int], seconds: float, path: Path) -> subprocess.CompletedProcess:
    """Sample ``pids`` (all their threads) for ``seconds`` into ``path``.

    Measured here (perf 6.1.192): sampling the threaded engine while h2load drives it,
    ``perf record -p`` exited 255 without a word in about 3 profiles of 8.  The cause is
    not known: a process that created and ended threads in a tight loop, and one with 120
    busy threads, never made it fail (15 tries each).  Each try costs at most ``seconds``,
    so a failed one is tried again, up to ``RECORD_TRIES`` times; the last result is returned."""
    argv = [perf_path() or "perf", "record", "-e", "cpu-clock", "-F", "999", "-g",  # no -q: keep perf's reason
            "-p", ",".join(map(str, pids)), "-o", str(path), "--", "sleep", f"{seconds:g}"]
    for _ in range(RECORD_TRIES):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode == 0:
            break
    return done


def report(path: Path) -> str:
    argv = [perf_path() or "perf", "report", "-i", str(path), "--no-children", "--sort", "dso,sym",
            "--stdio", "-g", "none", "--percent-limit", "0"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def layer_profile(pki, workdir: Path, *, workload_name: str = "keepalive-1k", seconds: float = 4.0,
                  warmup: float = 0.5, setups: tuple[str, ...] = ("terminate", NGINX),
                  wrk_connections: int | None = None) -> dict:
    """tlsproxy (terminate) and nginx under one workload, each proxy process sampled by perf.

    The answer: for each implementation (``COLUMNS``), the cell's CPU per request of the
    proxy, the layer shares, and the shares in µs per request; or {"error": why} without
    perf.  ``wrk_connections`` drives the cells with wrk at that many connections instead
    of our load generator.
    """
    if perf_path() is None:
        return {"error": "perf is not installed (Debian: linux-perf)"}
    workload = BY_NAME[workload_name]
    perf_dir = workdir / "perf"
    perf_dir.mkdir(parents=True, exist_ok=True)
    launcher = SetupLauncher(pki, perf_dir)
    keys = [instance_key(setup, workload.cert) for setup in setups]
    client = f"wrk -c{wrk_connections}" if wrk_connections else "loadgen"
    if workload.http2_streams:
        client = f"h2load -c{workload.concurrency} -m{workload.http2_streams}, cells back to back"
    result: dict = {"workload": workload_name, "seconds": seconds, "client": client, "implementations": {}}
    print(f"bench: sampling {', '.join(COLUMNS[s] for s in setups)} with perf under {workload_name} ({client}), "
          f"{seconds:g}s each", file=sys.stderr)
    try:
        running = launcher.start(keys)
        for key in keys:
            target = running.get(key)
            if target is None:
                continue
            data = perf_dir / f"{key[0]}.data"
            recorded: dict = {}

            def sample(pids=target.components["proxy"], data=data) -> None:
                time.sleep(warmup + 0.3)  # past the load generator's warm-up; done before its window ends
                recorded["done"] = record(pids, seconds, data)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            if workload.http2_streams:
                measured = drive_h2load(target, workload, sampler)
            elif wrk_connections:
                measured = run_wrk_cell(target, replace(workload, concurrency=wrk_connections),
                                        duration=warmup + seconds + 1.0, threads=min(2, wrk_connections))
            else:
                measured = run_cell(target, workload, str(pki.ca), warmup=warmup, duration=seconds + 1.0,
                                    max_requests=10_000_000)
            sampler.join()
            done = recorded.get("done")
            if done is None or done.returncode != 0 or not data.exists():
                reason = ((done.stderr.strip().splitlines() or [f"exit {done.returncode}, no output"])[-1]
                          if done else "did not run")
                return {"error": f"perf record failed: {reason}"}
            shares = parse_report(report(data))
            per_request = measured["cpu_us_per_request"].get("proxy")
            result["implementations"][COLUMNS[key[0]]] = {
                "cpu_us_per_request": per_request,
                "switches_per_request": (measured.get("switches_per_request") or {}).get("proxy"),
                "shares": shares,
                "us_per_request": {layer: round(share * per_request, 1) if per_request else None
                                   for layer, share in shares.items()},
            }
    finally:
        launcher.stop()
    return result


def drive_h2load(target, workload, sampler: threading.Thread) -> dict:
    """h2load cells on ``target``, back to back until ``sampler`` (perf) is done: their CPU per request, together."""
    cells, rate = [], None
    while (sampler.is_alive() or not cells) and len(cells) < MAX_H2LOAD_CELLS:
        cell = run_h2load_cell(target, workload, requests=requests_for(workload, 2.0, rate, 10_000_000))
        rate = cell["requests_per_second"]
        cells.append(cell)
    return combine_cells(cells)


def combine_cells(cells: list[dict]) -> dict:
    """Several cells as one: CPU and context switches per request over all their requests."""
    requests = sum(c["requests"] for c in cells)
    per_request, switches = {}, {}
    for name in cells[0]["cpu_us_per_request"]:
        spent = [c["cpu_us_per_request"].get(name) for c in cells]
        if requests and None not in spent:
            per_request[name] = round(sum(us * c["requests"] for us, c in zip(spent, cells)) / requests, 3)
    for name in cells[0].get("switches_per_request") or {}:
        counts = [(c.get("switches_per_request") or {}).get(name) for c in cells]
        if requests and None not in counts:
            switches[name] = round(sum(n * c["requests"] for n, c in zip(counts, cells)) / requests, 2)
    return {"requests": requests, "cells": len(cells), "cpu_us_per_request": per_request,
            "switches_per_request": switches}


def _switches(entry: dict) -> str:
    value = entry.get("switches_per_request")
    return "-" if value is None else f"{value:.2f}"


def format_layers(profile: dict) -> str:
    if profile.get("error"):
        return f"\nwhere the proxy's CPU goes: not measured ({profile['error']})"
    names = list(profile["implementations"])
    client = profile.get("client", "loadgen")
    lines = [f"\nwhere the proxy process's CPU goes, by layer ({profile['workload']}, {client}; perf cpu-clock "
             "samples, µs per request and share)",
             "  " + f"{'layer':<46}" + "".join(f"{name:>23}" for name in names)]
    for layer in LAYERS:
        cells = []
        for name in names:
            entry = profile["implementations"][name]
            us, share = entry["us_per_request"].get(layer), entry["shares"].get(layer, 0.0)
            cells.append(f"{(us or 0):>10.1f} µs {share * 100:>4.0f}%")
        lines.append("  " + f"{LAYER_TITLES[layer]:<46}" + "".join(f"{c:>23}" for c in cells))
    totals = "".join(f"{(profile['implementations'][n]['cpu_us_per_request'] or 0):>16.1f} µs     " for n in names)
    lines.append("  " + f"{'all (this sampled run: perf adds its cost)':<46}" + totals)
    switches = "".join(f"{_switches(profile['implementations'][n]):>23}" for n in names)
    lines.append("  " + f"{'context switches per request (voluntary+not)':<46}" + switches)
    lines.append("  (in a VM, waking done under a lock with interrupts off is counted at the lock's release)")
    return "\n".join(lines)
