"""The setups as real processes, on loopback or in the lab's network namespaces.

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

**Added round-trip time** (``Lab(..., rtt=0.040, backend_rtt=0.020)``): a delay line
(``course.delay``, ``python -m course.delay``) is started as one more process in
front of the leg's listening party, on that party's host, and the connecting party
dials the line instead::

    client ──▶ delay line (RTT/2 each way) ──▶ proxy ──▶ delay line ──▶ origin

On loopback the line runs in front of the server and the capture of the leg holds the
connecting party's connection *to the line* (``capture_port``): what the client's (or
the proxy's) own network card would show, a ClientHello answered one RTT after it
left; the line binds its onward connection to the connecting party's address, so the
proxy still logs the client's.  In the namespace lab the captures run on the proxy's
interfaces, so the line runs on the connecting host instead (the client's namespace;
the proxy's for the backend leg), the server sees the connecting host's own address,
and the capture holds the line's onward connection: the listening end's view
(``captured_at``).  Either way ClientHello to request is the same number of RTTs.  ``run_client(hrr=True)`` makes the lab client offer a key share
for P-521 only (through an OpenSSL configuration file, ``OPENSSL_CONF``: Python's
``ssl`` cannot choose groups), which the proxy's Mozilla-intermediate groups refuse,
so the server answers with a HelloRetryRequest (RFC 8446 §4.1.4) asking for X25519.

Every TLS endpoint writes its secrets to its own key log, so the capture bundle can
say exactly who held which keys:

    keys/client.log          the client (SSLKEYLOGFILE, read by create_default_context)
    keys/proxy.log           the proxy's client leg (tlsproxy serve --keylog)
    keys/proxy-backend.log   the proxy's backend leg (--backend-keylog, re-encrypt, interception)
    keys/origin.log          the origin (SSLKEYLOGFILE)

**Interception** (``Setup.intercepts``): the forward proxy is started with an
interception CA (``proxy.tls.mint.make_ca``) made for this run in a private temporary
directory, deleted when the lab stops; only its certificate is kept, as
``intercept-ca.pem``.  The lab client trusts it *and* the demo CA
(``logs/client-trust.pem``), as a managed machine trusts its company's root beside the
usual ones, and the origin shows its own certificate for the name the client asked for.

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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from course.capture.sniff import Capture
from course.children import stop_child
from course.setups import BY_NAME, Setup

START_TIMEOUT = 15.0
# The lab client's OpenSSL configuration for a HelloRetryRequest: its first group, and so its
# only key share, is P-521, which the proxy does not accept (proxy.tls.contexts.GROUPS).
HRR_GROUPS = "P-521:X25519"
HRR_OPENSSL_CONF = """\
# Read by OpenSSL when the lab client starts (OPENSSL_CONF): every context it makes offers
# these groups, in this order, with a key share for the first one only (OpenSSL 3's default).
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Groups = {groups}
"""
STOP_TIMEOUT = 5.0
CLIENT_TIMEOUT = 30.0
WWW = "www.example.test"
ORIGIN_NAME = "origin.example.test"
INTERCEPT_CA = "intercept-ca.pem"   # the interception CA's certificate, kept in the bundle (not its key)
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
    DELAY_BESIDE = "listening"      # a delay line runs in front of the server (Lab._delay_host)
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
    DELAY_BESIDE = "connecting"     # a delay line runs on the connecting host (Lab._delay_host)

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

    def __init__(self, setup: Setup, network, out: Path, pki, *, rtt: float = 0.0, backend_rtt: float = 0.0,
                 http2: bool = False) -> None:
        self.setup, self.network, self.out, self.pki = setup, network, Path(out), pki
        self.http2 = http2              # the proxy offers ALPN h2,http/1.1 and the client speaks HTTP/2
        self.rtt, self.backend_rtt = rtt, backend_rtt if setup.has_proxy else 0.0
        self.processes: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        self.keys = self.out / "keys"
        self.logs = self.out / "logs"
        self.intercept_ca: tuple[Path, Path] | None = None  # (certificate, key); stop() deletes both files
        self._ca_directory: str | None = None

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
            if self.setup.intercepts:
                self._make_intercept_ca()
            self.ports["origin"] = self._start_origin()
            if self.backend_rtt:
                self.ports["backend-delay"] = self._start_delay("backend", self.backend_rtt)
            if self.setup.has_proxy:
                self.ports["proxy"] = self._start_proxy()
            if self.rtt:
                self.ports["delay"] = self._start_delay("client", self.rtt)
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

    # -- the delay lines
    def leg_hosts(self, leg: str) -> tuple[str, str]:
        """(the host that connects, the host that listens) of ``leg``."""
        return ("client", self.front) if leg == "client" else ("proxy", "origin")

    def _delay_key(self, leg: str) -> str:
        return "delay" if leg == "client" else "backend-delay"

    def _delay_host(self, leg: str) -> str:
        """Where ``leg``'s delay line runs: in front of the server (loopback), or beside the
        connecting party (namespaces: so the server sees that party's own address)."""
        connecting, listening = self.leg_hosts(leg)
        return listening if self.network.DELAY_BESIDE == "listening" else connecting

    def dial(self, leg: str) -> tuple[str, int]:
        """The address the connecting party of ``leg`` dials: its delay line's, else the server's."""
        _, listening = self.leg_hosts(leg)
        if self._delay_key(leg) in self.ports:
            return self.address(self._delay_host(leg)), self.ports[self._delay_key(leg)]
        return self.address(listening), self.ports[listening]

    def capture_port(self, leg: str) -> int:
        """The port the capture of ``leg`` filters on: the one the captured connection goes to."""
        _, listening = self.leg_hosts(leg)
        if self._delay_key(leg) in self.ports and self._delay_host(leg) == listening:
            return self.ports[self._delay_key(leg)]
        return self.ports[listening]

    def captured_at(self, leg: str) -> str:
        """Which end of a delayed leg the capture saw: the line plays the long cable, and
        the capture sits on the far side of the line from where the line runs."""
        connecting, listening = self.leg_hosts(leg)
        return connecting if self._delay_host(leg) == listening else listening

    def _start_delay(self, leg: str, rtt: float) -> int:
        """``leg``'s delay line (``python -m course.delay``), onward to the leg's server."""
        connecting, listening = self.leg_hosts(leg)
        host = self._delay_host(leg)
        if host == connecting and self.setup.mode == "forward" and leg == "backend":
            raise RuntimeError("a backend delay line in the namespace lab would sit at the forward proxy's own "
                               "address, which its destination policy refuses: use loopback for this one")
        argv = [sys.executable, "-m", "course.delay", "--listen", f"{self.address(host)}:0",
                "--connect", f"{self.address(listening)}:{self.ports[listening]}", "--rtt", f"{rtt * 1000:g}"]
        if host == listening:               # the server logs the connecting party's address, not the line's
            argv += ["--source", self.address(connecting)]
        return self._spawn(host, argv, f"delay-{leg}.log", _environment())

    def _make_intercept_ca(self) -> None:
        """This run's interception CA, its key in a private directory that ``stop`` deletes; its
        certificate beside the bundle (``intercept-ca.pem``) and in the client's trust file."""
        from proxy.tls.mint import make_ca

        self.logs.mkdir(parents=True, exist_ok=True)
        self._ca_directory = tempfile.mkdtemp(prefix="tlslab-intercept-ca-")
        self.intercept_ca = make_ca(self._ca_directory)
        shutil.copyfile(self.intercept_ca[0], self.out / INTERCEPT_CA)
        self.client_trust.write_text(Path(self.pki.ca).read_text() + self.intercept_ca[0].read_text())

    @property
    def client_trust(self) -> Path:
        """The CA file the lab client trusts: the demo CA, and the interception CA where there is one."""
        return self.logs / "client-trust.pem" if self.setup.intercepts else Path(self.pki.ca)

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
        # The client's session ends here, or the client named this origin in its CONNECT (interception):
        # show www; the proxy's own session to its backend (re-encrypt): the origin's name.
        name = WWW if self.setup.client_tls_ends == "origin" or self.setup.tunnel else ORIGIN_NAME
        cert, key = self.pki.files(name)
        return argv + ["--cert", cert, "--key", key], self.keys / "origin.log"

    def proxy_argv(self) -> list[str]:
        """``tlsproxy serve`` for this setup, to the origin already listening."""
        origin = "%s:%d" % self.dial("backend")
        argv = [sys.executable, "-m", "course.cli", "serve", "--mode", self.setup.mode,
                "--listen", f"{self.address('proxy')}:0", "--access-log", str(self.logs / "access.log")]
        if self.setup.mode == "terminate":
            cert, key = self.pki.files(WWW)
            argv += ["--cert", cert, "--key", key, "--keylog", str(self.keys / "proxy.log")]
            if self.http2:                      # HTTP/2 on the client leg (proxy/modes/h2.py)
                argv += ["--alpn", "h2,http/1.1"]
            if self.setup.origin_tls:           # re-encrypt: a second TLS session to the origin
                argv += ["--backend", f"https://{origin}", "--backend-ca", str(self.pki.ca),
                         "--backend-sni", ORIGIN_NAME, "--backend-keylog", str(self.keys / "proxy-backend.log")]
            else:
                argv += ["--backend", f"http://{origin}"]
        elif self.setup.mode == "passthrough":
            argv += ["--backend", f"https://{origin}"]
        elif self.setup.mode == "forward":       # CONNECT www.example.test:PORT, to the origin only
            origin_ip, port = self.dial("backend")
            argv += ["--forward-host", f"{WWW}={origin_ip}", "--connect-port", str(port),
                     "--allow", f"dst={origin_ip}/32 port={port}"]
            if self.setup.intercepts:            # CONNECT answered, TLS ended with a minted leaf, origin verified
                if self.intercept_ca is None:
                    raise RuntimeError("the interception CA is made when the lab starts (Lab.start)")
                argv += ["--intercept-ca", *map(str, self.intercept_ca), "--backend-ca", str(self.pki.ca),
                         "--keylog", str(self.keys / "proxy.log"),
                         "--backend-keylog", str(self.keys / "proxy-backend.log")]
        return argv

    def client_argv(self, *, tls: str = "1.3", resumed: bool = False) -> list[str]:
        front = "%s:%d" % self.dial("client")
        argv = [sys.executable, "-m", "course.capture.client", "--connect", front,
                "--source", self.address("client"), "--server-name", WWW]
        if self.setup.tunnel:            # the forward proxy resolves the name (--forward-host)
            argv += ["--tunnel", f"{WWW}:{self.dial('backend')[1]}"]
        if self.setup.client_tls:
            argv += ["--ca", str(self.client_trust), "--tls", tls] + (["--resumed"] if resumed else [])
            argv += ["--http2"] if self.http2 else []
        else:
            argv += ["--plain"]
        return argv

    def run_client(self, *, tls: str = "1.3", resumed: bool = False, hrr: bool = False) -> dict:
        """Run the lab client to completion in the client's network; return its report.
        ``hrr``: offer a P-521 key share first, which earns a HelloRetryRequest (TLS 1.3)."""
        keylog = self.keys / "client.log" if self.setup.client_tls else None
        env = _environment(keylog)
        if hrr:
            if tls != "1.3" or not self.setup.client_tls:
                raise RuntimeError("a HelloRetryRequest is TLS 1.3's (RFC 8446 §4.1.4): use it with --tls 1.3")
            conf = self.logs / "client-openssl.cnf"
            conf.write_text(HRR_OPENSSL_CONF.format(groups=HRR_GROUPS))
            env["OPENSSL_CONF"] = str(conf)
        done = self.network.run("client", self.client_argv(tls=tls, resumed=resumed), capture_output=True,
                                text=True, timeout=CLIENT_TIMEOUT, env=env, cwd=str(PACKAGE_ROOT))
        if done.returncode != 0:
            raise RuntimeError(f"the lab client failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        return json.loads(done.stdout)

    def stop(self) -> None:
        """SIGTERM each process (the proxy first, so it closes its backend connections
        gracefully and the capture sees them end), then SIGKILL what is left."""
        for process in reversed(self.processes):
            stop_child(process, STOP_TIMEOUT)
        self.processes.clear()
        if self._ca_directory is not None:       # the interception CA's key never outlives the run
            shutil.rmtree(self._ca_directory, ignore_errors=True)
            self._ca_directory = None
