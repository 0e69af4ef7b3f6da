"""Exercise 3: terminate TLS with a certificate chosen by SNI.  This is your file.

Run it:             .venv/bin/python lab/ex3_tls_sni/student.py      (serves until Ctrl-C)
Check your work:    .venv/bin/python -m lab.check 3        (or: make check LAB=3)

Read README.md in this folder first.  Certificates come from ``proxy.pki`` and every
SSLContext is built by ``proxy.tls.contexts.server_context`` (the project's one
place for TLS settings); your part is the plumbing around them.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from proxy.pki import DemoPKI, ensure_demo_certs
from proxy.tls.contexts import CertKey, server_context  # noqa: F401  (you will need them)

NAMES = ("www.example.test", "api.example.test")  # the first one is the default
HELLO = b"hello, TLS\n"


# Step 1 ------------------------------------------------------------------------------
def handle(conn: socket.socket) -> None:
    """Read one request head from ``conn`` and answer 200 with HELLO, then return.

    ``conn`` is a plain socket in step 1 and a TLS socket from step 5 on: the same
    code serves both, which is the whole idea of TLS termination.
    """
    # TODO step 1: recv until the head is complete (or the client closed), then sendall
    # b"HTTP/1.1 200 OK\r\nContent-Length: ...\r\nConnection: close\r\n\r\n" + HELLO.
    raise NotImplementedError("step 1: handle")


# Step 2 ------------------------------------------------------------------------------
def build_contexts(pki: DemoPKI) -> dict[str, ssl.SSLContext]:
    """One server context per name in NAMES, each holding that name's certificate.

    ``pki.files(name)`` gives (certificate file, key file); ``server_context`` takes a
    list of ``CertKey(cert, key)``.
    """
    # TODO step 2
    raise NotImplementedError("step 2: build_contexts")


# Step 3 ------------------------------------------------------------------------------
def choose_context(server_name: str | None, contexts: dict[str, ssl.SSLContext]) -> ssl.SSLContext | None:
    """The context for the name the client asked for; None to keep the default.

    ``server_name`` is None when the client sent no SNI.  Names are case-insensitive.
    """
    # TODO step 3
    raise NotImplementedError("step 3: choose_context")


# Step 4 ------------------------------------------------------------------------------
def make_server_context(contexts: dict[str, ssl.SSLContext]) -> ssl.SSLContext:
    """The context to wrap every connection with: the default certificate (NAMES[0]),
    plus an ``sni_callback`` that switches to the right one during the handshake.

    OpenSSL calls ``callback(sslobj, server_name, context)`` when the ClientHello has
    arrived and before the server answers; setting ``sslobj.context`` there changes
    the certificate the server will send.
    """
    # TODO step 4
    raise NotImplementedError("step 4: make_server_context")


# Step 5 ------------------------------------------------------------------------------
def serve(listener: socket.socket, context: ssl.SSLContext, connections: int = 1) -> None:
    """Accept ``connections`` clients one after another: handshake, handle, close.

    A client whose handshake fails (ssl.SSLError, OSError) is reported and dropped;
    the loop goes on with the next one.  Give each accepted socket a timeout first.
    """
    # TODO step 5
    raise NotImplementedError("step 5: serve")


def demo() -> None:
    """Serve on a loopback port until Ctrl-C; try it with curl."""
    pki = ensure_demo_certs(Path(__file__).resolve().parents[2] / "build" / "lab-certs")
    context = make_server_context(build_contexts(pki))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        print(f"serving https on 127.0.0.1:{port}; in another terminal try:")
        for name in NAMES:
            print(f"  curl -v --cacert {pki.ca} --resolve {name}:{port}:127.0.0.1 https://{name}:{port}/")
        try:
            serve(listener, context, connections=1_000_000)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 3")
