"""``python -m lab.handout --out DIR``: write the student handout, without the answers.

Theory of operation
-------------------
A student works in a folder of their own beside an installed copy of this project
(``pip install`` gives the ``proxy`` and ``course`` packages the exercises import;
the package carries no solutions, see ``pyproject.toml``'s ``packages.find``).  The
handout is that folder::

    DIR/
      README.md            how to install, run a check, open the notebooks (``STUDENT_README``)
      Makefile             make venv / make check LAB=N / make lab
      lab/                 the six exercises (README + student.py), the checkers, the harness,
                           the lab network (topology/), example configs, the Wireshark sheet
      notebooks/           the numbered notebooks, outputs cleared
      captures/            the bundled captures (course/data/example-capture): pcaps + key logs
      tests/fixtures/clienthello/   the real ClientHellos exercise 5's checker reads
      tests/vectors/h2_downgrade.py the HTTP/2 downgrade vectors notebook 9 replays

What is copied is a list of (source, destination, glob) rules, ``INCLUDED``; what
must never be copied is a list of paths, ``WITHHELD`` (the reference solutions, the
answer keys, the instructor's guide, the Wireshark answers, this tool).  ``build``
copies by the first and then refuses to finish if anything in the second got in,
so a new file under ``lab/`` cannot leak by accident; the test suite builds a
handout and runs a checker inside it.

``python -m lab.check N`` works inside the handout because ``python -m`` puts the
current folder first on ``sys.path``: ``lab`` is the handout's own copy (with the
student's files), while ``proxy`` and ``course`` come from the installed package.
The captures go to ``captures/`` rather than ``course/data/``: a ``course/`` folder
in the handout would shadow the installed ``course`` package.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    source: str  # a folder of the repository
    destination: str  # the folder it becomes in the handout
    patterns: tuple[str, ...]  # which files, relative to ``source`` (fnmatch on the relative path)


INCLUDED: tuple[Rule, ...] = (
    Rule("lab", "lab", ("__init__.py", "__main__.py", "check.py", "harness.py", "README.md")),
    Rule("lab/checks", "lab/checks", ("*.py",)),
    Rule("lab", "lab", ("ex[0-9]_*/README.md", "ex[0-9]_*/student.py")),
    Rule("lab/topology", "lab/topology", ("*.py", "*.sh", "README.md")),
    Rule("lab/configs", "lab/configs", ("*.toml",)),
    Rule("lab/wireshark", "lab/wireshark", ("QUESTIONS.md",)),
    Rule("notebooks", "notebooks", ("[0-9]*.ipynb",)),
    Rule("course/data/example-capture", "captures", ("*",)),
    Rule("tests/fixtures/clienthello", "tests/fixtures/clienthello", ("*.bin", "README.md")),
    # Notebook 9 replays the repository's own downgrade table rather than a copy of it
    # (course.h2lab.downgrade_vectors loads tests/vectors/h2_downgrade.py by path, from the
    # folder above notebooks/). The file is data and imports only dataclasses; the loader
    # needs no tests/__init__.py, and none is copied: the handout has no test suite.
    Rule("tests/vectors", "tests/vectors", ("h2_downgrade.py",)),
)

# Never in a handout, whatever INCLUDED says (paths relative to the handout or the repo).
WITHHELD: tuple[str, ...] = (
    "lab/solutions",
    "lab/answer-key",
    "lab/INSTRUCTORS.md",
    "lab/wireshark/ANSWERS.md",
    "lab/handout.py",
)

DEFAULT_PACKAGE = "tls-termination-lab"


def _without_instructor_paragraphs(text: str) -> str:
    """lab/README.md for students: without the paragraph that points at withheld files,
    and with the captures where the handout has them."""
    paragraphs = [p for p in text.split("\n\n") if not p.startswith("Instructors start with")]
    text = "\n\n".join(paragraphs).replace("`course/data/example-capture/`", "`captures/`")
    return text.rstrip("\n") + "\n"


FOR_STUDENTS = {"lab/README.md": _without_instructor_paragraphs}  # files edited on the way out


def build(out: str | Path, *, package: str = DEFAULT_PACKAGE, repo: Path = REPO) -> list[Path]:
    """Write the handout into ``out`` (which must not exist or be empty); the files written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new folder")
    written: list[Path] = []
    for rule in INCLUDED:
        for source in _matching(repo / rule.source, rule.patterns):
            relative = source.relative_to(repo / rule.source)
            target = out / rule.destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix == ".ipynb":
                _write_without_outputs(source, target)
            elif (edit := FOR_STUDENTS.get(f"{rule.destination}/{relative.as_posix()}")) is not None:
                target.write_text(edit(source.read_text(encoding="utf-8")), encoding="utf-8")
            else:
                shutil.copy2(source, target)
            written.append(target)
    requirement = with_lab_extra(package)
    notebooks = sum(1 for path in written if path.suffix == ".ipynb")
    (out / "README.md").write_text(STUDENT_README.format(requirement=requirement, notebooks=notebooks),
                                   encoding="utf-8")
    (out / "Makefile").write_text(STUDENT_MAKEFILE.format(package=package), encoding="utf-8")
    # The same pinned versions as the course repository (``make lock`` there refreshes them).
    shutil.copy2(repo / "constraints.txt", out / "constraints.txt")
    written += [out / "README.md", out / "Makefile", out / "constraints.txt"]
    leaked = withheld_files(out)
    if leaked:
        shutil.rmtree(out)
        raise RuntimeError(f"the handout would contain withheld files: {[str(p) for p in leaked]}")
    return written


