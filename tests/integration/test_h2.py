"""HTTP/2 on the client leg (proxy/modes/h2.py), against real curl and the h2 library over real TLS.

Every test runs on both engines: the threaded one (proxy/modes/h2.py) and the event loop
(proxy/eventloop/h2session.py), on the same H2Server (proxy/h2/connection.py).
The origin records the raw HTTP/1.1 bytes it received (``record_raw=True``), so each
test can say exactly what reached it, and what did not.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from proxy.server import ProxyServer
from tests.conftest import WWW, both_engines
from tests.tools import require_tool
from tests.vectors.h2_downgrade import H2_VECTORS as VECTORS

H2_ALPN = ("h2", "http/1.1")
engine = both_engines  # conftest: every test of this module on both engines


@pytest.fixture
def h2_proxy(proxy_factory, pki):
    """A terminate listener with the given ALPN in front of one origin (on the module's engine)."""

    def start(origin_url: str, *, alpn=H2_ALPN, **config) -> ProxyServer:
        return proxy_factory({"web": [origin_url]}, certs=[pki.files(WWW)], alpn=alpn, **config)

    return start


@pytest.fixture
def origin(origin_factory):
    return origin_factory("web", host="127.0.0.1", record_raw=True)


def curl(pki, port: int, *flags: str, path: str = "/") -> tuple[str, str]:
    """(body, http_version) from the real curl."""
    require_tool("curl")
    result = subprocess.run(
        ["curl", *flags, "-sS", "--cacert", str(pki.ca), f"https://{WWW}:{port}{path}",
         "--resolve", f"{WWW}:{port}:127.0.0.1", "-w", "\n%{http_version}"],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition("\n")
    return body, version


def head_fields(raw: bytes) -> list[tuple[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in head[1:])]


# --------------------------------------------------------------------------- a raw h2 client
class H2Client:
    """The h2 library as a client over ssl (ALPN h2), sending header blocks exactly as given."""

    def __init__(self, port: int, pki) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                        server_hostname=WWW)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.h2.initiate_connection()
        self.flush()
        self.streams: dict[int, dict] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str = "/", method: str = "GET", *, fields=(), body: bytes | None = None,
                headers=None) -> int:
        sid = self.h2.get_next_available_stream_id()
        block = headers or [(b":method", method.encode()), (b":scheme", b"https"),
                            (b":authority", WWW.encode()), (b":path", path.encode()), *fields]
        self.streams[sid] = {"headers": None, "data": b"", "ended": False, "reset": None}
        self.h2.send_headers(sid, block, end_stream=body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=True)
        self.flush()  # HEADERS and DATA leave in one write
        return sid

    def done(self, sid: int) -> bool:
        state = self.streams[sid]
        return state["ended"] or state["reset"] is not None

    def wait(self, *sids: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.done(s) for s in sids) and time.monotonic() < deadline:
            if not self.read_once(deadline):
                break

    def read_once(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            return False
        if not data:
            return False
        for event in self.h2.receive_data(data):
            state = self.streams.get(getattr(event, "stream_id", None) or 0)
            if isinstance(event, h2.events.ResponseReceived):
                state["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                state["data"] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                state["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                state["reset"] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self.flush()
        return True

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- curl
def test_curl_http2_is_served_as_http11_to_the_origin(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url)
    body, version = curl(pki, proxy.port, "--http2", path="/who")
    assert version == "2"
    assert json.loads(body)["path"] == "/who"
    [raw] = origin.raw_requests
    assert raw.startswith(b"GET /who HTTP/1.1\r\n")
    fields = head_fields(raw)
    names = [n for n, _ in fields]
    assert names.count("host") == 1 and dict(fields)["host"] == f"{WWW}:{proxy.port}"
    assert names.count("x-forwarded-for") == 1 and dict(fields)["x-forwarded-for"] == "127.0.0.1"
    assert dict(fields)["x-forwarded-proto"] == "https"
    assert dict(fields)["via"] == "2 tlsproxy"  # RFC 9110 §7.6.3: the version the proxy received


def test_curl_http11_still_works_on_an_h2_listener(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url)
    body, version = curl(pki, proxy.port, "--http1.1", path="/one")
    assert version == "1.1" and json.loads(body)["path"] == "/one"


def test_without_alpn_h2_curl_falls_back_to_http11(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url, alpn=("http/1.1",))
    body, version = curl(pki, proxy.port, "--http2", path="/fallback")
    assert version == "1.1" and json.loads(body)["path"] == "/fallback"


# --------------------------------------------------------------------------- the h2 library
def test_twenty_concurrent_streams_each_get_their_own_answer(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sids = {client.request(f"/bytes/{1000 + i * 997}"): 1000 + i * 997 for i in range(20)}
        described = {client.request(f"/item/{i}"): f"/item/{i}" for i in range(5)}
        client.wait(*sids, *described, timeout=20)
        for sid, size in sids.items():
            state = client.streams[sid]
            assert state["ended"] and state["headers"][b":status"] == b"200", (sid, state["reset"])
            assert len(state["data"]) == size
        for sid, path in described.items():
            assert json.loads(client.streams[sid]["data"])["path"] == path
    finally:
        client.close()
    assert len(origin.raw_requests) == 25


def test_post_with_content_length(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sid = client.request("/upload", "POST", fields=[(b"content-length", b"11")], body=b"hello world")
        client.wait(sid)
        document = json.loads(client.streams[sid]["data"])
        assert document["method"] == "POST" and document["body"]["length"] == 11
    finally:
        client.close()
    assert origin.raw_requests[0].endswith(b"\r\n\r\nhello world")


def test_data_beyond_content_length_is_a_stream_error(pki, origin, h2_proxy):
    """H2.CL (RFC 9113 §8.1.1): RST_STREAM(PROTOCOL_ERROR); the connection and other streams live on."""
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        bad = client.request("/smuggle", "POST", fields=[(b"content-length", b"5")], body=b"hello, and more")
        client.wait(bad)
        assert client.streams[bad]["reset"] == ErrorCodes.PROTOCOL_ERROR
        good = client.request("/after")
        client.wait(good)
        assert json.loads(client.streams[good]["data"])["path"] == "/after"
    finally:
        client.close()
    assert not any(b"/smuggle" in raw for raw in origin.raw_requests)


REFUSED = [v for v in VECTORS if v.expect == 400 and not v.data and v.trailers is None and v.end_stream
           and v.mode == "reverse"][:12]


@pytest.mark.parametrize("vector", REFUSED, ids=[v.id for v in REFUSED])
def test_refused_vectors_never_reach_the_origin(pki, origin, h2_proxy, vector):
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sid = client.request(headers=list(vector.headers))
        client.wait(sid)
        assert client.streams[sid]["reset"] == ErrorCodes.PROTOCOL_ERROR, client.streams[sid]
    finally:
        client.close()
    assert origin.raw_requests == []


def test_connection_specific_header_is_refused(pki, origin, h2_proxy):
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sid = client.request("/te", "POST", fields=[(b"transfer-encoding", b"chunked")], body=b"0\r\n\r\n")
        client.wait(sid)
        assert client.streams[sid]["reset"] == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()
    assert origin.raw_requests == []


def read_frames(sock, until, timeout: float = 10.0) -> list:
    """Raw frames (hyperframe) until ``until(frames)``: an h2 client stops reading at GOAWAY."""
    buffer, frames = b"", []
    deadline = time.monotonic() + timeout
    while not until(frames) and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9:9 + length]))
            frames.append(frame)
            buffer = buffer[9 + length:]
    return frames


def test_goaway_on_graceful_shutdown_and_the_stream_in_flight_finishes(pki, origin, h2_proxy):
    """RFC 9113 §6.8: GOAWAY(NO_ERROR) naming the last stream, that stream answered, a final GOAWAY."""
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sid = client.request("/delay/0.5")
        time.sleep(0.2)  # the request is at the origin
        stopper = threading.Thread(target=proxy.shutdown, kwargs={"grace": 5.0})
        stopper.start()

        def finished(frames) -> bool:
            return sum(isinstance(f, GoAwayFrame) for f in frames) >= 2

        frames = read_frames(client.sock, finished)
        stopper.join(10)
    finally:
        client.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ErrorCodes.NO_ERROR and goaways[0].last_stream_id == sid
    first_goaway = frames.index(goaways[0])
    answer = [f for f in frames[first_goaway:] if f.stream_id == sid]
    assert isinstance(answer[0], HeadersFrame)  # the response came after the GOAWAY
    body = b"".join(f.data for f in answer if isinstance(f, DataFrame))
    assert b'"delayed": 0.5' in body or b'"delayed":0.5' in body
    assert "END_STREAM" in answer[-1].flags
    assert len(goaways) == 2 and goaways[1].last_stream_id == sid  # the final one, after the stream ended


# --------------------------------------------------------------------------- flow control, failures, the clock
def test_a_large_download_is_paced_by_the_clients_window(pki, origin, h2_proxy):
    """4 MiB through the client's default windows (RFC 9113 §6.9.2: 65,535 bytes until WINDOW_UPDATE):
    the proxy sends only what the windows allow, and every byte arrives, in order."""
    from course.origin.content import generated_bytes

    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)  # acknowledges each DATA as it reads it: the window opens step by step
    try:
        sid = client.request("/bytes/4m")
        client.wait(sid, timeout=30)
        assert client.streams[sid]["ended"] and client.streams[sid]["headers"][b":status"] == b"200"
        assert client.streams[sid]["data"] == generated_bytes(4 << 20)
    finally:
        client.close()


