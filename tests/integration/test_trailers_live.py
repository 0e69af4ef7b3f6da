"""Chunked trailers through a live proxy over real TLS: what may come late, and what may not.

``tests/unit/test_http1_forwarding.py`` proves ``prepare_trailers`` keeps and drops
the right fields of every row of ``tests/vectors/trailer_vectors.py``.  This module
proves the *proxy* applies it, in both directions, on real sockets:

* **to the origin**: a client sends a chunked request over TLS whose trailer section
  carries the row's fields, to a ``ProxyServer`` in front of an origin that records
  the raw bytes it received (``Origin(record_raw=True)``).  The request must still
  succeed (200, the whole body counted and hashed by the origin), and the origin's
  bytes, parsed as one strict chunked message, must hold exactly the row's safe
  trailer fields and none of the dropped ones, in the trailer or merged into the head;
* **to the client**: a raw socket backend (``tests.fakes.FakeBackend``) answers
  chunked with the row's trailer section, and the client reads the decrypted bytes
  the proxy sent: the same must hold for them.

RFC 9110 §6.5.1: "Many fields cannot be processed outside the header section because
their evaluation is necessary prior to receiving the content, such as those that
describe message framing, routing, authentication, request modifiers, response
controls, or content format", and "A recipient MUST NOT merge a trailer field into a
header section unless [its] definition explicitly permits [it]".  A proxy that passed
such a field on would hand it to any next hop that merges: a second Content-Length
(request smuggling), a late Host (re-routing), a late Authorization or Cookie
(authenticating after the fact).

The messages are read with a small strict parser written here (not the proxy's, and
not h11, which refuses some of these trailer fields outright): it checks every chunk
line, every field line and that nothing follows the message, so a test cannot pass
because a name merely appears somewhere in the bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import time
from dataclasses import dataclass

import pytest

from proxy import config as cfg
from tests.conftest import WWW, tls_connect
from tests.fakes import FakeBackend
from tests.vectors.trailer_vectors import TRAILER_VECTORS, TrailerVector
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

CHUNKS = (b"hello", b", ", b"trailers")
BODY = b"".join(CHUNKS)
READ_DEADLINE = 5.0


# --------------------------------------------------------------------------- a strict reader
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]+")  # the proxy re-chunks, so never a chunk extension


@dataclass
class Message:
    start_line: str
    headers: list[tuple[str, str]]  # field lines as sent: (name, value)
    body: bytes
    trailers: list[tuple[str, str]]  # the trailer section as sent: (name, value)

    def header(self, name: str) -> list[str]:
        return [value for n, value in self.headers if n.lower() == name]


def parse_fields(block: bytes) -> list[tuple[str, str]]:
    fields = []
    for line in block.split(b"\r\n") if block else ():
        name, colon, value = line.partition(b":")
        assert colon and TOKEN.fullmatch(name), f"not a field line: {line!r}"
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return fields


def parse_message(raw: bytes) -> Message | None:
    """One whole message from ``raw``, or None while it is incomplete.

    Fails (AssertionError) on anything but CRLF field lines, exactly one framing (a
    Content-Length, or Transfer-Encoding: chunked with bare hex chunk sizes), and on
    any byte after the message: whatever arrived is accounted for.
    """
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    start_line, _, field_block = raw[:head_end].partition(b"\r\n")
    headers = parse_fields(field_block)
    message = Message(start_line.decode("latin-1"), headers, b"", [])
    codings, lengths = message.header("transfer-encoding"), message.header("content-length")
    assert len(codings) + len(lengths) <= 1, f"more than one framing field: {headers}"
    at = head_end + 4
    if lengths:
        end = at + int(lengths[0])
        if len(raw) < end:
            return None
        message.body = raw[at:end]
        at = end
    elif codings:
        assert codings == ["chunked"], codings
        body = bytearray()
        while True:
            line_end = raw.find(b"\r\n", at)
            if line_end < 0:
                return None
            size_text = raw[at:line_end]
            assert CHUNK_SIZE.fullmatch(size_text), f"bad chunk-size line {size_text!r}"
            size, at = int(size_text, 16), line_end + 2
            if size == 0:
                break
            if len(raw) < at + size + 2:
                return None
            body += raw[at : at + size]
            assert raw[at + size : at + size + 2] == b"\r\n", "chunk data not followed by CRLF"
            at += size + 2
        message.body = bytes(body)
        if raw[at : at + 2] == b"\r\n":  # an empty trailer section
            at += 2
        else:
            section_end = raw.find(b"\r\n\r\n", at)
            if section_end < 0:
                return None
            message.trailers = parse_fields(raw[at:section_end])
            at = section_end + 4
    assert at == len(raw), f"bytes after the message: {raw[at:at + 200]!r}"
    return message


def read_message(sock: ssl.SSLSocket) -> Message:
    """Read one whole response from ``sock`` (bounded by ``READ_DEADLINE``)."""
    received = b""
    deadline = time.monotonic() + READ_DEADLINE
    while time.monotonic() < deadline:
        message = parse_message(received)
        if message is not None:
            return message
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        received += data
    raise AssertionError(f"no complete response: {received[:500]!r}")


# --------------------------------------------------------------------------- checks
def lower_fields(fields: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(name.lower(), value) for name, value in fields}


def assert_trailers_filtered(vector: TrailerVector, message: Message, sent: bytes) -> None:
    """The safe fields arrive exactly, in order; no dropped field arrives, nor merges into the head.

    ``sent`` is the whole message as its sender wrote it: a field line of the forwarded
    head that the sender put only in its trailer section was merged (RFC 9110 §6.5.1 ¶3).
    """
    assert message.trailers == list(vector.forwarded), (vector.id, message.trailers)
    arrived = {name.lower() for name, _ in message.trailers}
    assert not arrived & set(vector.dropped), f"{vector.id}: {sorted(arrived & set(vector.dropped))} passed"
    original = parse_message(sent)
    merged = lower_fields(message.headers) & (lower_fields(original.trailers) - lower_fields(original.headers))
    assert not merged, f"{vector.id}: trailer fields merged into the header section: {merged}"


def chunked_body() -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in CHUNKS) + b"0\r\n"


def _ids(vector: TrailerVector) -> str:
    return vector.id


# --------------------------------------------------------------------------- to the origin
@pytest.fixture
def live(origin_factory, proxy_factory):
    origin = origin_factory("web", record_raw=True)
    proxy = proxy_factory({"web": [origin.url]}, timeouts=cfg.Timeouts(header_read=3, body_read=3))
    return origin, proxy


@pytest.mark.parametrize("vector", TRAILER_VECTORS, ids=_ids)
def test_request_trailer_reaches_the_origin_filtered(vector: TrailerVector, live, pki) -> None:
    """A client's trailer that frames, routes or authenticates never reaches the origin.

    RFC 9110 §6.5.1: a sender "MUST NOT generate a trailer field unless the sender
    knows the corresponding header field name's definition permits the field to be
    sent in trailers"; forwarding is generating it again.  Dropping it prevents
    smuggling a second Content-Length, re-routing by a late Host and authenticating
    after the fact to any origin that merges trailers into the header section.
    """
    origin, proxy = live
    connection = b"Connection: %s\r\n" % vector.connection.encode() if vector.connection else b""
    request = (b"POST /upload HTTP/1.1\r\nHost: " + WWW.encode() + b"\r\nTransfer-Encoding: chunked\r\n"
               + connection + b"\r\n" + chunked_body() + vector.trailer + b"\r\n")
    with tls_connect(proxy.port, pki) as sock:
        sock.sendall(request)
        response = read_message(sock)

    assert response.start_line.startswith("HTTP/1.1 200 "), (response.start_line, response.body[:300])
    answer = json.loads(response.body)
    assert answer["body"] == {"length": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest()}, \
        "the body did not arrive whole"
    records = origin.raw_requests
    assert len(records) == 1, f"the origin received {len(records)} requests: {records}"
    received = parse_message(records[0])
    assert received is not None, f"the origin received a cut request: {records[0]!r}"
    assert received.start_line == "POST /upload HTTP/1.1" and received.body == BODY
    assert received.header("transfer-encoding") == ["chunked"] and received.header("host") == [WWW]
    assert_trailers_filtered(vector, received, request)


# --------------------------------------------------------------------------- to the client
def chunked_response(vector: TrailerVector) -> bytes:
    connection = b"Connection: %s\r\n" % vector.connection.encode() if vector.connection else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n" + connection
            + b"\r\n" + chunked_body() + vector.trailer + b"\r\n")


@pytest.mark.parametrize("vector", TRAILER_VECTORS, ids=_ids)
def test_response_trailer_reaches_the_client_filtered(vector: TrailerVector, pki, proxy_factory) -> None:
    """An origin's trailer that frames, authenticates or controls caching never reaches the client.

    RFC 9110 §6.5.1 forbids the same fields in a response's trailer section: "response
    controls, or content format" among them, and authentication (a late Set-Cookie
    fixes a session the header section never set).  A browser or cache behind the
    proxy that merged them would act on fields the proxy never checked.
    """
    def answer(conn) -> None:
        if conn.read_request() is not None:
            conn.send(chunked_response(vector))

    with FakeBackend(answer, name=vector.id) as backend:
        proxy = proxy_factory({"web": [backend.url]}, timeouts=cfg.Timeouts(backend_read=5))
        with tls_connect(proxy.port, pki) as sock:
            sock.sendall(b"GET /trailers HTTP/1.1\r\nHost: " + WWW.encode() + b"\r\nTE: trailers\r\n\r\n")
            response = read_message(sock)

    assert response.start_line.startswith("HTTP/1.1 200 "), response.start_line
    assert response.header("transfer-encoding") == ["chunked"] and response.body == BODY
    assert_trailers_filtered(vector, response, chunked_response(vector))
