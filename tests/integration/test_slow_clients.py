"""Slow and hostile clients: they are cut off on time, and they leave no thread behind.

A threaded server's weak point is that every connection holds a thread, so the
cheapest attack on it is a client that holds a connection while doing almost
nothing: *slowloris* (send one header byte every few seconds, never finish the
head), or a TLS handshake that never completes.  The defences under test:

* the whole request head must arrive within ``header_read`` seconds (an overall
  deadline, not a per-read timeout that each trickled byte would reset), or the
  client gets 408 and a close; on a kept-alive connection too;
* the whole TLS handshake must finish within ``handshake`` seconds;
* garbage (plaintext HTTP, a ClientHello that is not one) is refused at once;
* a client that vanishes, mid-handshake or mid-body, frees its connection, and
  after the burst the proxy's thread count returns to its baseline (spare threads
  exit after ``worker_idle``).

The proxy runs in this process, so ``threading.active_count()`` counts its threads;
the test drives every client from its own thread, so it adds none.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from proxy import config as cfg
from tests.fakes import RawTLSClient, client_context
from tests.processes import wait_until
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "clienthello"
HEAD = b"GET /echo-id HTTP/1.1\r\nHost: www.example.test\r\nX-Request-Id: slow\r\n\r\n"
SLOWLORIS = 300

TIMEOUTS = cfg.Timeouts(handshake=2.0, header_read=3.0, idle_keepalive=5.0, body_read=2.0, worker_idle=0.5)


def normal_request(port: int, pki, request_id: str = "normal") -> int:
    with RawTLSClient(port, pki.ca) as client:
        client.send(HEAD.replace(b"slow", request_id.encode()))
        response = client.read_response()
    assert response.body.count(request_id.encode()) == 1
    return response.status


def reset(sock: socket.socket) -> None:
    """Vanish: close with a TCP RST, as a client whose machine died (or who wants to hurt)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def make_proxy(pki, origin_factory, proxy_factory):
    def make(timeouts: cfg.Timeouts = TIMEOUTS):
        origin = origin_factory("web")
        server = proxy_factory({"web": [origin.url]}, timeouts=timeouts)
        assert normal_request(server.port, pki, "warm-up") == 200  # the pooled backend connection exists now
        server.baseline_threads = threading.active_count()
        server.baseline_workers = server.connection_threads
        return server
    return make


@pytest.fixture
def proxy(make_proxy):
    return make_proxy()


def assert_back_to_baseline(proxy) -> None:
    """No connection left, and the threads the burst started have exited."""
    assert wait_until(lambda: proxy.stats.connections_active == 0, 10), proxy.stats.snapshot()
    assert wait_until(lambda: proxy.connection_threads <= proxy.baseline_workers, 10), \
        f"{proxy.connection_threads} connection threads, baseline {proxy.baseline_workers}"
    assert wait_until(lambda: threading.active_count() <= proxy.baseline_threads, 10), \
        f"{threading.active_count()} threads, baseline {proxy.baseline_threads}: " \
        f"{sorted(t.name for t in threading.enumerate())}"


def test_slowloris_does_not_stop_a_normal_client_and_gets_408(make_proxy, pki):
    # The head deadline must outlast opening all 300 (about 2 s here: the proxy shares
    # this process's GIL); every one must still be held when the normal client comes.
    timeouts = replace(TIMEOUTS, header_read=5.0)
    proxy = make_proxy(timeouts)
    context = client_context(pki.ca)
    loris = []
    for _ in range(SLOWLORIS):
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        loris.append(context.wrap_socket(raw, server_hostname="www.example.test"))
    answers = {id(s): b"" for s in loris}
    open_socks = list(loris)
    served_while_held = False
    position = 0
    deadline = time.monotonic() + timeouts.header_read + 5
    while open_socks and time.monotonic() < deadline:
        for sock in list(open_socks):
            try:
                sock.send(HEAD[position:position + 1])  # one header byte per round
            except OSError:
                pass  # cut off by the proxy: read what it said below
        position = min(position + 1, len(HEAD) - 5)  # never finish the head
        if position == 1:
            # 300 connections are held open mid-head right now; a normal client is served.
            assert proxy.stats.connections_active >= SLOWLORIS
            assert normal_request(proxy.port, pki) == 200
            served_while_held = proxy.stats.connections_active >= SLOWLORIS
        time.sleep(0.1)
        for sock in list(open_socks):
            sock.setblocking(False)
            try:
                while data := sock.recv(4096):
                    answers[id(sock)] += data
                open_socks.remove(sock)  # EOF
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                open_socks.remove(sock)
            sock.setblocking(True)
    for sock in loris:
        sock.close()
    assert served_while_held
    assert not open_socks, f"{len(open_socks)} slowloris connections outlived the header deadline"
    statuses = {answer[:12] for answer in answers.values()}
    assert statuses == {b"HTTP/1.1 408"}, statuses
    assert_back_to_baseline(proxy)