def test_a_body_without_content_length_is_rechunked_to_the_origin(pki, origin, h2_proxy):
    """An h2 request body of unknown length becomes chunked HTTP/1.1 (RFC 9112 §7.1), 1 MiB in 16 KiB DATA."""
    import hashlib

    body = bytes(range(256)) * 4096
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        sid = client.h2.get_next_available_stream_id()
        client.streams[sid] = {"headers": None, "data": b"", "ended": False, "reset": None}
        client.h2.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", WWW.encode()),
                                     (b":path", b"/upload")])
        sent = 0
        while sent < len(body):  # within the proxy's windows, as they open
            room = min(client.h2.local_flow_control_window(sid), 16384, len(body) - sent)
            if room <= 0:
                client.read_once(time.monotonic() + 5)
                continue
            client.h2.send_data(sid, body[sent:sent + room])
            sent += room
            client.flush()
        client.h2.end_stream(sid)
        client.flush()
        client.wait(sid, timeout=30)
        document = json.loads(client.streams[sid]["data"])
    finally:
        client.close()
    assert document["body"] == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert b"transfer-encoding: chunked" in origin.raw_requests[0].lower()


def test_a_dead_backend_fails_one_stream_with_502_and_the_connection_lives(pki, origin, proxy_factory):
    """A backend that refuses the connection: 502 on that stream (RFC 9110 §15.6.3); the next stream is served."""
    import proxy.config as cfg
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proxy = proxy_factory({"dead": [dead], "web": [origin.url]},
                          [cfg.RouteConfig("dead", path="/dead"), cfg.RouteConfig("web")],
                          certs=[pki.files(WWW)], alpn=H2_ALPN)
    client = H2Client(proxy.port, pki)
    try:
        bad = client.request("/dead/x")
        client.wait(bad)
        good = client.request("/alive")
        client.wait(good)
    finally:
        client.close()
    assert client.streams[bad]["headers"][b":status"] == b"502" and client.streams[bad]["ended"]
    assert json.loads(client.streams[good]["data"])["path"] == "/alive"


