"""The namespace lab network: the client reaches the origin only through the proxy, and
nothing is left behind.

Every endpoint runs inside a lab namespace; this process only starts them and reads
their output.  The root namespace is checked before and after: no lab address, route
or interface may appear there, and its forwarding setting must not change.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab.topology import LAB_NETWORK, REGION, Topology, cleanup_stale, netns_available, remove
from lab.topology.netns import list_namespaces, namespace_pids
from tests.tools import require_root, require_tool

ORIGIN_PORT = 8080  # fixed ports are safe: each run's namespaces have their own port space
RELAY_PORT = 8000

# A TCP relay, the smallest application-level proxy: accept, connect onwards, copy bytes
# both ways.  The origin sees the relay's own connection, so the proxy's address.
RELAY = r"""
import socket, sys, threading
listen, target = (sys.argv[1], int(sys.argv[2])), (sys.argv[3], int(sys.argv[4]))
def pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
server = socket.create_server(listen)
while True:
    downstream, _ = server.accept()
    upstream = socket.create_connection(target, timeout=10)
    for source, sink in ((downstream, upstream), (upstream, downstream)):
        threading.Thread(target=pump, args=(source, sink), daemon=True).start()
"""

# Prints the errno name of a direct connection attempt, or "connected".
CONNECT = r"""
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as error:
    print(errno.errorcode.get(error.errno, error))
"""

# A notebook-like program: builds the lab, starts a server, waits to be interrupted.
INTERRUPTED = r"""
import signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from lab.topology import Topology
with Topology() as net:
    server = net.popen("origin", ["sleep", "60"])
    print(net.prefix, server.pid, flush=True)
    time.sleep(60)
