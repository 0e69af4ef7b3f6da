"""``python -m lab.check N [--solution | --file PATH]``: check lab exercise N.

Theory of operation
-------------------
Exercise N lives in ``lab/exN_<topic>/``: a README with the steps and a
``student.py`` the student edits.  This command imports that file (or, with
``--solution``, the reference solution ``lab/solutions/exN.py``; with ``--file``, any
file), runs the exercise's checks (``lab/checks/exN.py``) against it and prints one
line per check, ✓ or ✗ with a hint.  The exit status is 0 only when every check
passes, so ``make check LAB=N`` and CI can use it.

The file is imported under its own module name, so the code under
``if __name__ == "__main__":`` (each starter's little demo) does not run.  Before
any check runs, the file is read (not run) for calls of the reference
implementation it is compared with (``lab/checks/delegation.py``).

In the student handout (``python -m lab.handout``) there is no ``lab/solutions``:
``--solution`` then says so in one line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lab.checks import Checklist, Report, not_loaded, run_checks

LAB = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Exercise:
    number: int
    folder: str  # lab/<folder>/ holds README.md and student.py
    title: str

    @property
    def student_file(self) -> Path:
        return LAB / self.folder / "student.py"

    @property
    def solution_file(self) -> Path:
        return LAB / "solutions" / f"ex{self.number}.py"

    @property
    def readme(self) -> Path:
        return LAB / self.folder / "README.md"

    def checklist(self) -> Checklist:
        return importlib.import_module(f"lab.checks.ex{self.number}").CHECKLIST


EXERCISES: dict[int, Exercise] = {
    exercise.number: exercise
    for exercise in [
        Exercise(1, "ex1_parse_request", "Parse a request head"),
        Exercise(2, "ex2_forward_headers", "Forward with X-Forwarded-For and hop-by-hop stripping"),
        Exercise(3, "ex3_tls_sni", "Terminate TLS with a certificate chosen by SNI"),
        Exercise(4, "ex4_balancer_strategy", "Write a balancer strategy the proxy loads"),
        Exercise(5, "ex5_clienthello_sni", "Parse a ClientHello for its server name"),
        Exercise(6, "ex6_decrypt_record", "Decrypt one TLS 1.3 record from a capture"),
    ]
}


def load(path: Path, module_name: str) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module named ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def run(number: int, path: str | Path | None = None, *, solution: bool = False) -> Report:
    """Check exercise ``number`` against ``path`` (default: the student's file, or the solution)."""
    exercise = EXERCISES[number]
    if path is None:
        path = exercise.solution_file if solution else exercise.student_file
    path = Path(path).resolve()
    checklist = exercise.checklist()
    title = f"Exercise {number}: {exercise.title}"
    kind = "solution" if solution else "student"
    try:
        module = load(path, f"lab_{kind}_ex{number}")
    except Exception as error:  # SyntaxError, ImportError, a crash at import time ...
        return not_loaded(checklist, path, error, title=title)
    try:
        return run_checks(checklist, module, path, title=title)
    finally:
        sys.modules.pop(module.__name__, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("exercise", type=int, choices=sorted(EXERCISES), help="exercise number")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--solution", action="store_true", help="check the reference solution instead")
    which.add_argument("--file", help="check this file instead of lab/exN_*/student.py")
    parser.add_argument("--show-output", action="store_true", help="also print what your code printed")
    args = parser.parse_args(argv)
    if args.solution and not EXERCISES[args.exercise].solution_file.is_file():
        print("The reference solutions are not part of the student handout (lab/solutions/ stays with the "
              "instructor).")
        return 2
    if not args.file and _installed_copy():
        print(f"note: this is the installed copy of lab/ ({LAB}), not your handout's; run python -m lab.check "
              "from your handout folder to check your own student.py files.")
    report = run(args.exercise, args.file, solution=args.solution)
    if args.show_output and report.output:
        print("what your code printed while it was checked:")
        print("".join(f"  | {line}\n" for line in report.output.splitlines()))
    ascii_only = not _can_print("✓✗—")
    for line in report.lines(ascii_only=ascii_only):
        print(line if not ascii_only else _ascii(line))
    return 0 if report.all_passed else 1


def _ascii(line: str) -> str:
    """A report line for a terminal that cannot print Unicode (check names cite "RFC 9112 §2.2")."""
    line = line.replace("—", "-").replace("§", "sec. ")
    return line.encode("ascii", "replace").decode("ascii")


def _installed_copy() -> bool:
    """Is this ``lab`` the one pip put in site-packages (the starters, not the student's files)?"""
    return any(part in ("site-packages", "dist-packages") for part in LAB.parts)


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
