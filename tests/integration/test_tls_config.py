"""The deployed TLS configuration, checked from outside the way an operator would.

* ``sslyze --mozilla_config=intermediate`` against a running ``tlsproxy serve``
  (the real listener, with an ECDSA and an RSA certificate chosen by SNI), not a
  bare ``SSLContext``: whatever the server does to its context, this sees it.
* Private keys written by ``tlsproxy certs`` are mode 0600 even under umask 000.
* The forward proxy with no policy configured is not an open relay: destinations
  outside loopback, the cloud metadata address and non-TLS CONNECT ports get 403.
  That test runs in a network namespace with nothing but loopback (``unshare
  -n``), so even a broken policy could not send a packet off the machine: it would
  get "network unreachable" (a 502), which the test tells apart from the 403.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.fakes import refused_port
from tests.processes import REPO, serve_process
from tests.tools import IN_CI, require_root, require_tool

WWW, WWW_RSA = "www.example.test", "www-rsa.example.test"


def test_sslyze_finds_the_running_proxy_mozilla_intermediate_compliant(pki, tmp_path):
    try:
        import sslyze  # noqa: F401  (a dev dependency; run as a program below)
    except ImportError:
        if IN_CI:
            pytest.fail("sslyze is not installed; CI must have it (pip install sslyze)")
        pytest.skip("sslyze is not installed (pip install sslyze)")
    (cert, key), (rsa_cert, rsa_key) = pki.files(WWW), pki.files(WWW_RSA)
    config = f"""
[[listeners]]
listen = "127.0.0.1:0"
certs = [{{ cert = "{cert}", key = "{key}" }}, {{ cert = "{rsa_cert}", key = "{rsa_key}" }}]

[[pools]]
name = "web"
backends = ["http://127.0.0.1:{refused_port()}"]

[proxy]
access_log = "{tmp_path / 'access.log'}"
"""
    with serve_process(config, tmp_path) as proxy:
        targets = [f"{name}:{proxy.port}{{127.0.0.1}}" for name in (WWW, WWW_RSA)]  # name:port{ip}: SNI + address
        result = subprocess.run(
            [sys.executable, "-m", "sslyze", f"--certinfo_ca_file={pki.ca}", "--mozilla_config=intermediate",
             *targets], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    report = result.stdout
    assert result.returncode == 0, report[-3000:] + result.stderr[-2000:]
    for name in (WWW, WWW_RSA):
        assert f"{name}:{proxy.port}: OK - Compliant" in report, report[-3000:]
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in report


def test_private_keys_are_never_readable_by_others(tmp_path):
    out = tmp_path / "certs"
    result = subprocess.run(
        [sys.executable, "-m", "course.cli", "certs", "--dir", str(out), WWW, "api.example.test"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.umask(0))  # the mode must not come from a friendly umask
    assert result.returncode == 0, result.stderr
    keys = sorted(out.glob("*.key"))
    assert {k.name for k in keys} >= {"ca.key", f"{WWW}.key", "api.example.test.key"}
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name} is {oct(path.stat().st_mode)}"
    for path in out.glob("*.pem"):  # certificates are public
        assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0


# Runs inside the namespace: start the forward proxy with no policy and an origin,
# then ask for destinations an open relay would reach; print every status as JSON.
IN_NAMESPACE = textwrap.dedent("""
    import json, socket, subprocess, sys

    def start(args, stream):
        proc = subprocess.Popen([sys.executable, "-m", "course.cli", *args], text=True,
                                stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                                stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL)
        pipe = proc.stdout if stream == "stdout" else proc.stderr
        for line in pipe:
            if "listening on" in line:
                return proc, int(line.rstrip().rsplit(":", 1)[1].split()[0])
        raise SystemExit("did not start: " + " ".join(args))

    origin, origin_port = start(["origin", "--listen", "127.0.0.1:0"], "stdout")
    proxy, port = start(["serve", "--mode", "forward", "--listen", "127.0.0.1:0", "--access-log", "/dev/null"], "stderr")
    asks = {
        "connect-public": "CONNECT 192.0.2.1:443 HTTP/1.1\\r\\nHost: 192.0.2.1:443\\r\\n\\r\\n",
        "connect-ipv6-public": "CONNECT [2001:db8::1]:443 HTTP/1.1\\r\\nHost: [2001:db8::1]:443\\r\\n\\r\\n",
        "connect-metadata": "CONNECT 169.254.169.254:443 HTTP/1.1\\r\\nHost: 169.254.169.254:443\\r\\n\\r\\n",
        "connect-private": "CONNECT 10.0.0.1:443 HTTP/1.1\\r\\nHost: 10.0.0.1:443\\r\\n\\r\\n",
        "connect-smtp-on-loopback": "CONNECT 127.0.0.1:25 HTTP/1.1\\r\\nHost: 127.0.0.1:25\\r\\n\\r\\n",
        "get-public": "GET http://192.0.2.1/ HTTP/1.1\\r\\nHost: 192.0.2.1\\r\\n\\r\\n",
        "get-private": "GET http://10.0.0.1:8080/admin HTTP/1.1\\r\\nHost: 10.0.0.1:8080\\r\\n\\r\\n",
        "get-mapped-ipv6": "GET http://[::ffff:10.0.0.1]:8080/ HTTP/1.1\\r\\nHost: [::ffff:10.0.0.1]:8080\\r\\n\\r\\n",
        "get-loopback-origin": f"GET http://127.0.0.1:{origin_port}/ HTTP/1.1\\r\\nHost: 127.0.0.1:{origin_port}\\r\\nConnection: close\\r\\n\\r\\n",
    }
    statuses = {}
    for name, request in asks.items():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request.encode())
            statuses[name] = int(sock.recv(65536).split(b" ", 2)[1])
    proxy.terminate(); origin.terminate(); proxy.wait(10); origin.wait(10)
    print(json.dumps(statuses))
""")


def test_forward_proxy_is_not_an_open_relay_by_default(tmp_path):
    if not (REPO / "proxy" / "modes" / "forward.py").exists():
        pytest.skip("proxy/modes/forward.py does not exist yet")
    require_root("an isolated network namespace (unshare -n)")
    unshare, ip = require_tool("unshare"), require_tool("ip")
    script = tmp_path / "in_namespace.py"
    script.write_text(IN_NAMESPACE)
    result = subprocess.run(
        [unshare, "--net", "sh", "-c", f'{ip} link set lo up && exec "$0" "$1"', sys.executable, str(script)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses.pop("get-loopback-origin") == 200, "the proxy does forward where the policy allows"
    assert statuses == {name: 403 for name in statuses}, statuses  # 502 would mean it tried to connect
