"""The client's side of the notebooks: one request, and what the client experienced.

Theory of operation
-------------------
A lesson about proxies is a lesson about *points of view*.  Each function here is
one way a client reaches a server, and each returns a ``Reply`` that says what the
*client* experienced: the address its TCP connection went to, the TLS session and
the certificate it verified (``TLSView``), and the response.  The demo origins
(``course.origin``) answer with JSON describing what *they* received, so one ``Reply``
holds both ends of the story::

    http_get(address, target)                 plain HTTP (an absolute-form target: a forward proxy)
    https_get(address, server_name, path)     TLS with SNI and verification, then HTTP
    tunnel_get(proxy, authority, path)        CONNECT through a forward proxy, TLS inside

    tls_connect(address, server_name, context)    the first two steps of https_get alone
                                                  (TCP, then the handshake), for callers
                                                  that speak on the socket themselves

    reply.connected_to, reply.tls.certificate, reply.tls.fingerprint     the client's view
    reply.json["client"], reply.seen_header("X-Forwarded-For")           the origin's view

An address is a ``(host, port)`` tuple or anything with an ``.address``
(``course.origin.Origin``, ``course.playground.Proxy``).  ``source=`` binds the client
to one of this machine's addresses (on Linux any of 127.0.0.0/8), so that logs can
tell the client apart from a proxy.  Every connection carries one request and is
then closed politely (``close_politely``), as curl does, so that the servers' logs
show a clean end rather than a reset.

These are deliberately built from ``socket``, ``ssl`` and ``http.client`` only,
not from the proxy's own ``proxy/http1``: the client is the other party of the
conversation, an independent implementation.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from proxy.pki import leaf_der

TIMEOUT = 10.0

Address = tuple[str, int]


# --------------------------------------------------------------------------- what the client saw
@dataclass(frozen=True)
class TLSView:
    """The TLS session as the client saw it, and the certificate it verified."""

    version: str
    cipher: str
    certificate: str  # the leaf's subject common name
    issuer: str
    fingerprint: str  # the first 16 hex digits of SHA-256 over the DER: same bytes, same value
    names: tuple[str, ...] = ()  # the DNS names in its subjectAltName: what the name check compares

    @classmethod
    def of(cls, sock: ssl.SSLSocket) -> "TLSView":
        der = sock.getpeercert(binary_form=True) or b""
        cert = sock.getpeercert() or {}  # {} when the chain was not verified (CERT_NONE)
        return cls(sock.version() or "?", (sock.cipher() or ("?",))[0], _common_name(cert.get("subject", ())),
                   _common_name(cert.get("issuer", ())), hashlib.sha256(der).hexdigest()[:16],
                   tuple(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"))


def fingerprint(cert_path: str | Path) -> str:
    """The ``TLSView.fingerprint`` of a PEM certificate file: which file did the client see?

    A server's file holds the leaf first and then its chain (``proxy.pki``): the leaf,
    the certificate the client is shown as the peer's, is the first block."""
    der = leaf_der(cert_path)
    return hashlib.sha256(der).hexdigest()[:16]


def _common_name(name: Iterable) -> str:
    return next((value for rdn in name for key, value in rdn if key == "commonName"), "?")


@dataclass
class Reply:
    """One request's outcome, from the client's side."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    connected_to: str  # the address:port the client's TCP connection went to
    local: str  # the client's own address:port
    tls: TLSView | None = None  # None: no TLS between the client and what it connected to
    connect_status: int | None = None  # tunnel_get: the proxy's answer to CONNECT

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> dict | None:
        """The origin's JSON description of what it received (None for other bodies)."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    @property
    def origin(self) -> str | None:
        """Which demo origin answered (its X-Origin header), or None (e.g. the proxy itself)."""
        return self.header("X-Origin")

    def seen_header(self, name: str) -> str | None:
        """A header line as the *origin* received it (from its JSON), or None."""
        document = self.json or {}
        return next((v for k, v in document.get("headers", []) if k.lower() == name.lower()), None)


def _address(target) -> Address:
    """(host, port) from a tuple, a ``Proxy`` or an ``Origin``."""
    address = getattr(target, "address", target)
    return address[0], address[1]


