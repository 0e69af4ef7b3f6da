"""course/h2lab.py (notebook 9's HTTP/2 tools) on real sockets: ALPN, SETTINGS, streams, attempts, nginx."""

from __future__ import annotations

import h2.connection
import pytest
from h2.errors import ErrorCodes

from course.h2lab import (H2Client, attempt, downgrade_vectors, h1_one_connection, h2_proxy, naive_h1_head,
                          nginx_h2)
from course.playground import Playground
from proxy.config import Limits
from tests.tools import require_tool
from tests.vectors.h2_downgrade import H2_VECTORS

WWW = "www.example.test"


@pytest.fixture
def lab(pki):
    playground = Playground("test-h2lab", certs_dir=pki.directory)
    yield playground
    playground.stop()


@pytest.fixture
def web(lab):
    return lab.origin("web", record_raw=True)


def test_alpn_is_what_the_listener_offers(lab, web):
    h2 = h2_proxy(lab, "h2", pools={"web": [web]})  # the proxy's default ALPN: h2, then http/1.1
    h1 = h2_proxy(lab, "h1", pools={"web": [web]}, alpn=("http/1.1",))
    with H2Client(h2.address, WWW, ca=lab.pki.ca) as client:
        assert client.alpn == "h2"
    with H2Client(h1.address, WWW, ca=lab.pki.ca) as client:
        assert client.alpn == "http/1.1"
        with pytest.raises(RuntimeError, match="not h2"):
            client.request("/")
    with H2Client(h2.address, WWW, ca=lab.pki.ca, alpn=("spdy/3.1",)) as client:
        assert client.alpn is None  # Python's ssl completes the handshake without a protocol (no alert)


@pytest.mark.parametrize("engine", ["threaded", "eventloop"])
def test_streams_get_their_own_answers_and_the_servers_settings_are_read_from_the_wire(lab, web, engine):
    proxy = h2_proxy(lab, "h2", pools={"web": [web]}, engine=engine)
    assert proxy.server.config.engine == engine
    with H2Client(proxy.address, WWW, ca=lab.pki.ca) as client:
        sids = [client.request(f"/item/{i}") for i in range(5)]
        assert client.wait(*sids)
        assert sids == [1, 3, 5, 7, 9]  # RFC 9113 §5.1.1: odd, increasing
        assert [client.streams[s].json()["path"] for s in sids] == [f"/item/{i}" for i in range(5)]
        assert sorted(client.finished) == sids
        settings = client.server_settings()
        assert settings["MAX_CONCURRENT_STREAMS"] == Limits().max_concurrent_streams
        # announced, and the limit h2's HPACK decoder enforces (notebook 9, step 3)
        assert settings["MAX_HEADER_LIST_SIZE"] == h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
        assert client.frame_summary()[0] == "SETTINGS stream=0 -"
        assert "HEADERS stream=1 END_HEADERS" in client.frame_summary(1)
        # the frames come from course.capture.h2frames over every byte received, header blocks decoded
        assert sum(f.length + 9 for f in client.frames) == client.received_bytes
        assert [dict(f.headers).get(":status") for f in client.frames if f.type == "HEADERS"] == ["200"] * 5


def test_frames_are_split_again_when_more_bytes_arrive_and_a_cut_frame_is_left_out(lab, web):
    proxy = h2_proxy(lab, "h2", pools={"web": [web]})
    with H2Client(proxy.address, WWW, ca=lab.pki.ca) as client:
        assert client.wait(client.request("/"))
        everything = bytes(client.received)
        complete = list(client.frames)
        client.received = bytearray(everything[:-1])  # as if the last read had stopped one byte short
        assert client.frames == complete[:-1]
        client.received += everything[-1:]
        assert client.frames == complete


@pytest.mark.parametrize("vid", ["crlf-in-value", "cl-more-data-than-declared", "pseudo-after-regular"])
def test_attempt_reports_the_reset_and_an_empty_origin_record(lab, web, vid):
    proxy = h2_proxy(lab, "h2", pools={"web": [web]})
    vector = downgrade_vectors()[vid]
    result = attempt(proxy.address, WWW, ca=lab.pki.ca, origin=web, headers=vector.headers, data=vector.data,
                     end_stream=vector.end_stream, log=proxy.log)
    assert result.outcome == f"RST_STREAM {ErrorCodes.PROTOCOL_ERROR.name}"
    assert result.origin_received == []
    assert any(" rejected: " in line and vector.reason in line for line in result.log), result.log
    assert any(line.startswith("RST_STREAM stream=1") for line in result.frames)
    assert any(raw.startswith(b"GET /control-after ") for raw in web.raw_requests)  # the connection lived on


def test_attempt_of_a_good_request_counts_what_reached_the_origin(lab, web):
    proxy = h2_proxy(lab, "h2", pools={"web": [web]})
    result = attempt(proxy.address, WWW, ca=lab.pki.ca, origin=web, headers=downgrade_vectors()["ok-get"].headers)
    assert result.outcome == "200" and result.origin_received == [b"GET / HTTP/1.1"]


def test_http11_on_one_connection(lab, web):
    proxy = h2_proxy(lab, "h2", pools={"web": [web]})
    answers = h1_one_connection(proxy.address, WWW, ["/a", "/b", "/c"], ca=lab.pki.ca)
    assert [a["path"] for a in answers] == ["/a", "/b", "/c"]
    assert {dict(a["headers"])["Via"] for a in answers} == {"1.1 tlsproxy"}


def test_the_vector_table_is_imported_whole_and_the_naive_head_shows_the_injection():
    vectors = downgrade_vectors()
    assert list(vectors) == [v.id for v in H2_VECTORS]
    head = naive_h1_head(vectors["path-crlf-request-injection"].headers)
    assert head.count(b" HTTP/1.1\r\n") == 2  # two request-lines: the smuggled request


def test_a_field_section_over_the_announced_limit_ends_the_connection(lab, web):
    """Notebook 9, step 3: SETTINGS_MAX_HEADER_LIST_SIZE is advisory (RFC 9113 §6.5.2), H2Client
    ignores it, and the proxy's HPACK decoder enforces it: GOAWAY, nothing forwarded."""
    proxy = h2_proxy(lab, "h2", pools={"web": [web]})
    limit = h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
    block = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", WWW.encode()), (b":path", b"/bomb"),
             *[(b"x-bomb", b"A" * 4000)] * 20]
    assert sum(len(n) + len(v) + 32 for n, v in block) > limit
    result = attempt(proxy.address, WWW, ca=lab.pki.ca, origin=web, headers=block, log=proxy.log)
    assert result.outcome == f"GOAWAY {ErrorCodes.ENHANCE_YOUR_CALM.name}"
    assert result.origin_received == []
    assert any("connection error" in line and str(limit) in line for line in result.log), result.log


def test_nginx_h2_serves_http2(lab, web, tmp_path):
    require_tool("nginx")
    cert, key = lab.pki.files(WWW)
    with nginx_h2(tmp_path, cert, key, web.address) as address:
        with H2Client(address, WWW, ca=lab.pki.ca) as client:
            assert client.alpn == "h2"
            sid = client.request("/via-nginx")
            assert client.wait(sid)
            assert client.streams[sid].json()["path"] == "/via-nginx"
