"""course.extras: which ModuleNotFoundError is "install the lab extra" and which is a bug."""

from __future__ import annotations

import re
import tomllib

import pytest

from course import extras
from tests.conftest import REPO


def test_every_package_of_the_lab_extra_is_known():
    """pyproject.toml's `lab` extra and LAB_EXTRA must not drift apart."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("-", "_")
              for requirement in project["optional-dependencies"]["lab"]}
    known = {package.lower().replace("-", "_") for package in extras.LAB_EXTRA.values()}
    assert wanted <= known, f"add {sorted(wanted - known)} to course.extras.LAB_EXTRA"


@pytest.mark.parametrize("name, package", [
    ("scapy", "scapy"), ("scapy.layers.inet", "scapy"), ("IPython", "ipython"), ("nbformat", "nbformat"),
])
def test_a_module_of_the_extra_that_is_not_there(name, package, monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, name.partition(".")[0], raising=False)
    assert extras.missing_extra(ModuleNotFoundError(f"No module named {name!r}", name=name)) == package


@pytest.mark.parametrize("error", [
    ModuleNotFoundError("No module named 'course.capture.flows'", name="course.capture.flows"),  # ours: a bug
    ModuleNotFoundError("No module named 'proxy.modes.h2'", name="proxy.modes.h2"),
    ModuleNotFoundError("No module named 'numpy'", name="numpy"),  # not ours to name
    ModuleNotFoundError("no name given"),
    ImportError("cannot import name 'x' from 'scapy'", name="scapy"),  # there, but not what we expected
])
def test_everything_else_is_left_to_its_traceback(error):
    assert extras.missing_extra(error) is None


def test_a_submodule_missing_from_an_installed_package_is_not_missing_the_package(monkeypatch):
    import types

    monkeypatch.setitem(__import__("sys").modules, "scapy", types.ModuleType("scapy"))  # imported fine
    error = ModuleNotFoundError("No module named 'scapy.layers.tls'", name="scapy.layers.tls")
    assert extras.missing_extra(error) is None


def test_the_line_names_the_command_the_package_and_the_install():
    assert extras.missing_line("tlsproxy capture", "scapy") == (
        "tlsproxy capture needs scapy, which is not installed: pip install 'tls-termination-lab[lab]' (or make venv)")
