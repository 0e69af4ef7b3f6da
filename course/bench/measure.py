"""One cell of the benchmark: one workload against one running setup, CPU read around it.

Theory of operation
-------------------
The runner asks for a cell; this module starts the load generator as a process and
reads every component's CPU time exactly at the edges of its measured window::

    runner                                   loadgen (its own process)
      start ──────────────────────────────▶  warm-up (connections, handshakes)
      ◀──────────────────────────── "ready"
      before = cpu.snapshot(origin, proxy, client)
      "go" ───────────────────────────────▶  measured window (bounded: time, count)
      ◀───────────────────────────── "done"
      after = cpu.snapshot(...)               (connections still open)
      "finish" ───────────────────────────▶  close connections
      ◀──────────────────────────── result    requests, errors, bytes, latencies

CPU per request of a component is ``(after - before) / requests``.  The client is a
component like the others, reported under "client" and never added to the system's
cost ("system" is origin + proxy).  For the idle workload the runner also reads the
resident memory of each component at the same two moments.

``wrk`` (when installed) is driven the same way for the setups it can reach (not
forward: no CONNECT; not passthrough: it sends an IP literal as SNI).  Its CPU
comes from ``wait4``'s resource usage, the servers' from ``/proc`` just before it
starts and just after it exits; it has no warm-up phase, so its few connection
set-ups fall inside the window.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from course.bench import cpu
from course.bench.setups import RunningSetup, child_environment, REPO
from course.bench.workloads import Workload

SLACK = 30.0  # seconds beyond warm-up + duration before a silent load generator is killed


class CellFailed(Exception):
    """The load generator could not run the cell (it said why, or went silent)."""


def loadgen_argv(running: RunningSetup, workload: Workload, ca: str, *, warmup: float, duration: float,
                 max_requests: int) -> list[str]:
    host = running.host_for(workload.cert)
    argv = [sys.executable, "-m", "course.bench.loadgen", "--control",
            "--url", f"{running.scheme}://{host}{workload.path}",
            "--connect-to", "%s:%d" % running.connect_to,
            "--ca", ca, "--tls-version", workload.tls_version,
            "--workload", workload.kind, "--concurrency", str(workload.concurrency),
            "--warmup", str(warmup), "--duration", str(duration), "--max-requests", str(max_requests),
            "--upload-size", str(workload.upload_size), "--connections", str(workload.connections)]
    if running.proxy:
        argv += ["--proxy", "%s:%d" % running.proxy]
    if workload.resume:
        argv.append("--resume")
    return argv


class _Lines:
    """The load generator's stdout as JSON events, with a deadline on each."""

    def __init__(self, process: subprocess.Popen):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(process.stdout,), daemon=True)
        self.thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def expect(self, event: str, timeout: float) -> dict:
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise CellFailed(f"load generator silent for {timeout:g}s (waiting for {event!r})") from None
        if line is None:
            raise CellFailed(f"load generator exited before {event!r}")
        message = json.loads(line)
        if message.get("event") == "error":
            raise CellFailed(message.get("message", "load generator error"))
        if message.get("event") != event:
            raise CellFailed(f"load generator said {message.get('event')!r}, expected {event!r}")
        return message


