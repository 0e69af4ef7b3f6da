"""The six setups of DESIGN.md (and nginx), each started as real processes on loopback.

Theory of operation
-------------------
What each setup is (its hosts, the proxy's mode, which legs carry TLS, who
terminates the client's session) comes from the project's one table,
``course.setups``; this module only turns those facts into processes and command
lines.  nginx, the production reference, is the benchmark's own seventh column: it
plays the proxy of setup 3.  Every process of a setup is its own operating-system
process, so the kernel keeps its CPU time apart from everyone else's
(``course.bench.cpu``)::

    direct-http    loadgen ──HTTP──────────────────────────▶ origin
    direct-https   loadgen ══TLS═══════════════════════════▶ origin (--cert)
    terminate      loadgen ══TLS══▶ proxy ──HTTP───────────▶ origin
    reencrypt      loadgen ══TLS══▶ proxy ══TLS════════════▶ origin (--backend https://, --backend-ca)
    passthrough    loadgen ══TLS══▶ proxy ~~SNI splice~~~~~▶ origin (--mode passthrough)
    forward        loadgen ──CONNECT──▶ proxy ~~tunnel~~~~~▶ origin (--mode forward)
    nginx          loadgen ══TLS══▶ nginx, 1 worker ──HTTP─▶ origin (the production reference)

The bench-only variants of ``course.bench.variants`` start their base's processes
with one setting turned: ``terminate-unpooled`` is terminate's proxy with
``--pool-max-idle 0`` and ``nginx-unpooled`` nginx without upstream ``keepalive``,
both opening a new connection to the origin for every request; ``terminate-eventloop``
is terminate's proxy with ``--engine eventloop``.

The origin is ``python -m course.origin``; the proxy is ``python -m course.bench.serve``
(``tlsproxy serve``'s flags with the access log off, as nginx's is); nginx runs the
configuration of ``course.nginx.terminate_conf``.  Each listens on a port the kernel
picks (nginx cannot: it gets a port we found free a moment before) and is ready when
it says so on its log.  ``components`` maps each role to its pids: "origin" and
"proxy" (for nginx, the master and its worker).

Where the client sees a certificate, the setup can show ECDSA P-256
(``www.example.test``) or RSA-2048 (``www-rsa.example.test``).  Our proxy holds
both and picks by SNI, so one instance serves both; an origin or nginx holds one,
so the RSA variant is a second instance (``instance_key``).  The origin behind
re-encryption shows ``origin.example.test``, whose SANs include 127.0.0.1, the
address the proxy dials and checks.

Every child has its log in the work directory, inherits no ``SSLKEYLOGFILE`` (key
logging would be measured too), and is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from course.bench import variants
from course.bench.variants import alpn, backend_keepalive, base_of, engine
from course.bench.workloads import NGINX
from course.children import stop_child
from course.setups import BY_NAME, SETUPS, Setup
from proxy.errors import ConfigError
from proxy.pki import DEMO_ORIGIN, DEMO_WWW, DEMO_WWW_RSA, DemoPKI

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
CERT_NAMES = {"ecdsa": DEMO_WWW, "rsa": DEMO_WWW_RSA}
ORIGIN_READY = re.compile(r"listening on https?://[^\s:]+:(\d+)")
PROXY_READY = re.compile(r"tlsproxy: \w+ listening on [^\s]+:(\d+)")
FLOOR_READY = re.compile(r"floor relay: listening on [^\s]+:(\d+)")  # course.bench.floor_relay
# Who terminates the client's TLS, and so whose certificate the client is shown.
ORIGIN_TERMINATES = tuple(s.name for s in SETUPS if s.client_tls_ends == "origin")
PROXY_TERMINATES = tuple(s.name for s in SETUPS if s.client_tls_ends == "proxy")


def child_environment() -> dict[str, str]:
    """The environment of every child: ours, minus key logging, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (for nginx, which cannot listen on port 0 and tell us)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def instance_key(setup: str, cert: str) -> tuple[str, str]:
    """Which running instance serves ``setup`` with ``cert``: our proxy holds both certificates,
    and without TLS there is no certificate to choose; an origin or nginx holds one."""
    facts = BY_NAME.get(base_of(setup))  # None for nginx
    one_for_all = facts is not None and facts.client_tls_ends in (None, "proxy")
    return (setup, "any") if one_for_all else (setup, cert)


