"""The real programs as child processes: ``tlsproxy serve`` and ``tlsproxy origin``.

Load and shutdown tests run the proxy as its own process, as an operator would:
it gets its own interpreter (and GIL, so the test's client threads do not slow
it), its thread count is read from ``/proc/PID/status``, and SIGTERM exercises
the real ``serve_forever`` shutdown path.  Both programs are started on port 0;
the port is read back from the line they print at start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0


class ChildProcess:
    """A child whose output is drained by a thread (a full pipe would block it) into ``lines``."""

    def __init__(self, args: list[str], *, stream: str, ready: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "course.cli", *args], cwd=REPO, text=True,
            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._ready_text = ready
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        self.drain = threading.Thread(target=self._drain, args=(pipe,), daemon=True, name=f"drain-{self.pid}")
        self.drain.start()
        started = self.ready.wait(START_TIMEOUT)
        line = next((line for line in self.lines if ready in line), None)
        if not started or line is None:
            self.kill()
            raise RuntimeError(f"{args[0]} did not start: {''.join(self.lines)[-2000:]}")
        self.port = int(line.rstrip().rsplit(":", 1)[1].split()[0])

    def _drain(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line)
            if self._ready_text in line:
                self.ready.set()
        self.ready.set()  # EOF: the process died; __init__ reports it

    def threads(self) -> int:
        """The process's thread count (the kernel's, so nothing inside can hide one)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError("no Threads line")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.drain.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def origin_process(name: str = "web") -> ChildProcess:
    return ChildProcess(["origin", "--name", name, "--listen", "127.0.0.1:0"], stream="stdout",
                        ready="listening on")


def serve_process(config_text: str, directory: Path) -> ChildProcess:
    """``tlsproxy serve --config FILE`` with ``config_text`` written to ``directory``."""
    path = directory / "tlsproxy.toml"
    path.write_text(config_text)
    return ChildProcess(["serve", "--config", str(path)], stream="stderr", ready="listening on")


def proxy_config(pki, backend_port: int, directory: Path, *, timeouts: str = "", limits: str = "") -> str:
    """A one-listener, one-pool TOML configuration on 127.0.0.1:0, access log to a file."""
    cert, key = pki.files("www.example.test")
    return f"""
[[listeners]]
listen = "127.0.0.1:0"
certs = [{{ cert = "{cert}", key = "{key}" }}]

[[pools]]
name = "web"
backends = ["http://127.0.0.1:{backend_port}"]

[timeouts]
{timeouts}

[limits]
{limits}

[proxy]
access_log = "{directory / 'access.log'}"
"""


def raise_open_files_limit(needed: int) -> bool:
    """Raise RLIMIT_NOFILE's soft limit (children inherit it); False if the hard limit is too low."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return True
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return True


def wait_until(predicate, timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()

