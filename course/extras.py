"""The optional dependencies (pyproject.toml's ``lab`` extra), and the one line a missing one gets.

Theory of operation
-------------------
``pip install tls-termination-lab`` brings only what ``tlsproxy serve`` needs.  The
course's tooling needs more: scapy to capture, matplotlib to draw, nbclient and a
kernel to run the notebooks.  A command that reaches for one of those and finds it
missing must say, in one line, what to install::

    tlsproxy capture needs scapy, which is not installed: pip install 'tls-termination-lab[lab]' (or make venv)

and exit with status 2, as for any other mistake that is the user's to fix.  Only
modules of the extra get that treatment (``missing_extra``): a missing ``proxy.*`` or
``course.*`` module is a bug in this project, and its traceback must show.
"""

from __future__ import annotations

import sys

# Import name -> what pip installs it as.  The lab extra's packages, and the ones they
# bring that our code imports directly (nbformat comes with nbclient, IPython with
# ipykernel).  tests/unit/test_extras.py keeps this in step with pyproject.toml.
LAB_EXTRA: dict[str, str] = {
    "scapy": "scapy",
    "matplotlib": "matplotlib",
    "jupyterlab": "jupyterlab",
    "nbclient": "nbclient",
    "nbformat": "nbformat",
    "jupyter_client": "jupyter_client",
    "ipykernel": "ipykernel",
    "IPython": "ipython",
    "psutil": "psutil",
}
INSTALL = "pip install 'tls-termination-lab[lab]' (or make venv)"


def missing_extra(error: BaseException) -> str | None:
    """The package to install if ``error`` says a module of the lab extra is missing, else None.

    A module of the extra that is there but lacks a submodule (an old version) is not
    "missing": None, and the traceback tells the rest.
    """
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    top = error.name.partition(".")[0]
    if top not in LAB_EXTRA or top in sys.modules:
        return None
    return LAB_EXTRA[top]


def missing_line(who: str, package: str) -> str:
    """``who needs PACKAGE, which is not installed: pip install ...`` (one line)."""
    return f"{who} needs {package}, which is not installed: {INSTALL}"


def exit_if_missing(who: str, error: BaseException) -> None:
    """For a ``main``: one line on stderr and exit status 2 if ``error`` is a missing extra.

    Returns (so the caller re-raises) for anything else.
    """
    package = missing_extra(error)
    if package is not None:
        print(missing_line(who, package), file=sys.stderr)
        raise SystemExit(2)
