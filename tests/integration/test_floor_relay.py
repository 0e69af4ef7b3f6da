"""The sweep's Python floor (``course.bench.floor_relay``), for real: curl through it, bytes unchanged.

The floor is a measuring stick, not a proxy, and a stick that lost or changed bytes
would measure errors.  So: curl (a real client, TLS 1.3) asks the relay for the same
generated body twice on one connection and once with ``Connection: close``, and gets
exactly what the origin sent, also 20 MiB read slowly from an origin that closes at once; what the origin saw proves that the relay forwarded the
request head as it came, untouched: no ``Via``, no ``X-Forwarded-For``, which the proxy
adds (``proxy.http1.forwarding``).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from course.bench.setups import CERT_NAMES, SetupLauncher, instance_key
from course.bench.variants import FLOOR
from tests.tools import require_tool

pytestmark = pytest.mark.slow


def test_curl_through_the_floor_relay_gets_the_origins_bytes(pki, tmp_path):
    require_tool("curl")
    key = instance_key(FLOOR, "ecdsa")
    launcher = SetupLauncher(pki, tmp_path)
    try:
        running = launcher.start([key])[key]
        assert running.implementation == "floor relay"
        host, port = CERT_NAMES["ecdsa"], running.connect_to[1]
        base = f"https://{host}:{port}"
        done = subprocess.run(
            ["curl", "-sS", "--tlsv1.3", "--cacert", str(pki.ca), "--resolve", f"{host}:{port}:127.0.0.1",
             f"{base}/bytes/1k", "-o", str(tmp_path / "one"), "--next", "--cacert", str(pki.ca),
             "--resolve", f"{host}:{port}:127.0.0.1", f"{base}/bytes/1k", "-o", str(tmp_path / "two"),
             "--next", "--cacert", str(pki.ca), "--resolve", f"{host}:{port}:127.0.0.1",
             "-H", "Connection: close", f"{base}/who/3", "-w", "%{http_code} %{num_connects}"],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout[:done.stdout.rindex("}") + 1])
        code, connects = done.stdout[done.stdout.rindex("}") + 1:].split()
        # A slow reader and an origin that closes at once: the relay holds what the client has not
        # taken yet and closes only when it has left (a relay that lost it would measure errors).
        slow = subprocess.run(
            ["curl", "-sS", "--cacert", str(pki.ca), "--resolve", f"{host}:{port}:127.0.0.1", "--limit-rate", "10M",
             "-H", "Connection: close", f"{base}/bytes/20m", "-o", str(tmp_path / "big"), "-w", "%{size_download}"],
            capture_output=True, text=True, timeout=30)
        assert slow.returncode == 0 and slow.stdout == str(20 << 20), (slow.stdout, slow.stderr)
    finally:
        launcher.stop()
    one, two = (tmp_path / "one").read_bytes(), (tmp_path / "two").read_bytes()
    assert len(one) == 1024 and one == two  # the origin's generated body, whole, twice
    assert code == "200" and connects == "0"  # the third request reused the kept connection
    headers = {name.lower() for name, _ in seen["headers"]}
    assert "via" not in headers and "x-forwarded-for" not in headers  # relayed, not proxied
