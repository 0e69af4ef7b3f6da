"""The notebooks' clients on real sockets: what each way of asking reports, from both ends."""

from __future__ import annotations

import ssl

import pytest

from course.clients import http_get, https_get, tunnel_get
from course.playground import Playground
from proxy.policy import ForwardPolicy, Rule

WWW, ORIGIN = "www.example.test", "origin.example.test"


@pytest.fixture
def lab(pki):
    playground = Playground("test-playground", certs_dir=pki.directory)
    yield playground
    playground.stop()


def test_reverse_proxy_reply_shows_the_proxys_certificate_and_what_the_origin_saw(lab):
    app = lab.origin("app")
    proxy = lab.proxy("reverse", pools={"app": [app]})
    reply = https_get(proxy, WWW, "/account?id=7", ca=lab.pki.ca)
    assert reply.status == 200 and reply.origin == "app"
    assert reply.connected_to == f"127.0.0.1:{proxy.port}"
    assert reply.tls.certificate == WWW and reply.tls.version in ("TLSv1.2", "TLSv1.3")
    assert WWW in reply.tls.names and ORIGIN not in reply.tls.names  # the subjectAltName it was checked against
    assert reply.json["path"] == "/account?id=7" and reply.json["tls"] is None  # offloaded: plain HTTP
    assert reply.seen_header("X-Forwarded-For") == "127.0.0.1"
    line = proxy.log.wait_for("GET /account?id=7")
    assert f"backend={app.url}" in line


def test_tunnel_reply_shows_the_origins_certificate_and_a_refusal_keeps_the_proxys_reason(lab):
    origin = lab.origin("tls-app", tls=ORIGIN)
    policy = ForwardPolicy.build(rules=[Rule.parse("deny dst=169.254.0.0/16"), Rule.parse("allow dst=127.0.0.0/8")],
                                 connect_ports=[443, origin.port], hosts={ORIGIN: "127.0.0.1"})
    forward = lab.proxy("forward", mode="forward", forward_policy=policy)
    reply = tunnel_get(forward, f"{ORIGIN}:{origin.port}", "/x", ca=lab.pki.ca)
    assert (reply.connect_status, reply.status, reply.origin) == (200, 200, "tls-app")
    assert reply.connected_to == f"127.0.0.1:{forward.port}"  # TCP to the proxy, TLS with the origin
    assert reply.tls.certificate == ORIGIN
    assert reply.json["tls"]["version"] == reply.tls.version and reply.seen_header("X-Forwarded-For") is None
    assert "ended='closed'" in forward.log.wait_for("CONNECT origin.example.test")  # a clean end, no reset

    refused = tunnel_get(forward, "169.254.169.254:443", ca=lab.pki.ca)
    assert refused.connect_status == refused.status == 403 and refused.tls is None
    assert "denied by rule 1: deny dst=169.254.0.0/16" in refused.text


def test_http_get_sends_absolute_form_to_a_forward_proxy(lab):
    app = lab.origin("app")
    forward = lab.proxy("forward", mode="forward")  # the default policy: loopback only
    reply = http_get(forward, f"{app.url}/here")
    assert reply.status == 200 and reply.json["path"] == "/here"
    assert reply.seen_header("Via") == "1.1 tlsproxy"


def test_client_certificate_reaches_a_mutual_tls_origin(lab):
    origin = lab.origin("mtls", tls=ORIGIN, require_client_cert=True)
    reply = https_get(origin, ORIGIN, ca=lab.pki.ca, client_cert=lab.pki.files("proxy-client"))
    assert reply.json["tls"]["client_cert_subject"] == "CN=proxy-client"
    with pytest.raises((ssl.SSLError, OSError)):
        https_get(origin, ORIGIN, ca=lab.pki.ca)
