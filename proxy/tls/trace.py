"""Watch a TLS handshake message by message, through OpenSSL's message callback.

Theory of operation
-------------------
OpenSSL can call a function for every protocol message it sends or receives
(``SSL_CTX_set_msg_callback``).  CPython exposes that as ``SSLContext._msg_callback``:
a *private* attribute, undocumented and free to change.  This module is the one place
that touches it.  ``attach_tracer`` installs a callback that turns each report into a
``TraceEvent`` and hands it to a sink; ``trace_available()`` says whether this Python
has the hook at all, and without it the proxy runs exactly the same, minus traces
(``attach_tracer`` warns once and returns ``False``).

What the callback reports, and its pitfalls (measured with CPython 3.11 and
OpenSSL 3.0 on Debian 12):

* every handshake message, alert and *sent* ChangeCipherSpec, with its raw bytes;
* two pseudo content types: 0x100, the 5-byte header of every record, and 0x101, the
  real (inner) content type of a TLS 1.3 protected record.  CPython labels their
  ``msg_type`` with the handshake enum (an inner type 22 shows up as
  ``CERTIFICATE_STATUS``), so this module ignores ``msg_type`` and reads ``data[0]``;
* a *received* ChangeCipherSpec only as a record header: ``message_flow`` therefore
  takes ChangeCipherSpec from record headers, in both directions;
* after an SNI callback switches ``SSLSocket.context``, later messages go to the *new*
  context's callback: attach the tracer to every context the server may switch to.

Directions are from the point of view of the endpoint that owns the context: "sent"
or "received", and ``sender`` says who spoke ("client" or "server").

A server fetches the trace of one connection after its handshake from a
``TraceRegistry``, which keeps one ``HandshakeTrace`` per ``SSLSocket``/``SSLObject``
(weakly: a connection that is garbage-collected takes its trace with it) behind a
lock, because every connection thread reports into it.

A TLS 1.3 full handshake traced by the client reads::

    sent      client -> server  ClientHello
    received  server -> client  ServerHello
    received  server -> client  EncryptedExtensions, Certificate, CertificateVerify, Finished
    sent      client -> server  Finished
    received  server -> client  NewSessionTicket (x2, after the first read)

A client whose key share the server cannot use first receives a HelloRetryRequest
(RFC 8446 §4.1.4).  On the wire, and in OpenSSL's report, it is a ServerHello with a
special random (§4.1.3); ``make_event`` names it ``HelloRetryRequest``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import ssl
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, TextIO, Union

from proxy.tls.records import (
    ALERT_LEVELS,
    CONTENT_TYPE_NAMES,
    ContentType,
    HandshakeType,
    alert_name,
    handshake_name,
    version_name,
)

log = logging.getLogger(__name__)

SSLConnection = Union[ssl.SSLSocket, ssl.SSLObject]
Sink = Callable[[SSLConnection, "TraceEvent"], None]

_HOOK_NAME = "_msg_callback"          # the private CPython attribute; named once, here
RECORD_HEADER = 0x100                 # OpenSSL's SSL3_RT_HEADER pseudo content type
INNER_CONTENT_TYPE = 0x101            # OpenSSL's SSL3_RT_INNER_CONTENT_TYPE
TRACE_UNAVAILABLE = ("handshake traces are off: this Python's ssl.SSLContext has no _msg_callback "
                     "(a private CPython hook, added in 3.8); connections work as usual")
MESSAGE_KINDS = ("handshake", "change_cipher_spec", "alert")
# RFC 8446 §4.1.3 (the same constant as proxy.tls.keyschedule's; not imported from there,
# so that tracing needs no cryptography)
HELLO_RETRY_REQUEST_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def trace_available() -> bool:
    """Does this interpreter have the message-callback hook?"""
    return hasattr(ssl.SSLContext, _HOOK_NAME)


@dataclass(frozen=True)
class TraceEvent:
    """One report of the message callback."""

    direction: str               # "sent" or "received", seen from this endpoint
    sender: str                  # "client" or "server": who sent it
    kind: str                    # "handshake", "change_cipher_spec", "alert", "record_header",
                                 # "inner_content_type" or "other"
    content_type: int            # 20..24, or the pseudo types 0x100 / 0x101
    name: str                    # "ClientHello", "Alert(fatal, unknown_ca)", "record header: handshake"
    length: int                  # message bytes; for a record header, the record's length field
    version: int                 # the protocol version OpenSSL reported
    time: float                  # time.perf_counter() when it was reported
    elapsed: float = 0.0         # seconds since the connection's first event (set by HandshakeTrace)
    msg_type: int | None = None  # handshake type, alert description, or the record's content type
    data: bytes = field(default=b"", repr=False)

    @property
    def is_message(self) -> bool:
        return self.kind in MESSAGE_KINDS


def make_event(*, server_side: bool, direction: str, version: int, content_type: int, data: bytes,
               when: float | None = None) -> TraceEvent:
    """Build a ``TraceEvent`` from the callback's arguments (a pure function, tested alone)."""
    sent = direction == "write"
    me, peer = ("server", "client") if server_side else ("client", "server")
    content_type, first = int(content_type), (data[0] if data else None)
    length, msg_type = len(data), first
    if content_type == RECORD_HEADER:
        kind, name = "record_header", f"record header: {_content_name(first)}"
        length = int.from_bytes(data[3:5], "big") if len(data) >= 5 else 0
    elif content_type == INNER_CONTENT_TYPE:
        kind, name = "inner_content_type", f"inner content type: {_content_name(first)}"
    elif content_type == ContentType.HANDSHAKE:
        kind, name = "handshake", _handshake_message_name(data)
    elif content_type == ContentType.ALERT:
        level = ALERT_LEVELS.get(data[0], str(data[0])) if data else "?"
        msg_type = data[1] if len(data) > 1 else None
        kind, name = "alert", f"Alert({level}, {alert_name(msg_type) if msg_type is not None else '?'})"
    elif content_type == ContentType.CHANGE_CIPHER_SPEC:
        kind, name = "change_cipher_spec", "ChangeCipherSpec"
    else:
        kind, name = "other", f"content type {content_type}"
    return TraceEvent("sent" if sent else "received", me if sent else peer, kind, content_type, name,
                      length, int(version), time.perf_counter() if when is None else when,
                      msg_type=msg_type, data=bytes(data))


