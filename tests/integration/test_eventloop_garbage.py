"""The event loop frees a closed connection at once, without the cycle collector.

CPython frees an object when its last reference goes, *unless* it is part of a reference
cycle: then only the garbage collector's passes find it, and a full pass (generation 2)
walks every object the process holds.  The event loop's objects point at each other by
design (a session holds its stream, the stream calls the session back; an exchange holds
its session, the session its exchange), so every closed connection used to wait for a
pass: under a new connection per request a full pass came every second or two, walked
about 150,000 objects and stopped the loop for 100 ms or more, which was the event loop's
p99 (measured with ``gc.callbacks``, 4 December 2026).  The fix lets go on close
(``Stream.close``, ``Clock.stop``, ``Timer.cancel``, the sessions' ``close`` and
``stream_done``).

Each test turns the collector off, runs real connections through a real proxy on the event
loop, keeps only weak references to their sessions, and checks that
the sessions are gone once the connections are closed: freed by reference counting alone.
The test would fail on the code before the fix: every reference would still be alive.
"""

from __future__ import annotations

import gc
import time
import weakref

import pytest

from tests.conftest import WWW, tls_connect
from tests.processes import wait_until
from tests.integration.test_h2 import H2Client

pytestmark = pytest.mark.slow
CONNECTIONS = 20


@pytest.fixture
def engine() -> str:
    return "eventloop"


@pytest.fixture
def collector_off():
    was = gc.isenabled()
    gc.collect()  # start clean: nothing of an earlier test waits for a pass
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def watch_sessions(server, refs: list) -> int:
    """Weak references to every session the engine has now (taken from the loop's own set); how many."""
    for session in list(server.engine.sessions):
        if all(ref() is not session for ref in refs):
            refs.append(weakref.ref(session))
    return len(refs)


def alive_after_close(server, refs: list, timeout: float = 5.0) -> list:
    """The sessions still alive once the loop has had ``timeout`` to close and release them all
    (a loaded machine can take a while; a session in a cycle stays alive however long we wait)."""
    deadline = time.monotonic() + timeout
    while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [ref() for ref in refs if ref() is not None]


def test_http1_connections_are_freed_without_the_collector(proxy_factory, origin_factory, pki, collector_off):
    origin = origin_factory("o")
    server = proxy_factory({"app": [origin.url]})
    refs: list = []
    for i in range(CONNECTIONS):
        with tls_connect(server.port, pki) as tls:
            # Its session, watched before any request: after the last response it may be gone
            # from the engine's set before the client has read a byte (a race a loaded CI lost).
            assert wait_until(lambda: watch_sessions(server, refs) == i + 1, 5), "no session for the connection"
            # A kept-alive request, then one that closes: both ways an exchange ends.
            tls.sendall(f"GET /bytes/1k HTTP/1.1\r\nHost: {WWW}\r\n\r\n"
                        f"GET /bytes/1k HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n\r\n".encode())
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
            assert received.count(b"HTTP/1.1 200 OK") == 2
    assert len(refs) == CONNECTIONS
    assert alive_after_close(server, refs) == []


def test_h2_connections_and_streams_are_freed_without_the_collector(proxy_factory, origin_factory, pki,
                                                                    collector_off):
    origin = origin_factory("o")
    server = proxy_factory({"app": [origin.url]})
    sessions: list = []  # (a stream left in a cycle with its exchange would keep its session alive too)
    for _ in range(CONNECTIONS // 2):
        client = H2Client(server.port, pki)
        sids = [client.request("/bytes/1k") for _ in range(4)]
        client.wait(*sids)
        assert all(client.streams[s]["headers"][b":status"] == b"200" for s in sids)
        watch_sessions(server, sessions)
        client.close()
    assert len(sessions) == CONNECTIONS // 2
    assert alive_after_close(server, sessions) == []
