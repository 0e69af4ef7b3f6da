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
                 ``course.capture.tls12``.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from course.capture.dissect import dissect_all, split_http_prefix
from course.capture.flows import read_connections
from course.capture.h2frames import is_http2, split_frames

METHODS = ("scapy", "keyschedule", "tshark")
TSHARK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Decryption:
    """One method's result for one pcap."""

    method: str
    client_data: tuple[bytes, ...] = ()      # per connection: what the client sent, decrypted
    server_data: tuple[bytes, ...] = ()
    error: str | None = None                 # the method could not run at all
    notes: tuple[str, ...] = ()              # why particular connections stayed encrypted

    @property
    def requests(self) -> tuple[bytes, ...]:
        """The client's plaintext of every connection that has any (the HTTP requests)."""
        return tuple(data for data in self.client_data if data)


# --------------------------------------------------------------------------- 1. scapy
@contextlib.contextmanager
def _scapy_tls(ports: Iterable[int], key_log: Path | None, server_rsa_key: Path | None):
    """scapy's TLS layer bound to ``ports``, with fresh session state, for one block.

    Records are dissected with ``strict_integrity``: by default scapy logs a failed AEAD
    tag and returns the unauthenticated "plaintext" (garbage, when the keys are wrong or
    missing), which would look like decrypted data.  Strict, such a record stays raw."""
    from scapy.config import conf
    from scapy.layers.inet import TCP
    from scapy.layers.tls.record import TLS
    from scapy.layers.tls.record_tls13 import TLS13
    from scapy.layers.tls.session import _tls_sessions
    from scapy.main import load_layer
    from scapy.packet import bind_layers, split_layers

    load_layer("tls")
    saved = (conf.tls_session_enable, conf.tls_nss_filename, conf.tls_sessions)
    initializers = {cls: cls.__init__ for cls in (TLS, TLS13)}
    for cls, initializer in initializers.items():
        def strict(self, *args, _initializer=initializer, **kwargs):
            kwargs.setdefault("strict_integrity", True)
            _initializer(self, *args, **kwargs)
        cls.__init__ = strict
    already = {value for fields, cls in TCP.payload_guess if cls is TLS for value in fields.values()}
    ports = sorted(set(ports) - already)      # 443 is bound by scapy itself: leave it bound
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
        for cls, initializer in initializers.items():
            cls.__init__ = initializer
        conf.tls_session_enable, conf.tls_nss_filename, conf.tls_sessions = saved
        conf.tls_nss_keys = None


def _scapy_application_data(layer) -> Iterable[bytes]:
    """The decrypted application data in a chain of TLS / TLS13 records."""
    from scapy.layers.tls.record import TLS, TLSApplicationData
    from scapy.layers.tls.record_tls13 import TLS13

    while isinstance(layer, (TLS, TLS13)):
        if isinstance(layer, TLS13):
            messages = layer.inner.msg if layer.inner is not None else []
        elif getattr(layer.tls_session, "tls_version", None) == 0x0304:
            # A TLS 1.3 record that scapy could not tie to keys is dissected as if it
            # were unprotected TLS 1.2: its "application data" is the ciphertext.
            messages = []
        else:
            messages = layer.msg
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
    from course.capture.flows import load_scapy_layers

    load_scapy_layers()
    connections = read_connections(pcap, server_ports)     # to know which ports speak TLS
    tls_ports = {c.server[1] for c in connections
                 if c.stream("client")[split_http_prefix(c.stream("client")):][:1] == b"\x16"}
    order = [c.client for c in connections]
    servers = {c.server for c in connections}
    collected: dict = {c.client: {"client": b"", "server": b""} for c in connections}
    # Read (and trim) the packets *before* binding TLS to the ports: packets dissected as
    # TLS one by one would advance scapy's session state before TCPSession sees them.
    trimmed = _without_retransmissions(_without_http_prefixes(pcap, connections))
    with _scapy_tls(tls_ports, Path(key_log) if key_log else None, server_rsa_key):
        packets = sniff(offline=trimmed, session=TCPSession, quiet=True)
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


def _without_retransmissions(packets) -> list:
    """The packets without a data segment sent again (same direction, sequence number and
    payload as an earlier one): the receiver keeps the first copy (RFC 9293 §3.10.7.4), but
    scapy's TCPSession would reassemble both and lose its place in the TLS stream (seen on
    a tail-loss probe, RFC 8985 §7, after the HTTP/2 client's three writes)."""
    from scapy.layers.inet import IP, TCP

    seen, kept = set(), []
    for packet in packets:
        if TCP in packet and IP in packet and len(packet[TCP].payload):
            key = (packet[IP].src, packet[TCP].sport, packet[TCP].seq, bytes(packet[TCP].payload))
            if key in seen:
                continue
            seen.add(key)
        kept.append(packet)
    return kept


