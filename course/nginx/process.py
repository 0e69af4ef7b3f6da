"""``NginxProcess``: a real nginx as a child process, on a configuration text.

Theory of operation
-------------------
``start`` writes ``workdir/nginx.conf``, checks it with ``nginx -t`` (a mistake is a
``ConfigError`` carrying nginx's own first complaint), starts the master in the
foreground (``daemon off``, so it stays our child) and waits until the pid file
exists, the worker runs and every ``listen`` port accepts.  ``pids()`` gives the
master and its worker, whose CPU time the benchmark adds up.  ``stop`` asks
gracefully first (SIGQUIT: finish requests in flight), then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from proxy import config as cfg
from proxy.errors import ConfigError
from course.nginx.installed import STREAM_MODULE_PACKAGE, _require_nginx


class NginxProcess:
    """nginx on a configuration text, as a child process; a context manager.

    >>> with NginxProcess(export_nginx(config), workdir) as nginx:   # doctest: +SKIP
    ...     print(nginx.pid, nginx.worker_pids())

    ``start`` writes ``workdir/nginx.conf``, checks it with ``nginx -t`` (a mistake is a
    ``ConfigError`` carrying nginx's own one-line message), starts the master in the
    foreground and waits until every ``listen`` port accepts.
    """

    def __init__(self, conf_text: str, workdir: str | os.PathLike[str], *, ready_timeout: float = 10.0):
        self.conf_text = conf_text
        self.workdir = Path(workdir).resolve()
        self.conf = self.workdir / "nginx.conf"
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def _command(self, *extra: str) -> list[str]:
        return [_require_nginx(), "-p", f"{self.workdir}/", "-c", str(self.conf), *extra]

    def check(self) -> None:
        """``nginx -t``: raise ConfigError with nginx's first complaint."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.conf_text)
        done = subprocess.run(self._command("-t", "-q"), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise ConfigError(f"nginx rejected {self.conf}: {_first_complaint(done.stderr)}")

    def start(self) -> NginxProcess:
        self.check()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "nginx.pid").unlink()
        stderr = open(self.workdir / "stderr.log", "wb")  # a file: a full pipe would stall nginx
        with stderr:
            self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The master's pid."""
        if self.process is None:
            raise RuntimeError("nginx is not started")
        return self.process.pid

    def listen_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every ``listen`` in the configuration."""
        addresses = []
        for text in re.findall(r"^\s*listen\s+(\S+?)[\s;]", self.conf_text, re.MULTILINE):
            address = cfg.parse_address(text if ":" in text else f"0.0.0.0:{text}")
            addresses.append((address.host, address.port))
        return list(dict.fromkeys(addresses))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the pid file exists (nginx writes it after binding every socket),
        every listen port accepts and the worker runs."""
        deadline = time.monotonic() + timeout
        pending = self.listen_addresses()
        pid_file = self.workdir / "nginx.pid"
        while True:
            if self.process.poll() is not None:
                raise ConfigError(f"nginx exited with status {self.process.returncode}: {self._complaint()}")
            if pid_file.exists() and self.worker_pids():
                pending = [a for a in pending if not _accepts(a)]
                if not pending:
                    return
            if time.monotonic() > deadline:
                raise ConfigError(f"nginx not ready after {timeout}s (waiting for {pending}): {self._complaint()}")
            time.sleep(0.02)

    def worker_pids(self) -> list[int]:
        """The master's children: with ``worker_processes 1``, the one worker."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in children.read_text().split()]
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return found

    def pids(self) -> list[int]:
        """Master and workers: the processes whose CPU time a benchmark adds up."""
        return [self.pid, *self.worker_pids()]

    def _complaint(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.workdir / name).read_text(errors="replace")
        return _first_complaint(text)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGQUIT (graceful: finish requests in flight), then SIGTERM, then SIGKILL.  Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
                return

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except OSError:
        return False
    return True


def _first_complaint(text: str) -> str:
    """nginx's first [emerg]/[alert]/[crit] line, without the 'nginx: ' prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        match = re.match(r"(?:nginx: )?(?:[\d/]+ [\d:]+ )?\[(emerg|alert|crit)\] (?:\d+#\d+: )?(.*)", line)
        if match:
            line = f"[{match.group(1)}] {match.group(2)}"
            if "ngx_stream_module.so" in line or 'unknown directive "stream"' in line:
                line += f" (install it: apt-get install {STREAM_MODULE_PACKAGE})"
            return line
    return lines[0] if lines else "no message"
