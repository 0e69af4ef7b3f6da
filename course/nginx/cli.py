"""``tlsproxy export nginx``: write the nginx.conf for a TOML file.

Theory of operation
-------------------
Like every subcommand, this module exposes ``configure_cli(parser)`` and
``run_cli(args) -> int``; ``course.cli`` dispatches to them.  The configuration goes
to standard output (or ``--out``); what does not translate goes to standard error,
one line each: the export's WARNING comments and the forward listeners left out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from proxy import config as cfg
from course.nginx.export import export_nginx, skipped_listeners


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write the nginx configuration that does what a tlsproxy TOML file does "
                          "(terminate, re-encrypt, passthrough; forward listeners have no nginx equivalent).")
    parser.add_argument("target", choices=["nginx"], help="what to export to (nginx only, for now)")
    parser.add_argument("--config", required=True, metavar="FILE", help="tlsproxy TOML configuration")
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--prefix", metavar="DIR",
                        help="where nginx keeps its pid, logs and temp files (default: nginx -p decides)")


def run_cli(args: argparse.Namespace) -> int:
    config = cfg.load(args.config)
    prefix = os.path.abspath(args.prefix) if args.prefix else None
    text = export_nginx(config, prefix=prefix)
    warnings = [line.strip().removeprefix("# ") for line in text.splitlines() if "# WARNING:" in line]
    for warning in dict.fromkeys(warnings):
        print(f"tlsproxy export: {warning}", file=sys.stderr)
    for listener in skipped_listeners(config):
        print(f"tlsproxy export: listener {listener.listen} is a forward proxy; nginx has no equivalent "
              "(no CONNECT), so it is left out", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text)
        print(f"tlsproxy export: wrote {args.out}; run it with: nginx -p {prefix or 'DIR'} -c "
              f"{os.path.abspath(args.out)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
