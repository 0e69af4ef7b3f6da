"""course.capture.setups: the setups as processes, checked as command lines (nothing runs).

The capture keeps no table of its own: its setups are ``course.setups``'s objects, and
the command lines it builds follow from their facts (mode, legs, who terminates).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from course import setups as project_setups
from course.capture import setups as capture_setups
from course.capture.setups import SETUPS, Lab, Loopback, available_setups
from tests.unit.test_setups import copied_names, copied_words


def lab(name: str, pki, tmp_path: Path) -> Lab:
    made = Lab(SETUPS[name], Loopback(), tmp_path, pki)
    made.ports = {"origin": 9001, "proxy": 8443}
    return made


def test_the_same_setups_as_the_rest_of_the_project():
    assert list(SETUPS) == list(project_setups.NAMES)
    assert capture_setups.Setup is project_setups.Setup
    for name, setup in SETUPS.items():
        assert setup is project_setups.BY_NAME[name]  # the very object: no copy of names, legs or words
    assert available_setups() == list(project_setups.NAMES)


def test_the_capture_module_keeps_no_copy_of_the_table():
    source = Path(capture_setups.__file__)
    assert copied_names(source) == [] and copied_words(source) == []


@pytest.mark.parametrize("name", project_setups.NAMES)
def test_command_lines_follow_the_table(name, pki, tmp_path):
    facts = project_setups.BY_NAME[name]
    made = lab(name, pki, tmp_path)
    if facts.intercepts:
        made._make_intercept_ca()  # as Lab.start does first
    origin_argv, origin_keylog = made.origin_argv()
    assert ("--cert" in origin_argv) == facts.origin_tls == (origin_keylog is not None)
    if facts.origin_tls:  # the client's session, or the origin it named (CONNECT), shows www;
        # the proxy's own session to its backend (re-encrypt), the origin's name
        shown = "www.example.test" if facts.client_tls_ends == "origin" or facts.tunnel else "origin.example.test"
        assert origin_argv[origin_argv.index("--cert") + 1].endswith(f"{shown}.pem")
    client = made.client_argv()
    assert ("--plain" in client) == (not facts.client_tls)
    assert ("--tunnel" in client) == facts.tunnel
    assert made.front == ("proxy" if facts.has_proxy else "origin")
    if facts.has_proxy:
        proxy = made.proxy_argv()
        assert proxy[proxy.index("--mode") + 1] == facts.mode
        assert ("--keylog" in proxy) == facts.proxy_reads_requests  # it holds the client's session keys
        assert ("--backend-keylog" in proxy) == (len(facts.tls_sessions) == 2)
        assert ("--intercept-ca" in proxy) == facts.intercepts
    made.stop()


def test_interception_makes_a_ca_for_the_run_that_the_client_trusts_and_drops_its_key(pki, tmp_path):
    intercept = lab("intercept", pki, tmp_path)
    with pytest.raises(RuntimeError, match="interception CA"):
        intercept.proxy_argv()  # no CA before the lab starts
    intercept._make_intercept_ca()
    cert, key = intercept.intercept_ca
    proxy = intercept.proxy_argv()
    assert proxy[proxy.index("--intercept-ca") + 1:][:2] == [str(cert), str(key)]
    assert proxy[proxy.index("--mode") + 1] == "forward"
    assert proxy[proxy.index("--backend-ca") + 1] == str(pki.ca)  # the origin is verified, as in re-encrypt
    assert proxy[proxy.index("--backend-keylog") + 1].endswith("keys/proxy-backend.log")
    client = intercept.client_argv()
    assert client[client.index("--tunnel") + 1] == "www.example.test:9001"
    trust = Path(client[client.index("--ca") + 1]).read_text()
    assert Path(pki.ca).read_text() in trust and cert.read_text() in trust  # the demo CA and the interception CA
    assert (tmp_path / capture_setups.INTERCEPT_CA).read_text() == cert.read_text()  # kept for the bundle
    intercept.stop()
    assert not key.exists() and not cert.exists()  # the CA's key is gone with the run
    assert (tmp_path / capture_setups.INTERCEPT_CA).exists()


def test_loopback_client_has_its_own_address(pki, tmp_path):
    terminate = lab("terminate", pki, tmp_path)
    assert terminate.address("client") == "127.0.0.2" != terminate.address("proxy")
    argv = terminate.client_argv(tls="1.2", resumed=True)
    assert argv[argv.index("--connect") + 1] == "127.0.0.1:8443"
    assert argv[argv.index("--source") + 1] == "127.0.0.2"
    assert argv[-3:] == ["--tls", "1.2", "--resumed"]


def test_each_party_that_terminates_tls_writes_its_own_key_log(pki, tmp_path):
    reencrypt = lab("reencrypt", pki, tmp_path)
    argv = reencrypt.proxy_argv()
    assert argv[argv.index("--keylog") + 1].endswith("keys/proxy.log")
    assert argv[argv.index("--backend-keylog") + 1].endswith("keys/proxy-backend.log")
    assert argv[argv.index("--backend") + 1] == "https://127.0.0.1:9001"
    origin_argv, origin_keylog = reencrypt.origin_argv()
    assert origin_keylog.name == "origin.log" and "origin.example.test.pem" in " ".join(origin_argv)
    terminate = lab("terminate", pki, tmp_path)
    assert terminate.origin_argv()[1] is None and "--backend-keylog" not in terminate.proxy_argv()
    assert "--keylog" not in lab("passthrough", pki, tmp_path).proxy_argv()   # it holds no keys


def test_forward_asks_for_a_tunnel_by_name_and_the_proxy_allows_only_the_origin(pki, tmp_path):
    forward = lab("forward", pki, tmp_path)
    client = forward.client_argv()
    assert client[client.index("--tunnel") + 1] == "www.example.test:9001"
    proxy = " ".join(forward.proxy_argv())
    assert "--forward-host www.example.test=127.0.0.1" in proxy and "--allow dst=127.0.0.1/32 port=9001" in proxy
    assert "--plain" in lab("direct-http", pki, tmp_path).client_argv()
    direct = lab("direct-https", pki, tmp_path).client_argv()
    assert direct[direct.index("--connect") + 1] == "127.0.0.1:9001"
