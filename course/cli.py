"""The ``tlsproxy`` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives and exposes two functions:
``configure_cli(parser)`` adds its arguments and ``run_cli(args) -> int`` runs it.
This module only dispatches, importing a subcommand's module when it is used so
``tlsproxy --help`` stays instant.

Errors that are the user's to fix (a missing file, a port in use, a bad option)
are ``ConfigError``: printed as one line, exit status 2, no traceback.  So is a
missing optional dependency (``tlsproxy capture`` without scapy): one line that
says which package and how to install it (``course.extras``); a missing module
of our own is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from course.extras import missing_extra, missing_line
from proxy.errors import ConfigError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("proxy.server", "run the proxy (terminate, reencrypt, passthrough or forward)"),
    "demo": ("course.demo", "start demo origins and the proxy on loopback, show TLS termination at work"),
    "origin": ("course.origin", "run a demo origin server that says who it is"),
    "certs": ("proxy.pki", "write a development CA and leaf certificates"),
    "export": ("course.nginx", "write the nginx configuration equivalent to a TOML config"),
    "capture": ("course.capture.run", "capture both legs of a setup, decrypt them three ways, draw the ladder"),
    "bench": ("course.bench.runner", "measure the six setups and nginx: CPU per request, throughput, latency"),
}

EPILOG = """\
examples:
  tlsproxy demo                       # everything on loopback, prints a curl command to try
  tlsproxy certs --dir certs www.example.test api.example.test
  tlsproxy origin --name web --listen 127.0.0.1:9001
  tlsproxy serve --listen 127.0.0.1:8443 --cert certs/www.example.test.pem \\
      --key certs/www.example.test.key --backend http://127.0.0.1:9001
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsproxy",
        description="TLS Termination Lab: a readable reverse proxy that terminates TLS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported; the others stay cheap.
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure_cli(command_parser)
            command_parser.set_defaults(_run=module.run_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        parser = build_parser()  # imports the chosen subcommand's module
    except ModuleNotFoundError as error:
        return _missing(error, sys.argv[1])
    args = parser.parse_args()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ConfigError as error:
        print(f"tlsproxy {args.command}: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # imported late, e.g. scapy once a capture is read
        return _missing(error, args.command)
    except KeyboardInterrupt:
        return 130


def _missing(error: ModuleNotFoundError, command: str) -> int:
    """One line and status 2 for a missing optional package; anything else re-raised."""
    package = missing_extra(error)
    if package is None:
        raise error  # proxy.* or course.* missing: a bug, show the traceback
    print(missing_line(f"tlsproxy {command}", package), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
