"""Backends that fail: every fault gives the right status, or a connection cut short.

The proxy stands between a client that did nothing wrong and a backend that
failed.  For each fault, on real loopback sockets (``tests.fakes``):

=================================  ==============================================
fault                              what the client must see
=================================  ==============================================
connection refused                 502
connect never completes            504 after ``backend_connect``
no answer                          504 after ``backend_read``
reset before the response          502
reset in the middle of the body    the head, fewer bytes than framed, a close
                                   without close_notify; never a last-chunk
an invalid response                502 (tests/integration/test_vectors_live.py
                                   has every malformed-response vector)
more bytes than Content-Length     exactly Content-Length bytes; the rest never
                                   reaches anyone (the backend connection is dropped)
=================================  ==============================================

Then what the proxy learns from failures: a backend that fails is ejected
(passive health, nginx ``max_fails``) and brought back by active checks (HAProxy
``rise``/``fall``) on a configurable path; and a request that is not idempotent
is never sent twice (RFC 9110 §9.2.2), counted on the backend's side.
"""

from __future__ import annotations

import time

import pytest

from proxy import config as cfg
from proxy.transport import DIRECT_COPY_AT
from tests.fakes import FakeBackend, RawTLSClient, refused_port, unaccepting_listener
from tests.processes import wait_until
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)


def get(client: RawTLSClient, path: str = "x", method: str = "GET"):
    client.send(b"%s /%s HTTP/1.1\r\nHost: www.example.test\r\n\r\n" % (method.encode(), path.encode()))
    return client.read_response(method)


# --------------------------------------------------------------------------- connect faults
def test_connection_refused_gives_502(pki, proxy_factory):
    proxy = proxy_factory({"web": [f"http://127.0.0.1:{refused_port()}"]})
    with RawTLSClient(proxy.port, pki.ca) as client:
        response = get(client)
    assert response.status == 502 and b"cannot connect" in response.body


def test_connect_that_never_completes_gives_504(pki, proxy_factory):
    with unaccepting_listener() as port:
        proxy = proxy_factory({"web": [f"http://127.0.0.1:{port}"]}, timeouts=cfg.Timeouts(backend_connect=0.5))
        with RawTLSClient(proxy.port, pki.ca) as client:
            response = get(client)
    assert response.status == 504 and b"did not accept a connection" in response.body


# --------------------------------------------------------------------------- response faults
def silent(conn):
    conn.read_request()
    conn.hold()


def reset_before_response(conn):
    conn.read_request()
    conn.reset()


def test_backend_that_never_answers_gives_504(pki, proxy_factory):
    with FakeBackend(silent) as backend:
        proxy = proxy_factory({"web": [backend.url]}, timeouts=cfg.Timeouts(backend_read=0.5))
        with RawTLSClient(proxy.port, pki.ca) as client:
            response = get(client)
            assert response.status == 504 and b"did not answer" in response.body
            assert len(backend.requests) == 1, "a GET that timed out is not sent again"


def test_reset_before_the_response_gives_502(pki, proxy_factory):
    with FakeBackend(reset_before_response) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            response = get(client)
    assert response.status == 502 and response.headers["server"] == "tlsproxy"


def test_invalid_response_gives_502(pki, proxy_factory):
    def garbage(conn):
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!")
        conn.hold()

    with FakeBackend(garbage) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            response = get(client)
    assert response.status == 502 and b"invalid response" in response.body


@pytest.mark.parametrize("framing", ["content-length", "chunked", "content-length-large"])
def test_reset_mid_body_cuts_the_client_connection(framing, pki, proxy_factory):
    """The head and part of the body are out: the client must see the cut, not a whole body.

    "content-length-large" is past ``DIRECT_COPY_AT``, where both engines copy the body past
    the reader's buffer: the reader must still count every byte, so that a cut is still a cut."""
    sent = b"x" * (3 * DIRECT_COPY_AT) if framing == "content-length-large" else b"hello"

    def reset_mid_body(conn):
        conn.read_request()
        if framing == "chunked":
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (10 * len(sent), sent))
        time.sleep(0.3)  # let the proxy forward the head and the first bytes
        conn.reset()

    with FakeBackend(reset_mid_body) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            response = get(client)
            client.read_until_closed(timeout=3)
    assert response.status == 200 and response.body == sent
    assert not response.complete, f"the cut body was completed: {client.received[-200:]!r}"
    assert client.end in ("eof", "reset"), f"closed with {client.end}: a close_notify would say 'this is all'"
    if framing == "chunked":
        assert not client.received.endswith(b"0\r\n\r\n"), "a last-chunk was invented"


