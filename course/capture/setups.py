"""The six setups as real processes, on loopback or in the lab's network namespaces.

Theory of operation
-------------------
What each setup *is* (its hosts and legs, the proxy's mode, which legs carry TLS,
whether the client asks for a tunnel, its picture and summary) comes from the
project's one table, ``course.setups``; ``SETUPS`` here is that table, keyed by
name.  This module adds only what a capture needs: ``Lab`` starts a setup's origin
(``tlsproxy origin``), its proxy (``tlsproxy serve``) and, on request, the lab
client (``python -m course.capture.client``), each as its own process, each
listening on port 0 and reporting the real port in its first line of output.  The
captures run on the legs the table names (``leg_names``: ``client`` and, behind a
proxy, ``backend``), between the hosts it says they join (``leg_ends``).

Every TLS endpoint writes its secrets to its own key log, so the capture bundle can
say exactly who held which keys:

    keys/client.log          the client (SSLKEYLOGFILE, read by create_default_context)
    keys/proxy.log           the proxy's client leg (tlsproxy serve --keylog)
    keys/proxy-backend.log   the proxy's backend leg (--backend-keylog, re-encrypt)
    keys/origin.log          the origin (SSLKEYLOGFILE)

Where the processes run is a *network*: ``Loopback`` (every host on 127.0.0.0/8; the
client binds 127.0.0.2 so that its address differs from the proxy's 127.0.0.1) or
``Namespaces`` (``lab.topology.Topology``: client, proxy and origin are separate
hosts, and the captures run on the proxy's two interfaces).  Nothing here ever
connects from this process: the client is always its own program, inside the
client's network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from course.capture.sniff import Capture
from course.children import stop_child
from course.setups import BY_NAME, Setup

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CLIENT_TIMEOUT = 30.0
WWW = "www.example.test"
ORIGIN_NAME = "origin.example.test"
LISTENING = re.compile(r"listening on (?:https?://)?\[?([0-9a-fA-F.:]+?)\]?:(\d+)")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent

# The capture's setups are the project's (course/setups.py), in teaching order.
SETUPS: dict[str, Setup] = BY_NAME

__all__ = ["SETUPS", "Setup", "Lab", "Loopback", "Namespaces", "available_setups"]


def available_setups() -> list[str]:
    return [name for name, setup in SETUPS.items() if setup.available]


# --------------------------------------------------------------------------- networks
class Loopback:
    """Every host on this machine's loopback interface."""

    name = "loopback"
    HOSTS = {"client": "127.0.0.2", "proxy": "127.0.0.1", "origin": "127.0.0.1"}

    def address(self, host: str, toward: str) -> str:
        return self.HOSTS[host]

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, **kwargs)

    def capture(self, ends: tuple[str, str], path: Path, port: int) -> Capture:
        return Capture.loopback(path, ports=[port])


class Namespaces:
    """Client, proxy and origin as the hosts of a ``lab.topology.Topology`` that is up."""

    name = "namespaces"

    def __init__(self, net) -> None:
        self.net = net

    def address(self, host: str, toward: str) -> str:
        return self.net.address(host, toward)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return self.net.popen(host, argv, **kwargs)

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return self.net.run(host, argv, **kwargs)

    def capture(self, ends: tuple[str, str], path: Path, port: int) -> Capture:
        if "proxy" not in ends:
            raise ValueError("in the lab network the client cannot reach the origin directly: "
                             "direct setups run on loopback")
        other = ends[1] if ends[0] == "proxy" else ends[0]
        return Capture.in_namespace(self.net, "proxy", toward=other, path=path, ports=[port])


