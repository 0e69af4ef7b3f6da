"""HTTP/2 with a real browser: headless Chromium through the proxy with ``alpn = ["h2", "http/1.1"]``.

Chromium resolves ``www.example.test`` to 127.0.0.1 by ``--host-resolver-rules`` and
trusts our development leaf by the base64 SHA-256 of its SubjectPublicKeyInfo,
``--ignore-certificate-errors-spki-list``.  Chromium's own description of that switch
(services/network/public/cpp/network_switches.cc): "If the certificate chain presented
by the server does not validate, and one or more certificates have public key hashes
that match a key from this list, the error is ignored."  So a server with any other
key is still refused, which ``--ignore-certificate-errors`` would not do; the last test
shows it.  What ALPN chose is read from the proxy's access log (``alpn=h2`` and the
request version ``HTTP/2``); the origin's JSON answer in the page says where the body
came from and that it was asked in HTTP/1.1.
"""

from __future__ import annotations

import re

import pytest

from proxy.pki import spki_sha256_base64
from tests.conftest import API, WWW, both_engines
from tests.integration.test_status_page import chromium

engine = both_engines  # every test here on both engines (tests/conftest.py)


def load_in_chromium(pki, port: int, path: str, *, trust: str = WWW):
    """Chromium's --dump-dom of https://WWW:port/path, trusting the key of ``trust``'s certificate."""
    return chromium(
        f"--ignore-certificate-errors-spki-list={spki_sha256_base64(pki.files(trust)[0])}",
        f"--host-resolver-rules=MAP {WWW} 127.0.0.1",
        "--dump-dom", f"https://{WWW}:{port}{path}",
    )


@pytest.mark.parametrize("alpn, version", [(("h2", "http/1.1"), "HTTP/2"), (("http/1.1",), "HTTP/1.1")],
                         ids=["h2-offered", "http1-only"])
def test_chromium_takes_h2_when_offered_and_loads_the_origin_page(pki, origin_factory, proxy_factory, tmp_path,
                                                                  alpn, version):
    origin = origin_factory("web", host="127.0.0.1", record_raw=True)
    access_log = tmp_path / "access.log"
    proxy = proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW)], alpn=alpn,
                          access_log=str(access_log))
    result = load_in_chromium(pki, proxy.port, "/from-chromium")
    dom = result.stdout
    assert "ERR_" not in dom, result.stderr[-2000:]
    assert '"origin": "web"' in dom and '"path": "/from-chromium"' in dom, result.stderr[-2000:]
    assert '"http_version": "HTTP/1.1"' in dom, "the origin is asked in HTTP/1.1 either way"
    proxy.shutdown(grace=1.0)  # a line is written when its exchange ends; shutdown waits for them
    lines = [line for line in access_log.read_text().splitlines() if "/from-chromium " in line]
    assert len(lines) == 1, access_log.read_text()
    assert f'"GET /from-chromium {version}" 200' in lines[0], lines[0]
    # The log names the ALPN protocol when it is not the default http/1.1 (ClientConnection.tls_summary).
    assert bool(re.search(r"tls=TLSv1\.3 cipher=\S+ alpn=h2 ", lines[0])) == ("h2" in alpn), lines[0]
    # (Chromium also asks for /favicon.ico, whose Referer names the page: match the request-line.)
    [raw] = [r for r in origin.raw_requests if r.startswith(b"GET /from-chromium ")]
    assert raw.startswith(b"GET /from-chromium HTTP/1.1\r\n")
    assert f"\r\nvia: {version.removeprefix('HTTP/')} tlsproxy".encode() in raw.lower()


def test_chromium_refuses_a_key_that_is_not_on_the_spki_list(pki, origin_factory, proxy_factory):
    origin = origin_factory("web", host="127.0.0.1", record_raw=True)
    proxy = proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW)], alpn=("h2", "http/1.1"))
    result = load_in_chromium(pki, proxy.port, "/not-trusted", trust=API)  # another leaf's key
    assert '"origin": "web"' not in result.stdout
    assert "ERR_CERT_AUTHORITY_INVALID" in result.stderr, result.stderr[-2000:]  # headless says why the load failed
    assert not any(b"/not-trusted" in raw for raw in origin.raw_requests), "no request without trust"


# --------------------------------------------------------------------------- found by the h2load bench row
def test_a_client_resetting_its_stream_does_not_eject_the_backend(pki, origin_factory, proxy_factory):
    from h2.errors import ErrorCodes

    from tests.integration.test_h2 import H2Client
    from tests.processes import wait_until

    origin = origin_factory("web", host="127.0.0.1")
    proxy = proxy_factory({"web": [origin.url]}, certs=[pki.files(WWW)], alpn=("h2", "http/1.1"))
    client = H2Client(proxy.port, pki)
    try:
        slow = client.request("/delay/5")  # a fresh backend connection, the worker waiting for the answer
        assert wait_until(lambda: origin.requests_seen == 1, timeout=10)
        client.h2.reset_stream(slow, ErrorCodes.CANCEL)  # what a browser does when the user navigates away
        client.flush()
        backend = proxy.balancers["web"].backends[0]
        assert wait_until(lambda: backend.in_flight == 0, timeout=10)  # the slow stream's worker is done
        after = client.request("/after-the-reset")
        client.wait(after)
        status = (client.streams[after]["headers"] or {}).get(b":status")
    finally:
        client.close()
    assert status == b"200", (status, backend.last_error)
