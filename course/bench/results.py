"""Results: the machine, the parameters, every measurement, the summary and the ratios.

Theory of operation
-------------------
A benchmark figure means nothing without the machine and the versions it came
from, so a results file carries them beside the numbers::

    results.json   {"machine": {...}, "parameters": {...}, "crypto_floor": {...},
                    "measurements": [one per cell and round],
                    "summary": [one per workload x setup x client: medians over rounds],
                    "vs_nginx": [ratio rows with their targets]}
    results.csv    the summary, one row per workload x setup x client, machine columns included
    rounds.csv     every measurement, for anyone who wants the spread

A summary row takes, for each figure, the *median* over rounds: rounds are
interleaved (setup A, B, C, then A, B, C again), so a disturbance during one round
moves one sample of each setup, and the median drops it.

CPU per request is in microseconds, per component: "origin", "proxy" (our proxy,
or nginx's master and worker), and "client" (the load generator, never part of
"system" = origin + proxy).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path

from course.bench.variants import H2, H2_OURS, NGINX_H2, engine

# The speed the proxy must reach, from the issue: (workload, figure, comparison, target, what it means).
TARGETS = (
    ("keepalive-1k", "cpu_ratio", "<=", 2.5, "keep-alive 1 KB, TLS 1.3: proxy CPU/request over nginx's"),
    ("newconn", "cpu_ratio", "<=", 1.4, "new TLS 1.3 connection, ECDSA P-256: proxy CPU/handshake over nginx's"),
    ("bulk-1m", "per_core_ratio", ">=", 1.0, "bulk 1 MB: proxy bytes per CPU-second over nginx's"),
    ("bulk-1m", "floor_fraction", ">=", 0.30, "bulk 1 MB: proxy bytes per CPU-second over openssl AES-256-GCM/core"),
    ("idle-1000", "rss_per_connection", "<=", 100_000, "1,000 idle TLS connections: proxy RSS growth, bytes/conn"),
)
INFO_WORKLOADS = ("newconn-resumed", "newconn-rsa", "newconn-tls12", "newconn-tls12-resumed", "newconn-tls12-rsa",
                  "keepalive-1k-tls12", "bulk-20m", "upload-1m")
H2_WORKLOADS = ("keepalive-1k-h2",)  # no target either: terminate-h2 and terminate-h2-eventloop, each over
#                                       nginx-h2 (course.bench.h2load)


# --------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(argv: list[str], pattern: str) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def machine_info() -> dict:
    from course.nginx import nginx_path

    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory = int(meminfo.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    nginx = nginx_path()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_openssl": ssl.OPENSSL_VERSION,
        "openssl_cli": _tool_version(["openssl", "version"], r"OpenSSL (\S+)"),
        "nginx": _tool_version([nginx, "-v"], r"nginx/(\S+)") if nginx else None,
        "wrk": _tool_version(["wrk", "-v"], r"wrk (\S+)"),
        "h2load": _tool_version(["h2load", "--version"], r"nghttp2/(\S+)"),
        "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- the summary
def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def per_core_bytes(measurement: dict, component: str = "proxy") -> float | None:
    """Bytes moved per CPU-second of ``component``: the throughput one core of it sustains."""
    seconds = (measurement.get("cpu_seconds", {}).get(component) or {}).get("total")
    moved = measurement.get("bytes_in", 0) + measurement.get("bytes_out", 0)
    return round(moved / seconds, 1) if seconds else None


def summarize(measurements: list[dict]) -> list[dict]:
    """One row per (workload, setup, client): medians over rounds, totals of counts."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in measurements:
        groups[(m["workload"], m["setup"], m["client"])].append(m)
    rows = []
    for (workload, setup, client), ms in groups.items():
        components = sorted({c for m in ms for c in m["cpu_us_per_request"]})
        row = {
            "workload": workload, "setup": setup, "client": client,
            "implementation": ms[0]["implementation"], "rounds": len(ms),
            "tls_version": ms[0]["tls_version"], "cert": ms[0]["cert"], "resume": ms[0]["resume"],
            "requests": sum(m["requests"] for m in ms),
            "errors": sum(m["error_count"] for m in ms),
            "requests_per_second": _median(m["requests_per_second"] for m in ms),
            "bytes_per_second": _median(m["bytes_per_second"] for m in ms),
            "cpu_us_per_request": {c: _median(m["cpu_us_per_request"].get(c) for m in ms) for c in components},
            "system_cpu_us_per_request": _median(m["system_cpu_us_per_request"] for m in ms),
            "system_cpu_us_range": [min((m["system_cpu_us_per_request"] or 0) for m in ms),
                                    max((m["system_cpu_us_per_request"] or 0) for m in ms)],
            "latency_us": {p: _median(m["latency_us"].get(p) for m in ms) for p in ("p50", "p90", "p99")},
            "proxy_bytes_per_cpu_second": _median(per_core_bytes(m) for m in ms),
            "switches_per_request": {c: _median((m.get("switches_per_request") or {}).get(c) for m in ms)
                                     for c in ("origin", "proxy")},
            "handshakes_resumed": sum(m.get("handshakes_resumed", 0) for m in ms),
            "connections_opened": sum(m.get("connections_opened", 0) for m in ms),
        }
        if any("rss_growth_per_connection" in m for m in ms):
            row["rss_growth_per_connection"] = {
                c: _median(m["rss_growth_per_connection"].get(c) for m in ms if "rss_growth_per_connection" in m)
                for c in ("origin", "proxy")}
        rows.append(row)
    return rows


