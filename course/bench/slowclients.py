"""Slow clients against both engines: what a slowloris swarm does to one ordinary client.

Theory of operation
-------------------
A *slow client* costs the attacker almost nothing: it completes a TLS handshake, then
trickles a request head one byte per second and never finishes it (slowloris, Robert
Hansen, 2009).  When the proxy cuts it off (the head timeout answers 408 and closes,
or a limit refuses it), it reconnects and starts again.  N of them (default 2000) are
a *swarm*; meanwhile ONE normal client sends ordinary GETs, paced (default 10 a
second, a bounded number), and records each request's latency and failures::

    main process                          proxy (course.bench.serve)          origin
    ───────────                          ─────────────────────────          ──────
    1. baseline: normal client  ══TLS══▶  --engine threaded|eventloop ──HTTP──▶ /bytes/1k
       (no swarm): idle p50/p99
    2. start the swarm child ─────────┐
       wait until it says "ramped"    │   swarm process (this module, --swarm-child):
    3. loaded: normal client again    └─▶ N sockets, one selector, non-blocking ssl:
       (loaded p50/p99), sample the        connect ─▶ handshake ─▶ 1 byte/s ... ─▶ cut ─▶ again
       proxy's /proc/PID/status
    4. SIGTERM the swarm: it writes its counts (connected now, reconnects, cuts by kind)

Each party is its own process, so each has its own interpreter and GIL: the swarm's
CPU does not steal from the normal client's timing, and the kernel keeps the proxy's
RSS, thread count and CPU time apart (read from ``/proc/PID/status`` and ``/stat``).

**The swarm is cheap on purpose.**  No thread per slow client: one process, one
``selectors`` loop and a timer heap drive every socket.  Each client is a small state
machine (``Phase``, ``TRANSITIONS``); its TLS handshake is a non-blocking ``SSLSocket``
whose ``do_handshake()`` raises ``SSLWantReadError``/``SSLWantWriteError`` until done,
so a slow client costs one file descriptor and a few kilobytes.  At most ``INFLIGHT``
connections are being opened at once (the rest queue), so the proxy's listen backlog
is never flooded by the swarm's own ramp.

**Why a thread per connection suffers.**  In the threaded engine every slow client
holds a connection thread, blocked in ``recv`` for a byte that comes once a second,
and one of ``max_connections`` slots.  N slow clients are N threads (stack, kernel
task, a wake-up and a GIL hand-off for every trickled byte) and, once N reaches the
limit, every new client, the normal one included, waits in the kernel's backlog until
a slow client is cut.  **Why an event loop does not**: a slow client there is one
socket in the selector and one deadline in the timer heap; a trickled byte is one
short callback, and the thread count stays one.

What neither engine avoids: every cut slow client reconnects, so every
``header_read`` seconds a wave of TLS handshakes arrives (the swarm's clients were
connected within seconds of each other, so they are cut within seconds of each
other too).  The normal client's handshake and request wait in that wave.  The two
engines wait differently: CPython releases the GIL inside ``SSL_do_handshake``
(``Modules/_ssl.c``), so the threaded engine's handshakes run on both cores while its
threads take turns, whereas the event loop does every handshake step in its one
thread, in line with every other ready callback (``proxy.eventloop.loop``).  The
``timeline`` in the JSON (each request's start offset, latency and failure) shows
where in the phase the slow requests fell.

**The threaded engine's defences, and where threads stop.**  Three limits bound what a
swarm can take from a thread per connection, and this module sets each one:

* the head deadline (``--header-timeout``): a slow client holds its thread for at most
  that long, then it is cut (408) and must reconnect;
* ``max_connections`` (``--max-connections``), sized to memory: each slow client costs a
  thread (step 4 of notebook 7 measures the resident memory of one), so the limit says
  how many the machine can afford.  At the limit new clients wait in the backlog, the
  normal one included, until a slow client is cut;
* a per-address limit (``--per-client``, ``Limits.max_connections_per_client``,
  ``proxy.admission``): the one too many from an address is closed at accept, with no
  handshake and no thread held, so a swarm from one address (``--swarm-addresses 1``,
  the default) cannot reach ``max_connections`` at all.

The last one is where threads stop: a swarm spread over more addresses than
``max_connections / per_client`` (``--swarm-addresses K``) passes it, each address under
its limit, and the slots fill again.  What is left then is memory: a thread per slow
client up to ``max_connections``, where the event loop holds each one as a socket in
its selector.

Which limits apply (``proxy/config.py``; ``tlsproxy serve`` has no flags for them, so
this module writes them into a ``--config`` TOML file and prints them with the result):

* ``Limits.max_connections`` (proxy default 1024): concurrent client connections, in
  both engines.  Default here: ``--slow`` + 64, so the limit is *not* what is measured
  and the engines are compared; ``--max-connections 1024`` shows the proxy's default
  capping the swarm (then the normal client queues in the backlog on both engines).
  The threaded engine's thread cap is the same number plus one (``proxy/server.py``).
* ``Timeouts.header_read`` (default 10 s, HAProxy's ``timeout http-request``): from the
  first byte of a head, the whole head must arrive in time, or 408 and close; this is
  what cuts a slow client here (its head is endless).  ``Timeouts.handshake`` (10 s)
  bounds a TLS handshake.  ``idle_keepalive`` (75 s) does not apply: a slow client
  sends its first byte at once.
* ``Limits.max_connections_per_client`` (proxy default 0: off; ``proxy.admission``):
  ``--per-client N``.  The swarm connects from ``--swarm-addresses``
  loopback addresses, 127.0.0.2 onwards; the normal client from 127.0.0.1, so it has a
  count of its own.
* The proxy's listen backlog is 1024 (``ProxyServer.bind``), capped by
  ``net.core.somaxconn``; ``RLIMIT_NOFILE`` is raised to its hard limit in this
  process (the proxy and origin inherit it) and in the swarm.

Every phase is bounded in time and count: the baseline and loaded phases by
``--baseline``/``--seconds`` and ``--rate`` (a request takes at most about three
``--request-timeout``s), the ramp by ``--ramp-timeout``, the swarm by its own hard
deadline and a cap on connection attempts (``ATTEMPTS_PER_CLIENT``).  Children are
stopped by their pid (SIGTERM, then SIGKILL) on success, error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter, deque
from enum import Enum
from pathlib import Path

from course.bench.httpclient import Endpoint, RequestFailed, open_connection
from course.bench.loadgen import percentile
from course.bench.setups import Child, origin_child, proxy_child
from course.children import raise_file_limit
from proxy.errors import ConfigError
from proxy.tls.contexts import client_context
from proxy.pki import DEMO_WWW, DemoPKI, ensure_demo_certs

ENGINES = ("threaded", "eventloop")
PATH = "/bytes/1k"
HOST = DEMO_WWW
INFLIGHT = 64  # swarm connections being opened (connect + handshake) at once, at most
OPEN_TIMEOUT = 15.0  # the swarm gives up a connect + handshake after this (then backs off)
BACKOFF = 1.0  # seconds before a swarm client whose open failed tries again
ATTEMPTS_PER_CLIENT = 60  # the swarm's bound on connection attempts: N x this, in all
HEADROOM = 64  # default max_connections = --slow + this
MAX_SOURCES = 250  # --swarm-addresses: 127.0.0.2 to 127.0.0.251 at most (loopback, no setup needed)
SWARM_READY = re.compile(r"swarm: ramped (\d+) of \d+")
# The endless head: a request line, then one made-up field line after another.  At one
# byte a second it never ends, so only the proxy's head timeout (or a limit) ends it.
HEAD_START = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n".encode()
HEAD_REPEAT = b"X-Slow: 1\r\n"


# =========================================================================== the swarm
class Phase(Enum):
    WAITING = "waiting"  # queued for one of the INFLIGHT opening places
    CONNECTING = "connecting"  # non-blocking connect() in progress
    HANDSHAKING = "handshaking"  # do_handshake() until it stops wanting reads/writes
    TRICKLING = "trickling"  # connected: one head byte per second
    BACKOFF = "backoff"  # the open failed: wait BACKOFF seconds


TRANSITIONS = {
    Phase.WAITING: {Phase.CONNECTING},
    Phase.CONNECTING: {Phase.HANDSHAKING, Phase.BACKOFF},
    Phase.HANDSHAKING: {Phase.TRICKLING, Phase.BACKOFF},
    Phase.TRICKLING: {Phase.WAITING},  # cut off: reconnect, start again
    Phase.BACKOFF: {Phase.WAITING},
}


class SlowClient:
    """One slow client: a socket, a phase, and where it is in its endless head."""

    def __init__(self, swarm: "Swarm", number: int) -> None:
        self.swarm, self.number = swarm, number
        self.phase = Phase.WAITING
        self.sock: socket.socket | None = None
        self.generation = 0  # bumped per connection: a timer of an earlier one is ignored
        self.offset = 0  # head bytes sent on this connection
        self.connections = 0

    def go(self, phase: Phase) -> None:
        assert phase in TRANSITIONS[self.phase], f"{self.phase} -> {phase}"
        self.swarm.connected += (phase is Phase.TRICKLING) - (self.phase is Phase.TRICKLING)
        self.phase = phase

    # ------------------------------------------------------------------ opening
    def open(self) -> None:
        swarm = self.swarm
        self.go(Phase.CONNECTING)
        self.generation += 1
        self.offset = 0
        self.connections += 1
        swarm.count("connects")
        if self.connections > 1:
            swarm.count("reconnects")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((swarm.sources[self.number % len(swarm.sources)], 0))  # not the normal client's address
        error = self.sock.connect_ex(swarm.address)
        if error not in (0, errno.EINPROGRESS):
            return self.open_failed(f"connect {errno.errorcode.get(error, error)}")
        swarm.selector.register(self.sock, selectors.EVENT_WRITE, self)
        swarm.timer(time.monotonic() + OPEN_TIMEOUT, self)

    def connected(self) -> None:
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            return self.open_failed(f"connect {errno.errorcode.get(error, error)}")
        self.swarm.selector.unregister(self.sock)  # the SSLSocket takes over the descriptor
        self.sock = self.swarm.context.wrap_socket(self.sock, server_hostname=HOST, do_handshake_on_connect=False)
        self.swarm.selector.register(self.sock, selectors.EVENT_WRITE, self)
        self.go(Phase.HANDSHAKING)
        self.handshake()

    def handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return self.swarm.selector.modify(self.sock, selectors.EVENT_READ, self)
        except ssl.SSLWantWriteError:
            return self.swarm.selector.modify(self.sock, selectors.EVENT_WRITE, self)
        except (ssl.SSLError, OSError) as error:
            return self.open_failed(f"tls {type(error).__name__}")
        self.go(Phase.TRICKLING)
        self.generation += 1  # the open timeout's timer no longer applies
        self.swarm.opening -= 1
        self.swarm.count("handshakes")
        self.swarm.selector.modify(self.sock, selectors.EVENT_READ, self)  # readable now means: cut off
        self.trickle()  # the first byte at once: the proxy's head clock starts now

    def open_failed(self, kind: str) -> None:
        self.swarm.opening -= 1
        self.swarm.count(f"open failed: {kind}")
        self.close()
        self.go(Phase.BACKOFF)
        self.swarm.timer(time.monotonic() + BACKOFF, self)

    # ------------------------------------------------------------------ trickling
    def trickle(self) -> None:
        """Send the next head byte; again in a second."""
        if self.offset < len(HEAD_START):
            byte = HEAD_START[self.offset:self.offset + 1]
        else:
            at = (self.offset - len(HEAD_START)) % len(HEAD_REPEAT)
            byte = HEAD_REPEAT[at:at + 1]
        try:
            self.sock.send(byte)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            pass  # a full buffer cannot happen at 1 byte/s; if it does, the next tick tries again
        except (ssl.SSLError, OSError):
            return self.cut("reset")
        else:
            self.offset += 1
            self.swarm.count("bytes")
        self.swarm.timer(time.monotonic() + 1.0, self)

    def readable(self) -> None:
        """The proxy spoke: after the handshake that is a ticket (ignored), or the cut."""
        try:
            data = self.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # a TLS 1.3 NewSessionTicket, no application data
        except (ssl.SSLError, OSError):
            return self.cut("reset")
        if not data:
            return self.cut("closed")
        status = data.split(b" ", 2)[1:2]
        self.cut(f"HTTP {status[0].decode(errors='replace')}" if data.startswith(b"HTTP/") and status else "other")

    def cut(self, kind: str) -> None:
        self.swarm.count(f"cut: {kind}")
        self.close()
        self.go(Phase.WAITING)
        self.swarm.waiting.append(self)

    # ------------------------------------------------------------------ events
    def on_ready(self) -> None:
        if self.phase is Phase.CONNECTING:
            self.connected()
        elif self.phase is Phase.HANDSHAKING:
            self.handshake()
        elif self.phase is Phase.TRICKLING:
            self.readable()

    def on_timer(self) -> None:
        if self.phase in (Phase.CONNECTING, Phase.HANDSHAKING):
            self.open_failed("timeout")
        elif self.phase is Phase.TRICKLING:
            self.trickle()
        elif self.phase is Phase.BACKOFF:
            self.go(Phase.WAITING)
            self.swarm.waiting.append(self)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.swarm.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        self.generation += 1  # its pending timer is now stale


class Swarm:
    """N slow clients on one selector and one timer heap."""

    def __init__(self, address: tuple[str, int], count: int, sources: tuple[str, ...] = ("127.0.0.2",)) -> None:
        self.address = address
        self.sources = sources  # the loopback addresses the clients connect from, in turn
        self.selector = selectors.DefaultSelector()
        # An attacker verifies nothing; the handshake (key exchange, signature) still happens.
        self.context = client_context(verify=False, min_version="1.3")
        self.clients = [SlowClient(self, n) for n in range(count)]
        self.waiting: deque[SlowClient] = deque(self.clients)
        self.timers: list[tuple[float, int, int, SlowClient]] = []
        self.serial = 0
        self.opening = 0
        self.connected = 0  # clients in Phase.TRICKLING, kept by SlowClient.go
        self.counts: Counter = Counter()
        self.at_ramp: Counter = Counter()  # the counts when the ramp ended
        self.max_attempts = count * ATTEMPTS_PER_CLIENT
        self.stopping = False

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def timer(self, when: float, client: SlowClient) -> None:
        self.serial += 1
        heapq.heappush(self.timers, (when, self.serial, client.generation, client))

    def open_some(self) -> None:
        while self.waiting and self.opening < INFLIGHT and self.counts["connects"] < self.max_attempts:
            self.opening += 1
            self.waiting.popleft().open()

    def run(self, *, ramp_timeout: float, hard_deadline: float) -> dict:
        """Until SIGTERM/SIGINT (``stopping``) or ``hard_deadline``; the counts at that moment."""
        started = time.monotonic()
        ramp_deadline, ramped, next_report = started + ramp_timeout, None, started + 5.0
        while not self.stopping and time.monotonic() < hard_deadline:
            self.open_some()
            now = time.monotonic()
            wait = min(0.25, max(0.0, self.timers[0][0] - now)) if self.timers else 0.25
            for key, _ in self.selector.select(wait):
                key.data.on_ready()
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, generation, client = heapq.heappop(self.timers)
                if generation == client.generation:
                    client.on_timer()
            if ramped is None and (self.connected == len(self.clients) or now >= ramp_deadline):
                ramped = now - started
                self.at_ramp = Counter(self.counts)
                print(f"swarm: ramped {self.connected} of {len(self.clients)} connected in {ramped:.1f}s",
                      flush=True)
            if now >= next_report:
                next_report = now + 5.0
                print(f"swarm: t={now - started:.0f}s connected={self.connected} opening={self.opening} "
                      f"{dict(self.counts)}", flush=True)
        return self.result(ramped, time.monotonic() - started)

    def result(self, ramped: float | None, elapsed: float) -> dict:
        at_ramp = self.at_ramp
        phases = Counter(c.phase.value for c in self.clients)
        return {
            "clients": len(self.clients), "connected_at_end": phases.get(Phase.TRICKLING.value, 0),
            "phases_at_end": dict(phases), "ramp_seconds": ramped, "seconds": round(elapsed, 3),
            "reconnects": self.counts["reconnects"] - at_ramp["reconnects"],  # after the ramp: the loaded phase
            "counts_total": dict(self.counts),
            "counts_after_ramp": {k: v - at_ramp[k] for k, v in self.counts.items() if v - at_ramp[k]},
            "cpu_seconds": round(time.process_time(), 3),
        }

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.selector.close()


def swarm_sources(count: int) -> tuple[str, ...]:
    """The swarm's source addresses: 127.0.0.2 onwards (the normal client is 127.0.0.1)."""
    base = ipaddress.IPv4Address("127.0.0.2")
    return tuple(str(base + n) for n in range(count))


