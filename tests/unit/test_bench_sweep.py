"""course.bench.sweep's arithmetic: medians, ratios within a round, growth, the report.

The measurements here are dicts of the shape ``run_wrk_cell`` returns, written out
so that each figure can be checked by hand; tests/integration/test_bench_sweep.py
runs the sweep for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course.bench import sweep
from course.bench.workloads import BY_NAME
from proxy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def cell(setup, connections, round_number, proxy_us, p99_us=1000.0, workload="keepalive-1k"):
    return {"workload": workload, "setup": setup, "connections": connections, "round": round_number,
            "requests": 1000, "error_count": 0, "requests_per_second": 500.0,
            "cpu_us_per_request": {"proxy": proxy_us, "origin": 50.0, "client": 20.0},
            "latency_us": {"p50": p99_us / 2, "p99": p99_us}, "switches_per_request": {"proxy": 2.0}}


MEASUREMENTS = [
    cell("terminate", 4, 1, 400.0), cell("terminate-eventloop", 4, 1, 300.0), cell("nginx", 4, 1, 100.0),
    cell("terminate", 4, 2, 600.0), cell("terminate-eventloop", 4, 2, 250.0), cell("nginx", 4, 2, 50.0),
    cell("terminate", 64, 1, 900.0), cell("terminate-eventloop", 64, 1, 150.0), cell("nginx", 64, 1, 60.0),
]


def test_ratios_are_taken_inside_each_round_then_the_median():
    rows = {(r["setup"], r["connections"]): r for r in sweep.summarize(MEASUREMENTS)}
    threads = rows[("terminate", 4)]
    assert threads["ratio_to_nginx_rounds"] == [4.0, 12.0]   # 400/100 and 600/50, not 500/75
    assert threads["ratio_to_nginx"] == 8.0
    assert threads["proxy_cpu_us_per_request"] == 500.0 and threads["proxy_cpu_us_rounds"] == [400.0, 600.0]
    assert rows[("nginx", 4)]["ratio_to_nginx"] is None
    assert [r["setup"] for r in sweep.summarize(MEASUREMENTS)][:3] == list(sweep.SETUPS)


def test_growth_says_whether_an_engine_batches():
    summary = sweep.summarize(MEASUREMENTS)
    assert sweep.growth(summary, "keepalive-1k", "terminate") == 1.8           # 900 / 500: rises
    assert sweep.growth(summary, "keepalive-1k", "terminate-eventloop") == 0.55  # 150 / 275: falls
    assert sweep.growth(summary, "newconn", "terminate") is None


def test_report_names_each_engine_the_rounds_and_the_handshake():
    document = {"parameters": {"setups": list(sweep.SETUPS), "workloads": ["keepalive-1k"], "connections": [4, 64]},
                "handshakes": {"keepalive-1k": sweep.HANDSHAKE["keepalive"]},
                "summary": sweep.summarize(MEASUREMENTS), "failures": []}
    text = sweep.format_sweep(document)
    assert "threads" in text and "event loop" in text and "nginx" in text
    assert "[4.0 12.0x]" in text
    assert "event loop: cost per request at 64 connections / at 4 = 0.55 (falls: it batches)" in text


def test_targets_are_judged_in_their_own_cell_with_the_floor_beside():
    measurements = MEASUREMENTS + [
        cell("terminate-eventloop", 16, 1, 180.0), cell("terminate-floor", 16, 1, 66.0), cell("nginx", 16, 1, 60.0),
        cell("terminate-eventloop", 16, 2, 110.0), cell("terminate-floor", 16, 2, 60.0), cell("nginx", 16, 2, 50.0),
    ]
    judged = {t["what"]: t for t in sweep.targets(sweep.summarize(measurements))}
    keepalive = judged["event loop, keep-alive, 16 connections"]
    assert keepalive["rounds"] == [3.0, 2.2] and keepalive["value"] == 2.6 and keepalive["met"] is False
    assert keepalive["floor_ratio"] == 1.15                        # 66/60 and 60/50: median of 1.1 and 1.2
    assert judged["event loop, keep-alive, cost at 64 / at 4"]["value"] == 0.55   # 150 / 275
    assert judged["event loop, keep-alive, cost at 64 / at 4"]["met"] is True
    threads = judged["threads, keep-alive, 4 connections"]
    assert threads["value"] == 8.0 and threads["met"] is False and threads["floor_ratio"] is None
    assert judged["event loop, new connection, 16 connections"]["value"] is None   # not measured: not judged
    document = {"parameters": {"setups": list(sweep.COLUMNS), "workloads": ["keepalive-1k"], "connections": [4, 16, 64]},
                "handshakes": {"keepalive-1k": sweep.HANDSHAKE["keepalive"]},
                "summary": sweep.summarize(measurements), "failures": []}
    text = sweep.format_sweep(document)
    assert "event loop, keep-alive, 16 connections" in text and "2.60x  <= 2    NO   rounds 2.20-3.00x" in text
    assert "python floor 1.15x" in text and "new connection, 16" not in text


def test_the_sweep_drives_only_what_wrk_can():
    assert [w.name for w in sweep.workloads_for([])] == list(sweep.WORKLOADS)
    assert sweep.workloads_for(["bulk-1m"]) == [BY_NAME["bulk-1m"]]
    for name in ("newconn-resumed", "newconn-rsa", "upload-1m", "idle-1000"):
        if name in BY_NAME:
            with pytest.raises(ConfigError, match="cannot drive"):
                sweep.workloads_for([name])
    cells = sweep.plan(sweep.workloads_for([]), (1, 4), list(sweep.SETUPS))
    assert len(cells) == 2 * 2 * 3 and cells[0][2] == "terminate" and cells[1][2] == "terminate-eventloop"


def test_the_readme_quotes_the_committed_sweeps_own_verdict():
    """The README's targets block is what the committed sweep prints, not figures typed in."""
    document = json.loads((ROOT / "diagrams/bench/sweep/sweep.json").read_text())
    text = sweep.format_sweep(document)
    verdict = text[text.index("targets (issue 13)"):].split("\n  FAILED")[0]
    assert verdict.count("\n") == len(sweep.TARGETS)
    assert verdict in (ROOT / "README.md").read_text()
