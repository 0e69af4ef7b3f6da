"""The strict HTTP/2 -> HTTP/1.1 downgrade (proxy.h2.downgrade).

Four kinds of check:

* every row of ``tests/vectors/h2_downgrade.py``, replayed: the exact HTTP/1.1 head
  ``prepare_upstream_request`` sends, or the refusal with its status and reason;
* properties (hypothesis): whatever header block the downgrade accepts becomes a head
  that the proxy's own ``RequestReader`` reads back as exactly one request with exactly
  one Host; a well-formed block is always accepted, its fields kept; the body counter
  accepts exactly the DATA sequences that add up to content-length;
* the real `h2` library on both ends (bytes from an h2 client into an h2 server
  connection): what ``RequestReceived`` delivers is what the downgrade takes, with
  h2's own validation on and off;
* the module stays sans-IO and needs no `h2` import.
"""

from __future__ import annotations

from pathlib import Path

import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.config import H2Configuration
from hypothesis import given, settings
from hypothesis import strategies as st

import proxy.h2.downgrade as downgrade_module
from proxy.errors import ProtocolError, StatusError
from proxy.h2 import BodyCounter, DowngradedRequest, downgrade_request, downgrade_trailers
from proxy.http1 import (
    NEED_DATA,
    ConnectionClosed,
    EndOfMessage,
    Headers,
    Limits,
    ReaderState,
    Request,
    RequestReader,
    encode_chunk,
    encode_last_chunk,
    prepare_upstream_request,
    serialize_request_head,
)
from tests.unit.test_layout import IO_MODULES, imports
from tests.vectors.h2_downgrade import CLIENT_IP, H2_VECTORS, PROTO, H2Vector, req

LIMITS = Limits()


# --------------------------------------------------------------------------- replay
def replay(vector: H2Vector) -> tuple[DowngradedRequest, Headers | None]:
    """Run one row through the downgrade as a server would, frame by frame."""
    down = downgrade_request(list(vector.headers), end_stream=vector.end_stream, limits=LIMITS,
                             allow_connect=vector.mode == "forward")
    for length in vector.data:
        down.body.data(length)
    trailers = None
    if vector.trailers is not None:
        trailers = downgrade_trailers(list(vector.trailers), request=down.request, end_stream=True, limits=LIMITS)
    if not vector.end_stream:
        down.body.end_stream()
    return down, trailers


def upstream_head(down: DowngradedRequest) -> bytes:
    return serialize_request_head(prepare_upstream_request(down.request, client_ip=CLIENT_IP, proto=PROTO))


def read_back(head: bytes, down: DowngradedRequest) -> Request:
    """Parse ``head`` (plus a body of the announced framing) with the proxy's own reader:
    it must be exactly one request, with exactly one Host, and nothing after it."""
    framing = down.request.framing
    body = b""
    if framing.kind == "length":
        body = b"x" * framing.length
    elif framing.kind == "chunked":
        body = encode_chunk(b"hello") + encode_last_chunk()
    reader = RequestReader(allow_connect=True)
    reader.feed(head + body)
    events = []
    for _ in range(10):
        event = reader.next_event()
        if event is NEED_DATA or event is ConnectionClosed:
            break
        events.append(event)
        if reader.state is ReaderState.TUNNEL:
            break
    requests = [e for e in events if isinstance(e, Request)]
    assert len(requests) == 1, events
    assert isinstance(events[-1], EndOfMessage), events
    assert len(requests[0].headers.get_all("host")) == 1
    assert requests[0].framing == framing
    return requests[0]


OK = [v for v in H2_VECTORS if v.expect == "ok"]
REFUSED = [v for v in H2_VECTORS if v.expect != "ok"]


@pytest.mark.parametrize("vector", OK, ids=lambda v: v.id)
def test_accepted_vector_sends_exactly_this_head(vector: H2Vector) -> None:
    down, trailers = replay(vector)
    head = upstream_head(down)
    assert head == vector.head, f"{vector.id} ({vector.rfc})"
    again = read_back(head, down)
    assert (again.method, again.target) == (down.request.method, down.request.target)
    assert list(trailers or ()) == list(vector.forwarded_trailers)


