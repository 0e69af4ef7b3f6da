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
"""

from __future__ import annotations

import os
import socket
import sys

from proxy import config as cfg
from course.clients import https_get
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
    reply = https_get(("127.0.0.1", port), host, path, ca=ca)
    body = reply.json
    return {
        "status": reply.status,
        "certificate": reply.tls.certificate,
        "tls": reply.tls.version,
        "cipher": reply.tls.cipher,
        "origin": body["origin"],
        "origin_saw": body,
    }


def header(seen: dict, name: str) -> str:
    return next((v for k, v in seen["headers"] if k.lower() == name), "-")


def show(result: dict, host: str, path: str) -> None:
    seen = result["origin_saw"]
    print(f"  https://{host}{path}")
    print(f"    client was shown certificate  CN={result['certificate']}  ({result['tls']}, {result['cipher']})")
    print(f"    answered by origin            {result['origin']}  (status {result['status']})")
    print(f"    origin saw                    plain HTTP from {seen['client']}, tls={seen['tls']}")
    print(f"    origin saw X-Forwarded-For    {header(seen, 'x-forwarded-for')}"
          f"   X-Forwarded-Proto {header(seen, 'x-forwarded-proto')}")


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


def run_cli(args) -> int:
    print("TLS Termination Lab demo: everything runs on 127.0.0.1\n")
    pki = ensure_demo_certs(args.certs)
    print(f"1. certificates in {os.path.abspath(args.certs)}/ (development CA: ca.pem)")
    origins = {name: Origin(name).start() for name in ("web-1", "web-2", "api")}
    try:
        for name, origin in origins.items():
            print(f"2. origin {name:6} listening on {origin.url} (plain HTTP)")
        port = pick_port(args.port)
        server = ProxyServer(build_config(pki, port, origins, access_log=None)).bind()
        server.start()
        port = server.addresses[0][1]
        print(f"3. proxy terminating TLS on https://127.0.0.1:{port} "
              f"(certificates for {WWW} and {API}, chosen by SNI)\n")
        print("4. requests through the proxy:")
        for host, path in [(WWW, "/"), (WWW, "/"), (WWW, "/"), (WWW, "/api/users"), (API, "/v1/users")]:
            show(fetch(port, pki.ca, host, path), host, path)
        print("\n   round robin: the three requests to / alternate between web-1 and web-2;")
        print("   routing: /api/ on www and the api.example.test host both reach the API origin.")
        curl = (f"curl --cacert {os.path.relpath(pki.ca)} --resolve {WWW}:{port}:127.0.0.1 "
                f"https://{WWW}:{port}/")
        print(f"\n5. try it yourself:\n   {curl}\n   openssl s_client -connect 127.0.0.1:{port} "
              f"-servername {API} -CAfile {os.path.relpath(pki.ca)} </dev/null")
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
        for origin in origins.values():
            origin.stop()