def run_cell(running: RunningSetup, workload: Workload, ca: str, *, warmup: float, duration: float,
             max_requests: int) -> dict:
    """Run one cell with our load generator; the measurement as a dict (see ``_measurement``)."""
    argv = loadgen_argv(running, workload, ca, warmup=warmup, duration=duration, max_requests=max_requests)
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=child_environment(), cwd=REPO)
    lines = _Lines(process)
    try:
        components = {**running.components, "client": [process.pid]}
        lines.expect("ready", warmup + SLACK)
        rss_before = cpu.rss_snapshot(running.components) if workload.kind == "idle" else None
        switches_before = cpu.switch_snapshot(running.components)
        before, t0 = cpu.snapshot(components), time.perf_counter()
        _say(process, "go")
        lines.expect("done", duration + SLACK)
        after, t1 = cpu.snapshot(components), time.perf_counter()
        switches_after = cpu.switch_snapshot(running.components)
        rss_after = cpu.rss_snapshot(running.components) if workload.kind == "idle" else None
        _say(process, "finish")
        result = lines.expect("result", SLACK)["result"]
        process.wait(SLACK)
    except (CellFailed, ProcessLookupError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        raise CellFailed(f"{workload.name} on {running.name}: {error}{_stderr_tail(process)}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    spent = cpu.difference(after, before)
    measurement = _measurement(running, workload, "loadgen", result, spent, t1 - t0)
    add_switches(measurement, cpu.switch_difference(switches_after, switches_before))
    if rss_before is not None:
        held = max(1, result["connections_held"])
        measurement["rss_bytes"] = {"before": rss_before, "after": rss_after}
        measurement["rss_growth_per_connection"] = {
            name: round((rss_after[name] - rss_before[name]) / held, 1) for name in rss_after}
    return measurement


def add_switches(measurement: dict, switches: dict[str, int]) -> None:
    """Context switches per request of each server component (see ``cpu.switch_snapshot``)."""
    requests = measurement["requests"]
    measurement["switches_per_request"] = {name: round(count / requests, 2) if requests else None
                                           for name, count in switches.items()}


def _say(process: subprocess.Popen, word: str) -> None:
    process.stdin.write(word + "\n")
    process.stdin.flush()


def _stderr_tail(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.kill()
        process.wait()
    try:
        text = process.stderr.read().strip()
    except (OSError, ValueError):
        return ""
    return f" (stderr: {' | '.join(text.splitlines()[-3:])})" if text else ""


def _measurement(running: RunningSetup, workload: Workload, client: str, result: dict,
                 spent: dict[str, cpu.CpuTimes], window: float) -> dict:
    requests = result["requests"]
    per_request = {name: round(times.total / requests * 1e6, 3) if requests else None
                   for name, times in spent.items()}
    system = [per_request[n] for n in ("origin", "proxy") if per_request.get(n) is not None]
    return {
        "setup": running.name,
        "implementation": running.implementation,
        "workload": workload.name,
        "client": client,
        "cert": workload.cert,
        "tls_version": None if running.scheme == "http" else workload.tls_version,
        "resume": workload.resume,
        **{k: result[k] for k in ("requests", "error_count", "errors", "seconds", "requests_per_second",
                                  "bytes_in", "bytes_out", "bytes_per_second", "latency_us",
                                  "connections_opened", "handshakes_resumed") if k in result},
        "negotiated": {"version": result.get("tls_version"), "cipher": result.get("tls_cipher")},
        "window_seconds": round(window, 6),
        "cpu_seconds": {name: {"user": round(t.user, 3), "system": round(t.system, 3), "total": round(t.total, 3)}
                        for name, t in spent.items()},
        "cpu_us_per_request": per_request,
        "system_cpu_us_per_request": round(sum(system), 3) if requests else None,
    }


# --------------------------------------------------------------------------- wrk
WRK_KINDS = ("keepalive", "newconn")  # wrk cannot CONNECT, upload a body per request or hold idle sockets
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
_SIZES = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def wrk_path() -> str | None:
    return shutil.which("wrk")


# wrk cannot CONNECT (forward), and it sends its URL's host as SNI: "127.0.0.1", an IP
# literal, which RFC 6066 §3 forbids and the passthrough proxy's ClientHello parser
# rightly refuses (a name that resolves to 127.0.0.1 might be dialled as ::1 instead).
WRK_CANNOT_DRIVE = ("forward", "passthrough")


def wrk_can_drive(setup: str, workload: Workload) -> bool:
    """wrk speaks TLS 1.3 with OpenSSL's defaults: no version, certificate or resumption choice."""
    return (setup not in WRK_CANNOT_DRIVE and workload.kind in WRK_KINDS and workload.tls_version == "1.3"
            and workload.cert == "ecdsa" and not workload.resume)


def parse_wrk(text: str) -> dict:
    """wrk --latency output -> requests, seconds, bytes, errors and latency percentiles (µs)."""
    def duration_us(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * _UNITS[unit]

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read", text)
    if not done:
        raise CellFailed(f"cannot read wrk's output: {text.strip()[-200:]!r}")
    requests = int(done.group(1))
    seconds = duration_us(done.group(2) + done.group(3)) / 1e6
    latency = {f"p{p}": round(duration_us(v), 1)
               for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.MULTILINE)}
    errors = {}
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        for kind, count in zip(("connect", "read", "write", "timeout"), socket_errors.groups()):
            if int(count):
                errors[kind] = int(count)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        errors["status-non-2xx"] = int(non_2xx.group(1))
    bytes_in = int(float(done.group(4)) * _SIZES[done.group(5)])
    return {"requests": requests, "seconds": seconds, "requests_per_second": round(requests / seconds, 3),
            "bytes_in": bytes_in, "bytes_out": 0, "bytes_per_second": round(bytes_in / seconds, 1),
            "errors": errors, "error_count": sum(errors.values()), "latency_us": latency}


@dataclass
class ToolRun:
    """A C load generator's run, with the CPU the servers and the tool spent meanwhile."""

    output: str
    returncode: int
    seconds: float
    spent: dict  # component -> cpu.CpuTimes, plus "client": the tool's own (wait4's rusage)
    switches: dict  # component -> context switches during the run


def run_tool(argv: list[str], running: RunningSetup, *, bound: float) -> ToolRun:
    """Run ``argv`` (wrk, h2load) to its end, killed after ``bound`` seconds at most, and account its cell."""
    with open(os.devnull, "rb") as devnull:
        switches_before = cpu.switch_snapshot(running.components)
        before, t0 = cpu.snapshot(running.components), time.perf_counter()
        process = subprocess.Popen(argv, stdin=devnull, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killer = threading.Timer(bound, process.kill)  # bounded even if the tool hangs
        killer.start()
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        killer.cancel()
        after, t1 = cpu.snapshot(running.components), time.perf_counter()
        switches_after = cpu.switch_snapshot(running.components)
    spent = cpu.difference(after, before)
    spent["client"] = cpu.CpuTimes(usage.ru_utime, usage.ru_stime)
    return ToolRun(output, os.waitstatus_to_exitcode(status), t1 - t0, spent,
                   cpu.switch_difference(switches_after, switches_before))


def run_wrk_cell(running: RunningSetup, workload: Workload, *, duration: float, threads: int = 2) -> dict:
    """One cell driven by wrk (C, epoll): the servers, not the client, become the bottleneck."""
    host = running.host_for(workload.cert)
    url = "%s://%s:%d%s" % (running.scheme, *running.connect_to, workload.path)
    connections = max(threads, workload.concurrency)
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "10s", "-H", f"Host: {host}"]
    if workload.kind == "newconn":
        argv += ["-H", "Connection: close"]  # wrk reconnects after every response: a handshake each
    argv.append(url)
    run = run_tool(argv, running, bound=duration + SLACK)
    if run.returncode != 0:
        raise CellFailed(f"wrk {workload.name} on {running.name} exited {run.returncode}: {run.output.strip()[-200:]}")
    result = parse_wrk(run.output)
    result["connections_opened"] = result["requests"] if workload.kind == "newconn" else connections
    measurement = _measurement(running, workload, "wrk", result, run.spent, run.seconds)
    # wrk keeps each connection's session and offers it when it reconnects (its ssl.c
    # session callback): its new-connection rows are resumed handshakes after each
    # connection's first, not full ones.  Our load generator's rows are the full ones.
    measurement["resume"] = workload.kind == "newconn"
    add_switches(measurement, run.switches)
    return measurement
