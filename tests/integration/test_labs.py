"""The lab exercises' checkers (``python -m lab.check N``), run the way a student runs them.

* Every reference solution (``lab/solutions/exN.py``) passes every check of its
  exercise: a broken exercise, checker or harness is caught here.
* Every untouched starter file (``lab/exN_*/student.py``) loads, runs and fails each
  check as "not written yet", without a crash of the checker or a timeout.
* The checks are not toothless: a solution with one typical mistake put back in fails
  the check written for that mistake.
* The command line prints one ✓/✗ line per check and exits 0 only when all pass.

The checks use real loopback sockets, TLS handshakes, origins and a ProxyServer, so
this file is an integration test; each checker takes well under 5 seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lab import check as lab_check
from lab.check import EXERCISES

REPO = Path(__file__).resolve().parents[2]
NUMBERS = sorted(EXERCISES)


def failures(report) -> list[str]:
    return [f"step {r.check.step} {r.check.name}: {r.outcome}: {r.detail}" for r in report.results if not r.passed]


def untouched(path: Path) -> bool:
    """False only when git says ``path`` differs from the last commit (a student's work).

    A student who has started an exercise and runs ``make test`` should not see this
    file fail because their starter no longer fails.  Without git (a tarball) the file
    is taken as untouched.
    """
    try:
        result = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=REPO,
                                capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return result.returncode != 1


# --------------------------------------------------------------------------- solutions and starters
@pytest.mark.parametrize("number", NUMBERS)
def test_reference_solution_passes_every_check(number):
    report = lab_check.run(number, solution=True)
    assert not report.load_error
    assert report.all_passed, failures(report)
    steps = {r.check.step for r in report.results}
    assert steps == set(range(1, max(steps) + 1)), f"every README step has a check: {sorted(steps)}"


@pytest.mark.parametrize("number", NUMBERS)
def test_starter_runs_and_fails_as_not_written_yet(number):
    starter = EXERCISES[number].student_file
    report = lab_check.run(number)
    outcomes = Counter(r.outcome for r in report.results)
    assert not outcomes["broken"], failures(report)
    if untouched(starter):
        assert not report.load_error
        assert set(outcomes) == {"todo"}, failures(report)
        assert all(r.detail.startswith("not written yet (step ") for r in report.results)
    # else: a student's work in progress may fail, crash or loop; the checker must only
    # report it, which the assertion on "broken" above covers.


@pytest.mark.parametrize("number", NUMBERS)
def test_starter_is_a_runnable_program(number):
    """`python lab/exN_*/student.py` runs its demo and says what is not written yet."""
    starter = EXERCISES[number].student_file
    if not untouched(starter):
        pytest.skip(f"{starter.name} of exercise {number} is a student's work in progress")
    result = subprocess.run([sys.executable, str(starter)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "not written yet: step " in result.stdout


@pytest.mark.parametrize("number", [n for n in NUMBERS if n != 3])  # 3's demo serves until Ctrl-C
def test_solution_demo_runs(number):
    result = subprocess.run([sys.executable, str(EXERCISES[number].solution_file)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_every_exercise_has_its_files():
    for exercise in EXERCISES.values():
        readme = exercise.readme.read_text()
        assert readme.startswith(f"# Exercise {exercise.number}"), exercise.readme
        for section in ("## Goal", "## Background", "## Steps", "## Questions"):
            assert section in readme, f"{exercise.readme} lacks {section}"
        assert "RFC" in readme
        assert exercise.solution_file.is_file()
        # Labs import the package instead of copying it.
        assert "from proxy" in exercise.student_file.read_text()
    assert (REPO / "lab" / "INSTRUCTORS.md").is_file()


# --------------------------------------------------------------------------- the checks have teeth
# (exercise, text in the reference solution, the same line with a typical mistake, the
#  name of the check that must catch it)
MISTAKES = [
    (1, 'parts = line.split(" ")', "parts = line.split()", "refuses malformed request-lines"),
    (1, 'if text.count("\\r") != len(lines) - 1 or text.count("\\n") != len(lines) - 1:', "if False:",
     "refuses a bare LF or a bare CR"),
    (2, 'named_by_connection = set(headers.tokens("connection"))', "named_by_connection = set()",
     "names in Connection"),
    (2, 'return ", ".join(headers.get_all("x-forwarded-for") + [client_ip])', "return client_ip",
     "appends the client's address"),
    (3, "return contexts.get(server_name.lower())", "return contexts.get(server_name)",
     "ignoring case"),
    (3, "            sslobj.context = chosen", "            pass", "certificate for the name it sent"),
    (4, "first, second = self.random.sample(candidates, 2)",
     "first, second = self.random.choice(candidates), self.random.choice(candidates)",
     "two *different* backends"),
    (4, "backend = min(candidates, key=lambda b: self.last_picked.get(b.name, -1))",
     "backend = candidates[self.clock % len(candidates)]", "skips a backend that is down"),
    (5, "if len(body) > body_length:", "if False:", "refuses what can never become a ClientHello"),
    (5, "if not host_name or any(chr(byte) not in ALLOWED for byte in host_name):", "if not host_name:",
     "server-name policy"),
    (6, 'unpadded = plaintext.rstrip(b"\\x00")', "unpadded = plaintext", "without padding"),
    (6, 'if label == "CLIENT_TRAFFIC_SECRET_0" and random == client_random', 'if label == "CLIENT_TRAFFIC_SECRET_0"',
     "uses the right secret"),
]


@pytest.mark.parametrize("number,right,wrong,caught_by", MISTAKES,
                         ids=[f"ex{m[0]}-{m[3][:30]}" for m in MISTAKES])
def test_a_typical_mistake_fails_its_check(tmp_path, number, right, wrong, caught_by):
    source = EXERCISES[number].solution_file.read_text()
    assert source.count(right) == 1, f"the solution no longer contains {right!r}: update MISTAKES"
    mistaken = tmp_path / f"ex{number}.py"
    mistaken.write_text(source.replace(right, wrong))
    report = lab_check.run(number, mistaken)
    [target] = [r for r in report.results if caught_by in r.check.name]
    assert target.outcome in ("fail", "crash"), (target.outcome, target.detail)
    assert not any(r.outcome in ("broken", "timeout") for r in report.results), failures(report)


def test_a_crash_names_the_students_line(tmp_path):
    source = EXERCISES[1].solution_file.read_text()
    line = '    end = buffer.find(b"\\r\\n\\r\\n")'
    assert line in source
    broken = tmp_path / "student.py"
    broken.write_text(source.replace(line, "    end = 1 // 0"))
    number = 1 + source[: source.index(line)].count("\n")
    report = lab_check.run(1, broken)
    first = report.results[0]
    assert first.outcome == "crash"
    assert f"raised ZeroDivisionError: integer division or modulo by zero (student.py line {number})" == first.detail


def test_a_file_that_does_not_load_fails_every_check_without_running_them(tmp_path):
    broken = tmp_path / "student.py"
    broken.write_text("def split_head(buffer):\n    return (\n")
    report = lab_check.run(1, broken)
    assert "raised SyntaxError" in report.load_error and "line 2" in report.load_error
    assert not report.all_passed and report.passed == 0
    assert {r.outcome for r in report.results} == {"crash"}


# --------------------------------------------------------------------------- the command line
def run_cli(*args: str, encoding: str = "utf-8") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab.check", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONIOENCODING": encoding})


def test_cli_prints_one_line_per_check_and_exits_0_only_when_all_pass():
    checks = len(EXERCISES[2].checklist().checks)
    passing = run_cli("2", "--solution")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert passing.stdout.count("\n  ✓ step ") == checks
    assert f"All {checks} checks pass." in passing.stdout

    starter = EXERCISES[2].student_file
    if untouched(starter):
        failing = run_cli("2")
        assert failing.returncode == 1
        lines = [line for line in failing.stdout.splitlines() if line.startswith("  ✗ step ")]
        assert len(lines) == checks
        assert all("not written yet" in line for line in lines)
        assert "0 of 8 checks pass. Next: step 1 of the README." in failing.stdout


def test_cli_falls_back_to_ascii_marks_on_a_terminal_without_unicode():
    result = run_cli("1", "--solution", encoding="ascii")
    assert result.returncode == 0, result.stderr
    assert "  ok  step 1: split_head" in result.stdout


def test_python_dash_m_lab_lists_the_six_exercises():
    result = subprocess.run([sys.executable, "-m", "lab"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for exercise in EXERCISES.values():
        assert f"lab/{exercise.folder}/" in result.stdout
