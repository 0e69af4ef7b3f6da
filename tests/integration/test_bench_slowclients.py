"""The slow-clients measurement for real, small: ``python -m course.bench.slowclients``.

It starts an origin, the proxy (each engine in turn) and the swarm as processes on
loopback, exactly as the full run does, with 50 slow clients, a 1.5 s head timeout
(so every slow client is cut and reconnects within the 3 s loaded phase) and a 1 s
baseline.  Checked: the JSON has every number the report prints; the swarm was cut
by the proxy's head timeout (408) and reconnected; the threaded engine held a thread
per slow client while the event loop's thread count stayed flat; and on the event
loop the normal client's requests all succeeded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SLOW = 50


def test_help_explains_the_measurement():
    done = subprocess.run([sys.executable, "-m", "course.bench.slowclients", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for text in ("Theory of operation", "--slow", "--engine", "max_connections", "header_read"):
        assert text in done.stdout


def test_small_run_on_both_engines(tmp_path):
    out = tmp_path / "slow.json"
    done = subprocess.run(
        [sys.executable, "-m", "course.bench.slowclients", "--engine", "both", "--slow", str(SLOW),
         "--seconds", "3", "--baseline", "1", "--header-timeout", "1.5", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "p99 loaded / idle" in done.stdout and "slow clients connected at end" in done.stdout
    run = json.loads(out.read_text())
    assert run["settings"]["max_connections"] == SLOW + 64 and run["settings"]["header_timeout"] == 1.5
    assert set(run["engines"]) == {"threaded", "eventloop"}
    for engine, result in run["engines"].items():
        for phase in ("baseline", "loaded"):
            assert {"p50_ms", "p99_ms", "sent", "ok", "failed", "failures", "timeline"} <= set(result[phase])
            assert result[phase]["sent"] > 0
        assert result["p99_ratio"] is not None
        slow = result["slow"]
        assert slow["clients"] == SLOW and 0 < slow["connected_at_end"] <= SLOW, (engine, slow)
        assert slow["reconnects"] > 0 and slow["counts_total"].get("cut: HTTP 408", 0) > 0, (engine, slow)
        for moment in ("idle", "end"):
            assert result["proxy"][moment]["rss_kb"] > 0 and result["proxy"][moment]["threads"] >= 1
    threaded, eventloop = run["engines"]["threaded"], run["engines"]["eventloop"]
    assert threaded["proxy"]["peak_threads"] >= SLOW  # a thread per connected slow client
    assert eventloop["proxy"]["peak_threads"] == eventloop["proxy"]["idle"]["threads"]  # one loop thread, flat
    for phase in ("baseline", "loaded"):
        assert eventloop[phase]["failed"] == 0 and eventloop[phase]["ok"] == eventloop[phase]["sent"], eventloop[phase]


def test_a_per_client_limit_caps_the_swarm_per_address(tmp_path):
    """--per-client 10 and a swarm from two addresses: at most 10 slow clients each get in."""
    out = tmp_path / "slow.json"
    done = subprocess.run(
        [sys.executable, "-m", "course.bench.slowclients", "--engine", "threaded", "--slow", "40",
         "--per-client", "10", "--swarm-addresses", "2", "--ramp-timeout", "3", "--seconds", "2",
         "--baseline", "1", "--header-timeout", "8", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "max_connections_per_client 10" in done.stdout and "2 addresses, 127.0.0.2 to 127.0.0.3" in done.stdout
    result = json.loads(out.read_text())["engines"]["threaded"]
    slow = result["slow"]
    assert 10 < slow["connected_at_end"] <= 20, slow  # each address its own ten
    assert sum(v for k, v in slow["counts_total"].items() if k.startswith("open failed")) > 0, slow
    assert result["proxy"]["peak_threads"] < result["proxy"]["idle"]["threads"] + 40  # not a thread per slow client
    assert result["loaded"]["failed"] == 0, result["loaded"]  # the normal client, 127.0.0.1, is not limited
