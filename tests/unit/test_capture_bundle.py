"""course.capture.bundle and the "capture not permitted" check of course.capture.sniff."""

from __future__ import annotations

import json

import pytest

from course.capture.bundle import (EXAMPLES, CaptureBundle, example_differences, example_name, list_examples,
                                   load_example, merge_key_logs, traits)
from course.capture.sniff import NO_CAPTURE_VARIABLE, capture_available, port_filter


def test_examples_cover_every_setup_and_record_how_they_were_made():
    names = list_examples()
    for expected in ("direct-http", "direct-https-tls13", "terminate-tls13", "terminate-tls12",
                     "terminate-tls13-resumed", "reencrypt-tls13", "passthrough-tls13", "forward-tls13",
                     "intercept-tls13", "terminate-tls13-rtt40", "terminate-tls13-hrr-rtt40", "terminate-tls13-http2"):
        assert expected in names
    for name in names:
        if name == "forward-secrecy":
            continue
        bundle = CaptureBundle(load_example().directory.parent / name)
        assert bundle.metadata["command"].startswith("tlsproxy capture --setup ")
        assert f"--out course/data/example-capture/{name}" in bundle.metadata["command"]
        assert all(leg.pcap.exists() for leg in bundle.legs.values())
        assert bundle.keys_log.exists()


def test_load_example_falls_back_to_the_nearest_capture():
    assert load_example("reencrypt", "1.2").directory.name == "reencrypt-tls13"    # no TLS 1.2 one
    assert load_example("terminate", "1.2").directory.name == "terminate-tls12"
    assert load_example("terminate", resumed=True).directory.name == "terminate-tls13-resumed"
    assert example_name("direct-http", "1.2") == "direct-http"


def test_each_example_is_named_after_what_it_was_made_with_and_found_by_it():
    """The directory name follows the flags in its recorded command, and asking load_example
    for exactly those finds that directory (so a student's --hrr --rtt 40 finds its example)."""
    for name in list_examples():
        bundle = CaptureBundle(EXAMPLES / name)
        if "setup" not in bundle.metadata:                  # the forward-secrecy lesson
            continue
        made_with = traits(bundle)
        assert example_name(**made_with) == name
        assert load_example(**made_with).directory.name == name
        assert example_differences(bundle, **made_with) == []
        command = bundle.metadata["command"].split()
        assert ("--hrr" in command) == made_with["hrr"] and ("--http2" in command) == made_with["http2"]
        assert ("--rtt" in command) == bool(made_with["rtt_ms"])


def test_the_round_trip_hello_retry_and_http2_examples_are_found_and_their_gaps_said():
    assert load_example("terminate", "1.3", http2=True).directory.name == "terminate-tls13-http2"
    assert load_example("terminate", rtt_ms=40).directory.name == "terminate-tls13-rtt40"
    assert load_example("terminate", hrr=True, rtt_ms=40).directory.name == "terminate-tls13-hrr-rtt40"
    # the nearest: a HelloRetryRequest before an exact RTT, HTTP/2 before an RTT
    retry = load_example("terminate", hrr=True)
    assert retry.directory.name == "terminate-tls13-hrr-rtt40"
    assert example_differences(retry, hrr=True) == ["an added RTT of 40 ms"]
    far = load_example("terminate", rtt_ms=100)
    assert far.directory.name == "terminate-tls13-rtt40"
    assert example_differences(far, rtt_ms=100) == ["an added RTT of 40 ms instead of 100"]
    h2 = load_example("terminate", http2=True, rtt_ms=40)
    assert h2.directory.name == "terminate-tls13-http2"
    assert example_differences(h2, http2=True, rtt_ms=40, backend_rtt_ms=10) == ["no added RTT",
                                                                                "no added backend RTT"]
    # no reencrypt capture over HTTP/2 is shipped: the reencrypt one, and it says so
    reencrypt = load_example("reencrypt", http2=True)
    assert reencrypt.directory.name == "reencrypt-tls13"
    assert example_differences(reencrypt, "reencrypt", http2=True) == ["no HTTP/2 on the client leg"]
    # the plain request still gets the plain capture, not one with extras
    assert load_example().directory.name == "terminate-tls13"
    assert "HTTP/2 on the client leg" in load_example(http2=True).title


def test_a_bundle_knows_its_legs_keys_and_parties():
    bundle = load_example("reencrypt")
    assert bundle.setup == "reencrypt" and bundle.tls == "1.3" and not bundle.resumed
    assert {name: leg.ends for name, leg in bundle.legs.items()} == {"client": ("client", "proxy"),
                                                                     "backend": ("proxy", "origin")}
    assert set(bundle.metadata["keylogs"]) == {"client", "proxy", "proxy-backend", "origin"}
    assert bundle.hosts["client"] != bundle.hosts["proxy"]         # 127.0.0.2 vs 127.0.0.1
    assert "title" not in bundle.metadata and "reencrypt, TLS 1.3" in bundle.title


def test_copy_to_takes_the_bundle_files_only(tmp_path):
    copy = load_example("terminate").copy_to(tmp_path / "copy")
    assert (tmp_path / "copy" / "client-leg.pcap").exists() and (tmp_path / "copy" / "keys" / "proxy.log").exists()
    assert not (tmp_path / "copy" / "summary.txt").exists() and not (tmp_path / "copy" / "logs").exists()
    assert copy.metadata == load_example("terminate").metadata


def test_not_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a capture bundle"):
        CaptureBundle(tmp_path)


def test_merge_key_logs_keeps_each_line_once(tmp_path):
    (tmp_path / "a").write_text("# comment\nCLIENT_RANDOM aa bb\nSERVER_TRAFFIC_SECRET_0 aa cc\n")
    (tmp_path / "b").write_text("CLIENT_RANDOM aa bb\nCLIENT_RANDOM dd ee\n")
    merge_key_logs([tmp_path / "a", tmp_path / "b", tmp_path / "missing"], tmp_path / "all")
    assert (tmp_path / "all").read_text().splitlines() == [
        "CLIENT_RANDOM aa bb", "SERVER_TRAFFIC_SECRET_0 aa cc", "CLIENT_RANDOM dd ee"]


def test_capture_can_be_declared_not_permitted(monkeypatch):
    monkeypatch.setenv(NO_CAPTURE_VARIABLE, "1")
    reason = capture_available()
    assert reason and "\n" not in reason and NO_CAPTURE_VARIABLE in reason
    monkeypatch.setenv(NO_CAPTURE_VARIABLE, "0")
    assert capture_available() != reason


def test_port_filter():
    assert port_filter([9001, 8443, 8443]) == "tcp and (port 8443 or port 9001)"
    assert port_filter([]) == "tcp"


def test_metadata_is_plain_json():
    json.dumps(load_example().metadata)