def test_large_bodies_end_where_framed_and_the_connection_is_reused(pki, proxy_factory):
    """The direct copy's other half: it stops at Content-Length, so the pooled connection stays in step."""
    bodies = [bytes([65 + i]) * (2 * DIRECT_COPY_AT + 7 * i) for i in range(3)]  # A..., B..., C...

    def large(conn):
        for body in bodies:
            if not conn.serve_ok(body):
                return
        conn.hold(1)

    with FakeBackend(large) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            responses = [get(client, str(i)) for i in range(3)]
    assert [r.body for r in responses] == bodies and all(r.complete for r in responses)
    assert backend.connections == 1, "the body ended where the backend framed it: its connection was reused"


def test_reset_mid_body_to_an_http10_client_is_not_a_clean_close(pki, proxy_factory):
    """HTTP/1.0 has no chunked: the body ends with the connection, so only TLS can tell.

    RFC 9112 §9.8: a close-delimited response is complete only if a close_notify
    arrived.  So the proxy ends a whole body with close_notify and a cut one without.
    """
    def chunked(conn, cut: bool):
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        if cut:
            conn.reset()
        else:
            conn.send(b"0\r\n\r\n")
            conn.hold(1)

    for cut, clean_end in ((False, "close_notify"), (True, "eof")):
        with FakeBackend(lambda conn: chunked(conn, cut)) as backend:
            proxy = proxy_factory({"web": [backend.url]})
            with RawTLSClient(proxy.port, pki.ca) as client:
                client.send(b"GET / HTTP/1.0\r\nHost: www.example.test\r\n\r\n")
                response = client.read_response()
                client.read_until_closed(timeout=3)
        assert response.status == 200 and response.body == b"hello"
        assert "content-length" not in response.headers and "transfer-encoding" not in response.headers
        assert client.end == clean_end, f"cut={cut}: the connection ended with {client.end}"


@pytest.mark.parametrize("extra_later", [False, True], ids=["extra-in-same-write", "extra-after-a-pause"])
def test_response_longer_than_its_content_length_is_cut_and_the_connection_dropped(extra_later, pki, proxy_factory):
    def overlong(conn):
        if conn.index == 0:
            conn.read_request()
            if extra_later:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                time.sleep(0.3)
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
            else:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
            conn.hold(2)
            return
        while conn.serve_ok(b"fresh"):
            pass

    with FakeBackend(overlong) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            first = get(client, "one")
            time.sleep(0.5)  # the late extra bytes have arrived on the pooled connection
            second = get(client, "two")
        with RawTLSClient(proxy.port, pki.ca) as other:
            third = get(other, "three")
    assert first.status == 200 and first.body == b"hello" and first.complete
    assert (second.body, third.body) == (b"fresh", b"fresh"), "the extra bytes were served as a response"
    assert b"SMUGGLED" not in client.received + other.received
    assert backend.connections == 2, "the connection that sent too much must not be reused"


# --------------------------------------------------------------------------- health
def test_failing_backend_is_ejected_and_readmitted_by_active_checks(pki, origin_factory, proxy_factory):
    a, b = origin_factory("a"), origin_factory("b")
    health = cfg.HealthConfig(path="/status/204", interval=0.1, timeout=0.5, rise=2, fall=2,
                              max_fails=1, fail_timeout=60.0)  # passive ejection outlasts the test
    proxy = proxy_factory({"web": [a.url, b.url]}, pool_options={"web": {"health": health}})
    backend_a = proxy.balancers["web"].backends[0]
    with RawTLSClient(proxy.port, pki.ca) as client:
        assert [get(client, "echo-id").headers["server"] for _ in range(2)] == ["tlslab-origin/a", "tlslab-origin/b"]
        a.stop()
        statuses = [get(client, "echo-id") for _ in range(4)]
        assert statuses[0].status == 502
        assert [r.headers["server"] for r in statuses[1:]] == ["tlslab-origin/b"] * 3, "a was not ejected"
        assert not backend_a.available()
        assert wait_until(lambda: backend_a.active_down), "active checks never marked a down"
        a.start()  # same port: the backend comes back
        assert wait_until(backend_a.available), "active checks never brought a back (rise)"
        served = {get(client, "echo-id").headers["server"] for _ in range(4)}
    assert served == {"tlslab-origin/a", "tlslab-origin/b"}


