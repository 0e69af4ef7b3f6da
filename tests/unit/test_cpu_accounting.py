"""course.bench.cpu: the accounting the benchmark's every figure rests on.

A child process burns a known amount of CPU, measured by itself with
``time.process_time()``, and ``cpu.read_cpu`` read from outside before and after
must agree within 10 %: in the main thread, in another thread that has exited by
the time we read (its time must stay in the process's total), and summed over two
processes as for nginx's master and worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from course.bench import cpu

BURN_SECONDS = 0.5
TOLERANCE = 0.10

# ready -> (wait for "go") -> burn -> print what process_time() saw -> (wait) -> exit
BURNER = textwrap.dedent("""
    import sys, threading, time

    def burn(seconds):
        start = time.process_time()
        x = 0
        while time.process_time() - start < seconds:
            for i in range(1000):
                x += i * i

    print("ready", flush=True)
    sys.stdin.readline()
    start = time.process_time()
    if sys.argv[1] == "thread":
        worker = threading.Thread(target=burn, args=(float(sys.argv[2]),))
        worker.start()
        worker.join()  # the thread is gone before anyone reads /proc
    else:
        burn(float(sys.argv[2]))
    print(time.process_time() - start, flush=True)
    sys.stdin.readline()
""")


def start_burner(where: str, seconds: float = BURN_SECONDS) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", BURNER, where, str(seconds)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def finish(process: subprocess.Popen) -> None:
    process.stdin.write("\n")
    process.stdin.flush()
    process.wait(10)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_known_burn_is_measured_within_ten_percent(where):
    process = start_burner(where)
    try:
        before = cpu.read_cpu(process.pid)
        process.stdin.write("go\n")
        process.stdin.flush()
        burned = float(process.stdout.readline())  # the child's own process_time()
        after = cpu.read_cpu(process.pid)
    finally:
        finish(process)
    measured = (after - before).total
    assert burned >= BURN_SECONDS
    assert abs(measured - burned) <= TOLERANCE * burned, (measured, burned)
    assert (after - before).user > 0.5 * burned  # a Python loop is user time


def test_snapshot_sums_the_processes_of_a_component():
    """nginx is a master and a worker: the component's CPU is both processes' together."""
    first, second = start_burner("main", 0.3), start_burner("main", 0.3)
    try:
        components = {"proxy": [first.pid, second.pid], "origin": [first.pid]}
        before = cpu.snapshot(components)
        burned = 0.0
        for process in (first, second):  # one after the other: the sum must not depend on overlap
            process.stdin.write("go\n")
            process.stdin.flush()
            burned += float(process.stdout.readline())
        spent = cpu.difference(cpu.snapshot(components), before)
    finally:
        finish(first)
        finish(second)
    assert abs(spent["proxy"].total - burned) <= TOLERANCE * burned, (spent, burned)
    assert spent["origin"].total < spent["proxy"].total


def test_parse_stat_survives_a_command_name_with_parentheses_and_spaces():
    # Fields 3.. after the name: state ppid pgrp session tty tpgid flags minflt cminflt
    # majflt cmajflt utime(14) stime(15) ...
    line = "4242 (tls (proxy) w) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3\n"
    times = cpu.parse_stat(line)
    assert times.user == pytest.approx(250 / cpu.CLOCK_TICKS)
    assert times.system == pytest.approx(75 / cpu.CLOCK_TICKS)


def test_a_process_that_is_gone_is_a_lookup_error():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: /proc/PID no longer exists
    with pytest.raises(ProcessLookupError):
        cpu.read_cpu(process.pid)
    with pytest.raises(ProcessLookupError):
        cpu.rss_bytes(process.pid)


def test_rss_of_this_process_is_plausible():
    rss = cpu.rss_bytes(os.getpid())
    assert 5 << 20 < rss < 4 << 30  # a Python interpreter with pytest loaded: megabytes, not bytes



# A thread that naps N times (each sleep is one voluntary context switch), then waits,
# still alive, until told to end.
SLEEPER = textwrap.dedent("""
    import sys, threading, time

    finished = threading.Event()

    def nap(times):
        for _ in range(times):
            time.sleep(0.002)
        print("done", flush=True)
        finished.wait()

    print("ready", flush=True)
    sys.stdin.readline()
    worker = threading.Thread(target=nap, args=(int(sys.argv[1]),))
    worker.start()
    sys.stdin.readline()
    finished.set()
    worker.join()
""")


def test_context_switches_of_a_thread_started_in_the_window_are_counted():
    naps = 100
    child = subprocess.Popen([sys.executable, "-c", SLEEPER, str(naps)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        before = cpu.switch_snapshot({"proxy": [child.pid]})
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        after = cpu.switch_snapshot({"proxy": [child.pid]})
        assert len(after["proxy"]) == len(before["proxy"]) + 1, "the new thread is seen"
        switches = cpu.switch_difference(after, before)["proxy"]
        assert naps <= switches < naps * 2 + 50, switches
    finally:
        child.stdin.write("end\n")
        child.stdin.flush()
        child.wait(10)


def test_switches_of_a_process_that_is_gone_is_a_lookup_error():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        cpu.thread_switches(child.pid)
