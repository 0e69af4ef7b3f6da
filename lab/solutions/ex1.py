"""Exercise 1, reference solution: parse a request head.

The student's file is ``lab/ex1_parse_request/student.py``; this is the same file
with every TODO done.  Check it with ``python -m lab.check 1 --solution``.
"""

from __future__ import annotations

import re
import socket

from proxy.errors import IncompleteMessage, ProtocolError
from proxy.http1 import Headers, Request

# RFC 9110 §5.6.2: token = 1*tchar, the grammar of methods and field names.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# Step 1 ------------------------------------------------------------------------------
def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest): the head without the empty line that ends it, and the bytes after it.

    None while the empty line (CRLF CRLF) has not arrived yet.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    return buffer[:end], buffer[end + 4:]


# Step 2 ------------------------------------------------------------------------------
def parse_request_line(line: str) -> tuple[str, str, str]:
    """``method SP request-target SP HTTP-version`` (RFC 9112 §3) -> the three parts."""
    # Single SPs, as the proxy reads it; RFC 9112 §3 would also allow splitting on any
    # whitespace (MAY), which the checker accepts with a note.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ProtocolError(f"request-line is not method SP target SP version: {line[:60]!r}")
    method, target, version = parts
    if not TOKEN.fullmatch(method):
        raise ProtocolError(f"method {method!r} is not a token (RFC 9110 §9.1)")
    # HTTP/1.2 is refused like the proxy's 505; RFC 9110 §6.2 says a recipient SHOULD read
    # it as 1.1, and the checker accepts that too.
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"unsupported version {version!r}")
    return method, target, version


# Step 3 ------------------------------------------------------------------------------
def parse_field_line(line: str) -> tuple[str, str]:
    """``field-name ":" OWS field-value OWS`` (RFC 9112 §5) -> (name, value)."""
    name, colon, value = line.partition(":")
    if not colon:
        raise ProtocolError(f"field line without a colon: {line[:60]!r}")
    if not TOKEN.fullmatch(name):
        # Catches "Host : x" (RFC 9112 §5.1), " folded" (obs-fold, §5.2) and "" too.
        raise ProtocolError(f"field name {name!r} is not a token")
    return name, value.strip(" \t")


# Step 4 ------------------------------------------------------------------------------
def parse_request_head(head: bytes) -> Request:
    """A whole head (as split_head returns it) -> a proxy.http1.Request."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    # Refusing a bare LF is stricter than RFC 9112 §2.2 (a recipient MAY take it as a line
    # end); for a bare CR and for NUL the RFC allows refusing or replacing with SP.
    if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
        raise ProtocolError("bare CR or LF: lines must end in CRLF (RFC 9112 §2.2)")
    if any((c < " " and c not in "\t\r\n") or c == "\x7f" for c in text):
        raise ProtocolError("control character in the head (RFC 9110 §5.5)")
    method, target, version = parse_request_line(lines[0])
    headers = Headers(parse_field_line(line) for line in lines[1:])
    hosts = headers.get_all("host")
    if len(hosts) > 1:
        raise ProtocolError("more than one Host (RFC 9112 §3.2)")
    if not hosts and version == "HTTP/1.1":
        raise ProtocolError("HTTP/1.1 request without Host (RFC 9112 §3.2)")
    return Request(method, target, version, headers)


# Step 5 ------------------------------------------------------------------------------
def read_request(sock: socket.socket) -> tuple[Request, bytes]:
    """Read from ``sock`` until a whole head is there: (the request, bytes read past it)."""
    buffer = b""
    while (split := split_head(buffer)) is None:
        data = sock.recv(65536)
        if not data:
            raise IncompleteMessage("the client closed the connection in the middle of a head")
        buffer += data
    head, rest = split
    return parse_request_head(head), rest


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
    demo()