# --------------------------------------------------------------------------- the processes
def _environment(keylog: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    if keylog is not None:
        env["SSLKEYLOGFILE"] = str(keylog)
    return env


class Lab:
    """One setup's origin and proxy, started in ``out``; a context manager that stops them."""

    def __init__(self, setup: Setup, network, out: Path, pki) -> None:
        self.setup, self.network, self.out, self.pki = setup, network, Path(out), pki
        self.processes: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        self.keys = self.out / "keys"
        self.logs = self.out / "logs"

    @property
    def front(self) -> str:
        """The host the client connects to."""
        return "proxy" if self.setup.has_proxy else "origin"

    def address(self, host: str) -> str:
        toward = {"client": self.front, "proxy": "client",
                  "origin": "proxy" if self.setup.has_proxy else "client"}[host]
        return self.network.address(host, toward)

    def start(self) -> "Lab":
        if not self.setup.available:
            raise RuntimeError(f"setup {self.setup.name} needs proxy/modes/{self.setup.mode}.py, not written yet")
        self.keys.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.ports["origin"] = self._start_origin()
            if self.setup.has_proxy:
                self.ports["proxy"] = self._start_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _spawn(self, host: str, argv: list[str], log_name: str, env: dict[str, str]) -> int:
        log = self.logs / log_name
        with open(log, "w") as output:
            process = self.network.popen(host, argv, stdout=output, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(PACKAGE_ROOT))
        self.processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:       # the port is in its first line (port 0 was asked for)
            match = LISTENING.search(log.read_text())
            if match:
                return int(match.group(2))
            if process.poll() is not None:
                raise RuntimeError(f"{log_name[:-4]} exited with status {process.returncode}: "
                                   f"{log.read_text().strip()[-500:]}")
            time.sleep(0.02)
        raise TimeoutError(f"{log_name[:-4]} did not report a listening port within {START_TIMEOUT:.0f} s")

    def _start_origin(self) -> int:
        argv, keylog = self.origin_argv()
        return self._spawn("origin", argv, "origin.log", _environment(keylog))

    def _start_proxy(self) -> int:
        return self._spawn("proxy", self.proxy_argv(), "proxy.log", _environment())

    def origin_argv(self) -> tuple[list[str], Path | None]:
        """The origin's command line, and the key log it writes through SSLKEYLOGFILE."""
        argv = [sys.executable, "-m", "course.cli", "origin", "--name", "origin",
                "--listen", f"{self.address('origin')}:0"]
        if not self.setup.origin_tls:
            return argv, None
        # The client's session ends here: show www; the proxy's own session (re-encrypt): the origin's name.
        name = WWW if self.setup.client_tls_ends == "origin" else ORIGIN_NAME
        cert, key = self.pki.files(name)
        return argv + ["--cert", cert, "--key", key], self.keys / "origin.log"

    def proxy_argv(self) -> list[str]:
        """``tlsproxy serve`` for this setup, to the origin already listening."""
        origin = f"{self.address('origin')}:{self.ports['origin']}"
        argv = [sys.executable, "-m", "course.cli", "serve", "--mode", self.setup.mode,
                "--listen", f"{self.address('proxy')}:0", "--access-log", str(self.logs / "access.log")]
        if self.setup.mode == "terminate":
            cert, key = self.pki.files(WWW)
            argv += ["--cert", cert, "--key", key, "--keylog", str(self.keys / "proxy.log")]
            if self.setup.origin_tls:           # re-encrypt: a second TLS session to the origin
                argv += ["--backend", f"https://{origin}", "--backend-ca", str(self.pki.ca),
                         "--backend-sni", ORIGIN_NAME, "--backend-keylog", str(self.keys / "proxy-backend.log")]
            else:
                argv += ["--backend", f"http://{origin}"]
        elif self.setup.mode == "passthrough":
            argv += ["--backend", f"https://{origin}"]
        elif self.setup.mode == "forward":       # CONNECT www.example.test:PORT, to the origin only
            origin_ip, port = self.address("origin"), self.ports["origin"]
            argv += ["--forward-host", f"{WWW}={origin_ip}", "--connect-port", str(port),
                     "--allow", f"dst={origin_ip}/32 port={port}"]
        return argv

    def client_argv(self, *, tls: str = "1.3", resumed: bool = False) -> list[str]:
        front = f"{self.address(self.front)}:{self.ports[self.front]}"
        argv = [sys.executable, "-m", "course.capture.client", "--connect", front,
                "--source", self.address("client"), "--server-name", WWW]
        if self.setup.tunnel:            # the forward proxy resolves the name (--forward-host)
            argv += ["--tunnel", f"{WWW}:{self.ports['origin']}"]
        if self.setup.client_tls:
            argv += ["--ca", str(self.pki.ca), "--tls", tls] + (["--resumed"] if resumed else [])
        else:
            argv += ["--plain"]
        return argv

    def run_client(self, *, tls: str = "1.3", resumed: bool = False) -> dict:
        """Run the lab client to completion in the client's network; return its report."""
        keylog = self.keys / "client.log" if self.setup.client_tls else None
        done = self.network.run("client", self.client_argv(tls=tls, resumed=resumed), capture_output=True,
                                text=True, timeout=CLIENT_TIMEOUT, env=_environment(keylog), cwd=str(PACKAGE_ROOT))
        if done.returncode != 0:
            raise RuntimeError(f"the lab client failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        return json.loads(done.stdout)

    def stop(self) -> None:
        """SIGTERM each process (the proxy first, so it closes its backend connections
        gracefully and the capture sees them end), then SIGKILL what is left."""
        for process in reversed(self.processes):
            stop_child(process, STOP_TIMEOUT)
        self.processes.clear()
