"""course.bench.layers, live: perf samples a running tlsproxy and nginx under load."""

from __future__ import annotations

import subprocess

import pytest

from course.bench.layers import LAYERS, layer_profile
from tests.tools import require_tool


def test_both_proxies_are_sampled_and_their_layers_add_up(pki, tmp_path):
    perf = require_tool("perf")
    require_tool("nginx")
    probe = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-o", str(tmp_path / "probe.data"), "--", "true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # installed, but this kernel or container forbids sampling
        pytest.skip(f"perf cannot sample here: {probe.stderr.strip()[-200:]}")
    profile = layer_profile(pki, tmp_path, workload_name="keepalive-1k", seconds=1.0, warmup=0.2)
    assert "error" not in profile, profile.get("error")
    assert set(profile["implementations"]) == {"tlsproxy", "nginx"}
    for name, entry in profile["implementations"].items():
        assert set(entry["shares"]) == set(LAYERS)
        assert sum(entry["shares"].values()) == pytest.approx(1.0, abs=0.01), name
        assert entry["shares"]["code"] > 0, f"{name}: no sample in its own code"
        assert sum(entry["us_per_request"].values()) == pytest.approx(entry["cpu_us_per_request"], rel=0.02)
    # The interpreter is where a Python proxy's own work shows; nginx has no libpython.
    assert profile["implementations"]["tlsproxy"]["shares"]["code"] > profile["implementations"]["nginx"]["shares"]["code"]