def swarm_main(args: argparse.Namespace) -> int:
    """The hidden ``--swarm-child`` entry: run the swarm, write its counts to ``--result``."""
    fds = raise_file_limit()
    if fds < args.slow + 64:
        print(f"swarm: RLIMIT_NOFILE is {fds}, fewer than {args.slow} clients need", flush=True)
    swarm = Swarm(("127.0.0.1", args.port), args.slow, swarm_sources(args.swarm_addresses))

    def stop(*_):
        swarm.stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        result = swarm.run(ramp_timeout=args.ramp_timeout, hard_deadline=time.monotonic() + args.hard_seconds)
    finally:
        swarm.close()
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


# =========================================================================== the normal client
def proc_status(pid: int) -> dict:
    """RSS (kB) and thread count from /proc/PID/status; CPU seconds from /proc/PID/stat."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_kb": int(fields["VmRSS"][0]), "threads": int(fields["Threads"][0]),
            "cpu_seconds": round((int(stat[11]) + int(stat[12])) / ticks, 2)}  # utime + stime


class Peak:
    """The largest RSS and thread count seen in a process's samples."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_kb, self.threads = pid, 0, 0

    def sample(self) -> None:
        try:
            status = proc_status(self.pid)
        except (OSError, KeyError, IndexError, ValueError):  # exited: a zombie has no VmRSS
            return  # run_engine's check_alive says so after the phase
        self.rss_kb, self.threads = max(self.rss_kb, status["rss_kb"]), max(self.threads, status["threads"])


