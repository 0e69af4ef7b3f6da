"""The forward proxy's destination policy: pure decisions, no network (resolution is injected)."""

from __future__ import annotations

import pytest

from proxy.errors import BadGateway, ConfigError, Forbidden
from proxy.policy import ForwardPolicy, PortSet, Rule, normalize_address, normalize_name


def resolver(table):
    """A fake DNS: name -> addresses; an unknown name fails like getaddrinfo would."""
    def resolve(host, port):
        if host not in table:
            raise BadGateway(f"cannot resolve {host!r}")
        return list(table[host])
    return resolve


# --------------------------------------------------------------------------- rules as text
@pytest.mark.parametrize("text", [
    "allow dst=127.0.0.0/8",
    "deny all",
    "allow src=10.1.0.0/16 host=*.example.test dst=127.0.0.0/8 port=443,8000-8999",
    "deny src=192.0.2.0/24,198.51.100.0/24 dst=::1/128",
])
def test_rule_text_round_trips(text):
    assert str(Rule.parse(text)) == text


def test_rule_text_is_normalised():
    rule = Rule.parse("allow host=*.EXAMPLE.test. dst=127.0.0.1 port=443")
    assert str(rule) == "allow host=*.example.test dst=127.0.0.1/32 port=443"


@pytest.mark.parametrize("text, complaint", [
    ("permit dst=127.0.0.0/8", "must start with allow or deny"),
    ("allow dst", "is not key=value"),
    ("allow dst=localhost", "is not a network"),
    ("allow port=0", "within 1-65535"),
    ("allow port=9000-80", "within 1-65535"),
    ("allow port=https", "is not a port"),
    ("allow via=1.2.3.4", "unknown key 'via'"),
])
def test_bad_rules_are_config_errors(text, complaint):
    with pytest.raises(ConfigError, match=complaint):
        Rule.parse(text)


def test_port_set():
    ports = PortSet.parse([443, "8000-8999"])
    assert 443 in ports and 8000 in ports and 8999 in ports
    assert 80 not in ports and 9000 not in ports
    assert str(ports) == "443,8000-8999"
    assert str(PortSet.parse("80,1025-65535")) == "80,1025-65535"


# --------------------------------------------------------------------------- decisions
def test_default_allows_only_loopback():
    policy = ForwardPolicy()
    assert policy.decide("127.0.0.1", "localhost", 80, "127.0.0.1").allowed
    assert policy.decide("127.0.0.1", "localhost", 80, "127.9.9.9").allowed
    assert policy.decide("127.0.0.1", "localhost", 80, "::1").allowed
    for outside in ("10.0.0.1", "192.168.1.1", "169.254.169.254", "8.8.8.8", "::2", "fe80::1"):
        decision = policy.decide("127.0.0.1", outside, 80, outside)
        assert not decision.allowed, outside
        assert str(decision) == "denied by rule 3: deny all (the implicit last rule)"


def test_first_match_wins_and_names_the_rule():
    policy = ForwardPolicy.build(rules=[
        Rule.parse("deny dst=127.0.0.66"),
        Rule.parse("allow dst=127.0.0.0/8"),
        Rule.parse("deny dst=0.0.0.0/0"),
    ])
    assert str(policy.decide("127.0.0.1", "x", 80, "127.0.0.66")) == "denied by rule 1: deny dst=127.0.0.66/32"
    assert str(policy.decide("127.0.0.1", "x", 80, "127.0.0.5")) == "allowed by rule 2: allow dst=127.0.0.0/8"
    assert str(policy.decide("127.0.0.1", "x", 80, "10.0.0.1")) == "denied by rule 3: deny dst=0.0.0.0/0"
    # IPv6 does not match an IPv4 rule: it falls through to the implicit deny.
    assert policy.decide("127.0.0.1", "x", 80, "::1").implicit


def test_every_criterion_of_a_rule_must_match():
    rule = Rule.parse("allow src=127.0.0.1 host=*.example.test dst=127.0.0.0/8 port=443")
    policy = ForwardPolicy.build(rules=[rule])
    assert policy.decide("127.0.0.1", "www.example.test", 443, "127.0.0.1").allowed
    assert not policy.decide("127.0.0.2", "www.example.test", 443, "127.0.0.1").allowed  # client
    assert not policy.decide("127.0.0.1", "www.example.org", 443, "127.0.0.1").allowed  # name
    assert not policy.decide("127.0.0.1", "www.example.test", 443, "10.0.0.1").allowed  # address
    assert not policy.decide("127.0.0.1", "www.example.test", 8443, "127.0.0.1").allowed  # port


def test_ipv4_mapped_ipv6_is_checked_as_ipv4():
    # ::ffff:10.0.0.1 *is* 10.0.0.1 on a dual-stack socket; it must not slip past IPv4 rules.
    assert str(normalize_address("::ffff:10.0.0.1")) == "10.0.0.1"
    policy = ForwardPolicy.build(rules=[Rule.parse("deny dst=10.0.0.0/8"), Rule.parse("allow all")])
    assert str(policy.decide("127.0.0.1", "x", 80, "::ffff:10.0.0.1")) == "denied by rule 1: deny dst=10.0.0.0/8"
    # An IPv4 address is not inside ::/96 just because its integer is small.
    v6_only = ForwardPolicy.build(rules=[Rule.parse("allow dst=::/96")])
    assert not v6_only.decide("127.0.0.1", "x", 80, "10.0.0.1").allowed


