"""The text the benchmark prints: a table per workload, the ratios to nginx, the floor.

Theory of operation
-------------------
Everything here reads a results document (``results.json``'s content) and returns
text, so the same tables can be printed again from a saved file::

    from course.bench import report
    print(report.format_table(json.load(open("build/bench/results.json"))))

``format_table`` prints one block per workload: requests/s, MB/s, CPU µs per request
for the origin, the proxy, the system (origin + proxy) and the client (apart), and
p50/p99 latency.  ``format_offload`` prints the offload split of ``course.bench.offload``:
what TLS costs the origin and what connection pooling saves it, per workload, with
the range over rounds.  ``format_vs_nginx`` prints each target of the issue with our
figure, nginx's (or the ``openssl speed`` floor), the ratio and whether it is met.
"""

from __future__ import annotations

from course.bench import offload
from course.bench.variants import order
from course.bench.workloads import BY_NAME


def _fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _ms(microseconds: float | None) -> float | None:
    """µs -> ms; None stays None (h2load prints no percentiles: "-" in the table)."""
    return None if microseconds is None else microseconds / 1000


def format_table(document: dict) -> str:
    lines = []
    by_workload: dict[str, list[dict]] = {}
    for row in document["summary"]:
        by_workload.setdefault(row["workload"], []).append(row)
    for workload, rows in by_workload.items():
        title = BY_NAME[workload].title if workload in BY_NAME else workload
        lines.append(f"\n{workload}: {title}")
        lines.append(f"  {'setup':<24}{'client':<8}{'req/s':>9}{'MB/s':>8}   CPU µs/request: {'origin':>8}{'proxy':>8}"
                     f"{'system':>8}{'client':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}")
        rows.sort(key=lambda r: (r["client"], order(r["setup"])))
        for r in rows:
            cpu = r["cpu_us_per_request"]
            lat = r["latency_us"]
            extra = ""
            if "rss_growth_per_connection" in r:
                extra = f"   RSS +{_fmt(r['rss_growth_per_connection'].get('proxy'), ',.0f')} B/conn (proxy)"
            lines.append(
                f"  {r['setup']:<24}{r['client']:<8}{_fmt(r['requests_per_second'], ',.0f'):>9}"
                f"{_fmt((r['bytes_per_second'] or 0) / 1e6, ',.1f'):>8}   {'':16}{_fmt(cpu.get('origin')):>8}"
                f"{_fmt(cpu.get('proxy')):>8}{_fmt(r['system_cpu_us_per_request']):>8}{_fmt(cpu.get('client')):>8}"
                f"{_fmt(_ms(lat.get('p50')), '.2f'):>9}{_fmt(_ms(lat.get('p99')), '.2f'):>9}"
                f"{r['errors']:>7}{extra}")
    if any(r["client"] == "wrk" and r["resume"] for r in document["summary"]):
        lines.append("\n  wrk keeps each connection's TLS session and offers it when it reconnects: its new-connection "
                     "rows are resumed handshakes after each connection's first; the loadgen rows are full ones.")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    return f"  (rounds {min(values):.0f} to {max(values):.0f})" if len(values) > 1 else ""


def format_offload(document: dict) -> str:
    """The offload split per workload: the four origin figures, then what TLS costs and pooling saves."""
    entries = document.get("offload") or []
    if not entries:
        return ""
    lines = ["\nthe origin's saving behind the terminator, split (origin CPU µs per request, median of rounds)"]
    for e in entries:
        o, rounds = e["origin_us"], e.get("rounds") or {}
        title = BY_NAME[e["workload"]].title if e["workload"] in BY_NAME else e["workload"]
        lines.append(f"  {e['workload']} ({e['client']}): {title}")
        lines.append("    origin: " + ", ".join(f"{name} {_fmt(o.get(name), '.0f')}" for name in offload.INPUTS))
        lines.append(f"    what TLS costs the origin      ({offload.DIRECT_HTTPS} - {offload.DIRECT_HTTP}):"
                     f" {_fmt(e['tls_cost'], '.0f')} µs{_spread(rounds.get('tls_cost') or [])}")
        if e["pooling_saving"] is None:
            lines.append(f"    what pooling saves the origin  ({offload.UNPOOLED} - {offload.POOLED}): not measured "
                         "(run with --unpooled)")
        else:
            lines.append(f"    what pooling saves the origin  ({offload.UNPOOLED} - {offload.POOLED}):"
                         f" {_fmt(e['pooling_saving'], '.0f')} µs{_spread(rounds.get('pooling_saving') or [])}")
        lines.append(f"    the whole drop                 ({offload.DIRECT_HTTPS} - {offload.POOLED}):"
                     f" {_fmt(e['total_drop'], '.0f')} µs")
        if e["remainder"] is not None:  # whatever else differs between a plain client and a plain proxy
            lines.append(f"    the remainder                  ({offload.DIRECT_HTTP} - {offload.UNPOOLED}):"
                         f" {e['remainder']:.0f} µs")
        if e.get("nginx_pooling_saving") is not None:
            lines.append(f"    nginx: what pooling saves the origin ({offload.NGINX_UNPOOLED} - {offload.NGINX}):"
                         f" {e['nginx_pooling_saving']:.0f} µs")
    return "\n".join(lines)


