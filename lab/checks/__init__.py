"""The checkers' machinery: run a student's code against real inputs, say what passes.

Theory of operation
-------------------
Each exercise has a module ``lab.checks.exN`` with one ``Checklist``; its checks are
small functions, declared in the order of the README's steps::

    CHECKLIST = Checklist("Parse a request head")

    @CHECKLIST.check(2, "parse_request_line refuses a malformed request-line",
                     hint="RFC 9112 §3: exactly one SP between the three parts")
    def _(student, lab):
        ...call the student's functions, compare with what proxy.http1 does...

A check *passes* by returning and *fails* by raising ``Fail("what went wrong")``.
It feeds the student's functions real inputs (byte strings, loopback sockets,
TLS connections) and compares the answers with what the ``proxy`` package gives for
the same input, so the package is the answer key and nothing is copied.  Where the
RFC leaves a choice (a MAY, or "reject or repair") and the student took the other
one than the package, the check still passes and returns a note saying so
(``return "note: ..."``), printed after the ✓.

Because the package is the answer key, a file that calls it instead of doing the
work would pass everything: each ``Checklist`` names the reference code its
exercise must not call (``Reference``, ``lab/checks/delegation.py``), and a file
that uses it is refused in one line before any check runs.

Everything else the student's code may do is caught and explained, one line per
check (``Result.outcome``):

=========  ===========================================================================
pass       the check returned
todo       the student's code raised ``NotImplementedError``: the step is still a TODO
fail       ``Fail``: the code ran but gave the wrong answer
crash      the student's code raised something else (the line in their file is shown)
timeout    the check ran past its time limit (an endless loop, a ``recv`` that never
           returns); each check runs in its own thread, so one hang does not stop the rest
broken     an exception that did not come from the student's file: a bug in the checker
refused    not run: the file hands the exercise to the reference implementation
=========  ===========================================================================

``Lab`` is what the checks of one run share: a scratch folder, the demo PKI and
anything else made once on first use (``lab.once``), all removed at the end.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.checks.delegation import Reference, find_delegation

__all__ = ["Background", "Check", "Checklist", "Fail", "Lab", "Reference", "Report", "Result", "need",
           "not_loaded", "run_checks", "show"]

DEFAULT_TIMEOUT = 10.0  # a guard against endless loops; every check takes well under a second


class Fail(AssertionError):
    """The student's code ran and gave a wrong answer; the message says which."""


def need(student: ModuleType, name: str) -> Any:
    """The student's function (or class) ``name``, or a Fail that says it is missing."""
    try:
        return getattr(student, name)
    except AttributeError:
        raise Fail(f"{Path(student.__file__).name} has no {name!r} (renamed or deleted?)") from None


def show(value: object, limit: int = 90) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- declaring checks
@dataclass(frozen=True)
class Check:
    step: int  # the README step it belongs to
    name: str  # what it checks, as a sentence
    hint: str  # where to look when it fails (README step, RFC section, proxy module)
    function: Callable[[ModuleType, "Lab"], None]
    timeout: float = DEFAULT_TIMEOUT


class Checklist:
    """The checks of one exercise, in README order, and the reference code it must not call."""

    def __init__(self, title: str, reference: Reference | None = None) -> None:
        self.title = title
        self.reference = reference
        self.checks: list[Check] = []

    def check(self, step: int, name: str, *, hint: str, timeout: float = DEFAULT_TIMEOUT):
        def register(function: Callable[[ModuleType, Lab], None]) -> Callable[[ModuleType, Lab], None]:
            self.checks.append(Check(step, name, hint, function, timeout))
            return function

        return register


