"""``tlsproxy bench --quick``: real processes, a complete results file, CSV and charts.

One run of the real command (a subprocess: it starts its own origins, proxies, nginx
and load generators) is shared by the tests below.  They check that the results are
complete and well-formed, that the accounting adds up, that rounds were interleaved
and that every process was stopped; never how fast anything was (no timing
assertions: the figures depend on the machine).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from course.bench.charts import CHARTS
from course.bench.workloads import SETUPS
from tests.conftest import REPO
from tests.tools import require_tool

pytestmark = pytest.mark.slow

QUICK_WORKLOADS = {"keepalive-1k": [*SETUPS, "nginx"], "newconn": [*SETUPS, "nginx"], "bulk-1m": ["terminate", "nginx"]}
COMPONENTS = {"direct-http": {"origin"}, "direct-https": {"origin"}}  # the others: origin and proxy


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    require_tool("nginx")  # the production reference: required in CI
    base = tmp_path_factory.mktemp("bench")
    out = base / "results"
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(base / "mpl"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # A relative --out, as the default build/bench is: nginx must still find its certificates.
    done = subprocess.run([sys.executable, "-m", "course.cli", "bench", "--quick", "--vs-nginx", "--no-crypto-floor",
                           "--out", "results"], cwd=base, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    document = json.loads((out / "results.json").read_text())
    return out, document, done


def test_every_setup_and_nginx_is_in_the_summary_with_sane_counts(quick_run):
    _, document, _ = quick_run
    assert document["format"] == "tlsproxy-bench/1"
    assert document["failures"] == []
    rows = {(r["workload"], r["setup"]): r for r in document["summary"] if r["client"] == "loadgen"}
    for workload, setups in QUICK_WORKLOADS.items():
        for setup in setups:
            row = rows.get((workload, setup))
            assert row is not None, f"{workload} on {setup} missing"
            assert row["rounds"] == 2
            assert row["requests"] > 0 and row["errors"] == 0, row
            expected = COMPONENTS.get(setup, {"origin", "proxy"}) | {"client"}
            assert set(row["cpu_us_per_request"]) == expected, row["cpu_us_per_request"]
            assert all(v is not None and v >= 0 for v in row["cpu_us_per_request"].values())
            assert row["latency_us"]["p50"] <= row["latency_us"]["p99"]
    assert rows[("keepalive-1k", "nginx")]["implementation"] == "nginx"
    assert rows[("keepalive-1k", "terminate")]["implementation"] == "tlsproxy"
    # The client's TLS is what each setup promises: none in 1, TLS 1.3 elsewhere.
    measured = [m for m in document["measurements"] if m["workload"] == "keepalive-1k"]
    for m in measured:
        expected_version = None if m["setup"] == "direct-http" else "TLSv1.3"
        assert m["negotiated"]["version"] == expected_version, m["setup"]


def test_system_cost_excludes_the_client(quick_run):
    _, document, _ = quick_run
    for m in document["measurements"]:
        cpu = m["cpu_us_per_request"]
        system = cpu["origin"] + cpu.get("proxy", 0.0)
        assert m["system_cpu_us_per_request"] == pytest.approx(system, abs=0.01)
        seconds = m["cpu_seconds"]["origin"]["total"] + (m["cpu_seconds"].get("proxy") or {}).get("total", 0.0)
        assert seconds == pytest.approx(system * m["requests"] / 1e6, rel=0.01, abs=0.002)


def test_rounds_are_interleaved(quick_run):
    """Round 1 runs every cell before round 2 starts: A B C, A B C."""
    _, document, _ = quick_run
    rounds = [m["round"] for m in document["measurements"]]
    assert rounds == sorted(rounds) and set(rounds) == {1, 2}
    first = [(m["workload"], m["setup"]) for m in document["measurements"] if m["round"] == 1]
    second = [(m["workload"], m["setup"]) for m in document["measurements"] if m["round"] == 2]
    assert first == second and len(first) == sum(len(s) for s in QUICK_WORKLOADS.values())


def test_machine_and_parameters_are_recorded(quick_run):
    _, document, _ = quick_run
    machine = document["machine"]
    for key in ("cpu_model", "cores", "kernel", "python", "python_openssl", "nginx", "date"):
        assert machine.get(key), key
    assert document["parameters"]["quick"] is True
    assert document["parameters"]["rounds"] == 2


def test_csv_files_hold_the_summary_and_every_round(quick_run):
    out, document, _ = quick_run
    with open(out / "results.csv", newline="") as file:
        summary = list(csv.DictReader(file))
    with open(out / "rounds.csv", newline="") as file:
        rounds = list(csv.DictReader(file))
    assert len(summary) == len(document["summary"])
    assert len(rounds) == len(document["measurements"])
    assert {r["setup"] for r in summary} == {*SETUPS, "nginx"}
    for row in summary:
        float(row["cpu_origin_us"])
        assert row["machine_cpu_model"] == document["machine"]["cpu_model"]


def test_charts_are_written_as_png_and_svg(quick_run):
    out, document, _ = quick_run
    for chart in CHARTS:
        png, svg = out / f"{chart.__name__}.png", out / f"{chart.__name__}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert "<svg" in svg.read_text()[:2000], svg
    assert len(document["charts"]) == 2 * len(CHARTS)


def test_table_and_ratios_are_printed(quick_run):
    _, document, done = quick_run
    assert "keepalive-1k" in done.stdout and "terminate" in done.stdout
    assert "tlsproxy vs nginx" in done.stdout and "<= 2.5" in done.stdout
    targets = {(r["workload"], r["figure"]) for r in document["vs_nginx"] if r["target"] is not None}
    assert ("keepalive-1k", "cpu_ratio") in targets and ("newconn", "cpu_ratio") in targets
    keepalive = next(r for r in document["vs_nginx"] if (r["workload"], r["figure"]) == ("keepalive-1k", "cpu_ratio"))
    assert keepalive["value"] is not None and keepalive["met"] in (True, False)
    # One ratio per round, each from that round's own pair of measurements, around the median's.
    assert len(keepalive["rounds"]) == 2
    assert min(keepalive["rounds"]) <= keepalive["value"] * 1.01 and max(keepalive["rounds"]) >= keepalive["value"] * 0.99
    assert f"{min(keepalive['rounds']):.2f}-{max(keepalive['rounds']):.2f}x" in done.stdout
    # --vs-nginx also says why, layer by layer, when perf can sample (course.bench.layers).
    layers = document.get("layers")
    if layers is not None and "error" not in layers:
        assert set(layers["implementations"]) == {"tlsproxy", "nginx"}
        assert "kernel: sleeping, waking, switching threads" in done.stdout


def test_every_process_was_stopped(quick_run):
    _, document, _ = quick_run
    pids = [pid for setup in document["setups"].values() for group in setup["pids"].values() for pid in group]
    assert pids
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_reused(pid), f"process {pid} still running"


def _is_zombie_or_reused(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except OSError:
        return True
    return b"proxy." not in command and b"nginx" not in command
