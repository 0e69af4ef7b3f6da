"""The forward proxy's destination policy: who may go where through it.

Theory of operation
-------------------
A forward proxy connects *anywhere it is told to*, from *its own* address.  Open to
everyone, it becomes an open relay: spam sent through CONNECT to port 25, attacks
that appear to come from the proxy's network, and, worst, requests from outside to
the inside (``http://10.0.0.5/admin``, the cloud metadata service at
``169.254.169.254``): server-side request forgery.  So nothing passes unless a rule
says so, and the defaults allow only loopback.

A request is checked in three steps, each with its own answer::

    port  ──▶ CONNECT only to ``connect_ports`` (default 443, 8443), absolute-form
              HTTP only to ``http_ports`` (default 80 and 1025-65535)     ── 403
    name  ──▶ resolve: IP literal, a static ``hosts`` entry, or DNS       ── 502
    rules ──▶ each resolved address against the rules, first match wins;
              an implicit last rule ``deny all`` closes the list          ── 403

A rule is one line, the same in TOML, on the command line and in a 403 body::

    allow src=10.1.0.0/16 host=*.example.test dst=127.0.0.0/8 port=443,8000-8999
    deny dst=0.0.0.0/0

``src`` is the client's network, ``host`` a glob on the name the client asked for,
``dst`` the network of the *resolved* address, ``port`` ports or ranges.  A rule
matches when every criterion it has matches; ``allow all`` / ``deny all`` match
everything.

Why the address, not the name
-----------------------------
Names lie.  ``localtest.me`` resolves to 127.0.0.1; ``167772161`` is 10.0.0.1 to
``getaddrinfo`` (the BSD ``inet_aton`` forms: decimal, octal ``012.0.0.1``, hex);
``::ffff:10.0.0.1`` is 10.0.0.1 in IPv6 clothing; and a name the attacker controls
can answer with a public address when checked and a private one a second later
(DNS rebinding).  So the policy checks the *addresses* a name resolves to, after
normalising them (IPv4-mapped IPv6 becomes IPv4), and the proxy then connects to
exactly those checked addresses, never to the name, so no second lookup can
substitute another.  Squid's ``to_localhost`` ACL and Stripe's smokescreen work the
same way.  ``host=`` globs are for *naming* what to allow; to keep a network out,
write a ``dst=`` rule, which no spelling of a name can dodge.

The checks here are pure (resolution is a function passed in), so
``tests/unit/test_policy.py`` runs them without a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Union

from proxy.errors import BadGateway, ConfigError, Forbidden

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Resolver = Callable[[str, int], list[str]]
ACTIONS = ("allow", "deny")


# --------------------------------------------------------------------------- values
def normalize_address(text: str) -> IPAddress:
    """``'::ffff:10.0.0.1'`` -> IPv4Address('10.0.0.1'); drops an IPv6 zone (``%lo``)."""
    address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def normalize_name(host: str) -> str:
    """What ``host=`` globs see: lower case, no brackets, no trailing dot (``Example.TEST.``
    and ``example.test`` must not be two names, or a deny rule on one is bypassed by the other)."""
    return host.strip().strip("[]").lower().rstrip(".")


def parse_network(text: str, *, where: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a network (e.g. 127.0.0.0/8 or ::1/128)") from None


@dataclass(frozen=True)
class PortSet:
    """Ports and ranges: ``PortSet.parse([443, "8000-8999"])``."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, values: Iterable[int | str] | str, *, where: str = "ports") -> PortSet:
        if isinstance(values, (str, int)):
            values = str(values).split(",")
        ranges = []
        for value in values:
            text = str(value).strip()
            low, _, high = text.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ConfigError(f"{where}: {value!r} is not a port or a range like 8000-8999")
            first, last = int(low), int(high or low)
            if not 1 <= first <= last <= 65535:
                raise ConfigError(f"{where}: {value!r} is not within 1-65535")
            ranges.append((first, last))
        return cls(tuple(ranges))

    def __contains__(self, port: int) -> bool:
        return any(first <= port <= last for first, last in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """One line of the policy; empty criteria match anything."""

    action: str  # "allow" or "deny"
    src: tuple[IPNetwork, ...] = ()  # the client's network
    host: tuple[str, ...] = ()  # globs on the requested name (normalised)
    dst: tuple[IPNetwork, ...] = ()  # networks of the resolved destination address
    port: PortSet | None = None

    def matches(self, client: IPAddress, host: str, address: IPAddress, port: int) -> bool:
        return ((not self.src or _in_any(client, self.src))
                and (not self.host or any(fnmatchcase(host, glob) for glob in self.host))
                and (not self.dst or _in_any(address, self.dst))
                and (self.port is None or port in self.port))

    def __str__(self) -> str:
        parts = [self.action]
        if self.src:
            parts.append("src=" + ",".join(map(str, self.src)))
        if self.host:
            parts.append("host=" + ",".join(self.host))
        if self.dst:
            parts.append("dst=" + ",".join(map(str, self.dst)))
        if self.port is not None:
            parts.append(f"port={self.port}")
        return " ".join(parts) if len(parts) > 1 else f"{self.action} all"

    @classmethod
    def parse(cls, text: str, *, where: str = "rule") -> Rule:
        """``'allow src=127.0.0.0/8 dst=127.0.0.0/8 port=443'`` -> Rule (``str()`` gives it back)."""
        words = text.split()
        if not words or words[0] not in ACTIONS:
            raise ConfigError(f"{where}: {text!r} must start with allow or deny")
        criteria: dict[str, str] = {}
        for word in words[1:]:
            if word == "all":
                continue
            key, sep, value = word.partition("=")
            if not sep or not value:
                raise ConfigError(f"{where}: {word!r} is not key=value (src=, host=, dst=, port=)")
            criteria[key] = value
        return cls.from_table({"action": words[0], **criteria}, where=where)

    @classmethod
    def from_table(cls, table: dict[str, Any], *, where: str = "rule") -> Rule:
        unknown = sorted(set(table) - {"action", "src", "host", "dst", "port"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: action, src, host, dst, port)")
        action = table.get("action")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: action must be allow or deny, not {action!r}")

        def items(key: str) -> list[str]:
            value = table.get(key, ())
            return [v for v in (value.split(",") if isinstance(value, str) else map(str, value)) if v]

        return cls(
            action,
            src=tuple(parse_network(n, where=where) for n in items("src")),
            host=tuple(normalize_name(h) for h in items("host")),
            dst=tuple(parse_network(n, where=where) for n in items("dst")),
            port=PortSet.parse(items("port"), where=where) if "port" in table else None,
        )


def _in_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    # Compare versions first: ipaddress compares the integers, and 10.0.0.1 as an int
    # lies inside ::/96.
    return any(address.version == net.version and address in net for net in networks)


LOOPBACK_ONLY: tuple[Rule, ...] = (
    Rule("allow", dst=(ipaddress.ip_network("127.0.0.0/8"),)),
    Rule("allow", dst=(ipaddress.ip_network("::1/128"),)),
)
IMPLICIT_DENY = Rule("deny")
# Squid's `acl SSL_ports port 443`, plus 8443, where this lab's TLS listeners live.
DEFAULT_CONNECT_PORTS = PortSet.parse([443, 8443])
# Squid's Safe_ports, simplified: HTTP and the unprivileged ports.  Below 1024 sit
# SMTP (25), SSH (22) and friends: a text protocol can be spoken to them in a POST body.
DEFAULT_HTTP_PORTS = PortSet.parse([80, "1025-65535"])


@dataclass(frozen=True)
class Decision:
    allowed: bool
    number: int  # 1-based position of the rule that matched
    rule: Rule
    implicit: bool = False  # the final "deny all" nobody wrote

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        note = " (the implicit last rule)" if self.implicit else ""
        return f"{verdict} by rule {self.number}: {self.rule}{note}"


@dataclass(frozen=True)
class Destination:
    """Where a permitted request goes: the name asked for, and the checked addresses."""

    host: str
    port: int
    addresses: tuple[str, ...]  # connect to these, in order, and to nothing else
    decision: Decision


# --------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class ForwardPolicy:
    """Everything the ``[forward]`` section says (see the module docstring)."""

    rules: tuple[Rule, ...] = LOOPBACK_ONLY
    connect_ports: PortSet = DEFAULT_CONNECT_PORTS
    http_ports: PortSet = DEFAULT_HTTP_PORTS
    source_address: str | None = None  # outgoing connections start from this address
    hosts: dict[str, str] = field(default_factory=dict)  # static names, checked like DNS answers

    def decide(self, client: str, host: str, port: int, address: str) -> Decision:
        """The first rule matching (client, requested host, resolved address, port)."""
        client_ip, address_ip, name = normalize_address(client), normalize_address(address), normalize_name(host)
        for number, rule in enumerate(self.rules, start=1):
            if rule.matches(client_ip, name, address_ip, port):
                return Decision(rule.action == "allow", number, rule)
        return Decision(False, len(self.rules) + 1, IMPLICIT_DENY, implicit=True)

    def check_port(self, port: int, *, connect: bool) -> None:
        allowed = self.connect_ports if connect else self.http_ports
        if port not in allowed:
            what = "CONNECT" if connect else "an http:// request"
            raise Forbidden(f"{what} to port {port} is not allowed (allowed ports: {allowed})")

    def resolve(self, host: str, port: int, resolver: Resolver | None = None) -> list[str]:
        """The addresses to check for ``host``: the literal, a ``hosts`` entry, or DNS."""
        name = normalize_name(host)
        try:
            return [str(normalize_address(name))]
        except ValueError:
            pass
        if name in self.hosts:
            return [self.hosts[name]]
        return (resolver or system_resolver)(name, port)

    def authorize(self, client: str, host: str, port: int, *, connect: bool,
                  resolver: Resolver | None = None, close: bool = True) -> Destination:
        """Check port, resolve, check every address; raise Forbidden (403) or BadGateway (502)."""
        try:
            self.check_port(port, connect=connect)
        except Forbidden as error:
            error.close = close
            raise
        addresses = self.resolve(host, port, resolver)
        if not addresses:
            raise BadGateway(f"{host!r} resolved to no address")
        decisions = [self.decide(client, host, port, address) for address in addresses]
        allowed = [(str(normalize_address(a)), d) for a, d in zip(addresses, decisions) if d.allowed]
        if not allowed:
            name = normalize_name(host)
            shown = "" if name == addresses[0] else f" for {name}"
            raise Forbidden(f"{decisions[0]} (destination {addresses[0]} port {port}{shown})", close=close)
        return Destination(normalize_name(host), port, tuple(a for a, _ in allowed), allowed[0][1])

    def describe(self) -> list[str]:
        """The policy as numbered lines, for the start-up banner and notebooks."""
        lines = [f"rule {n}: {rule}" for n, rule in enumerate(self.rules, start=1)]
        lines.append(f"rule {len(self.rules) + 1}: {IMPLICIT_DENY} (implicit)")
        lines.append(f"CONNECT ports: {self.connect_ports}; http ports: {self.http_ports}")
        if self.source_address:
            lines.append(f"outgoing connections from {self.source_address}")
        return lines

    # ------------------------------------------------------------------ building
    @classmethod
    def from_table(cls, table: dict[str, Any], *, where: str = "forward") -> ForwardPolicy:
        """The ``[forward]`` TOML section."""
        known = {"rules", "connect_ports", "http_ports", "source_address", "hosts"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        rules = None
        if "rules" in table:
            rules = []
            for i, rule in enumerate(table["rules"]):
                w = f"{where}.rules[{i}]"
                rules.append(Rule.parse(rule, where=w) if isinstance(rule, str) else Rule.from_table(rule, where=w))
        return cls.build(rules=rules, connect_ports=table.get("connect_ports"),
                         http_ports=table.get("http_ports"), source_address=table.get("source_address"),
                         hosts=table.get("hosts"), where=where)

    @classmethod
    def build(cls, *, rules: Iterable[Rule] | None = None, connect_ports=None, http_ports=None,
              source_address: str | None = None, hosts: dict[str, str] | None = None,
              where: str = "forward") -> ForwardPolicy:
        if source_address is not None:
            try:
                source_address = str(normalize_address(source_address))
            except ValueError:
                raise ConfigError(f"{where}: source_address {source_address!r} is not an IP address") from None
        checked_hosts = {}
        for name, address in (hosts or {}).items():
            try:
                checked_hosts[normalize_name(name)] = str(normalize_address(address))
            except (ValueError, AttributeError):
                raise ConfigError(f"{where}: hosts entry {name!r} = {address!r} is not an IP address") from None
        return cls(
            rules=LOOPBACK_ONLY if rules is None else tuple(rules),
            connect_ports=DEFAULT_CONNECT_PORTS if connect_ports is None else
            PortSet.parse(connect_ports, where=f"{where}.connect_ports"),
            http_ports=DEFAULT_HTTP_PORTS if http_ports is None else
            PortSet.parse(http_ports, where=f"{where}.http_ports"),
            source_address=source_address,
            hosts=checked_hosts,
        )


def system_resolver(host: str, port: int) -> list[str]:
    """``getaddrinfo``'s addresses for ``host``, in its order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise BadGateway(f"cannot resolve {host!r}: {getattr(error, 'strerror', None) or error}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses
