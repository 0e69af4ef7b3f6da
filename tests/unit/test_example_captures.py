"""The bundled captures that show round trips and HTTP/2, for a student without root.

Without the right to capture, ``tlsproxy capture --rtt 40``, ``--hrr --rtt 40`` and
``--http2`` analyse the bundled example made with the same flags
(``course/data/example-capture/README.md``; ``load_example`` picks it).  These check that
those examples show what a live run shows (tests/integration/test_rtt_capture.py and
test_capture_h2.py, which need root): tshark, from the pcap and the key log alone, counts
one wait of at least one RTT between the ClientHello and the request in the TLS 1.3
capture and two in the one with a HelloRetryRequest (RFC 8446 §4.1.4), as the summary's
round-trip lines do (``format_round_trips``); and the command line falls back to them,
saying in one line what the example lacks.
"""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("scapy")

from course.capture.bundle import load_example  # noqa: E402
from course.capture.run import format_round_trips  # noqa: E402
from course.capture.sniff import NO_CAPTURE_VARIABLE  # noqa: E402
from tests.integration.test_rtt_capture import RTT, SLACK, hello_to_request, tshark_frames, waits  # noqa: E402
from tests.tools import require_tool  # noqa: E402


def test_the_rtt_example_waits_one_round_trip_and_the_retry_example_two():
    require_tool("tshark")
    one = load_example("terminate", rtt_ms=40)
    assert one.metadata["rtt_ms"] == RTT * 1000 and one.metadata["legs"]["client"]["captured_at"] == "client"
    frames = tshark_frames(one)
    assert waits(frames) == 1 and hello_to_request(frames) >= RTT - SLACK
    assert ": 1 round trip of TLS (waits of at least one RTT)" in "\n".join(format_round_trips(one))   # ours agrees

    retry = load_example("terminate", hrr=True, rtt_ms=40)
    frames = tshark_frames(retry)
    hellos = [f for f in frames if f.from_client and "1" in f.handshake]
    assert [h.key_share for h in hellos] == ["25", "29"]        # P-521, refused; then X25519, as asked
    assert any("Hello Retry Request" in f.info for f in frames if not f.from_client)
    assert waits(frames) == 2 and hello_to_request(frames) >= 2 * RTT - SLACK
    assert ": 2 round trips of TLS (waits of at least one RTT)" in "\n".join(format_round_trips(retry))
    assert format_round_trips(load_example("terminate")) == []        # no delay line, nothing to count


def capture_without_permission(monkeypatch, capsys, *flags: str, out) -> tuple[str, str]:
    from course import cli

    monkeypatch.setenv(NO_CAPTURE_VARIABLE, "1")
    monkeypatch.setattr(sys, "argv", ["tlsproxy"])            # cli.main() rewrites sys.argv
    assert cli.main(["capture", "--setup", "terminate", *flags, "--out", str(out), "--no-pictures"]) == 0
    return capsys.readouterr()


def test_capture_http2_without_permission_analyses_the_http2_example(tmp_path, monkeypatch, capsys):
    require_tool("tshark")
    out, err = capture_without_permission(monkeypatch, capsys, "--http2", out=tmp_path / "h2")
    (line,) = err.splitlines()
    assert NO_CAPTURE_VARIABLE in line and "(terminate, TLS 1.3, HTTP/2 on the client leg (loopback))" in line
    assert "(it has" not in line                              # nothing asked for is missing
    assert "== HTTP/2 on the client leg, HTTP/1.1 on the backend leg" in out
    assert "ALPN chosen in the handshake (the lab client's report): h2" in out
    assert "made with: tlsproxy capture --setup terminate --http2 --out course/data/example-capture/" in out


def test_capture_hrr_and_rtt_without_permission_say_what_the_example_lacks(tmp_path, monkeypatch, capsys):
    require_tool("tshark")
    out, err = capture_without_permission(monkeypatch, capsys, "--hrr", "--rtt", "40", out=tmp_path / "hrr")
    assert "HelloRetryRequest, RTT 40 ms (loopback)) instead." in err and "(it has" not in err
    assert "client leg: through a delay line of 40 ms RTT" in out and "2 round trips of TLS" in out
    out, err = capture_without_permission(monkeypatch, capsys, "--rtt", "100", "--backend-rtt", "10",
                                          out=tmp_path / "far")
    assert err.rstrip().endswith("(it has an added RTT of 40 ms instead of 100 and no added backend RTT).")
