"""Decrypt a capture three independent ways, and check that they agree.

Theory of operation
-------------------
A key log turns recorded ciphertext back into the request.  Three programs that
share no code do it here, each given only the pcap and the key log (or, for a
static-RSA session, the server's private key):

``scapy``        scapy's TLS layer: ``load_layer("tls")``, ``bind_layers(TCP, TLS, ...)``
                 for the lab's ports (only 443 is bound by default),
                 ``conf.tls_session_enable``, ``conf.tls_nss_filename`` and
                 ``sniff(offline=..., session=TCPSession)``; TLS 1.3 plaintext is under
                 ``TLS13.inner.msg`` (scapy >= 2.7).
``keyschedule``  ours: ``flows`` reassembles the TCP streams, ``dissect`` opens TLS 1.3
                 records with ``proxy.tls.keyschedule`` and TLS 1.2 records with
                 ``proxy.capture.tls12``.
``tshark``       Wireshark's dissectors (``-o tls.keylog_file:FILE``, RSA keys through
                 ``-o uat:rsa_keys:...``), read back with ``-z follow,tls,raw,N``.

Each returns, per TCP connection in order of its start, what the client sent and what
the server sent, decrypted (plaintext HTTP legs are read as they are).  ``cross_check``
runs all three and says whether the client's bytes are identical, byte for byte: an
independent confirmation that our key schedule is right, and that the capture holds
the whole request.  A method that cannot run (tshark not installed) says so and is
left out of the comparison.

scapy's TLS settings are global (``conf``); ``decrypt_with_scapy`` sets them for one
call and restores them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from proxy.capture.dissect import dissect_all
from proxy.capture.flows import read_connections

METHODS = ("scapy", "keyschedule", "tshark")
TSHARK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Decryption:
    """One method's result for one pcap."""

    method: str
    client_data: tuple[bytes, ...] = ()      # per connection: what the client sent, decrypted
    server_data: tuple[bytes, ...] = ()
    error: str | None = None                 # the method could not run at all

    @property
    def requests(self) -> tuple[bytes, ...]:
        """The client's plaintext of every connection that has any (the HTTP requests)."""
        return tuple(data for data in self.client_data if data)


# --------------------------------------------------------------------------- 1. scapy
@contextlib.contextmanager
def _scapy_tls(ports: Iterable[int], key_log: Path | None, server_rsa_key: Path | None):
    """scapy's TLS layer bound to ``ports``, with fresh session state, for one block."""
    from scapy.config import conf
    from scapy.layers.inet import TCP
    from scapy.layers.tls.record import TLS
    from scapy.layers.tls.session import _tls_sessions
    from scapy.main import load_layer
    from scapy.packet import bind_layers, split_layers

    load_layer("tls")
    saved = (conf.tls_session_enable, conf.tls_nss_filename, conf.tls_sessions)
    ports = sorted(set(ports))
    for port in ports:
        bind_layers(TCP, TLS, sport=port)
        bind_layers(TCP, TLS, dport=port)
    try:
        conf.tls_session_enable = True
        conf.tls_sessions = _tls_sessions()        # no state left from an earlier file
        conf.tls_nss_filename = str(key_log) if key_log else None
        conf.tls_nss_keys = None                   # re-read the file even if its name is unchanged
        if server_rsa_key:
            from scapy.layers.tls.cert import PrivKeyRSA

            conf.tls_sessions.server_rsa_key = PrivKeyRSA(str(server_rsa_key))
        yield
    finally:
        for port in ports:
            split_layers(TCP, TLS, sport=port)
            split_layers(TCP, TLS, dport=port)
        conf.tls_session_enable, conf.tls_nss_filename, conf.tls_sessions = saved
        conf.tls_nss_keys = None


def _scapy_application_data(layer) -> Iterable[bytes]:
    """The decrypted application data in a chain of TLS / TLS13 records."""
    from scapy.layers.tls.record import TLS, TLSApplicationData
    from scapy.layers.tls.record_tls13 import TLS13

    while isinstance(layer, (TLS, TLS13)):
        messages = layer.inner.msg if isinstance(layer, TLS13) and layer.inner is not None else layer.msg
        for message in messages or ():
            if isinstance(message, TLSApplicationData):
                yield bytes(message.data)
        layer = layer.payload


