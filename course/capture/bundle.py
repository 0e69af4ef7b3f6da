"""A capture bundle: the pcaps of both legs, the key logs and a metadata file, in one directory.

Theory of operation
-------------------
Everything the analysis needs travels together, so a capture made on one machine (as
root) can be decrypted, drawn and tabulated on another (without root)::

    metadata.json          what ran: setup, TLS version, hosts, ports, markers, tools,
                           added round-trip times (rtt_ms, legs[...].delay_ms), hrr
    client-leg.pcap        client <-> proxy (or origin, in the direct setups)
    backend-leg.pcap       proxy <-> origin (setups with a proxy)
    keys.log               every secret any party logged (NSS key log: Wireshark reads it)
    keys/<party>.log       each party's own key log: who could decrypt what
    client.json            what the lab client sent and received, per connection
    server-cert.pem        the certificate the client was shown

``CaptureBundle`` reads such a directory.  ``load_example()`` returns one of the
captures shipped in ``course/data/example-capture/`` (made with ``tlsproxy capture``;
their README says how to make them again), which is what a student without root
uses: live capture needs root or CAP_NET_RAW, analysis needs neither.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

METADATA = "metadata.json"
FORMAT = 1
EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "example-capture"
PARTIES = ("client", "proxy", "proxy-backend", "origin")


@dataclass(frozen=True)
class Leg:
    name: str                 # "client" or "backend"
    pcap: Path
    ends: tuple[str, str]     # (the end that connects, the end that listens), e.g. ("client", "proxy")
    server_port: int


class CaptureBundle:
    """A capture directory, read through its metadata."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / METADATA
        if not path.exists():
            raise FileNotFoundError(f"{self.directory} is not a capture bundle (no {METADATA})")
        self.metadata: dict = json.loads(path.read_text())

    # -- what ran
    @property
    def setup(self) -> str:
        return self.metadata["setup"]

    @property
    def tls(self) -> str | None:
        return self.metadata.get("tls")

    @property
    def resumed(self) -> bool:
        return bool(self.metadata.get("resumed"))

    @property
    def hosts(self) -> dict[str, str]:
        """Host name -> IP address it used ("client": "127.0.0.2", ...)."""
        return self.metadata["hosts"]

    @property
    def markers(self) -> dict[str, str]:
        return self.metadata["markers"]

    @property
    def title(self) -> str:
        version = f", TLS {self.tls}" if self.tls else ""
        extras = ", resumed" if self.resumed else ""
        extras += ", HelloRetryRequest" if self.metadata.get("hrr") else ""
        extras += ", HTTP/2 on the client leg" if self.metadata.get("http2") else ""
        extras += f", RTT {self.metadata['rtt_ms']:g} ms" if self.metadata.get("rtt_ms") else ""
        extras += f", backend RTT {self.metadata['backend_rtt_ms']:g} ms" if self.metadata.get("backend_rtt_ms") else ""
        return f"{self.setup}{version}{extras} ({self.metadata.get('network', '?')})"

    # -- the files
    @property
    def legs(self) -> dict[str, Leg]:
        return {name: Leg(name, self.directory / leg["pcap"], tuple(leg["ends"]), int(leg["server_port"]))
                for name, leg in self.metadata["legs"].items()}

    @property
    def keys_log(self) -> Path:
        return self.directory / "keys.log"

    def keylog(self, party: str) -> Path | None:
        """``party``'s own key log ("client", "proxy", "proxy-backend", "origin"), if it wrote one."""
        name = self.metadata.get("keylogs", {}).get(party)
        return self.directory / name if name else None

    @property
    def certificate(self) -> Path | None:
        name = self.metadata.get("certificate")
        return self.directory / name if name else None

    @property
    def client_report(self) -> dict:
        return json.loads((self.directory / self.metadata.get("client_report", "client.json")).read_text())

    def connections(self, leg: str):
        """The TCP connections of one leg (needs scapy to read the pcap)."""
        from course.capture.flows import read_connections

        info = self.legs[leg]
        return read_connections(info.pcap, [info.server_port])

    def copy_to(self, destination: str | Path) -> "CaptureBundle":
        """Copy the bundle's files (not pictures or summaries) into ``destination``."""
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        for name in [METADATA, "keys.log", self.metadata.get("client_report", "client.json"),
                     self.metadata.get("certificate"), *[leg["pcap"] for leg in self.metadata["legs"].values()],
                     *self.metadata.get("keylogs", {}).values(), *self.metadata.get("extra_files", [])]:
            if name and (self.directory / name).exists():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.directory / name, destination / name)
        return CaptureBundle(destination)

    def __repr__(self) -> str:
        return f"<CaptureBundle {self.title} in {self.directory}>"


