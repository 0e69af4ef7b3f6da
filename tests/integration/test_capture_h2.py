"""``tlsproxy capture --http2``: HTTP/2 on the client leg, HTTP/1.1 on the backend leg, live.

The terminate (and re-encrypt) setup runs as real processes with the proxy offering ALPN
h2,http/1.1 and the lab client speaking HTTP/2 with the `h2` library; scapy captures
both legs.  What is checked comes from the capture: ALPN h2 in the client's report,
tshark's HTTP/2 dissector listing the frames of the decrypted client leg (with the
:path it decoded), the HTTP/1.1 request the origin got, the ladder's frame labels, and
the fact that HPACK keeps the header markers out of the decrypted bytes.  Needs root
(CAP_NET_RAW) and tshark, like tests/integration/test_capture.py.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

pytest.importorskip("scapy")

from course.capture import decrypt, h2view  # noqa: E402
from course.capture.h2frames import split_frames  # noqa: E402
from course.capture.ladder import ladder_arrows  # noqa: E402
from course.capture.run import capture_setup  # noqa: E402
from course.capture.whosees import who_sees_what  # noqa: E402
from proxy.errors import ConfigError  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.tools import require_live_capture  # noqa: E402

PATH_MARKER = b"path-marker-7"


@pytest.fixture(scope="module")
def live():
    require_live_capture()


@pytest.fixture(scope="module")
def bundle(live, pki, tmp_path_factory):
    return capture_setup("terminate", tmp_path_factory.mktemp("h2"), pki=pki, http2=True)


def client_leg(bundle) -> decrypt.CrossCheck:
    leg = bundle.legs["client"]
    return decrypt.cross_check(leg.pcap, bundle.keys_log, [leg.server_port])


@pytest.mark.root
def test_alpn_h2_is_negotiated_and_the_client_reports_its_frames(bundle):
    report = bundle.client_report["connections"][0]
    assert report["alpn"] == "h2"
    sent = [(f["type"], f["stream_id"]) for f in report["frames_sent"]]
    assert sent[:4] == [("preface", 0), ("SETTINGS", 0), ("HEADERS", 1), ("DATA", 1)]
    received = [f["type"] for f in report["frames_received"]]
    assert received[0] == "SETTINGS" and "HEADERS" in received and report["response_status"] == "200"


@pytest.mark.root
def test_three_decryptions_agree_on_the_client_frames_and_hpack_hides_the_header_markers(bundle):
    check = client_leg(bundle)
    assert check.agree and not check.gaps, check.format()
    request = check.requests[0]
    assert request == base64.b64decode(bundle.client_report["connections"][0]["request"])
    assert b"card=body-marker-7" in request                          # DATA is not compressed
    assert PATH_MARKER not in request and b"header-marker-7" not in request   # HPACK Huffman-coded them
    headers = dict(next(f for f in split_frames(request) if f.type == "HEADERS").headers)
    assert headers[":path"] == "/account/statement?id=path-marker-7"


@pytest.mark.root
def test_tshark_lists_the_preface_settings_and_headers_with_the_decoded_path(bundle):
    leg = bundle.legs["client"]
    frames = h2view.tshark_frames(leg.pcap, bundle.keys_log, leg.server_port)
    client = [f for f in frames if f.sender == "client"]
    assert [f.type for f in client[:4]] == ["preface", "SETTINGS", "HEADERS", "DATA"]
    assert any(f.type == "SETTINGS" and f.flags & 0x1 for f in client)         # the client's ACK
    path = dict(next(f for f in client if f.type == "HEADERS").headers)[":path"]
    assert PATH_MARKER.decode() in path
    ours = h2view.connection_frames({"client": client_leg(bundle)})
    assert h2view.same_frames(ours, frames)


@pytest.mark.root
def test_the_origin_gets_http11_with_the_marker_and_x_forwarded_for(bundle):
    leg = bundle.legs["backend"]
    request = decrypt.cross_check(leg.pcap, bundle.keys_log, [leg.server_port]).requests[0]
    assert request.startswith(b"POST /account/statement?id=path-marker-7 HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 127.0.0.2\r\n" in request and b"\r\nHost: www.example.test\r\n" in request
    assert request.endswith(b"\r\n\r\ncard=body-marker-7")


@pytest.mark.root
def test_the_ladder_labels_the_records_with_their_frames(bundle):
    labels = [a.label for a in ladder_arrows(bundle) if a.leg == "client" and a.source == "client"]
    assert "[Magic (preface), SETTINGS[0]]" in labels
    assert "[HEADERS[1]: POST /account/statement?id=path-marker-7]" in labels
    assert any(label.startswith("[DATA[1]") for label in labels)
    assert any("[SETTINGS[0] ACK]" in label for label in labels)
    server = [a.label for a in ladder_arrows(bundle) if a.leg == "client" and a.source == "proxy"]
    assert any("HEADERS[1]: 200" in label for label in server)
    without_keys = [a.label for a in ladder_arrows(bundle, decrypted=False) if a.leg == "client"]
    assert not any("HEADERS" in label for label in without_keys)


@pytest.mark.root
def test_who_sees_what_says_the_proxy_read_the_headers_only_after_hpack(bundle):
    table = who_sees_what(bundle)
    assert table.row("proxy")["path"] and table.row("proxy")["headers"] and table.row("proxy")["Host"]
    assert table.cells["proxy", "headers"].how.startswith("decrypted with its own keys, then HPACK-decoded")
    assert "Huffman-coded" in table.cells["proxy", "path"].how
    client_leg_row = table.row("on-path, client leg")
    assert not any(client_leg_row[item] for item in ("Host", "path", "headers", "body"))
    assert all(table.visible("origin", item) == seen for item, seen in table.origin_log.items())
    assert table.origin_log["headers"] and table.origin_log["client address"]


@pytest.mark.root
def test_tlsproxy_capture_http2_summary_sets_frames_beside_the_http11_request(live, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "course.cli", "capture", "--setup", "reencrypt", "--http2",
                           "--no-pictures", "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.count("they agree, byte for byte (scapy, keyschedule, tshark)") == 2
    assert "ALPN chosen in the handshake (the lab client's report): h2" in summary
    assert "lists the same frames" in summary
    lines = summary.splitlines()
    title = next(line for line in lines if "client -> proxy (HTTP/2 frames, decrypted)" in line)
    assert title.endswith("| proxy -> origin (HTTP/1.1)")
    headers = next(line for line in lines if line.startswith("  HEADERS[1], length"))   # beside the request line
    assert headers.endswith("| POST /account/statement?id=path-marker-7 HTTP/1.1")
    data = next(line for line in lines if line.startswith("  DATA[1], length 18"))       # beside the body
    assert data.endswith("| card=body-marker-7")
    assert any(line.strip().startswith(":path: /account/statement?id=path-marker-7 ") and " | " in line
               for line in lines)
    assert "is nowhere in the client's decrypted bytes: HPACK sent the value as its" in summary
    assert "HTTP/2 on the client leg" in summary.splitlines()[0]


def test_http2_is_refused_where_the_proxy_does_not_terminate(tmp_path):
    from course.capture.run import check_http2
    from course.capture.setups import SETUPS

    for name in ("passthrough", "direct-https", "forward"):
        with pytest.raises(ConfigError, match="--http2"):
            check_http2(SETUPS[name], True)
    check_http2(SETUPS["reencrypt"], True)
