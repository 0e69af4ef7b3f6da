"""Backend addresses in proxy.config: URLs for HTTP modes, bare HOST:PORT for passthrough.

A terminate (or re-encrypt) listener speaks HTTP to its backends, so the scheme says how:
``http://`` or ``https://``.  A passthrough listener splices TLS bytes over TCP: its
backends are just ``HOST:PORT``.  These tests parse both forms, and check that each
mistake is one ConfigError line that says what to write instead.
"""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.errors import ConfigError
from tests.conftest import REPO


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, scheme, host, port, name", [
    ("127.0.0.1:9445", "tcp", "127.0.0.1", 9445, "127.0.0.1:9445"),
    ("[::1]:9445", "tcp", "::1", 9445, "[::1]:9445"),
    ("localhost:9445", "tcp", "localhost", 9445, "localhost:9445"),
    (" 127.0.0.1:9445 ", "tcp", "127.0.0.1", 9445, "127.0.0.1:9445"),
    ("http://127.0.0.1:9001", "http", "127.0.0.1", 9001, "http://127.0.0.1:9001"),
    ("https://[::1]:9443", "https", "::1", 9443, "https://[::1]:9443"),
    ("http://127.0.0.1", "http", "127.0.0.1", 80, "http://127.0.0.1:80"),
    ("https://127.0.0.1/", "https", "127.0.0.1", 443, "https://127.0.0.1:443"),
])
def test_both_forms_parse(text, scheme, host, port, name):
    backend = cfg.parse_backend(text, where="test")
    assert (backend.scheme, backend.host, backend.port, backend.name) == (scheme, host, port, name)


def test_a_bare_backend_keeps_its_weight_in_the_table_form():
    backend = cfg.parse_backend({"url": "127.0.0.1:9445", "weight": 3}, where="test")
    assert (backend.scheme, backend.port, backend.weight, backend.url) == ("tcp", 9445, 3, "127.0.0.1:9445")


@pytest.mark.parametrize("text, complaint", [
    ("127.0.0.1", r"bad backend '127\.0\.0\.1': expected http://HOST:PORT, https://HOST:PORT \(re-encrypt\) "
                  r"or HOST:PORT \(passthrough\)"),
    ("localhost:http", "expected http://HOST:PORT"),
    ("127.0.0.1:9445/path", "expected http://HOST:PORT"),
    ("127.0.0.1:70000", "expected http://HOST:PORT"),
    ("::1:9445", r"write an IPv6 address in brackets, e\.g\. \[::1\]:9445"),
    ("127.0.0.1:0", "port 0 cannot be connected to"),
    ("ftp://127.0.0.1:21", "bad backend url 'ftp://127.0.0.1:21': expected http://HOST:PORT"),
    ("http://127.0.0.1:9001/app", "must not have a path"),
])
def test_a_malformed_backend_is_one_line_that_shows_the_forms(text, complaint):
    with pytest.raises(ConfigError, match=complaint) as error:
        cfg.parse_backend(text, where="--backend")
    assert str(error.value).startswith("--backend: ") and "\n" not in str(error.value)


# --------------------------------------------------------------------------- which mode may use which form
def test_passthrough_flags_take_a_bare_host_port():
    config = cfg.from_flags(listen="127.0.0.1:0", mode="passthrough", backends=["127.0.0.1:9445", "[::1]:9446"])
    assert [(b.scheme, b.host, b.port) for b in config.pool("default").backends] == [
        ("tcp", "127.0.0.1", 9445), ("tcp", "::1", 9446)]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9445", "https://127.0.0.1:9445"])
def test_passthrough_still_takes_the_url_form(url):
    config = cfg.from_flags(listen="127.0.0.1:0", mode="passthrough", backends=[url])
    assert config.pool("default").backends[0].port == 9445


