"""course.capture.decrypt and dissect, offline: the bundled captures decrypted three ways.

These need no root (the captures are in course/data/example-capture); the live
versions, on fresh captures of every setup, are in tests/integration/test_capture.py.
"""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("scapy")

from course.capture import decrypt  # noqa: E402
from course.capture.bundle import EXAMPLES, CaptureBundle, list_examples, load_example  # noqa: E402
from course.capture.dissect import dissect_all, split_http_prefix  # noqa: E402
from course.capture.secrecy import analyse_lesson, example_lesson  # noqa: E402
from tests.tools import require_tool  # noqa: E402


def sent_requests(bundle):
    return [base64.b64decode(c["request"]) for c in bundle.client_report["connections"]]


@pytest.mark.parametrize("name", [n for n in list_examples() if n != "forward-secrecy"])
def test_every_example_decrypts_three_ways_to_what_the_client_sent(name):
    require_tool("tshark")
    bundle = CaptureBundle(EXAMPLES / name)
    leg = bundle.legs["client"]
    check = decrypt.cross_check(leg.pcap, bundle.keys_log, [leg.server_port])
    assert not any(result.error for result in check.results.values())
    assert check.agree, check.format()
    assert list(check.requests) == sent_requests(bundle)
    assert not check.gaps


def test_without_the_key_log_nothing_is_decrypted():
    bundle = load_example("terminate", "1.3")
    leg = bundle.legs["client"]
    check = decrypt.cross_check(leg.pcap, None, [leg.server_port], methods=("scapy", "keyschedule"))
    assert not check.agree and check.requests == ()
    assert "nothing was decrypted" in check.format()
    assert "no key log entry" in check.results["keyschedule"].notes[0]


def test_cross_check_reports_a_disagreement():
    check = decrypt.CrossCheck({"a": decrypt.Decryption("a", (b"GET / HTTP/1.1\r\n\r\n",)),
                                "b": decrypt.Decryption("b", (b"GET /x HTTP/1.1\r\n\r\n",)),
                                "c": decrypt.Decryption("c", error="not installed")})
    assert not check.agree and "DISAGREE" in check.format() and "c            could not run" in check.format()


def test_a_method_that_finds_nothing_in_one_connection_is_a_gap_not_a_disagreement():
    check = decrypt.CrossCheck({"scapy": decrypt.Decryption("scapy", (b"one", b"")),
                                "keyschedule": decrypt.Decryption("keyschedule", (b"one", b"two"))})
    assert check.agree and check.requests == (b"one", b"two") and check.gaps == [(2, "scapy")]
    assert "resumed TLS 1.2" in check.format()


def test_dissect_names_the_tunnel_and_its_tls():
    bundle = load_example("forward", "1.3")
    (dissection,) = dissect_all(bundle.connections("client"), bundle.keys_log)
    assert dissection.protocol == "tunnel+tls1.3" and dissection.decrypted
    assert dissection.records["client"][0].names[0].startswith("CONNECT www.example.test:")
    assert dissection.records["client"][1].names == ("ClientHello",)
    assert dissection.client_hello.server_name == "www.example.test"
    prefix = split_http_prefix(dissection.connection.stream("client"))
    assert dissection.connection.stream("client")[prefix:prefix + 1] == b"\x16"


def test_forward_secrecy_lesson_from_the_bundled_capture():
    require_tool("tshark")
    result = analyse_lesson(example_lesson())
    assert result.decrypted("static-rsa") and not result.decrypted("ecdhe")
    static = result.checks["static-rsa"]
    assert set(static.ran) == {"scapy", "keyschedule", "tshark"}
    assert static.requests[0].startswith(b"GET /account/statement?id=path-marker-7 HTTP/1.1\r\n")
    ecdhe = result.checks["ecdhe"]
    assert all(not any(r.client_data) for r in ecdhe.ran.values())
    assert "forward secrecy" in ecdhe.results["keyschedule"].notes[0]
