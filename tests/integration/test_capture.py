"""Live capture of every setup, decrypted three ways; the CLI; the fallback without capture.

Each setup runs as real processes (``tlsproxy origin``, ``tlsproxy serve``, the lab
client) on loopback with fresh ports while scapy captures both legs through libpcap;
the request is then recovered by scapy, by our key schedule and by tshark, which must
agree byte for byte with what the client sent.  Needs root (CAP_NET_RAW) and tshark:
both are there in CI.  The fallback test runs without root.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("scapy")

from course.capture import decrypt  # noqa: E402
from course.capture.ladder import ladder_arrows  # noqa: E402
from course.capture.run import capture_setup  # noqa: E402
from course.capture.secrecy import analyse_lesson, capture_lesson  # noqa: E402
from course.capture.setups import SETUPS, Namespaces  # noqa: E402
from course.capture.sniff import NO_CAPTURE_VARIABLE, Capture  # noqa: E402
from course.capture.whosees import ITEMS, who_sees_what  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.tools import require_live_capture, require_tool  # noqa: E402

@pytest.fixture(scope="module")
def live():
    require_live_capture()


@pytest.fixture(scope="module")
def captured(live, pki, tmp_path_factory):
    """setup name -> a fresh capture bundle, made once per module and shared."""
    bundles = {}

    def get(setup: str, **options):
        key = (setup, tuple(sorted(options.items())))
        if key not in bundles:
            if not SETUPS[setup].available:
                pytest.skip(f"proxy/modes/{SETUPS[setup].mode}.py is not there yet")
            bundles[key] = capture_setup(setup, tmp_path_factory.mktemp(setup), pki=pki, **options)
        return bundles[key]

    return get


def sent(bundle) -> list[bytes]:
    return [base64.b64decode(c["request"]) for c in bundle.client_report["connections"]]


def three_ways(bundle, leg: str) -> decrypt.CrossCheck:
    info = bundle.legs[leg]
    check = decrypt.cross_check(info.pcap, bundle.keys_log, [info.server_port])
    assert set(check.ran) == {"scapy", "keyschedule", "tshark"}, check.format()
    assert check.agree and not check.gaps, check.format()
    return check


@pytest.mark.root
def test_capture_sees_every_packet_once_from_the_moment_it_starts(live, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with Capture.loopback(tmp_path / "lo.pcap", ports=[port]) as capture:
            client = socket.create_connection(("127.0.0.1", port))   # no sleep after entering
            accepted, _ = server.accept()
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            client.close()
            accepted.close()
    from scapy.layers.inet import TCP

    flags = [str(p[TCP].flags) for p in capture.packets]
    assert flags[0] == "S" and flags.count("S") == 1           # libpcap: no loopback duplicates
    assert sum(1 for p in capture.packets if bytes(p[TCP].payload) == b"ping") == 1
    assert (tmp_path / "lo.pcap").stat().st_size > 0


@pytest.mark.root
@pytest.mark.parametrize("setup", list(SETUPS))
def test_each_setup_decrypts_three_ways_to_the_request_the_client_sent(captured, setup):
    bundle = captured(setup)
    client_leg = three_ways(bundle, "client")
    assert list(client_leg.requests) == sent(bundle)
    if "backend" not in bundle.legs:
        return
    backend = three_ways(bundle, "backend").requests[0]
    if SETUPS[setup].proxy_reads_requests:        # the proxy read and rewrote the request (3, 4, 7)
        assert backend.startswith(b"POST /account/statement?id=path-marker-7 HTTP/1.1\r\n")
        assert b"X-Forwarded-For: 127.0.0.2\r\n" in backend
    else:                                         # spliced: the same bytes, inside the same TLS session
        assert backend == sent(bundle)[0]
    keylogs = set(bundle.metadata["keylogs"])
    assert ("proxy" in keylogs) == SETUPS[setup].proxy_reads_requests


@pytest.mark.root
def test_an_intercepted_capture_shows_two_sessions_two_certificates_and_the_proxy_reading_it(captured, tmp_path):
    """Setup 7 live: the client asked for a tunnel to www.example.test and was shown a leaf minted by
    this run's interception CA; the origin showed its own; the proxy's own key logs open both legs."""
    from course.capture.interception import analyse_interception
    from course.capture.run import analyse
    from proxy.tls.mint import CA_COMMON_NAME

    bundle = captured("intercept")
    connection = bundle.client_report["connections"][0]
    assert connection["connect_response"].startswith("HTTP/1.1 200")  # answered by the proxy itself
    found = analyse_interception(bundle)
    assert found.two_sessions and found.different_certificates and found.signed_by_interception_ca
    assert found.client_saw.issuer == CA_COMMON_NAME != found.origin_showed.issuer
    assert found.reported == found.client_saw.der  # the client's own report: the minted leaf
    assert found.client_saw.key_holders == ("client", "proxy")
    assert found.origin_showed.key_holders == ("proxy-backend", "origin")
    assert {c.name: c.shows for c in found.clues()} == {"the issuer": True, "pinning": True,
                                                        "Certificate Transparency": False}
    table = who_sees_what(bundle)
    assert table.row("proxy") == dict.fromkeys(ITEMS, True)
    for item in ("path", "headers", "body"):     # read in the clear with the proxy's own keys, on either leg
        assert table.cells["proxy", item].how == "decrypted with its own keys"
        assert not table.visible("on-path, client leg", item) and not table.visible("on-path, backend leg", item)
    # Only the CA's certificate is kept: its key was deleted with the run.
    assert (bundle.directory / bundle.metadata["intercept_ca"]).exists()
    assert not list(bundle.directory.rglob("*.key"))
    summary = analyse(bundle, tmp_path / "analysis", pictures=False).summary
    assert "== interception" in summary and f"issuer {CA_COMMON_NAME!r}" in summary
    assert "the proxy holds the keys of both sessions: yes" in summary


@pytest.mark.root
def test_who_sees_what_in_a_fresh_terminate_capture(captured):
    table = who_sees_what(captured("terminate"))
    client_leg = table.row("on-path, client leg")
    assert client_leg["SNI"] and client_leg["client address"]
    assert not any(client_leg[item] for item in ("certificate", "Host", "path", "headers", "body"))
    origin = table.row("origin")
    assert origin["Host"] and origin["path"] and origin["headers"] and origin["body"]
    assert not origin["SNI"] and not origin["certificate"]            # it never saw the client's TLS
    assert table.cells["origin", "client address"].how == "X-Forwarded-For header in plaintext"
    assert table.row("proxy") == dict.fromkeys(ITEMS, True)
    assert all(origin[item] == seen for item, seen in table.origin_log.items())


@pytest.mark.root
def test_tls12_capture_shows_the_certificate_and_decrypts_three_ways(captured):
    bundle = captured("terminate", tls="1.2")
    assert bundle.client_report["connections"][0]["version"] == "TLSv1.2"
    assert list(three_ways(bundle, "client").requests) == sent(bundle)
    assert who_sees_what(bundle).visible("on-path, client leg", "certificate")


@pytest.mark.root
def test_resumed_capture_has_a_second_handshake_without_certificate(captured):
    bundle = captured("terminate", resumed=True)
    connections = bundle.client_report["connections"]
    assert [c["session_reused"] for c in connections] == [False, True]
    assert list(three_ways(bundle, "client").requests) == sent(bundle)
    second = [a.label for a in ladder_arrows(bundle) if a.leg == "client" and a.connection == 2]
    assert "ClientHello (PSK)" in second and not any("Certificate" in label for label in second)


@pytest.mark.root
def test_forward_secrecy_static_rsa_decrypts_with_the_key_ecdhe_does_not(live, pki, tmp_path):
    result = analyse_lesson(capture_lesson(tmp_path, pki=pki))
    assert result.decrypted("static-rsa"), result.format()
    assert set(result.checks["static-rsa"].ran) == {"scapy", "keyschedule", "tshark"}
    assert result.checks["static-rsa"].requests[0].startswith(b"GET /account/statement?id=path-marker-7")
    assert not result.decrypted("ecdhe")
    assert all(not any(r.client_data) for r in result.checks["ecdhe"].ran.values())


@pytest.mark.root
def test_tlsproxy_capture_writes_every_file(live, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "course.cli", "capture", "--setup", "terminate", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name in ("client-leg.pcap", "backend-leg.pcap", "keys.log", "ladder.png", "ladder.svg", "summary.txt",
                 "metadata.json", "client.json", "server-cert.pem"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "ladder.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.txt").read_text()
    assert summary.count("they agree, byte for byte (scapy, keyschedule, tshark)") == 2
    assert "X-Lab-Secret: header-marker-7" in summary and "on-path, backend leg" in summary
    assert summary == done.stdout.rstrip("\n") + "\n"


def test_without_capture_permission_the_bundled_example_is_used(tmp_path):
    require_tool("tshark")
    env = {**os.environ, NO_CAPTURE_VARIABLE: "1"}
    out = tmp_path / "fallback"
    done = subprocess.run([sys.executable, "-m", "course.cli", "capture", "--setup", "reencrypt", "--out", str(out),
                           "--no-pictures"], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and NO_CAPTURE_VARIABLE in lines[0] and "example capture (reencrypt, TLS 1.3" in lines[0]
    assert (out / "client-leg.pcap").exists() and (out / "backend-leg.pcap").exists()
    summary = (out / "summary.txt").read_text()
    assert summary.count("they agree, byte for byte") == 2
    assert "made with: tlsproxy capture --setup reencrypt --out course/data/example-capture/" in summary


@pytest.mark.root
def test_capture_on_the_proxy_interfaces_of_the_namespace_lab(live, pki, tmp_path):
    require_tool("ip")
    from lab.topology import Topology, netns_available

    reason = netns_available()
    if reason:
        pytest.fail(f"running as root, yet namespaces are unavailable: {reason}")
    with Topology() as net:
        bundle = capture_setup("terminate", tmp_path, network=Namespaces(net), pki=pki)
        client_ip, origin_ip = net.address("client", "proxy"), net.address("origin", "proxy")
        proxy_client_side, proxy_origin_side = net.address("proxy", "client"), net.address("proxy", "origin")
    assert bundle.metadata["network"] == "namespaces"
    for leg, ends in (("client", {client_ip, proxy_client_side}), ("backend", {proxy_origin_side, origin_ip})):
        (connection,) = bundle.connections(leg)
        assert {connection.client[0], connection.server[0]} == ends     # each capture saw one link only
    assert list(three_ways(bundle, "client").requests) == sent(bundle)
    assert f"X-Forwarded-For: {client_ip}".encode() in three_ways(bundle, "backend").requests[0]
    table = who_sees_what(bundle)
    assert table.cells["origin", "client address"].how == "X-Forwarded-For header in plaintext"
    assert table.origin_log["client address"]


def test_lesson_and_from_bundle_without_capture_permission(tmp_path, monkeypatch, capsys):
    require_tool("tshark")
    from course import cli
    from course.capture.bundle import load_example

    monkeypatch.setenv(NO_CAPTURE_VARIABLE, "1")
    monkeypatch.setattr(sys, "argv", ["tlsproxy"])            # cli.main() rewrites sys.argv
    assert cli.main(["capture", "--lesson", "forward-secrecy", "--out", str(tmp_path / "fs")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "switched off" in err
    assert "static-rsa (AES128-GCM-SHA256): DECRYPTED with the server's key" in out
    assert "ecdhe (ECDHE-RSA-AES128-GCM-SHA256): not decryptable" in out
    assert (tmp_path / "fs" / "summary.txt").read_text() == out
    bundle = load_example("passthrough")
    assert cli.main(["capture", "--from-bundle", str(bundle.directory), "--out", str(tmp_path / "again"),
                     "--no-pictures"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "passthrough, TLS 1.3" in out and (tmp_path / "again" / "client-leg.pcap").exists()