def find(summary: list[dict], workload: str, setup: str, client: str = "loadgen") -> dict | None:
    for row in summary:
        if (row["workload"], row["setup"], row["client"]) == (workload, setup, client):
            return row
    return None


# --------------------------------------------------------------------------- proxy versus nginx
def _meets(value: float | None, comparison: str, target: float) -> bool | None:
    if value is None:
        return None
    return value <= target if comparison == "<=" else value >= target


def _cpu_ratio(summary, workload, client, ours: str = "terminate",
               reference: str = "nginx") -> tuple[float | None, float | None, float | None]:
    ours, nginx = find(summary, workload, ours, client), find(summary, workload, reference, client)
    a = ours and ours["cpu_us_per_request"].get("proxy")
    b = nginx and nginx["cpu_us_per_request"].get("proxy")
    return a, b, (round(a / b, 2) if a and b else None)


def round_ratios(measurements: list[dict], workload: str, client: str = "loadgen", *,
                 figure: str = "cpu_ratio", floor: float | None = None, ours: str = "terminate",
                 reference: str = "nginx") -> list[float]:
    """A target's figure in each round on its own (proxy and nginx ran side by side in it).

    The summary's figure is of medians; these show how far one round strays from it
    on this machine (nginx's own CPU per request moves by a third between runs here).
    ``cpu_ratio`` is CPU per request over nginx's, ``per_core_ratio`` bytes per
    CPU-second over nginx's, ``floor_fraction`` bytes per CPU-second over ``floor``.
    ``ours`` and ``reference`` name the two setups (the HTTP/2 row: terminate-h2 or
    terminate-h2-eventloop, and nginx-h2)."""
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for m in measurements:
        if m["workload"] == workload and m["client"] == client and m["setup"] in (ours, reference):
            value = m["cpu_us_per_request"].get("proxy") if figure == "cpu_ratio" else per_core_bytes(m)
            if value:
                by_round[m.get("round", 0)][m["setup"]] = value
    if figure == "floor_fraction":
        return [round(r[ours] / floor, 3) for _, r in sorted(by_round.items()) if ours in r and floor]
    return [round(r[ours] / r[reference], 2) for _, r in sorted(by_round.items())
            if ours in r and reference in r]


