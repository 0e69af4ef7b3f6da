"""The notebooks' servers on real sockets: named restarts, extra certificates, a slow origin."""

from __future__ import annotations

import time

import pytest

from proxy import config as cfg
from course.clients import http_get, https_get
from proxy.errors import ConfigError
from course.origin import Origin
from course.playground import Playground

WWW = "www.example.test"


@pytest.fixture
def lab(pki):
    playground = Playground("test-playground", certs_dir=pki.directory)
    yield playground
    playground.stop()


def test_issue_makes_a_second_certificate_for_the_same_name(lab):
    cert, key = lab.issue(WWW)
    origin = lab.origin("www-origin", cert=cert, key=key)
    direct = https_get(origin, WWW, ca=lab.pki.ca)
    via_proxy = https_get(lab.proxy("reverse", pools={"app": [origin]},
                                    backend_tls=cfg.BackendTLS(ca=str(lab.pki.ca), server_name=WWW)),
                          WWW, ca=lab.pki.ca)
    assert direct.tls.certificate == via_proxy.tls.certificate == WWW
    assert direct.tls.fingerprint != via_proxy.tls.fingerprint  # same name, other bytes, other key


def test_restarting_a_name_stops_the_old_server_and_a_new_playground_stops_the_old_one(lab, pki):
    first = lab.origin("web")
    again = lab.origin("web")
    assert first._server is None and again._server is not None
    old_proxy = lab.proxy("p", pools={"web": [again]})
    replacement = Playground("test-playground", certs_dir=pki.directory)  # the setup cell ran again
    try:
        assert old_proxy.server.stopped.is_set() and again._server is None
        assert lab.origins == {} and lab.proxies == {}
    finally:
        replacement.stop()


def test_origin_latency_delays_every_answer(lab):
    slow = lab.origin("slow", latency=0.3)
    started = time.monotonic()
    assert http_get(slow, "/health").status == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ConfigError):
        Origin("bad", latency=-1)
