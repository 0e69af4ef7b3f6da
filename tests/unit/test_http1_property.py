"""Property tests for the request parser (hypothesis), with h11 as a second opinion.

* Any bytes, and mutations of valid requests: the reader either produces events or
  raises a ``ProtocolError`` (never another exception), and it always stops: every
  call returns NEED_DATA, consumes bytes, or ends a message.
* How the bytes are split across ``feed`` calls never changes the result.
* Whenever both h11 and our reader accept a request, they agree on the method,
  target, header fields, body and trailers.  (Where they differ on acceptance, we
  are the stricter one by design: bare LF, obs-fold, control bytes in values,
  "Content-Length: 5, 5" ...)
* Every generated valid request is accepted, and survives serialise -> parse.
"""

from __future__ import annotations

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import ProtocolError
from proxy.http1 import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Headers,
    ReaderState,
    Request,
    RequestReader,
    encode_chunk,
    encode_last_chunk,
    serialize_request_head,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect"}


# --------------------------------------------------------------------------- drivers
def parse_ours(raw: bytes, splits: list[int] | None = None, eof: bool = False):
    """All complete messages as (method, target, version, headers, body, trailers),
    plus the error (or None).  Asserts the reader always makes progress."""
    reader = RequestReader()
    pieces = [raw]
    if splits:
        cuts = sorted({s % (len(raw) + 1) for s in splits})
        pieces = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])]
    budget = 3 * len(raw) + 2 * len(pieces) + 20
    messages: list = []
    current = None

    def pump() -> bool:
        nonlocal budget, current
        while True:
            budget -= 1
            assert budget > 0, "the reader loops without progress"
            event = reader.next_event()
            if event is NEED_DATA:
                return True
            if event is ConnectionClosed:
                return False
            if isinstance(event, Request):
                current = [event.method, event.target, event.version,
                           [(n.lower(), v) for n, v in event.headers], b"", None]
            elif isinstance(event, Data):
                assert event.data
                current[4] += event.data
            else:
                assert isinstance(event, EndOfMessage)
                current[5] = [(n.lower(), v) for n, v in event.trailers]
                messages.append(tuple(current))
                current = None
                if reader.state is ReaderState.TUNNEL:
                    return False

    try:
        for piece in pieces:
            reader.feed(piece)
            if not pump():
                return messages, None
        if eof:
            reader.feed_eof()
            pump()
    except ProtocolError as error:  # anything else fails the test
        return messages, error
    return messages, None


def parse_h11(raw: bytes):
    """h11's reading of the first request, or None if it refuses or wants more."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    head = None
    body = b""
    for _ in range(10 * len(raw) + 10):
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return (
                head.method.decode("latin-1"),
                head.target.decode("latin-1"),
                "HTTP/" + head.http_version.decode(),
                [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in head.headers.raw_items()],
                body,
                [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in event.headers.raw_items()],
            )
    raise AssertionError("h11 did not stop")


def normalised(message):
    """h11 lower-cases Transfer-Encoding values; compare them case-insensitively."""
    method, target, version, headers, body, trailers = message
    headers = [(n, v.lower() if n == "transfer-encoding" else v) for n, v in headers]
    return method, target, version, headers, body, trailers


# --------------------------------------------------------------------------- generators
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=12)
field_chars = st.characters(min_codepoint=0x21, max_codepoint=0xFF, blacklist_characters="\x7f") | st.sampled_from(
    [" ", "\t"]
)
field_values = st.text(alphabet=field_chars, max_size=30).map(lambda v: v.strip(" \t"))
field_names = tokens.filter(lambda n: n.lower() not in SPECIAL)
ows = st.sampled_from(["", " ", "\t", "  ", " \t"])
path_chars = "abcXYZ019-._~!$&'()*+,;=:@/%"
targets = st.builds(
    lambda path, query: "/" + path + ("?" + query if query is not None else ""),
    st.text(alphabet=path_chars, max_size=20),
    st.none() | st.text(alphabet=path_chars + "?", max_size=20),
)
hosts = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}(:[0-9]{1,5})?", fullmatch=True)


@st.composite
def requests(draw) -> tuple[bytes, tuple]:
    """A valid request as bytes, and the message our reader should report."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]) | tokens.filter(lambda m: m != "CONNECT"))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    target = draw(targets)
    fields = [("Host", draw(hosts))] if version == "HTTP/1.1" or draw(st.booleans()) else []
    fields += draw(st.lists(st.tuples(field_names, field_values), max_size=6))
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1" else ["none", "length"]))
    trailers: list[tuple[str, str]] = []
    if framing == "none":
        body = b""
    elif framing == "length":
        fields.append(("Content-Length", str(len(body))))
    else:
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"]))))
        trailers = draw(st.lists(st.tuples(field_names, field_values), max_size=2))
    fields = draw(st.permutations(fields))
    head = f"{method} {target} {version}\r\n".encode("latin-1")
    for name, value in fields:
        head += f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1")
    raw = head + b"\r\n"
    if framing == "length":
        raw += body
    elif framing == "chunked":
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=4))))
        for a, b in zip([0] + cuts, cuts + [len(body)]):
            if b > a:
                extension = draw(st.sampled_from(["", ";a", ";a=b", ' ; n = "q v"']))
                raw += b"%x%s\r\n%s\r\n" % (b - a, extension.encode(), body[a:b])
        raw += encode_last_chunk(Headers(trailers))
    expected = (
        method, target, version, [(n.lower(), v) for n, v in fields], body, [(n.lower(), v) for n, v in trailers]
    )
    return raw, expected


INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b":", b",", b";", b"0", b"\xff", b"\x0b",
               b"chunked", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"Host: x\r\n", b"\r\n\r\n"]


@st.composite
def mutated_requests(draw) -> bytes:
    raw = bytearray(draw(requests())[0])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate-line"]))
        if action == "insert":
            raw[position:position] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del raw[position : position + draw(st.integers(1, 4))]
        elif action == "replace" and position < len(raw):
            raw[position] = draw(st.integers(0, 255))
        else:
            start = raw.rfind(b"\r\n", 0, position) + 2
            end = raw.find(b"\r\n", position)
            if 2 <= start < end:
                raw[start:start] = raw[start : end + 2]
    return bytes(raw)


# --------------------------------------------------------------------------- properties
@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=5), st.booleans())
def test_random_bytes_only_raise_protocol_errors(raw: bytes, splits: list[int], eof: bool) -> None:
    parse_ours(raw, splits, eof)


@SETTINGS
@given(requests(), st.lists(st.integers(0, 2000), max_size=8))
def test_valid_requests_are_accepted_whatever_the_split(request: tuple[bytes, tuple], splits: list[int]) -> None:
    raw, expected = request
    for messages, error in (parse_ours(raw), parse_ours(raw, splits), parse_ours(raw, list(range(len(raw))))):
        assert error is None, error
        assert messages == [expected]


@SETTINGS
@given(requests())
def test_h11_agrees_on_valid_requests(request: tuple[bytes, tuple]) -> None:
    raw, expected = request
    theirs = parse_h11(raw)
    if theirs is not None:  # h11 is stricter in a few corners (e.g. 1.0 with chunked trailers)
        assert normalised(theirs) == normalised(expected)


@SETTINGS
@given(mutated_requests(), st.lists(st.integers(0, 2000), max_size=5))
def test_mutated_requests_never_crash_and_split_does_not_matter(raw: bytes, splits: list[int]) -> None:
    whole = parse_ours(raw)
    split = parse_ours(raw, splits)
    assert whole[0] == split[0]
    assert (whole[1] is None) == (split[1] is None)
    if whole[1] is not None:
        assert whole[1].status == split[1].status


@SETTINGS
@given(mutated_requests())
def test_whenever_both_accept_a_mutated_request_h11_agrees(raw: bytes) -> None:
    messages, _ = parse_ours(raw)
    theirs = parse_h11(raw)
    if messages and theirs is not None:
        assert normalised(messages[0]) == normalised(theirs)


@SETTINGS
@given(requests())
def test_serialise_then_parse_is_the_identity(request: tuple[bytes, tuple]) -> None:
    raw, _ = request
    reader = RequestReader()
    reader.feed(raw)
    parsed = reader.next_event()
    again = RequestReader()
    again.feed(serialize_request_head(parsed))
    reparsed = again.next_event()
    assert (reparsed.method, reparsed.target, reparsed.version, list(reparsed.headers), reparsed.framing) == (
        parsed.method, parsed.target, parsed.version, list(parsed.headers), parsed.framing
    )


@SETTINGS
@given(st.binary(min_size=1, max_size=200))
def test_encode_chunk_round_trips_any_data(data: bytes) -> None:
    raw = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           + encode_chunk(data) + encode_chunk(b"") + encode_last_chunk())
    messages, error = parse_ours(raw)
    assert error is None and messages[0][4] == data