def with_lab_extra(package: str) -> str:
    """What to pip install for ``package`` with the ``lab`` extra (Jupyter, scapy, ...):
    ``name[lab]``, ``path/to.whl[lab]``, or ``name[lab] @ URL`` for a URL requirement."""
    name, at, url = package.partition(" @ ")
    return f"{name}[lab]{at}{url}"


def withheld_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that must never be handed out."""
    folder = Path(folder)
    return [path for path in folder.rglob("*")
            if any(_within(path.relative_to(folder).as_posix(), withheld) for withheld in WITHHELD)]


def _within(relative: str, withheld: str) -> bool:
    return relative == withheld or relative.startswith(withheld + "/")


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and "__pycache__" not in path.parts and any(
                fnmatch.fnmatch(relative, pattern) for pattern in patterns):
            found.append(path)
    return found


def _write_without_outputs(source: Path, target: Path) -> None:
    """The notebook with every code cell's outputs and execution count cleared."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


STUDENT_README = """\
# TLS Termination Lab: student handout

Six exercises that build pieces of a TLS-terminating reverse proxy, {notebooks} notebooks that
watch one work, and real captures to open in Wireshark.

```
lab/exN_*/README.md     read first: goal, background with the RFC sections, steps, questions
lab/exN_*/student.py    the file you edit (run it: each has a small demo)
lab/wireshark/QUESTIONS.md   questions on the captures in captures/ (Wireshark or tshark)
notebooks/              open with Jupyter (below)
captures/               real captures of the lab's setups: pcaps and the key logs that decrypt them
```

## Install (once)

You need Python 3.11 or newer. The exercises import the course's Python package
(`proxy`, the proxy itself, and `course`, its tooling); install it into a virtual
environment in this folder:

```
python3 -m venv .venv
.venv/bin/pip install -c constraints.txt "{requirement}"
```

or, the same: `make venv` (`make venv PACKAGE=...` if your instructor gives you another
wheel file, or `PACKAGE="tls-termination-lab @ URL"`). The package does not contain
the exercises' solutions; your work stays in this folder.

## Check an exercise

Always from this folder (so that `lab` is this folder's copy, with your files):

```
.venv/bin/python lab/ex1_parse_request/student.py   # run your file's demo
.venv/bin/python -m lab.check 1                     # one ✓/✗ line per check, with a hint
make check LAB=1                                    # the same
.venv/bin/python -m lab --progress                  # all six at a glance
```

`python -m lab.check N --file PATH` checks another file. A ✓ with a note means that
you made a choice the RFC allows and the proxy does not (or the reverse): read the
note. A checker refuses a file that calls the proxy's own implementation of the
exercise instead of doing the work; it says which line.

No exercise needs root or the network: everything runs on 127.0.0.1.

## Notebooks

```
.venv/bin/jupyter lab --notebook-dir=notebooks      # add --allow-root if you are root
make lab                                            # the same
```

## Wireshark

`lab/wireshark/QUESTIONS.md` asks about the captures in `captures/` (start with
`captures/terminate-tls13/`). Each bundle's `keys.log` is the key log that decrypts it
(Wireshark: Preferences > Protocols > TLS > (Pre)-Master-Secret log filename; tshark:
`-o tls.keylog_file:captures/terminate-tls13/keys.log`).
"""

STUDENT_MAKEFILE = """\
# The student handout: `make venv` once, then `make check LAB=N`.
PYTHON  ?= python3
PACKAGE ?= {package}
VENV    := .venv
PY      := $(VENV)/bin/python

.PHONY: venv check progress lab

venv: $(VENV)/.installed

# PACKAGE with the lab extra: NAME[lab], FILE.whl[lab], or NAME[lab] @ URL.
$(VENV)/.installed:
\t@test -x $(PY) || $(PYTHON) -m venv $(VENV)
\t$(PY) -m pip install --quiet -c constraints.txt "$(shell echo '$(PACKAGE)' | sed 's/ @ /[lab] @ /; t; s/$$/[lab]/')"
\t@touch $@

check: $(VENV)/.installed
\t$(PY) -m lab.check $(LAB)

progress: $(VENV)/.installed
\t$(PY) -m lab --progress

lab: $(VENV)/.installed
\t$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.handout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--package", default=DEFAULT_PACKAGE,
                        help="what students pip install (a name, a wheel file or a URL); default %(default)s")
    args = parser.parse_args(argv)
    try:
        written = build(args.out, package=args.package)
    except (FileExistsError, RuntimeError) as error:
        print(f"python -m lab.handout: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out}; withheld: {', '.join(WITHHELD)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