def normal_client(endpoint: Endpoint, seconds: float, rate: float, *, keepalive: bool,
                  peak: Peak | None = None) -> dict:
    """``rate`` GETs a second for ``seconds`` (at most seconds x rate); latencies of the successes."""
    planned = max(1, round(seconds * rate))
    latencies: list[float] = []
    failures: Counter = Counter()
    timeline: list[tuple[float, float, str | None]] = []  # (start offset s, latency ms, failure or None)
    conn, sent = None, 0
    start = time.perf_counter()
    for i in range(planned):
        now = time.perf_counter()
        if now >= start + seconds:
            break  # late requests are not sent: the phase ends on time (counted as not sent)
        if start + i / rate > now:
            time.sleep(start + i / rate - now)
        sent += 1
        began = time.perf_counter()
        try:
            if conn is None or conn.closed:
                conn = open_connection(endpoint)
            status, _ = conn.request("GET", PATH, close=not keepalive)
            failure = None if status == 200 else f"HTTP {status}"
        except RequestFailed as error:
            failure, conn = error.kind, None
        elapsed_ms = (time.perf_counter() - began) * 1000
        if failure is None:
            latencies.append(elapsed_ms)
        else:
            failures[failure] += 1
        timeline.append((round(began - start, 3), round(elapsed_ms, 2), failure))
        if peak is not None:
            peak.sample()
    if conn is not None:
        conn.close()
    latencies.sort()
    return {"planned": planned, "sent": sent, "ok": len(latencies), "failed": sum(failures.values()),
            "failures": dict(failures), "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2), "max_ms": round(latencies[-1], 2) if latencies else 0.0,
            "seconds": round(time.perf_counter() - start, 2), "timeline": timeline}


