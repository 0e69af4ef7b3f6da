"""The nginx export: the same configuration run by our proxy and by nginx gives the same answers.

Each end-to-end test builds one ``Config``, starts our proxy on it (port 0) and nginx on
``export_nginx`` of it (its own free port), sends the same requests through both and
compares what the origins saw.  The other tests check the exported text itself,
``nginx -t`` on every example in lab/configs, and the ``tlsproxy export`` command.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from proxy import config as cfg
from proxy.errors import ConfigError
from course.nginx import NginxProcess, export_nginx, terminate_conf
from course.origin import Origin
from proxy.server import ProxyServer
from tests.conftest import API, REPO, WWW, client_context, free_port, tls_connect
from tests.tools import require_tool

ORIGIN_NAME = "origin.example.test"
HAS_PASSTHROUGH = (REPO / "proxy" / "modes" / "passthrough.py").exists()


# --------------------------------------------------------------------------- helpers
def backend(url: str) -> cfg.BackendConfig:
    return cfg.parse_backend(url, where="test")


def listener(mode: str, pki=None, port: int = 0) -> cfg.ListenerConfig:
    certs = () if pki is None else tuple(cfg.CertFiles(*map(str, pki.files(n))) for n in (WWW, API))
    return cfg.ListenerConfig(cfg.Address("127.0.0.1", port), mode, certs)


@contextlib.contextmanager
def tlsproxy_and_nginx(config: cfg.Config, workdir: Path):
    """Yield {"tlsproxy": port, "nginx": port}: the first listener of ``config`` on each."""
    require_tool("nginx")
    server = ProxyServer(config).bind().start()
    nginx_config = replace(config, listeners=tuple(
        replace(li, listen=cfg.Address("127.0.0.1", free_port())) for li in config.listeners))
    try:
        with NginxProcess(export_nginx(nginx_config, prefix=str(workdir)), workdir):
            yield {"tlsproxy": server.addresses[0][1], "nginx": nginx_config.listeners[0].listen.port}
    finally:
        server.shutdown(grace=1)


def https(port: int, pki, server_name: str = WWW) -> http.client.HTTPSConnection:
    context = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.sock = tls_connect(port, pki, server_name, context=context)
    return conn


def ask(conn, path: str = "/", host: str = WWW, method: str = "GET", body: bytes | None = None):
    """(status, the origin's JSON answer or None)."""
    conn.request(method, path, body=body, headers={"Host": host})
    response = conn.getresponse()
    data = response.read()
    if response.status == 200 and response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, None


def headers_seen(answer: dict) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in answer["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


@pytest.fixture
def origins():
    started: list[Origin] = []

    def start(name: str, **options) -> Origin:
        started.append(Origin(name, host="127.0.0.1", port=0, **options).start())
        return started[-1]

    yield start
    for origin in started:
        origin.stop()


# --------------------------------------------------------------------------- terminate
def terminate_scenario(port: int, pki) -> dict:
    """What the origins saw for a fixed list of requests through the proxy on ``port``."""
    seen: dict = {}
    www = https(port, pki, WWW)
    seen["round_robin"] = [ask(www, "/")[1]["origin"] for _ in range(4)]
    seen["paths"] = {path: ask(www, path)[1]["origin"] for path in ("/api", "/api/users", "/api?x=1", "/apiary")}
    status, answer = ask(www, "/hello?x=1")
    forwarded = headers_seen(answer)
    seen["forwarded"] = {name: forwarded.get(name) for name in ("x-forwarded-for", "x-forwarded-proto",
                                                                 "x-forwarded-host", "host")}
    seen["origin_saw_tls"] = answer["tls"]
    body = bytes(range(256)) * 4096  # 1 MiB, streamed through
    status, answer = ask(www, "/upload", method="POST", body=body)
    seen["upload"] = (status, answer["body"]["length"], answer["body"]["sha256"])
    seen["client_tls"] = www.sock.version()
    seen["api_host"] = ask(https(port, pki, API), "/", host=API)[1]["origin"]
    seen["other_host"] = ask(www, "/", host="other.example.test")[1]["origin"]
    return seen


def test_terminate_routes_and_balances_like_tlsproxy(pki, origins, tmp_path):
    web1, web2, api = origins("web-1"), origins("web-2"), origins("api")
    config = cfg.Config(
        listeners=(listener("terminate", pki),),
        pools=(cfg.PoolConfig("web", (backend(web1.url), backend(web2.url)), "round_robin"),
               cfg.PoolConfig("api", (backend(api.url),))),
        routes=(cfg.RouteConfig("api", host=WWW, path="/api"),  # "/api": a segment-boundary prefix
                cfg.RouteConfig("api", host=API),
                cfg.RouteConfig("web", host="*")),
        access_log=None)
    with tlsproxy_and_nginx(config, tmp_path / "nginx") as ports:
        ours = terminate_scenario(ports["tlsproxy"], pki)
        theirs = terminate_scenario(ports["nginx"], pki)
    assert ours["round_robin"] == ["web-1", "web-2", "web-1", "web-2"]
    assert ours["paths"] == {"/api": "api", "/api/users": "api", "/api?x=1": "api", "/apiary": "web-1"}
    assert ours["api_host"] == "api" and ours["other_host"] == "web-2"
    assert ours["forwarded"]["x-forwarded-for"] == ["127.0.0.1"]
    assert ours["forwarded"]["x-forwarded-proto"] == ["https"]
    assert ours["forwarded"]["x-forwarded-host"] == [WWW]
    assert ours["forwarded"]["host"] == [WWW]
    assert ours["origin_saw_tls"] is None, "TLS ends at the proxy: the origin gets plain HTTP"
    assert ours["upload"] == (200, 1 << 20, hashlib.sha256(bytes(range(256)) * 4096).hexdigest())
    assert ours["client_tls"] == "TLSv1.3"
    assert theirs == ours


# --------------------------------------------------------------------------- re-encrypt
def reencrypt_scenario(port: int, pki) -> dict:
    conn = https(port, pki, WWW)
    status, answer = ask(conn, "/")
    seen = {"status": status, "origin": answer["origin"], "tls_version": answer["tls"]["version"],
            "client_cert": answer["tls"]["client_cert_subject"],
            "proto": headers_seen(answer)["x-forwarded-proto"]}
    seen["wrong_name"] = ask(https(port, pki), "/wrong-name/")[0]
    seen["no_client_cert"] = ask(https(port, pki), "/no-client-cert/")[0]
    return seen


def test_reencrypt_verifies_the_origin_and_presents_a_client_certificate(pki, origins, tmp_path):
    origin_cert, origin_key = map(str, pki.files(ORIGIN_NAME))
    client_cert, client_key = map(str, pki.files("proxy-client"))
    # Three origins that require a client certificate (mutual TLS), one per pool: tlsproxy
    # keys backend TLS settings by backend URL, so pools must not share one.
    secure, other, third = (origins(name, cert=origin_cert, key=origin_key, client_ca=str(pki.ca))
                            for name in ("secure", "secure-2", "secure-3"))
    mutual = cfg.BackendTLS(ca=str(pki.ca), cert=client_cert, key=client_key, server_name=ORIGIN_NAME)
    config = cfg.Config(
        listeners=(listener("terminate", pki),),
        pools=(cfg.PoolConfig("secure", (backend(secure.url),), tls=mutual),
               cfg.PoolConfig("wrong-name", (backend(other.url),),
                              tls=replace(mutual, server_name="not-in-the-certificate.example.test")),
               cfg.PoolConfig("no-client-cert", (backend(third.url),),
                              tls=replace(mutual, cert=None, key=None))),
        routes=(cfg.RouteConfig("secure"), cfg.RouteConfig("wrong-name", path="/wrong-name/"),
                cfg.RouteConfig("no-client-cert", path="/no-client-cert/")),
        access_log=None)
    with tlsproxy_and_nginx(config, tmp_path / "nginx") as ports:
        ours = reencrypt_scenario(ports["tlsproxy"], pki)
        theirs = reencrypt_scenario(ports["nginx"], pki)
    assert ours["status"] == 200 and ours["origin"] == "secure"
    assert ours["tls_version"] == "TLSv1.3", "the origin terminated a second TLS session"
    assert "proxy-client" in ours["client_cert"], "the proxy showed its client certificate"
    assert ours["proto"] == ["https"]
    assert ours["wrong_name"] == 502, "an origin certificate for another name must be refused"
    assert ours["no_client_cert"] == 502, "the origin requires a client certificate"
    assert theirs == ours


# --------------------------------------------------------------------------- passthrough
def passthrough_scenario(port: int, pki) -> dict:
    seen = {}
    for name in (WWW, API):
        conn = https(port, pki, name)  # verifies the chain and that the certificate is for `name`
        status, answer = ask(conn, "/", host=name)
        seen[name] = {"origin": answer["origin"], "origin_tls": answer["tls"]["version"],
                      "certificate": conn.sock.getpeercert(binary_form=True)}
    try:
        https(port, pki, "nobody.example.test").close()
        seen["unknown"] = "handshake completed"
    except (ssl.SSLError, OSError):
        seen["unknown"] = "refused"
    return seen


@pytest.mark.skipif(not HAS_PASSTHROUGH, reason="proxy/modes/passthrough.py is not written yet")
def test_passthrough_routes_by_sni_to_origins_that_terminate(pki, origins, tmp_path):
    www = origins("tls-www", cert=str(pki.files(WWW)[0]), key=str(pki.files(WWW)[1]))
    api = origins("tls-api", cert=str(pki.files(API)[0]), key=str(pki.files(API)[1]))
    config = cfg.Config(
        listeners=(listener("passthrough"),),
        pools=(cfg.PoolConfig("www", (backend(www.url),)), cfg.PoolConfig("api", (backend(api.url),))),
        routes=(cfg.RouteConfig("www", sni=WWW), cfg.RouteConfig("api", host=API)),
        access_log=None)
    with tlsproxy_and_nginx(config, tmp_path / "nginx") as ports:
        ours = passthrough_scenario(ports["tlsproxy"], pki)
        theirs = passthrough_scenario(ports["nginx"], pki)
    for name, origin in ((WWW, "tls-www"), (API, "tls-api")):
        der = x509.load_pem_x509_certificate(Path(pki.files(name)[0]).read_bytes()).public_bytes(Encoding.DER)
        assert ours[name]["origin"] == origin
        assert ours[name]["certificate"] == der, "the client sees the origin's own certificate"
        assert ours[name]["origin_tls"] == "TLSv1.3", "one TLS session, client to origin"
    assert ours["unknown"] == "refused"
    assert theirs == ours


# --------------------------------------------------------------------------- the exported text
def example_config(pki) -> cfg.Config:
    return cfg.Config(
        listeners=(listener("terminate", pki, 8443), listener("passthrough", port=8445),
                   listener("forward", port=3128)),
        pools=(cfg.PoolConfig("web", (backend("http://127.0.0.1:9001"), backend("http://127.0.0.1:9002"))),
               cfg.PoolConfig("api", (backend("http://127.0.0.1:9003"),), "least_connections"),
               cfg.PoolConfig("heavy", (backend("http://127.0.0.1:9004"),
                                        cfg.BackendConfig("http://127.0.0.1:9005", "http", "127.0.0.1", 9005, 5)),
                              "weighted"),
               cfg.PoolConfig("secure", (backend("https://127.0.0.1:9443"),),
                              tls=cfg.BackendTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key),
                                                 server_name=ORIGIN_NAME))),
        routes=(cfg.RouteConfig("api", host=WWW, path="/api"), cfg.RouteConfig("heavy", host="*.example.test"),
                cfg.RouteConfig("secure", path="/secure/"), cfg.RouteConfig("web")),
        timeouts=cfg.Timeouts(header_read=7.0, idle_keepalive=30.0, body_read=0.5, backend_connect=3.0,
                              backend_read=20.0, send=9.0, tunnel_idle=300.0),
        access_log=None)


