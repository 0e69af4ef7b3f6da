"""A missing optional package (the ``lab`` extra) is one line and exit status 2, never a traceback.

Each test runs the real command in a subprocess in which an installed package is made
unimportable: a finder first on ``sys.meta_path`` answers for it exactly as Python does
for a module that is not there (``ModuleNotFoundError``, ``.name`` set).  A missing
module of our own must still show its traceback: that is a bug, not a missing install.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from course import cli, extras
from tests.conftest import REPO

INSTALL = "pip install 'tls-termination-lab[lab]' (or make venv)"

# Run MODULE as __main__ (like `python -m MODULE ARGS`), or just import it ("import:MODULE"),
# with the modules in BLOCKED (comma-separated) unimportable.
WITHOUT = textwrap.dedent("""
    import importlib, runpy, sys
    blocked, module, args = sys.argv[1].split(","), sys.argv[2], sys.argv[3:]

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in blocked):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    if module.startswith("import:"):
        importlib.import_module(module.removeprefix("import:"))
    else:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def run_without(blocked: str, module: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, blocked, module, *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_capture_without_scapy_says_what_to_install(tmp_path):
    done = run_without("scapy", "course.cli", "capture", "--out", tmp_path / "run", "--no-pictures")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"tlsproxy capture needs scapy, which is not installed: {INSTALL}"]


def test_a_missing_module_of_ours_keeps_its_traceback(tmp_path):
    done = run_without("course.capture.flows", "course.cli", "capture", "--out", tmp_path / "run", "--no-pictures")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'course.capture.flows'"


@pytest.mark.parametrize("package", ["nbclient", "nbformat", "ipykernel"])
def test_make_notebooks_without_the_notebook_runner(package, tmp_path):
    done = run_without(package, "course.notebooks_run", REPO / "notebooks", tmp_path / "out")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (f"make notebooks (python -m course.notebooks_run) needs {package}, "
                           f"which is not installed: {INSTALL}\n")
    assert not (tmp_path / "out").exists()


def test_make_diagrams_without_matplotlib(tmp_path):
    done = run_without("matplotlib", "course.diagrams", tmp_path / "diagrams")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"make diagrams (python -m course.diagrams) needs matplotlib, which is not installed: {INSTALL}\n"
    assert not (tmp_path / "diagrams").exists()


def test_importing_diagrams_without_matplotlib_still_raises():
    """Only `python -m course.diagrams` turns it into one line; an importer gets the error."""
    done = run_without("matplotlib", "import:course.diagrams")
    assert done.returncode == 1 and "ModuleNotFoundError: No module named 'matplotlib'" in done.stderr


def test_lab_check_needs_nothing_from_the_extra():
    done = run_without(",".join(extras.LAB_EXTRA), "lab.check", "1", "--solution")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 12 checks pass" in done.stdout


def test_a_subcommand_module_that_imports_the_extra_at_import_time(tmp_path, monkeypatch, capsys):
    """The other path through ``cli.main``: the import in ``build_parser`` itself fails."""
    (tmp_path / "toy_command.py").write_text("import psutil\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "toy", ("toy_command", "a command that needs psutil"))
    monkeypatch.delitem(sys.modules, "psutil", raising=False)

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name == "psutil":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    monkeypatch.setattr(sys, "meta_path", [Missing(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["tlsproxy"])
    assert cli.main(["toy"]) == 2
    assert capsys.readouterr().err == f"tlsproxy toy needs psutil, which is not installed: {INSTALL}\n"