# =========================================================================== one engine
def check_alive(children: list[Child]) -> None:
    """A child that exited mid-run (crashed, or Ctrl-C reached it first) ends the run, by name."""
    for child in children:
        if child.process.poll() is not None:
            raise ConfigError(f"{child.name} exited with status {child.process.returncode}: {child.tail()}")


def proxy_config(path: Path, pki: DemoPKI, origin_port: int, settings: argparse.Namespace) -> Path:
    """The TOML the proxy runs with: its limits written out, since no flag sets them."""
    cert, key = pki.files(HOST)
    path.write_text(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nmode = \"terminate\"\n"
        f"certs = [{{ cert = {json.dumps(cert)}, key = {json.dumps(key)} }}]\n\n"
        f"[[pools]]\nname = \"web\"\nbackends = [\"http://127.0.0.1:{origin_port}\"]\n\n"
        f"[timeouts]\nhandshake = {settings.handshake_timeout}\nheader_read = {settings.header_timeout}\n\n"
        f"[limits]\nmax_connections = {settings.max_connections}\n"
        f"max_connections_per_client = {settings.per_client}\n")
    return path


def run_engine(engine: str, settings: argparse.Namespace, pki: DemoPKI, workdir: Path) -> dict:
    """Baseline, then the swarm and the loaded phase, against one engine's proxy process."""
    logdir = workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    say = lambda text: print(f"[{engine}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        origin = origin_child(f"{engine}-origin", logdir)
        children.append(origin.start())
        origin.wait_ready()
        config = proxy_config(workdir / f"{engine}.toml", pki, origin.port, settings)
        flags = ["--config", str(config), "--engine", engine]
        if engine == "eventloop" and settings.handshake_threads:
            flags += ["--handshake-threads", str(settings.handshake_threads)]  # handshake steps in worker threads
        proxy = proxy_child(f"{engine}-proxy", logdir, flags)
        children.append(proxy.start())
        proxy.wait_ready()
        context = client_context(ca=str(pki.ca), min_version="1.3")
        endpoint = Endpoint(("127.0.0.1", proxy.port), HOST, tls=context, timeout=settings.request_timeout)
        open_connection(endpoint).request("GET", PATH, close=True)  # warm-up: the backend connection exists
        keepalive = settings.normal == "keepalive"
        say(f"baseline: {settings.baseline:g}s, no slow clients")
        idle = proc_status(proxy.pid)
        baseline = normal_client(endpoint, settings.baseline, settings.rate, keepalive=keepalive)
        check_alive(children)
        result_file = workdir / f"{engine}-swarm.json"
        swarm = Child(f"{engine}-swarm", [
            sys.executable, "-m", "course.bench.slowclients", "--swarm-child", "--port", str(proxy.port),
            "--slow", str(settings.slow), "--ramp-timeout", str(settings.ramp_timeout), "--result", str(result_file),
            "--swarm-addresses", str(settings.swarm_addresses),
            "--hard-seconds", str(settings.ramp_timeout + settings.seconds + 3 * settings.request_timeout + 10),
        ], logdir, SWARM_READY)
        say(f"swarm: {settings.slow} slow clients connecting (up to {settings.ramp_timeout:g}s)")
        children.append(swarm.start())
        ramped = swarm.wait_ready(settings.ramp_timeout + 10)
        say(f"swarm: {ramped} connected; loaded: {settings.seconds:g}s")
        before = proc_status(proxy.pid)
        peak = Peak(proxy.pid)
        loaded = normal_client(endpoint, settings.seconds, settings.rate, keepalive=keepalive, peak=peak)
        check_alive(children)
        end = proc_status(proxy.pid)
        swarm_cpu = proc_status(swarm.pid)["cpu_seconds"]
        swarm.stop()  # SIGTERM: the swarm writes its counts as of now
        slow = json.loads(result_file.read_text()) if result_file.exists() else {"error": f"no result: {swarm.tail()}"}
        slow.setdefault("cpu_seconds", swarm_cpu)
        ratio = round(loaded["p99_ms"] / baseline["p99_ms"], 2) if baseline["p99_ms"] else None
        return {
            "engine": engine, "baseline": baseline, "loaded": loaded, "p99_ratio": ratio, "slow": slow,
            "proxy": {"idle": idle, "ramped": before, "end": end,
                      "peak_rss_kb": peak.rss_kb, "peak_threads": peak.threads,
                      "cpu_seconds_loaded": round(end["cpu_seconds"] - before["cpu_seconds"], 2)},
        }
    finally:
        for child in reversed(children):
            child.stop()


# =========================================================================== the report
def _failures(phase: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(phase["failures"].items())) or "-"


def _cuts(slow: dict) -> str:
    counts = slow.get("counts_after_ramp", {})
    return ", ".join(f"{k[5:]} {v}" for k, v in sorted(counts.items()) if k.startswith("cut: ")) or "-"


def _open_failures(slow: dict) -> str:
    counts = slow.get("counts_total", {})
    return ", ".join(f"{k[13:]} {v}" for k, v in sorted(counts.items()) if k.startswith("open failed: ")) or "-"


def _sources(count: int) -> str:
    addresses = swarm_sources(count)
    return addresses[0] if count == 1 else f"{count} addresses, {addresses[0]} to {addresses[-1]}"


def report_lines(run: dict) -> list[str]:
    s = run["settings"]
    lines = [
        f"slow clients: {s['slow']} (TLS handshake, then a request head at 1 byte/s; reconnect when cut), "
        f"from {_sources(s.get('swarm_addresses', 1))}",
        f"normal client: {s['rate']:g} GET {PATH}/s, {'keep-alive' if s['normal'] == 'keepalive' else 'a new TLS connection per request'}, "
        f"request timeout {s['request_timeout']:g}s",
        f"proxy limits: max_connections {s['max_connections']}, max_connections_per_client "
        f"{s.get('per_client') or 'off'}, header_read {s['header_timeout']:g}s, "
        f"handshake {s['handshake_timeout']:g}s, listen backlog 1024 (somaxconn {s['somaxconn']}), "
        f"RLIMIT_NOFILE {s['nofile']}",
        f"phases: baseline {s['baseline']:g}s, ramp up to {s['ramp_timeout']:g}s, loaded {s['seconds']:g}s",
        "",
    ]
    results = [run["engines"][e] for e in run["engines"]]
    mb = lambda kb: f"{kb / 1024:.1f}"  # noqa: E731
    rows = [
        ("", lambda r: r["engine"]),
        ("idle p50 / p99 (ms)", lambda r: f"{r['baseline']['p50_ms']} / {r['baseline']['p99_ms']}"),
        ("loaded p50 / p99 (ms)", lambda r: f"{r['loaded']['p50_ms']} / {r['loaded']['p99_ms']}"),
        ("loaded max (ms)", lambda r: f"{r['loaded']['max_ms']}"),
        ("p99 loaded / idle", lambda r: f"{r['p99_ratio']}"),
        ("normal requests ok / sent (idle)", lambda r: f"{r['baseline']['ok']} / {r['baseline']['sent']}"),
        ("normal requests ok / sent (loaded)", lambda r: f"{r['loaded']['ok']} / {r['loaded']['sent']}"),
        ("failed normal requests (loaded)", lambda r: f"{r['loaded']['failed']}"),
        ("  by kind", lambda r: _failures(r["loaded"])),
        ("slow clients connected at ramp end", lambda r: f"{r['slow'].get('ramp_connected', '?')} "
                                                         f"({r['slow'].get('ramp_seconds') or 0:.1f}s)"),
        ("slow clients connected at end", lambda r: f"{r['slow'].get('connected_at_end', '?')} / {s['slow']}"),
        ("reconnects (loaded phase)", lambda r: f"{r['slow'].get('reconnects', '?')}"),
        ("  cuts by kind", lambda r: _cuts(r["slow"])),
        ("  failed opens (whole run)", lambda r: _open_failures(r["slow"])),
        ("proxy RSS MB idle / end / peak", lambda r: f"{mb(r['proxy']['idle']['rss_kb'])} / "
                                                     f"{mb(r['proxy']['end']['rss_kb'])} / {mb(r['proxy']['peak_rss_kb'])}"),
        ("proxy threads idle / end / peak", lambda r: f"{r['proxy']['idle']['threads']} / "
                                                      f"{r['proxy']['end']['threads']} / {r['proxy']['peak_threads']}"),
        ("proxy CPU s (loaded phase)", lambda r: f"{r['proxy']['cpu_seconds_loaded']}"),
        ("swarm CPU s (whole swarm)", lambda r: f"{r['slow'].get('cpu_seconds', '?')}"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    cells = [[get(r) for r in results] for _, get in rows]
    column = max(12, *(len(c) + 2 for row in cells for c in row))
    for (name, _), row in zip(rows, cells):
        lines.append(name.ljust(width) + "".join(c.ljust(column) for c in row).rstrip())
    return lines


# =========================================================================== the command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course.bench.slowclients", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="Example: python -m course.bench.slowclients --engine both --slow 2000 --seconds 20 --out slow.json")
    parser.add_argument("--engine", choices=(*ENGINES, "both"), default="both", help="which engine(s) (default both)")
    parser.add_argument("--slow", type=int, default=2000, metavar="N", help="slow clients in the swarm (default 2000)")
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S", help="loaded phase (default 20)")
    parser.add_argument("--baseline", type=float, default=5.0, metavar="S", help="baseline phase, no swarm (default 5)")
    parser.add_argument("--rate", type=float, default=10.0, help="normal client's requests per second (default 10)")
    parser.add_argument("--normal", choices=("new", "keepalive"), default="new",
                        help="normal client: a new TLS connection per request (default) or one kept-alive connection")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="normal client's connect/handshake/read timeout, each (default 10)")
    parser.add_argument("--ramp-timeout", type=float, default=20.0, metavar="S",
                        help="longest wait for the swarm to connect before the loaded phase starts anyway (default 20)")
    parser.add_argument("--max-connections", type=int, metavar="N",
                        help=f"the proxy's Limits.max_connections (default: N slow + {HEADROOM}; proxy default 1024)")
    parser.add_argument("--per-client", type=int, default=0, metavar="N",
                        help="the proxy's Limits.max_connections_per_client (default 0: off, the proxy's default)")
    parser.add_argument("--swarm-addresses", type=int, default=1, metavar="K",
                        help=f"the swarm connects from K loopback addresses, 127.0.0.2 onwards, 1 to {MAX_SOURCES} "
                             "(default 1; the normal client is 127.0.0.1)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="the proxy's Timeouts.header_read (default 10, the proxy's)")
    parser.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                        help="the proxy's Timeouts.handshake (default 10, the proxy's)")
    parser.add_argument("--handshake-threads", type=int, default=0, metavar="N",
                        help="the event loop runs TLS handshake steps in N worker threads ([proxy] "
                             "handshake_threads; default 0: in the loop)")
    parser.add_argument("--out", metavar="FILE.json", help="also write every number as JSON")
    parser.add_argument("--workdir", metavar="DIR", help="certificates, configs and logs (default: a temporary dir)")
    # The swarm child (this module again, in its own process):
    parser.add_argument("--swarm-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--hard-seconds", type=float, default=120.0, help=argparse.SUPPRESS)
    return parser


def _stop_on_sigterm(*_) -> None:
    raise KeyboardInterrupt  # unwinds through run_engine's finally: the children are stopped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.swarm_child:
        return swarm_main(args)
    if args.slow < 1 or args.seconds <= 0 or args.baseline <= 0 or args.rate <= 0:
        raise SystemExit("--slow, --seconds, --baseline and --rate must be positive")
    if not 1 <= args.swarm_addresses <= MAX_SOURCES or args.per_client < 0:
        raise SystemExit(f"--swarm-addresses must be 1 to {MAX_SOURCES}, --per-client 0 or more")
    if args.max_connections is None:
        args.max_connections = args.slow + HEADROOM
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    nofile = raise_file_limit()  # before the children start: they inherit it
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    settings = {k: getattr(args, k) for k in ("slow", "seconds", "baseline", "rate", "normal", "request_timeout",
                                              "ramp_timeout", "max_connections", "header_timeout", "handshake_timeout",
                                              "handshake_threads", "per_client", "swarm_addresses")}
    run = {"settings": {**settings, "somaxconn": int(somaxconn), "nofile": nofile}, "engines": {}}
    engines = ENGINES if args.engine == "both" else (args.engine,)
    with tempfile.TemporaryDirectory(prefix="slowclients-") as scratch:
        workdir = Path(args.workdir or scratch)
        pki = ensure_demo_certs(workdir / "pki")
        try:
            for engine in engines:
                result = run_engine(engine, args, pki, workdir)
                result["slow"]["ramp_connected"] = _ramp_connected(workdir / "logs" / f"{engine}-swarm.log")
                run["engines"][engine] = result
        except KeyboardInterrupt:
            print("interrupted: children stopped", file=sys.stderr)
            return 130
        except ConfigError as error:
            print(f"slowclients: {error} (children stopped; logs were in {workdir / 'logs'})", file=sys.stderr)
            return 1
    print("\n".join(report_lines(run)))
    if args.out:
        Path(args.out).write_text(json.dumps(run, indent=2) + "\n")
    return 0


def _ramp_connected(log: Path) -> int | None:
    match = SWARM_READY.search(log.read_text(errors="replace")) if log.exists() else None
    return int(match.group(1)) if match else None


if __name__ == "__main__":
    sys.exit(main())
