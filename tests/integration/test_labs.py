"""The lab exercises' checkers (``python -m lab.check N``), run the way a student runs them.

* Every reference solution (``lab/solutions/exN.py``) passes every check of its
  exercise: a broken exercise, checker or harness is caught here.
* Every untouched starter file (``lab/exN_*/student.py``) loads, runs and fails each
  check as "not written yet", without a crash of the checker or a timeout.
* The checks are not toothless: a solution with one typical mistake put back in fails
  the check written for that mistake.
* The checks are not stricter than the RFCs: where an RFC lets an implementation choose
  and the proxy takes one choice, a solution that takes the other passes, with a note.
* A file that hands the exercise to the reference implementation is refused in one line,
  before any check runs.
* The command line prints one ✓/✗ line per check and exits 0 only when all pass.
* INSTRUCTORS.md's grading rubric lists exactly the checks there are.

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
    # (line.split() instead of line.split(" ") is no longer a mistake: RFC 9112 §3 lets a
    # recipient split on any whitespace, and the checker accepts it with a note.)
    (1, 'if version not in ("HTTP/1.1", "HTTP/1.0"):', 'if version.upper() not in ("HTTP/1.1", "HTTP/1.0"):',
     "refuses malformed request-lines"),
    (1, 'if text.count("\\r") != len(lines) - 1 or text.count("\\n") != len(lines) - 1:', "if False:",
     "bare LF or bare CR"),
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


# --------------------------------------------------------------------------- the RFC's other choices pass
# (exercise, [(text in the reference solution, the same code taking the RFC's other choice)],
#  {fragment of a check's name: text that check's note must contain})
PERMITTED = [
    (1, [
        ('parts = line.split(" ")', "parts = line.split()"),  # RFC 9112 §3: MAY split on whitespace
        (r'''    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"unsupported version {version!r}")''', r'''    if re.fullmatch(r"HTTP/1\.[1-9]", version):
        version = "HTTP/1.1"  # RFC 9110 §6.2: SHOULD be processed as 1.1
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"unsupported version {version!r}")'''),
        (r'''    text = head.decode("latin-1")
    lines = text.split("\r\n")''', r'''    text = head.decode("latin-1").replace("\x00", " ")  # RFC 9110 §5.5
    text = re.sub("\r?\n", "\r\n", text)  # RFC 9112 §2.2: MAY end a line at a bare LF
    text = re.sub("\r(?!\n)", " ", text)  # RFC 9112 §2.2: a bare CR -> SP
    lines = text.split("\r\n")'''),
    ], {"refuses malformed request-lines": "RFC 9110 §6.2", "bare LF or bare CR": "RFC 9112 §2.2 permits (MAY)",
        "refuses control characters": "RFC 9110 §5.5"}),
    (2, [
        ('return (set(HOP_BY_HOP) | named_by_connection) - {"host"}', "return set(HOP_BY_HOP) | named_by_connection"),
        ('    headers.set("X-Forwarded-For", forwarded_for(request.headers, client_ip))',
         '''    headers.set("X-Forwarded-For", forwarded_for(request.headers, client_ip))
    if "host" not in headers:  # RFC 9112 §3.2: a client MUST send Host
        headers.set("Host", request.headers.get("host"))
    headers.set("Via", "1.1 lab")  # RFC 9110 §7.6.3: a gateway MUST send Via'''),
    ], {"hop_by_hop_names lists": "RFC 9110 §7.6.1", "keeps exactly the fields": "RFC 9110 §7.6.1"}),
    (3, [
        ('''        if chosen is not None:
            sslobj.context = chosen
''', '''        if chosen is not None:
            sslobj.context = chosen
        elif server_name is not None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # RFC 6066 §3: the other action
'''),
    ], {"certificate for the name it sent": "unrecognized_name"}),
    (5, [
        ('''    if len(data) >= 2 and data[1] != 3:
        raise TLSParseError(f"record version major {data[1]}, not 3")''',
         "    pass  # RFC 8446 §5.1: legacy_record_version MUST be ignored"),
    ], {"refuses what can never become": "MUST be ignored"}),
]


@pytest.mark.parametrize("number,changes,notes", PERMITTED, ids=[f"ex{p[0]}" for p in PERMITTED])
def test_the_rfcs_other_permitted_choice_passes_with_a_note(tmp_path, number, changes, notes):
    source = EXERCISES[number].solution_file.read_text()
    for right, other in changes:
        assert source.count(right) == 1, f"the solution no longer contains {right!r}: update PERMITTED"
        source = source.replace(right, other)
    variant = tmp_path / f"ex{number}.py"
    variant.write_text(source)
    report = lab_check.run(number, variant)
    assert report.all_passed, failures(report)
    for fragment, text in notes.items():
        [result] = [r for r in report.results if fragment in r.check.name]
        assert result.detail.startswith("note: ") and text in result.detail, (fragment, result.detail)


def test_the_reference_solutions_take_the_proxys_choices_and_get_no_note():
    for number in NUMBERS:
        noted = [r.check.name for r in lab_check.run(number, solution=True).results if r.detail]
        assert not noted, (number, noted)


# --------------------------------------------------------------------------- delegating to the reference
# (exercise, code appended to the untouched starter that hands one step to the reference,
#  the dotted name the refusal must name)
DELEGATIONS = [
    (1, r'''
import proxy.http1 as h1

def parse_request_head(head):
    reader = h1.RequestReader()
    reader.feed(head + b"\r\n\r\n")
    return reader.next_event()
''', "proxy.http1.RequestReader"),
    (1, '''
from proxy.http1.fields import parse_field_lines

def parse_field_line(line):
    return list(parse_field_lines([line]))[0]
''', "proxy.http1.fields.parse_field_lines"),
    (2, '''
from proxy.http1 import strip_hop_by_hop as reference_strip

def strip_hop_by_hop(headers):
    return reference_strip(headers)
''', "proxy.http1.strip_hop_by_hop"),
    (3, '''
from proxy.tls import contexts

def make_server_context(by_name):
    default = by_name[NAMES[0]]
    default.sni_callback = contexts._sni_callback(default, by_name, {})
    return default
''', "proxy.tls.contexts._sni_callback"),
    (4, '''
from proxy.balancer import LeastConnections

class RandomTwoChoices(Strategy):
    def choose(self, candidates):
        return LeastConnections().choose(candidates)
''', "proxy.balancer.LeastConnections"),
    (5, '''
from proxy.tls.clienthello import ClientHelloReader

def parse_sni(data):
    reader = ClientHelloReader()
    reader.feed(data)
    event = reader.next_event()
    return event if event is NEED_DATA else event.server_name
''', "proxy.tls.clienthello.ClientHelloReader"),
    (6, '''
from proxy.tls import keyschedule

def hkdf_expand_label(secret, label, context, length, hash_name):
    suite = keyschedule.cipher_suite("TLS_AES_128_GCM_SHA256")
    return keyschedule.hkdf_expand_label(secret, label, context, length, suite)
''', "proxy.tls.keyschedule.hkdf_expand_label"),
    (6, '''
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

def hkdf_expand_label(secret, label, context, length, hash_name):
    return HKDFExpand(None, length, b"").derive(secret)
''', "cryptography.hazmat.primitives.kdf.hkdf.HKDFExpand"),
    (2, '''
from lab.solutions.ex2 import *  # the answers themselves
''', "lab.solutions.ex2"),
]


@pytest.mark.parametrize("number,code,used", DELEGATIONS, ids=[f"ex{d[0]}-{d[2]}" for d in DELEGATIONS])
def test_a_starter_that_delegates_to_the_reference_is_refused_in_one_line(tmp_path, number, code, used):
    starter = tmp_path / "student.py"
    starter.write_text(EXERCISES[number].student_file.read_text() + code)
    report = lab_check.run(number, starter)
    assert not report.all_passed and report.passed == 0
    assert {r.outcome for r in report.results} == {"refused"}, failures(report)
    assert f"hands the work to {used} " in report.refused, report.refused
    marked = [line for line in report.lines() if line.startswith("  ")]
    assert len(marked) == 1 and "student.py line " in marked[0] and "write this part yourself" in marked[0]


def test_the_cli_refuses_a_delegating_file_with_exit_status_1(tmp_path):
    number, code, used = next(d for d in DELEGATIONS if d[0] == 4)
    starter = tmp_path / "student.py"
    starter.write_text(EXERCISES[number].student_file.read_text() + code)
    result = run_cli(str(number), "--file", str(starter))
    assert result.returncode == 1, result.stdout
    marked = [line for line in result.stdout.splitlines() if line.startswith("  ✗ ")]
    assert len(marked) == 1 and used in marked[0], result.stdout
    assert "0 of 8 checks run" in result.stdout


def test_using_the_reference_inside_demo_is_allowed(tmp_path):
    """A demo may compare with the package; only the exercise's own functions may not use it."""
    source = EXERCISES[1].solution_file.read_text()
    assert source.count("def demo() -> None:\n") == 1
    source = source.replace("def demo() -> None:\n",
                            "def demo() -> None:\n    from proxy.http1 import RequestReader\n    RequestReader()\n")
    variant = tmp_path / "ex1.py"
    variant.write_text(source)
    report = lab_check.run(1, variant)
    assert not report.refused and report.all_passed, failures(report)


# --------------------------------------------------------------------------- the rubric
def rubric(exercise: int) -> list[tuple[int, str, int]]:
    """(step, check name, points) rows of INSTRUCTORS.md's rubric table for ``exercise``."""
    text = (REPO / "lab" / "INSTRUCTORS.md").read_text()
    section = text.split(f"### Rubric, exercise {exercise}:", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1].strip("`"), int(cells[2])))
    return rows


@pytest.mark.parametrize("number", NUMBERS)
def test_the_rubric_lists_every_check_once_for_20_points(number):
    rows = rubric(number)
    checks = [(c.step, c.name) for c in EXERCISES[number].checklist().checks]
    assert [(step, name) for step, name, _ in rows] == checks, "INSTRUCTORS.md's rubric is out of date"
    assert sum(points for *_, points in rows) == 20
