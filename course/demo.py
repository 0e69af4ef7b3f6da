"""``tlsproxy demo``: TLS termination at work, on loopback, in one command.

What it does, in order:

1. makes a development CA and certificates under ``certs/`` (once; kept after);
2. starts three origin servers on free ports: the "web app" twice (pool ``web``,
   round robin) and the "API" once (pool ``api``);
3. starts the proxy on 127.0.0.1:8443 (or a free port if that is taken) with two
   certificates, chosen by SNI: ``www.example.test`` and ``api.example.test``;
4. sends a few HTTPS requests and prints, for each, the certificate the client was
   shown, the TLS version and cipher, which origin answered, and what the origin saw
   (a plain HTTP request from the proxy, with ``X-Forwarded-For`` naming the client);
5. prints a curl command to try, and keeps serving (with an access log) until Ctrl-C.

``--rtt 40`` puts a delay line (``course.delay``: every byte waits 20 ms each way) in
front of the proxy, and the requests of step 4 and the curl command go through it, so
each request shows what a TLS handshake costs at a distance: about one round trip for
TLS 1.3's handshake, one for the request and its response and one for the polite
close (TCP's own handshake is not delayed).  ``--backend-rtt 10`` does the same between the proxy and the origins.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from proxy import config as cfg
from course.clients import https_get
from course.delay import MAX_RTT, DelayLine
from proxy.errors import ConfigError
from course.origin import Origin
from proxy.pki import ensure_demo_certs
from proxy.server import ProxyServer

WWW, API = "www.example.test", "api.example.test"


def build_config(pki, port: int, origins: dict[str, Origin], access_log: str | None) -> cfg.Config:
    def backends(*names):
        return tuple(cfg.parse_backend(origins[n].url, where="demo") for n in names)

    return cfg.validate(cfg.Config(
        listeners=(cfg.ListenerConfig(cfg.Address("127.0.0.1", port), "terminate", (
            cfg.CertFiles(*pki.files(WWW)), cfg.CertFiles(*pki.files(API)))),),
        pools=(cfg.PoolConfig("web", backends("web-1", "web-2")), cfg.PoolConfig("api", backends("api"))),
        routes=(
            cfg.RouteConfig("api", host=WWW, path="/api/"),  # routing by path
            cfg.RouteConfig("web", host=WWW),
            cfg.RouteConfig("api", host=API),  # routing by Host
        ),
        access_log=access_log,
    ))


def fetch(port: int, ca: str, host: str, path: str) -> dict:
    """One HTTPS request, as a browser would make it to https://host:port/path."""
    started = time.perf_counter()
    reply = https_get(("127.0.0.1", port), host, path, ca=ca)
    elapsed = time.perf_counter() - started
    body = reply.json
    return {
        "status": reply.status,
        "certificate": reply.tls.certificate,
        "tls": reply.tls.version,
        "cipher": reply.tls.cipher,
        "origin": body["origin"],
        "origin_saw": body,
        "elapsed": elapsed,
    }


def header(seen: dict, name: str) -> str:
    return next((v for k, v in seen["headers"] if k.lower() == name), "-")


def show(result: dict, host: str, path: str, rtt: float = 0.0) -> None:
    seen = result["origin_saw"]
    print(f"  https://{host}{path}")
    print(f"    client was shown certificate  CN={result['certificate']}  ({result['tls']}, {result['cipher']})")
    print(f"    answered by origin            {result['origin']}  (status {result['status']})")
    print(f"    origin saw                    plain HTTP from {seen['client']}, tls={seen['tls']}")
    print(f"    origin saw X-Forwarded-For    {header(seen, 'x-forwarded-for')}"
          f"   X-Forwarded-Proto {header(seen, 'x-forwarded-proto')}")
    if rtt:
        print(f"    took                          {result['elapsed'] * 1000:.0f} ms "
              f"(= {result['elapsed'] / rtt:.1f} x the added {rtt * 1000:g} ms RTT)")


def pick_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0


def configure_cli(parser) -> None:
    parser.add_argument("--port", type=int, default=8443, help="proxy port (default %(default)s; a free one if taken)")
    parser.add_argument("--certs", default="certs", metavar="DIR", help="where certificates are made (default %(default)s)")
    parser.add_argument("--once", action="store_true", help="exit after the demo requests (for tests)")
    parser.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                        help="add this round-trip time (ms) between client and proxy (a userspace delay line)")
    parser.add_argument("--backend-rtt", type=float, default=0.0, metavar="MS",
                        help="add this round-trip time (ms) between the proxy and the origins")


