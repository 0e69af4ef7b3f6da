"""Compare TLS handshakes: trace one request, count its flights and round trips, time many.

Theory of operation
-------------------
Notebook 2 asks three questions of real handshakes, and this module answers each with
the real ``ssl`` module on loopback sockets and ``proxy.tls.trace``:

**What was said?**  ``traced_request(address, server_name, ca=...)`` makes one HTTPS
request as curl does (SNI, certificate and name verified, ALPN ``http/1.1``) with the
client's side of the handshake traced.  It connects as ``course.clients`` does (its
``client_context`` and ``tls_connect``), then writes the request and reads the response
itself, so that it can take the session once the response is in.  ``tls="1.2"`` caps
the version, and ``session=`` offers an earlier request's session, so the same call
shows a full TLS 1.3, a full TLS 1.2 and a resumed handshake.  ``tracing(context)``
traces a server's context (the proxy's) for the length of a ``with`` block.

**How long must the client wait?**  Latency is counted in *flights*: the messages one
side sends before it must hear from the other.  ``flights(trace)`` groups the trace's
messages that way, and ``round_trips(trace)`` counts the flights the client had to
*wait for* before it could send its request: the ones up to the server's Finished
(the client may not send application data before it has verified that Finished,
RFC 8446 §4.4.4, RFC 5246 §7.4.9)::

    TLS 1.3 full      ClientHello  ->  ServerHello .. Finished      (1 wait)  -> Finished, request
    TLS 1.2 full      ClientHello  ->  ServerHello .. ServerHelloDone (1)
                      ClientKeyExchange, CCS, Finished  ->  CCS, Finished (2)  -> request
    resumed (either)  ClientHello  ->  ServerHello .. Finished      (1 wait)  -> request

A NewSessionTicket that arrives after the server's Finished (TLS 1.3) is not waited for.
A HelloRetryRequest (RFC 8446 §4.1.4) is one more server flight to wait for.

**How long is that in milliseconds?**  On loopback a round trip takes microseconds;
through a delay line (``course.delay.DelayLine``, ``Playground.delay``) it takes what
you ask for, and ``TracedRequest.request_at`` is the time from the ClientHello leaving
to the request leaving: about one RTT for TLS 1.3, two for TLS 1.2.  Python's ``ssl``
cannot choose key-exchange groups, so ``openssl_request`` makes the request with
``openssl s_client -groups secp521r1:X25519``: its only key share is for P-521, which
the proxy refuses, and trace the proxy (``tracing``) to see the HelloRetryRequest.

**What does the certificate cost?**  ``handshake_cost(cert, key, ...)`` runs ``count``
full handshakes between a client and a server thread of this process, the server
built by ``proxy.tls.contexts.server_context`` exactly as the proxy builds it, and
reads each side's CPU time with ``time.thread_time()`` (the CPU clock of the calling
thread, CLOCK_THREAD_CPUTIME_ID, which does not tick while a thread waits).  The
server's CPU per handshake is what a terminating proxy pays per new connection; the
signature algorithm of its certificate is a large part of it (ECDSA P-256 signs
fast; RSA-2048 signs slowly but verifies fast).  ``certificate_summary(path)`` gives
the sizes that travel in the Certificate message.

Measured on a shared machine, single handshakes vary by tens of percent: the results
keep every sample and report medians and the 10th-90th percentile spread.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ObjectIdentifier, SignatureAlgorithmOID

from course.clients import client_context, read_to_eof, tls_connect
from proxy.tls.contexts import CertKey, server_context
from proxy.tls.trace import HandshakeTrace, TraceEvent, attach_tracer, detach_tracers, flow_name

TIMEOUT = 10.0
MAX_HANDSHAKES = 5_000          # handshake_cost is a lesson, not a load test: bounded


# --------------------------------------------------------------------------- one traced request
@dataclass
class TracedRequest:
    """One HTTPS request with the client's handshake trace."""

    trace: HandshakeTrace
    version: str                  # "TLSv1.3"
    cipher: str
    session_reused: bool
    session: ssl.SSLSession | None = field(repr=False)   # offer it to resume
    certificate: bytes = field(repr=False)               # the server certificate's DER bytes
    status_line: str = ""
    elapsed: float = 0.0          # seconds from connect() to the end of the response
    request_at: float = 0.0       # seconds from the ClientHello leaving to the request leaving
    tcp_connect: float = 0.0      # seconds from connect() to the ClientHello (TCP's handshake, mostly)

    @property
    def flights(self) -> list["Flight"]:
        return flights(self.trace)

    @property
    def round_trips(self) -> int:
        return round_trips(self.trace)


