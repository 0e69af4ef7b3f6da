"""The unpooled variants for real: a new backend connection per request, none kept idle.

Each case starts one instance with the benchmark's own launcher
(``course.bench.setups.SetupLauncher``: the origin and the proxy or nginx as
processes, on loopback ports the kernel or the launcher picked), sends two requests
on one client TLS connection, and counts the connections the origin accepted: each
answer of the demo origin names its peer (``"client": "127.0.0.1:PORT"``), here the
proxy's end of the backend connection.  Then it reads ``/proc/net/tcp`` for
connections still established to the origin: the pooled proxies keep one idle, the
unpooled ones none.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from http.client import HTTPResponse

import pytest

from course.bench.setups import CERT_NAMES, SetupLauncher, instance_key
from course.bench.variants import NGINX_UNPOOLED, UNPOOLED
from course.bench.workloads import NGINX
from tests.tools import require_tool

pytestmark = pytest.mark.slow
ESTABLISHED = "01"  # the TCP state in /proc/net/tcp (include/net/tcp_states.h)


def ask(tls: ssl.SSLSocket, host: str, path: str) -> dict:
    """One GET on the kept-alive client connection; the origin's JSON description of it."""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = HTTPResponse(tls)
    response.begin()
    body = response.read()
    assert response.status == 200 and not response.will_close, (response.status, body[:200])
    return json.loads(body)


def established_to(port: int) -> int:
    """Established TCP connections on loopback with ``port`` as their remote end."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def settled(port: int, expected: int, timeout: float = 3.0) -> int:
    """The count once it reaches ``expected`` (a close takes a moment to be seen), or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (count := established_to(port)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.mark.parametrize("setup, pooled", [("terminate", True), (UNPOOLED, False), (NGINX, True),
                                           (NGINX_UNPOOLED, False)])
def test_backend_connections_per_request(setup, pooled, pki, tmp_path):
    if setup in (NGINX, NGINX_UNPOOLED):
        require_tool("nginx")
    key = instance_key(setup, "ecdsa")
    launcher = SetupLauncher(pki, tmp_path)
    try:
        running = launcher.start([key])[key]
        origin_port = running.children[0].port
        host = CERT_NAMES["ecdsa"]
        context = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(running.connect_to, timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            peers = [ask(tls, host, f"/who/{i}")["client"] for i in (1, 2)]
            # While the client connection stays open: is a backend connection kept for the next request?
            kept = settled(origin_port, 1 if pooled else 0)
    finally:
        launcher.stop()
    accepted = len(set(peers))  # one proxy port per backend connection the origin accepted
    if pooled:
        assert accepted == 1, peers
        assert kept >= 1
    else:
        assert accepted == 2, peers
        assert kept == 0, f"{kept} backend connection(s) left open by {setup}"