def test_export_maps_every_setting_to_its_directive(pki):
    text = export_nginx(example_config(pki), prefix="/srv/lab")
    for directive in (
        "daemon off;", "worker_processes 1;", "pid /srv/lab/nginx.pid;", "error_log /srv/lab/error.log",
        "proxy_temp_path /srv/lab/proxy_temp;", "access_log off;",
        "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
        "ssl_prefer_server_ciphers off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Forwarded-Host $host;",
        "client_header_timeout 7s;", "keepalive_timeout 30s;", "client_body_timeout 500ms;",
        "proxy_connect_timeout 3s;", "proxy_read_timeout 20s;", "send_timeout 9s;",
        "large_client_header_buffers 4 8k;", "keepalive_requests 1000;", "keepalive 32;",
        "least_conn;", "server 127.0.0.1:9005 weight=5", "max_fails=1 fail_timeout=10s",
        f"server_name {WWW};", "server_name *.example.test;", "default_server;",
        "location = /api {", "location /api/ {", "location /secure/ {", "proxy_pass http://web;",
        "proxy_pass https://secure;", "proxy_ssl_verify on;", f"proxy_ssl_trusted_certificate {pki.ca};",
        f"proxy_ssl_name {ORIGIN_NAME};", "proxy_ssl_server_name on;", f"proxy_ssl_certificate {pki.client_cert};",
        f"proxy_ssl_certificate_key {pki.client_key};", "proxy_ssl_session_reuse on;",
        "map $ssl_preread_server_name $tlsproxy_pool {", "ssl_preread on;", "proxy_pass $tlsproxy_pool;",
        "preread_timeout 10s;", "proxy_timeout 300s;",
        "mode forward) is not exported",
    ):
        assert directive in text, directive
    # Round robin ignores weights in tlsproxy, so the web pool must not get any.
    web = text[text.index("upstream web {"):]
    assert "weight=" not in web[:web.index("}")]
    assert "/etc/nginx" not in text and "/var/log" not in text