def request_context(ca: str | Path, *, tls: str = "1.3") -> ssl.SSLContext:
    """The client's context: verify against ``ca``, ALPN http/1.1, TLS ``tls`` at most
    ("1.3" also allows 1.2, as browsers do; "1.2" caps it)."""
    context = client_context(ca)          # course.clients: what curl does
    context.maximum_version = ssl.TLSVersion.TLSv1_2 if tls == "1.2" else ssl.TLSVersion.TLSv1_3
    context.keylog_filename = None        # create_default_context reads SSLKEYLOGFILE: not here
    return context


def traced_request(address, server_name: str, path: str = "/", *, ca: str | Path | None = None,
                   tls: str = "1.3", session: ssl.SSLSession | None = None,
                   context: ssl.SSLContext | None = None, timeout: float = TIMEOUT) -> TracedRequest:
    """``GET path`` over TLS to ``address`` (a (host, port) or anything with ``.address``),
    tracing the client's handshake.  Pass ``context`` to reuse one (a session resumes only
    with the context that made it), else one is made from ``ca`` and ``tls``."""
    if context is None:
        if ca is None:
            raise ValueError("traced_request needs ca= (or a context=)")
        context = request_context(ca, tls=tls)
    trace = HandshakeTrace()
    attach_tracer(context, lambda conn, event: trace.add(event))
    started = time.perf_counter()
    try:
        tls_sock, _ = tls_connect(address, server_name, context, session=session, timeout=timeout)
        with tls_sock:
            version, cipher = tls_sock.version() or "?", (tls_sock.cipher() or ("?",))[0]
            reused, certificate = tls_sock.session_reused, tls_sock.getpeercert(binary_form=True) or b""
            request_sent = time.perf_counter()
            tls_sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
                             .encode("ascii"))
            response = read_to_eof(tls_sock)
            # TLS 1.3 tickets arrive after the handshake: the session is complete only now.
            new_session = tls_sock.session
            with contextlib.suppress(OSError, ValueError):
                tls_sock.unwrap()         # close_notify (RFC 8446 §6.1)
    finally:
        detach_tracers(context)
    hello_sent = trace.events[0].time if trace.events else started
    return TracedRequest(trace, version, cipher, reused, new_session, certificate,
                         response.split(b"\r\n", 1)[0].decode("latin-1"), time.perf_counter() - started,
                         request_sent - hello_sent, hello_sent - started)


# --------------------------------------------------------------------------- what ssl cannot do
HRR_GROUPS = "secp521r1:X25519"   # a P-521 key share first: the proxy accepts X25519, P-256, P-384


@dataclass
class OpenSSLRequest:
    """One request made by ``openssl s_client``: its output and how long it took."""

    command: list[str]
    returncode: int
    output: str = field(repr=False)
    elapsed: float                    # seconds, the program's start and exit included

    @property
    def status_line(self) -> str:
        return next((line for line in self.output.splitlines() if line.startswith("HTTP/1.")), "")


