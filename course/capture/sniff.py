"""Capture packets into a pcap file: on loopback, or on an interface inside a lab namespace.

Theory of operation
-------------------
``Capture`` is a context manager around scapy's ``AsyncSniffer``::

    with Capture.loopback("client-leg.pcap", ports=[8443]) as leg:
        ...make traffic...
    leg.packets              # also written to client-leg.pcap on leaving the block

Four things make captures trustworthy here (measured, see /work/shared/FACTS.md):

* **libpcap, not scapy's native socket.**  On ``lo`` a native packet socket sees every
  packet twice (once leaving, once arriving), and the duplicates break TLS
  reassembly.  ``conf.use_pcap = True`` makes scapy read through libpcap, which
  reports each packet once.
* **A BPF filter** (``tcp port 8443``) runs in the kernel: the capture holds the
  lesson's packets and nothing else, however busy the machine is.
* **No sleeping at start.**  The sniffer calls ``started_callback`` once its socket is
  open; ``__enter__`` waits for that event, so no packet sent after it returns is
  missed.
* **A quiet period at stop.**  Packets reach the sniffer shortly after they cross the
  wire; ``stop`` waits until none has arrived for ``QUIET`` seconds (bounded), so the
  final FIN and ACK are in the file.

A network namespace has its own interfaces, and a socket opened in one namespace
sees only that namespace's packets.  ``Capture.in_namespace(net, "proxy",
toward="client", ...)`` therefore runs *this module* as a program inside the
namespace (``ip netns exec NS python -m course.capture.sniff ...``, through the
topology's ``popen``); the program prints ``started`` when its sniffer is open,
writes the pcap when it gets SIGTERM, and exits.

Capturing needs root or the CAP_NET_RAW capability, scapy and libpcap.
``capture_available()`` returns ``None`` when all are there, and otherwise one line
saying what is missing, for the caller to print before falling back to the bundled
example capture (``course.capture.bundle.load_example``).  Setting the environment
variable ``TLSLAB_NO_CAPTURE=1`` pretends capture is not permitted, to try that path.
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

from course.capture.flows import load_scapy_layers

NO_CAPTURE_VARIABLE = "TLSLAB_NO_CAPTURE"
CAP_NET_RAW = 13                 # linux/capability.h
START_TIMEOUT = 20.0             # seconds for a sniffer to open its socket (a namespace program
                                 # first imports scapy: 1-2 s, more on a loaded machine)
QUIET = 0.15                     # stop once no packet arrived for this long ...
STOP_TIMEOUT = 3.0               # ... or after this long at most
STARTED = "started"              # what the namespace program prints when it is ready


# --------------------------------------------------------------------------- permission
def capture_available() -> str | None:
    """``None`` if this process can capture packets, else one line saying why not."""
    if os.environ.get(NO_CAPTURE_VARIABLE, "").strip() not in ("", "0"):
        return f"live capture is switched off ({NO_CAPTURE_VARIABLE} is set)"
    try:
        import scapy  # noqa: F401
    except ImportError:
        return "live capture needs scapy (pip install 'tls-termination-lab[lab]')"
    if not ctypes.util.find_library("pcap"):
        return "live capture needs libpcap (apt-get install libpcap0.8)"
    if os.geteuid() != 0 and not _has_capability(CAP_NET_RAW):
        return f"live capture needs root or CAP_NET_RAW (running as uid {os.geteuid()} without it)"
    if not _use_pcap():
        return "scapy could not load libpcap (apt-get install libpcap0.8)"
    return None


def _has_capability(number: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    except OSError:
        pass
    return False


def _use_pcap() -> bool:
    """Make scapy read through libpcap (see the module docstring); False if it cannot."""
    from scapy.config import conf

    load_scapy_layers()
    if not conf.use_pcap:
        conf.use_pcap = True       # scapy sets it back to False (with a warning) without libpcap
    return bool(conf.use_pcap)


def port_filter(ports: Iterable[int]) -> str:
    """A BPF filter for TCP on any of ``ports``: ``tcp and (port 8443 or port 9001)``."""
    ports = sorted(set(ports))
    if not ports:
        return "tcp"
    return "tcp and (" + " or ".join(f"port {p}" for p in ports) + ")"


# --------------------------------------------------------------------------- the capture
class Capture:
    """Capture TCP packets on one interface into ``path`` while the ``with`` block runs."""

    def __init__(self, path: str | Path, *, interface: str = "lo", bpf: str = "tcp",
                 launcher=None) -> None:
        self.path = Path(path)
        self.interface = interface
        self.bpf = bpf
        self._launcher = launcher          # runs argv inside a namespace (see in_namespace)
        self._sniffer = None
        self._process: subprocess.Popen | None = None
        self._arrivals: list = []
        self._last_arrival = 0.0
        self.packets: list = []

    @classmethod
    def loopback(cls, path: str | Path, *, ports: Iterable[int]) -> "Capture":
        return cls(path, interface="lo", bpf=port_filter(ports))

    @classmethod
    def in_namespace(cls, net, host: str, *, toward: str, path: str | Path, ports: Iterable[int]) -> "Capture":
        """Capture on ``host``'s interface toward ``toward`` of a ``lab.topology.Topology``."""
        return cls(path, interface=net.interface(host, toward), bpf=port_filter(ports),
                   launcher=lambda argv, **kw: net.popen(host, argv, **kw))

    # -- lifecycle
    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "Capture":
        reason = capture_available()
        if reason:
            raise PermissionError(reason)
        if self._launcher is not None:
            self._start_program()
        else:
            self._start_sniffer()
        return self

    def stop(self) -> list:
        """Stop after a quiet period, write the pcap, return the packets."""
        if self._process is not None:
            self._stop_program()
        elif self._sniffer is not None:
            self._stop_sniffer()
        return self.packets

    # -- in this process
    def _start_sniffer(self) -> None:
        from scapy.sendrecv import AsyncSniffer

        _use_pcap()
        started = threading.Event()
        self._sniffer = AsyncSniffer(iface=self.interface, filter=self.bpf, store=False,
                                     prn=self._arrived, started_callback=started.set)
        self._sniffer.start()
        if not started.wait(START_TIMEOUT):
            # The sniffer thread died (a bad filter, no such interface): AsyncSniffer.start()
            # itself does not raise, so say what went wrong here.
            self._sniffer = None
            raise RuntimeError(f"the sniffer on {self.interface} ({self.bpf!r}) did not start")

    def _arrived(self, packet) -> None:
        self._arrivals.append(packet)
        self._last_arrival = time.monotonic()

    def _stop_sniffer(self) -> None:
        from scapy.utils import wrpcap

        deadline = time.monotonic() + STOP_TIMEOUT
        self._last_arrival = max(self._last_arrival, time.monotonic())
        while time.monotonic() < min(deadline, self._last_arrival + QUIET):
            time.sleep(0.02)
        sniffer, self._sniffer = self._sniffer, None
        if sniffer.running:
            sniffer.stop()
        self.packets = list(self._arrivals)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wrpcap(str(self.path), self.packets)

    # -- as a program inside a namespace
    def _start_program(self) -> None:
        argv = [sys.executable, "-m", "course.capture.sniff", "--interface", self.interface,
                "--filter", self.bpf, "--out", str(self.path.resolve())]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = self._launcher(argv, stdout=subprocess.PIPE, text=True, cwd=_package_root())
        line = _read_line(self._process, START_TIMEOUT)
        if line.strip() != STARTED:
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"the sniffer on {self.interface} did not start: {line.strip() or 'no output'}")

    def _stop_program(self) -> None:
        from scapy.utils import rdpcap

        process, self._process = self._process, None
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT + QUIET + 5)
        finally:
            if process.stdout:
                process.stdout.close()
        if process.returncode != 0:
            raise RuntimeError(f"the sniffer on {self.interface} exited with status {process.returncode}")
        self.packets = list(rdpcap(str(self.path)))


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line of ``process``'s stdout, or "" if none came within ``timeout``."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


# --------------------------------------------------------------------------- the program
def main(argv: list[str] | None = None) -> int:
    """``python -m course.capture.sniff --interface IF --filter BPF --out FILE``: print
    ``started`` once capturing, write FILE on SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m course.capture.sniff", description=main.__doc__)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--filter", default="tcp")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    capture = Capture(args.out, interface=args.interface, bpf=args.filter)
    try:
        capture.start()
    except (PermissionError, RuntimeError) as error:
        print(f"error: {error}", flush=True)
        return 1
    print(STARTED, flush=True)
    stop.wait()
    capture.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
