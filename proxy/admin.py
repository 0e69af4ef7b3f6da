"""The live status page: what the proxy is doing right now, in a browser.

Theory of operation
-------------------
An *admin listener* is separate from the traffic listeners and bound to loopback by
default (``--admin 127.0.0.1:8081``): status pages leak internals (backend
addresses, error messages) and must never face the internet, which is why nginx's
``stub_status`` and HAProxy's stats page are usually on an internal address too.

Two resources:

``/status.json``
    the numbers: connections (active, total, by state), requests and requests per
    second (over the last few seconds), handshakes full vs resumed, TLS versions and
    ciphers in use, the protocols ALPN chose (h2, http/1.1), bytes in and out, and every pool's backends with their health.
``/``
    a small HTML page that fetches ``/status.json`` every second and redraws itself.

It runs on the standard library's ``ThreadingHTTPServer``: the admin page is not on
the hot path, so the simplest correct server is the right one.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from proxy.config import Address


class RateMeter:
    """Requests per second over a sliding window, from periodic samples of a counter."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()
        self.lock = threading.Lock()

    def sample(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.samples.append((now, total))
            while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
                self.samples.popleft()
            (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def status(server, meter: RateMeter) -> dict:
    """Everything the page shows, as one JSON-friendly dict."""
    snapshot = server.stats.snapshot()
    with server.connections_lock:
        states = Counter(conn.state.name.lower() for conn in server.connections)
    snapshot["connections_by_state"] = dict(states)
    snapshot["requests_per_second"] = round(meter.sample(snapshot["requests_total"]), 2)
    snapshot["pools"] = [balancer.snapshot() for balancer in server.balancers.values()]
    snapshot["listeners"] = [
        {"address": f"{host}:{port}", "mode": listener.mode}
        for (host, port), (_, listener) in zip(server.addresses, server.listen_sockets)
    ]
    snapshot["draining"] = server.draining
    return snapshot


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tlsproxy status</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
 table { border-collapse: collapse; } td, th { padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: left; }
 .num { text-align: right; font-variant-numeric: tabular-nums; }
 .up { color: #17803d; font-weight: bold; } .down { color: #b42318; font-weight: bold; }
 #stamp { color: #888; }
</style></head>
<body>
<h1>tlsproxy status <span id="stamp"></span></h1>
<table id="totals"></table>
<h2>Backends</h2><table id="backends"></table>
<h2>TLS</h2><table id="tls"></table>
<script>
const fmt = n => typeof n === "number" ? n.toLocaleString() : n;
function rows(el, data) {
  document.getElementById(el).innerHTML = data.map(r =>
    "<tr>" + r.map((c, i) => i ? `<td class="num">${c}</td>` : `<th>${c}</th>`).join("") + "</tr>").join("");
}
async function refresh() {
  try {
    const s = await (await fetch("status.json", {cache: "no-store"})).json();
    rows("totals", [
      ["listeners", s.listeners.map(l => l.mode + " " + l.address).join(", ")],
      ["active connections", fmt(s.connections_active)],
      ["connections since start", fmt(s.connections_total)],
      ["requests", fmt(s.requests_total)],
      ["requests per second", fmt(s.requests_per_second)],
      ["handshakes full / resumed", fmt(s.handshakes_full) + " / " + fmt(s.handshakes_resumed)],
      ["handshake failures", fmt(s.handshake_failures)],
      ["refused: over max_connections_per_client", fmt(s.refused_per_client)],
      ["bytes in / out", fmt(s.bytes_in) + " / " + fmt(s.bytes_out)],
      ["uptime (s)", fmt(s.uptime)],
    ]);
    const b = [["pool / backend", "state", "in flight", "requests", "last error"]];
    for (const p of s.pools) for (const x of p.backends)
      b.push([p.name + " (" + p.strategy + ") " + x.name,
              x.available ? '<span class="up">up</span>' : '<span class="down">down</span>',
              fmt(x.in_flight), fmt(x.requests), x.last_error || ""]);
    rows("backends", b);
    const t = [];
    for (const [k, v] of Object.entries(s.tls_versions)) t.push(["version " + k, fmt(v)]);
    for (const [k, v] of Object.entries(s.ciphers)) t.push(["cipher " + k, fmt(v)]);
    for (const [k, v] of Object.entries(s.alpn || {})) t.push(["ALPN " + k, fmt(v)]);
    rows("tls", t.length ? t : [["no TLS handshakes yet", ""]]);
    document.getElementById("stamp").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = "1";
  } catch (e) {
    document.getElementById("stamp").textContent = "proxy unreachable: " + e;
  }
}
refresh(); setInterval(refresh, 1000);
</script>
</body></html>
"""


class AdminServer:
    """The admin listener: start() it beside a ProxyServer, stop() it after."""

    def __init__(self, proxy_server, address: Address):
        self.proxy = proxy_server
        self.meter = RateMeter()
        admin = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "tlsproxy-admin"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/status.json":
                    body = json.dumps(status(admin.proxy, admin.meter), indent=1).encode()
                    kind = "application/json"
                elif path in ("/", "/index.html"):
                    body, kind = PAGE.encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: the proxy has its own access log
                pass

        self.httpd = ThreadingHTTPServer((address.host, address.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,), name="admin", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "AdminServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