def nginx_ratios(summary: list[dict], floor: dict | None, measurements: list[dict] | None = None) -> list[dict]:
    """The issue's targets, each with our figure, nginx's, the ratio and whether it is met.

    With ``measurements``, every CPU ratio also carries ``rounds``: its value in each round."""
    rows = []
    aes = ((floor or {}).get("per_second") or {}).get("aes_256_gcm_bytes_per_s")
    for workload, figure, comparison, target, meaning in TARGETS:
        ours_row, nginx_row = find(summary, workload, "terminate"), find(summary, workload, "nginx")
        proxy_value = nginx_value = value = None
        unit = ""
        if figure == "cpu_ratio":
            proxy_value, nginx_value, value = _cpu_ratio(summary, workload, "loadgen")
            unit = "µs/req"
        elif figure == "per_core_ratio" and ours_row and nginx_row:
            proxy_value, nginx_value = ours_row["proxy_bytes_per_cpu_second"], nginx_row["proxy_bytes_per_cpu_second"]
            value = round(proxy_value / nginx_value, 2) if proxy_value and nginx_value else None
            unit = "B/CPU-s"
        elif figure == "floor_fraction" and ours_row:
            proxy_value, nginx_value = ours_row["proxy_bytes_per_cpu_second"], aes
            value = round(proxy_value / aes, 3) if proxy_value and aes else None
            unit = "B/CPU-s (vs openssl)"
        elif figure == "rss_per_connection" and ours_row:
            proxy_value = (ours_row.get("rss_growth_per_connection") or {}).get("proxy")
            nginx_value = ((nginx_row or {}).get("rss_growth_per_connection") or {}).get("proxy")
            value = proxy_value
            unit = "bytes/conn"
        rows.append({"workload": workload, "figure": figure, "meaning": meaning, "proxy": proxy_value,
                     "reference": nginx_value, "unit": unit, "value": value, "comparison": comparison,
                     "target": target, "met": _meets(value, comparison, target)})
        if measurements and figure != "rss_per_connection":
            rows[-1]["rounds"] = round_ratios(measurements, workload, figure=figure, floor=aes)
        if figure == "cpu_ratio" and ours_row and nginx_row:
            rows[-1]["switches"] = {"proxy": (ours_row.get("switches_per_request") or {}).get("proxy"),
                                    "nginx": (nginx_row.get("switches_per_request") or {}).get("proxy")}
    ours_bulk, nginx_bulk = find(summary, "bulk-1m", "terminate"), find(summary, "bulk-1m", "nginx")
    if ours_bulk and nginx_bulk and ours_bulk["bytes_per_second"] and nginx_bulk["bytes_per_second"]:
        # What the client saw, wall clock: bounded by whichever process saturates first on a
        # small machine (often the client), so the target above is judged per CPU-second.
        rows.append({"workload": "bulk-1m", "figure": "wall_throughput", "meaning": "client-observed MB/s over nginx's",
                     "proxy": ours_bulk["bytes_per_second"], "reference": nginx_bulk["bytes_per_second"],
                     "unit": "B/s", "value": round(ours_bulk["bytes_per_second"] / nginx_bulk["bytes_per_second"], 2),
                     "comparison": None, "target": None, "met": None})
    for workload in INFO_WORKLOADS:  # no target: the same ratio, for the record
        proxy_value, nginx_value, value = _cpu_ratio(summary, workload, "loadgen")
        if value is not None:
            rows.append({"workload": workload, "figure": "cpu_ratio", "meaning": "proxy CPU/request over nginx's",
                         "proxy": proxy_value, "reference": nginx_value, "unit": "µs/req", "value": value,
                         "comparison": None, "target": None, "met": None,
                         "rounds": round_ratios(measurements or [], workload)})
    for workload in H2_WORKLOADS:  # HTTP/2 on the client leg: both sides offer h2, h2load drives them
        for ours in H2_OURS:  # one row per engine, each over the same nginx cells
            proxy_value, nginx_value, value = _cpu_ratio(summary, workload, "h2load", ours, NGINX_H2)
            if value is None:
                continue
            label = f"{workload} (h2load)" if ours == H2 else f"{workload} (h2load, {engine(ours)})"
            rows.append({"workload": label, "setup": ours, "figure": "cpu_ratio",
                         "meaning": f"{ours} CPU/request over {NGINX_H2}'s, HTTP/2, h2load as the client",
                         "proxy": proxy_value, "reference": nginx_value, "unit": "µs/req", "value": value,
                         "comparison": None, "target": None, "met": None,
                         "rounds": round_ratios(measurements or [], workload, "h2load", ours=ours,
                                                reference=NGINX_H2)})
    for workload in ("keepalive-1k", "newconn"):  # the same two targets with wrk as the client
        proxy_value, nginx_value, value = _cpu_ratio(summary, workload, "wrk")
        if value is not None:
            resumed = " (wrk resumes its session on each reconnect)" if workload == "newconn" else ""
            rows.append({"workload": f"{workload} (wrk)", "figure": "cpu_ratio",
                         "meaning": f"proxy CPU/request over nginx's, wrk as the client{resumed}", "proxy": proxy_value,
                         "reference": nginx_value, "unit": "µs/req", "value": value, "comparison": None,
                         "target": None, "met": None})
    return rows


# --------------------------------------------------------------------------- files
CSV_FIELDS = ("workload", "setup", "client", "implementation", "rounds", "tls_version", "cert", "resume",
              "requests", "errors", "requests_per_second", "bytes_per_second",
              "cpu_origin_us", "cpu_proxy_us", "cpu_system_us", "cpu_client_us",
              "latency_p50_us", "latency_p90_us", "latency_p99_us", "proxy_bytes_per_cpu_second",
              "rss_proxy_bytes_per_connection")
MACHINE_FIELDS = ("cpu_model", "cores", "kernel", "python", "python_openssl", "nginx")


def _csv_row(row: dict, machine: dict, round_number=None) -> dict:
    cpu = row["cpu_us_per_request"]
    flat = {
        **{k: row.get(k) for k in CSV_FIELDS},
        "errors": row.get("errors") if isinstance(row.get("errors"), int) else row.get("error_count"),
        "cpu_origin_us": cpu.get("origin"), "cpu_proxy_us": cpu.get("proxy"), "cpu_client_us": cpu.get("client"),
        "cpu_system_us": row.get("system_cpu_us_per_request"),
        "latency_p50_us": row["latency_us"].get("p50"), "latency_p90_us": row["latency_us"].get("p90"),
        "latency_p99_us": row["latency_us"].get("p99"),
        "proxy_bytes_per_cpu_second": row.get("proxy_bytes_per_cpu_second", per_core_bytes(row)),
        "rss_proxy_bytes_per_connection": (row.get("rss_growth_per_connection") or {}).get("proxy"),
    }
    if round_number is not None:
        flat["round"] = round_number
    flat.update({f"machine_{k}": machine.get(k) for k in MACHINE_FIELDS})
    return flat


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(rows)


def write(out: Path, document: dict) -> dict[str, Path]:
    """results.json, results.csv (summary) and rounds.csv (every measurement) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "rounds_csv": out / "rounds.csv"}
    paths["json"].write_text(json.dumps(document, indent=1) + "\n")
    machine = document["machine"]
    _write_csv(paths["csv"], [_csv_row(row, machine) for row in document["summary"]])
    _write_csv(paths["rounds_csv"], [_csv_row(m, machine, m.get("round")) for m in document["measurements"]])
    return paths
