"""course.handshakes on real handshakes: requests through the terminating proxy traced
from both ends, full vs resumed, TLS 1.2 vs 1.3, and the handshake-cost loop."""

from __future__ import annotations

import pytest

from course.handshakes import handshake_cost, request_context, traced_request, tracing
from tests.conftest import WWW

RSA = "www-rsa.example.test"


@pytest.fixture
def proxy(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    return proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW), pki.files(RSA)])


def test_tls13_full_then_resumed_through_the_proxy(pki, proxy):
    context = request_context(pki.ca)
    first = traced_request(("127.0.0.1", proxy.port), WWW, context=context)
    assert first.status_line == "HTTP/1.1 200 OK" and first.version == "TLSv1.3"
    assert not first.session_reused and first.round_trips == 1
    assert "Certificate" in first.flights[1].messages and first.certificate[:1] == b"\x30"   # DER SEQUENCE
    again = traced_request(("127.0.0.1", proxy.port), WWW, context=context, session=first.session)
    assert again.session_reused and again.trace.is_resumed and again.round_trips == 1
    assert "Certificate" not in again.flights[1].messages


def test_tls12_full_is_two_round_trips_and_resumed_is_one(pki, proxy):
    context = request_context(pki.ca, tls="1.2")
    first = traced_request(("127.0.0.1", proxy.port), WWW, context=context)
    assert first.version == "TLSv1.2" and first.round_trips == 2
    assert first.flights[1].messages == ("ServerHello", "Certificate", "ServerKeyExchange", "ServerHelloDone")
    again = traced_request(("127.0.0.1", proxy.port), WWW, context=context, session=first.session)
    assert again.session_reused and again.round_trips == 1


def test_tracing_the_proxys_context(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW)])
    context = next(iter(proxy.tls_contexts.values()))
    with tracing(context) as server_trace:
        client = traced_request(("127.0.0.1", proxy.port), WWW, ca=pki.ca)
    assert server_trace.side == "server" and server_trace.is_complete
    handshake = [name for _, name in server_trace.message_flow() if not name.startswith("Alert")]
    assert handshake[:8] == [name for _, name in client.trace.message_flow()][:8]
    assert getattr(context, "_msg_callback", None) is None          # detached again


def test_handshake_cost_counts_every_handshake_and_rsa_costs_the_server_more(pki):
    ecdsa = handshake_cost(*pki.files(WWW), ca=pki.ca, server_name=WWW, count=40)
    rsa = handshake_cost(*pki.files(RSA), ca=pki.ca, server_name=RSA, count=40)
    tls12 = handshake_cost(*pki.files(WWW), ca=pki.ca, server_name=WWW, count=5, tls="1.2")
    assert len(ecdsa.server_cpu_us) == len(ecdsa.client_cpu_us) == len(ecdsa.wall_us) == 40
    assert (ecdsa.version, tls12.version) == ("TLSv1.3", "TLSv1.2")
    # An RSA-2048 signature costs ~200 µs, an ECDSA P-256 one ~15 µs (openssl speed, FACTS.md).
    assert rsa.server_cpu > ecdsa.server_cpu
    assert ecdsa.wall < 20_000          # no 40 ms Nagle stalls
    with pytest.raises(ValueError):
        handshake_cost(*pki.files(WWW), ca=pki.ca, server_name=WWW, count=0)
