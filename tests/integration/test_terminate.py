"""The terminate setup end to end: real TLS clients, the proxy, real origins, on loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time


from proxy import config as cfg
from tests.conftest import API, WWW, client_context, tls_connect
from tests.conftest import both_engines

engine = both_engines  # every test here runs on both engines (tests/conftest.py)


def https(port, pki, host=WWW):
    context = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.sock = tls_connect(port, pki, host, context=context)
    return conn


def get_json(conn, path="/", host=WWW, headers=None):
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    is_json = (response.getheader("Content-Type") or "").startswith("application/json")
    return response, json.loads(body) if is_json else body


def seen_headers(body) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def test_request_is_decrypted_and_forwarded_with_x_forwarded(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    response, body = get_json(conn, "/hello?x=1")
    assert response.status == 200
    assert body["origin"] == "web" and body["path"] == "/hello?x=1"
    assert body["tls"] is None, "the origin must receive plain HTTP: TLS ended at the proxy"
    headers = seen_headers(body)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == [WWW]
    assert headers["via"][0].endswith("tlsproxy")
    assert conn.sock.version() == "TLSv1.3"


def test_round_robin_across_two_origins(pki, origin_factory, proxy_factory):
    a, b = origin_factory("a"), origin_factory("b")
    proxy = proxy_factory({"web": [a.url, b.url]})
    conn = https(proxy.port, pki)
    answered = [get_json(conn)[1]["origin"] for _ in range(6)]
    assert answered == ["a", "b", "a", "b", "a", "b"]


def test_routing_by_host_and_path(pki, origin_factory, proxy_factory):
    web, api = origin_factory("web"), origin_factory("api")
    proxy = proxy_factory({"web": [web.url], "api": [api.url]}, routes=[
        cfg.RouteConfig("api", host=WWW, path="/api/"),
        cfg.RouteConfig("web", host=WWW),
        cfg.RouteConfig("api", host=API),
    ])
    conn = https(proxy.port, pki)
    assert get_json(conn, "/")[1]["origin"] == "web"
    assert get_json(conn, "/api/users")[1]["origin"] == "api"
    assert get_json(conn, "/apiary")[1]["origin"] == "web"
    api_conn = https(proxy.port, pki, API)
    assert get_json(api_conn, "/", host=API)[1]["origin"] == "api"
    response, _ = get_json(conn, "/", host="unknown.example.test")
    assert response.status == 404


def test_hop_by_hop_fields_never_reach_the_origin(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    _, body = get_json(conn, headers={
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "must not pass",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
        "Upgrade": "websocket",
        "X-End-To-End": "passes",
    })
    headers = seen_headers(body)
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "te", "upgrade"):
        assert name not in headers, f"{name} is hop-by-hop and reached the origin"
    assert headers["x-end-to-end"] == ["passes"]


def test_existing_x_forwarded_for_is_appended_to(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    _, body = get_json(https(proxy.port, pki), headers={"X-Forwarded-For": "203.0.113.7"})
    assert seen_headers(body)["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]


def test_pipelined_requests_are_answered_in_order(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    sock = tls_connect(proxy.port, pki)
    requests = b"".join(
        f"GET /echo-id HTTP/1.1\r\nHost: {WWW}\r\nX-Request-Id: req-{i}\r\n\r\n".encode() for i in range(5))
    sock.sendall(requests)
    received = b""
    deadline = time.monotonic() + 10
    while received.count(b"req-") < 10 and time.monotonic() < deadline:  # id in header and body
        received += sock.recv(65536)
    positions = [received.find(f"X-Request-Id: req-{i}".encode()) for i in range(5)]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)


def test_head_204_304_have_no_body(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    conn.request("HEAD", "/bytes/1000", headers={"Host": WWW})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == "1000"
    assert response.read() == b""
    for status in (204, 304):
        conn.request("GET", f"/status/{status}", headers={"Host": WWW})
        response = conn.getresponse()
        assert response.status == status and response.read() == b""
    # the connection is still in sync: a normal request still works on it
    assert get_json(conn)[0].status == 200


def test_large_download_and_chunked_response_stream_through(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    for path in ("/bytes/20m", "/chunked/3m"):
        conn.request("GET", path, headers={"Host": WWW})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200
        assert len(data) == (20 if "20m" in path else 3) * 1024 * 1024


def test_uploads_with_content_length_and_chunked(pki, origin_factory, proxy_factory):
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    payload = bytes(range(256)) * 4096 * 5  # 5 MiB
    conn.request("POST", "/upload", body=payload, headers={"Host": WWW})
    body = json.loads(conn.getresponse().read())
    assert body["body"] == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    conn.request("POST", "/upload", body=iter([payload[:1000], payload[1000:]]),
                 headers={"Host": WWW}, encode_chunked=True)
    body = json.loads(conn.getresponse().read())
    assert body["body"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert "transfer-encoding" in seen_headers(body)


def test_dead_backend_gives_502_then_the_survivor_serves(pki, origin_factory, proxy_factory):
    a, b = origin_factory("a"), origin_factory("b")
    proxy = proxy_factory({"web": [a.url, b.url]})
    conn = https(proxy.port, pki)
    assert [get_json(conn)[1]["origin"] for _ in range(2)] == ["a", "b"]
    a.stop()  # killed mid-test: its listening socket is gone
    statuses = []
    for _ in range(3):
        conn.request("GET", "/", headers={"Host": WWW})
        response = conn.getresponse()
        body = response.read()
        statuses.append((response.status, json.loads(body)["origin"] if response.status == 200 else body))
    assert statuses[0][0] == 502, statuses
    assert b"a" in statuses[0][1] or b"127.0.0.1" in statuses[0][1]
    assert [s for s, _ in statuses[1:]] == [200, 200]
    assert {o for _, o in statuses[1:]} == {"b"}, "the dead backend must be skipped after its failure"


def test_backend_timeout_gives_504(pki, origin_factory, proxy_factory):
    origin = origin_factory("slow")
    proxy = proxy_factory({"web": [origin.url]}, timeouts=cfg.Timeouts(backend_read=0.5))
    conn = https(proxy.port, pki)
    conn.request("GET", "/delay/3", headers={"Host": WWW})
    response = conn.getresponse()
    assert response.status == 504
    assert b"did not answer" in response.read()


def test_malformed_request_gets_400_and_close(pki, origin_factory, proxy_factory):
    origin = origin_factory("web", record_raw=True)
    proxy = proxy_factory({"web": [origin.url]})
    sock = tls_connect(proxy.port, pki)
    sock.sendall(f"POST / HTTP/1.1\r\nHost: {WWW}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\n".encode())
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data.lower()
    assert origin.raw_requests == [], "an ambiguous request must never reach the origin"


def test_idle_pooled_connection_closed_by_origin_is_retried(pki, origin_factory, proxy_factory):
    """A GET on a pooled connection the origin has closed is retried once, invisibly."""
    origin = origin_factory("web")
    proxy = proxy_factory({"web": [origin.url]})
    conn = https(proxy.port, pki)
    assert get_json(conn)[0].status == 200
    # Close the origin side of every pooled connection behind the proxy's back.
    # (Snapshots: the event loop drops a connection from the pool as soon as it sees it closed.)
    for queue in list(proxy.backend_pool.idle.values()):
        for pooled in list(queue):
            pooled.sock.shutdown(socket.SHUT_RDWR)
    assert get_json(conn)[0].status == 200