def _without_http_prefixes(pcap: str | Path, connections):
    """The pcap's packets, with a tunnel's plaintext CONNECT exchange cut out.

    scapy's TLS layer is bound to a port and parses a stream from its first byte, so it
    cannot follow ``CONNECT ... 200`` and then TLS on one connection.  For such a
    connection the HTTP bytes are removed and the sequence and acknowledgement numbers
    shifted to match, so that the TLS starts at stream offset 0 for scapy.  Other
    connections are left exactly as captured.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.utils import rdpcap

    packets = rdpcap(str(pcap))
    cuts: dict = {}                           # (sender endpoint, receiver endpoint) -> (first byte seq, cut)
    for connection in connections:
        for sender, receiver, side in ((connection.client, connection.server, "client"),
                                       (connection.server, connection.client, "server")):
            cut = split_http_prefix(connection.stream(side))
            syn = next((s for s in connection.segments if s.sender == side and s.has("S")), None)
            if cut and syn is not None:
                cuts[sender, receiver] = (syn.seq + 1, cut)
    if not cuts:
        return packets
    result = []
    for packet in packets:
        if TCP not in packet or IP not in packet:
            result.append(packet)
            continue
        here, there = (packet[IP].src, packet[TCP].sport), (packet[IP].dst, packet[TCP].dport)
        if (here, there) not in cuts and (there, here) not in cuts:
            result.append(packet)
            continue
        captured_at, packet = packet.time, packet.copy()
        tcp = packet[TCP]
        if (here, there) in cuts and not tcp.flags.S:
            first, cut = cuts[here, there]
            offset, data = (tcp.seq - first) % 2**32, bytes(tcp.payload)
            kept = data[max(0, cut - offset):]
            tcp.seq = (first + max(offset, cut) - cut) % 2**32
            tcp.remove_payload()
            if kept:
                tcp.add_payload(Raw(kept))
        if (there, here) in cuts and tcp.flags.A:
            first, cut = cuts[there, here]
            tcp.ack = (first + max(0, (tcp.ack - first) % 2**32 - cut)) % 2**32
        del packet[IP].len, packet[IP].chksum, tcp.chksum
        rebuilt = packet.__class__(bytes(packet))     # dissected afresh, like a packet read from a file
        rebuilt.time = captured_at
        result.append(rebuilt)
    return result


# --------------------------------------------------------------------------- 2. ours
def decrypt_with_keyschedule(pcap: str | Path, key_log: str | Path | None = None, server_ports: Iterable[int] = (),
                             *, server_rsa_key: str | Path | None = None) -> Decryption:
    dissections = dissect_all(read_connections(pcap, server_ports), key_log, server_rsa_key_file=server_rsa_key)
    return Decryption("keyschedule", tuple(d.plaintext("client") or b"" for d in dissections),
                      tuple(d.plaintext("server") or b"" for d in dissections),
                      notes=tuple(f"connection {n}: {d.error}" for n, d in enumerate(dissections, 1) if d.error))


# --------------------------------------------------------------------------- 3. tshark
def tshark_path() -> str | None:
    return shutil.which("tshark")


def _tshark(arguments: list[str]) -> str:
    done = subprocess.run([tshark_path(), *arguments], capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"tshark failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def _parse_follow(output: str) -> dict[tuple[str, int], tuple[str, list[tuple[int, bytes]]]]:
    """``-z follow,PROTO,raw,N`` blocks -> {(PROTO, N): (node 0 "host:port", [(node, bytes), ...])}.

    In raw mode each line is one chunk in hex; node 1's lines are indented by a tab."""
    streams: dict[tuple[str, int], tuple[str, list[tuple[int, bytes]]]] = {}
    protocol, number, node0, chunks = "", None, "", []
    for line in output.splitlines():
        if line.startswith("Follow: "):
            protocol = line[len("Follow: "):].split(",")[0]
        elif line.startswith("Filter: tcp.stream eq "):
            number, node0, chunks = int(line.rsplit(" ", 1)[1]), "", []
        elif line.startswith("Node 0: "):
            node0 = line[len("Node 0: "):]
        elif line.startswith("====="):
            if number is not None:
                streams[protocol, number] = (node0, chunks)
            number = None
        elif number is not None and line.strip() and not line.startswith("Node 1:"):
            chunks.append((1 if line.startswith("\t") else 0, bytes.fromhex(line.strip())))
    return streams


