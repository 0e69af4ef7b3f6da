"""Exercise 3, reference solution: terminate TLS with a certificate chosen by SNI.

The student's file is ``lab/ex3_tls_sni/student.py``; this is the same file with
every TODO done.  Check it with ``python -m lab.check 3 --solution``.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from proxy.pki import DemoPKI, ensure_demo_certs
from proxy.tls.contexts import CertKey, server_context

NAMES = ("www.example.test", "api.example.test")  # the first one is the default
HELLO = b"hello, TLS\n"


# Step 1 ------------------------------------------------------------------------------
def handle(conn: socket.socket) -> None:
    """Read one request head from ``conn`` and answer 200 with HELLO, then return."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(65536)
        if not data:
            return  # the client went away before asking anything
        head += data
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(HELLO), HELLO))


# Step 2 ------------------------------------------------------------------------------
def build_contexts(pki: DemoPKI) -> dict[str, ssl.SSLContext]:
    """One server context per name in NAMES, each holding that name's certificate."""
    return {name: server_context([CertKey(*pki.files(name))]) for name in NAMES}


# Step 3 ------------------------------------------------------------------------------
def choose_context(server_name: str | None, contexts: dict[str, ssl.SSLContext]) -> ssl.SSLContext | None:
    """The context for the name the client asked for; None to keep the default."""
    if server_name is None:
        return None
    return contexts.get(server_name.lower())


# Step 4 ------------------------------------------------------------------------------
def make_server_context(contexts: dict[str, ssl.SSLContext]) -> ssl.SSLContext:
    """The context to wrap every connection with: the default certificate, plus a
    callback that switches to the right one during the handshake."""
    default = contexts[NAMES[0]]

    def sni_callback(sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        chosen = choose_context(server_name, contexts)
        if chosen is not None:
            sslobj.context = chosen

    default.sni_callback = sni_callback
    return default


# Step 5 ------------------------------------------------------------------------------
def serve(listener: socket.socket, context: ssl.SSLContext, connections: int = 1) -> None:
    """Accept ``connections`` clients one after another: handshake, handle, close."""
    for _ in range(connections):
        conn, _address = listener.accept()
        conn.settimeout(5)  # a client that stalls mid-handshake must not block the loop
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                handle(tls)
        except (ssl.SSLError, OSError) as error:
            print(f"handshake or connection failed: {error}")
        finally:
            conn.close()


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
    demo()
