"""The lab client: one recognisable request, over TLS or not, through a tunnel or not.

Theory of operation
-------------------
A capture is only useful if you know what to look for in it.  This client sends one
request whose every part carries a *marker*, a string that appears nowhere else, so
that a program (``whosees``) or a student with ``grep`` can tell which parts of the
request crossed which wire in the clear::

    POST /account/statement?id=path-marker-7 HTTP/1.1      <- the path
    Host: www.example.test                                  <- the Host
    X-Lab-Secret: header-marker-7                           <- a header
    Content-Length: 18
    Connection: close

    card=body-marker-7                                      <- the body

It speaks TLS with ``ssl.create_default_context()``, the one context that reads the
``SSLKEYLOGFILE`` environment variable, so the same variable that makes curl or
Firefox log their secrets makes this client log its own (NSS key log format).
``--tls 1.2`` caps the version, ``--resumed`` makes a second connection that resumes
the first one's session (a ticket), ``--tunnel HOST:PORT`` first asks a forward proxy
for a ``CONNECT`` tunnel, ``--plain`` speaks HTTP without TLS, ``--http2`` offers ALPN
``h2`` only and sends the same markers in HTTP/2 frames (``h2client.py``).

It prints one JSON document: for each connection, what was sent, the response, the
negotiated TLS version, cipher and ALPN protocol, whether the session was resumed, and the
certificate the server showed (PEM).  Its first key share is OpenSSL's choice: an
OpenSSL configuration file named in ``OPENSSL_CONF`` can change the groups it offers
(``course.capture.setups.HRR_OPENSSL_CONF``, for a HelloRetryRequest).  ``--source`` binds the client to an address,
which on loopback makes the client's address (127.0.0.2) distinguishable from the
proxy's (127.0.0.1).  The program is started by ``course.capture.run``, on loopback or
inside the ``client`` namespace of the lab network.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import sys
from dataclasses import dataclass

from course.clients import read_to_eof

TIMEOUT = 10.0
SERVER_NAME = "www.example.test"
PATH = "/account/statement?id=path-marker-7"
SECRET_HEADER = ("X-Lab-Secret", "header-marker-7")
BODY = b"card=body-marker-7"


@dataclass(frozen=True)
class Markers:
    """The strings that identify each part of the lab request in captured bytes."""

    host: str = SERVER_NAME
    path: str = PATH
    header: str = f"{SECRET_HEADER[0]}: {SECRET_HEADER[1]}"
    body: str = BODY.decode()


def lab_request(host: str = SERVER_NAME) -> bytes:
    """The exact bytes the client sends (one request; the server closes afterwards)."""
    return (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\n{SECRET_HEADER[0]}: {SECRET_HEADER[1]}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(BODY)}\r\n"
            f"Connection: close\r\n\r\n").encode() + BODY


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _connect(address: tuple[str, int], source: str | None) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT, source_address=(source, 0) if source else None)
    # As curl and browsers do: without it Nagle holds the request back until the Finished
    # before it is acknowledged, and a delayed ACK turns that into up to 40 ms (FACTS.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tunnel(sock: socket.socket, target: str) -> bytes:
    """RFC 9110 §9.3.6: CONNECT host:port; a 2xx reply turns the connection into a tunnel."""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)           # byte by byte: what follows the head is the origin's TLS
        if not chunk:
            raise ConnectionError(f"the proxy closed the connection after CONNECT {target}")
        head += chunk
    status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/1.") else b"?"
    if not status.startswith(b"2"):
        raise ConnectionError(f"CONNECT {target} refused: {head.splitlines()[0].decode(errors='replace')}")
    return head


def exchange(args, context: ssl.SSLContext | None, session: ssl.SSLSession | None) -> tuple[dict, object]:
    """One connection: connect (tunnel), handshake, request, read to EOF, close."""
    sock = _connect(parse_address(args.connect), args.source)
    report: dict = {"local": "%s:%d" % sock.getsockname()[:2]}
    if args.tunnel:
        report["connect_response"] = _tunnel(sock, args.tunnel).decode("latin-1")
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=args.server_name, session=session)
        report.update(version=sock.version(), cipher=sock.cipher()[0], session_reused=sock.session_reused,
                      alpn=sock.selected_alpn_protocol(),
                      certificate=ssl.DER_cert_to_PEM_cert(sock.getpeercert(binary_form=True)))
    if args.http2:
        from course.capture import h2client

        if report.get("alpn") != "h2":
            raise ConnectionError(f"the server chose ALPN {report.get('alpn')!r}, not h2 (RFC 9113 §3.2)")
        report.update(h2client.exchange(sock, args.server_name, PATH, SECRET_HEADER, BODY))
        return report, _close(sock, context)
    request = lab_request(args.server_name)
    sock.sendall(request)
    response = read_to_eof(sock)
    new_session = _close(sock, context)
    report.update(request=base64.b64encode(request).decode(), response=base64.b64encode(response).decode())
    return report, new_session


def _close(sock: socket.socket, context: ssl.SSLContext | None) -> ssl.SSLSession | None:
    """close_notify (so captures end cleanly) and close; the session, for resumption."""
    new_session = sock.session if context is not None else None
    if context is not None:
        try:
            sock.unwrap()
        except (OSError, ssl.SSLError):
            pass
    sock.close()
    return new_session


def client_context(args) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=args.ca)   # reads SSLKEYLOGFILE
    if args.tls == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    elif args.tls == "1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"] if args.http2 else ["http/1.1"])
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.capture.client", description="the lab client")
    parser.add_argument("--connect", required=True, metavar="HOST:PORT", help="where to connect")
    parser.add_argument("--server-name", default=SERVER_NAME, help="SNI and Host (default %(default)s)")
    parser.add_argument("--ca", help="CA certificate that signs the server's")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    parser.add_argument("--plain", action="store_true", help="HTTP without TLS")
    parser.add_argument("--resumed", action="store_true", help="a second connection resuming the session")
    parser.add_argument("--tunnel", metavar="HOST:PORT", help="CONNECT to this target through --connect")
    parser.add_argument("--source", metavar="ADDRESS", help="bind to this local address")
    parser.add_argument("--http2", action="store_true", help="offer ALPN h2 only and speak HTTP/2 (h2client.py)")
    args = parser.parse_args(argv)
    if args.http2:       # h2 takes a while to import: before connecting, not between handshake and request
        import course.capture.h2client  # noqa: F401
    context = None if args.plain else client_context(args)
    connections, session = [], None
    for _ in range(2 if args.resumed and context else 1):
        report, session = exchange(args, context, session)
        connections.append(report)
    json.dump({"connections": connections}, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