def decrypt_with_tshark(pcap: str | Path, key_log: str | Path | None = None, server_ports: Iterable[int] = (), *,
                        server_rsa_key: str | Path | None = None) -> Decryption:
    if not tshark_path():
        return Decryption("tshark", error="tshark is not installed (apt-get install tshark)")
    server_ports = list(server_ports)
    options = []
    for port in server_ports:
        # "Decode as": tshark finds TLS on other ports only by a heuristic, which now and
        # then misses a stream (seen on a resumed connection); naming the port is exact.
        options += ["-d", f"tcp.port=={port},tls"]
    if key_log:
        options += ["-o", f"tls.keylog_file:{key_log}"]
    if server_rsa_key:
        options += ["-o", f'uat:rsa_keys:"{server_rsa_key}",""']
    # One run (tshark takes ~0.3 s to start): per packet, its stream, who opened it and
    # whether tshark sees TLS in it; then each stream followed both as TLS and as TCP.
    count = len(read_connections(pcap, server_ports))
    follows = [arg for n in range(count) for proto in ("tls", "tcp") for arg in ("-z", f"follow,{proto},raw,{n}")]
    output = _tshark(["-r", str(pcap), *options, "-T", "fields", "-E", "separator=,", "-e", "tcp.stream",
                      "-e", "tcp.flags.syn", "-e", "tcp.flags.ack", "-e", "ip.src", "-e", "tcp.srcport",
                      "-e", "tls.record.content_type", *follows])
    fields, _, follow_text = output.partition("\n=====")
    clients: dict[int, str] = {}
    tls_streams: set[int] = set()
    for line in fields.splitlines():
        stream, syn, ack, source, port, tls = (line.split(",") + [""] * 6)[:6]
        if not stream.isdigit():
            continue
        if syn in ("1", "True") and ack in ("0", "False"):
            clients.setdefault(int(stream), f"{source}:{port}")
        if tls:
            tls_streams.add(int(stream))
    followed = _parse_follow("=====" + follow_text)
    client_data, server_data = [], []
    for stream in sorted(clients):
        node0, chunks = followed.get(("tls" if stream in tls_streams else "tcp", stream), ("", []))
        client_node = 0 if node0 == clients[stream] else 1
        client_data.append(b"".join(data for node, data in chunks if node == client_node))
        server_data.append(b"".join(data for node, data in chunks if node != client_node))
    return Decryption("tshark", tuple(client_data), tuple(server_data))


DECRYPTORS = {"scapy": decrypt_with_scapy, "keyschedule": decrypt_with_keyschedule, "tshark": decrypt_with_tshark}


# --------------------------------------------------------------------------- the cross-check
KNOWN_GAPS = {
    # scapy reads a TLS 1.2 key log only when it parses a ClientKeyExchange
    # (scapy/layers/tls/handshake.py), and a resumed TLS 1.2 handshake has none.
    "scapy": "scapy cannot use a key log for a resumed TLS 1.2 session",  # the one case known here
}


@dataclass
class CrossCheck:
    """The three methods side by side, connection by connection."""

    results: dict[str, Decryption] = field(default_factory=dict)

    @property
    def ran(self) -> dict[str, Decryption]:
        return {name: result for name, result in self.results.items() if result.error is None}

    @property
    def connections(self) -> list[dict[str, bytes]]:
        """Per TCP connection: method -> the client's plaintext it found (b"" for none)."""
        count = max((len(r.client_data) for r in self.ran.values()), default=0)
        return [{name: r.client_data[i] if i < len(r.client_data) else b"" for name, r in self.ran.items()}
                for i in range(count)]

    @property
    def gaps(self) -> list[tuple[int, str]]:
        """(connection number, method) where a method found nothing but another did."""
        return [(number, name) for number, row in enumerate(self.connections, 1) if any(row.values())
                for name, data in row.items() if not data]

    @property
    def agree(self) -> bool:
        """Some plaintext was found, and wherever two methods found some it is identical."""
        rows = [row for row in self.connections if any(row.values())]
        return bool(rows) and all(len({data for data in row.values() if data}) == 1 for row in rows)

    @property
    def requests(self) -> tuple[bytes, ...]:
        """The client's plaintext of each connection where the methods found (and agree on) some."""
        if not self.agree:
            return ()
        return tuple(next(data for data in row.values() if data) for row in self.connections if any(row.values()))

    def format(self, *, width: int = 400) -> str:
        lines = []
        for name, result in self.results.items():
            if result.error:
                lines.append(f"  {name:<12} could not run: {result.error}")
            else:
                lines.append(f"  {name:<12} plaintext from the client in {len(result.requests)} of "
                             f"{len(result.client_data)} connection(s), {sum(map(len, result.requests))} bytes")
                lines += [f"  {'':<12} {note}" for note in result.notes]
        verdict = ("they agree, byte for byte" if self.agree else
                   "nothing was decrypted" if not any(any(r.values()) for r in self.connections) else
                   "they DISAGREE")
        lines.append(f"  -> {verdict} ({', '.join(self.ran) or 'no method ran'})")
        for number, name in self.gaps:
            lines.append(f"  note: {name} found nothing in connection {number}"
                         + (f" ({KNOWN_GAPS[name]})" if name in KNOWN_GAPS else ""))
        shown = self.requests or next((r.requests for r in self.ran.values() if r.requests), ())
        for number, request in enumerate(shown, 1):
            lines.append(f"  request {number}:")
            if is_http2(request):          # binary frames: listed, not printed (h2frames.py)
                lines += ["    | " + frame.describe() for frame in split_frames(request)]
                continue
            text = request[:width].decode("latin-1").replace("\r\n", "\n")
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

