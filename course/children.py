"""Stopping a child process we started: SIGTERM, a grace period, then SIGKILL.

Theory of operation
-------------------
Every long-running program this project starts (origins, proxies, nginx, sniffers,
the programs of the namespace lab) shuts down cleanly on SIGTERM: it stops
accepting, finishes or cuts what is in flight, and exits.  So stopping one is: send
SIGTERM, wait up to ``grace`` seconds, and only then SIGKILL (which cannot be caught,
and leaves no chance to close connections or write results).  Signals go through
``Popen``, which skips them once the child has been reaped, so a PID the kernel has
handed to another process is never signalled: we stop only what we started.

A child that holds thousands of connections needs a file descriptor for each:
``raise_file_limit`` lifts the soft ``RLIMIT_NOFILE`` (often 1,024) to the hard one,
which children inherit.
"""

from __future__ import annotations

import resource
import subprocess


def raise_file_limit() -> int:
    """The soft limit on open files raised to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop_child(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM ``process``, wait up to ``grace`` seconds, then SIGKILL it.  Idempotent."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)
