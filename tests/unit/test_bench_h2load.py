"""course.bench.h2load and the HTTP/2 row's plan: h2load's output read, cells sized, setups chosen,
ratios to nginx per engine.

The two outputs are h2load 1.52's own, captured on this machine: nginx-h2 answering
every request, and tlsproxy answering 503 to all of them once a stream reset had
ejected its only backend (since fixed: tests/integration/test_h2_real_clients.py,
test_a_client_resetting_its_stream_does_not_eject_the_backend).
tests/integration/test_bench_h2.py runs the row for real.
"""

from __future__ import annotations

import pytest

from course.bench import runner, variants
from course.bench.h2load import FIRST_CELL_PER_STREAM, parse_h2load, requests_for
from course.bench.measure import CellFailed
from course.bench.workloads import BY_NAME
from proxy import config as cfg
from proxy.errors import ConfigError

ROW = BY_NAME["keepalive-1k-h2"]

ALL_ANSWERED = """\
starting benchmark...
spawning thread #0: 2 total client(s). 400 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
progress: 100% done

finished in 142.14ms, 2814.15 req/s, 2.99MB/s
requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 400 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 435.25KB (445698) total, 28.13KB (28800) headers (space savings 42.86%), 400.00KB (409600) data
                     min         max         mean         sd        +/- sd
time for request:      320us     12.46ms      2.65ms      1.44ms    78.50%
time for connect:     4.36ms      6.72ms      5.54ms      1.67ms   100.00%
time to 1st byte:    12.05ms     16.17ms     14.11ms      2.91ms   100.00%
req/s           :    1411.42     1412.92     1412.17        1.06   100.00%
"""

ALL_503 = """\
Application protocol: h2
finished in 1.00s, 2153.00 req/s, 206.39KB/s
requests: 2153 total, 2185 started, 2153 done, 0 succeeded, 2153 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 2153 5xx
"""  # (only the lines the probe kept)


def test_a_clean_run_is_counted_from_h2loads_own_lines():
    result = parse_h2load(ALL_ANSWERED)
    assert result["requests"] == 400 and result["error_count"] == 0 and result["errors"] == {}
    assert result["seconds"] == pytest.approx(0.14214)
    assert result["bytes_in"] == 445698 and result["protocol"] == "h2"
    assert result["latency_us"] == {"mean": 2650.0, "max": 12460.0}


def test_answers_that_are_errors_are_not_requests():
    result = parse_h2load(ALL_503)
    assert result["requests"] == 0 and result["error_count"] == 2153
    assert result["errors"] == {"status-4xx-5xx": 2153}
    assert result["bytes_in"] == 0 and result["latency_us"] == {}  # lines missing: nothing made up


def test_output_that_is_not_h2loads_fails_the_cell():
    with pytest.raises(CellFailed, match="cannot read h2load"):
        parse_h2load("h2load: connection refused\n")


def test_cells_are_sized_from_the_previous_rate_and_bounded():
    slots = ROW.concurrency * ROW.http2_streams
    assert requests_for(ROW, 1.5, None, 200_000) == FIRST_CELL_PER_STREAM * slots
    assert requests_for(ROW, 1.5, 2000.0, 200_000) == 3000
    assert requests_for(ROW, 1.5, 1e9, 2000) == 2000
    # Never more than the servers serve on one connection before their GOAWAY (h2load does not reconnect).
    per_connection = cfg.Limits().max_requests_per_connection
    assert requests_for(ROW, 1.5, 1e9, 200_000) == per_connection * ROW.concurrency
    assert requests_for(ROW, 0.001, 10.0, 200_000) == slots  # at least one request per stream slot


def test_the_row_runs_h2load_alone_on_the_three_h2_variants():
    options = runner.Options.quick_defaults(workloads=[ROW.name], setups=["terminate", "nginx"], h2=True)
    cells = runner.plan(options, [*options.setups, variants.NGINX_H2, variants.H2_EVENTLOOP, variants.H2])
    # Threads, the event loop, then nginx, in every round (teaching order, whatever order they came in).
    assert cells == [(ROW, variants.H2, "h2load"), (ROW, variants.H2_EVENTLOOP, "h2load"),
                     (ROW, variants.NGINX_H2, "h2load")]
    assert variants.alpn(variants.H2) == ("h2", "http/1.1") and variants.engine(variants.H2) == "threaded"
    assert variants.alpn(variants.H2_EVENTLOOP) == ("h2", "http/1.1")
    assert variants.engine(variants.H2_EVENTLOOP) == "eventloop"
    assert variants.alpn("terminate") is None  # the base keeps its own default


