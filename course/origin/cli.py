"""``tlsproxy origin`` (and ``python -m course.origin``): one demo origin from the shell.

Theory of operation
-------------------
Like every subcommand, this module exposes ``configure_cli(parser)`` and
``run_cli(args) -> int``; ``course.cli`` dispatches to them.  ``run_cli`` starts an
``Origin``, prints one line saying where it listens (the benchmark and the tests
wait for that line), and serves until SIGINT or SIGTERM, after which it stops the
origin and exits with status 0.  Mistakes the user can fix (a bad ``--listen``, a
port in use) are ``ConfigError``: one line on stderr, status 2.
"""

from __future__ import annotations

import argparse
import signal
import threading

from proxy.errors import ConfigError
from course.origin.server import Origin


def configure_cli(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--name", default="origin", help="the name it answers with (default: origin)")
    add("--listen", default="127.0.0.1:9001", metavar="HOST:PORT",
        help="address to listen on, [::1]:PORT for IPv6 (default: 127.0.0.1:9001)")
    add("--cert", help="certificate chain (PEM): terminate TLS at the origin")
    add("--key", help="private key (PEM) of --cert")
    add("--client-ca", help="require client certificates signed by this CA (mutual TLS)")
    add("--allow-network", action="append", default=[], metavar="CIDR",
        help="answer only clients from these networks (region lock); repeatable")
    add("--verbose", "-v", action="store_true", help="one line per request on stderr")


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9001`` or ``[::1]:9001`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen wants HOST:PORT or [IPv6]:PORT, not {text!r}")
    return host, int(port)


def run_cli(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    origin = Origin(args.name, host, port, cert=args.cert, key=args.key,
                    client_ca=args.client_ca, allow_networks=args.allow_network,
                    verbose=args.verbose)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        origin.start()
        extras = " (client certificates required)" if args.client_ca else ""
        if origin.allow_networks:
            extras += " (region-locked to " + ", ".join(map(str, origin.allow_networks)) + ")"
        print(f"origin {args.name} listening on {origin.url}{extras}", flush=True)
        stop.wait()  # Ctrl-C or SIGTERM: a clean exit with status 0
    finally:
        origin.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
