"""RFC 9112 §6.3: the body-length decision for requests and responses."""

from __future__ import annotations

import pytest

from proxy.errors import ContentTooLarge, NotImplementedByProxy, ProtocolError
from proxy.http1 import (
    Framing,
    Headers,
    parse_content_length,
    parse_transfer_coding,
    persistent_connection,
    request_framing,
    response_framing,
)

MAX = 1000


def h(*lines: str) -> Headers:
    return Headers([tuple(line.split(": ", 1)) for line in lines])  # type: ignore[misc]


def test_framing_values_are_checked() -> None:
    assert Framing("length", 5).length == 5
    with pytest.raises(ValueError):
        Framing("gzip")
    with pytest.raises(ValueError):
        Framing("length")
    with pytest.raises(ValueError):
        Framing("chunked", 5)


@pytest.mark.parametrize("value, length", [("0", 0), ("5", 5), ("007", 7), ("0" * 100 + "1", 1),
                                           ("999999999999999999", 999999999999999999)])
def test_content_length_accepts_1_digit(value: str, length: int) -> None:
    assert parse_content_length([value]) == length


@pytest.mark.parametrize("value", ["", " 5", "+5", "-5", "0x5", "5 5", "5,5", "5.0", "1e3", "\u00b2", "\u0665", "five"])
def test_content_length_refuses_anything_else(value: str) -> None:
    with pytest.raises(ProtocolError, match="1\\*DIGIT"):
        parse_content_length([value])


def test_content_length_refuses_several_lines_even_identical() -> None:
    with pytest.raises(ProtocolError, match="more than one"):
        parse_content_length(["5", "5"])


def test_content_length_with_too_many_digits_is_too_large_not_a_crash() -> None:
    with pytest.raises(ContentTooLarge):
        parse_content_length(["9" * 5000])  # past CPython's int() digit limit


@pytest.mark.parametrize(
    "values, codings",
    [(["chunked"], ["chunked"]), (["Chunked"], ["chunked"]), (["gzip, CHUNKED"], ["gzip", "chunked"]),
     (["gzip", "chunked"], ["gzip", "chunked"]), (["\tgzip ,chunked "], ["gzip", "chunked"])],
)
def test_transfer_codings(values: list[str], codings: list[str]) -> None:
    assert parse_transfer_coding(values) == codings


@pytest.mark.parametrize(
    "values",
    [[""], ["chunked,"], [",chunked"], ["gzip,,chunked"], ['"chunked"'], ["chunked;x=1"], ["chun ked"],
     ["chunked\u00ff"], ["chunked, chunked"], ["chunked", "CHUNKED"]],
)
def test_transfer_codings_refused(values: list[str]) -> None:
    with pytest.raises(ProtocolError):
        parse_transfer_coding(values)


# --------------------------------------------------------------------------- requests
@pytest.mark.parametrize(
    "method, version, headers, framing",
    [
        ("GET", "HTTP/1.1", h(), Framing("none")),
        ("POST", "HTTP/1.1", h(), Framing("none")),  # rule 7: no framing header -> no body
        ("POST", "HTTP/1.1", h("Content-Length: 0"), Framing("length", 0)),
        ("POST", "HTTP/1.1", h("Content-Length: 10"), Framing("length", 10)),
        ("POST", "HTTP/1.0", h("Content-Length: 10"), Framing("length", 10)),
        ("POST", "HTTP/1.1", h("Transfer-Encoding: chunked"), Framing("chunked")),
        ("POST", "HTTP/1.1", h("Transfer-Encoding: Chunked"), Framing("chunked")),
        ("CONNECT", "HTTP/1.1", h(), Framing("tunnel")),
        ("CONNECT", "HTTP/1.1", h("Content-Length: 0"), Framing("tunnel")),
    ],
)
def test_request_framing(method: str, version: str, headers: Headers, framing: Framing) -> None:
    assert request_framing(method, version, headers, MAX) == framing


