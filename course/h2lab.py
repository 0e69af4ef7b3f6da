"""HTTP/2 at the terminator, for notebook 9: a small h2 client over real TLS, and the servers it talks to.

Theory of operation
-------------------
The proxy serves HTTP/2 on the client leg whenever ALPN chooses ``h2``, which a terminate
listener offers by default, before ``http/1.1`` (``ListenerConfig.alpn`` in
``proxy/config.py``; ``tlsproxy serve --alpn http/1.1`` turns HTTP/2 off), on both engines
(``proxy/modes/h2.py``, ``proxy/eventloop/h2session.py``, around the one sans-IO
``proxy.h2.connection.H2Server``).  To *see* HTTP/2, a
notebook needs a client that shows what curl hides: the stream ids, the frames the
server sent (its SETTINGS, RST_STREAM, GOAWAY), the order in which streams finished,
and the freedom to send header blocks no well-behaved client would (the downgrade
attacks).  ``H2Client`` is that client, built on the same `h2` library the proxy uses,
over a real TLS socket whose context comes from ``proxy.tls.contexts``::

    with H2Client(rp.address, "www.example.test", ca=lab.pki.ca) as client:
        client.alpn                                  # what the server chose (RFC 7301)
        sids = [client.request(f"/delay/0.1") for _ in range(5)]   # five streams at once
        client.wait(*sids)
        client.streams[sids[0]].status, client.finished   # per-stream results, completion order
        client.server_settings()                     # the server's first SETTINGS frame, decoded
        client.frames                                # every frame received (course.capture.h2frames.Frame)

Outbound validation is off (``validate_outbound_headers=False``,
``normalize_outbound_headers=False``): the client sends the header block exactly as
given, uppercase names, CR LF and all, so the *server* has to refuse it.  ``data``
sends DATA frames of chosen lengths whatever content-length says (H2.CL).

**One frame parser.**  The frames the client lists are split by
``course.capture.h2frames.split_frames``, the parser the capture runs on decrypted
bytes: the client keeps every byte the server sent (one direction from its start, the
input ``split_frames`` expects) and splits them when ``frames`` is read, with a fresh
HPACK decoder, so header blocks are decoded in order even when a read ends inside a
frame.  Keeping the bytes is fine for the notebook's small connections; a client that
downloads megabytes would keep them all.

``h2_proxy(lab, name, pools=..., alpn=..., engine=...)`` starts a ``Playground`` proxy
whose listener offers the given ALPN list (the proxy's default unless told), on the given
engine (``Playground.proxy`` has neither option); it is stopped with the playground.
``nginx_h2(...)`` runs nginx with ``listen ... ssl http2`` in front of an origin
(``course.nginx.terminate_conf``), for the same requests.  ``curl_alpn`` runs
``curl --http2 -v`` and keeps the lines in which curl reports ALPN.

``naive_h1_head`` is the mistake ``proxy/h2/downgrade.py`` exists to prevent: an
HTTP/2 header block pasted into HTTP/1.1 text without a single check.  It is here so
a notebook can print what a careless translator would have sent to the backend; it is
never used to forward anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import importlib.util
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes

from course.bench.setups import REPO, free_port
from course.capture.h2frames import Frame, settings, split_frames
from course.nginx import NginxProcess, terminate_conf
from course.playground import LogLines, Playground, Proxy
from proxy import config as cfg
from proxy.server import ProxyServer
from proxy.tls.contexts import client_context

Address = tuple[str, int]
Fields = Sequence[tuple[bytes, bytes]]


@dataclass
class StreamResult:
    """One stream as the client saw it."""

    id: int
    headers: list[tuple[bytes, bytes]] | None = None  # the final response's header block
    data: bytes = b""
    ended: bool = False  # END_STREAM received
    reset: ErrorCodes | int | None = None  # the server's RST_STREAM error code
    finished_at: float | None = None  # time.perf_counter() when it ended or was reset

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int | None:
        value = dict(self.headers or ()).get(b":status")
        return int(value) if value else None

    def json(self) -> dict:
        return json.loads(self.data)

    def outcome(self) -> str:
        """What the server answered, in one phrase: ``RST_STREAM PROTOCOL_ERROR``, ``400``, ..."""
        if self.reset is not None:
            name = self.reset.name if isinstance(self.reset, ErrorCodes) else str(self.reset)
            return f"RST_STREAM {name}" + (f" after {self.status}" if self.status else "")
        if self.status is not None:
            return str(self.status)
        return "no answer"


class H2Client:
    """The `h2` library as a client on one TLS connection; a context manager."""

    def __init__(self, address: Address, server_name: str, *, ca: str | Path,
                 alpn: Sequence[str] = ("h2", "http/1.1"), timeout: float = 10.0) -> None:
        context = client_context(ca=str(ca), alpn=alpn)
        raw = socket.create_connection(address, timeout=timeout)
        try:
            self.sock: ssl.SSLSocket = context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self.server_name = server_name
        self.alpn = self.sock.selected_alpn_protocol()  # None: the server chose no protocol
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.streams: dict[int, StreamResult] = {}
        self.finished: list[int] = []  # stream ids in the order they ended or were reset
        self.received = bytearray()  # every byte the server sent after the handshake, in order
        self._split: tuple[int, list[Frame]] = (0, [])  # (bytes split, their frames): split again only when more came
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.sent_bytes = 0
        if self.alpn == "h2":
            self.h2.initiate_connection()  # the preface and our SETTINGS (RFC 9113 §3.4)
            self.flush()

    # ------------------------------------------------------------------ sending
    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)
            self.sent_bytes += len(data)

    def request(self, path: str = "/", method: str = "GET", *, fields: Fields = (), body: bytes | None = None,
                headers: Fields | None = None, end_stream: bool | None = None,
                data: Sequence[int] = ()) -> int:
        """Open a stream: HEADERS (``headers`` exactly as given, or a GET built from ``path``), then DATA.

        ``body`` is sent as one DATA frame that ends the stream; ``data`` instead sends DATA
        frames of these payload lengths (bytes of "x"), the last with END_STREAM.  With neither,
        HEADERS carries END_STREAM (unless ``end_stream=False``).  Returns the stream id."""
        if self.alpn != "h2":
            raise RuntimeError(f"the server chose ALPN {self.alpn!r}, not h2")
        sid = self.h2.get_next_available_stream_id()
        block = list(headers) if headers is not None else [
            (b":method", method.encode()), (b":scheme", b"https"), (b":authority", self.server_name.encode()),
            (b":path", path.encode()), *fields]
        pieces = [body] if body is not None else [b"x" * n for n in data]
        if end_stream is None:
            end_stream = not pieces
        self.streams[sid] = StreamResult(sid)
        self.h2.send_headers(sid, block, end_stream=end_stream)
        for i, piece in enumerate(pieces):
            self.h2.send_data(sid, piece, end_stream=i == len(pieces) - 1)
        self.flush()  # HEADERS and DATA leave in one write
        return sid

    # ------------------------------------------------------------------ receiving
    def wait(self, *sids: int, timeout: float = 10.0) -> bool:
        """Read until every stream in ``sids`` ended or was reset, the server said GOAWAY, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not all(self.streams[s].done for s in sids) and time.monotonic() < deadline:
            if not self.read_once(deadline) or self.goaway is not None:
                break
        return all(self.streams[s].done for s in sids)

    def read_once(self, deadline: float) -> bool:
        """One read: its frames kept, its events applied.  False when the connection is gone or quiet."""
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            return False
        if not data:
            return False
        self.received += data
        for event in self.h2.receive_data(data):
            self._apply(event)
        self.flush()
        return True

    @property
    def received_bytes(self) -> int:
        return len(self.received)

    @property
    def frames(self) -> list[Frame]:
        """Every complete frame received, in order (``course.capture.h2frames.split_frames``)."""
        if self._split[0] != len(self.received):
            self._split = (len(self.received), split_frames(bytes(self.received)))
        return self._split[1]

    def _apply(self, event) -> None:
        state = self.streams.get(getattr(event, "stream_id", None) or 0)
        if isinstance(event, h2.events.ResponseReceived):
            state.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            state.data += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and state is not None:
            if isinstance(event, h2.events.StreamReset):
                state.reset = event.error_code
            else:
                state.ended = True
            if state.finished_at is None:
                state.finished_at = time.perf_counter()
                self.finished.append(state.id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def server_settings(self) -> dict[str, int]:
        """The server's first SETTINGS frame (not an ACK), by setting name (RFC 9113 §6.5.2)."""
        for frame in self.frames:
            if frame.type == "SETTINGS" and "ACK" not in frame.flags:
                return dict(settings(frame.payload))
        raise LookupError("no SETTINGS frame from the server yet (call wait() or read_once() first)")

    def frame_summary(self, stream_id: int | None = None) -> list[str]:
        """Each frame received (or each of one stream), as ``TYPE stream=N flags``."""
        rows = []
        for frame in self.frames:
            if stream_id is None or frame.stream_id == stream_id:
                flags = ",".join(sorted(frame.flags)) or "-"
                rows.append(f"{frame.type} stream={frame.stream_id} {flags}")
        return rows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.alpn == "h2" and self.goaway is None:
                self.h2.close_connection()
                self.flush()
        self.sock.close()

    def __enter__(self) -> "H2Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------- the servers
def h2_proxy(lab: Playground, name: str, *, pools: dict[str, Sequence],
             alpn: Sequence[str] = cfg.DEFAULT_ALPN, engine: str = "threaded",
             limits: cfg.Limits | None = None) -> Proxy:
    """A terminate proxy of ``lab`` whose listener offers ``alpn`` on ``engine``, in front of ``pools``.

    The same configuration ``lab.proxy(name, pools=pools)`` makes, with the listener's ALPN
    list (what ``--alpn`` or TOML ``alpn`` sets; the proxy's default, ``h2`` then ``http/1.1``,
    unless given) and the engine (``--engine``, TOML ``[proxy] engine``) set; stopped by
    ``lab.stop()``."""
    old = lab.proxies.pop(name, None)
    if old is not None:
        old.stop()
    config = lab.proxy_config(mode="terminate", pools=pools, routes=None, host="127.0.0.1", certs=None,
                              strategy="round_robin", health=None, backend_tls=None, timeouts=None,
                              forward_policy=None)
    listener = dataclasses.replace(config.listeners[0], alpn=tuple(alpn))
    config = cfg.validate(dataclasses.replace(config, listeners=(listener,), engine=engine,
                                              **({"limits": limits} if limits is not None else {})))
    server = ProxyServer(config).bind()
    log = LogLines()
    server.access_log.stream = log
    proxy = Proxy(name, server.start(), log, server.addresses[0])
    lab.proxies[name] = proxy
    return proxy


@contextlib.contextmanager
def nginx_h2(workdir: str | Path, cert: str, key: str, origin: Address) -> Iterator[Address]:
    """nginx (``listen 127.0.0.1:PORT ssl http2``, one worker) in front of one plain-HTTP origin.

    Yields its (host, port); nginx is stopped when the block ends.  Needs nginx installed
    (``course.nginx.installed.nginx_path()``)."""
    workdir = Path(workdir)
    port = free_port()
    text = terminate_conf(port, cert, key, [origin], workdir=str(workdir), http2=True)
    with NginxProcess(text, workdir):
        yield ("127.0.0.1", port)


def nginx_error_lines(workdir: str | Path, since: int = 0) -> list[str]:
    """nginx's error log under ``workdir`` from line ``since`` on (the reasons it gives for a refusal)."""
    path = Path(workdir) / "error.log"
    if not path.exists():
        path = next(Path(workdir).rglob("error.log"), path)
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").splitlines()[since:]
    return []


def curl_alpn(address: Address, server_name: str, *, ca: str | Path, path: str = "/",
              flags: Sequence[str] = ("--http2",)) -> tuple[list[str], str]:
    """``curl -v`` once: (the verbose lines that mention ALPN, the HTTP version curl used)."""
    host, port = address
    done = subprocess.run(
        ["curl", *flags, "-v", "-sS", "-o", "/dev/null", "--cacert", str(ca), "-w", "%{http_version}",
         "--resolve", f"{server_name}:{port}:{host}", f"https://{server_name}:{port}{path}"],
        capture_output=True, text=True, timeout=20)
    lines = [line for line in done.stderr.splitlines() if "ALPN" in line]
    return lines, done.stdout.strip()


def h1_one_connection(address: Address, server_name: str, paths: Sequence[str], *, ca: str | Path,
                      timeout: float = 10.0) -> list[dict]:
    """GET each path in turn on ONE kept-alive HTTP/1.1 connection (ALPN http/1.1): the origin's
    JSON answers, each with ``"finished_at"`` (``time.perf_counter()``) added.

    HTTP/1.1 without pipelining: the next request is written only after the previous
    response was read in full (``http.client``)."""
    context = client_context(ca=str(ca), alpn=("http/1.1",))
    raw = socket.create_connection(address, timeout=timeout)
    connection = http.client.HTTPConnection(server_name, address[1], timeout=timeout)
    connection.sock = context.wrap_socket(raw, server_hostname=server_name)  # http.client uses it as is
    answers = []
    try:
        for path in paths:
            connection.request("GET", path)
            response = connection.getresponse()
            document = json.loads(response.read())
            document["finished_at"] = time.perf_counter()
            answers.append(document)
    finally:
        connection.close()
    return answers


def downgrade_vectors(*roots: str | Path) -> dict:
    """``tests/vectors/h2_downgrade.py``'s ``H2_VECTORS`` by id: the test table itself, imported, not copied.

    Looked for under ``roots``, then the folder above the current one (a notebook runs in
    ``notebooks/``: in the repository that is the repository, in a student handout the
    handout, which carries the file, see ``lab/handout.py``), then the repository this
    package runs from.  LookupError if it is in none."""
    candidates = [Path(r) for r in roots] + [Path.cwd().parent, REPO]
    for root in candidates:
        path = root / "tests" / "vectors" / "h2_downgrade.py"
        if path.is_file():
            name = "h2_downgrade_vectors"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up while the class is built
            spec.loader.exec_module(module)
            return {vector.id: vector for vector in module.H2_VECTORS}
    raise LookupError(f"tests/vectors/h2_downgrade.py is in none of {[str(c) for c in candidates]}")


# --------------------------------------------------------------------------- the mistake, for contrast
def naive_h1_head(headers: Fields) -> bytes:
    """An HTTP/2 header block pasted into an HTTP/1.1 head without any check (never used to forward).

    The request-line from ``:method`` and ``:path``, Host from ``:authority``, every other
    field as ``name: value``: what a backend would parse if a translator trusted the bytes."""
    pseudo = {name: value for name, value in headers if name.startswith(b":")}
    lines = [pseudo.get(b":method", b"GET") + b" " + pseudo.get(b":path", b"/") + b" HTTP/1.1"]
    if b":authority" in pseudo:
        lines.append(b"Host: " + pseudo[b":authority"])
    lines += [name + b": " + value for name, value in headers if not name.startswith(b":")]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass
class Attempt:
    """One request tried live: what the server answered, and what reached the origin meanwhile."""

    outcome: str  # StreamResult.outcome(), or "GOAWAY <code>" when the whole connection ended
    origin_received: list[bytes]  # the request-line of each request the origin recorded for it
    log: list[str] = field(default_factory=list)  # the proxy's access-log lines written meanwhile
    frames: list[str] = field(default_factory=list)  # the frames of the stream (frame_summary)


def attempt(address: Address, server_name: str, *, ca: str | Path, origin, headers: Fields,
            data: Sequence[int] = (), end_stream: bool = True, log: LogLines | None = None,
            timeout: float = 5.0) -> Attempt:
    """Send one header block (and DATA of these lengths) on a new connection; then a control GET.

    The control request (``/control-after``) on the same connection proves the connection
    survived and, since it was sent after the attempt, that anything the server forwarded
    for the attempt has reached ``origin`` (a ``course.origin.Origin`` with ``record_raw``)
    by the time it is answered.  The origin's records of the control request are left out."""
    before = len(origin.raw_requests)
    logged = len(log) if log is not None else 0
    with H2Client(address, server_name, ca=ca) as client:
        sid = client.request(headers=headers, data=data, end_stream=end_stream and not data)
        client.wait(sid, timeout=timeout)
        stream = client.streams[sid]
        outcome = stream.outcome()
        if not stream.done and client.goaway is not None:
            code = client.goaway.error_code
            outcome = f"GOAWAY {code.name if isinstance(code, ErrorCodes) else code}"
        if client.goaway is None:
            control = client.request("/control-after")
            client.wait(control, timeout=timeout)
        frames = client.frame_summary(sid)
    received = [raw.split(b"\r\n", 1)[0] for raw in origin.raw_requests[before:]
                if not raw.startswith(b"GET /control-after ")]
    lines = list(log)[logged:] if log is not None else []
    return Attempt(outcome, received, [line for line in lines if "/control-after" not in line], frames)
