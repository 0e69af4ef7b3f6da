"""``python -m lab.topology up|down|status [--prefix P]``: the lab network from a shell.

``up`` builds the namespaces and leaves them in place (unlike ``with Topology()``), prints
the hosts and addresses and a few commands to try; ``down`` deletes them; ``status``
lists the lab namespaces on this machine.  The default prefix is ``tlslab-``, giving
``tlslab-client``, ``tlslab-proxy`` and ``tlslab-origin``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from lab.topology import netns
from lab.topology.netns import REGION, Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.topology", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--prefix", default=netns.DEFAULT_PREFIX,
                        help=f"namespace name prefix (default: {netns.DEFAULT_PREFIX})")
    parser.add_argument("--with-region", action="store_true",
                        help="up: add the 'region' router, a direct but region-locked path client -> origin")
    parser.add_argument("--dry-run", action="store_true", help="up: print the commands instead of running them")
    args = parser.parse_args(argv)
    if args.action == "status":
        return status(args.prefix)
    if re.fullmatch(re.escape(netns.DEFAULT_PREFIX) + r"\d+(\.\d+)?-", args.prefix):
        parser.error(f"{args.prefix!r} looks like a test run's prefix, which cleanup_stale() may remove")
    if args.action == "up" and args.dry_run:
        for command in Topology(args.prefix, with_region=args.with_region).plan():
            print(shlex.join(command))
        return 0
    reason = netns.netns_available()
    if reason:
        print(f"lab.topology: {reason}", file=sys.stderr)
        return 2
    return up(args.prefix, args.with_region) if args.action == "up" else down(args.prefix)


def up(prefix: str, with_region: bool) -> int:
    net = Topology(prefix, with_region=with_region)
    try:
        net.up()
    except (FileExistsError, netns.TopologyError) as error:
        print(f"lab.topology: {error}", file=sys.stderr)
        return 1
    net.detach()
    print(f"lab network up ({netns.LAB_NETWORK}, the RFC 2544 benchmarking range, only inside namespaces):\n")
    print(net.describe())
    print("\nTry it (every command runs inside a namespace; never reach a lab address from outside):")
    for line in examples(net):
        print("  " + line)
    return 0


def examples(net: Topology) -> list[str]:
    python = shlex.quote(sys.executable)
    origin = net.address("origin", "proxy")

    def inside(host: str, command: str) -> str:
        return f"ip netns exec {net.netns(host)} {command}"

    lines = [
        inside("origin", f"{python} -m course.origin --name origin --listen {origin}:8080 &"),
        inside("proxy", f"curl -s http://{origin}:8080/    # the origin sees {net.address('proxy', 'origin')}"),
        inside("client", f"curl -s http://{origin}:8080/   # Network is unreachable: the proxy is no router"),
        inside("client", f"ping -c 1 {net.address('proxy', 'client')}"),
    ]
    if REGION in net.hosts:
        lines.append(inside("client", f"curl -s http://{net.address('origin', REGION)}:8080/   "
                                      "# direct, through the region router"))
    lines += [f"kill %1; {sys.executable} -m lab.topology down --prefix {net.prefix}"]
    return lines


def down(prefix: str) -> int:
    deleted = netns.remove(prefix)
    print("deleted " + ", ".join(deleted) if deleted else f"no lab namespaces named {prefix}<host>")
    return 0


def status(prefix: str) -> int:
    ours = [name for name in netns.list_namespaces() if name.startswith(prefix)]
    if not ours:
        print(f"no namespaces named {prefix}*")
        return 0
    for name in sorted(ours):
        links = [f"{interface} {address}" for interface, address in netns.interface_addresses(name).items()]
        note = ""
        if (pid := netns.creator_pid(name)) is not None:
            note = f"  (made by pid {pid}, {'running' if netns.pid_alive(pid) else 'gone: stale'})"
        pids = netns.namespace_pids(name)
        processes = f"  processes: {' '.join(map(str, pids))}" if pids else ""
        print(f"{name:28}{'; '.join(links) or '-'}{note}{processes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