@pytest.mark.parametrize(
    "method, version, headers, error",
    [
        ("POST", "HTTP/1.1", h("Content-Length: 1", "Transfer-Encoding: chunked"), ProtocolError),
        ("POST", "HTTP/1.0", h("Transfer-Encoding: chunked"), ProtocolError),
        ("POST", "HTTP/1.1", h("Transfer-Encoding: gzip"), ProtocolError),
        ("POST", "HTTP/1.1", h("Transfer-Encoding: chunked, gzip"), ProtocolError),
        ("POST", "HTTP/1.1", h("Transfer-Encoding: gzip, chunked"), NotImplementedByProxy),
        ("POST", "HTTP/1.1", h("Content-Length: 1001"), ContentTooLarge),
        ("CONNECT", "HTTP/1.1", h("Content-Length: 5"), ProtocolError),
        ("CONNECT", "HTTP/1.1", h("Transfer-Encoding: chunked"), ProtocolError),
    ],
)
def test_request_framing_errors(method: str, version: str, headers: Headers, error: type) -> None:
    with pytest.raises(error) as info:
        request_framing(method, version, headers, MAX)
    assert type(info.value) is error
    assert info.value.status == {ProtocolError: 400, NotImplementedByProxy: 501, ContentTooLarge: 413}[error]


# --------------------------------------------------------------------------- responses
@pytest.mark.parametrize(
    "status, method, headers, kind",
    [
        (200, "HEAD", h("Content-Length: 10"), "none"),
        (200, "HEAD", h("Transfer-Encoding: chunked"), "none"),
        (100, "GET", h(), "none"),
        (103, "GET", h("Content-Length: 5"), "none"),
        (101, "GET", h(), "tunnel"),
        (204, "GET", h(), "none"),
        (304, "GET", h("Content-Length: 10"), "none"),
        (200, "CONNECT", h(), "tunnel"),
        (299, "CONNECT", h("Content-Length: 3"), "tunnel"),
        (407, "CONNECT", h("Content-Length: 3"), "length"),
        (200, "GET", h("Transfer-Encoding: chunked"), "chunked"),
        (200, "GET", h("Transfer-Encoding: gzip, chunked"), "chunked"),
        (200, "GET", h("Transfer-Encoding: gzip"), "close"),
        (200, "GET", h("Content-Length: 3"), "length"),
        (200, "GET", h(), "close"),
        (500, "POST", h(), "close"),
    ],
)
def test_response_framing(status: int, method: str, headers: Headers, kind: str) -> None:
    assert response_framing(status, "HTTP/1.1", headers, method).kind == kind


@pytest.mark.parametrize(
    "status, version, headers",
    [
        (200, "HTTP/1.1", h("Content-Length: 1", "Transfer-Encoding: chunked")),
        (200, "HTTP/1.0", h("Transfer-Encoding: chunked")),
        (200, "HTTP/1.1", h("Content-Length: 1", "Content-Length: 1")),
        (200, "HTTP/1.1", h("Content-Length: x")),
        (304, "HTTP/1.1", h("Content-Length: x")),  # checked even without a body
        (204, "HTTP/1.1", h("Transfer-Encoding: chunked, chunked")),
    ],
)
def test_response_framing_errors(status: int, version: str, headers: Headers) -> None:
    with pytest.raises(ProtocolError):
        response_framing(status, version, headers, "GET")


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(
    "version, headers, persistent",
    [
        ("HTTP/1.1", h(), True),
        ("HTTP/1.1", h("Connection: close"), False),
        ("HTTP/1.1", h("Connection: Upgrade, CLOSE"), False),
        ("HTTP/1.1", h("Connection: keep-alive"), True),
        ("HTTP/1.0", h(), False),
        ("HTTP/1.0", h("Connection: Keep-Alive"), True),
        ("HTTP/1.0", h("Connection: keep-alive, close"), False),
    ],
)
def test_persistent_connection(version: str, headers: Headers, persistent: bool) -> None:
    assert persistent_connection(version, headers) is persistent