def test_nginx_accepts_the_export_and_reports_its_own_errors(pki, tmp_path):
    require_tool("nginx")
    NginxProcess(export_nginx(example_config(pki), prefix=str(tmp_path)), tmp_path).check()
    with pytest.raises(ConfigError, match=r"\[emerg\] unknown directive \"no_such_directive\" in .*:1$"):
        NginxProcess("no_such_directive on;\n", tmp_path / "bad").check()
    with pytest.raises(ConfigError, match="nginx cannot listen on port 0"):
        export_nginx(replace(example_config(pki), listeners=(listener("terminate", pki),)))


def test_terminate_conf_for_the_benchmark(pki, origins, tmp_path):
    require_tool("nginx")
    web = origins("web")
    port = free_port()
    cert, key = map(str, pki.files(WWW))
    text = terminate_conf(port, cert, key, [web.address], workdir=str(tmp_path), tls13_only=True)
    assert "ssl_protocols TLSv1.3;" in text and "keepalive 32;" in text
    assert "keepalive 32;" not in terminate_conf(port, cert, key, [web.address], workdir=str(tmp_path),
                                                 keepalive=False)
    with NginxProcess(text, tmp_path) as nginx:
        assert len(nginx.worker_pids()) == 1 and nginx.pids()[0] == nginx.pid
        conn = https(port, pki)
        assert ask(conn)[1]["origin"] == "web"
        assert conn.sock.version() == "TLSv1.3"
    assert nginx.process.poll() is not None, "stop() ends the master"


