"""constraints.txt pins every package pyproject.toml asks for.

`make venv` installs ``.[lab,dev]`` with ``-c constraints.txt``; a requirement that has no
pin there would silently float to whatever PyPI has that day, and two students in the same
semester would run different code. `make lock` rewrites the file; these tests catch a
requirement added to pyproject.toml without re-locking, and a pin that no longer fits
the range pyproject.toml allows.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("lab", "dev")


def project_requirements() -> list[Requirement]:
    """The project's dependencies and its lab and dev extras, as pyproject.toml names them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def pins() -> dict[str, list[Requirement]]:
    """constraints.txt as canonical name -> its pins (more than one only with markers)."""
    found: dict[str, list[Requirement]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            found.setdefault(canonicalize_name(pin.name), []).append(pin)
    return found


def pinned_version(requirement: Requirement) -> str:
    """The one exact version a constraints line allows, or fail saying it is not a pin."""
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is a range, not a pin"
    return spec.version


def test_every_line_is_an_exact_pin() -> None:
    for name, lines in pins().items():
        for pin in lines:
            assert len(pin.specifier) == 1, f"{pin}: one '==' per line"
            pinned_version(pin)


def test_the_project_itself_is_not_pinned() -> None:
    assert canonicalize_name("tls-termination-lab") not in pins()


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_requirement_is_pinned_inside_its_range(requirement: Requirement) -> None:
    lines = pins().get(canonicalize_name(requirement.name))
    assert lines, f"{requirement.name} is not in constraints.txt: run `make lock`"
    for pin in lines:
        if pin.marker is None or pin.marker.evaluate():
            version = pinned_version(pin)
            assert requirement.specifier.contains(version, prereleases=True), (
                f"constraints.txt pins {pin}, outside pyproject.toml's {requirement}: run `make lock`")
            return
    pytest.fail(f"no pin of {requirement.name} applies to this Python: {lines}")