def _handshake_message_name(data: bytes) -> str:
    """The message's name; RFC 8446 §4.1.3: a HelloRetryRequest is a ServerHello (type 2)
    whose random is the SHA-256 of "HelloRetryRequest".  OpenSSL reports it as a
    ServerHello, so the name comes from the bytes (header 4, legacy_version 2, random 32)."""
    if not data:
        return "handshake (empty)"
    if data[0] == HandshakeType.SERVER_HELLO and bytes(data[6:38]) == HELLO_RETRY_REQUEST_RANDOM:
        return "HelloRetryRequest"
    return handshake_name(data[0])


def _content_name(content_type: int | None) -> str:
    return CONTENT_TYPE_NAMES.get(content_type, f"type {content_type}") if content_type is not None else "?"


# --------------------------------------------------------------------------- one connection
class HandshakeTrace:
    """The events of one connection, in order, with times relative to the first.

    OpenSSL reports a record header (and, in TLS 1.3, an inner content type) for every
    record, application data included, so a long-lived connection would grow its trace
    without end.  ``application_records=False`` drops those two pseudo events for
    application-data records once the handshake is complete, and ``max_events`` caps
    the trace (``dropped`` counts what was left out); ``TraceRegistry`` uses both.
    """

    def __init__(self, events: list[TraceEvent] | tuple[TraceEvent, ...] = (), *,
                 max_events: int | None = None, application_records: bool = True):
        self.events: list[TraceEvent] = []
        self.max_events = max_events
        self.application_records = application_records
        self.dropped = 0
        self._finished: set[str] = set()        # directions in which a Finished went
        for event in events:
            self.add(event)

    def add(self, event: TraceEvent) -> TraceEvent | None:
        """Append ``event`` with its ``elapsed`` time set; ``None`` if it was left out."""
        if (not self.application_records and len(self._finished) == 2
                and event.kind in ("record_header", "inner_content_type")
                and event.msg_type == ContentType.APPLICATION_DATA):
            return None
        if self.max_events is not None and len(self.events) >= self.max_events:
            self.dropped += 1
            return None
        start = self.events[0].time if self.events else event.time
        event = replace(event, elapsed=event.time - start)
        self.events.append(event)
        if event.kind == "handshake" and event.msg_type == HandshakeType.FINISHED:
            self._finished.add(event.direction)
        return event

    def collect(self, conn: SSLConnection, event: TraceEvent) -> None:
        """A sink for ``attach_tracer`` when one trace follows one connection (notebooks)."""
        self.add(event)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def handshake_messages(self) -> list[str]:
        """Names of the handshake-protocol messages (content type 22), in order."""
        return [e.name for e in self.events if e.kind == "handshake"]

    def message_flow(self) -> list[tuple[str, str]]:
        """(direction, name) of every message: handshake messages, alerts, and one
        ChangeCipherSpec per CCS record (taken from record headers, see the docstring)."""
        return [(event.direction, name) for event, name in self._flow()]

    def _flow(self) -> Iterator[tuple[TraceEvent, str]]:
        for event in self.events:
            name = flow_name(event)
            if name is not None:
                yield event, name

    @property
    def side(self) -> str | None:
        """Which endpoint recorded this trace: "client" or "server"."""
        for event in self.events:
            return event.sender if event.direction == "sent" else ("client" if event.sender == "server" else "server")
        return None

    @property
    def version(self) -> int | None:
        """The version OpenSSL reported with the last handshake message.  Early messages
        are reported with the highest version *offered* (a TLS 1.2 connection's
        ClientHello says TLS 1.3), so only the later ones tell what was negotiated."""
        versions = [e.version for e in self.events if e.kind == "handshake"]
        return versions[-1] if versions else None

    @property
    def is_complete(self) -> bool:
        """Both Finished messages seen."""
        return len(self._finished) == 2

    @property
    def is_resumed(self) -> bool:
        """A complete handshake without any Certificate: the session was resumed (TLS 1.2
        session ID or ticket, TLS 1.3 PSK).  A full handshake always carries the
        server's Certificate."""
        return self.is_complete and not any(e.kind == "handshake" and e.msg_type == HandshakeType.CERTIFICATE
                                            for e in self.events)

    @property
    def handshake_duration(self) -> float | None:
        """Seconds from the first event to the last Finished, as this endpoint saw it."""
        finished = [e.elapsed for e in self.events if e.kind == "handshake" and e.msg_type == HandshakeType.FINISHED]
        return max(finished) if finished else None

    def format(self, *, records: bool = False) -> str:
        """A readable ladder; ``records=True`` also shows record headers and inner content types."""
        if not self.events:
            return "(no handshake trace" + ("" if trace_available() else f": {TRACE_UNAVAILABLE}") + ")"
        lines = [f"TLS handshake seen by the {self.side} ({version_name(self.version or 0)}, "
                 f"{len(self.events)} events)"]
        if records:                   # everything OpenSSL reported, pseudo types indented
            shown = [(e, ("" if e.is_message else "    ") + e.name) for e in self.events]
        else:                         # the message flow, as a ladder diagram draws it
            shown = list(self._flow())
        lines += ["  " + format_event(event, name) for event, name in shown]
        return "\n".join(lines)


