"""Active health checks: probe each backend on an interval, take it out and bring it back.

Theory of operation
-------------------
Passive health (``proxy.balancer``) learns only from real traffic: a backend that
died is found out by the next unlucky request, and one that recovered is retried
blindly after ``fail_timeout``.  Active checks ask instead: every ``interval``
seconds one thread sends ``GET <path>`` to each backend of each pool that has a
``health.path``.  A 2xx/3xx answer within ``timeout`` is a success.

A probe is an ordinary exchange with the backend, made with the proxy's own parts:
a fresh connection from the pool (``ConnectionPool.connect``: the same TLS context, SNI
and verification as real traffic), the request serialised by ``proxy.http1``, and the
response read with the one drive loop (``proxy.drive``) and the strict response reader,
so a backend that answers with malformed HTTP fails its check too.

Flapping is damped the way HAProxy's ``check rise 2 fall 3`` does it: a backend
goes *down* after ``fall`` consecutive failures and comes back *up* after ``rise``
consecutive successes.  Coming back also clears any passive ejection, and a
backend ejected passively (``proxy.balancer``) comes back the same way: after
``rise`` successful checks counted from the ejection, not after ``fail_timeout``.
"""

from __future__ import annotations

import threading
import time

from proxy import http1
from proxy.balancer import Backend, Balancer
from proxy.drive import next_event
from proxy.errors import ProtocolError, TransportError, UpstreamError


class HealthChecker:
    def __init__(self, server):
        self.server = server
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="health-checks", daemon=True)
        self.checks = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _targets(self) -> list[tuple[Balancer, Backend]]:
        targets = []
        for pool in self.server.config.pools:
            if pool.health.path:
                balancer = self.server.balancers[pool.name]
                targets.extend((balancer, b) for b in balancer.backends)
        return targets

    def _run(self) -> None:
        interval = min(p.health.interval for p in self.server.config.pools if p.health.path)
        while not self.stopping.is_set():
            for balancer, backend in self._targets():
                if self.stopping.is_set():
                    return
                self.record(balancer, backend, self.probe(balancer, backend))
            self.checks += 1
            self.stopping.wait(interval)

    def probe(self, balancer: Balancer, backend: Backend) -> str | None:
        """None if healthy, else the reason."""
        health = balancer.health
        request = http1.Request("GET", health.path, "HTTP/1.1", http1.Headers(
            [("Host", backend.name), ("User-Agent", "tlsproxy-health"), ("Connection", "close")]))
        try:
            conn = self.server.backend_pool.connect(backend)
        except UpstreamError as error:
            return f"health check failed: {error}"
        deadline = time.monotonic() + health.timeout
        try:
            conn.transport.send(http1.serialize_request_head(request), health.timeout)
            conn.reader.expect_response_to("GET")
            response = next_event(conn.reader, conn.transport, timeout=health.timeout, deadline=deadline)
            while 100 <= getattr(response, "status", 0) < 200:  # skip interim responses (RFC 9110 §15.2)
                next_event(conn.reader, conn.transport, timeout=health.timeout, deadline=deadline)
                response = next_event(conn.reader, conn.transport, timeout=health.timeout, deadline=deadline)
            if not isinstance(response, http1.Response):
                return "health check failed: the backend closed without answering"
            while not isinstance(next_event(conn.reader, conn.transport, timeout=health.timeout, deadline=deadline),
                                 http1.EndOfMessage):
                pass  # read the body to its end: a check is only good if the whole answer is
            if response.status >= 400:
                return f"health check {health.path} answered {response.status}"
            return None
        except (TransportError, ProtocolError) as error:
            return f"health check failed: {error}"
        finally:
            conn.close()

    @staticmethod
    def record(balancer: Balancer, backend: Backend, failure: str | None) -> None:
        health = balancer.health
        with balancer.lock:
            if failure is None:
                backend.check_failures = 0
                backend.check_successes += 1
                ejected = backend.active_down or backend.down_until > time.monotonic()
                if ejected and backend.check_successes >= health.rise:
                    backend.active_down = False
                    backend.down_until = 0.0  # also lift a passive ejection (HAProxy: a server
                    # marked down by `observe` errors comes back after `rise` good checks)
            else:
                backend.check_successes = 0
                backend.check_failures += 1
                backend.last_error = failure
                if backend.check_failures >= health.fall:
                    backend.active_down = True