def merge_key_logs(paths: list[Path], destination: Path) -> None:
    """One key log from several: every distinct line once, in the order first seen."""
    seen: dict[str, None] = {}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    seen.setdefault(line.strip())
    destination.write_text("".join(line + "\n" for line in seen))


def write_metadata(directory: Path, metadata: dict) -> CaptureBundle:
    (directory / METADATA).write_text(json.dumps({"format": FORMAT, **metadata}, indent=1) + "\n")
    return CaptureBundle(directory)


# --------------------------------------------------------------------------- the examples
def example_name(setup: str = "terminate", tls: str | None = "1.3", resumed: bool = False, *,
                 hrr: bool = False, http2: bool = False, rtt_ms: float = 0.0) -> str:
    """The directory name of an example capture: ``terminate-tls13``, ``direct-http``,
    ``terminate-tls13-hrr-rtt40``, ...: the setup, its TLS version, then the flags it was made
    with, in the order ``tlsproxy capture`` records them (--resumed, --hrr, --http2, --rtt MS)."""
    if setup == "direct-http":
        return setup
    return (f"{setup}-tls{(tls or '1.3').replace('.', '')}" + ("-resumed" if resumed else "")
            + ("-hrr" if hrr else "") + ("-http2" if http2 else "") + (f"-rtt{rtt_ms:g}" if rtt_ms else ""))


def traits(bundle: CaptureBundle) -> dict:
    """What a capture was made with, as ``example_name`` and ``load_example`` take it."""
    meta = bundle.metadata
    return {"setup": bundle.setup, "tls": bundle.tls, "resumed": bundle.resumed, "hrr": bool(meta.get("hrr")),
            "http2": bool(meta.get("http2")), "rtt_ms": meta.get("rtt_ms") or 0.0}


def list_examples() -> list[str]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p.name for p in EXAMPLES.iterdir() if (p / METADATA).exists())


def load_example(setup: str = "terminate", tls: str | None = "1.3", resumed: bool = False, *,
                 hrr: bool = False, http2: bool = False, rtt_ms: float = 0.0) -> CaptureBundle:
    """The bundled example capture closest to what was asked for.

    Among the examples of that setup (else of terminate): the one with that TLS version, then
    resumption, then HelloRetryRequest, then HTTP/2, then an added round-trip time (any, then
    that one), each weighing more than all that follow.  ``bundle.title`` says which one it is,
    ``example_differences`` what it lacks of what was asked for."""
    examples = [CaptureBundle(EXAMPLES / name) for name in list_examples()]
    examples = [bundle for bundle in examples if "setup" in bundle.metadata]     # not the forward-secrecy lesson
    candidates = ([b for b in examples if b.setup == setup] or [b for b in examples if b.setup == "terminate"])
    if not candidates:
        raise FileNotFoundError(f"no example captures in {EXAMPLES} (the package data is missing)")

    def likeness(bundle: CaptureBundle) -> tuple[bool, ...]:
        has = traits(bundle)
        return (has["tls"] == tls, has["resumed"] == resumed, has["hrr"] == hrr, has["http2"] == http2,
                bool(has["rtt_ms"]) == bool(rtt_ms), has["rtt_ms"] == rtt_ms)

    return max(candidates, key=likeness)      # the first of equals, in name order


def example_differences(bundle: CaptureBundle, setup: str = "terminate", tls: str | None = "1.3",
                        resumed: bool = False, *, hrr: bool = False, http2: bool = False, rtt_ms: float = 0.0,
                        backend_rtt_ms: float = 0.0) -> list[str]:
    """How ``bundle`` differs from what was asked for, each to follow "it has": ``["no HTTP/2 on
    the client leg", "an added RTT of 40 ms"]``; empty if it is what was asked for."""
    has = traits(bundle)
    found = [f"the setup {has['setup']} instead of {setup}"] if has["setup"] != setup else []
    if has["tls"] and tls and has["tls"] != tls:
        found.append(f"TLS {has['tls']} instead of {tls}")
    found += [("no " if asked else "") + words for asked, present, words in (
        (resumed, has["resumed"], "resumed connection" if resumed else "a resumed second connection"),
        (hrr, has["hrr"], "HelloRetryRequest" if hrr else "a HelloRetryRequest"),
        (http2, has["http2"], "HTTP/2 on the client leg")) if asked != present]
    if rtt_ms != has["rtt_ms"]:
        found.append("no added RTT" if not has["rtt_ms"] else f"an added RTT of {has['rtt_ms']:g} ms"
                     + (f" instead of {rtt_ms:g}" if rtt_ms else ""))
    backend = bundle.metadata.get("backend_rtt_ms") or 0.0
    if backend_rtt_ms != backend:
        found.append("no added backend RTT" if not backend else f"an added backend RTT of {backend:g} ms"
                     + (f" instead of {backend_rtt_ms:g}" if backend_rtt_ms else ""))
    return found