def test_terminate_refuses_a_bare_host_port_and_says_to_write_a_scheme(pki):
    with pytest.raises(ConfigError) as error:
        cfg.from_flags(listen="127.0.0.1:0", mode="terminate", certs=[tuple(map(str, pki.files("www.example.test")))],
                       backends=["127.0.0.1:9001"])
    message = str(error.value)
    assert "\n" not in message
    assert "backend '127.0.0.1:9001' has no scheme, which is for passthrough only" in message
    assert "a terminate listener speaks HTTP to its backends" in message
    assert "write http://127.0.0.1:9001 or https://127.0.0.1:9001 (re-encrypt)" in message


def test_a_bare_ipv6_backend_is_rewritten_with_brackets_in_the_advice(pki):
    with pytest.raises(ConfigError, match=r"write http://\[::1\]:9001 or https://\[::1\]:9001"):
        cfg.from_flags(listen="127.0.0.1:0", mode="terminate", certs=[tuple(map(str, pki.files("www.example.test")))],
                       backends=["[::1]:9001"])


def test_forward_refuses_a_bare_host_port():
    with pytest.raises(ConfigError, match="a forward listener speaks HTTP to its backends: write http://"):
        cfg.from_flags(listen="127.0.0.1:0", mode="forward", backends=["127.0.0.1:9001"])


def toml_config(*listeners: str, backend: str = "127.0.0.1:9445", health: str = "") -> dict:
    """A parsed TOML table: the given listener modes, one pool "tls" with ``backend``."""
    import tomllib

    text = "".join(f'[[listeners]]\nlisten = "127.0.0.1:{8440 + i}"\nmode = "{mode}"\n\n'
                   for i, mode in enumerate(listeners))
    text += f'[[pools]]\nname = "tls"\nbackends = ["{backend}"]\n{health}\n'
    return tomllib.loads(text)


def test_toml_passthrough_pool_with_a_bare_backend():
    config = cfg.from_table(toml_config("passthrough"))
    assert config.pool("tls").backends[0].name == "127.0.0.1:9445"


def test_toml_forward_beside_passthrough_leaves_the_pool_to_passthrough():
    """A forward listener uses no pool, so it does not make a bare backend a mistake."""
    config = cfg.from_table(toml_config("passthrough", "forward"))
    assert config.pool("tls").backends[0].scheme == "tcp"


def test_toml_terminate_beside_passthrough_refuses_a_bare_backend(pki):
    """Routes are shared: the terminate listener could send HTTP to the pool."""
    table = toml_config("passthrough", "terminate")
    cert, key = map(str, pki.files("www.example.test"))
    table["listeners"][1]["certs"] = [{"cert": cert, "key": key}]
    with pytest.raises(ConfigError, match="pool 'tls': backend '127.0.0.1:9445' has no scheme"):
        cfg.from_table(table)


def test_active_health_checks_need_a_scheme_to_speak():
    """proxy.health sends GET over HTTP (or HTTPS for https://): a TLS origin reached as
    HOST:PORT would fail every check and be taken down."""
    with pytest.raises(ConfigError, match=r"health checks \(health.path\) speak HTTP.*write https://127.0.0.1:9445"):
        cfg.from_table(toml_config("passthrough", health='health = { path = "/health" }'))
    config = cfg.from_table(toml_config("passthrough", backend="https://127.0.0.1:9445",
                                        health='health = { path = "/health" }'))
    assert config.pool("tls").health.path == "/health"


# --------------------------------------------------------------------------- the example and its nginx export
def test_the_passthrough_example_uses_the_plain_form_and_exports_it_to_nginx():
    from course.nginx import export_nginx

    config = cfg.load(str(REPO / "lab" / "configs" / "passthrough.toml"))
    assert {p.name: [b.name for b in p.backends] for p in config.pools} == {
        "www": ["127.0.0.1:9445"], "api": ["127.0.0.1:9446"]}
    text = export_nginx(config)
    stream = text[text.index("stream {"):]
    assert "upstream www {" in stream and "server 127.0.0.1:9445 max_fails=1" in stream
    assert "server 127.0.0.1:9446 max_fails=1" in stream
    assert "http {" not in text and "tcp://" not in text
