#!/bin/sh
# Delete the lab network made by up.sh: a thin wrapper of `python -m lab.topology down`.
# Options pass through: --prefix P.  Needs root.
set -eu
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" -m lab.topology down "$@"