def copy_examples_with_certs(tmp_path: Path) -> list[Path]:
    """lab/configs/*.toml copied to TMP/lab/configs, certificates in TMP/certs (their ../../certs)."""
    from proxy.pki import ensure_demo_certs

    ensure_demo_certs(tmp_path / "certs")
    configs = tmp_path / "lab" / "configs"
    shutil.copytree(REPO / "lab" / "configs", configs)
    return sorted(configs.glob("*.toml"))


def test_every_example_config_exports_to_a_valid_nginx_conf(tmp_path):
    require_tool("nginx")
    examples = copy_examples_with_certs(tmp_path)
    assert {"terminate.toml", "reencrypt.toml", "passthrough.toml"} <= {p.name for p in examples}
    for path in examples:
        config = cfg.load(str(path))
        workdir = tmp_path / "nginx" / path.stem
        NginxProcess(export_nginx(config, prefix=str(workdir)), workdir).check()


def test_cli_prints_the_config_and_warns_about_forward_listeners(tmp_path):
    examples = copy_examples_with_certs(tmp_path)
    toml = tmp_path / "lab" / "configs" / "with-forward.toml"
    toml.write_text((tmp_path / "lab" / "configs" / "terminate.toml").read_text()
                    + '\n[[listeners]]\nlisten = "127.0.0.1:3128"\nmode = "forward"\n')
    assert examples
    done = subprocess.run([sys.executable, "-m", "course.cli", "export", "nginx", "--config", str(toml)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "http {" in done.stdout and "proxy_pass http://web;" in done.stdout
    assert "127.0.0.1:3128 is a forward proxy" in done.stderr
    out = tmp_path / "nginx.conf"
    done = subprocess.run([sys.executable, "-m", "course.cli", "export", "nginx", "--config", str(toml),
                           "--out", str(out), "--prefix", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and f"pid {tmp_path / 'run'}/nginx.pid;" in out.read_text()
    done = subprocess.run([sys.executable, "-m", "course.cli", "export", "nginx", "--config", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and "not found" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- HTTP/2 to clients (alpn h2)
def curl_http2(port: int, pki, path: str) -> tuple[bytes, str]:
    """(body, HTTP version curl spoke) from ``curl --http2`` to WWW on ``port``."""
    require_tool("curl")
    done = subprocess.run(["curl", "--http2", "-sS", "--cacert", str(pki.ca), "--resolve", f"{WWW}:{port}:127.0.0.1",
                           "-o", "-", "-w", "\n%{http_version}", f"https://{WWW}:{port}{path}"],
                          capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    body, _, version = done.stdout.rpartition(b"\n")
    return body, version.decode()


def h2_config(origin_url: str, pki, port: int = 0) -> cfg.Config:
    """One terminate listener offering h2 beside http/1.1, in front of one origin."""
    return cfg.Config(listeners=(replace(listener("terminate", pki, port), alpn=("h2", "http/1.1")),),
                      pools=(cfg.PoolConfig("web", (backend(origin_url),)),), routes=(cfg.RouteConfig("web"),),
                      access_log=None)


def test_alpn_h2_exports_http2_in_the_spelling_of_the_nginx_version(pki):
    config = h2_config("http://127.0.0.1:9001", pki, 8443)
    old, new = export_nginx(config, nginx_version="1.22.1"), export_nginx(config, nginx_version="1.25.1")
    assert "listen 127.0.0.1:8443 ssl http2 default_server;" in old and "http2 on;" not in old
    assert "listen 127.0.0.1:8443 ssl default_server;" in new and "http2 on;" in new
    assert f"http2_max_concurrent_streams {cfg.Limits().max_concurrent_streams};" in old
    http1_only = replace(config, listeners=(replace(listener("terminate", pki, 8443), alpn=("http/1.1",)),))
    assert "http2" not in export_nginx(http1_only)


def test_h2_export_and_tlsproxy_both_answer_curl_http2_and_speak_http11_to_the_origin(pki, origins, tmp_path):
    origin = origins("web", record_raw=True)
    with tlsproxy_and_nginx(h2_config(origin.url, pki), tmp_path / "nginx") as ports:
        answers = {name: (curl_http2(port, pki, "/bytes/4096"), curl_http2(port, pki, "/"))
                   for name, port in ports.items()}
    for name, ((body, version), (described, _)) in answers.items():
        assert version == "2", f"{name} did not answer curl with HTTP/2"
        assert json.loads(described)["http_version"] == "HTTP/1.1", f"{name} did not send HTTP/1.1 to the origin"
    assert answers["tlsproxy"][0][0] == answers["nginx"][0][0] and len(answers["nginx"][0][0]) == 4096
    assert len(origin.raw_requests) == 4
    assert all(raw.split(b"\r\n", 1)[0].endswith(b" HTTP/1.1") for raw in origin.raw_requests)


# What the exported config's comment says about nginx (course/nginx/http_block.py, _http2_settings):
# requests tlsproxy's downgrade refuses that nginx 1.22.1 forwards.
NGINX_FORWARDS = ("connection-field", "keep-alive-field", "upgrade-field", "te-gzip", "pseudo-after-regular",
                  "path-fragment", "authority-userinfo")


@pytest.mark.parametrize("vector_id", NGINX_FORWARDS)
def test_h2_requests_nginx_forwards_and_tlsproxy_refuses(pki, origins, tmp_path, vector_id):
    from h2.errors import ErrorCodes

    from tests.integration.test_h2 import H2Client
    from tests.vectors.h2_downgrade import H2_VECTORS

    [vector] = [v for v in H2_VECTORS if v.id == vector_id]
    headers = [(name, value.replace(b"example.com", WWW.encode())) for name, value in vector.headers]
    origin = origins("web", record_raw=True)
    outcome = {}
    with tlsproxy_and_nginx(h2_config(origin.url, pki), tmp_path / "nginx") as ports:
        for name, port in ports.items():
            client = H2Client(port, pki)
            try:
                sid = client.request(headers=headers)
                client.wait(sid)
                stream = client.streams[sid]
                outcome[name] = ((stream["headers"] or {}).get(b":status"), stream["reset"], len(origin.raw_requests))
            finally:
                client.close()
    assert outcome["tlsproxy"] == (None, ErrorCodes.PROTOCOL_ERROR, 0), "tlsproxy refuses it, nothing forwarded"
    assert outcome["nginx"] == (b"200", None, 1), "nginx forwards it to the origin"
    [forwarded] = origin.raw_requests
    field_lines = forwarded.split(b"\r\n\r\n")[0].lower().split(b"\r\n")[1:]
    dropped = {name for name, _ in vector.headers if name in (b"connection", b"keep-alive", b"upgrade", b"te")}
    assert not [line for line in field_lines if line.split(b":")[0] in dropped], "... without that field"