def flow_name(event: TraceEvent) -> str | None:
    """The name ``event`` has in a message flow, or ``None`` if it is not a message there."""
    if event.kind in ("handshake", "alert"):
        return event.name
    if event.kind == "record_header" and event.msg_type == ContentType.CHANGE_CIPHER_SPEC:
        return "ChangeCipherSpec"
    return None


def format_event(event: TraceEvent, name: str | None = None) -> str:
    """One line: time since the connection's first event, direction, who to whom, what."""
    arrow = f"{event.sender} -> {'server' if event.sender == 'client' else 'client'}"
    length = 1 if name == "ChangeCipherSpec" else event.length
    return f"{event.elapsed * 1000:9.3f} ms  {event.direction:<8}  {arrow:<16}  {name or event.name} ({length} bytes)"


# --------------------------------------------------------------------------- the hook
class _Tracer:
    """The callable installed as ``ctx._msg_callback``; fans each event out to the sinks."""

    def __init__(self, previous: Callable | None = None):
        self.sinks: list[Sink] = []
        self.previous = previous       # a callback someone installed before us keeps working

    def __call__(self, conn, direction, version, content_type, msg_type, data) -> None:
        if self.previous is not None:
            self.previous(conn, direction, version, content_type, msg_type, data)
        event = make_event(server_side=bool(getattr(conn, "server_side", False)), direction=direction,
                           version=version, content_type=content_type, data=data)
        for sink in list(self.sinks):
            try:
                sink(conn, event)
            except Exception:
                # An exception here would surface from inside do_handshake() as if the
                # handshake had failed; a broken trace must never break a connection.
                log.exception("handshake trace sink %r failed", sink)