@pytest.mark.parametrize("vector", REFUSED, ids=lambda v: v.id)
def test_refused_vector_names_its_rule(vector: H2Vector) -> None:
    with pytest.raises(ProtocolError) as caught:
        replay(vector)
    assert caught.value.status == vector.expect, f"{vector.id}: {caught.value}"
    assert vector.reason in str(caught.value), f"{vector.id}: {caught.value}"
    if vector.expect == 400:
        assert "RFC " in str(caught.value), "a 400 says which rule it enforces"


def test_the_table_covers_the_brief() -> None:
    ids = {v.id for v in H2_VECTORS}
    assert len(H2_VECTORS) >= 40
    for required in [
        "cl-more-data-than-declared", "cl-less-data-than-declared", "cl-duplicate-different",
        "cl-plus-sign", "cl-leading-space", "te-transfer-encoding-chunked", "connection-field",
        "proxy-connection-field", "keep-alive-field", "upgrade-field", "ok-te-trailers", "te-gzip",
        "crlf-in-value", "lf-in-value", "nul-in-value", "obs-fold-in-value", "value-leading-space",
        "crlf-in-name", "empty-name", "colon-inside-name", "uppercase-name", "name-not-a-token",
        "no-method", "no-scheme", "no-path", "path-repeated", "unknown-pseudo-header",
        "pseudo-after-regular", "status-in-request", "extended-connect-refused", "path-empty",
        "path-relative", "path-absolute-form", "path-asterisk-not-options", "ok-options-asterisk",
        "path-fragment", "ok-path-double-slash", "path-space", "method-not-token", "authority-userinfo",
        "authority-with-path", "host-differs-from-authority", "ok-authority-default-port-vs-host",
        "ok-host-without-authority", "ok-scheme-http-over-tls", "ok-cookie-crumbs-joined",
        "ok-trailers-filtered", "trailer-pseudo-header", "ok-connect-forward", "connect-with-path",
    ]:
        assert required in ids, required


# --------------------------------------------------------------------------- the parts
def test_host_is_first_and_single_and_from_authority() -> None:
    down = downgrade_request(list(req(b"GET", b"/", (b"accept", b"*/*"), (b"host", b"EXAMPLE.com:443"))),
                             end_stream=True)
    assert list(down.request.headers) == [("Host", "example.com"), ("accept", "*/*")]
    assert down.scheme == "https" and down.request.version == "HTTP/1.1"


def test_scheme_is_reported_but_forwarded_proto_is_the_connections() -> None:
    down = downgrade_request(list(req(scheme=b"HTTP")), end_stream=True)
    assert down.scheme == "http"
    forwarded = prepare_upstream_request(down.request, client_ip=CLIENT_IP, proto="https")
    assert forwarded.headers.get_all("x-forwarded-proto") == ["https"]


def test_expect_100_continue_is_read_as_in_http1() -> None:
    down = downgrade_request(list(req(b"PUT", b"/f", (b"expect", b"100-continue"), (b"content-length", b"3"))),
                             end_stream=False)
    assert down.request.expect_continue is True


def test_limits_of_the_http1_reader_apply() -> None:
    small = Limits(max_request_line=64, max_field_line=32, max_fields=2)
    with pytest.raises(ProtocolError) as caught:
        downgrade_request(list(req(b"GET", b"/" + b"a" * 64)), end_stream=True, limits=small)
    assert caught.value.status == 414
    with pytest.raises(ProtocolError) as caught:
        downgrade_request(list(req(b"GET", b"/", (b"x", b"y" * 40))), end_stream=True, limits=small)
    assert caught.value.status == 431
    with pytest.raises(ProtocolError) as caught:
        downgrade_request(list(req(b"GET", b"/", (b"a", b"1"), (b"b", b"2"))), end_stream=True, limits=small)
    assert caught.value.status == 431  # Host + 2 fields > max_fields


def test_a_chunked_body_is_bounded_by_max_body_size() -> None:
    down = downgrade_request(list(req(b"POST", b"/")), end_stream=False, limits=Limits(max_body_size=10))
    down.body.data(10)
    with pytest.raises(ProtocolError) as caught:
        down.body.data(1)
    assert caught.value.status == 413


