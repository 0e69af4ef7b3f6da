"""Exercise 1: parse a request head.  This is your file: fill in the TODOs, step by step.

Run it:             .venv/bin/python lab/ex1_parse_request/student.py
Check your work:    .venv/bin/python -m lab.check 1        (or: make check LAB=1)

Read README.md in this folder first.  Import what you need from the ``proxy``
package (``Headers``, ``Request``, ``ProtocolError`` are imported for you); do not
copy its code: the point is to write your own small parser and then compare it
with ``proxy/http1/``.
"""

from __future__ import annotations

import socket

from proxy.errors import IncompleteMessage, ProtocolError  # noqa: F401  (you will need them)
from proxy.http1 import Headers, Request  # noqa: F401


# Step 1 ------------------------------------------------------------------------------
def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest): the head without the empty line that ends it, and the bytes after it.

    None while the empty line (CRLF CRLF) has not arrived yet.
    """
    # TODO step 1: find b"\r\n\r\n" and cut the buffer there.
    raise NotImplementedError("step 1: split_head")


# Step 2 ------------------------------------------------------------------------------
def parse_request_line(line: str) -> tuple[str, str, str]:
    """``method SP request-target SP HTTP-version`` (RFC 9112 §3) -> the three parts.

    Raise ProtocolError unless there are exactly three non-empty parts separated by
    single spaces, the method is a token and the version is HTTP/1.1 or HTTP/1.0.
    """
    # TODO step 2
    raise NotImplementedError("step 2: parse_request_line")


# Step 3 ------------------------------------------------------------------------------
def parse_field_line(line: str) -> tuple[str, str]:
    """``field-name ":" OWS field-value OWS`` (RFC 9112 §5) -> (name, value).

    Keep the name as spelled; strip spaces and tabs around the value.  Raise
    ProtocolError for a missing colon, a name that is not a token, whitespace before
    the colon, or a line that starts with whitespace (obs-fold).
    """
    # TODO step 3
    raise NotImplementedError("step 3: parse_field_line")


# Step 4 ------------------------------------------------------------------------------
def parse_request_head(head: bytes) -> Request:
    """A whole head (as split_head returns it) -> a proxy.http1.Request.

    Decode as latin-1, refuse a bare CR or bare LF and control characters, split on
    CRLF, parse the request-line and the field lines, and check Host (exactly one in
    HTTP/1.1, at most one in HTTP/1.0).  Build the result with
    ``Request(method, target, version, Headers(list_of_name_value_pairs))``.
    """
    # TODO step 4
    raise NotImplementedError("step 4: parse_request_head")


# Step 5 ------------------------------------------------------------------------------
def read_request(sock: socket.socket) -> tuple[Request, bytes]:
    """Read from ``sock`` until a whole head is there: (the request, bytes read past it).

    The head may arrive in many pieces.  If the peer closes first (``recv`` returns
    b""), raise IncompleteMessage (a ProtocolError).
    """
    # TODO step 5: the drive loop: recv, append, split_head, repeat.
    raise NotImplementedError("step 5: read_request")


def demo() -> None:
    """What running this file shows; extend it as you go."""
    data = b"GET /hello?x=1 HTTP/1.1\r\nHost: www.example.test\r\nAccept: */*\r\n\r\nbody"
    print("step 1:", split_head(data))
    print("step 2:", parse_request_line("GET /hello?x=1 HTTP/1.1"))
    print("step 3:", parse_field_line("Accept:   */*  "))
    head, rest = split_head(data)
    request = parse_request_head(head)
    print("step 4:", request.method, request.target, request.version, list(request.headers))
    client, server = socket.socketpair()
    with client, server:
        client.sendall(data[:10])
        client.sendall(data[10:])
        print("step 5:", read_request(server))


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 1")
