"""Added round-trip time in the capture: who dials which port, and what the bundle says.

``Lab(..., rtt=, backend_rtt=)`` puts a delay line in front of a leg's listening party;
the connecting party then dials the line, and the leg's capture listens on the line's
port.  Checked as command lines and metadata (nothing runs here; the live capture
through the line is tests/integration/test_rtt_capture.py).
"""

from __future__ import annotations

import json

import pytest

from course.capture.bundle import CaptureBundle
from course.capture.ladder import bundle_notes
from course.capture.setups import SETUPS, Lab, Loopback


def lab(name: str, pki, tmp_path, **delays) -> Lab:
    made = Lab(SETUPS[name], Loopback(), tmp_path, pki, **delays)
    made.ports = {"origin": 9001, "proxy": 8443}
    if made.rtt:
        made.ports["delay"] = 7001
    if made.backend_rtt:
        made.ports["backend-delay"] = 7002
    return made


def test_without_delay_lines_the_parties_dial_each_other(pki, tmp_path):
    plain = lab("terminate", pki, tmp_path)
    assert plain.dial("client") == ("127.0.0.1", 8443) and plain.dial("backend") == ("127.0.0.1", 9001)
    assert plain.capture_port("client") == 8443 and plain.capture_port("backend") == 9001


def test_the_client_dials_the_line_and_the_proxy_dials_the_backend_line(pki, tmp_path):
    delayed = lab("terminate", pki, tmp_path, rtt=0.04, backend_rtt=0.01)
    assert delayed.dial("client") == ("127.0.0.1", 7001) and delayed.dial("backend") == ("127.0.0.1", 7002)
    assert delayed.capture_port("client") == 7001 and delayed.captured_at("client") == "client"
    assert "127.0.0.1:7001" in delayed.client_argv()
    proxy = delayed.proxy_argv()
    assert proxy[proxy.index("--backend") + 1] == "http://127.0.0.1:7002"


def test_a_forward_proxy_tunnels_to_the_backend_line(pki, tmp_path):
    delayed = lab("forward", pki, tmp_path, backend_rtt=0.01)
    client, proxy = delayed.client_argv(), delayed.proxy_argv()
    assert client[client.index("--tunnel") + 1] == "www.example.test:7002"
    assert proxy[proxy.index("--connect-port") + 1] == "7002"


def test_a_direct_setup_has_no_backend_leg_to_delay(pki, tmp_path):
    direct = Lab(SETUPS["direct-https"], Loopback(), tmp_path, pki, rtt=0.04, backend_rtt=0.01)
    assert direct.rtt == 0.04 and direct.backend_rtt == 0.0


def test_the_line_keeps_the_clients_address_on_loopback(pki, tmp_path, monkeypatch):
    """The onward connection is bound to the connecting party's address, so the proxy's
    X-Forwarded-For still names the client (127.0.0.2), not the line."""
    delayed = lab("terminate", pki, tmp_path, rtt=0.04)
    started = {}
    monkeypatch.setattr(delayed, "_spawn", lambda host, argv, log, env: started.setdefault(host, argv) and 7001)
    delayed._start_delay("client", 0.04)
    argv = started["proxy"]
    assert argv[argv.index("--source") + 1] == "127.0.0.2"
    assert argv[argv.index("--connect") + 1] == "127.0.0.1:8443" and argv[argv.index("--rtt") + 1] == "40"


@pytest.mark.parametrize("metadata, expected", [
    ({"rtt_ms": 40.0, "hrr": True}, "terminate, TLS 1.3, HelloRetryRequest, RTT 40 ms (loopback)"),
    ({"rtt_ms": 40.0, "backend_rtt_ms": 10.0}, "terminate, TLS 1.3, RTT 40 ms, backend RTT 10 ms (loopback)"),
    ({}, "terminate, TLS 1.3 (loopback)"),
], ids=["hrr", "both", "none"])
def test_the_title_says_how_the_capture_was_made(tmp_path, metadata, expected):
    bundle = _bundle(tmp_path, metadata)
    assert bundle.title == expected


def test_the_ladder_says_where_the_delayed_leg_was_captured(tmp_path):
    bundle = _bundle(tmp_path, {"rtt_ms": 40.0}, delay_ms=40.0)
    (line,) = bundle_notes(bundle)
    assert "40 ms" in line and "client's end" in line and "20 ms later" in line and "not delayed" in line
    assert bundle_notes(_bundle(tmp_path / "plain", {})) == []


def _bundle(directory, metadata: dict, delay_ms: float | None = None) -> CaptureBundle:
    directory.mkdir(parents=True, exist_ok=True)
    leg = {"pcap": "client-leg.pcap", "ends": ["client", "proxy"], "server_port": 7001}
    if delay_ms:
        leg["delay_ms"] = delay_ms
    (directory / "metadata.json").write_text(json.dumps({
        "setup": "terminate", "tls": "1.3", "network": "loopback", "hosts": {}, "markers": {},
        "legs": {"client": leg}, **metadata}))
    return CaptureBundle(directory)


class FakeNet:
    """The addresses of a namespace lab (lab.topology.Topology), without the namespaces."""

    ADDRESSES = {("client", "proxy"): "10.0.1.2", ("proxy", "client"): "10.0.1.1",
                 ("proxy", "origin"): "10.0.2.1", ("origin", "proxy"): "10.0.2.2"}

    def address(self, host: str, toward: str) -> str:
        return self.ADDRESSES[host, toward]


def test_in_the_namespace_lab_the_line_runs_beside_the_connecting_party(pki, tmp_path, monkeypatch):
    """The captures run on the proxy's interfaces, so the line runs in the client's namespace:
    the proxy sees the client's own address, and the capture the line's onward connection."""
    from course.capture.setups import Namespaces

    delayed = Lab(SETUPS["terminate"], Namespaces(FakeNet()), tmp_path, pki, rtt=0.04)
    delayed.ports = {"origin": 9001, "proxy": 8443}
    started = {}
    monkeypatch.setattr(delayed, "_spawn", lambda host, argv, log, env: started.setdefault(host, argv) and 7001)
    delayed.ports["delay"] = delayed._start_delay("client", 0.04)
    argv = started["client"]
    assert argv[argv.index("--listen") + 1] == "10.0.1.2:0" and argv[argv.index("--connect") + 1] == "10.0.1.1:8443"
    assert "--source" not in argv
    assert delayed.dial("client") == ("10.0.1.2", 7001)
    assert delayed.capture_port("client") == 8443 and delayed.captured_at("client") == "proxy"
