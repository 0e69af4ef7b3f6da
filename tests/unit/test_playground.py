"""The notebooks' servers, the parts without sockets: tables, log lines, bounded fan-out."""

from __future__ import annotations

import threading

import pytest

from course.playground import LogLines, format_table, in_parallel


def test_format_table_aligns_dict_rows_and_spells_booleans_and_none():
    text = format_table([{"setup": "terminate", "origin gets TLS": False, "note": None},
                         {"setup": "re-encrypt", "origin gets TLS": True, "note": "two sessions"}])
    assert text.splitlines() == [
        "setup       origin gets TLS  note",
        "----------  ---------------  ------------",
        "terminate   no               -",
        "re-encrypt  yes              two sessions",
    ]


def test_format_table_takes_sequences_with_column_names():
    text = format_table([("web-1", 20), ("web-22", 3)], ["backend", "requests"])
    assert text.splitlines()[2:] == ["web-1    20", "web-22   3"]


def test_log_lines_collects_what_access_log_writes_and_waits_for_a_line():
    log = LogLines()
    log.write('127.0.0.1:5 "GET / HTTP/1.1" 200\n')
    assert list(log) == ['127.0.0.1:5 "GET / HTTP/1.1" 200']
    threading.Timer(0.05, log.write, ["... passthrough sni=www.example.test ...\n"]).start()
    assert "sni=www.example.test" in log.wait_for("passthrough", timeout=5)
    assert log.wait_for("never written", timeout=0.05) is None
    threading.Timer(0.05, log.write, ["... passthrough sni=api.example.test ...\n"]).start()
    assert "sni=www.example.test" in log.wait_for("passthrough", count=2, timeout=5)  # the first, once two exist
    assert len(log.matching("passthrough")) == 2
    log.clear()
    assert len(log) == 0


def test_in_parallel_keeps_order_and_refuses_unbounded_work():
    assert in_parallel(lambda i: i * i, 10, workers=3) == [i * i for i in range(10)]
    with pytest.raises(ValueError):
        in_parallel(lambda i: i, 10, workers=500)
    with pytest.raises(ValueError):
        in_parallel(lambda i: i, 1_000_000)
