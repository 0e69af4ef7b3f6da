"""HSTS and the HTTP -> HTTPS redirect, bytes in and values out (proxy.config.parse_hsts,
proxy.http1.forwarding's hsts=, proxy.exchange.hsts_for / error_response, proxy.modes.redirect.answer)."""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace

import h11
import pytest

from proxy import config as cfg
from proxy import exchange as rules
from proxy import http1
from proxy.errors import BadGateway, ConfigError, NotFound, render_error
from proxy.modes import redirect
from proxy.server import config_from_args, configure_cli

STS = "max-age=31536000; includeSubDomains"


# --------------------------------------------------------------------------- parse_hsts (RFC 6797 §6.1)
@pytest.mark.parametrize("value, expected", [
    (STS, STS),
    ("max-age=0", "max-age=0"),  # §6.1.1: 0 tells the browser to forget the host
    ('max-age="600"', 'max-age="600"'),  # directive-value = token / quoted-string
    ("MAX-AGE=5; INCLUDESUBDOMAINS; preload", "MAX-AGE=5; INCLUDESUBDOMAINS; preload"),  # names case-insensitive
    ("  max-age=5 ;  ", "max-age=5 ;"),  # empty directives are allowed by the grammar
])
def test_parse_hsts_accepts_the_rfc_grammar(value, expected):
    assert cfg.parse_hsts(value) == expected


@pytest.mark.parametrize("value, complaint", [
    ("", "no max-age"),
    ("includeSubDomains", "no max-age"),
    ("max-age=-1", "non-negative integer"),
    ("max-age=1y", "non-negative integer"),
    ("max-age=", "non-negative integer"),
    ("max-age", "non-negative integer"),
    ("max-age=\u00b2", "non-negative integer"),  # str.isdigit() would say yes
    ("max-age=1; max-age=2", "twice"),
    ("max-age=1; includeSubDomains=yes", "takes no value"),
    ("max-age=1; includeSubdomain", "unknown directive"),
    ("max-age=1\r\nSet-Cookie: x=1", "non-negative integer"),  # no response splitting through the config
    ("max-age=1; a\r\nb", "not a directive"),
    ("max age=1", "not a directive"),
    (31536000, "expected a string"),
])
def test_parse_hsts_refuses_with_one_line(value, complaint):
    with pytest.raises(ConfigError) as caught:
        cfg.parse_hsts(value)
    assert complaint in str(caught.value) and "\n" not in str(caught.value)


def _table(pki, **proxy):
    cert, key = pki.files("www.example.test")
    return {
        "listeners": [{"listen": "127.0.0.1:0", "certs": [{"cert": str(cert), "key": str(key)}]}],
        "pools": [{"name": "web", "backends": ["http://127.0.0.1:9001"]}],
        "proxy": proxy,
    }


def test_toml_proxy_hsts_is_read_validated_and_off_by_default(pki):
    assert cfg.from_table(_table(pki)).hsts is None
    assert cfg.from_table(_table(pki, hsts=f" {STS} ")).hsts == STS
    with pytest.raises(ConfigError, match="max-age must be a non-negative integer"):
        cfg.from_table(_table(pki, hsts="max-age=soon"))


# --------------------------------------------------------------------------- the redirect listener's config
def _with_redirect(pki, **listener):
    table = _table(pki)
    table["listeners"].append({"listen": "127.0.0.1:0", "mode": "redirect", **listener})
    return table


def test_redirect_listener_from_toml(pki):
    config = cfg.from_table(_with_redirect(pki, https_port=8443))
    assert [(lst.mode, lst.https_port) for lst in config.listeners] == [("terminate", None), ("redirect", 8443)]
    assert cfg.from_table(_with_redirect(pki)).listeners[1].https_port is None  # the terminate listener's port
    assert "redirect" in cfg.EVENTLOOP_MODES
    cfg.validate(replace(cfg.from_table(_with_redirect(pki)), engine="eventloop"))  # both engines serve it


@pytest.mark.parametrize("listener, complaint", [
    ({"https_port": 0}, "https_port must be a port number"),
    ({"https_port": 70000}, "https_port must be a port number"),
    ({"https_port": "443"}, "https_port must be a port number"),
    ({"https_port": True}, "https_port must be a port number"),
    ({"certs": [{"cert": "c.pem", "key": "k.pem"}]}, "takes no certificate"),
])
def test_redirect_listener_mistakes(pki, listener, complaint):
    with pytest.raises(ConfigError, match=complaint):
        cfg.from_table(_with_redirect(pki, **listener))


