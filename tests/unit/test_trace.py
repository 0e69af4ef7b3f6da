"""proxy.tls.trace: real handshakes between Python ssl endpoints on loopback, traced.

Contexts are built here with plain ``ssl`` and a throwaway self-signed certificate
made with ``cryptography``, so these tests depend on nothing but the module under test.
"""

from __future__ import annotations

import gc
import io
import socket
import ssl
import threading
from pathlib import Path

import pytest

from proxy.tls import trace as trace_module
from proxy.tls.trace import (
    HandshakeTrace,
    TraceEvent,
    TraceRegistry,
    attach_tracer,
    detach_tracers,
    make_event,
    print_traces,
    trace_available,
)
from tests.fakes import self_signed_localhost

TLS13_FULL = ["ClientHello", "ServerHello", "EncryptedExtensions", "Certificate", "CertificateVerify",
              "Finished", "Finished"]


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> Path:
    return self_signed_localhost(tmp_path_factory.mktemp("trace"))


def server_context(pem: Path, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def client_context(pem: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pem is not None:
        context.load_verify_locations(pem)
    return context


class EchoServer:
    """Accepts connections on 127.0.0.1:0, one thread each, and echoes until EOF."""

    def __init__(self, context: ssl.SSLContext, on_handshake=None):
        self.context = context
        self.on_handshake = on_handshake
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.handlers: list[threading.Thread] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            handler = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.handlers.append(handler)
            handler.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                if self.on_handshake is not None:
                    self.on_handshake(tls)
                while data := tls.recv(1024):
                    tls.sendall(data)
        except (ssl.SSLError, OSError) as error:        # e.g. a client that hangs up without close_notify
            self.errors.append(repr(error))
        finally:
            conn.close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(5)
        for handler in self.handlers:
            handler.join(5)
        self.listener.close()


def connect(context: ssl.SSLContext, port: int, *, session=None, server_hostname: str = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname=server_hostname, session=session)


def ping(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"ping")
    assert tls.recv(4) == b"ping"


def handshake_directions(trace: HandshakeTrace) -> list[tuple[str, str]]:
    return [(e.direction, e.name) for e in trace if e.kind == "handshake"]


# --------------------------------------------------------------------------- the pure part
def test_make_event_reads_data_not_cpythons_labels():
    # 0x100: the record header; length from its last two bytes.
    header = make_event(server_side=False, direction="write", version=0x0301, content_type=0x100,
                        data=bytes.fromhex("1603010200"), when=1.0)
    assert (header.kind, header.name, header.length, header.msg_type, header.sender) == (
        "record_header", "record header: handshake", 512, 22, "client")
    # 0x101: CPython would call msg_type 22 CERTIFICATE_STATUS; the byte means "handshake".
    inner = make_event(server_side=True, direction="read", version=0x0304, content_type=0x101, data=b"\x16", when=1.0)
    assert (inner.kind, inner.name, inner.direction, inner.sender) == (
        "inner_content_type", "inner content type: handshake", "received", "client")
    alert = make_event(server_side=True, direction="write", version=0x0304, content_type=21, data=b"\x02\x30", when=1.0)
    assert (alert.name, alert.msg_type, alert.sender, alert.is_message) == ("Alert(fatal, unknown_ca)", 48, "server", True)
    hello = make_event(server_side=False, direction="write", version=0x0304, content_type=22,
                       data=b"\x01\x00\x00\x02ab", when=1.0)
    assert (hello.name, hello.length, hello.msg_type) == ("ClientHello", 6, 1)
    for content_type in (22, 21, 0x100, 0x101, 99):                     # never raises, even on nothing
        assert make_event(server_side=False, direction="read", version=0, content_type=content_type, data=b"").name


def test_handshake_trace_times_are_relative_to_the_first_event():
    events = [make_event(server_side=False, direction="write", version=0x0304, content_type=22,
                         data=b"\x01\x00\x00\x00", when=t) for t in (10.0, 10.25, 10.5)]
    trace = HandshakeTrace(events)
    assert [e.elapsed for e in trace] == [0.0, 0.25, 0.5]
    assert isinstance(trace.events[0], TraceEvent) and len(trace) == 3


# --------------------------------------------------------------------------- TLS 1.3
def test_tls13_full_handshake_seen_by_the_client(pem):
    assert trace_available()
    client = client_context(pem)
    trace = HandshakeTrace()
    assert attach_tracer(client, trace.collect)
    with EchoServer(server_context(pem)) as server:
        with connect(client, server.port) as tls:
            assert tls.version() == "TLSv1.3"
            assert trace.handshake_messages() == TLS13_FULL
            assert handshake_directions(trace) == [
                ("sent", "ClientHello"), ("received", "ServerHello"), ("received", "EncryptedExtensions"),
                ("received", "Certificate"), ("received", "CertificateVerify"), ("received", "Finished"),
                ("sent", "Finished")]
            ping(tls)                         # the tickets arrive after the handshake (RFC 8446 §4.6.1)
    assert trace.handshake_messages() == TLS13_FULL + ["NewSessionTicket", "NewSessionTicket"]
    assert trace.side == "client" and trace.is_complete and not trace.is_resumed
    # Middlebox-compatibility ChangeCipherSpec (RFC 8446 §D.4) both ways; the received one
    # is known only from its record header.
    flow = trace.message_flow()
    assert ("sent", "ChangeCipherSpec") in flow and ("received", "ChangeCipherSpec") in flow
    assert flow.index(("received", "ServerHello")) < flow.index(("received", "ChangeCipherSpec"))
    # Every encrypted handshake message was announced by an inner content type "handshake",
    # and nothing carries CPython's misleading handshake-enum labels.
    names = [e.name for e in trace]
    assert names.count("inner content type: handshake") >= 7
    assert not any("CERTIFICATE_STATUS" in name or "SUPPLEMENTAL" in name for name in names)
    elapsed = [e.elapsed for e in trace]
    assert elapsed[0] == 0.0 and elapsed == sorted(elapsed) and trace.handshake_duration > 0
    text = trace.format()
    assert "seen by the client (TLS 1.3" in text and "CertificateVerify" in text and "record header" not in text
    assert text.count("ChangeCipherSpec") == 2 and trace.version == 0x0304
    assert "record header: application_data" in trace.format(records=True)


def test_tls13_resumed_handshake_has_no_certificate(pem):
    client = client_context(pem)
    registry = TraceRegistry()
    assert registry.attach(client)
    with EchoServer(server_context(pem)) as server:       # one server context: one ticket key
        with connect(client, server.port) as first:
            ping(first)
            session = first.session
            full = registry.trace(first)
        with connect(client, server.port, session=session) as second:
            assert second.session_reused
            ping(second)
            resumed = registry.trace(second)
    assert not full.is_resumed and "Certificate" in full.handshake_messages()
    assert resumed.is_resumed
    assert resumed.handshake_messages()[:5] == ["ClientHello", "ServerHello", "EncryptedExtensions", "Finished",
                                                "Finished"]
    assert "Certificate" not in resumed.handshake_messages()
    assert "CertificateVerify" not in resumed.handshake_messages()


# --------------------------------------------------------------------------- TLS 1.2
TLS12_CLIENT_FLOW = [
    ("sent", "ClientHello"), ("received", "ServerHello"), ("received", "Certificate"),
    ("received", "ServerKeyExchange"), ("received", "ServerHelloDone"), ("sent", "ClientKeyExchange"),
    ("sent", "ChangeCipherSpec"), ("sent", "Finished"), ("received", "NewSessionTicket"),
    ("received", "ChangeCipherSpec"), ("received", "Finished"),
]


def test_tls12_handshake_from_both_sides(pem):
    client = client_context(pem)
    client_trace = HandshakeTrace()
    attach_tracer(client, client_trace.collect)
    server_ctx = server_context(pem, maximum=ssl.TLSVersion.TLSv1_2)
    registry = TraceRegistry()
    registry.attach(server_ctx)
    server_traces = []
    with EchoServer(server_ctx, on_handshake=lambda tls: server_traces.append(registry.trace(tls))) as server:
        with connect(client, server.port) as tls:
            assert tls.version() == "TLSv1.2"
            ping(tls)
            session = tls.session
        with connect(client, server.port, session=session) as again:
            assert again.session_reused
            ping(again)
    assert client_trace.version == 0x0303 and "(TLS 1.2," in client_trace.format()
    first_flow = client_trace.message_flow()[:len(TLS12_CLIENT_FLOW)]
    assert first_flow == TLS12_CLIENT_FLOW
    # The server saw the mirror image: every "sent" is "received" and vice versa.
    mirror = {"sent": "received", "received": "sent"}
    assert server_traces[0].message_flow() == [(mirror[d], name) for d, name in TLS12_CLIENT_FLOW]
    assert server_traces[0].side == "server" and not server_traces[0].is_resumed
    # The abbreviated handshake (RFC 5246 §7.3): no Certificate, no key exchange.
    assert server_traces[1].is_resumed
    # The server speaks first after its ServerHello, and issues no new ticket.
    assert server_traces[1].message_flow() == [
        ("received", "ClientHello"), ("sent", "ServerHello"), ("sent", "ChangeCipherSpec"), ("sent", "Finished"),
        ("received", "ChangeCipherSpec"), ("received", "Finished")]


# --------------------------------------------------------------------------- alerts
def test_an_untrusted_certificate_shows_up_as_an_alert_on_both_sides(pem):
    client = client_context(None)                        # trusts nothing
    client_trace, server_trace = HandshakeTrace(), HandshakeTrace()
    attach_tracer(client, client_trace.collect)
    server_ctx = server_context(pem)
    attach_tracer(server_ctx, server_trace.collect)
    with EchoServer(server_ctx) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(client, server.port)
    assert client_trace.message_flow()[-1] == ("sent", "Alert(fatal, unknown_ca)")
    assert ("sent", "Finished") not in client_trace.message_flow()
    assert server_trace.message_flow()[-1] == ("received", "Alert(fatal, unknown_ca)")
    assert not server_trace.is_complete and server_trace.side == "server"


# --------------------------------------------------------------------------- the registry
def test_registry_keeps_one_trace_per_connection_across_threads(pem):
    server_ctx = server_context(pem)
    registry = TraceRegistry()
    registry.attach(server_ctx)
    seen: list[HandshakeTrace] = []
    lock = threading.Lock()

    def on_handshake(tls):
        trace = registry.trace(tls)
        with lock:
            seen.append(trace)

    client = client_context(pem)
    with EchoServer(server_ctx, on_handshake=on_handshake) as server:
        def one_client() -> None:
            with connect(client, server.port) as tls:
                ping(tls)

        clients = [threading.Thread(target=one_client) for _ in range(8)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(10)
    assert len(seen) == 8
    for trace in seen:
        assert trace.side == "server"
        assert handshake_directions(trace)[:7] == [
            ("received", "ClientHello"), ("sent", "ServerHello"), ("sent", "EncryptedExtensions"),
            ("sent", "Certificate"), ("sent", "CertificateVerify"), ("sent", "Finished"), ("received", "Finished")]
    gc.collect()
    assert len(registry) == 0                            # weak keys: closed connections took their traces


def test_registry_traces_stay_small_on_a_busy_connection(pem):
    """Every record is reported (header + inner type); after the handshake the registry
    keeps only messages, so a long transfer does not grow the trace."""
    server_ctx = server_context(pem)
    registry = TraceRegistry(max_events=60)
    registry.attach(server_ctx)
    connections = []
    with EchoServer(server_ctx, on_handshake=connections.append) as server:
        with connect(client_context(pem), server.port) as tls:
            ping(tls)
            after_handshake = len(registry.trace(connections[0]))
            for _ in range(200):                       # 400 more records, each way reported
                ping(tls)
            busy = registry.trace(connections[0])
    assert len(busy) == after_handshake and busy.dropped == 0
    # And a hard cap per connection, whatever the peer makes OpenSSL report.
    capped, conn = TraceRegistry(max_events=5), connections[0]
    for _ in range(8):
        capped.record(conn, make_event(server_side=True, direction="read", version=0x0304, content_type=21,
                                       data=b"\x01\x00"))
    assert len(capped.trace(conn)) == 5 and capped.trace(conn).dropped == 3


def test_print_traces_prints_each_message_as_it_happens(pem):
    server_ctx = server_context(pem)
    stream = io.StringIO()
    assert print_traces(server_ctx, stream=stream)
    with EchoServer(server_ctx) as server:
        for _ in range(2):
            with connect(client_context(pem), server.port) as tls:
                ping(tls)
    lines = stream.getvalue().splitlines()
    first = [line for line in lines if line.startswith("tls #1 ")]
    second = [line for line in lines if line.startswith("tls #2 ")]
    assert len(first) == len(second) >= 10
    assert "received  client -> server  ClientHello" in first[0]
    assert any("sent      server -> client  CertificateVerify" in line for line in first)
    assert sum("NewSessionTicket" in line for line in second) == 2
    assert not any("record header" in line for line in lines)


def test_sni_callback_context_switch_needs_the_tracer_on_both_contexts(pem):
    """After sni_callback sets ``ssl_socket.context``, messages go to the new context's callback."""
    def run(attach_to_both: bool) -> HandshakeTrace:
        first, second = server_context(pem), server_context(pem)
        registry = TraceRegistry()
        registry.attach(first)
        if attach_to_both:
            registry.attach(second)

        def switch(ssl_socket, server_name, _context):
            ssl_socket.context = second
        first.sni_callback = switch
        traces = []
        with EchoServer(first, on_handshake=lambda tls: traces.append(registry.trace(tls))) as server:
            with connect(client_context(pem), server.port) as tls:
                ping(tls)
        return traces[0]

    assert run(attach_to_both=False).handshake_messages() == ["ClientHello"]
    assert run(attach_to_both=True).handshake_messages()[:7] == [
        "ClientHello", "ServerHello", "EncryptedExtensions", "Certificate", "CertificateVerify", "Finished",
        "Finished"]


# --------------------------------------------------------------------------- robustness
def test_sinks_chain_and_a_failing_sink_does_not_break_the_handshake(pem, caplog):
    client = client_context(pem)
    earlier: list[int] = []
    client._msg_callback = lambda conn, direction, version, content_type, msg_type, data: earlier.append(1)

    def broken(conn, event):
        raise RuntimeError("sink bug")

    trace = HandshakeTrace()
    assert attach_tracer(client, broken) and attach_tracer(client, trace.collect)
    with EchoServer(server_context(pem)) as server:
        with connect(client, server.port) as tls:
            ping(tls)
    assert trace.handshake_messages()[:7] == TLS13_FULL
    assert len(earlier) == len(trace)                    # the callback installed before ours still runs
    assert "sink bug" in caplog.text
    detach_tracers(client)
    assert client._msg_callback is not None and not isinstance(client._msg_callback, type(trace))


def test_without_the_private_hook_everything_still_works(pem, monkeypatch):
    # Simulates an interpreter without SSLContext._msg_callback (it cannot be removed
    # from this CPython: the C base class defines it too).
    monkeypatch.setattr(trace_module, "_HOOK_NAME", "_no_such_hook")
    monkeypatch.setattr(trace_module, "_warned", False)
    assert not trace_available()
    client = client_context(pem)
    trace = HandshakeTrace()
    with pytest.warns(RuntimeWarning, match="handshake traces are off"):
        assert attach_tracer(client, trace.collect) is False
    assert TraceRegistry().attach(client) is False        # warned once only
    with EchoServer(server_context(pem)) as server:
        with connect(client, server.port) as tls:
            ping(tls)
    assert len(trace) == 0
    assert "handshake traces are off" in trace.format()