def test_slowloris_on_a_kept_alive_connection_gets_408(proxy, pki):
    """The head deadline also holds for the second request of a connection."""
    with RawTLSClient(proxy.port, pki.ca) as client:
        client.send(HEAD)
        assert client.read_response().status == 200
        started = time.monotonic()
        answered = False
        for byte in HEAD[:-4] * 3:  # each byte comes well within idle_keepalive of the last
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            if answered := bool(select.select([client.sock], [], [], 0.1)[0]):
                break
            if time.monotonic() - started > TIMEOUTS.idle_keepalive + 3:
                break
        assert answered, "the trickled second head was never cut off"
        response = client.read_response()
        client.read_until_closed(timeout=3)
    assert response.status == 408, client.received[-300:]
    assert client.end in ("close_notify", "eof", "reset")
    assert_back_to_baseline(proxy)


def test_tls_handshake_trickled_byte_by_byte_is_cut_at_the_deadline(proxy):
    """A ClientHello sent one byte every 0.1 s would take ~50 s: the handshake deadline ends it."""
    hello = (FIXTURES / "python-ssl.bin").read_bytes()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(0.1)
    started = time.monotonic()
    closed = False
    try:
        for byte in hello:
            try:
                sock.send(bytes([byte]))
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
            if time.monotonic() - started > TIMEOUTS.handshake + 3:
                break
    finally:
        sock.close()
    assert closed, "the proxy kept waiting for a handshake trickled byte by byte"
    assert_back_to_baseline(proxy)


def test_hostile_and_vanishing_clients_are_cleaned_up(proxy, pki):
    hello = (FIXTURES / "python-ssl.bin").read_bytes()
    context = client_context(pki.ca)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)

    def closed_by_proxy(sock: socket.socket, within: float) -> bool:
        sock.settimeout(within)
        try:
            while sock.recv(4096):
                pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    silent = [connect() for _ in range(20)]  # TCP, then nothing: no ClientHello at all

    plaintext = connect()  # plain HTTP to the TLS port: refused at once, not at the deadline
    plaintext.sendall(HEAD)
    assert closed_by_proxy(plaintext, TIMEOUTS.handshake / 2)

    garbage = connect()  # a handshake record whose body is not a ClientHello
    garbage.sendall(b"\x16\x03\x01\x00\x40" + os.urandom(64))
    assert closed_by_proxy(garbage, TIMEOUTS.handshake / 2)

    for vanish in (lambda s: s.close(), reset):  # half a ClientHello, then FIN / RST
        sock = connect()
        sock.sendall(hello[: len(hello) // 2])
        time.sleep(0.05)
        vanish(sock)

    # After the handshake: vanish in the middle of a head, and in the middle of a body.
    for request in (HEAD[:20], b"POST /upload HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10):
        for vanish in (lambda s: s.close(), reset):
            tls = context.wrap_socket(connect(), server_hostname="www.example.test")
            tls.sendall(request)
            time.sleep(0.1)
            vanish(tls)

    for sock in silent:
        assert closed_by_proxy(sock, TIMEOUTS.handshake + 2), "a silent client outlived the handshake deadline"
        sock.close()
    assert proxy.stats.handshake_failures >= 2 + len(silent)
    assert normal_request(proxy.port, pki) == 200  # and the proxy serves as before
    assert_back_to_baseline(proxy)
