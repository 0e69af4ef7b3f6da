"""course.bench.variants: the bench-only variants, planned (nothing is started here).

The setups stay the table's; a variant is its base's processes with one setting turned,
and only the benchmark runs it.  The unpooled variants keep no idle backend
connection: our proxy through ``--pool-max-idle 0``, nginx without upstream
``keepalive``.  tests/integration/test_bench_unpooled.py starts them for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from course import setups as project_setups
from course.bench import runner, serve, variants, workloads
from course.bench.setups import NginxPlan, SetupLauncher, instance_key
from course.bench.variants import EVENTLOOP, H2, H2_EVENTLOOP, NGINX_H2, NGINX_UNPOOLED, UNPOOLED
from proxy import config as cfg
from proxy.errors import ConfigError
from tests.unit.test_setups import copied_names

ORIGIN_PORT = 9001


def test_variants_belong_to_the_bench_not_to_the_setups_table():
    assert len(project_setups.SETUPS) == 7  # six benchmarked, and interception (workloads.NOT_BENCHED)
    assert not set(variants.NAMES) & set(project_setups.NAMES)
    assert not set(variants.NAMES) & set(workloads.ALL)
    for v in variants.VARIANTS:
        assert v.base in workloads.ALL and v.workloads and set(v.workloads) <= set(workloads.BY_NAME)
    assert variants.base_of(UNPOOLED) == "terminate" and variants.base_of(NGINX_UNPOOLED) == workloads.NGINX
    assert variants.base_of("reencrypt") == "reencrypt"
    assert copied_names(Path(variants.__file__)) == []


def test_each_variant_comes_right_after_its_base():
    order = variants.ORDER
    assert [s for s in order if s not in variants.NAMES] == list(workloads.ALL)
    assert order.index(UNPOOLED) == order.index("terminate") + 1
    assert order.index(NGINX_UNPOOLED) == order.index(workloads.NGINX) + 1
    assert variants.order("unknown") == len(order)


def launch_plan(pki, tmp_path: Path, setup: str):
    launcher = SetupLauncher(pki, tmp_path)
    key = instance_key(setup, "ecdsa")
    origin = launcher._origin(key)
    origin.port = ORIGIN_PORT
    return origin, launcher._front(key, origin)


def test_the_unpooled_proxy_is_terminate_s_with_no_idle_backend_connection(pki, tmp_path):
    assert instance_key(UNPOOLED, "rsa") == (UNPOOLED, "any")  # our proxy holds both certificates
    origin, front = launch_plan(pki, tmp_path, UNPOOLED)
    _, pooled = launch_plan(pki, tmp_path, "terminate")
    assert "--cert" not in origin.argv  # a plain-HTTP origin, as behind terminate
    argv = front.argv
    assert argv[argv.index("--pool-max-idle") + 1] == "0"
    assert "--pool-max-idle" not in pooled.argv
    without = [a for i, a in enumerate(argv) if a != "--pool-max-idle" and argv[i - 1] != "--pool-max-idle"]
    assert without == pooled.argv  # nothing else differs


def test_unpooled_nginx_has_no_upstream_keepalive(pki, tmp_path):
    assert instance_key(NGINX_UNPOOLED, "rsa") == (NGINX_UNPOOLED, "rsa")  # nginx holds one certificate
    _, front = launch_plan(pki, tmp_path, NGINX_UNPOOLED)
    _, pooled = launch_plan(pki, tmp_path, workloads.NGINX)
    assert isinstance(front, NginxPlan) and isinstance(pooled, NginxPlan)
    upstream = lambda conf: conf[conf.index("upstream "):].split("}", 1)[0]  # noqa: E731
    assert "keepalive 32" in upstream(pooled.conf)
    assert "keepalive" not in upstream(front.conf)


def test_serve_sets_the_pool_limit_after_validation(pki):
    cert, key = pki.files("www.example.test")
    config = cfg.from_flags(listen="127.0.0.1:0", certs=[(cert, key)], backends=["http://127.0.0.1:9"])
    assert config.limits.pool_max_idle == cfg.Limits().pool_max_idle
    assert serve.with_pool_max_idle(config, 0).limits.pool_max_idle == 0
    with pytest.raises(ConfigError):
        serve.with_pool_max_idle(config, -1)


def cells(**options) -> dict[str, list[str]]:
    """The loadgen cells of one round, workload -> setups, without nginx (it may not be installed)."""
    opts = runner.Options(nginx=False, wrk=False, **options)
    chosen = runner.available_setups(opts, [])
    planned: dict[str, list[str]] = {}
    for workload, setup, _ in runner.plan(opts, chosen):
        planned.setdefault(workload.name, []).append(setup)
    return planned


def test_quick_runs_leave_the_variants_out_unless_asked():
    assert all(UNPOOLED not in setups for setups in cells(quick=True).values())
    asked = cells(quick=True, unpooled=True)
    for name, setups in asked.items():
        assert (UNPOOLED in setups) == (name in ("keepalive-1k", "newconn")), name
    assert asked["newconn"][asked["newconn"].index("terminate") + 1] == UNPOOLED  # interleaved beside its base


def test_full_runs_include_them_and_setups_can_name_them():
    full = cells()
    assert UNPOOLED in full["newconn"] and UNPOOLED not in full["bulk-1m"]
    assert UNPOOLED not in cells(unpooled=False)["newconn"]
    assert cells(setups=["terminate"], unpooled=True, eventloop=False)["newconn"] == ["terminate", UNPOOLED]
    assert cells(setups=["terminate"], unpooled=False)["bulk-1m"] == ["terminate", EVENTLOOP]
    assert all(EVENTLOOP not in setups for setups in cells(quick=True).values())
    assert cells(setups=[UNPOOLED], workloads=["newconn"]) == {"newconn": [UNPOOLED]}
    with pytest.raises(ConfigError):
        cells(setups=["terminate-nope"])


def test_the_eventloop_variant_is_terminate_s_proxy_on_the_other_engine(pki, tmp_path):
    assert variants.base_of(EVENTLOOP) == "terminate" and variants.engine(EVENTLOOP) == "eventloop"
    assert variants.engine("terminate") == "threaded" and variants.engine(workloads.NGINX) == "threaded"
    origin, front = launch_plan(pki, tmp_path, EVENTLOOP)
    _, threaded = launch_plan(pki, tmp_path, "terminate")
    assert "--cert" not in origin.argv
    assert front.argv[front.argv.index("--engine") + 1] == "eventloop"
    assert "--engine" not in threaded.argv
    assert front.argv[:front.argv.index("--engine")] == threaded.argv  # nothing else differs
    assert cfg.ENGINES == ("threaded", "eventloop")


def test_the_h2_eventloop_variant_is_terminate_h2_on_the_other_engine(pki, tmp_path):
    assert variants.base_of(H2_EVENTLOOP) == "terminate" and variants.in_group("h2") == [
        variants.BY_NAME[name] for name in (H2, H2_EVENTLOOP, NGINX_H2)]
    order = variants.ORDER
    assert order.index(H2_EVENTLOOP) == order.index(H2) + 1  # the two engines side by side
    _, front = launch_plan(pki, tmp_path, H2_EVENTLOOP)
    _, threaded = launch_plan(pki, tmp_path, H2)
    assert front.argv[front.argv.index("--engine") + 1] == "eventloop"
    assert front.argv[front.argv.index("--alpn") + 1] == "h2,http/1.1"
    assert "--engine" not in threaded.argv
    engine_flag = front.argv.index("--engine")
    assert front.argv[:engine_flag] + front.argv[engine_flag + 2:] == threaded.argv  # nothing else differs