def test_passive_ejection_is_lifted_by_rise_successful_checks(pki, origin_factory, proxy_factory):
    """Ejected by one failed request; the checks never failed (it recovered at once): back after `rise`."""
    state = {"fail": True}

    def flaky(conn):
        while (request := conn.read_request()) is not None:
            if state["fail"] and not request.startswith(b"GET /hc "):
                conn.reset()
                return
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nflaky")

    with FakeBackend(flaky) as fake:
        b = origin_factory("b")
        health = cfg.HealthConfig(path="/hc", interval=0.1, timeout=0.5, rise=3, fall=3, max_fails=1, fail_timeout=60.0)
        proxy = proxy_factory({"web": [fake.url, b.url]}, pool_options={"web": {"health": health}})
        backend = proxy.balancers["web"].backends[0]
        with RawTLSClient(proxy.port, pki.ca) as client:
            assert get(client).status == 502  # reset before the response: a failure
            assert not backend.available(), "a backend that reset the connection was not ejected"
            state["fail"] = False
            assert wait_until(backend.available), "rise successful checks did not lift the passive ejection"
            assert not backend.active_down
            served = [get(client).body for _ in range(4)]
    assert b"flaky" in served
    checks = [r for r in fake.requests if r.startswith(b"GET /hc ")]
    assert len(checks) >= 3 and all(b"user-agent: tlsproxy-health" in r.lower() for r in checks)


def test_active_checks_take_a_backend_down_after_fall_failures(pki, origin_factory, proxy_factory):
    state = {"healthy": False}

    def check_says(conn):
        while (request := conn.read_request()) is not None:
            if request.startswith(b"GET /ready ") and not state["healthy"]:
                conn.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake")

    with FakeBackend(check_says) as fake:
        b = origin_factory("b")
        health = cfg.HealthConfig(path="/ready", interval=0.1, timeout=0.5, rise=2, fall=3)
        proxy = proxy_factory({"web": [fake.url, b.url]}, pool_options={"web": {"health": health}})
        backend = proxy.balancers["web"].backends[0]
        assert wait_until(lambda: backend.active_down)
        assert backend.check_failures >= 3
        with RawTLSClient(proxy.port, pki.ca) as client:
            assert {get(client).headers["server"] for _ in range(4)} == {"tlslab-origin/b"}
            state["healthy"] = True
            assert wait_until(lambda: not backend.active_down)
            assert b"fake" in [get(client).body for _ in range(4)]


# --------------------------------------------------------------------------- retries
def reset_second_request(conn):
    """Connection 0 answers one request, then reads the next and resets: a keep-alive race."""
    if conn.index == 0:
        conn.serve_ok(b"first")
        conn.read_request()
        conn.reset()
        return
    while conn.serve_ok(b"retried"):
        pass


def test_post_that_may_have_reached_the_backend_is_never_retried(pki, proxy_factory):
    with FakeBackend(reset_second_request) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            assert get(client).body == b"first"
            client.send(b"POST /pay HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 4\r\n\r\n1 EU")
            response = client.read_response("POST")
    assert response.status == 502
    posts = [r for r in backend.requests if r.startswith(b"POST ")]
    assert len(posts) == 1 and posts[0].endswith(b"\r\n\r\n1 EU"), backend.requests
    assert backend.connections == 1, "the POST was sent again on a new connection"


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_only_idempotent_methods_are_retried(method, pki, proxy_factory):
    """DELETE is idempotent (RFC 9110 §9.2.2): retried once on a fresh connection; PATCH is not."""
    with FakeBackend(reset_second_request) as backend:
        proxy = proxy_factory({"web": [backend.url]})
        with RawTLSClient(proxy.port, pki.ca) as client:
            assert get(client).body == b"first"
            response = get(client, "item", method=method)
    sent = [r for r in backend.requests if r.startswith(method.encode())]
    if method == "DELETE":
        assert response.status == 200 and response.body == b"retried"
        assert len(sent) == 2 and backend.connections == 2
    else:
        assert response.status == 502 and len(sent) == 1 and backend.connections == 1