def decrypt_with_scapy(pcap: str | Path, key_log: str | Path | None = None, server_ports: Iterable[int] = (), *,
                       server_rsa_key: str | Path | None = None) -> Decryption:
    try:
        from scapy.layers.inet import IP, TCP
        from scapy.sendrecv import sniff
        from scapy.sessions import TCPSession
    except ImportError:
        return Decryption("scapy", error="scapy is not installed")
    from proxy.capture.flows import load_scapy_layers

    load_scapy_layers()
    connections = read_connections(pcap, server_ports)     # only to know which ports speak TLS
    tls_ports = {c.server[1] for c in connections if c.stream("client")[:1] == b"\x16"
                 or b"\r\n\r\n\x16" in c.stream("client")[:4096]}
    order = [c.client for c in connections]
    servers = {c.server for c in connections}
    collected: dict = {c.client: {"client": b"", "server": b""} for c in connections}
    with _scapy_tls(tls_ports, Path(key_log) if key_log else None, server_rsa_key):
        packets = sniff(offline=str(pcap), session=TCPSession, quiet=True)
    for packet in packets:
        if TCP not in packet or IP not in packet:
            continue
        source = (packet[IP].src, packet[TCP].sport)
        destination = (packet[IP].dst, packet[TCP].dport)
        sender, client = ("server", destination) if source in servers else ("client", source)
        if client not in collected:
            continue
        payload = packet[TCP].payload
        if packet[TCP].sport in tls_ports or packet[TCP].dport in tls_ports:
            data = b"".join(_scapy_application_data(payload))
        else:
            data = bytes(payload)
        collected[client][sender] += data
    return Decryption("scapy", tuple(collected[c]["client"] for c in order),
                      tuple(collected[c]["server"] for c in order))


# --------------------------------------------------------------------------- 2. ours
def decrypt_with_keyschedule(pcap: str | Path, key_log: str | Path | None = None, server_ports: Iterable[int] = (),
                             *, server_rsa_key: str | Path | None = None) -> Decryption:
    dissections = dissect_all(read_connections(pcap, server_ports), key_log, server_rsa_key_file=server_rsa_key)
    return Decryption("keyschedule", tuple(d.plaintext("client") or b"" for d in dissections),
                      tuple(d.plaintext("server") or b"" for d in dissections))


# --------------------------------------------------------------------------- 3. tshark
def tshark_path() -> str | None:
    return shutil.which("tshark")