_warned = False


def attach_tracer(ctx: ssl.SSLContext, sink: Sink) -> bool:
    """Report every message of every connection made from ``ctx`` to ``sink(conn, event)``.

    Returns ``False`` (with one warning per process) when this Python lacks the hook.
    Attaching several sinks to one context is fine; they are called in order, in the
    thread that drives the connection's I/O.
    """
    global _warned
    if not trace_available():
        if not _warned:
            warnings.warn(TRACE_UNAVAILABLE, RuntimeWarning, stacklevel=2)
            _warned = True
        return False
    current = getattr(ctx, _HOOK_NAME)
    if not isinstance(current, _Tracer):
        current = _Tracer(previous=current)
        setattr(ctx, _HOOK_NAME, current)
    current.sinks.append(sink)
    return True


def detach_tracers(ctx: ssl.SSLContext) -> None:
    """Remove this module's callback (and every sink) from ``ctx``."""
    if trace_available() and isinstance(getattr(ctx, _HOOK_NAME), _Tracer):
        setattr(ctx, _HOOK_NAME, getattr(ctx, _HOOK_NAME).previous)


# --------------------------------------------------------------------------- many connections
class TraceRegistry:
    """One ``HandshakeTrace`` per live connection, for a server with many threads.

    ``registry.attach(ctx)`` for every context the server uses (SNI contexts too), then
    ``registry.trace(tls_socket)`` after the handshake.  Keys are weak references, so the
    registry never keeps a closed connection alive; ``pop`` drops a trace at once.
    """

    def __init__(self, *, max_events: int = 256) -> None:
        self.max_events = max_events            # per connection; a full TLS 1.3 handshake is ~35
        self._lock = threading.Lock()
        self._traces: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def attach(self, ctx: ssl.SSLContext) -> bool:
        return attach_tracer(ctx, self.record)

    def record(self, conn: SSLConnection, event: TraceEvent) -> TraceEvent | None:
        """The sink: file ``event`` under ``conn``; returns it with ``elapsed`` set (or None)."""
        with self._lock:
            trace = self._traces.get(conn)
            if trace is None:
                trace = self._traces[conn] = HandshakeTrace(max_events=self.max_events,
                                                            application_records=False)
            return trace.add(event)

    def trace(self, conn: SSLConnection) -> HandshakeTrace:
        """A snapshot of ``conn``'s trace so far (empty if nothing was recorded)."""
        with self._lock:
            trace = self._traces.get(conn)
            snapshot = HandshakeTrace(tuple(trace.events) if trace else ())
            snapshot.dropped = trace.dropped if trace else 0
            return snapshot

    def pop(self, conn: SSLConnection) -> HandshakeTrace:
        with self._lock:
            trace = self._traces.pop(conn, None)
        return trace if trace is not None else HandshakeTrace()

    def __len__(self) -> int:
        with self._lock:
            return len(self._traces)


# --------------------------------------------------------------------------- live printing
class _TracePrinter:
    """The sink behind ``print_traces``: one line per message, as it happens."""

    def __init__(self, stream: TextIO, records: bool):
        self.stream = stream
        self.records = records
        self.registry = TraceRegistry()            # for per-connection times
        self._numbers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, conn: SSLConnection, event: TraceEvent) -> None:
        stored = self.registry.record(conn, event)
        name = flow_name(event)
        if stored is None or (name is None and not self.records):
            return
        with self._lock:
            number = self._numbers.get(conn)
            if number is None:
                number = self._numbers[conn] = next(self._counter)
            print(f"tls #{number} {format_event(stored, name)}", file=self.stream, flush=True)


def print_traces(ctx: ssl.SSLContext, *, stream: TextIO | None = None, records: bool = False) -> bool:
    """Print every handshake message of every connection on ``ctx`` as it happens
    (``tlsproxy serve --trace``).  Lines carry a connection number, so interleaved
    handshakes stay readable.  Returns ``False`` when tracing is unavailable."""
    return attach_tracer(ctx, _TracePrinter(stream or sys.stderr, records))