def openssl_request(address, server_name: str, path: str = "/", *, ca: str | Path,
                    groups: str = HRR_GROUPS, timeout: float = TIMEOUT) -> OpenSSLRequest:
    """``GET path`` with ``openssl s_client -groups GROUPS``, which sends a key share for
    the first group only (OpenSSL 3's default): with the default ``HRR_GROUPS`` the server
    must answer with a HelloRetryRequest (RFC 8446 §4.1.4).  Trace the server side with
    ``tracing(proxy_context)`` to see it; ``openssl`` must be installed."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl_request needs the openssl program (apt-get install openssl)")
    host, port = address.address if hasattr(address, "address") else address
    command = [openssl, "s_client", "-connect", f"{host}:{port}", "-servername", server_name, "-CAfile", str(ca),
               "-verify_return_error", "-groups", groups, "-quiet"]
    request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
    started = time.perf_counter()
    done = subprocess.run(command, input=request, capture_output=True, text=True, timeout=timeout)
    return OpenSSLRequest(command, done.returncode, done.stdout + done.stderr, time.perf_counter() - started)


@contextlib.contextmanager
def tracing(context: ssl.SSLContext) -> Iterator[HandshakeTrace]:
    """Trace every connection made from ``context`` (a server's) while the block runs.

    One trace collects everything, so make one connection inside the block.  A server
    with several certificates switches context by SNI, and the message callback moves
    with it (``proxy.tls.contexts``); trace a single-certificate server to be sure the
    detach at the end catches every context the callback reached.
    """
    trace = HandshakeTrace()
    attach_tracer(context, lambda conn, event: trace.add(event))
    try:
        yield trace
    finally:
        detach_tracers(context)


# --------------------------------------------------------------------------- flights
@dataclass(frozen=True)
class Flight:
    """Messages one side sent in a row, before the other side spoke."""

    sender: str                       # "client" or "server"
    messages: tuple[str, ...]
    size: int                         # bytes of the messages (handshake headers included)

    def __str__(self) -> str:
        return f"{self.sender:>6}: {', '.join(self.messages)} ({self.size} bytes)"


def flights(trace: HandshakeTrace | list[TraceEvent], *, alerts: bool = False) -> list[Flight]:
    """Group the trace's messages (``trace.message_flow()``'s, with sizes) into flights.

    Alerts are left out unless ``alerts=True``: the close_notify at the end of every
    connection (RFC 8446 §6.1) belongs to the connection, not to its handshake."""
    result: list[Flight] = []
    for event in trace:
        name = flow_name(event)
        if name is None or (event.kind == "alert" and not alerts):
            continue
        if result and result[-1].sender == event.sender:
            last = result[-1]
            result[-1] = Flight(last.sender, last.messages + (name,), last.size + event.length)
        else:
            result.append(Flight(event.sender, (name,), event.length))
    return result


def round_trips(trace: HandshakeTrace | list[TraceEvent]) -> int:
    """The server flights the client waited for before it could send its request: every
    one up to and including the flight with the server's Finished.  0 if none was seen."""
    waited = 0
    for flight in flights(trace):
        if flight.sender == "server":
            waited += 1
            if "Finished" in flight.messages:
                return waited
    return 0


# --------------------------------------------------------------------------- certificates
_SIGNATURE_NAMES = {oid: name for name, oid in vars(SignatureAlgorithmOID).items()
                    if isinstance(oid, ObjectIdentifier)}


@dataclass(frozen=True)
class CertificateSummary:
    name: str
    key_type: str                 # "ECDSA P-256", "RSA-2048"
    public_key_bytes: int         # the SubjectPublicKeyInfo, DER
    signature_algorithm: str      # how the CA signed this certificate
    der_bytes: int                # the whole certificate, as it travels in the Certificate message


def certificate_summary(path: str | Path) -> CertificateSummary:
    """The sizes of a PEM certificate, as the Certificate message carries it (DER)."""
    certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_type = "ECDSA " + {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name, key.curve.name)
    elif isinstance(key, rsa.RSAPublicKey):
        key_type = f"RSA-{key.key_size}"
    else:
        key_type = type(key).__name__
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    oid = certificate.signature_algorithm_oid
    algorithm = _SIGNATURE_NAMES.get(oid, oid.dotted_string)     # e.g. "ECDSA_WITH_SHA256"
    return CertificateSummary(names.get_values_for_type(x509.DNSName)[0], key_type, len(spki), algorithm,
                              len(certificate.public_bytes(serialization.Encoding.DER)))