"""


@pytest.fixture
def root_lab():
    require_root("network namespaces")
    require_tool("ip")
    reason = netns_available()
    if reason:
        pytest.fail(f"running as root, yet namespaces are unavailable: {reason}")


def root_namespace_state() -> dict:
    """What the lab must never change in the namespace this test runs in."""
    def ip(*args: str) -> str:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

    with open("/proc/sys/net/ipv4/ip_forward") as forward:
        forwarding = forward.read().strip()
    return {"links": sorted(line.split()[0] for line in ip("-br", "link").splitlines()),
            "addresses": ip("-4", "-br", "addr"), "routes": ip("-4", "route"), "forwarding": forwarding}


def start_origin(net: Topology, *extra: str, listen: str | None = None) -> subprocess.Popen:
    listen = listen or net.address("origin", toward="proxy")
    process = net.popen("origin", [sys.executable, "-m", "course.origin", "--name", "origin",
                                   "--listen", f"{listen}:{ORIGIN_PORT}", *extra],
                        stdout=subprocess.DEVNULL)
    net.wait_listening("origin", ORIGIN_PORT, process=process)
    return process


def start_relay(net: Topology) -> subprocess.Popen:
    process = net.popen("proxy", [sys.executable, "-c", RELAY, net.address("proxy", toward="client"),
                                  str(RELAY_PORT), net.address("origin", toward="proxy"), str(ORIGIN_PORT)])
    net.wait_listening("proxy", RELAY_PORT, process=process)
    return process


def curl_json(net: Topology, host: str, url: str) -> tuple[int, dict]:
    result = net.run(host, ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", url])
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def direct_connect(net: Topology, host: str, address: str, timeout: float = 3.0) -> str:
    result = net.run(host, [sys.executable, "-c", CONNECT, address, str(ORIGIN_PORT), str(timeout)])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --------------------------------------------------------------------------- without root
def test_every_planned_command_acts_inside_a_lab_namespace():
    net = Topology(with_region=True)
    ours = {host.netns for host in net.hosts.values()}
    for argv in net.plan():
        assert argv[0] == "ip"
        if argv[1] == "netns":
            assert argv[2] in ("add", "exec") and argv[3] in ours, argv
        else:
            assert argv[1] == "-n" and argv[2] in ours, argv
        if "netns" in argv[3:]:  # a veth's peer end goes straight into another lab namespace
            assert argv[argv.index("netns", 3) + 1] in ours, argv
    for host in net.hosts.values():
        for address in host.addresses.values():
            assert ipaddress.ip_address(address) in LAB_NETWORK
    forwarding = {argv[3]: argv[-1].split()[1] for argv in net.plan() if argv[4:5] == ["sh"]}
    assert forwarding == {net.netns(name): "1" if name == REGION else "0" for name in net.hosts}
    assert net.address("proxy", toward="client") == "198.18.1.20"
    assert net.interface("proxy", toward="origin") == "to-origin"
    assert net.subnet("proxy", "origin") == "198.18.2.0/24"
    with pytest.raises(KeyError, match="no link toward"):
        net.address("client", toward="origin")


# --------------------------------------------------------------------------- with namespaces
@pytest.mark.root
def test_client_reaches_origin_only_through_the_proxy(root_lab):
    require_tool("curl")
    before = root_namespace_state()
    with Topology() as net:
        names = [host.netns for host in net.hosts.values()]
        assert set(names) <= set(list_namespaces())
        proxy_forwarding = net.run("proxy", ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
        assert proxy_forwarding == "0", "the proxy namespace must not route"
        assert root_namespace_state() == before, "the lab touched the root namespace"
        processes = [start_origin(net), start_relay(net)]

        status, seen = curl_json(net, "client", f"http://{net.address('proxy', 'client')}:{RELAY_PORT}/hello")
        assert status == 200 and seen["origin"] == "origin" and seen["path"] == "/hello"
        peer = seen["client"].rpartition(":")[0]
        assert peer == net.address("proxy", toward="origin") != net.address("client", toward="proxy")

        origin_ip = net.address("origin", toward="proxy")
        assert direct_connect(net, "client", origin_ip) == "ENETUNREACH"  # no route at all
        # Even with a route through the proxy, the proxy does not forward: packets are dropped.
        route = ["ip", "route", "add", net.subnet("proxy", "origin"), "via", net.address("proxy", "client")]
        assert net.run("client", route).returncode == 0
        assert direct_connect(net, "client", origin_ip, timeout=1.0) == "timeout"

        tracked = {process.pid for process in processes}
        for name in names:
            assert set(namespace_pids(name)) <= tracked, f"unexpected processes in {name}"
    assert not set(names) & set(list_namespaces())
    assert all(process.returncode is not None for process in processes), "a server outlived down()"
    assert root_namespace_state() == before
    net.down()  # idempotent


@pytest.mark.root
def test_region_lock_refuses_the_direct_path_and_admits_the_proxy(root_lab):
    require_tool("curl")
    with Topology(with_region=True) as net:
        start_origin(net, "--allow-network", net.subnet("proxy", "origin"), listen="0.0.0.0")
        start_relay(net)
        status, refusal = curl_json(net, "client", f"http://{net.address('origin', REGION)}:{ORIGIN_PORT}/region")
        assert status == 403 and refusal["error"] == "region-locked"
        assert refusal["your_address"] == net.address("client", toward=REGION)
        status, answer = curl_json(net, "client", f"http://{net.address('proxy', 'client')}:{RELAY_PORT}/region")
        assert status == 200 and answer["your_address"] == net.address("proxy", toward="origin")
        assert direct_connect(net, "client", net.address("origin", "proxy")) == "ENETUNREACH"


@pytest.mark.root
def test_leaving_the_with_block_by_an_exception_cleans_up(root_lab):
    with pytest.raises(RuntimeError, match="lesson failed"):
        with Topology() as net:
            names = [host.netns for host in net.hosts.values()]
            sleeper = net.popen("origin", ["sleep", "60"])
            raise RuntimeError("lesson failed")
    assert not set(names) & set(list_namespaces())
    assert sleeper.returncode is not None


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie counts: it runs no more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_a_killed_program_leaves_nothing_running(root_lab, signum):
    """Ctrl-C and SIGTERM run down(); after SIGKILL the server dies with its parent
    (parent-death signal) and the next cleanup_stale() sweeps the names."""
    program = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, text=True)
    try:
        prefix, server_pid = program.stdout.readline().split()
        program.send_signal(signum)
        program.wait(10)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
        program.stdout.close()
    assert process_gone(int(server_pid)), "the server outlived the program that started it"
    if signum == signal.SIGKILL:
        cleanup_stale()  # a parallel run's sweep may have done it already
    assert not any(name.startswith(prefix) for name in list_namespaces())


@pytest.mark.root
def test_taken_names_fail_clearly_and_leave_the_first_topology_alone(root_lab):
    with Topology() as first:
        with pytest.raises(FileExistsError, match="exist already"):
            Topology(first.prefix).up()
        assert {h.netns for h in first.hosts.values()} <= set(list_namespaces())
        assert first.run("client", ["ip", "-br", "link", "show", "to-proxy"]).returncode == 0


@pytest.mark.root
def test_cleanup_stale_removes_only_namespaces_of_dead_creators(root_lab):
    finished = subprocess.Popen(["true"])
    finished.wait()  # its PID now names no process
    stale = f"tlslab-{finished.pid}-client"
    alive = f"tlslab-{os.getpid()}.999-proxy"  # this process made it and still runs
    manual = f"tlslab-manual{os.getpid()}-origin"  # no PID in the name: made by hand or by the CLI
    try:
        for name in (stale, alive, manual):
            subprocess.run(["ip", "netns", "add", name], check=True)
        removed = cleanup_stale()  # a parallel run's sweep may have taken `stale` first
        assert alive not in removed and manual not in removed
        assert set(list_namespaces()) & {stale, alive, manual} == {alive, manual}
    finally:
        for name in (stale, alive, manual):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.root
def test_command_line_up_status_down(root_lab):
    prefix = f"tlslabcli{os.getpid()}-"
    cli = [sys.executable, "-m", "lab.topology"]
    try:
        up = subprocess.run([*cli, "up", "--prefix", prefix], capture_output=True, text=True, timeout=30)
        assert up.returncode == 0, up.stderr
        assert f"ip netns exec {prefix}client" in up.stdout and "198.18.1.20/24" in up.stdout
        assert {prefix + host for host in ("client", "proxy", "origin")} <= set(list_namespaces())
        again = subprocess.run([*cli, "up", "--prefix", prefix], capture_output=True, text=True, timeout=30)
        assert again.returncode == 1 and "exist already" in again.stderr
        status = subprocess.run([*cli, "status", "--prefix", prefix], capture_output=True, text=True, timeout=30)
        assert f"{prefix}proxy" in status.stdout and "198.18.2.20/24" in status.stdout
        down = subprocess.run([*cli, "down", "--prefix", prefix], capture_output=True, text=True, timeout=30)
        assert down.returncode == 0 and not any(n.startswith(prefix) for n in list_namespaces())
    finally:
        remove(prefix)