def test_a_stream_the_client_resets_stops_and_the_others_go_on(pki, origin, h2_proxy):
    """RST_STREAM(CANCEL) from the client mid-response (RFC 9113 §6.4): that exchange ends, the connection lives."""
    proxy = h2_proxy(origin.url)
    client = H2Client(proxy.port, pki)
    try:
        big = client.request("/bytes/64m")
        deadline = time.monotonic() + 10
        while not client.streams[big]["data"] and time.monotonic() < deadline:
            client.read_once(deadline)
        client.h2.reset_stream(big, ErrorCodes.CANCEL)
        client.flush()
        after = client.request("/after-reset")
        client.wait(after)
        assert json.loads(client.streams[after]["data"])["path"] == "/after-reset"
    finally:
        client.close()
    assert len(client.streams[big]["data"]) < 64 << 20  # it stopped: most of it was never sent


def test_an_idle_connection_gets_goaway_and_is_closed(pki, origin, h2_proxy):
    """No stream for idle_keepalive seconds: GOAWAY(NO_ERROR), then the close (nginx does the same)."""
    import proxy.config as cfg

    proxy = h2_proxy(origin.url, timeouts=cfg.Timeouts(idle_keepalive=0.5))
    client = H2Client(proxy.port, pki)
    try:
        sid = client.request("/")
        client.wait(sid)
        frames = read_frames(client.sock, lambda frames: any(isinstance(f, GoAwayFrame) for f in frames))
    finally:
        client.close()
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == sid


def test_a_stream_over_max_concurrent_streams_is_refused_not_the_connection(pki, origin, h2_proxy):
    """RFC 9113 §5.1.2: a stream error (REFUSED_STREAM, retryable: §8.7), not h2's connection error.
    The client opens three streams before it has read the proxy's SETTINGS (which allow two)."""
    import proxy.config as cfg

    proxy = h2_proxy(origin.url, limits=cfg.Limits(max_concurrent_streams=2))
    client = H2Client(proxy.port, pki)  # has sent its preface, read nothing yet: no limit known
    try:
        first, second, third = (client.request(f"/delay/0.3?n={n}") for n in range(3))
        client.wait(first, second, third)
        assert client.streams[third]["reset"] == ErrorCodes.REFUSED_STREAM
        assert client.goaway is None  # the connection lives
        for sid in (first, second):
            assert client.streams[sid]["ended"] and client.streams[sid]["headers"][b":status"] == b"200"
        again = client.request("/again")  # HPACK still in step: the refused block was decoded
        client.wait(again)
        assert json.loads(client.streams[again]["data"])["path"] == "/again"
    finally:
        client.close()
    assert len(origin.raw_requests) == 3  # two of the three, and the one after: never the refused one