def test_h2_adds_both_engines_beside_terminate_whatever_eventloop_says(monkeypatch):
    monkeypatch.setattr(runner, "h2load_path", lambda: "/usr/bin/h2load")  # planned only: nothing is run
    for eventloop in (False, True):
        options = runner.Options.quick_defaults(setups=["terminate"], nginx=False, h2=True, eventloop=eventloop)
        chosen = runner.available_setups(options, [])
        assert variants.H2 in chosen and variants.H2_EVENTLOOP in chosen
        assert chosen.index(variants.H2_EVENTLOOP) == chosen.index(variants.H2) + 1


def h2_cell(setup: str, round_number: int, proxy_us: float) -> dict:
    return {"workload": ROW.name, "setup": setup, "client": "h2load", "round": round_number,
            "cpu_us_per_request": {"proxy": proxy_us}}


def test_each_engine_gets_its_own_ratio_to_nginx_per_round():
    from course.bench import results

    measurements = [h2_cell(variants.H2, 1, 120.0), h2_cell(variants.H2_EVENTLOOP, 1, 60.0),
                    h2_cell(variants.NGINX_H2, 1, 20.0),
                    h2_cell(variants.H2, 2, 150.0), h2_cell(variants.H2_EVENTLOOP, 2, 90.0),
                    h2_cell(variants.NGINX_H2, 2, 30.0)]
    summary = [{"workload": ROW.name, "setup": s, "client": "h2load", "cpu_us_per_request": {"proxy": us}}
               for s, us in ((variants.H2, 135.0), (variants.H2_EVENTLOOP, 75.0), (variants.NGINX_H2, 25.0))]
    rows = {r["setup"]: r for r in results.nginx_ratios(summary, None, measurements) if r.get("setup")}
    assert rows[variants.H2]["workload"] == f"{ROW.name} (h2load)"
    assert rows[variants.H2_EVENTLOOP]["workload"] == f"{ROW.name} (h2load, eventloop)"
    assert rows[variants.H2]["value"] == 5.4 and rows[variants.H2]["rounds"] == [6.0, 5.0]
    assert rows[variants.H2_EVENTLOOP]["value"] == 3.0 and rows[variants.H2_EVENTLOOP]["rounds"] == [3.0, 3.0]
    assert rows[variants.H2_EVENTLOOP]["reference"] == rows[variants.H2]["reference"] == 25.0


def test_without_h2load_the_row_is_skipped_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no h2load (nor nginx) on it
    notes: list[str] = []
    setups = runner.available_setups(runner.Options.quick_defaults(setups=["terminate"], h2=True), notes)
    assert variants.H2 not in setups
    assert any("h2load is not installed (apt-get install nghttp2-client)" in note for note in notes)


def test_the_sweep_refuses_the_http2_row():
    from course.bench import sweep

    with pytest.raises(ConfigError, match="cannot drive 'keepalive-1k-h2' with wrk"):
        sweep.workloads_for([ROW.name])


def test_the_layer_table_samples_the_three_h2_columns_only_when_the_row_ran():
    from course.bench.layers import COLUMNS, H2_SETUPS

    assert H2_SETUPS == (variants.H2, variants.H2_EVENTLOOP, variants.NGINX_H2)
    assert all(setup in COLUMNS for setup in H2_SETUPS)
    running = ["terminate", variants.H2, variants.H2_EVENTLOOP, "nginx", variants.NGINX_H2]
    with_row = runner.Options.quick_defaults(workloads=[ROW.name])
    assert runner.h2_layer_setups(with_row, running) == H2_SETUPS
    assert runner.h2_layer_setups(runner.Options.quick_defaults(workloads=["keepalive-1k"]), running) == ()
    assert runner.h2_layer_setups(with_row, running[:3]) == ()  # no nginx-h2: nothing to set beside


def test_back_to_back_cells_are_counted_as_one_over_all_their_requests():
    from course.bench.layers import combine_cells

    cells = [{"requests": 1000, "cpu_us_per_request": {"proxy": 500.0, "origin": 200.0, "client": 40.0},
              "switches_per_request": {"proxy": 1.0}},
             {"requests": 3000, "cpu_us_per_request": {"proxy": 300.0, "origin": 200.0, "client": 20.0},
              "switches_per_request": {"proxy": 0.2}}]
    combined = combine_cells(cells)
    assert combined["requests"] == 4000 and combined["cells"] == 2
    assert combined["cpu_us_per_request"] == {"proxy": 350.0, "origin": 200.0, "client": 25.0}
    assert combined["switches_per_request"] == {"proxy": 0.4}