def _tshark(arguments: list[str]) -> str:
    done = subprocess.run([tshark_path(), *arguments], capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"tshark failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def _parse_follow(output: str) -> dict[int, tuple[str, list[tuple[int, bytes]]]]:
    """``-z follow,PROTO,raw,N`` blocks -> {N: (node 0 "host:port", [(node, bytes), ...])}."""
    streams: dict[int, tuple[str, list[tuple[int, bytes]]]] = {}
    number, node0, chunks = None, "", []
    for line in output.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            number, node0, chunks = int(line.rsplit(" ", 1)[1]), "", []
        elif line.startswith("Node 0: "):
            node0 = line[len("Node 0: "):]
        elif line.startswith("====="):
            if number is not None:
                streams[number] = (node0, chunks)
            number = None
        elif number is not None and line.strip() and not line.startswith(("Follow:", "Node 1:")):
            chunks.append((1 if line.startswith("\t") else 0, bytes.fromhex(line.strip())))
    return streams


def decrypt_with_tshark(pcap: str | Path, key_log: str | Path | None = None, server_ports: Iterable[int] = (), *,
                        server_rsa_key: str | Path | None = None) -> Decryption:
    if not tshark_path():
        return Decryption("tshark", error="tshark is not installed (apt-get install tshark)")
    options = []
    if key_log:
        options += ["-o", f"tls.keylog_file:{key_log}"]
    if server_rsa_key:
        options += ["-o", f'uat:rsa_keys:"{server_rsa_key}",""']
    # Which streams are there, who opened them, and does tshark see TLS in them?
    fields = _tshark(["-r", str(pcap), *options, "-T", "fields", "-E", "separator=,", "-e", "tcp.stream",
                      "-e", "tcp.flags.syn", "-e", "tcp.flags.ack", "-e", "ip.src", "-e", "tcp.srcport",
                      "-e", "tls.record.content_type"])
    clients: dict[int, str] = {}
    tls_streams: set[int] = set()
    for line in fields.splitlines():
        stream, syn, ack, source, port, tls = (line.split(",") + [""] * 6)[:6]
        if not stream:
            continue
        if syn in ("1", "True") and ack in ("0", "False"):
            clients.setdefault(int(stream), f"{source}:{port}")
        if tls:
            tls_streams.add(int(stream))
    streams = sorted(clients)
    follows = []
    for stream in streams:
        follows += ["-z", f"follow,{'tls' if stream in tls_streams else 'tcp'},raw,{stream}"]
    followed = _parse_follow(_tshark(["-r", str(pcap), *options, "-q", *follows])) if streams else {}
    client_data, server_data = [], []
    for stream in streams:
        node0, chunks = followed.get(stream, ("", []))
        client_node = 0 if node0 == clients[stream] else 1
        client_data.append(b"".join(data for node, data in chunks if node == client_node))
        server_data.append(b"".join(data for node, data in chunks if node != client_node))
    return Decryption("tshark", tuple(client_data), tuple(server_data))


DECRYPTORS = {"scapy": decrypt_with_scapy, "keyschedule": decrypt_with_keyschedule, "tshark": decrypt_with_tshark}


# --------------------------------------------------------------------------- the cross-check
@dataclass
class CrossCheck:
    results: dict[str, Decryption] = field(default_factory=dict)

    @property
    def ran(self) -> dict[str, Decryption]:
        return {name: result for name, result in self.results.items() if result.error is None}

    @property
    def agree(self) -> bool:
        """Every method that ran found the same client bytes, and found some."""
        seen = {result.requests for result in self.ran.values()}
        return len(seen) == 1 and bool(next(iter(seen)))

    @property
    def requests(self) -> tuple[bytes, ...]:
        """The agreed plaintext of the client's side of each connection (empty if no agreement)."""
        return next(iter(self.ran.values())).requests if self.agree else ()

    def format(self, *, width: int = 400) -> str:
        lines = []
        for name, result in self.results.items():
            if result.error:
                lines.append(f"  {name:<12} could not run: {result.error}")
            else:
                lines.append(f"  {name:<12} {len(result.requests)} connection(s) with client data, "
                             f"{sum(map(len, result.requests))} bytes")
        verdict = ("the methods agree, byte for byte" if self.agree else
                   "the methods DISAGREE" if len({r.requests for r in self.ran.values()}) > 1 else
                   "nothing was decrypted")
        lines.append(f"  -> {verdict} ({', '.join(self.ran) or 'none ran'})")
        for number, request in enumerate(self.requests or next(iter(self.ran.values()), Decryption("")).requests, 1):
            text = request[:width].decode("latin-1").replace("\r\n", "\n")
            lines.append(f"  request {number}:")
            lines += ["    | " + line for line in text.splitlines()]
        return "\n".join(lines)


def cross_check(pcap: str | Path, key_log: str | Path | None, server_ports: Iterable[int] = (), *,
                server_rsa_key: str | Path | None = None, methods: Iterable[str] = METHODS) -> CrossCheck:
    server_ports = list(server_ports)
    check = CrossCheck()
    for method in methods:
        try:
            check.results[method] = DECRYPTORS[method](pcap, key_log, server_ports, server_rsa_key=server_rsa_key)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            check.results[method] = Decryption(method, error=str(error))
    return check


def write_temporary_key(pem: bytes) -> Path:
    """A private key on disk for tools that want a file name (scapy, tshark); caller deletes it."""
    handle = tempfile.NamedTemporaryFile("wb", suffix=".key", delete=False)
    with handle:
        handle.write(pem)
    return Path(handle.name)