# --------------------------------------------------------------------------- shared resources
class Lab:
    """What the checks of one run share; ``close()`` cleans up."""

    def __init__(self) -> None:
        self._tmp: Path | None = None
        self._pki = None
        self._made: dict[str, Any] = {}
        self._lock = threading.RLock()  # once() may make something that needs tmp or pki

    @property
    def tmp(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="tlslab-check-"))
            return self._tmp

    @property
    def pki(self):
        """The demo CA and certificates (``proxy.pki.ensure_demo_certs``), made on first use."""
        from proxy.pki import ensure_demo_certs

        tmp = self.tmp
        with self._lock:
            if self._pki is None:
                self._pki = ensure_demo_certs(tmp / "pki")
            return self._pki

    def once(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``name`` is asked for in this run; the same value after."""
        with self._lock:
            if name not in self._made:
                self._made[name] = make()
            return self._made[name]

    def close(self) -> None:
        """Remove the scratch folder (servers are stopped by the checks that start them)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


# --------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Result:
    check: Check
    outcome: str  # pass | todo | fail | crash | timeout | broken | refused (see the module docstring)
    detail: str = ""  # for a pass: an optional note (the RFC's other permitted choice was taken)

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


@dataclass
class Report:
    title: str
    path: Path
    results: list[Result] = field(default_factory=list)
    load_error: str = ""  # the student's file could not even be imported
    refused: str = ""  # the file delegates to the reference implementation; no check was run
    output: str = ""  # what the student's code printed while it was checked

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def all_passed(self) -> bool:
        return not self.load_error and not self.refused and all(r.passed for r in self.results)

    def lines(self, *, ascii_only: bool = False) -> list[str]:
        yes, no = ("ok ", "XX ") if ascii_only else ("✓", "✗")
        out = [self.title, f"checking {_display_path(self.path)}", ""]
        if self.load_error:
            out.append(f"  {no} {_display_path(self.path)} loads: {self.load_error}")
        if self.refused:  # one line, not one per check: none of them ran
            out.append(f"  {no} {self.refused}")
            out += ["", f"0 of {len(self.results)} checks run: the file must do the work itself."]
            return out
        for result in self.results:
            check = result.check
            line = f"  {yes if result.passed else no} step {check.step}: {check.name}"
            if result.outcome == "todo":  # the TODO's own message says what to write
                line += f" — {result.detail}"
            elif result.passed and result.detail:  # a note: the RFC's other permitted choice
                line += f" — {result.detail}"
            elif not result.passed:
                line += f" — {result.detail} (hint: {check.hint})"
            out.append(line)
        out.append("")
        if self.output:
            count = len(self.output.splitlines())
            out.append(f"(your code printed {count} line{'s' * (count != 1)} while it was checked; "
                       "add --show-output to see them)")
        total = len(self.results)
        if self.all_passed:
            out.append(f"All {total} checks pass. Now answer the questions at the end of the README.")
        else:
            first = next((r for r in self.results if not r.passed), None)
            where = f" Next: step {first.check.step} of the README." if first and not self.load_error else ""
            out.append(f"{self.passed} of {total} checks pass.{where}")
        return out


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_checks(checklist: Checklist, student: ModuleType, path: Path, *, title: str = "") -> Report:
    """Run every check of ``checklist`` against the loaded ``student`` module."""
    report = Report(title or checklist.title, path)
    delegation = find_delegation(path, checklist.reference)
    if delegation is not None:
        report.refused = delegation.message(path, checklist.reference or Reference(forbid=()))
        report.results = [Result(check, "refused", "not run: the file delegates to the reference")
                          for check in checklist.checks]
        return report
    lab = Lab()
    printed = io.StringIO()
    try:
        # What the student's code prints (debugging output, a server's log line) is kept
        # apart, so the report stays one line per check; `--show-output` shows it.
        with contextlib.redirect_stdout(printed):
            for check in checklist.checks:
                report.results.append(_run_one(check, student, lab, path))
    finally:
        lab.close()
    report.output = printed.getvalue()
    return report


def not_loaded(checklist: Checklist, path: Path, error: BaseException, *, title: str = "") -> Report:
    """The report for a file that could not be imported: every check fails, none runs."""
    report = Report(title or checklist.title, path, load_error=_describe(error, path))
    report.results = [Result(check, "crash", "not run: the file does not load") for check in checklist.checks]
    return report


def _run_one(check: Check, student: ModuleType, lab: Lab, path: Path) -> Result:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["note"] = check.function(student, lab)
        except BaseException as error:  # reported below, whatever it is
            box["error"] = error

    thread = threading.Thread(target=target, name=f"check-{check.step}", daemon=True)
    thread.start()
    thread.join(check.timeout)
    if thread.is_alive():
        return Result(check, "timeout", f"still running after {check.timeout:g} s "
                                        "(an endless loop, or a read that never returns?)")
    error = box.get("error")
    if error is None:
        note = box.get("note")
        return Result(check, "pass", note if isinstance(note, str) else "")
    if isinstance(error, Fail):
        return Result(check, "fail", str(error))
    if isinstance(error, NotImplementedError):
        todo = str(error)
        return Result(check, "todo", f"not written yet ({todo})" if todo else "not written yet")
    if _raised_in(error, path):
        return Result(check, "crash", _describe(error, path))
    return Result(check, "broken", f"the checker itself failed ({type(error).__name__}: {error}); "
                                   "please tell your instructor")


def _raised_in(error: BaseException, path: Path) -> bool:
    """Did ``error`` pass through the student's file on its way up?"""
    wanted = str(path.resolve())
    frames = traceback.extract_tb(error.__traceback__)
    for _ in range(10):  # follow `raise ... from` and `during handling` chains a little way
        error = error.__cause__ or error.__context__
        if error is None:
            break
        frames += traceback.extract_tb(error.__traceback__)
    return any(str(Path(frame.filename).resolve()) == wanted for frame in frames)


def _describe(error: BaseException, path: Path) -> str:
    """``ValueError: message (student.py line 42)`` for the deepest line of ``path``."""
    wanted = str(path.resolve())
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if str(Path(frame.filename).resolve()) == wanted:
            line = frame.lineno
    if isinstance(error, SyntaxError) and error.lineno:
        line = error.lineno
    where = f" ({path.name} line {line})" if line else ""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"raised {type(error).__name__}{': ' + message[:120] if message else ''}{where}"


# --------------------------------------------------------------------------- helpers for checks
class Background:
    """Run ``function(*args)`` in a thread; ``join()`` re-raises what it raised.

    Servers under test run here while the check plays the client.  When the student's
    server code fails, the client usually sees only a closed connection; re-raising
    the server's exception reports the real cause (a TODO, a crash and its line).
    """

    def __init__(self, function: Callable[..., Any], *args: Any,
                 on_error: Callable[[], None] | None = None) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.on_error = on_error
        self.thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self.thread.start()

    def _run(self, function: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = function(*args)
        except BaseException as error:
            self.error = error
            if self.on_error is not None:
                # e.g. close the listener: clients waiting on a dead server fail at once
                # (connection refused or reset) instead of after their timeout.
                self.on_error()

    def join(self, timeout: float = 5.0) -> Any:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.thread.is_alive():
            raise Fail(f"the server side did not finish within {timeout:g} s")
        return self.result

    def raise_if_failed(self, timeout: float = 0.5) -> None:
        """After a failed client: wait briefly for the server side, re-raise its error."""
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
