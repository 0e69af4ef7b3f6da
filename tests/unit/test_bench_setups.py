"""course.bench.setups: the benchmark's processes planned from course.setups (nothing is started).

The benchmark keeps no table of its own: which setups exist, who terminates the
client's TLS, which origin shows which certificate and what the proxy is told all
follow from ``course.setups``; only nginx, the production reference, is the bench's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from course import setups as project_setups
from course.bench import charts, setups as bench_setups, workloads
from course.bench.setups import NginxPlan, SetupLauncher, instance_key
from tests.unit.test_setups import copied_names, copied_words

ORIGIN_PORT = 9001


def test_the_bench_modules_keep_no_copy_of_the_table():
    source = Path(bench_setups.__file__)
    assert copied_names(source) == [] and copied_words(source) == []
    # Every setup of the table, in its order, but those it says it cannot run (with the reason why).
    assert workloads.SETUPS == tuple(n for n in project_setups.NAMES if n not in workloads.NOT_BENCHED)
    assert workloads.ALL == (*workloads.SETUPS, workloads.NGINX)
    assert "direct-http" not in workloads.TLS_SETUPS and workloads.NGINX in workloads.TLS_SETUPS
    for s in project_setups.SETUPS:
        assert charts.LABELS[s.name] == f"{s.number} {s.name}"


def test_who_terminates_comes_from_the_table():
    by_terminator = {end: [s.name for s in project_setups.SETUPS if s.client_tls_ends == end]
                     for end in ("origin", "proxy")}
    assert list(bench_setups.ORIGIN_TERMINATES) == by_terminator["origin"] == ["direct-https", "passthrough",
                                                                               "forward"]
    assert list(bench_setups.PROXY_TERMINATES) == by_terminator["proxy"] == ["terminate", "reencrypt", "intercept"]


def test_the_intercepting_proxy_is_not_benchmarked_and_the_bench_says_why():
    """Setup 7 needs a client that trusts a per-run interception CA: the bench leaves it out,
    by its facts (Setup.intercepts), and says so when asked for it instead of calling it unknown."""
    assert list(workloads.NOT_BENCHED) == [s.name for s in project_setups.SETUPS if s.intercepts] == ["intercept"]
    assert "intercept" not in workloads.ALL and "intercept" not in workloads.TLS_SETUPS
    assert "interception CA" in workloads.NOT_BENCHED["intercept"]
    from course.bench import runner
    from proxy.errors import ConfigError

    with pytest.raises(ConfigError, match="'intercept': not benchmarked: .*interception CA"):
        runner.available_setups(runner.Options(setups=["intercept"]), [])


def test_one_instance_serves_both_certificates_where_the_proxy_or_nobody_holds_them():
    for s in project_setups.SETUPS:
        shared = s.client_tls_ends in (None, "proxy")
        assert instance_key(s.name, "rsa") == ((s.name, "any") if shared else (s.name, "rsa"))
    assert instance_key("nginx", "rsa") == ("nginx", "rsa")


def plan(pki, tmp_path: Path, setup: str, cert: str = "ecdsa"):
    """The origin's and the front's plan for one instance, as ``SetupLauncher.start`` makes them."""
    launcher = SetupLauncher(pki, tmp_path)
    key = instance_key(setup, cert)
    origin = launcher._origin(key)
    origin.port = ORIGIN_PORT  # as if it had said so on its log
    return origin, launcher._front(key, origin)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("name", workloads.SETUPS)
def test_each_setup_s_processes_follow_its_facts(name, pki, tmp_path):
    facts = project_setups.BY_NAME[name]
    origin, front = plan(pki, tmp_path, name)
    assert ("--cert" in origin.argv) == facts.origin_tls
    if facts.origin_tls:  # the client's session shows www; the proxy's own session, the origin's name
        shown = "www.example.test" if facts.client_tls_ends == "origin" else "origin.example.test"
        assert flag(origin.argv, "--cert").endswith(f"{shown}.pem")
    if not facts.has_proxy:
        assert front is None
        return
    assert flag(front.argv, "-m") == "course.bench.serve"
    mode = flag(front.argv, "--mode") if "--mode" in front.argv else "terminate"  # tlsproxy serve's default
    assert mode == facts.mode
    assert ("--cert" in front.argv) == facts.proxy_reads_requests  # it terminates the client's TLS
    if facts.mode == "forward":
        assert flag(front.argv, "--connect-port") == str(ORIGIN_PORT)
    else:
        scheme = "https" if facts.origin_tls else "http"
        assert flag(front.argv, "--backend") == f"{scheme}://127.0.0.1:{ORIGIN_PORT}"
        assert ("--backend-ca" in front.argv) == (len(facts.tls_sessions) == 2)  # re-encrypt verifies the origin


def test_an_rsa_origin_and_nginx_plan(pki, tmp_path):
    origin, _ = plan(pki, tmp_path, "direct-https", "rsa")
    assert flag(origin.argv, "--cert").endswith("www-rsa.example.test.pem")
    origin, front = plan(pki, tmp_path, workloads.NGINX)
    assert "--cert" not in origin.argv  # nginx plays setup 3's proxy: a plain origin behind it
    assert isinstance(front, NginxPlan) and f"127.0.0.1:{ORIGIN_PORT}" in front.conf


def test_the_ten_thousand_idle_row_raises_every_connection_limit(pki, tmp_path):
    """idle-10000 measures memory, not a limit: the proxy's Limits.max_connections and nginx's
    worker_connections are raised past what the row holds (course.bench.runner.run_idle)."""
    row = workloads.BY_NAME["idle-10000"]
    limit = row.connections + 64
    for setup in ("terminate", "terminate-eventloop"):
        launcher = SetupLauncher(pki, tmp_path, max_connections=limit)
        key = instance_key(setup, "ecdsa")
        origin = launcher._origin(key)
        origin.port = 9001
        assert flag(launcher._front(key, origin).argv, "--max-connections") == str(limit)
    launcher = SetupLauncher(pki, tmp_path, max_connections=limit)
    key = instance_key("nginx", "ecdsa")
    origin = launcher._origin(key)
    origin.port = 9001
    conf = launcher._front(key, origin).conf
    assert f"worker_connections {2 * limit + 64};" in conf
    default = SetupLauncher(pki, tmp_path)
    origin = default._origin(key)
    origin.port = 9001
    assert "worker_connections 2112;" in default._front(key, origin).conf  # 2 x 1024 + 64
