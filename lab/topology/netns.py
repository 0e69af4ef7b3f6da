"""A lab network made of Linux network namespaces: client, proxy and origin as real hosts.

Theory of operation
-------------------
On loopback every program shares one IP address, so "the origin saw the proxy's
address, not the client's" cannot be shown there.  A *network namespace* is a
private copy of the kernel's network stack (interfaces, addresses, routes,
sockets, sysctls).  Three of them make three hosts, and a *veth pair* (two
virtual interfaces joined like the two ends of a cable) links two hosts::

      client                       proxy                        origin
    ┌──────────┐  198.18.1.0/24  ┌──────────┐  198.18.2.0/24  ┌──────────┐
    │ to-proxy ├─────────────────┤ to-client│                 │          │
    │   .10    │                 │   .20    │                 │          │
    │          │                 │ to-origin├─────────────────┤ to-proxy │
    │          │                 │   .20    │                 │   .30    │
    └──────────┘                 └──────────┘                 └──────────┘

The third octet names the link, the last one the host (client .10, proxy .20,
origin .30, region .40), so ``198.18.2.20`` reads "the proxy, on the origin link".

No host has a default route and forwarding is off everywhere (written as 0
explicitly: a new namespace copies the IPv4 settings of the machine it runs on,
and a Docker host forwards).  So the client has no path to the origin's network:
``connect()`` fails at once with ENETUNREACH, "Network is unreachable".  The proxy
is an *application-level* proxy, not a router: a byte reaches the origin only when
a program in the proxy namespace reads it and writes it on another socket, and the
origin then sees the proxy's address as its peer.

With ``with_region=True`` a fourth namespace, ``region``, is a router (forwarding on,
in its own namespace only) with links to the client (198.18.3.0/24) and the origin
(198.18.4.0/24).  Now the client *can* reach the origin directly, from 198.18.3.10;
an origin that accepts only the proxy's network (``--allow-network 198.18.2.0/24``)
turns it away, and a forward proxy in that network gets through: the region-lock
lesson, where the refusal comes from the origin's policy, not a missing route.

Why 198.18.0.0/15: RFC 2544 (and RFC 6890's registry) reserve it for benchmarking
network devices; it is never routed on the Internet and, unlike 10/8 or 192.168/16,
is unlikely to collide with a real network this machine is attached to.  It lives
only inside the namespaces: the root namespace gets no address, no route and no
interface of the lab (veth ends are created directly inside their namespaces), so
nothing here can send a lab packet out of the machine.  Every endpoint, curl and
servers included, runs inside a namespace through ``ip netns exec``.

IPv6 is switched off inside the namespaces so that packet captures show only the
lesson's traffic (no router solicitations, MLD reports or duplicate-address probes).

Lifetime: every namespace name starts with a prefix unique to the run
(``tlslab-<pid>-``), so parallel runs never collide.  ``down()`` kills the processes
started with ``popen()`` (by PID), then deletes the namespaces, which deletes their
veths.  It runs on leaving the ``with`` block (also on an exception or Ctrl-C) and at
interpreter exit; servers are started with a parent-death signal so that they die
with a killed creator; ``cleanup_stale()`` (called by ``up()``) removes what a
crashed run left, and only where the PID in the name is no longer alive.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from itertools import count

from course.children import stop_child

HOSTS = ("client", "proxy", "origin")
REGION = "region"
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmarking range
HOST_NUMBER = {"client": 10, "proxy": 20, "origin": 30, REGION: 40}
DEFAULT_PREFIX = "tlslab-"
COMMAND_TIMEOUT = 10.0  # one `ip` command; they take milliseconds
STOP_GRACE = 3.0  # SIGTERM, then this long, then SIGKILL

# (host, host, third octet of the link's /24); the first two are the basic lab.
LINKS = (("client", "proxy", 1), ("proxy", "origin", 2))
REGION_LINKS = (("client", REGION, 3), (REGION, "origin", 4))

# Names made by Topology() with the automatic prefix: tlslab-<pid>- or tlslab-<pid>.<n>-
_AUTOMATIC = r"(?P<pid>\d+)(?:\.\d+)?-(?P<host>client|proxy|origin|region)"
_PREFIX_SYNTAX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
_instances = count()


class NetnsUnavailable(PermissionError):
    """Namespaces cannot be made here: not root, no `ip`, or no CAP_SYS_ADMIN."""


class TopologyError(RuntimeError):
    """A step of building or using the lab network failed; the message names the command."""


@dataclass
class Host:
    """One lab host: its namespace and, per neighbour, its address and interface."""

    name: str
    netns: str
    addresses: dict[str, str] = field(default_factory=dict)  # peer -> this host's IP on that link
    interfaces: dict[str, str] = field(default_factory=dict)  # peer -> veth name in this namespace
    routes: dict[str, str] = field(default_factory=dict)  # destination network -> gateway


# --------------------------------------------------------------------------- availability
def _ip_path() -> str | None:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))  # CAP_SYS_ADMIN = 21
    except OSError:
        pass
    return os.geteuid() == 0


def netns_available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are a Linux feature"
    ip = _ip_path()
    if ip is None:
        return "the `ip` command is missing (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or with sudo)"
    if not _has_cap_sys_admin():
        return "root here lacks CAP_SYS_ADMIN (an unprivileged container?)"
    probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if probe.returncode != 0:
        return f"`ip netns list` failed: {probe.stderr.strip()}"
    return None


# --------------------------------------------------------------------------- commands
def _execute(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run one planned command (``ip`` resolved even when /usr/sbin is not on PATH)."""
    resolved = [_ip_path() or "ip", *argv[1:]] if argv[0] == "ip" else argv
    result = subprocess.run(resolved, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if check and result.returncode != 0:
        raise TopologyError(f"`{shlex.join(argv)}` failed: {result.stderr.strip() or result.returncode}")
    return result


def list_namespaces() -> list[str]:
    """Every named namespace on the machine (`ip netns list`, ids dropped)."""
    output = _execute(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def namespace_pids(netns: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``netns``."""
    result = _execute(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []


def creator_pid(netns: str, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The PID in an automatic name (``tlslab-4711-client`` -> 4711), else None."""
    match = re.fullmatch(re.escape(prefix) + _AUTOMATIC, netns)
    return int(match["pid"]) if match else None


def interface_addresses(netns: str) -> dict[str, str]:
    """Interface -> IPv4 address/prefix inside ``netns`` (loopback left out)."""
    result = _execute(["ip", "-n", netns, "-br", "-4", "addr"], check=False)
    fields = (line.split() for line in result.stdout.splitlines())
    return {f[0].split("@")[0]: f[2] for f in fields if len(f) > 2 and f[0] != "lo"}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(netns: str) -> None:
    """Delete one namespace; warn (and kill nothing) if foreign processes keep it alive."""
    left = namespace_pids(netns)
    if left:
        warnings.warn(f"{netns}: processes {left} still run inside; the namespace lives on "
                      "until they exit (not ours to kill)", RuntimeWarning, stacklevel=3)
    _execute(["ip", "netns", "del", netns], check=False)


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces left by crashed runs: named ``<prefix><pid>-<host>`` with a dead pid.

    Names without a pid (``tlslab-client`` from ``python -m lab.topology up``) and names
    whose creator still runs are left alone.  Returns the names deleted.
    """
    deleted = []
    for netns in list_namespaces():
        pid = creator_pid(netns, prefix)
        if pid is not None and not pid_alive(pid):
            _delete_namespace(netns)
            deleted.append(netns)
    return deleted


def remove(prefix: str, hosts: tuple[str, ...] = (*HOSTS, REGION)) -> list[str]:
    """Delete exactly ``<prefix><host>`` for each host that exists (the CLI's `down`)."""
    existing = set(list_namespaces())
    deleted = [prefix + host for host in hosts if prefix + host in existing]
    for netns in deleted:
        _delete_namespace(netns)
    return deleted


# --------------------------------------------------------------------------- the topology
class Topology:
    """Client, proxy and origin (and optionally a region router) as network namespaces.

    ``with Topology() as net: net.run("client", ["curl", ...])`` builds it, runs the
    body, and tears everything down however the body ends.
    """

    def __init__(self, prefix: str | None = None, *, with_region: bool = False) -> None:
        if prefix is None:
            n = next(_instances)
            prefix = f"{DEFAULT_PREFIX}{os.getpid()}{f'.{n}' if n else ''}-"
        if not _PREFIX_SYNTAX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r}: letters, digits, '_', '.', '-' only, at most 41")
        self.prefix = prefix
        self.with_region = with_region
        self.links = LINKS + (REGION_LINKS if with_region else ())
        names = HOSTS + ((REGION,) if with_region else ())
        self.hosts: dict[str, Host] = {name: Host(name, prefix + name) for name in names}
        for a, b, octet in self.links:
            subnet = ipaddress.ip_network(f"198.18.{octet}.0/24")
            for here, there in ((a, b), (b, a)):
                self.hosts[here].addresses[there] = str(subnet[HOST_NUMBER[here]])
                self.hosts[here].interfaces[there] = f"to-{there}"
        if with_region:  # client and origin reach each other's region link through the router
            self.hosts["client"].routes[self.subnet(REGION, "origin")] = self.address(REGION, "client")
            self.hosts["origin"].routes[self.subnet("client", REGION)] = self.address(REGION, "origin")
        self._made: list[str] = []  # namespaces this object created, in order
        self._processes: list[subprocess.Popen] = []
        self._detached = False
        self._sigterm_caught = False

    # -- what the network looks like
    def address(self, host: str, toward: str) -> str:
        """``host``'s IP on the link toward ``toward``: address("proxy", toward="client")."""
        return self._link_end(host, toward).addresses[toward]

    def interface(self, host: str, toward: str) -> str:
        """The veth name inside ``host``'s namespace on the link toward ``toward``."""
        return self._link_end(host, toward).interfaces[toward]

    def subnet(self, a: str, b: str) -> str:
        """The network of the link between ``a`` and ``b``, e.g. ``198.18.2.0/24``."""
        return str(ipaddress.ip_interface(f"{self.address(a, b)}/24").network)

    def netns(self, host: str) -> str:
        return self._host(host).netns

    def _host(self, host: str) -> Host:
        try:
            return self.hosts[host]
        except KeyError:
            raise KeyError(f"no host {host!r} in this topology; hosts: {', '.join(self.hosts)}") from None

    def _link_end(self, host: str, toward: str) -> Host:
        end = self._host(host)
        if toward not in end.addresses:
            raise KeyError(f"{host} has no link toward {toward!r}; its links: {', '.join(end.addresses)}")
        return end

    def plan(self) -> list[list[str]]:
        """The commands ``up()`` runs, in order: each one acts inside a lab namespace."""
        commands = []
        for host in self.hosts.values():
            ns = host.netns
            forwarding = 1 if host.name == REGION else 0
            commands += [
                ["ip", "netns", "add", ns],
                ["ip", "netns", "exec", ns, "sh", "-c",
                 f"echo {forwarding} > /proc/sys/net/ipv4/ip_forward"
                 " && echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"
                 " && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
            ]
        for a, b, _ in self.links:  # created inside a's namespace, peer moved straight into b's
            commands.append(["ip", "-n", self.netns(a), "link", "add", self.interface(a, b), "type", "veth",
                             "peer", "name", self.interface(b, a), "netns", self.netns(b)])
        for host in self.hosts.values():
            for peer in host.addresses:
                commands += [["ip", "-n", host.netns, "addr", "add", f"{host.addresses[peer]}/24",
                              "dev", host.interfaces[peer]],
                             ["ip", "-n", host.netns, "link", "set", host.interfaces[peer], "up"]]
            for network, gateway in host.routes.items():
                commands.append(["ip", "-n", host.netns, "route", "add", network, "via", gateway])
        return commands

    # -- lifetime
    def up(self) -> Topology:
        """Create the namespaces and links; fails clearly if any of the names exists."""
        reason = netns_available()
        if reason:
            raise NetnsUnavailable(f"cannot build the lab network: {reason}")
        if self._made:
            raise TopologyError(f"{self.prefix}*: this topology is already up")
        cleanup_stale()
        clashes = sorted(set(list_namespaces()) & {h.netns for h in self.hosts.values()})
        if clashes:
            raise FileExistsError(f"namespaces {', '.join(clashes)} exist already; remove them with "
                                  f"`python -m lab.topology down --prefix {self.prefix}` or choose another prefix")
        atexit.register(self.down)
        self._catch_sigterm()
        try:
            for argv in self.plan():
                _execute(argv)
                if argv[1:3] == ["netns", "add"]:
                    self._made.append(argv[3])
        except BaseException:  # also Ctrl-C halfway: leave nothing behind
            self.down()
            raise
        return self

    def down(self) -> None:
        """Kill our processes (by PID), delete every namespace we made. Safe to call twice."""
        atexit.unregister(self.down)
        self._release_sigterm()
        for process in self._processes:
            _stop(process)
        self._processes.clear()
        while self._made:
            _delete_namespace(self._made.pop())

    def detach(self) -> None:
        """Leave the namespaces in place after this process exits (the CLI's `up`)."""
        atexit.unregister(self.down)
        self._release_sigterm()
        self._made.clear()
        self._detached = True

    def _catch_sigterm(self) -> None:
        """Turn SIGTERM (a CI job cancelled, `kill PID`) into SystemExit, so `with` cleans up.

        Only from the main thread and only where nobody else handles SIGTERM already.
        """
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            self._sigterm_caught = True

    def _release_sigterm(self) -> None:
        if self._sigterm_caught and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._sigterm_caught = False

    def __enter__(self) -> Topology:
        return self if self._made else self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    # -- running programs on a host
    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside ``host``'s namespace."""
        return [_ip_path() or "ip", "netns", "exec", self.netns(host), *argv]

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command on ``host`` and wait; output captured as text, 60 s timeout by default."""
        kwargs = {"capture_output": True, "text": True, "timeout": 60, **kwargs}
        return subprocess.run(self.command(host, argv), **kwargs)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a long-running program (a server) on ``host``; ``down()`` stops it by PID.

        It is started with a parent-death signal (SIGTERM) so that it does not outlive a
        creator that is killed outright.  The kernel sends it when the *thread* that called
        popen() ends: call it from the main thread or one that lives as long as the server.
        """
        self._host(host)
        if not self._made:
            raise TopologyError("the topology is not up: call up() or use `with Topology() as net:`")
        setpriv = shutil.which("setpriv")  # util-linux: sets the signal, then execs argv
        guard = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.command(host, [*guard, *argv]), **kwargs)
        self._processes.append(process)  # `ip netns exec` execs: this PID is the program's
        _wait_for_exec(process, {_ip_path(), setpriv})
        return process

    def listening(self, host: str, port: int) -> bool:
        """Whether a TCP socket listens on ``port`` in ``host``'s namespace.

        It reads the namespace's socket table (/proc/net/tcp*) instead of connecting, so
        it sends nothing and works for any address the server bound.
        """
        tables = self.run(host, ["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=COMMAND_TIMEOUT).stdout
        wanted = f":{port:04X}"
        return any(fields[1].endswith(wanted) and fields[3] == "0A"  # 0A = TCP_LISTEN
                   for fields in (line.split() for line in tables.splitlines()) if len(fields) > 3)

    def wait_listening(self, host: str, port: int, *, timeout: float = 10.0,
                       process: subprocess.Popen | None = None) -> None:
        """Wait until something listens on ``port`` in ``host``; fail early if ``process`` died."""
        deadline = time.monotonic() + timeout
        while not self.listening(host, port):
            if process is not None and process.poll() is not None:
                raise TopologyError(f"{shlex.join(map(str, process.args))} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} in {self.netns(host)} after {timeout}s")
            time.sleep(0.05)

    def describe(self) -> str:
        """A table of hosts, namespaces, interfaces and addresses."""
        lines = [f"{'host':8}{'namespace':26}{'interface':11}{'address':17}link"]
        for host in self.hosts.values():
            first = True
            for peer in host.addresses:
                lines.append(f"{host.name if first else '':8}{host.netns if first else '':26}"
                             f"{host.interfaces[peer]:11}{host.addresses[peer] + '/24':17}"
                             f"{host.name}-{peer}")
                first = False
            for network, gateway in host.routes.items():
                lines.append(f"{'':34}route {network} via {gateway}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "up" if self._made else "detached" if self._detached else "down"
        return f"<Topology {self.prefix}* {', '.join(self.hosts)} ({state})>"


def _wait_for_exec(process: subprocess.Popen, wrappers: set[str | None], timeout: float = 5.0) -> None:
    """Wait until ``ip netns exec`` and ``setpriv`` have exec'd into the program itself.

    Until then the parent-death signal may not be set yet, and a creator killed in that
    window would leave the server running.  It takes a millisecond or two.
    """
    wrappers = {os.path.realpath(w) for w in wrappers if w}
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if os.path.realpath(f"/proc/{process.pid}/exe") not in wrappers:
                return
        except OSError:
            return
        time.sleep(0.001)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, a grace period, then SIGKILL; Popen skips the signal if the PID was reaped."""
    stop_child(process, STOP_GRACE)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
