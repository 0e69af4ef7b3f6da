"""Routing and balancing: pure logic, no sockets."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from proxy import config as cfg
from proxy.balancer import Balancer
from proxy.errors import ServiceUnavailable
from proxy.routing import Router, normalize_host


def backends(*ports, weights=None):
    weights = weights or [1] * len(ports)
    return [cfg.parse_backend({"url": f"http://127.0.0.1:{p}", "weight": w}, where="t") for p, w in zip(ports, weights)]


@pytest.mark.parametrize("raw, expected", [
    ("WWW.Example.TEST", "www.example.test"), ("www.example.test:8443", "www.example.test"),
    ("www.example.test.", "www.example.test"), ("[::1]:8443", "::1"), (None, ""),
])
def test_normalize_host(raw, expected):
    assert normalize_host(raw) == expected


def test_most_specific_route_wins():
    router = Router((
        cfg.RouteConfig("any"),
        cfg.RouteConfig("wild", host="*.example.test"),
        cfg.RouteConfig("www", host="www.example.test"),
        cfg.RouteConfig("api", host="www.example.test", path="/api"),
    ))
    assert router.route("www.example.test", "/") == "www"
    assert router.route("www.example.test", "/api") == "api"
    assert router.route("www.example.test", "/api/users") == "api"
    assert router.route("www.example.test", "/apiary") == "www"  # prefixes match whole segments
    assert router.route("shop.example.test", "/api") == "wild"
    assert router.route("example.test", "/") == "any"  # *.example.test does not match the bare domain
    assert router.route("other.org", "/") == "any"


def test_no_route_is_none():
    assert Router((cfg.RouteConfig("www", host="www.example.test"),)).route("other", "/") is None


def test_sni_routing():
    router = Router((cfg.RouteConfig("a", sni="a.example.test"), cfg.RouteConfig("d", host="*")))
    assert router.route_sni("A.example.test") == "a"
    assert router.route_sni("b.example.test") == "d"
    assert router.route_sni(None) == "d"


def test_round_robin_skips_down_backends():
    balancer = Balancer("p", backends(1, 2, 3))
    picks = [balancer.pick().port for _ in range(6)]
    assert picks == [1, 2, 3, 1, 2, 3]
    balancer.report_failure(balancer.backends[1], "refused")
    assert {balancer.pick().port for _ in range(6)} == {1, 3}


def test_failed_backend_returns_after_fail_timeout():
    balancer = Balancer("p", backends(1, 2), health=cfg.HealthConfig(fail_timeout=0.05))
    balancer.report_failure(balancer.backends[0], "refused")
    assert {balancer.pick().port for _ in range(4)} == {2}
    time.sleep(0.06)
    assert {balancer.pick().port for _ in range(4)} == {1, 2}


def test_all_down_is_503():
    balancer = Balancer("p", backends(1))
    balancer.report_failure(balancer.backends[0], "refused")
    with pytest.raises(ServiceUnavailable) as info:
        balancer.pick()
    assert info.value.status == 503


def test_least_connections_prefers_the_idle_backend():
    balancer = Balancer("p", backends(1, 2), "least_connections")
    busy = balancer.pick()  # in flight, never released
    for _ in range(5):
        b = balancer.pick()
        assert b.port != busy.port
        balancer.release(b)


def test_smooth_weighted_spreads_like_nginx():
    balancer = Balancer("p", backends(1, 2, 3, weights=[5, 1, 1]), "weighted")
    picks = [balancer.pick().port for _ in range(7)]
    assert Counter(picks) == {1: 5, 2: 1, 3: 1}
    assert picks == [1, 1, 2, 1, 3, 1, 1]  # nginx's sequence for 5:1:1: never five in a row


def test_config_rejects_unknown_keys_and_missing_pools(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[listeners]]\nlisten = "127.0.0.1:1"\nmode = "forward"\nport = 3\n')
    with pytest.raises(cfg.ConfigError, match="unknown key 'port'"):
        cfg.load(str(bad))
    bad.write_text('[[listeners]]\nlisten = "127.0.0.1:1"\nmode = "forward"\n'
                   '[[pools]]\nname = "a"\nbackends = ["http://127.0.0.1:2"]\n[[routes]]\npool = "b"\n')
    with pytest.raises(cfg.ConfigError, match="no pool has that name"):
        cfg.load(str(bad))


@pytest.mark.parametrize("text", ["8443", "localhost", "host:port", "1.2.3.4:99999"])
def test_bad_listen_addresses(text):
    with pytest.raises(cfg.ConfigError, match="expected HOST:PORT"):
        cfg.parse_address(text)


def test_example_config_loads(tmp_path):
    # the example refers to ../../certs: make them where it expects them, in a copy
    from proxy.pki import write_certs
    (tmp_path / "lab" / "configs").mkdir(parents=True)
    from tests.conftest import REPO
    source = (REPO / "lab" / "configs" / "terminate.toml").read_text()
    target = tmp_path / "lab" / "configs" / "terminate.toml"
    target.write_text(source)
    write_certs(tmp_path / "certs", ["www.example.test", "api.example.test"])
    config = cfg.load(str(target))
    assert [p.name for p in config.pools] == ["web", "api"]
    assert config.pools[0].health.path == "/health"
    assert len(config.listeners[0].certs) == 2


def test_a_strategy_can_be_named_as_module_and_class():
    balancer = Balancer("p", backends(1, 2), "proxy.balancer:RoundRobin")
    assert [balancer.pick().port for _ in range(3)] == [1, 2, 1]
    with pytest.raises(KeyError, match="not a proxy.balancer.Strategy"):
        Balancer("p", backends(1), "proxy.balancer:Backend")
