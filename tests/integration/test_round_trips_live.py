"""Round trips without root: the playground's delay line, traced handshakes, a live HelloRetryRequest.

What notebook 2 shows (step 4b): through ``Playground.delay`` a handshake costs
what it would at a distance, and ``openssl s_client -groups secp521r1:X25519`` (a key
share for P-521 only, which the proxy's Mozilla-intermediate groups refuse) earns a
HelloRetryRequest, seen in the proxy's own trace and costing one more round trip.
Timing assertions are lower bounds (the line never delivers early) with generous
upper ones; the round-trip *counts* come from the traces.
"""

from __future__ import annotations

import pytest

from course.handshakes import openssl_request, request_context, round_trips, traced_request, tracing
from course.playground import Playground
from tests.conftest import tlsproxy
from tests.tools import require_tool

WWW = "www.example.test"
RTT = 0.040
SLACK = 0.002


@pytest.fixture
def lab(pki, tmp_path):
    with Playground(f"round-trips-{tmp_path.name}", certs_dir=pki.directory) as playground:
        web = playground.origin("web")
        playground.proxy("proxy", pools={"web": [web]}, certs=[WWW])
        yield playground


def proxy_context(lab):
    return next(iter(lab.proxies["proxy"].server.tls_contexts.values()))


def test_through_the_line_tls13_waits_one_round_trip_and_tls12_two(lab):
    wan = lab.delay("wan", lab.proxies["proxy"], rtt=RTT)
    client13, client12 = request_context(lab.pki.ca), request_context(lab.pki.ca, tls="1.2")
    full13 = traced_request(wan, WWW, context=client13)
    resumed13 = traced_request(wan, WWW, context=client13, session=full13.session)
    full12 = traced_request(wan, WWW, context=client12)
    assert full13.status_line == "HTTP/1.1 200 OK" and resumed13.session_reused
    assert (full13.round_trips, resumed13.round_trips, full12.round_trips) == (1, 1, 2)
    assert full13.request_at >= RTT - SLACK and resumed13.request_at >= RTT - SLACK
    assert full12.request_at >= 2 * RTT - SLACK
    # the whole request: the handshake's round trip(s), then one for the request and its response
    assert full13.elapsed >= 2 * RTT - SLACK and full12.elapsed >= 3 * RTT - SLACK
    assert max(full13.elapsed, full12.elapsed) < 5.0


def test_without_the_line_loopback_has_no_distance(lab):
    direct = traced_request(lab.proxies["proxy"], WWW, ca=lab.pki.ca)
    assert direct.round_trips == 1 and direct.request_at < RTT


def test_a_p521_key_share_earns_a_hello_retry_request(lab):
    require_tool("openssl")
    with tracing(proxy_context(lab)) as seen:
        done = openssl_request(lab.proxies["proxy"], WWW, ca=lab.pki.ca)
    assert done.returncode == 0 and done.status_line == "HTTP/1.1 200 OK", done.output
    messages = seen.handshake_messages()
    assert messages[:3] == ["ClientHello", "HelloRetryRequest", "ClientHello"], messages
    assert messages.count("ServerHello") == 1 and round_trips(seen) == 2


def test_an_x25519_key_share_is_taken_at_once(lab):
    require_tool("openssl")
    with tracing(proxy_context(lab)) as seen:
        done = openssl_request(lab.proxies["proxy"], WWW, ca=lab.pki.ca, groups="X25519:secp521r1")
    assert done.returncode == 0, done.output
    assert "HelloRetryRequest" not in seen.handshake_messages() and round_trips(seen) == 1


def test_the_retry_costs_one_more_round_trip_through_the_line(lab):
    """In the proxy's own trace: from the first ClientHello to the client's Finished is one
    RTT without a retry and two with one."""
    require_tool("openssl")
    wan = lab.delay("wan", lab.proxies["proxy"], rtt=RTT)

    def hello_to_finished(groups: str) -> float:
        with tracing(proxy_context(lab)) as seen:
            assert openssl_request(wan, WWW, ca=lab.pki.ca, groups=groups).returncode == 0
        hello = next(e for e in seen if e.kind == "handshake" and e.name == "ClientHello")
        finished = next(e for e in seen if e.kind == "handshake" and e.name == "Finished" and e.sender == "client")
        return finished.time - hello.time

    assert hello_to_finished("X25519") >= RTT - SLACK
    assert hello_to_finished("secp521r1:X25519") >= 2 * RTT - SLACK


def test_a_delay_line_can_stand_in_a_pool_for_its_origin(lab):
    web = lab.origins["web"]
    behind = lab.delay("to-origin", web, rtt=0.020)
    assert behind.url == f"http://127.0.0.1:{behind.port}"
    proxy = lab.proxy("far", pools={"web": [behind]}, certs=[WWW])
    reply = traced_request(proxy, WWW, ca=lab.pki.ca)
    assert reply.status_line == "HTTP/1.1 200 OK" and reply.elapsed >= 0.020 - SLACK
    assert "delay lines" in repr(lab)
    lab.stop()
    assert lab.delays == {}


def test_demo_with_rtt_shows_what_each_request_took(tmp_path):
    proc = tlsproxy("demo", "--once", "--port", "0", "--certs", str(tmp_path / "certs"), "--rtt", "40",
                    "--backend-rtt", "10")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    took = [float(line.split()[1]) for line in out.splitlines() if line.strip().startswith("took")]
    assert len(took) == 5 and min(took) >= 3 * 40, out      # handshake, request, polite close
    assert "delay line" in out and "-groups secp521r1:X25519" in out
