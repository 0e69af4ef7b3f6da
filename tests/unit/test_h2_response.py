"""proxy.h2.response (an HTTP/1.1 response head as an HTTP/2 field block) and the alpn configuration."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy import http1
from proxy.errors import ConfigError, InvalidUpstreamResponse, NotFound, render_error
from proxy.h2.response import error_fields, response_fields, trailer_fields


def prepared(raw: bytes) -> tuple[http1.Response, str]:
    reader = http1.ResponseReader()
    reader.expect_response_to("GET")
    reader.feed(raw)
    return http1.prepare_downstream_response(reader.next_event(), client_version="HTTP/1.1", request_method="GET")


def test_status_first_names_lowercase_connection_fields_gone():
    out, mode = prepared(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close, X-Drop\r\n"
                         b"Keep-Alive: timeout=5\r\nX-Drop: secret\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\n\r\n")
    fields = response_fields(out)
    assert fields[0] == (b":status", b"200")
    names = [n for n, _ in fields]
    assert all(n == n.lower() for n in names)  # RFC 9113 §8.2
    assert b"connection" not in names and b"keep-alive" not in names and b"x-drop" not in names  # §8.2.2
    assert (b"content-length", b"2") in fields and (b"set-cookie", b"a=1") in fields and mode == "length"


def test_chunked_becomes_plain_data_frames():
    out, mode = prepared(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert mode == "chunked" and b"transfer-encoding" not in [n for n, _ in response_fields(out)]


def test_a_coding_other_than_chunked_has_no_http2_form():
    out, _ = prepared(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    with pytest.raises(InvalidUpstreamResponse, match="no HTTP/2 form"):
        response_fields(out)


def test_trailers_lowercase_and_filtered():
    trailers = http1.prepare_trailers(http1.Headers([("Checksum", "abc"), ("Content-Length", "0")]))
    assert trailer_fields(trailers) == [(b"checksum", b"abc")]


def test_error_answer_is_the_same_status_and_body():
    fields, body = error_fields(render_error(NotFound("no route", close=True)))
    assert fields[0] == (b":status", b"404") and body.startswith(b"404 Not Found: no route")
    assert b"connection" not in [n for n, _ in fields]
    assert (b"content-length", str(len(body)).encode()) in fields


# --------------------------------------------------------------------------- configuration
def test_alpn_parsed_from_flag_and_list():
    assert cfg.parse_alpn("h2, http/1.1", where="--alpn") == ("h2", "http/1.1")
    assert cfg.parse_alpn(["http/1.1"], where="toml") == ("http/1.1",)
    with pytest.raises(ConfigError, match="unknown ALPN protocol 'h3'"):
        cfg.parse_alpn("h3", where="--alpn")


def test_default_alpn_offers_h2_then_http11():
    assert cfg.ListenerConfig(cfg.Address("127.0.0.1", 0)).alpn == ("h2", "http/1.1") == cfg.DEFAULT_ALPN


def test_both_engines_take_h2(pki):
    for engine in cfg.ENGINES:
        config = cfg.from_flags(listen="127.0.0.1:0", certs=[tuple(map(str, pki.files("www.example.test")))],
                                backends=["http://127.0.0.1:9"], alpn="h2,http/1.1", engine=engine)
        assert config.listeners[0].alpn == ("h2", "http/1.1")
