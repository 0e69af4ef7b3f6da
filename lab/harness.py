"""The small servers, clients and relays that the exercises plug the student's code into.

Theory of operation
-------------------
An exercise asks for one piece of a proxy (a function, a class); the rest of the
proxy around it is here, built from the ``proxy`` package, so that the piece can be
tried on real sockets both by the student (each ``student.py`` runs a demo with
these) and by the checkers (``lab/checks``).  Everything listens on 127.0.0.1 port 0
and every socket has a timeout.

=========================  ==================================================  ========
``TinyForwarder``          client ──HTTP──▶ forwarder ──HTTP──▶ origin, with   exercise 2
                           the student's ``rewrite(request, client_ip)`` in
                           the middle
``https_get``              one HTTPS request to 127.0.0.1 with a chosen SNI;   3, 4
                           returns the status, the body and the certificate's
                           names
``capture_client_hello``   the first flight Python's ``ssl`` sends, read on a  5
                           loopback listener
``record_tls13_exchange``  client ══TLS 1.3══▶ relay ══▶ server with a key     6
                           log; the relay keeps every byte of each direction
=========================  ==================================================  ========

The HTTPS client is the notebooks' (``course.clients.https_get``) given the lab's
client context, and the relay is ``course.capture.recorder.RecordingRelay``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from course import clients
from proxy import http1
from course.capture.recorder import RecordingRelay
from proxy.drive import next_event
from proxy.transport import Transport
from proxy.errors import BadGateway, render_error
from proxy.http1.framing import request_framing
from proxy.tls.clienthello import NEED_DATA as HELLO_NEED_DATA, ClientHelloReader
from proxy.tls.contexts import CertKey, client_context, server_context

TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- exercise 2
class TinyForwarder:
    """The smallest forwarding proxy that an exercise can plug a rewrite function into.

    For each client connection (one request each): read the request head with
    ``proxy.http1.RequestReader``; ``rewrite(request, client_ip)`` gives the head to
    send; send it to the origin, then the body framed the way *that* head says (as
    the origin will read it); relay the response back and close.  Errors are kept in
    ``errors`` for whoever drives the forwarder.
    """

    def __init__(self, rewrite: Callable[[http1.Request, str], http1.Request], origin: tuple[str, int]):
        self.rewrite = rewrite
        self.origin = origin
        self.errors: list[BaseException] = []
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.05)  # how often the accept loop looks at `stopping`
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, name="tiny-forwarder", daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(TIMEOUT)
            with client:
                self.responding = False
                try:
                    self._forward(client, address[0])
                except BaseException as error:  # kept for the caller; the client gets a 502
                    self.errors.append(error)
                    if not self.responding:
                        self._answer_502(client, error)

    def _forward(self, client: socket.socket, client_ip: str) -> None:
        reader = http1.RequestReader()
        client_side = Transport(client)
        request = next_event(reader, client_side, timeout=TIMEOUT)
        if not isinstance(request, http1.Request):
            return
        upstream = self.rewrite(request, client_ip)
        if not isinstance(upstream, http1.Request):
            raise TypeError(f"rewrite returned {type(upstream).__name__}, not a proxy.http1.Request")
        framing = request_framing(upstream.method, upstream.version, upstream.headers, http1.Limits().max_body_size)
        with socket.create_connection(self.origin, timeout=TIMEOUT) as origin:
            origin.sendall(http1.serialize_request_head(upstream))
            while True:  # the body, as the origin will read it
                event = next_event(reader, client_side, timeout=TIMEOUT)
                if isinstance(event, http1.EndOfMessage):
                    if framing.kind == "chunked":
                        origin.sendall(http1.encode_last_chunk())
                    break
                if framing.kind == "length":
                    origin.sendall(event.data)
                elif framing.kind == "chunked":
                    origin.sendall(http1.encode_chunk(event.data))
                # framing "none": the head promised no body, so the origin gets none
            self._relay_response(origin, client, request, upstream.method)

    def _relay_response(self, origin: socket.socket, client: socket.socket, request: http1.Request,
                        method: str) -> None:
        reader = http1.ResponseReader()
        reader.expect_response_to(method)
        origin_side = Transport(origin)
        response = next_event(reader, origin_side, timeout=TIMEOUT)
        out, mode = http1.prepare_downstream_response(response, client_version=request.version,
                                                      request_method=request.method)
        out.headers.set("Connection", "close")  # one request per connection
        self.responding = True
        client.sendall(http1.serialize_response_head(out))
        while not isinstance(event := next_event(reader, origin_side, timeout=TIMEOUT),
                             http1.EndOfMessage):
            client.sendall(http1.encode_chunk(event.data) if mode == "chunked" else event.data)
        if mode == "chunked":
            client.sendall(http1.encode_last_chunk())

    @staticmethod
    def _answer_502(client: socket.socket, error: BaseException) -> None:
        try:
            client.sendall(render_error(BadGateway(f"the forwarder failed: {type(error).__name__}: {error}")))
        except OSError:
            pass

    def raise_first_error(self) -> None:
        """Re-raise the first error a forwarded request met (the real cause behind a 502)."""
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(TIMEOUT)
        self.listener.close()

    def __enter__(self) -> TinyForwarder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def http_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
                 host: str = LOOPBACK) -> tuple[int, bytes]:
    """One plain HTTP/1.1 request with ``http.client`` (a real, independent client)."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --------------------------------------------------------------------------- exercises 3 and 4
