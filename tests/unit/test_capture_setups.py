"""course.capture.setups: the six setups as processes, checked as command lines (nothing runs)."""

from __future__ import annotations

from pathlib import Path

from course import setups as project_setups
from course.capture.setups import SETUPS, Lab, Loopback


def lab(name: str, pki, tmp_path: Path) -> Lab:
    made = Lab(SETUPS[name], Loopback(), tmp_path, pki)
    made.ports = {"origin": 9001, "proxy": 8443}
    return made


def test_the_same_six_setups_as_the_rest_of_the_project():
    assert list(SETUPS) == [s.name for s in project_setups.SETUPS]
    for name, setup in SETUPS.items():
        assert setup.legs == (("client", "backend") if project_setups.BY_NAME[name].has_proxy else ("client",))
        assert setup.summary == project_setups.BY_NAME[name].summary


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
