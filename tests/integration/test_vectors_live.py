"""Every smuggling vector of tests/vectors, replayed through a live proxy over real TLS.

``tests/vectors/test_vectors.py`` proves the sans-IO reader decides each vector
right.  This module proves the *proxy* acts on that decision: each request vector
is sent over TLS to a running ``ProxyServer`` in front of an origin that records
the raw bytes it receives (``Origin(record_raw=True)``), and each response vector
is served by a raw socket backend (``tests.fakes.FakeBackend``) that answers with
the malformed bytes.  What is checked, per row:

* a refused request gets its status (400, 413, 501, 505 ...), ``Connection: close``
  and a closed connection, and the origin never receives a complete request from
  it: nothing at all when the head was bad, at most a cut-short one when the body
  broke after the head had gone out;
* an accepted request reaches the origin re-framed: the origin's raw bytes parse
  with h11 (a second, independent parser) as complete requests with at most one
  framing header, carrying the same body;
* a malformed response is never forwarded: the client gets the proxy's own 502,
  or (when the head was fine and the body broke) a connection closed before the
  message ends, never a body completed as if whole; the next request opens a new
  backend connection instead of reusing the poisoned one.
"""

from __future__ import annotations

import importlib.util
import re
import time

import h11
import pytest

from proxy import config as cfg
from proxy.errors import ProtocolError
from proxy.http1 import NEED_DATA, ConnectionClosed, ReaderState, Request, RequestReader
from tests.fakes import FakeBackend, RawTCPClient, RawTLSClient
from tests.vectors.request_vectors import REQUEST_VECTORS, RequestVector
from tests.vectors.response_vectors import RESPONSE_VECTORS, ResponseVector
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

REFUSALS = {400, 408, 411, 413, 414, 431, 501, 505}  # statuses the proxy itself gives a bad request
FORWARD_MODE = importlib.util.find_spec("proxy.modes.forward") is not None


def offline(vector: RequestVector) -> tuple[list[Request], ProtocolError | None]:
    """The request heads the reader yields from ``vector.raw`` before it stops, and its error."""
    reader = RequestReader(allow_absolute_form=vector.mode == "forward", allow_connect=vector.mode == "forward")
    reader.feed(vector.raw)
    if vector.needs_eof:
        reader.feed_eof()
    heads: list[Request] = []
    for _ in range(10 * len(vector.raw) + 10):
        try:
            event = reader.next_event()
        except ProtocolError as error:
            return heads, error
        if event is NEED_DATA or event is ConnectionClosed or reader.state is ReaderState.TUNNEL:
            return heads, None
        if isinstance(event, Request):
            heads.append(event)
    raise AssertionError("reader made no progress")


def parse_at_origin(raw: bytes) -> tuple[h11.Request | None, bytes, bool]:
    """What an independent server (h11) makes of bytes the origin received: head, body, complete?"""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")  # the recording ends here: anything unfinished is cut short
    head, body = None, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return head, bytes(body), False
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body), True
        else:
            return head, bytes(body), False


def framing_fields(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    return [line for line in head.split(b"\r\n")[1:] if line.startswith((b"content-length:", b"transfer-encoding:"))]


def settled(origin, wait: float = 0.5) -> list[bytes]:
    """The origin's records once they stop changing (it files a cut request when the proxy hangs up)."""
    deadline = time.monotonic() + wait
    seen = origin.raw_requests
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = origin.raw_requests
        if now == seen:
            break
        seen = now
    return seen


@pytest.fixture
def live(pki, origin_factory, proxy_factory):
    origin = origin_factory("web", record_raw=True)
    proxy = proxy_factory({"web": [origin.url]}, timeouts=cfg.Timeouts(header_read=3, body_read=3))
    return origin, proxy


def _ids(vector) -> str:
    return vector.id


# --------------------------------------------------------------------------- requests
REVERSE = [v for v in REQUEST_VECTORS if v.mode == "reverse"]


@pytest.mark.parametrize("vector", [v for v in REVERSE if v.expect != "ok"], ids=_ids)
def test_refused_request_gets_its_status_a_close_and_never_reaches_the_origin(vector, live, pki):
    origin, proxy = live
    heads, error = offline(vector)
    assert error is not None and error.status == vector.expect, "the vector table and the reader disagree"
    with RawTLSClient(proxy.port, pki.ca) as client:
        client.send(vector.raw)
        if vector.needs_eof:
            client.close_write()
        response = client.read_response()
        assert response.status == vector.expect, (response, client.received[:300])
        assert response.complete and response.headers.get("connection") == "close"
        assert response.headers.get("server") == "tlsproxy"  # the proxy's own answer, not the origin's
        rest = client.read_until_closed(timeout=3)
        assert rest == b"" and client.end in ("close_notify", "eof", "reset"), \
            f"the connection must close after a {vector.expect}: {client.end}, {rest[:100]!r}"
    records = settled(origin)
    if not heads:
        assert records == [], f"a request refused for its head reached the origin: {records}"
    # The head was valid and went out before its body broke: the origin may hold a
    # request cut short, never a complete one, and never one with two framings.
    for raw in records:
        assert len(framing_fields(raw)) <= 1, raw
        _, _, complete = parse_at_origin(raw)
        assert not complete, f"the origin received a complete request from a refused one: {raw!r}"


@pytest.mark.parametrize("vector", [v for v in REVERSE if v.expect == "ok"], ids=_ids)
def test_accepted_request_reaches_the_origin_unambiguous(vector, live, pki):
    origin, proxy = live
    heads, error = offline(vector)
    assert error is None and heads
    with RawTLSClient(proxy.port, pki.ca) as client:
        client.send(vector.raw)
        responses = [client.read_response(head.method) for head in heads]
    for head, response in zip(heads, responses):
        assert response.complete, (response, client.received[:300])
        assert response.status not in REFUSALS, f"{head.method} {head.target} got {response.status}"
        assert response.headers.get("server", "").startswith("tlslab-origin"), "answered by the origin"
    records = origin.raw_requests
    assert len(records) == len(heads), records
    for raw in records:
        assert len(framing_fields(raw)) <= 1, raw
        parsed, body, complete = parse_at_origin(raw)
        assert parsed is not None and complete, f"h11 cannot read what the origin received: {raw!r}"
        assert not any(name == b"transfer-encoding" and value != b"chunked" for name, value in parsed.headers)
    if vector.body is not None:
        assert parse_at_origin(records[0])[1] == vector.body


FORWARD = [v for v in REQUEST_VECTORS if v.mode == "forward"]


@pytest.fixture
def forward_proxy(proxy_factory, engine):
    if not FORWARD_MODE:
        pytest.skip("proxy/modes/forward.py does not exist: no forward listener to replay these on")
    from proxy.policy import ForwardPolicy, Rule

    # The vectors name example.com: a static hosts entry answers for DNS, and the one
    # rule denies everything, so an accepted request ends in the policy's 403 and the
    # proxy connects nowhere.  (403 is the policy's answer, never the parser's.)
    policy = ForwardPolicy.build(rules=[Rule.parse("deny all")], hosts={"example.com": "127.0.0.1"})
    return proxy_factory(mode="forward", forward_policy=policy, timeouts=cfg.Timeouts(header_read=3))


@pytest.mark.parametrize("vector", FORWARD, ids=_ids)
def test_forward_mode_vectors(vector, forward_proxy):
    heads, error = offline(vector)
    with RawTCPClient(forward_proxy.port) as client:
        client.send(vector.raw)
        response = client.read_response(heads[0].method if heads else "GET")
        if vector.expect == "ok":
            assert error is None and response.status == 403, (response, client.received[:300])
            assert b"deny all" in response.body
            return
        assert response.status == vector.expect and response.headers.get("connection") == "close", response
        assert client.read_until_closed(timeout=3) == b"" and client.end in ("fin", "reset")


# --------------------------------------------------------------------------- responses
FIRST_FINAL_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] ([2-5][0-9]{2})")