def test_trailing_dot_and_case_do_not_make_a_new_name():
    assert normalize_name("Admin.Example.TEST.") == "admin.example.test"
    policy = ForwardPolicy.build(rules=[Rule.parse("deny host=admin.example.test"), Rule.parse("allow all")])
    assert not policy.decide("127.0.0.1", "ADMIN.example.test.", 80, "127.0.0.1").allowed


# --------------------------------------------------------------------------- authorize: ports, names
def test_connect_only_to_allowed_ports():
    policy = ForwardPolicy()
    policy.authorize("127.0.0.1", "127.0.0.1", 443, connect=True)
    policy.authorize("127.0.0.1", "127.0.0.1", 8443, connect=True)
    with pytest.raises(Forbidden, match=r"CONNECT to port 22 is not allowed \(allowed ports: 443,8443\)"):
        policy.authorize("127.0.0.1", "127.0.0.1", 22, connect=True)
    with pytest.raises(Forbidden, match="port 25 is not allowed"):
        policy.authorize("127.0.0.1", "127.0.0.1", 25, connect=False)
    policy.authorize("127.0.0.1", "127.0.0.1", 8080, connect=False)


def test_the_resolved_address_is_checked_not_the_name():
    # DNS rebinding / a name pointing inside: "www.example.test" looks harmless.
    policy = ForwardPolicy.build(rules=[Rule.parse("allow host=*.example.test dst=127.0.0.0/8")])
    dns = resolver({"www.example.test": ["10.0.0.7"], "good.example.test": ["127.0.0.1"]})
    with pytest.raises(Forbidden) as refused:
        policy.authorize("127.0.0.1", "www.example.test", 443, connect=True, resolver=dns)
    assert str(refused.value) == ("denied by rule 2: deny all (the implicit last rule) "
                                  "(destination 10.0.0.7 port 443 for www.example.test)")
    assert refused.value.status == 403
    good = policy.authorize("127.0.0.1", "good.example.test", 443, connect=True, resolver=dns)
    assert good.addresses == ("127.0.0.1",)


def test_only_the_checked_addresses_are_returned():
    # A name with one inside and one outside address: the proxy may use only the allowed one.
    policy = ForwardPolicy()
    dns = resolver({"mixed.example.test": ["10.0.0.7", "127.0.0.1", "::ffff:127.0.0.2"]})
    destination = policy.authorize("127.0.0.1", "mixed.example.test", 443, connect=True, resolver=dns)
    assert destination.addresses == ("127.0.0.1", "127.0.0.2")
    assert str(destination.decision) == "allowed by rule 1: allow dst=127.0.0.0/8"


def test_static_hosts_are_checked_like_dns_answers():
    policy = ForwardPolicy.build(hosts={"WWW.example.test": "127.0.0.1", "evil.example.test": "10.9.9.9"})
    fail = resolver({})
    www = policy.authorize("127.0.0.1", "www.example.test", 443, connect=True, resolver=fail)
    assert www.addresses == ("127.0.0.1",)
    with pytest.raises(Forbidden, match="destination 10.9.9.9"):
        policy.authorize("127.0.0.1", "evil.example.test", 443, connect=True, resolver=fail)


def test_ip_literals_are_never_sent_to_the_resolver():
    policy = ForwardPolicy()
    fail = resolver({})
    assert policy.authorize("127.0.0.1", "[::1]", 443, connect=True, resolver=fail).addresses == ("::1",)
    with pytest.raises(Forbidden):
        policy.authorize("127.0.0.1", "[::ffff:10.0.0.1]", 443, connect=True, resolver=fail)
    with pytest.raises(BadGateway, match="cannot resolve"):
        policy.authorize("127.0.0.1", "nowhere.example.test", 443, connect=True, resolver=fail)


def test_forbidden_carries_the_close_decision():
    with pytest.raises(Forbidden) as refused:
        ForwardPolicy().authorize("127.0.0.1", "10.0.0.1", 80, connect=False, close=False)
    assert refused.value.close is False


# --------------------------------------------------------------------------- the [forward] table
def test_from_table():
    policy = ForwardPolicy.from_table({
        "rules": ["deny dst=127.0.0.9", {"action": "allow", "dst": ["127.0.0.0/8"], "port": [443, "9000-9999"]}],
        "connect_ports": [443, "9440-9449"],
        "source_address": "127.0.0.2",
        "hosts": {"www.example.test": "127.0.0.1"},
    })
    assert [str(r) for r in policy.rules] == ["deny dst=127.0.0.9/32", "allow dst=127.0.0.0/8 port=443,9000-9999"]
    assert 9445 in policy.connect_ports and 8443 not in policy.connect_ports
    assert policy.source_address == "127.0.0.2"
    assert policy.describe()[-2:] == ["CONNECT ports: 443,9440-9449; http ports: 80,1025-65535",
                                      "outgoing connections from 127.0.0.2"]


@pytest.mark.parametrize("table, complaint", [
    ({"rulez": []}, "unknown key 'rulez'"),
    ({"source_address": "localhost"}, "is not an IP address"),
    ({"hosts": {"www.example.test": "www.example.org"}}, "is not an IP address"),
    ({"rules": [{"action": "allow", "dst": "nowhere"}]}, "is not a network"),
    ({"connect_ports": ["x"]}, "is not a port"),
])
def test_bad_tables(table, complaint):
    with pytest.raises(ConfigError, match=complaint):
        ForwardPolicy.from_table(table)
