"""Per-process CPU accounting: what each process of a setup spent, read from ``/proc``.

Theory of operation
-------------------
The kernel keeps, for every process, the CPU time it has used so far in user mode
(``utime``) and in the kernel on its behalf (``stime``): fields 14 and 15 of
``/proc/PID/stat``, in clock ticks (``os.sysconf("SC_CLK_TCK")``, 100 per second on
Linux).  For a multi-threaded process ``/proc/PID/stat`` is the *thread group*: the
sum over all its threads, those that already exited included (``man 5 proc``).  That
is what we want: the proxy's cost is every worker thread's, not the main thread's.

A measurement is two readings and a subtraction::

    before = snapshot({"origin": [pid], "proxy": [pid], "client": [pid]})
    ... the measured window: requests flow ...
    after  = snapshot(same)
    after - before  ->  {"origin": 0.41, "proxy": 1.20, "client": 2.02}   CPU seconds

A component may be several processes: nginx is a master and its worker(s), and both
are counted (the master does nearly nothing, which the figures then show).  Divide
by the requests completed in the window and you have CPU seconds per request per
component, a figure that stays meaningful when the load generator, not the server,
is the bottleneck: a slower client sends fewer requests, and the server spends
proportionally less.

Resolution: the kernel accounts time precisely (nanoseconds, in the scheduler) and
*reports* it in ticks, so a reading is exact to 10 ms; a window of a second or more
keeps that under 1 %.  The load generator's own process is a component like the
others ("client"), reported and never added to the system's cost.

``rss_bytes`` reads ``VmRSS`` from ``/proc/PID/status``: the resident memory that
the idle-connections workload watches grow.

``switch_snapshot`` counts *context switches*: each time a thread stopped running,
because it waited (``voluntary_ctxt_switches``: a blocking recv, a lock) or was
preempted (``nonvoluntary_ctxt_switches``), read per thread from
``/proc/PID/task/TID/status``.  It explains CPU figures that syscall counts do not: a
thread-per-connection proxy sleeps and wakes a thread at every wait, an event loop
(nginx) collects many ready sockets per wake.  A thread that exits inside the window
takes its count with it, so the figure errs low, never high.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # ticks per second: the unit of utime and stime
UTIME_FIELD, STIME_FIELD = 14, 15  # 1-based field numbers in proc(5)


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds used so far by a process (all its threads)."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user + other.user, self.system + other.system)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


ZERO = CpuTimes(0.0, 0.0)


def parse_stat(text: str) -> CpuTimes:
    """utime and stime of one ``/proc/PID/stat`` line, in seconds.

    Field 2, the command name, is in parentheses and may itself contain spaces and
    parentheses ("(tlsproxy (w))"), so the line is split after the *last* ')'.
    """
    fields_after_name = text.rsplit(")", 1)[1].split()
    # fields_after_name[0] is field 3 (state): field N is at index N - 3.
    utime = int(fields_after_name[UTIME_FIELD - 3])
    stime = int(fields_after_name[STIME_FIELD - 3])
    return CpuTimes(utime / CLOCK_TICKS, stime / CLOCK_TICKS)


def read_cpu(pid: int) -> CpuTimes:
    """The CPU time of process ``pid`` so far; ``ProcessLookupError`` once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return parse_stat(stat.read())
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` in ``/proc/PID/status``), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return 0  # a zombie has no memory left


def thread_switches(pid: int) -> dict[int, int]:
    """Context switches so far of each thread of ``pid``: {thread id: voluntary + involuntary}."""
    counts = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                counts[int(tid)] = sum(int(line.split()[1]) for line in status if "ctxt_switches:" in line)
        except (FileNotFoundError, ProcessLookupError):  # the thread exited while we looked
            continue
    return counts


def switch_snapshot(components: Mapping[str, Iterable[int]]) -> dict[str, dict[int, int]]:
    """Per-thread context switches of each component (see ``switch_difference``)."""
    return {name: {tid: n for pid in pids for tid, n in thread_switches(pid).items()}
            for name, pids in components.items()}


def switch_difference(after: Mapping[str, dict[int, int]], before: Mapping[str, dict[int, int]]) -> dict[str, int]:
    """Context switches in the window per component: threads started inside it count from zero."""
    return {name: sum(n - before.get(name, {}).get(tid, 0) for tid, n in threads.items())
            for name, threads in after.items()}


def snapshot(components: Mapping[str, Iterable[int]]) -> dict[str, CpuTimes]:
    """CPU time so far of each component, summed over its processes."""
    totals = {}
    for name, pids in components.items():
        total = ZERO
        for pid in pids:
            total = total + read_cpu(pid)
        totals[name] = total
    return totals


def rss_snapshot(components: Mapping[str, Iterable[int]]) -> dict[str, int]:
    """Resident memory of each component, summed over its processes."""
    return {name: sum(rss_bytes(pid) for pid in pids) for name, pids in components.items()}


def difference(after: Mapping[str, CpuTimes], before: Mapping[str, CpuTimes]) -> dict[str, CpuTimes]:
    """``after - before`` per component: the CPU spent in the window."""
    return {name: after[name] - before[name] for name in after}