def misbehaving(vector: ResponseVector):
    """The fake backend: answers the first request with the vector, every later one with 200 "fresh".

    After the vector it closes (``needs_eof``), holds the connection open and
    silent (a bad response: the proxy must hang up on its own), or goes on serving.
    """

    def handler(conn):
        if conn.index == 0:
            if conn.read_request() is None:
                return
            conn.send(vector.raw)
            if vector.needs_eof:
                return
            if vector.expect != "ok":
                conn.hold()
                return
        while conn.serve_ok(b"fresh"):
            pass

    return handler


@pytest.mark.parametrize("vector", [v for v in RESPONSE_VECTORS if v.request_method != "CONNECT"], ids=_ids)
def test_malformed_response_is_never_forwarded(vector, pki, proxy_factory):
    with FakeBackend(misbehaving(vector), name=vector.id) as backend:
        # backend_read is long: an error must be found from the bytes, not by waiting.
        proxy = proxy_factory({"web": [backend.url]}, timeouts=cfg.Timeouts(backend_read=30))
        with RawTLSClient(proxy.port, pki.ca) as client:
            client.send(f"{vector.request_method} /x HTTP/1.1\r\nHost: www.example.test\r\n\r\n".encode())
            response = client.read_response(vector.request_method)
            if vector.expect == 502:
                assert response.status == 502 and response.complete, (response, client.received[:300])
                assert response.headers.get("server") == "tlsproxy"
                # The client's first bytes are the proxy's 502 (whose text may quote the
                # bad line), never the backend's head.
                assert client.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\nServer: tlsproxy\r\n")
            elif vector.expect == "abort":
                if response.status == 502:  # found before the head went out: also never forwarded
                    assert response.headers.get("server") == "tlsproxy"
                else:
                    assert not response.complete, f"a broken body was completed as if whole: {client.received!r}"
                    client.read_until_closed(timeout=3)
                    assert client.end in ("eof", "reset"), \
                        f"a cut body must end without close_notify (RFC 9112 §9.8), got {client.end}"
                    return
            else:
                expected = int(FIRST_FINAL_STATUS.search(vector.raw).group(1))
                if b"transfer-encoding: gzip" in vector.raw.lower():
                    # h11 reads no transfer coding but chunked: check the bytes.  The
                    # gzip coding is kept, and the body is re-chunked to its end.
                    head, _, chunks = client.read_until(b"\r\n0\r\n\r\n").partition(b"\r\n\r\n")
                    assert b"\r\ntransfer-encoding: gzip, chunked" in head.lower()
                    assert chunks == b"%x\r\n%s\r\n0\r\n\r\n" % (len(vector.body), vector.body)
                    return
                else:
                    assert response.status == expected
                    assert response.complete and response.body == vector.body, (response, client.received)
            if response.headers.get("connection") == "close":
                return
            # The same client connection goes on; the proxy must not reuse the
            # backend connection that misbehaved (or, for "ok", that it closed).
            client.send(b"GET /next HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
            follow_up = client.read_response()
        assert follow_up.status == 200 and follow_up.body == b"fresh", follow_up
        if vector.expect != "ok":
            assert backend.connections == 2, "the backend connection that misbehaved was reused"