# --------------------------------------------------------------------------- what a handshake costs
@dataclass
class HandshakeCost:
    """Per-handshake samples, in microseconds."""

    label: str
    version: str
    server_cpu_us: list[float]    # the server thread's CPU time inside do_handshake()
    client_cpu_us: list[float]    # the client thread's CPU time: connect, handshake, first byte
    wall_us: list[float]          # wall clock for the same span, as the client saw it

    @staticmethod
    def _median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    @staticmethod
    def _spread(values: list[float]) -> tuple[float, float]:
        if len(values) < 10:
            return (min(values), max(values)) if values else (float("nan"), float("nan"))
        deciles = statistics.quantiles(values, n=10)
        return deciles[0], deciles[-1]

    @property
    def server_cpu(self) -> float:
        return self._median(self.server_cpu_us)

    @property
    def client_cpu(self) -> float:
        return self._median(self.client_cpu_us)

    @property
    def wall(self) -> float:
        return self._median(self.wall_us)

    def row(self) -> dict[str, str]:
        """A table row: medians, and the 10th-90th percentile range of the server's CPU."""
        low, high = self._spread(self.server_cpu_us)
        return {"certificate": self.label, "TLS": self.version, "handshakes": str(len(self.wall_us)),
                "server CPU µs (median)": f"{self.server_cpu:.0f}", "server CPU p10-p90": f"{low:.0f}-{high:.0f}",
                "client CPU µs": f"{self.client_cpu:.0f}", "wall µs": f"{self.wall:.0f}"}


def handshake_cost(cert: str, key: str, *, ca: str | Path, server_name: str, count: int = 300,
                   tls: str = "1.3", label: str | None = None) -> HandshakeCost:
    """Run ``count`` full handshakes on loopback: a server thread with the proxy's context
    for ``cert``/``key``, the client in this thread.  Each connection carries one byte
    from the server, so the client also processes what follows the handshake (TLS 1.3
    session tickets) before it closes."""
    if not 1 <= count <= MAX_HANDSHAKES:
        raise ValueError(f"count must be 1..{MAX_HANDSHAKES}")
    server = server_context([CertKey(cert, key)], keylog="")
    client = request_context(ca, tls=tls)
    server_cpu: list[float] = []
    failures: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                for _ in range(count):
                    connection, _ = listener.accept()
                    connection.settimeout(TIMEOUT)
                    # Without it Nagle holds the last small segment for the client's delayed
                    # ACK, and every handshake takes 40 ms of waiting (FACTS.md).
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with server.wrap_socket(connection, server_side=True, do_handshake_on_connect=False) as tls_sock:
                        before = time.thread_time()
                        tls_sock.do_handshake()
                        server_cpu.append((time.thread_time() - before) * 1e6)
                        tls_sock.sendall(b"x")
                        with contextlib.suppress(OSError):   # ssl.SSLError is an OSError
                            tls_sock.recv(1)          # wait for the client to close, then close ours
            except (OSError, ssl.SSLError) as error:
                failures.append(error)

        thread = threading.Thread(target=serve, name="handshake-cost-server", daemon=True)
        thread.start()
        client_cpu, wall = [], []
        try:
            for _ in range(count):
                cpu_before, wall_before = time.thread_time(), time.perf_counter()
                with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw:
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with client.wrap_socket(raw, server_hostname=server_name) as tls_sock:
                        tls_sock.recv(1)
                        client_cpu.append((time.thread_time() - cpu_before) * 1e6)
                        wall.append((time.perf_counter() - wall_before) * 1e6)
                if failures:
                    break
        finally:
            thread.join(TIMEOUT)
    if failures:
        raise RuntimeError(f"handshake_cost: the server failed: {failures[0]}")
    return HandshakeCost(label or Path(cert).stem, "TLSv1.2" if tls == "1.2" else "TLSv1.3",
                         server_cpu, client_cpu, wall)