# --------------------------------------------------------------------------- one process
class Child:
    """A child process whose output goes to a log file; ready when a line matches."""

    def __init__(self, name: str, argv: list[str], logdir: Path, ready: re.Pattern):
        self.name = name
        self.argv = argv
        self.log_path = logdir / f"{name}.log"
        self.ready = ready
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> Child:
        with open(self.log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall the child
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=child_environment(), cwd=REPO)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> int:
        """Wait for the ready line; return the port it names."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")
            match = self.ready.search(text)
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.process.poll() is not None:
                raise ConfigError(f"{self.name} exited with status {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise ConfigError(f"{self.name} not ready after {timeout:g}s: {self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (both our servers shut down gracefully on it), then SIGKILL.  Idempotent."""
        if self.process is not None:
            stop_child(self.process, timeout)


def origin_child(name: str, logdir: Path, cert: tuple[str, str] | None = None) -> Child:
    argv = [sys.executable, "-m", "course.origin", "--name", name, "--listen", "127.0.0.1:0"]
    if cert:
        argv += ["--cert", cert[0], "--key", cert[1]]
    return Child(f"{name}", argv, logdir, ORIGIN_READY)


def proxy_child(name: str, logdir: Path, flags: list[str], profile: str | None = None) -> Child:
    argv = [sys.executable, "-m", "course.bench.serve", "--listen", "127.0.0.1:0", *flags]
    if profile:
        argv += ["--profile", profile]
    return Child(name, argv, logdir, PROXY_READY)


# --------------------------------------------------------------------------- one setup
@dataclass(frozen=True)
class NginxPlan:
    """nginx's part of a setup, decided once the origin's port is known."""

    port: int
    workdir: Path
    conf: str


@dataclass
class RunningSetup:
    """A started setup: where the load generator connects, and whose CPU counts."""

    name: str
    cert: str
    scheme: str  # what the client speaks: "http" or "https"
    connect_to: tuple[str, int]  # TCP destination (for forward: the CONNECT destination)
    proxy: tuple[str, int] | None = None  # forward proxy to CONNECT through
    components: dict[str, list[int]] = field(default_factory=dict)
    implementation: str = "tlsproxy"  # who plays the proxy role
    children: list[Child] = field(default_factory=list)
    nginx: object | None = None  # course.nginx.NginxProcess

    def host_for(self, cert: str) -> str:
        """Host header and SNI: the name of the certificate the client should be shown."""
        return CERT_NAMES[cert]

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for child in reversed(self.children):
            child.stop()


