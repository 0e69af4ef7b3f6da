"""The student handout (``python -m lab.handout``) holds the exercises but not the answers,
and its checkers run inside it; the installed package carries no solutions either.

The handout is built into a temporary folder with the real command, then
``python -m lab.check 1`` runs in a subprocess with that folder as its working
directory, exactly as a student runs it beside an installed ``proxy``/``course``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lab.check import EXERCISES
from lab.handout import WITHHELD, withheld_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def handout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("handout") / "tls-lab"
    result = subprocess.run([sys.executable, "-m", "lab.handout", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={"PYTHONIOENCODING": "utf-8", "PATH": "/usr/bin:/bin"})


def test_the_handout_holds_no_solution_and_no_answer(handout):
    assert not withheld_files(handout), withheld_files(handout)
    for withheld in WITHHELD:
        assert not (handout / withheld).exists(), withheld
    names = {path.name for path in handout.rglob("*")}
    assert "INSTRUCTORS.md" not in names and "ANSWERS.md" not in names
    # Not even under another name: no file's text is a reference solution's or an answer key's.
    secret = {path.read_bytes() for path in (REPO / "lab" / "solutions").glob("*.py")}
    secret |= {path.read_bytes() for path in (REPO / "lab" / "answer-key").glob("*.md")}
    secret.add((REPO / "lab" / "wireshark" / "ANSWERS.md").read_bytes())
    leaked = [path for path in handout.rglob("*") if path.is_file() and path.read_bytes() in secret]
    assert not leaked, leaked
    assert "INSTRUCTORS.md" not in (handout / "lab" / "README.md").read_text()


def test_the_handout_holds_what_a_student_needs(handout):
    for exercise in EXERCISES.values():
        for name in ("README.md", "student.py"):
            copied = handout / "lab" / exercise.folder / name
            original = REPO / "lab" / exercise.folder / name
            assert copied.read_bytes() == original.read_bytes(), copied
    assert (handout / "lab" / "harness.py").is_file() and (handout / "lab" / "checks" / "ex6.py").is_file()
    assert (handout / "lab" / "wireshark" / "QUESTIONS.md").is_file()
    assert sorted(p.name for p in (handout / "tests" / "fixtures" / "clienthello").glob("*.bin")) == \
        sorted(p.name for p in (REPO / "tests" / "fixtures" / "clienthello").glob("*.bin"))
    assert (handout / "captures" / "terminate-tls13" / "client-leg.pcap").is_file()
    assert (handout / "captures" / "terminate-tls13" / "keys.log").is_file()
    assert not (handout / "course").exists(), "a course/ folder would shadow the installed course package"
    notebooks = sorted((handout / "notebooks").glob("*.ipynb"))
    assert [n.name for n in notebooks] == sorted(n.name for n in (REPO / "notebooks").glob("[0-9]*.ipynb"))
    for notebook in notebooks:
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, notebook.name
    readme = (handout / "README.md").read_text()
    assert "pip install" in readme and "make venv" in readme and "python -m lab.check 1" in readme


def test_a_checker_runs_inside_the_handout_against_the_untouched_starter(handout):
    result = run_in(handout, "-m", "lab.check", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "checker itself failed" not in result.stdout
    assert "checking lab/ex1_parse_request/student.py" in result.stdout  # the handout's own file
    assert "✗ step 1: split_head finds the empty line that ends a head — not written yet (step 1: split_head)" \
        in result.stdout
    assert "0 of 12 checks pass. Next: step 1 of the README." in result.stdout


def test_notebook_9_finds_the_downgrade_vectors_inside_the_handout(handout):
    """Step 4's cell (``VECTORS = downgrade_vectors()``), run where Jupyter runs it, the handout's
    notebooks/ folder, loads the handout's copy of tests/vectors/h2_downgrade.py, the whole table."""
    from tests.vectors.h2_downgrade import H2_VECTORS

    notebook = next((handout / "notebooks").glob("09-*.ipynb"))
    cells = ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]
    assert any("VECTORS = downgrade_vectors()" in cell for cell in cells), "the cell this test replays changed"
    script = ("import sys\nfrom course.h2lab import downgrade_vectors\nVECTORS = downgrade_vectors()\n"
              "print(sys.modules['h2_downgrade_vectors'].__file__)\nprint(' '.join(VECTORS))")
    result = run_in(handout / "notebooks", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded, ids = result.stdout.splitlines()
    assert Path(loaded).resolve() == (handout / "tests" / "vectors" / "h2_downgrade.py").resolve()
    assert ids.split() == [vector.id for vector in H2_VECTORS]
    assert (handout / "tests" / "vectors" / "h2_downgrade.py").read_bytes() == \
        (REPO / "tests" / "vectors" / "h2_downgrade.py").read_bytes()


def test_a_solved_exercise_passes_inside_the_handout(handout, tmp_path):
    """The exercise-5 checker reads its fixtures from the handout; a solution there passes."""
    result = run_in(handout, "-m", "lab.check", "5", "--file", str(EXERCISES[5].solution_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 12 checks pass." in result.stdout


def test_asking_for_the_solution_inside_the_handout_says_there_is_none(handout):
    result = run_in(handout, "-m", "lab.check", "1", "--solution")
    assert result.returncode == 2
    assert result.stdout.strip().startswith("The reference solutions are not part of the student handout")
    listing = run_in(handout, "-m", "lab")
    assert listing.returncode == 0 and "--solution" not in listing.stdout and "INSTRUCTORS" not in listing.stdout


def test_the_handout_refuses_a_folder_that_is_not_empty(handout):
    result = subprocess.run([sys.executable, "-m", "lab.handout", "--out", str(handout)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "is not empty" in result.stderr


def test_the_installed_package_carries_no_solutions():
    """What pip would install from pyproject.toml: lab.solutions is left out."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "[tool.setuptools] in pyproject.toml is still beta"
        packages = apply_configuration(Distribution(), REPO / "pyproject.toml").packages
    assert "lab" in packages and "proxy" in packages and "course" in packages
    assert not [p for p in packages if p.startswith("lab.solutions")], packages


def test_the_install_line_adds_the_lab_extra_to_any_kind_of_requirement():
    from lab.handout import with_lab_extra

    assert with_lab_extra("tls-termination-lab") == "tls-termination-lab[lab]"
    assert with_lab_extra("dist/tls_termination_lab-0.1.0-py3-none-any.whl") == \
        "dist/tls_termination_lab-0.1.0-py3-none-any.whl[lab]"
    assert with_lab_extra("tls-termination-lab @ git+https://example.invalid/lab.git") == \
        "tls-termination-lab[lab] @ git+https://example.invalid/lab.git"
