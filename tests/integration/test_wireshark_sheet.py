"""The Wireshark question sheet cannot go stale: its answers are re-derived with tshark.

``lab/wireshark/QUESTIONS.md`` asks about the bundled captures
(``course/data/example-capture``, ``captures/`` in the student handout) by frame
number; ``lab/wireshark/ANSWERS.md`` answers each question with the command that
finds the answer and its output::

    $ tshark -r captures/terminate-tls13/client-leg.pcap -Y "tls.handshake.type == 1" -T fields ...
    4,41471,36147

This test runs every such command verbatim (in a scratch folder where
``captures`` points at the bundled captures) and compares its output with the lines
under it, and checks that the frame numbers the questions name are the ones tshark
finds.  Re-making the captures (``course/data/example-capture/README.md``) changes
ports, randoms and perhaps frame numbers: this test then says which answer to
update, and ``python -m tests.integration.test_wireshark_sheet`` prints every
command with its new output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
SHEET = REPO / "lab" / "wireshark"
CAPTURES = REPO / "course" / "data" / "example-capture"


# --------------------------------------------------------------------------- reading the sheet
def sections(text: str, heading: str) -> dict[int, str]:
    """{question number: its text}, split at lines matching ``heading`` (group 1 = number)."""
    found: dict[int, str] = {}
    matches = list(re.finditer(heading, text, flags=re.MULTILINE))
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else len(text)
        found[int(match.group(1))] = text[match.start():end]
    return found


def questions() -> dict[int, str]:
    return sections((SHEET / "QUESTIONS.md").read_text(encoding="utf-8"), r"^(\d+)\. ")


def answers() -> dict[int, str]:
    return sections((SHEET / "ANSWERS.md").read_text(encoding="utf-8"), r"^### (\d+)\.")


@dataclass(frozen=True)
class Shown:
    """One ``$ command`` in an answer, and the output lines printed under it."""

    question: int
    command: str
    output: tuple[str, ...]


def shown_commands() -> list[Shown]:
    """Every ``$ ...`` line inside the code blocks of ANSWERS.md, with the lines below it."""
    found = []
    for number, text in answers().items():
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL):
            current: list[str] | None = None
            for line in block.splitlines():
                if line.startswith("$ "):
                    current = []
                    found.append((number, line[2:], current))
                elif current is not None and line.strip():
                    current.append(line.strip())
    return [Shown(number, command, tuple(lines)) for number, command, lines in found]


def run_shown(command: str, cwd: Path) -> tuple[str, ...]:
    """Run ``command`` as the sheet shows it (a shell line: tshark, grep, wc, cut); its output
    lines, stripped, without empty lines."""
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    if result.returncode not in (0, 1):  # grep -c / grep with no match exits 1
        raise AssertionError(f"{command!r} failed ({result.returncode}): {result.stderr[-500:]}")
    return tuple(line.strip() for line in result.stdout.splitlines() if line.strip())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder where ``captures/`` is the bundled captures, as in the student handout."""
    require_tool("tshark")
    folder = tmp_path_factory.mktemp("wireshark-sheet")
    (folder / "captures").symlink_to(CAPTURES, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def outputs(workdir) -> dict[str, tuple[str, ...]]:
    """Every shown command's real output, run two at a time (each tshark start costs ~0.3 s of CPU)."""
    commands = sorted({shown.command for shown in shown_commands()})
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(commands, pool.map(lambda c: run_shown(c, workdir), commands)))


# --------------------------------------------------------------------------- the frames the questions name
# (question, what the question says with {} for each output line, the command that finds the frames)
C13 = "tshark -r captures/terminate-tls13/client-leg.pcap"
K13 = "-o tls.keylog_file:captures/terminate-tls13/keys.log"
C12 = "tshark -r captures/terminate-tls12/client-leg.pcap"
NAMED_FRAMES = [
    (1, "frame {} carries the ClientHello", f'{C13} -Y "tls.handshake.type == 1" -T fields -e frame.number'),
    (8, "The ServerHello is in frame {}", f'{C13} -Y "tls.handshake.type == 2" -T fields -e frame.number'),
    (12, "records of frame {}", f'{C13} {K13} -Y "tls.handshake.type == 8" -T fields -e frame.number'),
    (14, "The HTTP request is in frame {}", f"{C13} {K13} -Y http.request -T fields -e frame.number"),
    (15, "frames {} and {} (type and lifetime)", f'{C13} {K13} -Y "tls.handshake.type == 4" -T fields -e frame.number'),
    (15, "alerts in frames {} and {}", f"{C13} {K13} -Y tls.alert_message -T fields -e frame.number"),
    (18, "The ServerHello is in frame {}", f'{C12} -Y "tls.handshake.type == 2" -T fields -e frame.number'),
    (20, "Client Key Exchange in frame {}", f'{C12} -Y "tls.handshake.type == 16" -T fields -e frame.number'),
]


def one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- the tests
def test_every_question_has_an_answer_with_a_command():
    asked, answered = questions(), answers()
    assert asked and sorted(asked) == list(range(1, len(asked) + 1)), "questions are numbered 1..N"
    assert sorted(answered) == sorted(asked), "every question has exactly one answer"
    with_commands = {shown.question for shown in shown_commands()}
    assert with_commands == set(asked), f"answers without a command: {sorted(set(asked) - with_commands)}"


def test_every_answer_is_what_tshark_prints(outputs):
    stale = [f"question {shown.question}: $ {shown.command}\n   the sheet: {list(shown.output)}\n"
             f"   tshark:    {list(outputs[shown.command])}"
             for shown in shown_commands() if outputs[shown.command] != shown.output]
    assert not stale, "ANSWERS.md is stale (run python -m tests.integration.test_wireshark_sheet):\n" + \
        "\n".join(stale)


@pytest.mark.parametrize("number,template,command", NAMED_FRAMES, ids=[f"q{n[0]}" for n in NAMED_FRAMES])
def test_the_frames_the_questions_name_are_the_right_ones(workdir, number, template, command):
    expected = template.format(*run_shown(command, workdir))
    assert one_line(expected) in one_line(questions()[number]), f"question {number} should say {expected!r}"


def test_the_sheet_is_handed_out_and_the_answers_are_not():
    from lab.handout import INCLUDED, WITHHELD

    assert "lab/wireshark/ANSWERS.md" in WITHHELD
    assert any(rule.source == "lab/wireshark" and "QUESTIONS.md" in rule.patterns for rule in INCLUDED)


# --------------------------------------------------------------------------- for whoever updates the sheet
def main() -> int:
    """Print every command of ANSWERS.md with what tshark prints now."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "captures").symlink_to(CAPTURES, target_is_directory=True)
        for shown in shown_commands():
            now = run_shown(shown.command, Path(scratch))
            mark = "ok" if now == shown.output else "!!"
            print(f"{mark} question {shown.question}\n$ {shown.command}\n" + "\n".join(now) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