def test_str_headers_are_refused_loudly() -> None:
    with pytest.raises(TypeError, match="header_encoding=None"):
        downgrade_request([(":method", "GET")], end_stream=True)  # type: ignore[list-item]


def test_trailers_must_end_the_stream() -> None:
    down = downgrade_request(list(req(b"POST", b"/")), end_stream=False)
    with pytest.raises(ProtocolError, match="END_STREAM"):
        downgrade_trailers([(b"checksum", b"abc")], request=down.request, end_stream=False)


def test_trailers_honour_the_requests_connection_rule_set() -> None:
    """The same filter as HTTP/1.1 trailers: cookie, authorization, content-type dropped."""
    down = downgrade_request(list(req(b"POST", b"/")), end_stream=False)
    kept = downgrade_trailers([(b"authorization", b"Basic eA=="), (b"server-timing", b"db;dur=5"),
                               (b"cookie", b"a=1"), (b"content-type", b"text/html")],
                              request=down.request, end_stream=True)
    assert list(kept) == [("server-timing", "db;dur=5")]


def test_body_counter_refuses_double_end_stream() -> None:
    counter = BodyCounter(None)
    counter.end_stream()
    with pytest.raises(ProtocolError, match="twice"):
        counter.end_stream()


# --------------------------------------------------------------------------- properties
TOKEN = st.from_regex(rb"[a-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)
VCHARS = st.binary(max_size=20).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E))
VALUE = st.tuples(VCHARS, st.sampled_from([b"", b" ", b"\t", b" x "]), VCHARS).map(
    lambda t: (t[0] + t[1] + t[2]).strip(b" \t"))
SPECIAL = {b"host", b"cookie", b"content-length", b"te", b"expect", *downgrade_module.CONNECTION_SPECIFIC}
REGULAR = st.tuples(TOKEN.filter(lambda n: n not in SPECIAL), VALUE)
METHOD = st.from_regex(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True).filter(lambda m: m != b"CONNECT")
PATH = VCHARS.map(lambda p: b"/" + p.replace(b"#", b""))
AUTHORITY = st.tuples(st.from_regex(rb"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True),
                      st.sampled_from([b"", b":443", b":8080", b":"])).map(b"".join)


@st.composite
def well_formed(draw) -> tuple[list[tuple[bytes, bytes]], bool]:
    pseudo = [(b":method", draw(METHOD)), (b":scheme", draw(st.sampled_from([b"https", b"http"]))),
              (b":authority", draw(AUTHORITY)), (b":path", draw(PATH))]
    pseudo = draw(st.permutations(pseudo))
    return pseudo + draw(st.lists(REGULAR, max_size=8)), draw(st.booleans())


# Anything at all, weighted towards the edges of the grammar.
ANY_NAME = st.one_of(
    st.sampled_from([b"accept", b"cookie", b"host", b"content-length", b"te", b"via", b"x-forwarded-for",
                     b"transfer-encoding", b"connection", b"Accept", b"x:y", b"", b"x y", b"x\r\ny", b":path",
                     b":authority", b":method", b":status", b":protocol", b"expect"]),
    st.binary(max_size=8))
ANY_VALUE = st.one_of(
    st.sampled_from([b"", b"0", b"5", b"+5", b"example.com", b"example.com:443", b"u@h", b"trailers", b"chunked",
                     b"a b", b" a", b"a\r\nb", b"\xe9", b"a\x00", b"/", b"*", b"/a#b", b"GET", b"CONNECT",
                     b"100-continue", b"[::1]:80"]),
    st.binary(max_size=12))


@st.composite
def anything(draw) -> tuple[list[tuple[bytes, bytes]], bool]:
    """A well-formed block with up to three mutations: a value or name swapped for an
    edge case, a field added, a field dropped, the order shuffled."""
    block, end_stream = draw(well_formed())
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["value", "name", "add", "drop", "shuffle"]))
        at = draw(st.integers(0, max(len(block) - 1, 0)))
        if kind == "value" and block:
            block[at] = (block[at][0], draw(ANY_VALUE))
        elif kind == "name" and block:
            block[at] = (draw(ANY_NAME), block[at][1])
        elif kind == "add":
            block.insert(at, (draw(ANY_NAME), draw(ANY_VALUE)))
        elif kind == "drop" and block:
            del block[at]
        elif kind == "shuffle":
            block = draw(st.permutations(block))
    return block, end_stream