@dataclass(frozen=True)
class HTTPSReply:
    status: int
    body: bytes
    certificate_names: tuple[str, ...]  # the DNS names in the certificate the server sent
    tls_version: str | None


def https_get(port: int, *, ca: str | Path, server_name: str | None, path: str = "/",
              verify_name: bool = True) -> HTTPSReply:
    """GET ``path`` over TLS from 127.0.0.1:``port``, sending ``server_name`` as SNI.

    The certificate chain is always verified against ``ca``; ``verify_name=False``
    skips only the host-name match, to look at the certificate a server falls back to
    for a name it does not serve (or when no SNI is sent).
    """
    context = client_context(ca=str(ca), keylog="")
    if not verify_name or server_name is None:
        context.check_hostname = False
    host = f"{server_name or LOOPBACK}:{port}"  # as curl sends it for https://NAME:PORT/
    reply = clients.https_get((LOOPBACK, port), server_name, path, context=context, timeout=TIMEOUT,
                              headers={"Host": host, "Connection": "close"})
    return HTTPSReply(reply.status, reply.body, reply.tls.names, reply.tls.version)


# --------------------------------------------------------------------------- exercise 5
def capture_client_hello(server_name: str | None, alpn: tuple[str, ...] = ("http/1.1",)) -> bytes:
    """The first flight (record headers included) that Python's ``ssl`` sends for ``server_name``.

    A loopback listener reads until ``proxy.tls.clienthello.ClientHelloReader`` holds a
    whole ClientHello, then hangs up; the client's handshake then fails, as intended.
    """
    context = client_context(verify=False, alpn=list(alpn), keylog="")
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(TIMEOUT)

        def client() -> None:
            with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as sock:
                try:
                    context.wrap_socket(sock, server_hostname=server_name)
                except (ssl.SSLError, OSError):
                    pass  # the listener hung up after the hello

        thread = threading.Thread(target=client, name="hello-client", daemon=True)
        thread.start()
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            reader = ClientHelloReader()
            next_event(reader, Transport(conn), timeout=TIMEOUT, need_data=HELLO_NEED_DATA)
        thread.join(TIMEOUT)
        return reader.raw


# --------------------------------------------------------------------------- exercise 6
@dataclass(frozen=True)
class Recording:
    """One TLS 1.3 connection as a capture holds it, plus the key log that opens it."""

    key_log: str  # NSS key log lines written by the server (SSLContext.keylog_filename)
    client_bytes: bytes  # everything the client sent, record headers included
    server_bytes: bytes  # everything the server sent
    cipher: str  # the negotiated suite, e.g. "TLS_AES_256_GCM_SHA384"
    request: bytes  # the plaintext the client sent
    response: bytes  # the plaintext the server sent


DEFAULT_REQUEST = b"GET /secret HTTP/1.1\r\nHost: www.example.test\r\nAuthorization: Bearer lab-6\r\n\r\n"
DEFAULT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\nonly the ends see me"


def record_tls13_exchange(pki, directory: str | Path, *, request: bytes = DEFAULT_REQUEST,
                          response: bytes = DEFAULT_RESPONSE) -> Recording:
    """A real TLS 1.3 connection on loopback: client ══▶ RecordingRelay ══▶ server.

    The server (``www.example.test`` from the demo PKI) writes its key log; the
    client sends ``request``; the server answers ``response`` and closes with
    close_notify.  Returns both byte streams and the key log.
    """
    keylog = Path(directory) / f"keylog-{uuid.uuid4().hex[:8]}.txt"
    server_ctx = server_context([CertKey(*pki.files("www.example.test"))], keylog=str(keylog), min_version="1.3")
    client_ctx = client_context(ca=str(pki.ca), min_version="1.3", keylog="")
    seen: dict[str, object] = {}
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(TIMEOUT)
                received = b""
                while len(received) < len(request) and (data := tls.recv(65536)):
                    received += data
                seen["request"], seen["cipher"] = received, tls.cipher()[0]
                tls.sendall(response)
                try:
                    tls.unwrap()  # close_notify: the client sees a clean end
                except (ssl.SSLError, OSError):
                    pass

        server = threading.Thread(target=serve, name="tls13-server", daemon=True)
        server.start()
        relay = RecordingRelay(listener.getsockname(), timeout=TIMEOUT)
        with socket.create_connection((LOOPBACK, relay.port), timeout=TIMEOUT) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="www.example.test") as tls:
                tls.sendall(request)
                answer = b""
                while data := tls.recv(65536):
                    answer += data
        server.join(TIMEOUT)
        relay.thread.join(TIMEOUT)
    if seen.get("request") != request or answer != response:
        raise RuntimeError("the recorded TLS 1.3 exchange did not complete")
    return Recording(keylog.read_text(), bytes(relay.client_to_server), bytes(relay.server_to_client),
                     str(seen["cipher"]), request, response)
