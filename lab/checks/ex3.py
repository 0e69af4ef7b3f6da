"""Checks for exercise 3 (terminate TLS with a certificate chosen by SNI).

Real TLS on loopback throughout: the clients are Python ``ssl`` clients built by
``proxy.tls.contexts.client_context`` that trust the demo CA and send a chosen
server name (``lab.harness.https_get``); what is checked is the certificate each
one was sent and the answer it got.  Each step is checked on its own where it can
be: step 3 with contexts the checker built, step 5 first with the package's own
SNI-aware context (``proxy.tls.contexts.server_context`` with both certificates),
and only the last check puts all of the student's parts together.

For a name the server does not serve, RFC 6066 §3 gives the server two choices
("SHOULD take one of two actions"): go on with the default certificate (what the
proxy does, and what the README asks) or abort with a fatal ``unrecognized_name``
alert (an ``sni_callback`` that returns ``ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME``).
Both pass step 4; the second with a note.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
from collections.abc import Iterator

from lab.checks import Background, Checklist, Fail, Reference, need, show
from lab.harness import http_request, https_get
from proxy.tls.contexts import CertKey, server_context

CHECKLIST = Checklist("Terminate TLS with a certificate chosen by SNI", Reference(
    # server_context itself is the tool the exercise hands out (one certificate per
    # context); its SNI switch, and the proxy's servers, are what the student writes.
    forbid=("proxy.tls.contexts._sni_callback", "proxy.server", "proxy.acceptors", "proxy.modes"),
    why="the proxy's own SNI switch or server"))
check = CHECKLIST.check

WWW, API = "www.example.test", "api.example.test"
CANNED = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nchecker"


def listener() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def checker_contexts(lab) -> dict[str, ssl.SSLContext]:
    """One context per name, built the package's way (fresh each time: step 4 changes them)."""
    return {name: server_context([CertKey(*lab.pki.files(name))]) for name in (WWW, API)}


def tls_server_once(sock: socket.socket, context: ssl.SSLContext, handler=None) -> None:
    """Accept one client, complete the handshake with ``context``, answer, close."""
    conn, _ = sock.accept()
    conn.settimeout(5)
    with context.wrap_socket(conn, server_side=True) as tls:
        if handler is not None:
            handler(tls)
            return
        head = b""
        while b"\r\n\r\n" not in head and (data := tls.recv(4096)):
            head += data
        tls.sendall(CANNED)


@contextlib.contextmanager
def callback_errors() -> Iterator[list[BaseException]]:
    """Exceptions raised inside an ``sni_callback``.

    OpenSSL cannot carry a Python exception out of a callback: CPython hands it to
    ``sys.unraisablehook`` (normally a warning on stderr) and fails the handshake
    ("callback failed").  Collecting them lets a check report the student's real
    error, with its line, instead of the client's "handshake failure".
    """
    caught: list[BaseException] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: caught.append(unraisable.exc_value)
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


def expect_certificate(reply, name: str, because: str) -> None:
    if name not in reply.certificate_names:
        raise Fail(f"{because}: the client was sent the certificate for {list(reply.certificate_names)}, not {name}")


# --------------------------------------------------------------------------- step 1
@check(1, "handle answers a plain HTTP request with 200 and a body that starts with 'hello'",
       hint="README step 1: recv until b'\\r\\n\\r\\n', then sendall a status line, Content-Length, "
            "an empty line and the body")
