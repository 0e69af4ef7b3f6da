"""The HTTP/2 bench row for real: h2load against terminate-h2 (threads), terminate-h2-eventloop (the
event loop) and nginx-h2, interleaved, tiny counts.

One ``tlsproxy bench`` run (a subprocess, as tests/integration/test_bench.py does)
with only the ``keepalive-1k-h2`` row: two rounds of short cells.  The tests check
the run's shape and accounting (the three setups, every round, HTTP/2 spoken, CPU counted,
a ratio to nginx per engine, per round and beside the median), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from course.bench.variants import H2, H2_EVENTLOOP, NGINX_H2
from tests.conftest import REPO
from tests.tools import require_tool

pytestmark = pytest.mark.slow
ROW = "keepalive-1k-h2"
ROUNDS = 2


@pytest.fixture(scope="module")
def h2_run(tmp_path_factory):
    require_tool("h2load")  # apt-get install nghttp2-client
    require_tool("nginx")
    base = tmp_path_factory.mktemp("bench-h2")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "course.cli", "bench", "--quick", "--h2", "--workloads", ROW,
                           "--setups", "terminate,nginx", "--rounds", str(ROUNDS), "--duration", "0.3",
                           "--vs-nginx", "--no-layers", "--no-crypto-floor", "--no-charts", "--out", "results"],
                          cwd=base, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((base / "results" / "results.json").read_text()), done.stdout


def test_every_setup_ran_every_round_over_http2(h2_run):
    document, _ = h2_run
    assert document["failures"] == []
    cells = [m for m in document["measurements"] if m["workload"] == ROW]
    assert sorted((m["setup"], m["round"]) for m in cells) == sorted(
        (setup, r) for setup in (H2, H2_EVENTLOOP, NGINX_H2) for r in range(1, ROUNDS + 1))
    # Interleaved: each round holds every setup before the next round starts.
    assert [m["round"] for m in cells] == sorted(m["round"] for m in cells)
    for m in cells:
        assert m["client"] == "h2load" and m["http_version"] == "2"
        assert m["requests"] > 0 and m["error_count"] == 0, m["errors"]
        assert m["implementation"] == ("nginx" if m["setup"] == NGINX_H2 else "tlsproxy")
        assert m["cpu_us_per_request"]["proxy"] > 0 and m["cpu_us_per_request"]["origin"] > 0
        assert m["cpu_seconds"]["client"]["total"] > 0, "h2load's own CPU, from wait4"


@pytest.mark.parametrize("ours, label", [(H2, f"{ROW} (h2load)"), (H2_EVENTLOOP, f"{ROW} (h2load, eventloop)")])
def test_the_ratio_to_nginx_per_round_and_its_median(h2_run, ours, label):
    document, stdout = h2_run
    [row] = [r for r in document["vs_nginx"] if r["workload"] == label]
    assert row["setup"] == ours
    assert row["value"] > 0 and len(row["rounds"]) == ROUNDS and all(r > 0 for r in row["rounds"])
    summary = {r["setup"]: r for r in document["summary"] if r["workload"] == ROW}
    proxy, nginx = (summary[s]["cpu_us_per_request"]["proxy"] for s in (ours, NGINX_H2))
    assert row["value"] == round(proxy / nginx, 2)
    assert label in stdout and f"{ROW}: " in stdout and f"  {ours} " in stdout


def test_the_layer_table_samples_the_three_h2_columns_under_h2load(pki, tmp_path):
    require_tool("h2load")
    require_tool("nginx")
    require_tool("perf")
    from course.bench.layers import COLUMNS, H2_SETUPS, format_layers, layer_profile

    profile = layer_profile(pki, tmp_path, workload_name=ROW, setups=H2_SETUPS, seconds=0.5, warmup=0.1)
    assert "error" not in profile, profile
    assert list(profile["implementations"]) == [COLUMNS[s] for s in H2_SETUPS]
    for entry in profile["implementations"].values():
        assert entry["cpu_us_per_request"] > 0  # h2load cells run back to back while perf sampled
        assert sum(entry["shares"].values()) > 0.99
    text = format_layers(profile)
    assert "h2load -c4 -m8" in text and "tlsproxy h2 eventloop" in text