@settings(max_examples=500, deadline=None)
@given(anything())
def test_whatever_is_accepted_reads_back_as_one_request_with_one_host(case) -> None:
    block, end_stream = case
    try:
        down = downgrade_request(block, end_stream=end_stream, allow_connect=True)
    except StatusError:
        return  # refused: nothing reaches a backend
    again = read_back(upstream_head(down), down)
    assert (again.method, again.target) == (down.request.method, down.request.target)


@settings(max_examples=300, deadline=None)
@given(well_formed())
def test_a_well_formed_block_is_accepted_with_its_fields_kept(case) -> None:
    block, end_stream = case
    down = downgrade_request(block, end_stream=end_stream)
    pseudo = dict(f for f in block if f[0][:1] == b":")
    assert down.request.method == pseudo[b":method"].decode()
    assert down.request.target == pseudo[b":path"].decode()
    regular = [(n.decode(), v.decode("latin-1")) for n, v in block if n[:1] != b":"]
    assert list(down.request.headers) == [("Host", pseudo[b":authority"].decode())] + regular
    assert down.request.framing.kind == ("none" if end_stream else "chunked")
    read_back(upstream_head(down), down)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.lists(st.integers(0, 20), max_size=6))
def test_the_body_counter_accepts_exactly_the_data_that_adds_up(declared, frames) -> None:
    down = downgrade_request(list(req(b"POST", b"/", (b"content-length", str(declared).encode()))),
                             end_stream=False)
    try:
        for length in frames:
            down.body.data(length)
        down.body.end_stream()
    except ProtocolError as error:
        assert sum(frames) != declared
        assert "RFC 9113 §8.1.1" in str(error)
    else:
        assert sum(frames) == declared


# --------------------------------------------------------------------------- the real h2
def h2_pair(client: dict | None = None, server: dict | None = None):
    """An h2 client and an h2 server connection, past the connection preface and SETTINGS."""
    c = h2.connection.H2Connection(config=H2Configuration(client_side=True, **(client or {})))
    s = h2.connection.H2Connection(config=H2Configuration(client_side=False, header_encoding=None, **(server or {})))
    c.initiate_connection()
    s.initiate_connection()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    return c, s


def serve(events, *, allow_connect: bool = False):
    """What the engine will do with h2's events for one stream: (DowngradedRequest, trailers)."""
    down = trailers = None
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            down = downgrade_request(event.headers, end_stream=event.stream_ended is not None,
                                     allow_connect=allow_connect)
            ended_with_headers = event.stream_ended
        elif isinstance(event, h2.events.DataReceived):
            down.body.data(len(event.data))
        elif isinstance(event, h2.events.TrailersReceived):
            trailers = downgrade_trailers(event.headers, request=down.request, end_stream=True)
        elif isinstance(event, h2.events.StreamEnded) and event is not ended_with_headers:
            down.body.end_stream()
    return down, trailers


def test_a_request_from_a_real_h2_client_downgrades() -> None:
    client, server = h2_pair()
    client.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"),
                            (":path", "/upload?x=1"), ("content-type", "text/plain"), ("te", "trailers")])
    client.send_data(1, b"hello")
    client.send_headers(1, [("checksum", "abc"), ("host", "admin.internal")], end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], h2.events.RequestReceived)
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in events[0].headers)
    down, trailers = serve(events)
    assert down.body.ended and down.body.received == 5
    assert upstream_head(down) == (
        b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\ncontent-type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: example.com\r\nVia: 1.1 tlsproxy\r\n\r\n")
    assert list(trailers) == [("checksum", "abc")]


@pytest.mark.parametrize("normalize", [True, False], ids=["h2-joins", "crumbs-delivered"])
def test_cookie_crumbs_from_a_real_client_become_one_cookie(normalize: bool) -> None:
    client, server = h2_pair({"split_outbound_cookies": True}, {"normalize_inbound_headers": normalize})
    client.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"),
                            (":path", "/"), ("cookie", "a=1; b=2"), ("accept", "*/*")], end_stream=True)
    events = server.receive_data(client.data_to_send())
    crumbs = [v for n, v in events[0].headers if n == b"cookie"]
    assert crumbs == ([b"a=1; b=2"] if normalize else [b"a=1", b"b=2"])
    down, _ = serve(events)
    assert down.request.headers.get_all("cookie") == ["a=1; b=2"]


