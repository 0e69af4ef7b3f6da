"""course.bench.layers: filing perf's sampled functions into layers (sans-IO, canned report)."""

from __future__ import annotations

import pytest

from course.bench.layers import LAYERS, format_layers, layer_of, parse_report

# `perf report --no-children --sort dso,sym --stdio -g none`, trimmed, as perf 6.1 prints it.
REPORT = """\
# Samples: 7K of event 'cpu-clock'
#
# Overhead  Shared Object          Symbol
# ........  .....................  ..............................
#
    18.00%  [kernel.kallsyms]      [k] finish_task_switch.isra.0
    16.00%  libpython3.11.so.1.0   [.] _PyEval_EvalFrameDefault
    12.00%  [kernel.kallsyms]      [k] _raw_spin_unlock_irqrestore
    10.00%  [kernel.kallsyms]      [k] tcp_sendmsg_locked
     9.00%  libcrypto.so.3         [.] aesni_gcm_encrypt
     5.00%  libssl.so.3            [.] ssl3_read_bytes
     5.00%  libc.so.6              [.] __memmove_avx512_unaligned_erms
     5.00%  nginx                  [.] ngx_http_parse_header_line
    10.00%  [kernel.kallsyms]      [k] futex_wait
    10.00%  [vdso]                 [.] __vdso_clock_gettime
"""


@pytest.mark.parametrize("dso, symbol, kernel, layer", [
    ("[kernel.kallsyms]", "finish_task_switch.isra.0", True, "scheduler"),
    ("[kernel.kallsyms]", "try_to_wake_up", True, "scheduler"),
    ("[kernel.kallsyms]", "futex_wait", True, "scheduler"),
    ("[kernel.kallsyms]", "tcp_v4_rcv", True, "kernel"),
    ("[kernel.kallsyms]", "do_syscall_64", True, "kernel"),
    ("libpython3.11.so.1.0", "_PyEval_EvalFrameDefault", False, "code"),
    ("nginx", "ngx_http_process_request_line", False, "code"),
    ("libssl.so.3", "SSL_read", False, "openssl"),
    ("libcrypto.so.3", "aesni_gcm_encrypt", False, "openssl"),
    ("libc.so.6", "malloc", False, "libc"),
    ("[vdso]", "__vdso_clock_gettime", False, "other"),
])
def test_layer_of(dso, symbol, kernel, layer):
    assert layer_of(dso, symbol, kernel) == layer


def test_parse_report_adds_up_each_layer():
    shares = parse_report(REPORT)
    assert set(shares) == set(LAYERS)
    assert shares == pytest.approx({"scheduler": 0.40, "code": 0.21, "kernel": 0.10, "openssl": 0.14,
                                    "libc": 0.05, "other": 0.10})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_parse_report_of_nothing_is_all_zero():
    assert set(parse_report("# no samples\n").values()) == {0.0}


def test_format_layers_shows_microseconds_per_request_and_the_total():
    shares = parse_report(REPORT)
    profile = {"workload": "keepalive-1k", "implementations": {
        "tlsproxy": {"cpu_us_per_request": 200.0, "shares": shares,
                     "us_per_request": {k: v * 200.0 for k, v in shares.items()}}}}
    text = format_layers(profile)
    assert "kernel: sleeping, waking, switching threads" in text and "80.0 µs" in text and "200.0 µs" in text
    assert "not measured (perf is not installed" in format_layers({"error": "perf is not installed (Debian: linux-perf)"})
