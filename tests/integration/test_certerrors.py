"""course/certerrors.py run for real, and the chain ``tlsproxy serve`` sends, seen by openssl."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest

from course import certerrors
from tests.processes import origin_process, proxy_config, serve_process
from tests.tools import require_tool

# What each tool says, matched loosely on the words that stay put across versions.
EXPECTED = {
    "missing intermediate": {
        "curl": "unable to get local issuer certificate",
        "openssl": r"Verify return code: 20 \(unable to get local issuer certificate\)",
        "python": "certificate verify failed: unable to get local issuer certificate",
    },
    "name mismatch": {
        "curl": "no alternative certificate subject name matches target host name 'api.example.test'",
        "openssl": r"Verify return code: 62 \(hostname mismatch\)",
        "python": "certificate verify failed: Hostname mismatch, certificate is not valid for 'api.example.test'",
    },
    "expired": {
        "curl": "certificate has expired",
        "openssl": r"Verify return code: 10 \(certificate has expired\)",
        "python": "certificate verify failed: certificate has expired",
    },
    "unknown CA": {
        "curl": "unable to get local issuer certificate",
        "openssl": r"Verify return code: 20 \(unable to get local issuer certificate\)",
        "python": "certificate verify failed: unable to get local issuer certificate",
    },
    "wrong EKU": {  # OpenSSL 3.0 says "unsuitable", older versions "unsupported"
        "curl": r"(unsuitable|unsupported) certificate purpose",
        "openssl": r"Verify return code: 26 \((unsuitable|unsupported) certificate purpose\)",
        "python": r"certificate verify failed: (unsuitable|unsupported) certificate purpose",
    },
}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    require_tool("curl")
    require_tool("openssl")
    before = {thread.name for thread in threading.enumerate()}
    rows = certerrors.run_gallery(tmp_path_factory.mktemp("gallery"))
    # Every server stopped: no origin thread outlives the gallery.
    assert not [t.name for t in threading.enumerate() if t.name.startswith("origin-") and t.name not in before]
    return rows


def test_every_case_meets_every_tool_once(gallery):
    assert [(row["case"], row["tool"]) for row in gallery] == [
        (case, tool) for case in ["good", *EXPECTED] for tool in certerrors.TOOLS
    ]


def test_the_good_chain_verifies_in_all_three_tools(gallery):
    good = [row for row in gallery if row["case"] == "good"]
    assert [(row["ok"], row["error"]) for row in good] == [(True, "")] * 3


@pytest.mark.parametrize("case", list(EXPECTED))
@pytest.mark.parametrize("tool", certerrors.TOOLS)
def test_each_mistake_fails_in_each_tool_with_its_own_error(gallery, case, tool):
    (row,) = [row for row in gallery if (row["case"], row["tool"]) == (case, tool)]
    assert row["ok"] is False
    assert re.search(EXPECTED[case][tool], row["error"]), row["error"]
    assert "\n" not in row["error"]


def test_the_command_prints_the_table_and_has_help(tmp_path):
    require_tool("curl")
    require_tool("openssl")
    run = subprocess.run([sys.executable, "-m", "course.certerrors", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and "--dir" in run.stdout
    run = subprocess.run([sys.executable, "-m", "course.certerrors", "--dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["case", "tool", "ok", "error"]
    assert len(lines) == 2 + 6 * 3
    assert re.search(r"^expired\s+openssl\s+no\s+Verify return code: 10", run.stdout, re.M)


def test_tlsproxy_serve_sends_leaf_and_intermediate(pki, tmp_path):
    """``openssl s_client -showcerts`` against the real proxy: two certificates, and they verify."""
    openssl = require_tool("openssl")
    with origin_process() as origin, serve_process(proxy_config(pki, origin.port, tmp_path), tmp_path) as proxy:
        result = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "www.example.test",
             "-verify_hostname", "www.example.test", "-CAfile", str(pki.ca), "-showcerts", "-verify_return_error"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("-----BEGIN CERTIFICATE-----") == 2
    chain = out[out.index("Certificate chain"):out.index("---\nServer certificate")]
    # " 0 s:CN = www.example.test / i:...intermediate", " 1 s:...intermediate / i:...development CA"
    assert re.search(r"0 s:CN = www\.example\.test\n\s+i:CN = TLS Termination Lab intermediate CA", chain), chain
    assert re.search(r"1 s:CN = TLS Termination Lab intermediate CA.*\n\s+i:CN = TLS Termination Lab development CA",
                     chain), chain
    assert "Verify return code: 0 (ok)" in out