def test_https_port_only_on_a_redirect_listener(pki):
    table = _table(pki)
    table["listeners"][0]["https_port"] = 443
    with pytest.raises(ConfigError, match="for mode = \"redirect\" only"):
        cfg.from_table(table)


def test_a_redirect_listener_needs_route_names():
    table = {"listeners": [{"listen": "127.0.0.1:0", "mode": "redirect"}]}
    with pytest.raises(ConfigError, match="there are none"):
        cfg.from_table(table)


# --------------------------------------------------------------------------- the flags
def _args(*argv):
    parser = argparse.ArgumentParser()
    configure_cli(parser)
    return parser.parse_args(argv)


def test_flags_hsts_and_redirect_from(pki):
    cert, key = pki.files("www.example.test")
    config = config_from_args(_args("--cert", str(cert), "--key", str(key), "--backend", "http://127.0.0.1:9001",
                                    "--hsts", STS, "--redirect-from", "127.0.0.1:8080"))
    assert config.hsts == STS
    assert [(str(lst.listen), lst.mode) for lst in config.listeners] == [("127.0.0.1:8443", "terminate"),
                                                                         ("127.0.0.1:8080", "redirect")]
    off = config_from_args(_args("--cert", str(cert), "--key", str(key), "--backend", "http://127.0.0.1:9001"))
    assert off.hsts is None and len(off.listeners) == 1
    with pytest.raises(ConfigError, match="no max-age"):
        config_from_args(_args("--cert", str(cert), "--key", str(key), "--backend", "http://127.0.0.1:9001",
                               "--hsts", "includeSubDomains"))


def test_flags_override_a_config_file(pki, tmp_path):
    cert, key = pki.files("www.example.test")
    path = tmp_path / "proxy.toml"
    path.write_text(f'[[listeners]]\nlisten = "127.0.0.1:0"\ncerts = [{{ cert = "{cert}", key = "{key}" }}]\n'
                    f'[[pools]]\nname = "web"\nbackends = ["http://127.0.0.1:9001"]\n'
                    f'[proxy]\nhsts = "max-age=60"\n')
    assert config_from_args(_args("--config", str(path))).hsts == "max-age=60"
    config = config_from_args(_args("--config", str(path), "--hsts", STS, "--redirect-from", "127.0.0.1:8080"))
    assert config.hsts == STS and config.listeners[-1].mode == "redirect"


# --------------------------------------------------------------------------- HSTS on a forwarded response
def _response(raw: bytes) -> http1.Response:
    reader = http1.ResponseReader()
    reader.expect_response_to("GET")
    reader.feed(raw)
    return reader.next_event()


def _downstream(raw: bytes, hsts: str | None) -> http1.Headers:
    out, _ = http1.prepare_downstream_response(_response(raw), client_version="HTTP/1.1", request_method="GET",
                                               hsts=hsts)
    return out.headers


def test_hsts_is_added_when_configured_and_only_then():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert _downstream(raw, STS).get_all("strict-transport-security") == [STS]
    assert "strict-transport-security" not in _downstream(raw, None)


def test_the_origins_own_sts_is_kept_and_not_doubled():
    # RFC 6797 §7.1: "If an STS header field is included, the HSTS Host MUST include only one such header field".
    raw = b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\nContent-Length: 2\r\n\r\nok"
    assert _downstream(raw, STS).get_all("strict-transport-security") == ["max-age=60"]


def test_an_sts_the_origin_made_hop_by_hop_is_replaced():
    raw = (b"HTTP/1.1 200 OK\r\nConnection: strict-transport-security\r\nStrict-Transport-Security: max-age=60\r\n"
           b"Content-Length: 2\r\n\r\nok")
    assert _downstream(raw, STS).get_all("strict-transport-security") == [STS]


def test_no_hsts_on_an_interim_response():
    interim = http1.Response("HTTP/1.1", 100, "Continue", http1.Headers())
    out, _ = http1.prepare_downstream_response(interim, client_version="HTTP/1.1", request_method="GET", hsts=STS)
    assert "strict-transport-security" not in out.headers