def _show(address) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect(address: Address, source: str | None, timeout: float) -> tuple[socket.socket, tuple[str, str]]:
    """A TCP connection, and (peer, local) as text, read now: a peer that aborts later takes them along."""
    sock = socket.create_connection(address, timeout=timeout, source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, (_show(sock.getpeername()), _show(sock.getsockname()))


def tls_connect(target_address, server_name: str | None, context: ssl.SSLContext, *,
                session: ssl.SSLSession | None = None, source: str | None = None,
                timeout: float = TIMEOUT) -> tuple[ssl.SSLSocket, tuple[str, str]]:
    """TCP to ``target_address``, then the TLS handshake for ``server_name`` made with ``context``.

    ``server_name`` is sent as SNI (RFC 6066 §3) and, if ``context.check_hostname``, is
    the name the certificate must carry; None sends no SNI.  ``session`` offers an
    earlier connection's session, to resume it.  Returns the TLS socket and
    (peer, local) as text.
    """
    sock, where = _connect(_address(target_address), source, timeout)
    try:
        return context.wrap_socket(sock, server_hostname=server_name, session=session), where
    except BaseException:
        sock.close()  # a failed handshake leaves no socket behind
        raise


# --------------------------------------------------------------------------- the requests
def client_context(ca: str | Path, *, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """What a browser or curl does: verify the chain and the name (here: against the demo CA),
    and offer ALPN ``http/1.1`` (RFC 7301), which a passthrough proxy can see and log."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _exchange(sock: socket.socket, where: tuple[str, str], method: str, target: str, host: str,
              headers: dict | None, body: bytes | None, **extra) -> Reply:
    """Send one request on an open (plain or TLS) socket, read the whole response, close."""
    conn = http.client.HTTPConnection(host)  # it never connects: it is handed our socket
    conn.sock = sock
    conn.request(method, target, body=body, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    if not response.will_close:  # else http.client has closed it already
        close_politely(sock)
    return _reply(response, data, where, **extra)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a ``Connection: close`` answer, raw).

    A TLS peer that closes without close_notify ends the read too (OpenSSL's "unexpected
    EOF"): the caller sees the bytes, and the framing inside them says if they are whole."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLError as error:
            if "EOF" in str(error):
                return data
            raise
        if not chunk:
            return data
        data += chunk


def close_politely(sock: socket.socket) -> None:
    """End a connection as a careful client does: say "no more" and let the server close too.

    TLS first gets close_notify (RFC 8446 §6.1), then TCP a FIN; the server answers in
    kind and we read to its end.  Closing with the server's last bytes still unread
    would make the kernel send a reset instead (RFC 1122 §4.2.2.13), and the proxy's
    log would say the client reset the connection.
    """
    try:
        sock.settimeout(1.0)
        if isinstance(sock, ssl.SSLSocket):
            sock = sock.unwrap()
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except (OSError, ValueError):
        pass
    finally:
        sock.close()


def _reply(response: http.client.HTTPResponse, data: bytes, where: tuple[str, str], **extra) -> Reply:
    return Reply(response.status, response.reason, response.getheaders(), data,
                 connected_to=where[0], local=where[1], **extra)


def http_get(target_address, target: str = "/", *, host: str | None = None, headers: dict | None = None,
             source: str | None = None, method: str = "GET", body: bytes | None = None,
             timeout: float = TIMEOUT) -> Reply:
    """Plain HTTP to ``target_address``.  ``target`` may be absolute-form (a forward proxy)."""
    address = _address(target_address)
    sock, where = _connect(address, source, timeout)
    with sock:
        if host is None:
            host = target.split("/")[2] if target.startswith("http://") else _show(address)
        return _exchange(sock, where, method, target, host, headers, body)


def https_get(target_address, server_name: str | None, path: str = "/", *, ca: str | Path | None = None,
              client_cert: tuple[str, str] | None = None, headers: dict | None = None,
              source: str | None = None, method: str = "GET", body: bytes | None = None,
              timeout: float = TIMEOUT, context: ssl.SSLContext | None = None) -> Reply:
    """Connect to ``target_address``, do TLS for ``server_name`` (SNI, verified), send ``path``.

    Like ``curl --resolve NAME:PORT:ADDRESS https://NAME:PORT/path``: the name decides
    the SNI, the certificate check and the Host header; the address only where to connect.
    The context is ``client_context(ca, ...)`` unless ``context=`` brings one of its own
    (``ca`` and ``client_cert`` are then not used); with ``server_name=None`` no SNI is
    sent and the Host header names the address.
    """
    if context is None:
        if ca is None:
            raise ValueError("https_get needs ca= (or a context=)")
        context = client_context(ca, cert=client_cert[0] if client_cert else None,
                                 key=client_cert[1] if client_cert else None)
    tls, where = tls_connect(target_address, server_name, context, source=source, timeout=timeout)
    with tls:
        return _exchange(tls, where, method, path, server_name or where[0], headers, body, tls=TLSView.of(tls))


def tunnel_get(proxy_address, authority: str, path: str = "/", *, ca: str | Path,
               server_name: str | None = None, headers: dict | None = None, source: str | None = None,
               timeout: float = TIMEOUT) -> Reply:
    """``CONNECT authority`` through a forward proxy, then TLS and ``GET path`` inside the tunnel.

    What ``curl --proxy http://PROXY https://NAME/path`` does (RFC 9110 §9.3.6).  If the
    proxy refuses the CONNECT, the reply is the proxy's own answer (``connect_status``
    is its status, ``tls`` is None).
    """
    server_name = server_name or authority.rsplit(":", 1)[0].strip("[]")
    sock, where = _connect(_address(proxy_address), source, timeout)
    with sock:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
        answer = http.client.HTTPResponse(sock, method="CONNECT")
        answer.begin()
        if answer.status != 200:
            return _reply(answer, answer.read(), where, connect_status=answer.status)
        answer.close()  # only the head was read: the tunnel's bytes are still in the socket
        # From here on the bytes go through the proxy untouched: TLS runs client <-> origin.
        with client_context(ca).wrap_socket(sock, server_hostname=server_name) as tls:
            return _exchange(tls, where, "GET", path, server_name, headers, None, tls=TLSView.of(tls),
                             connect_status=200)
