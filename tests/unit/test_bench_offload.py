"""course.bench.offload: the origin's saving behind the terminator split into TLS and pooling.

Plain values in, numbers out: ``split`` on four origin figures, ``decomposition`` on a
summary and its rounds, the printed text and the chart drawn from them.
"""

from __future__ import annotations

import pytest

from course.bench import charts, offload, report
from course.bench.offload import DIRECT_HTTP, DIRECT_HTTPS, POOLED, UNPOOLED
from course.bench.variants import NGINX_UNPOOLED
from course.bench.workloads import NGINX

# The full run of 2026-11-27 (newconn, origin µs per request), with a made-up unpooled figure.
NEWCONN = {DIRECT_HTTPS: 937.0, DIRECT_HTTP: 435.0, UNPOOLED: 440.0, POOLED: 163.0}


def test_the_four_setups_are_found_by_their_facts():
    assert (DIRECT_HTTPS, DIRECT_HTTP, UNPOOLED, POOLED) == ("direct-https", "direct-http", "terminate-unpooled",
                                                             "terminate")


def test_split_of_plain_values():
    figures = offload.split(NEWCONN)
    assert figures == {"tls_cost": 502.0, "pooling_saving": 277.0, "total_drop": 774.0, "remainder": -5.0}
    # The whole drop is exactly its three parts: nothing is lost or counted twice.
    assert figures["total_drop"] == pytest.approx(figures["tls_cost"] + figures["pooling_saving"]
                                                  + figures["remainder"])


def test_keep_alive_remainder_is_the_connection_the_unpooled_proxy_opens():
    # Keep-alive: the direct client keeps its connections, the unpooled proxy opens one per request,
    # so the unpooled origin costs more than direct-http's and the remainder is negative.
    figures = offload.split({DIRECT_HTTPS: 185.0, DIRECT_HTTP: 163.0, UNPOOLED: 420.0, POOLED: 145.0})
    assert figures["tls_cost"] == 22.0 and figures["pooling_saving"] == 275.0
    assert figures["remainder"] == -257.0 and figures["total_drop"] == 40.0


def test_split_without_the_unpooled_variant_keeps_what_it_can():
    figures = offload.split({DIRECT_HTTPS: 937.0, DIRECT_HTTP: 435.0, POOLED: 163.0})
    assert figures == {"tls_cost": 502.0, "pooling_saving": None, "total_drop": 774.0, "remainder": None}
    assert offload.split({}) == dict.fromkeys(offload.FIGURES)


def row(workload: str, setup: str, origin: float, client: str = "loadgen", **extra) -> dict:
    """A summary row (or a measurement) with only what the split reads, plus what the chart reads."""
    return {"workload": workload, "setup": setup, "client": client, "implementation": "tlsproxy",
            "cpu_us_per_request": {"origin": origin, "proxy": 100.0}, "system_cpu_us_per_request": origin + 100,
            "system_cpu_us_range": [origin + 90, origin + 110], **extra}


def summary_with(values: dict[str, float], workload: str = "newconn", client: str = "loadgen") -> list[dict]:
    return [row(workload, setup, origin, client) for setup, origin in values.items()]


def test_decomposition_of_a_summary_and_its_rounds():
    summary = summary_with({**NEWCONN, NGINX: 158.0, NGINX_UNPOOLED: 450.0})
    measurements = [row("newconn", s, v + delta, round=r) for r, delta in ((1, 0.0), (2, 10.0))
                    for s, v in NEWCONN.items()]
    measurements.append(row("newconn", DIRECT_HTTP, 400.0, round=3))  # a round without the others: no split
    (entry,) = offload.decomposition(summary, measurements)
    assert (entry["workload"], entry["client"]) == ("newconn", "loadgen")
    assert entry["origin_us"][UNPOOLED] == 440.0 and entry["origin_us"][NGINX] == 158.0
    assert (entry["tls_cost"], entry["pooling_saving"], entry["total_drop"]) == (502.0, 277.0, 774.0)
    assert entry["nginx_pooling_saving"] == 292.0
    assert entry["rounds"]["tls_cost"] == [502.0, 502.0]  # both inputs moved by the same 10 µs in round 2
    assert entry["rounds"]["pooling_saving"] == [277.0, 277.0]
    assert offload.find([entry], "newconn") is entry and offload.find([entry], "keepalive-1k") is None


def test_decomposition_needs_both_direct_setups_and_terminate():
    summary = summary_with({DIRECT_HTTPS: 185.0, POOLED: 145.0}, workload="keepalive-1k")  # no direct-http
    summary += summary_with(NEWCONN, client="wrk")
    entries = offload.decomposition(summary)
    assert [(e["workload"], e["client"]) for e in entries] == [("newconn", "wrk")]
    assert entries[0]["rounds"] == {figure: [] for figure in offload.FIGURES}


def document(summary: list[dict]) -> dict:
    return {"summary": summary, "measurements": [], "offload": offload.decomposition(summary),
            "machine": {}, "parameters": {}}


def test_the_printed_split_names_each_figure_with_its_value():
    text = report.format_offload(document(summary_with(NEWCONN)))
    assert "what TLS costs the origin      (direct-https - direct-http): 502 µs" in text
    assert "what pooling saves the origin  (terminate-unpooled - terminate): 277 µs" in text
    assert "(direct-https - terminate): 774 µs" in text and "(direct-http - terminate-unpooled): -5 µs" in text
    without = report.format_offload(document(summary_with({DIRECT_HTTPS: 937.0, DIRECT_HTTP: 435.0, POOLED: 163.0})))
    assert "not measured (run with --unpooled)" in without and "remainder" not in without
    assert report.format_offload({"offload": []}) == ""


@pytest.mark.parametrize("values", [NEWCONN, {DIRECT_HTTPS: 937.0, DIRECT_HTTP: 435.0, POOLED: 163.0}],
                         ids=["with-unpooled", "without-unpooled"])
def test_the_offload_chart_draws_the_split_as_png_and_svg(values, tmp_path):
    summary = summary_with(values) + summary_with(values, workload="keepalive-1k")
    for r in summary:
        r.update(requests_per_second=1.0, bytes_per_second=1.0, latency_us={"p50": 1.0, "p99": 2.0})
    png, svg = charts.offload(document(summary), tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:2000]
    assert charts.LABELS[UNPOOLED] == "3 terminate-unpooled"
