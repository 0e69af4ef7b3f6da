"""Forwarding: hop-by-hop stripping, X-Forwarded-*, Via, framing for each side."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidUpstreamResponse
from proxy.http1 import (
    HOP_BY_HOP,
    EndOfMessage,
    Framing,
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    client_keep_alive,
    encode_last_chunk,
    prepare_downstream_response,
    prepare_trailers,
    prepare_upstream_request,
    serialize_request_head,
    serialize_response_head,
    strip_hop_by_hop,
)
from proxy.http1.forwarding import _NOT_IN_TRAILERS
from tests.vectors.trailer_vectors import TRAILER_VECTORS, TrailerVector, trailer_fields


def read_request(raw: bytes, **options) -> Request:
    reader = RequestReader(**options)
    reader.feed(raw)
    return reader.next_event()


def read_response(raw: bytes, method: str = "GET") -> Response:
    reader = ResponseReader()
    reader.expect_response_to(method)
    reader.feed(raw)
    return reader.next_event()


def test_hop_by_hop_set() -> None:
    assert HOP_BY_HOP == {
        "connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade",
        "trailer", "proxy-authenticate", "proxy-authorization",
    }


def test_strip_hop_by_hop_also_strips_what_connection_names_but_not_host() -> None:
    headers = Headers([
        ("Host", "a"), ("Connection", "X-Secret, host, Keep-Alive"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"), ("Accept", "*/*"),
    ])
    stripped = strip_hop_by_hop(headers)
    assert list(stripped) == [("Host", "a"), ("Accept", "*/*")]
    assert len(headers) == 8  # the original is untouched


# --------------------------------------------------------------------------- upstream
def upstream(raw: bytes, **options) -> Request:
    request = read_request(raw, **options)
    return prepare_upstream_request(request, client_ip="192.0.2.7", proto="https")


def test_upstream_request_fields() -> None:
    raw = (
        b"GET /p HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: spoofed\r\nVia: 1.0 other\r\nAccept: */*\r\n\r\n"
    )
    original = read_request(raw)
    before = list(original.headers)
    request = prepare_upstream_request(original, client_ip="192.0.2.7", proto="https")
    assert list(original.headers) == before  # original untouched
    assert request is not original and request.headers is not original.headers
    assert list(request.headers) == [
        ("Host", "example.com"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "10.0.0.1, 10.0.0.2, 192.0.2.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "example.com"),
        ("Via", "1.0 other, 1.1 tlsproxy"),
    ]
    assert "connection" not in request.headers  # the pool decides persistence
    assert (request.method, request.target, request.version) == ("GET", "/p", "HTTP/1.1")


def test_upstream_framing_is_rewritten_from_the_reader_decision() -> None:
    length = upstream(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello")
    assert length.headers.get_all("content-length") == ["5"] and "transfer-encoding" not in length.headers
    chunked = upstream(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
    assert chunked.headers.get_all("transfer-encoding") == ["chunked"] and "content-length" not in chunked.headers
    none = upstream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert "transfer-encoding" not in none.headers and "content-length" not in none.headers
    zero = upstream(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert zero.headers.get("content-length") == "0"


def test_http10_client_without_host_is_forwarded_as_http11_with_a_host() -> None:
    request = upstream(b"GET / HTTP/1.0\r\n\r\n")
    assert request.version == "HTTP/1.1"
    assert request.headers.get_all("host") == [""]  # RFC 9110 §7.2: empty when unknown
    assert "x-forwarded-host" not in request.headers
    read_request(serialize_request_head(request))  # a valid HTTP/1.1 request
    named = prepare_upstream_request(read_request(b"GET / HTTP/1.0\r\n\r\n"), client_ip="::1", proto="https",
                                     default_host="backend.internal:8080")
    assert named.headers.get_all("host") == ["backend.internal:8080"]


def test_absolute_form_becomes_origin_form_with_host_from_the_uri() -> None:
    request = upstream(b"GET http://origin.example:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n", allow_absolute_form=True)
    assert request.target == "/x?y"
    assert request.headers.get_all("host") == ["origin.example:8080"]
    assert request.headers.get("x-forwarded-host") == "origin.example:8080"


def test_custom_via_and_flags_are_kept() -> None:
    original = read_request(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    request = prepare_upstream_request(original, client_ip="::1", proto="http", via="1.1 lab")
    assert request.headers.get("via") == "1.1 lab"
    assert request.headers.get("x-forwarded-for") == "::1"
    assert request.expect_continue and request.framing == Framing("length", 1)


def test_upstream_request_serialises_and_parses_back_strictly() -> None:
    request = upstream(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    again = read_request(serialize_request_head(request))
    assert list(again.headers) == list(request.headers) and again.framing.kind == "chunked"


# --------------------------------------------------------------------------- downstream
@pytest.mark.parametrize(
    "raw, method, client, mode, te, cl",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", "HTTP/1.1", "length", None, "5"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", "HTTP/1.0", "length", None, "5"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", "HTTP/1.1", "chunked", "chunked", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", "HTTP/1.0", "close", None, None),
        (b"HTTP/1.1 200 OK\r\n\r\n", "GET", "HTTP/1.1", "chunked", "chunked", None),
        (b"HTTP/1.0 200 OK\r\n\r\n", "GET", "HTTP/1.0", "close", None, None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET", "HTTP/1.1", "chunked",
         "gzip, chunked", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", "HTTP/1.1", "chunked", "gzip, chunked", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", "HTTP/1.1", "none", None, "5"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", "HTTP/1.1", "none", None, "5"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", "HTTP/1.1", "none", None, None),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "POST", "HTTP/1.1", "none", None, None),
    ],
)
def test_downstream_body_mode(raw: bytes, method: str, client: str, mode: str, te: str | None, cl: str | None) -> None:
    response, body_mode = prepare_downstream_response(read_response(raw, method), client_version=client,
                                                      request_method=method)
    assert body_mode == mode
    assert response.headers.get("transfer-encoding") == te
    assert response.headers.get("content-length") == cl
    assert response.version == "HTTP/1.1"
    assert response.headers.get_all("via") == ["1.1 tlsproxy"]


def test_downstream_strips_hop_by_hop_and_appends_via() -> None:
    original = read_response(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\n"
        b"Via: 1.1 backend\r\nServer: origin\r\nContent-Length: 0\r\n\r\n"
    )
    response, mode = prepare_downstream_response(original, client_version="HTTP/1.1", request_method="GET",
                                                 via="1.1 p")
    assert list(response.headers) == [("Server", "origin"), ("Content-Length", "0"), ("Via", "1.1 backend, 1.1 p")]
    assert len(original.headers) == 6  # untouched
    assert serialize_response_head(response).startswith(b"HTTP/1.1 200 OK\r\n")


def test_coded_body_cannot_go_to_an_http10_client() -> None:
    original = read_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    with pytest.raises(InvalidUpstreamResponse):
        prepare_downstream_response(original, client_version="HTTP/1.0", request_method="GET")


# --------------------------------------------------------------------------- the rest
@pytest.mark.parametrize(
    "raw, keep_alive, options",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True, {}),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False, {}),
        (b"GET / HTTP/1.0\r\n\r\n", False, {}),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, {}),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", False, {"allow_connect": True}),
    ],
)
def test_client_keep_alive(raw: bytes, keep_alive: bool, options: dict) -> None:
    request = read_request(raw, **options)
    assert client_keep_alive(request) is keep_alive is request.keep_alive


def test_prepare_trailers_drops_framing_and_hop_by_hop_fields() -> None:
    trailers = Headers([("Checksum", "1"), ("Content-Length", "9"), ("Transfer-Encoding", "chunked"),
                        ("Host", "evil"), ("Server-Timing", "db")])
    assert list(prepare_trailers(trailers)) == [("Checksum", "1"), ("Server-Timing", "db")]


# --------------------------------------------------------------------------- trailers
@pytest.mark.parametrize("vector", TRAILER_VECTORS, ids=lambda v: v.id)
def test_prepare_trailers_keeps_what_may_be_sent_late_and_drops_the_rest(vector: TrailerVector) -> None:
    """RFC 9110 §6.5.1: no field that frames, routes, authenticates, modifies the request,
    controls the response or describes the content leaves the proxy in a trailer."""
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                + vector.trailer + b"\r\n")
    head_event, data, end = (reader.next_event() for _ in range(3))
    assert isinstance(end, EndOfMessage), (head_event, data, end)
    trailers = end.trailers
    assert list(trailers) == trailer_fields(vector), "the reader and the vector table disagree"
    head = Headers([("Host", "a"), ("Connection", vector.connection)]) if vector.connection else None

    kept = prepare_trailers(trailers, head)

    assert list(kept) == list(vector.forwarded)
    assert not {name.lower() for name, _ in kept} & set(vector.dropped)
    assert list(trailers) == trailer_fields(vector)  # the original is untouched
    # What goes on the wire parses back to the same fields (the serialiser accepts them).
    again = RequestReader()
    again.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + encode_last_chunk(kept))
    assert isinstance(again.next_event(), Request)
    end = again.next_event()
    assert isinstance(end, EndOfMessage) and list(end.trailers) == list(vector.forwarded)


def test_every_dropped_name_of_the_table_is_on_the_list() -> None:
    """The table and ``_NOT_IN_TRAILERS`` agree: a name the table expects dropped is on the
    list, unless a Connection field named it (RFC 9110 §7.6.1)."""
    for vector in TRAILER_VECTORS:
        named = {n.strip().lower() for n in (vector.connection or "").split(",") if n.strip()}
        for field in trailer_fields(vector):
            if field[0].lower() == "connection":
                named |= {n.strip().lower() for n in field[1].split(",")}
        for name in vector.dropped:
            assert name in _NOT_IN_TRAILERS or name in named, (vector.id, name)


@pytest.mark.parametrize(
    "category, names",
    [
        # RFC 7230 §4.1.2's examples of the categories RFC 9110 §6.5.1 names.
        ("message framing", {"transfer-encoding", "content-length"}),
        ("routing", {"host"}),
        ("request modifiers: controls (RFC 7231 §5.1)",
         {"cache-control", "expect", "host", "max-forwards", "pragma", "range", "te"}),
        ("request modifiers: conditionals (RFC 7231 §5.2)",
         {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"}),
        ("authentication (RFC 7235, RFC 6265)",
         {"authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate", "cookie", "set-cookie"}),
        ("response control data (RFC 7231 §7.1)",
         {"age", "cache-control", "expires", "date", "location", "retry-after", "vary", "warning"}),
        ("how to process the payload", {"content-encoding", "content-type", "content-range", "trailer"}),
        ("hop-by-hop (RFC 9110 §7.6.1)", set(HOP_BY_HOP)),
    ],
)
def test_not_in_trailers_covers_every_category_of_rfc_9110_section_6_5_1(category: str, names: set[str]) -> None:
    assert names <= _NOT_IN_TRAILERS, f"{category}: {sorted(names - _NOT_IN_TRAILERS)} not dropped"


def test_prepare_trailers_drops_what_the_header_section_connection_names() -> None:
    """RFC 9110 §7.6.1 ¶5: "remove any header or trailer field(s) from the message with the
    same name as the connection-option"; Host is never a connection option (it is for all)."""
    trailers = Headers([("X-Hop", "1"), ("X-Other", "2"), ("Checksum", "c")])
    head = Headers([("Host", "a"), ("Connection", "keep-alive, x-hop"), ("connection", "X-Other")])
    assert list(prepare_trailers(trailers, head)) == [("Checksum", "c")]
    assert list(prepare_trailers(trailers, Headers([("Host", "a")]))) == list(trailers)