# h2 with every check off on both ends: the bytes an attacker's own client would send.
RAW_CLIENT = {"validate_outbound_headers": False, "normalize_outbound_headers": False}
RAW_SERVER = {"validate_inbound_headers": False, "normalize_inbound_headers": False}


@pytest.mark.parametrize("vector", H2_VECTORS, ids=lambda v: v.id)
def test_every_vector_through_real_h2_with_its_validation_off(vector: H2Vector) -> None:
    """What h2 delivers is exactly the row's header block, and the downgrade's outcome is
    the row's.  Where h2 refuses by itself (it always checks content-length syntax and
    DATA against it), the row must be one the downgrade refuses too."""
    client, server = h2_pair(RAW_CLIENT, RAW_SERVER)
    try:
        client.send_headers(1, list(vector.headers), end_stream=vector.end_stream)
        for length in vector.data:
            client.send_data(1, b"x" * length)
        if vector.trailers is not None:
            client.send_headers(1, list(vector.trailers), end_stream=True)
        elif not vector.end_stream:
            client.end_stream(1)
        events = server.receive_data(client.data_to_send())
    except h2.exceptions.ProtocolError:
        assert vector.expect != "ok", f"h2 refused {vector.id}, which the downgrade accepts"
        return
    assert [tuple(h) for h in events[0].headers] == [tuple(h) for h in vector.headers]
    try:
        down, trailers = serve(events, allow_connect=vector.mode == "forward")
    except ProtocolError as error:
        assert (error.status, vector.reason in str(error)) == (vector.expect, True), f"{vector.id}: {error}"
        return
    assert vector.expect == "ok", f"{vector.id} was accepted"
    assert upstream_head(down) == vector.head
    assert list(trailers or ()) == list(vector.forwarded_trailers)


@pytest.mark.parametrize("flaw, reason", [
    ((":path", "/a b"), "space or control byte"),            # request-line splitting
    (("x(y)", "z"), "is not a token"),                       # no h1 field-name
    ((":authority", "user@example.com"), "userinfo"),        # RFC 9113 §8.3.1 MUST NOT
    ((":path", "https://admin.internal/"), "must start with '/'"),
], ids=["path-space", "name-not-token", "userinfo", "absolute-path"])
def test_h2s_own_validation_misses_what_the_downgrade_catches(flaw, reason) -> None:
    """With validate_inbound_headers on (the default), h2 still delivers these: the
    downgrade cannot lean on h2's validation."""
    client, server = h2_pair({"validate_outbound_headers": False})
    fields = {":method": "GET", ":scheme": "https", ":authority": "example.com", ":path": "/"}
    fields[flaw[0]] = flaw[1]
    client.send_headers(1, list(fields.items()), end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], h2.events.RequestReceived)
    with pytest.raises(ProtocolError, match=reason):
        serve(events)


# --------------------------------------------------------------------------- sans-IO
def test_the_downgrade_is_sans_io_and_needs_no_h2_import() -> None:
    """proxy/h2 does no I/O; the downgrade and the response side do not even need h2 (only
    connection.py drives the h2 library, which is sans-IO itself: bytes in, events out)."""
    for path in Path(downgrade_module.__file__).parent.glob("*.py"):
        names = imports(path)
        assert not {n for n in names if n.split(".")[0] in IO_MODULES}, path
        if path.name != "connection.py":
            assert not {n for n in names if n == "h2" or n.startswith("h2.")}, path