def _(student, lab):
    handle = need(student, "handle")

    def serve_plain(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(5)
            handle(conn)

    with listener() as sock:
        server = Background(serve_plain, sock, on_error=sock.close)
        try:
            status, body = http_request(port_of(sock), "GET", "/", {})
        except (OSError, ValueError) as error:  # http.client's errors are OSError or ValueError subclasses
            server.raise_if_failed()
            raise Fail(f"the client could not read an answer: {type(error).__name__}: {error}") from None
        server.join()
    if status != 200 or not body.startswith(b"hello"):
        raise Fail(f"the client got {status} {show(body)}; expected 200 and a body starting with b'hello'")


@check(1, "handle returns when the client hangs up without sending anything",
       hint="recv() returning b'' means the client closed: stop reading (or loop for ever)")
def _(student, lab):
    handle = need(student, "handle")

    def serve_plain(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(3)
            handle(conn)

    with listener() as sock:
        server = Background(serve_plain, sock, on_error=sock.close)
        socket.create_connection(sock.getsockname(), timeout=5).close()
        server.join(4)


# --------------------------------------------------------------------------- step 2
@check(2, "build_contexts gives one server context per name, each sending that name's certificate",
       hint="server_context([CertKey(*pki.files(name))]) from proxy.tls.contexts, for each name in NAMES")
def _(student, lab):
    contexts = need(student, "build_contexts")(lab.pki)
    if not isinstance(contexts, dict) or set(contexts) != {WWW, API}:
        raise Fail(f"returned {show(contexts)}; expected {{'{WWW}': context, '{API}': context}}")
    for name, context in contexts.items():
        if not isinstance(context, ssl.SSLContext):
            raise Fail(f"contexts[{name!r}] is {show(context)}, not an ssl.SSLContext")
        with listener() as sock:
            server = Background(tls_server_once, sock, context, on_error=sock.close)
            try:
                reply = https_get(port_of(sock), ca=lab.pki.ca, server_name=name)
            except (ssl.SSLError, OSError) as error:
                raise Fail(f"a client asking for {name} with contexts[{name!r}] failed: {error}") from None
            server.join()
        expect_certificate(reply, name, f"with contexts[{name!r}]")


# --------------------------------------------------------------------------- step 3
@check(3, "choose_context picks the context by name, ignoring case; None for no SNI or an unknown name",
       hint="RFC 6066 §3 and RFC 4343: host names compare case-insensitively; None keeps the default")
def _(student, lab):
    choose = need(student, "choose_context")
    contexts = checker_contexts(lab)
    cases = [(WWW, contexts[WWW]), (API, contexts[API]), ("API.Example.Test", contexts[API]),
             (None, None), ("unknown.example.test", None)]
    for server_name, want in cases:
        got = choose(server_name, contexts)
        if got is not want:
            names = {id(c): n for n, c in contexts.items()}
            raise Fail(f"choose_context({server_name!r}) gave {names.get(id(got), show(got))}; "
                       f"expected {names.get(id(want), None)}")


# --------------------------------------------------------------------------- step 4
@check(4, "make_server_context: each client gets the certificate for the name it sent (SNI)",
       hint="set default.sni_callback = a function(sslobj, server_name, context) that does "
            "sslobj.context = chosen (README step 4)")
def _(student, lab):
    contexts = checker_contexts(lab)
    context = need(student, "make_server_context")(contexts)
    if not isinstance(context, ssl.SSLContext):
        raise Fail(f"returned {show(context)}; expected an ssl.SSLContext")
    if context is not contexts[WWW]:
        raise Fail(f"returned a context that is not contexts[{WWW!r}]: README step 4 sets the callback on the "
                   "default context it was given and returns that one")
    note = None
    cases = [(WWW, True, WWW), (API, True, API), ("other.example.test", False, WWW), (None, False, WWW)]
    for server_name, verify_name, expected in cases:
        with listener() as sock, callback_errors() as caught:
            server = Background(tls_server_once, sock, context, on_error=sock.close)
            try:
                reply = https_get(port_of(sock), ca=lab.pki.ca, server_name=server_name, verify_name=verify_name)
            except (ssl.SSLError, OSError) as error:
                if caught:
                    raise caught[0] from None  # the callback's own exception is the real story
                if server_name == "other.example.test" and "UNRECOGNIZED_NAME" in str(error).upper():
                    with contextlib.suppress(ssl.SSLError, OSError):
                        server.join()  # its handshake failed too, as intended
                    note = ("note: for a name you do not serve you abort with unrecognized_name, the other "
                            "action RFC 6066 §3 allows; the proxy goes on with its default certificate, "
                            "and leaves the name check to the client")
                    continue
                raise Fail(f"a client sending SNI {server_name!r} failed: {error}") from None
            server.join()
        because = f"a client sending SNI {server_name!r}" if server_name else "a client sending no SNI"
        expect_certificate(reply, expected, because)
    return note


# --------------------------------------------------------------------------- step 5
def _serve_and_get(student, lab, context: ssl.SSLContext, clients: list[tuple[str | None, str]],
                   plaintext_first: bool = False) -> None:
    """Run the student's serve() for len(clients) (+1) connections; check each client."""
    serve = need(student, "serve")
    with listener() as sock, callback_errors() as caught:
        server = Background(serve, sock, context, len(clients) + plaintext_first, on_error=sock.close)
        if plaintext_first:  # plain HTTP sent to the TLS port: the handshake fails on the server
            try:
                with socket.create_connection(sock.getsockname(), timeout=5) as plain:
                    plain.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
                    plain.recv(4096)  # the server's alert, or its hanging up
            except OSError:
                pass  # a reset is one normal way to hang up; a server that died shows up below
        for server_name, expected in clients:
            try:
                reply = https_get(port_of(sock), ca=lab.pki.ca, server_name=server_name,
                                  verify_name=server_name is not None)
            except (ssl.SSLError, OSError) as error:
                if caught:
                    raise caught[0] from None
                server.raise_if_failed()
                raise Fail(f"a TLS client sending SNI {server_name!r} failed: {type(error).__name__}: {error}"
                           + (" (did serve() stop after the failed handshake?)" if plaintext_first else "")) from None
            if reply.status != 200 or not reply.body.startswith(b"hello"):
                raise Fail(f"over TLS the client got {reply.status} {show(reply.body)}; expected 200 hello")
            expect_certificate(reply, expected, f"a client sending SNI {server_name!r}")
        try:
            server.join(3)
        except Fail:
            raise Fail(f"serve() did not return after {len(clients) + plaintext_first} connections") from None


@check(5, "serve terminates TLS and answers hello (with the proxy's own SNI context)",
       hint="README step 5: accept, context.wrap_socket(conn, server_side=True), handle(tls), close")
def _(student, lab):
    context = server_context([CertKey(*lab.pki.files(WWW)), CertKey(*lab.pki.files(API))])
    _serve_and_get(student, lab, context, [(WWW, WWW), (API, API)])


@check(5, "serve keeps serving after a client's handshake fails",
       hint="catch ssl.SSLError and OSError around one connection; one bad client must not stop the server")
def _(student, lab):
    context = server_context([CertKey(*lab.pki.files(WWW)), CertKey(*lab.pki.files(API))])
    _serve_and_get(student, lab, context, [(WWW, WWW)], plaintext_first=True)


@check(5, "all of yours together: build_contexts, make_server_context and serve",
       hint="the demo at the bottom of student.py runs exactly this; try it with curl --resolve")
def _(student, lab):
    context = need(student, "make_server_context")(need(student, "build_contexts")(lab.pki))
    _serve_and_get(student, lab, context, [(WWW, WWW), (API, API), (None, WWW)])
