#!/bin/sh
# Build the lab network and leave it up: a thin wrapper of `python -m lab.topology up`.
# Options pass through: --prefix P, --with-region, --dry-run.  Needs root.
set -eu
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" -m lab.topology up "$@"