def _value(row: dict, key: str) -> str:
    value = row[key]
    if value is None:
        return "-"
    if row["figure"] in ("per_core_ratio", "floor_fraction", "wall_throughput"):
        return f"{value / 1e6:,.0f} MB/s"
    if row["figure"] == "rss_per_connection":
        return f"{value / 1000:,.1f} kB"
    return f"{value:,.1f} µs"


def format_vs_nginx(document: dict) -> str:
    lines = ["\ntlsproxy vs nginx (1 worker), same run, same machine; CPU of the proxy process per request",
             f"  {'workload':<37}{'figure':<17}{'tlsproxy':>14}{'nginx (or floor)':>22}{'ratio':>9}{'target':>11}  met"
             "  rounds"]
    for row in document.get("vs_nginx") or []:
        if row["figure"] == "rss_per_connection":
            ratio = "-"
        else:
            ratio = _fmt(row["value"], ".2f") + ("x" if row["value"] is not None else "")
        reference = _value(row, "reference")
        if row["figure"] == "floor_fraction":
            reference += " (openssl)"
        target = f"{row['comparison']} {row['target']:g}" if row["target"] is not None else ""
        if row["figure"] == "rss_per_connection" and row["target"] is not None:
            target = f"<= {row['target'] / 1000:g} kB"
        met = {True: "yes", False: "NO", None: "-" if row["target"] is not None else ""}[row["met"]]
        spread = row.get("rounds") or []
        spread_text = f"{min(spread):.2f}-{max(spread):.2f}x" if len(spread) > 1 else ""  # one ratio per round
        lines.append(f"  {row['workload']:<37}{row['figure']:<17}{_value(row, 'proxy'):>14}{reference:>22}"
                     f"{ratio:>9}{target:>11}  {met:<3}  {spread_text}".rstrip())
    for row in document.get("vs_nginx") or []:
        switches = row.get("switches") or {}
        if switches.get("proxy") is not None and switches.get("nginx") is not None:
            # Why CPU differs where system calls nearly match: every wait puts a thread to
            # sleep and wakes it again (course.bench.cpu.switch_snapshot).
            lines.append(f"  context switches per request, {row['workload']}: tlsproxy {switches['proxy']:.1f}, "
                         f"nginx {switches['nginx']:.1f}")
    floor = document.get("crypto_floor") or {}
    per_second, per_op = floor.get("per_second") or {}, floor.get("per_operation") or {}
    if per_second:
        lines.append("  crypto floor (openssl speed, one core): "
                     f"ECDSA P-256 sign {_fmt(per_op.get('ecdsa_p256_sign_us'))} µs "
                     f"({_fmt(per_second.get('ecdsa_p256_sign_per_s'), ',.0f')}/s), "
                     f"X25519 {_fmt(per_op.get('x25519_derive_us'))} µs, "
                     f"RSA-2048 sign {_fmt(per_op.get('rsa2048_sign_us'))} µs, "
                     f"AES-256-GCM {_fmt((per_second.get('aes_256_gcm_bytes_per_s') or 0) / 1e9, '.2f')} GB/s "
                     f"(16 KB); TLS 1.3 ECDSA handshake floor ~"
                     f"{_fmt(per_op.get('tls13_ecdsa_full_handshake_server_floor_us'))} µs")
    elif floor.get("error"):
        lines.append(f"  crypto floor: not measured ({floor['error']})")
    return "\n".join(lines)
