"""The region-locked scenario: refused directly, served through a forward proxy in the region."""

from __future__ import annotations

import http.client
import json
import os
import subprocess

from course.region import RegionAddresses, RegionLockScenario
from tests.conftest import REPO, free_port, wait_for_port
from tests.tools import require_tool


def test_direct_is_refused_and_the_proxy_in_the_region_is_served():
    with RegionLockScenario() as scenario:
        direct = scenario.direct()
        assert direct.status == 403
        assert direct.document["error"] == "region-locked" and direct.origin_saw == "127.0.0.1"

        via = scenario.via_proxy()
        assert via.status == 200 and via.origin_saw == "127.0.0.2", "the origin saw the proxy, inside the region"
        assert via.document["content"].startswith("region-locked content")

        tunnel = scenario.via_tunnel()
        assert tunnel.status == 200 and tunnel.origin_saw == "127.0.0.2"
        assert str(direct).startswith("direct     -> 403")


def test_the_proxy_goes_nowhere_else():
    with RegionLockScenario() as scenario:
        a = scenario.addresses
        conn = http.client.HTTPConnection(a.proxy, a.proxy_port, timeout=10, source_address=(a.client, 0))
        conn.request("GET", f"http://127.0.0.1:{a.origin_port}/region")  # the origin's port, another host
        response = conn.getresponse()
        assert response.status == 403 and b"denied by rule 2: deny all" in response.read()
        conn.close()


def test_addresses_are_parameters():
    addresses = RegionAddresses(origin="127.0.0.13", region_network="127.0.0.12/32", proxy="127.0.0.11",
                                proxy_source="127.0.0.12", client="127.0.0.10")
    with RegionLockScenario(addresses) as scenario:
        assert scenario.origin_url.startswith("http://127.0.0.13:")
        assert scenario.proxy_url.startswith("http://127.0.0.11:")
        assert scenario.direct().origin_saw == "127.0.0.10"
        via = scenario.via_proxy()
        assert via.status == 200 and via.origin_saw == "127.0.0.12", "listening on .11, connecting from .12"


def test_the_commands_run_the_scenario_as_separate_processes():
    """What the namespace lab will run, one process per party; here on loopback."""
    require_tool("curl")
    addresses = RegionAddresses(origin_port=free_port(), proxy_port=free_port())
    commands = RegionLockScenario(addresses).commands()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    processes = [subprocess.Popen(commands[name], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for name in ("origin", "proxy")]
    try:
        wait_for_port(addresses.origin_port, addresses.origin)
        wait_for_port(addresses.proxy_port, addresses.proxy)
        direct = subprocess.run(commands["client-direct"], capture_output=True, text=True, timeout=20, env=env)
        assert json.loads(direct.stdout)["error"] == "region-locked"
        via = subprocess.run(commands["client-via-proxy"], capture_output=True, text=True, timeout=20, env=env)
        assert json.loads(via.stdout)["your_address"] == "127.0.0.2", via.stderr
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