def test_hsts_only_over_tls():
    # RFC 6797 §7.2: "An HSTS Host MUST NOT include the STS header field in HTTP responses conveyed over
    # non-secure transport."
    assert rules.hsts_for(STS, proto="https") == STS
    assert rules.hsts_for(STS, proto="http") is None
    assert rules.hsts_for(None, proto="https") is None


@pytest.mark.parametrize("error", [BadGateway("backend down"), NotFound("no route")])
def test_the_proxys_own_errors_carry_hsts_like_nginx_always(error):
    data = rules.error_response(error, hsts=STS)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(data)
    response = conn.next_event()
    assert response.status_code == error.status
    assert dict(response.headers)[b"strict-transport-security"] == STS.encode()
    body = conn.next_event()
    assert body.data == render_error(error).split(b"\r\n\r\n", 1)[1]  # the body (and its length) unchanged
    assert rules.error_response(error) == render_error(error)


# --------------------------------------------------------------------------- the redirect decision
def _request(raw: bytes) -> http1.Request:
    reader = http1.RequestReader()
    reader.feed(raw)
    return reader.next_event()


def _answer(raw: bytes, *, https_port=8443, names=("*",)):
    status, data = redirect.answer(_request(raw), https_port=https_port, names=names)
    conn = h11.Connection(h11.CLIENT)  # an independent parser reads what the proxy would send
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(data)
    response = conn.next_event()
    assert response.status_code == status
    return status, {k.decode(): v.decode() for k, v in response.headers}


@pytest.mark.parametrize("raw, https_port, location", [
    (b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: www.example.test:8080\r\n\r\n", 8443,
     "https://www.example.test:8443/a/b?x=1&y=%20"),
    (b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n", 443, "https://www.example.test/"),  # 443 left out
    (b"GET /x HTTP/1.1\r\nHost: WWW.Example.TEST.:80\r\n\r\n", 443, "https://www.example.test/x"),
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 8443, "https://[::1]:8443/"),
    (b"POST /form HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 3\r\n\r\nabc", 8443,
     "https://www.example.test:8443/form"),
    (b"GET /old HTTP/1.0\r\nHost: www.example.test\r\n\r\n", 8443, "https://www.example.test:8443/old"),
])
def test_redirect_is_308_to_the_same_target_on_https(raw, https_port, location):
    status, headers = _answer(raw, https_port=https_port)
    assert status == 308  # RFC 9110 §15.4.9: the method (and body) are kept, unlike 301
    assert headers["location"] == location
    assert headers["content-length"] == "0" and headers["connection"] == "close"
    assert "strict-transport-security" not in headers  # RFC 6797 §7.2: never over plain HTTP


@pytest.mark.parametrize("host, names, status", [
    ("www.example.test", ("www.example.test",), 308),
    ("api.example.test", ("*.example.test",), 308),
    ("example.test", ("*.example.test",), 421),  # a wildcard does not match the parent name
    ("evil.test", ("www.example.test", "*.example.test"), 421),  # not ours: no redirect to cache
    ("evil.test", ("*",), 308),  # a "*" route says every name is ours
])
def test_only_route_names_are_redirected(host, names, status):
    raw = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()
    assert _answer(raw, names=names)[0] == status


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.0\r\n\r\n",  # no Host: no name to redirect to
    b"GET / HTTP/1.0\r\nHost: \r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
])
def test_no_name_or_no_resource_is_400(raw):
    status, headers = _answer(raw)
    assert status == 400 and "location" not in headers


def test_https_port_defaults_to_the_terminate_listeners_bound_port():
    plain = cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "redirect")
    tls = cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "terminate")
    with socket.create_server(("127.0.0.1", 0)) as a, socket.create_server(("127.0.0.1", 0)) as b:
        class Server:  # what https_port reads of a ProxyServer: its bound listening sockets
            listen_sockets = [(a, plain), (b, tls)]

        assert redirect.https_port(Server, plain) == b.getsockname()[1]  # port 0 resolved: as bound
        explicit = cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "redirect", (), 443)
        assert redirect.https_port(Server, explicit) == 443
        Server.listen_sockets = [(a, plain)]
        assert redirect.https_port(Server, plain) == 443  # no terminate listener here: the https default