class _Backend:
    """An origin as the proxy's pool sees it: its URL, or its delay line's (``--backend-rtt``)."""

    def __init__(self, url: str) -> None:
        self.url = url


def _seconds(ms: float, flag: str) -> float:
    if not 0 <= ms <= MAX_RTT * 1000:
        raise ConfigError(f"{flag} takes 0 to {MAX_RTT * 1000:.0f} ms, not {ms:g}")
    return ms / 1000


def run_cli(args) -> int:
    rtt, backend_rtt = _seconds(args.rtt, "--rtt"), _seconds(args.backend_rtt, "--backend-rtt")
    print("TLS Termination Lab demo: everything runs on 127.0.0.1\n")
    pki = ensure_demo_certs(args.certs)
    print(f"1. certificates in {os.path.abspath(args.certs)}/ (development CA: ca.pem)")
    origins = {name: Origin(name).start() for name in ("web-1", "web-2", "api")}
    lines: list[DelayLine] = []
    try:
        backends: dict = dict(origins)
        for name, origin in origins.items():
            print(f"2. origin {name:6} listening on {origin.url} (plain HTTP)")
            if backend_rtt:
                line = DelayLine(origin.address, rtt=backend_rtt).start()
                lines.append(line)
                backends[name] = _Backend(f"http://127.0.0.1:{line.port}")
                print(f"   behind a delay line on 127.0.0.1:{line.port} ({args.backend_rtt:g} ms RTT)")
        port = pick_port(args.port)
        server = ProxyServer(build_config(pki, port, backends, access_log=None)).bind()
        server.start()
        port = server.addresses[0][1]
        print(f"3. proxy terminating TLS on https://127.0.0.1:{port} "
              f"(certificates for {WWW} and {API}, chosen by SNI)\n")
        if rtt:
            front = DelayLine(("127.0.0.1", port), rtt=rtt).start()
            lines.append(front)
            port = front.port
            print(f"   and a delay line in front of it on 127.0.0.1:{port}: {args.rtt:g} ms of round-trip time "
                  f"added (course/delay.py; TCP's own handshake is not delayed)\n")
        print("4. requests through the " + ("delay line and the proxy:" if rtt else "proxy:"))
        for host, path in [(WWW, "/"), (WWW, "/"), (WWW, "/"), (WWW, "/api/users"), (API, "/v1/users")]:
            show(fetch(port, pki.ca, host, path), host, path, rtt)
        print("\n   round robin: the three requests to / alternate between web-1 and web-2;")
        print("   routing: /api/ on www and the api.example.test host both reach the API origin.")
        if rtt:
            print("   each request: one RTT for TLS 1.3's handshake, one for the request and its response"
                  + (" (plus the backend's)" if backend_rtt else "") + ", one for the polite close (our")
            print("   close_notify, then the server's: course.clients.close_politely), and the machine's own time.")
        curl = (f"curl --cacert {os.path.relpath(pki.ca)} --resolve {WWW}:{port}:127.0.0.1 "
                f"https://{WWW}:{port}/")
        print(f"\n5. try it yourself:\n   {curl}\n   openssl s_client -connect 127.0.0.1:{port} "
              f"-servername {API} -CAfile {os.path.relpath(pki.ca)} </dev/null")
        if rtt:
            print(f"   curl -w 'TLS done %{{time_appconnect}} s, first byte %{{time_starttransfer}} s\\n' -o /dev/null "
                  f"-s --cacert {os.path.relpath(pki.ca)} --resolve {WWW}:{port}:127.0.0.1 https://{WWW}:{port}/ "
                  "--tls-max 1.2      # and without --tls-max: one round trip less")
            print(f"   openssl s_client -connect 127.0.0.1:{port} -servername {WWW} -CAfile {os.path.relpath(pki.ca)} "
                  "-groups secp521r1:X25519 -msg </dev/null      # a HelloRetryRequest: one more")
        if args.once:
            server.shutdown(grace=1.0)
            return 0
        print("\nserving until Ctrl-C; access log:")
        server.access_log.stream = sys.stdout
        server.serve_forever()
        return 0
    except ConfigError:
        raise
    finally:
        for line in lines:
            line.stop(grace=0.0)
        for origin in origins.values():
            origin.stop()
