"""course.children.stop_child on real child processes."""

from __future__ import annotations

import subprocess
import sys
import time

from course.children import stop_child

OBEDIENT = "import time\nprint('up', flush=True)\ntime.sleep(60)"
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"


def started(program: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "up"  # its signal handling is in place
    return process


def test_a_child_that_obeys_sigterm_stops_at_once():
    process = started(OBEDIENT)
    began = time.monotonic()
    stop_child(process, grace=5)
    assert process.returncode == -15 and time.monotonic() - began < 3


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    process = started(STUBBORN)
    began = time.monotonic()
    stop_child(process, grace=0.5)
    assert process.returncode == -9 and 0.4 < time.monotonic() - began < 5


def test_stopping_a_finished_child_does_nothing():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(10)
    stop_child(process)
    assert process.returncode == 0