class SetupLauncher:
    """Starts the instances the run needs, origins first, all in parallel; stops them all."""

    def __init__(self, pki: DemoPKI, workdir: Path, *, profile_dir: Path | None = None,
                 max_connections: int | None = None):
        self.pki = pki
        self.max_connections = max_connections  # None: the defaults (Limits.max_connections)
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.profile_dir = profile_dir
        self.running: dict[tuple[str, str], RunningSetup] = {}

    def files(self, name: str) -> tuple[str, str]:
        return self.pki.files(name)

    def start(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], RunningSetup]:
        """Start every (setup, cert) instance in ``keys``; stop all of them on failure."""
        started: list[Child] = []
        try:
            origins = {key: self._origin(key) for key in keys}
            for child in origins.values():
                started.append(child.start())
            for child in origins.values():
                child.wait_ready()
            fronts = {key: self._front(key, origins[key]) for key in keys}
            for front in fronts.values():
                if isinstance(front, Child):
                    started.append(front.start())
            for key in keys:
                self.running[key] = self._finish(key, origins[key], fronts[key])
        except BaseException:
            self.stop()
            for child in started:
                child.stop()
            raise
        return self.running

    def _tag(self, key: tuple[str, str]) -> str:
        setup, cert = key
        return setup if cert in ("any", "ecdsa") else f"{setup}-{cert}"

    def _origin(self, key: tuple[str, str]) -> Child:
        setup, cert = key
        tag = self._tag(key)
        facts = BY_NAME.get(base_of(setup))  # None for nginx, whose origin speaks plain HTTP
        if facts is None or not facts.origin_tls:
            return origin_child(f"{tag}-origin", self.logdir)
        if facts.client_tls_ends == "origin":  # the client's session: the certificate it asked for
            return origin_child(f"{tag}-origin", self.logdir, self.files(CERT_NAMES[cert]))
        return origin_child(f"{tag}-origin", self.logdir, self.files(DEMO_ORIGIN))  # the proxy's session

    def _front(self, key: tuple[str, str], origin: Child) -> Child | NginxPlan | None:
        """The proxy in front of the origin: our proxy (a Child), nginx, or nobody."""
        setup, cert = key
        tag = self._tag(key)
        profile = str(self.profile_dir / f"{tag}.pstats") if self.profile_dir else None
        facts = BY_NAME.get(base_of(setup))
        if variants.front(setup) == "floor":  # not a proxy: the byte relay that measures Python's floor
            cert_file, key_file = self.files(DEMO_WWW)
            return Child(f"{tag}-floor", [sys.executable, "-m", "course.bench.floor_relay", "--cert", cert_file,
                                          "--key", key_file, "--backend", f"127.0.0.1:{origin.port}"],
                         self.logdir, FLOOR_READY)
        if facts is not None and facts.mode is not None:
            flags = self.proxy_flags(facts, origin.port)
            if not backend_keepalive(setup):  # the unpooled variant: no idle backend connection kept
                flags += ["--pool-max-idle", "0"]
            if engine(setup) != "threaded":  # the event-loop variant: the same flags, the other engine
                flags += ["--engine", engine(setup)]
            if alpn(setup):  # the h2 variant says its ALPN outright
                flags += ["--alpn", ",".join(alpn(setup))]
            if self.max_connections:
                flags += ["--max-connections", str(self.max_connections)]
            return proxy_child(f"{tag}-proxy", self.logdir, flags, profile)
        if base_of(setup) == NGINX:
            from course.nginx import terminate_conf

            port = free_port()
            workdir = self.workdir / f"{tag}-nginx"
            cert_file, key_file = self.files(CERT_NAMES[cert])
            conf = terminate_conf(port, cert_file, key_file, [("127.0.0.1", origin.port)], workdir=str(workdir),
                                  keepalive=backend_keepalive(setup), max_connections=self.max_connections,
                                  http2="h2" in (alpn(setup) or ()))
            return NginxPlan(port, workdir, conf)
        return None  # direct-http, direct-https: the client talks to the origin

    def proxy_flags(self, facts: Setup, origin_port: int) -> list[str]:
        """``tlsproxy serve`` flags for the proxy of ``facts``, in front of the origin on ``origin_port``."""
        address = f"127.0.0.1:{origin_port}"
        certs = []
        for name in (DEMO_WWW, DEMO_WWW_RSA):  # ECDSA first: the default without SNI
            c, k = self.files(name)
            certs += ["--cert", c, "--key", k]
        if facts.mode == "terminate":
            if facts.origin_tls:  # re-encrypt: a second TLS session, to an origin verified against our CA
                return [*certs, "--backend", f"https://{address}", "--backend-ca", str(self.pki.ca)]
            return [*certs, "--backend", f"http://{address}"]
        if facts.mode == "passthrough":
            return ["--mode", "passthrough", "--backend", f"https://{address}"]
        if facts.mode == "forward":
            # The policy's defaults allow loopback destinations, but CONNECT only to ports
            # 443 and 8443 (Squid's SSL_ports): allow the origin's port as well.
            return ["--mode", "forward", "--connect-port", str(origin_port)]
        raise ConfigError(f"the benchmark cannot start a proxy in mode {facts.mode!r}")

    def _finish(self, key: tuple[str, str], origin: Child, front: Child | NginxPlan | None) -> RunningSetup:
        setup, cert = key
        origin_address = ("127.0.0.1", origin.port)
        facts = BY_NAME.get(base_of(setup))
        scheme = "https" if facts is None or facts.client_tls else "http"  # nginx: TLS
        running = RunningSetup(setup, cert, scheme, origin_address, components={"origin": [origin.pid]},
                               children=[origin], implementation="none")
        if isinstance(front, Child):
            running.children.append(front)
            front.wait_ready()
            running.components["proxy"] = [front.pid]
            running.implementation = "tlsproxy" if variants.front(setup) == "tlsproxy" else "floor relay"
            if facts.tunnel:
                running.proxy = ("127.0.0.1", front.port)  # CONNECT through it to the origin
            else:
                running.connect_to = ("127.0.0.1", front.port)
        elif isinstance(front, NginxPlan):
            from course.nginx import NginxProcess

            running.nginx = NginxProcess(front.conf, front.workdir).start()
            running.components["proxy"] = running.nginx.pids()  # master and worker
            running.implementation = "nginx"
            running.connect_to = ("127.0.0.1", front.port)
        return running

    def stop(self) -> None:
        for running in self.running.values():
            running.stop()
        self.running.clear()

