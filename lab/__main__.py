"""``python -m lab [--progress]``: the exercises, where they are, and how to check them.

``--progress`` runs every exercise's checks against your files and prints one line
per exercise ("7 of 12 checks pass"); ``python -m lab.check N`` gives the details.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

from lab.check import EXERCISES, LAB, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--progress", action="store_true", help="run every checker on your files")
    args = parser.parse_args(argv)
    print("TLS Termination Lab: exercises (read the README in each folder, edit its student.py)\n")
    for exercise in EXERCISES.values():
        folder = f"lab/{exercise.folder}/"
        line = f"  {exercise.number}. {exercise.title:55} {folder:27}"
        if args.progress:
            with contextlib.redirect_stdout(io.StringIO()):
                report = run(exercise.number)
            line += f"  {report.passed:2} of {len(report.results)} checks pass"
        print(line.rstrip())
    print("\nCheck one:         python -m lab.check N      (or: make check LAB=N)")
    if (LAB / "solutions").is_dir():  # not in the student handout
        print("See the answer:    python -m lab.check N --solution   (lab/solutions/exN.py)")
    if (LAB / "INSTRUCTORS.md").is_file():
        print("Instructors:       lab/INSTRUCTORS.md")
    print("Wireshark:         lab/wireshark/QUESTIONS.md (questions on the bundled captures)")
    print("The lab network:   python -m lab.topology up | down | status   (root; see lab/topology/README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
