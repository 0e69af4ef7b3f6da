"""Charts of a results document, as PNG and SVG (matplotlib, no display needed).

Theory of operation
-------------------
Five figures, each drawn from the ``summary`` rows of ``results.json`` (so a chart
can be redrawn from a saved file without measuring again: ``draw_all(json.load(f),
out)``):

=====================  ===============================================================
``offload``            top row: CPU per request stacked by component, origin below, proxy
                       above, one bar per setup (the client is excluded).  In setup 3
                       the origin's part shrinks to plain HTTP; the proxy's part is what
                       the TLS cost moved to.  Bottom row: the origin's drop taken apart
                       (``course.bench.offload``), new connection and keep-alive, as a
                       waterfall 2 direct-https -> 1 direct-http (what TLS costs the
                       origin) and 3 terminate-unpooled -> 3 terminate (what pooling
                       saves it), each step labelled with its measured value.
``origin_cpu``         the origin's CPU per request across setups, per workload: who pays
                       for TLS when the proxy does not terminate it.
``handshakes``         CPU per new connection of whoever terminates the client's TLS:
                       full vs resumed, ECDSA vs RSA, TLS 1.3 vs 1.2; the crypto floor
                       from ``openssl speed`` as a line.
``throughput_latency`` requests/s, bulk MB/s, and p50/p99 latency per setup.
``vs_nginx``           the proxy-over-nginx ratios with the issue's targets.
=====================  ===============================================================

Every figure has a footer naming the machine, the versions and the date: a chart
without them invites a comparison across machines that the numbers cannot bear.
Rows missing from a run (``--quick`` measures fewer workloads) are simply absent;
a panel with no data says so.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from course.bench import offload as split  # noqa: E402
from course.bench.setups import ORIGIN_TERMINATES, PROXY_TERMINATES  # noqa: E402
from course.bench.variants import ORDER, VARIANTS, order  # noqa: E402
from course.bench.workloads import BY_NAME, TLS_SETUPS  # noqa: E402
from course.setups import BY_NAME as SETUP_FACTS, SETUPS  # noqa: E402

COLORS = {"origin": "#4C72B0", "proxy": "#DD8452", "nginx": "#55A868", "floor": "#8C8C8C",
          "met": "#55A868", "missed": "#C44E52", "info": "#8C8C8C", "tls": "#C44E52", "pooling": "#8172B3"}
LABELS = {s.name: f"{s.number} {s.name}" for s in SETUPS}
LABELS["nginx"] = "nginx (ref.)"
for _variant in VARIANTS:  # bench-only: "3 terminate-unpooled", "nginx-unpooled (ref.)"
    LABELS[_variant.name] = (f"{SETUP_FACTS[_variant.base].number} {_variant.name}" if _variant.base in SETUP_FACTS
                             else f"{_variant.name} (ref.)")
HANDSHAKE_VARIANTS = (  # (workload, label)
    ("newconn", "1.3 ECDSA full"), ("newconn-resumed", "1.3 resumed"), ("newconn-rsa", "1.3 RSA full"),
    ("newconn-tls12", "1.2 ECDSA full"), ("newconn-tls12-resumed", "1.2 resumed"),
    ("newconn-tls12-rsa", "1.2 RSA full"),
)


def _rows(document: dict, workload: str, client: str = "loadgen") -> list[dict]:
    rows = [r for r in document["summary"] if r["workload"] == workload and r["client"] == client]
    return sorted(rows, key=lambda r: order(r["setup"]))


def _footer(fig, document: dict) -> None:
    m = document.get("machine", {})
    p = document.get("parameters", {})
    text = (f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, {m.get('kernel', '')}; "
            f"Python {m.get('python', '?')}, {m.get('python_openssl', '?')}; nginx {m.get('nginx') or '-'}; "
            f"{m.get('date', '')}; {p.get('rounds', '?')} rounds x {p.get('duration', '?')} s"
            f"{' (--quick)' if p.get('quick') else ''}; median of rounds")
    fig.text(0.01, 0.005, text, fontsize=6.5, color="#555555", ha="left", va="bottom")


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data for {what}\n(not measured in this run)", ha="center", va="center",
            transform=ax.transAxes, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, out: Path, name: str, document: dict) -> list[Path]:
    _footer(fig, document)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- the offload chart
def offload(document: dict, out: Path) -> list[Path]:
    workloads = [w for w in ("keepalive-1k", "newconn", "bulk-1m") if _rows(document, w)] or ["keepalive-1k"]
    # Recomputed from the summary and the rounds, so an older results file (no "offload") draws too.
    entries = split.decomposition(document["summary"], document.get("measurements"))
    parts = [w for w in split.WORKLOADS if split.find(entries, w)]
    columns = 6  # the top row's panels span 6 / len(workloads) columns each, the bottom row's 6 / len(parts)
    fig = plt.figure(figsize=(max(5.2 * len(workloads), 7.0 * len(parts)), 9.6 if parts else 4.8))
    grid = fig.add_gridspec(2 if parts else 1, columns)
    top = [fig.add_subplot(grid[0, i * columns // len(workloads):(i + 1) * columns // len(workloads)])
           for i in range(len(workloads))]
    for i, workload in enumerate(parts):
        ax = fig.add_subplot(grid[1, i * columns // len(parts):(i + 1) * columns // len(parts)])
        _decomposition_panel(ax, split.find(entries, workload))
    _stacked_panels(document, top, workloads)
    fig.suptitle("Where TLS costs CPU: per request, by component (bar = origin + proxy; line = range of rounds)"
                 + ("\nbelow: the origin's saving behind the terminator = what TLS costs it + what pooling saves it"
                    if parts else ""), fontsize=10)
    return _save(fig, out, "offload", document)


def _stacked_panels(document: dict, axes, workloads: list[str]) -> None:
    for ax, workload in zip(axes, workloads):
        rows = _rows(document, workload)
        if not rows:
            _no_data(ax, workload)
            continue
        x = range(len(rows))
        origin = [r["cpu_us_per_request"].get("origin") or 0 for r in rows]
        proxy = [r["cpu_us_per_request"].get("proxy") or 0 for r in rows]
        ax.bar(x, origin, color=COLORS["origin"], label="origin")
        ax.bar(x, proxy, bottom=origin, color=[COLORS["nginx"] if r.get("implementation") == "nginx" else COLORS["proxy"]
                                               for r in rows], label="proxy (nginx in green)")
        for i, r in enumerate(rows):
            low, high = r.get("system_cpu_us_range") or (None, None)
            total = origin[i] + proxy[i]
            if low is not None and high and high > low:
                ax.plot([i, i], [low, high], color="black", linewidth=0.8)
            ax.text(i, total, f"{total:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(x), [LABELS.get(r["setup"], r["setup"]) for r in rows], rotation=35, ha="right",
                      fontsize=8)
        ax.set_ylabel("CPU µs per request (client excluded)")
        ax.set_title(BY_NAME[workload].title if workload in BY_NAME else workload, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")


def _rounds_text(values: list[float]) -> str:
    return f"\nrounds {min(values):.0f} to {max(values):.0f}" if len(values) > 1 else ""


def _decomposition_panel(ax, entry: dict) -> None:
    """A waterfall of the origin's CPU per request: 2 -> 1 is TLS, 3-unpooled -> 3 is pooling."""
    origin, rounds = entry["origin_us"], entry.get("rounds") or {}
    https, http = origin[split.DIRECT_HTTPS], origin[split.DIRECT_HTTP]
    unpooled, pooled = origin[split.UNPOOLED], origin[split.POOLED]
    bars = [(split.DIRECT_HTTPS, https), (split.DIRECT_HTTP, http), (split.UNPOOLED, unpooled),
            (split.POOLED, pooled)]
    xs = {split.DIRECT_HTTPS: 0, split.DIRECT_HTTP: 2, split.UNPOOLED: 3, split.POOLED: 5}
    for name, value in bars:
        if value is None:
            ax.text(xs[name], 0, "not\nmeasured\n(--unpooled)", ha="center", va="bottom", fontsize=7, color="#777777")
            continue
        ax.bar(xs[name], value, color=COLORS["origin"], width=0.7)
        ax.text(xs[name], value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    steps = [(1, https, http, entry["tls_cost"], COLORS["tls"], "TLS costs\nthe origin", rounds.get("tls_cost")),
             (4, unpooled, pooled, entry["pooling_saving"], COLORS["pooling"], "pooling\nsaves", rounds.get("pooling_saving"))]
    for x, high, low, value, color, words, spread in steps:
        if value is None:
            continue
        ax.bar(x, abs(value), bottom=min(high, low), color=color, width=0.7, alpha=0.85)
        ax.plot([x - 1.35, x + 1.35], [high, high], color="#555555", linewidth=0.7, linestyle=":")
        ax.plot([x - 0.35, x + 1.35], [low, low], color="#555555", linewidth=0.7, linestyle=":")
        ax.text(x, max(high, low), f"{words}\n{value:.0f} µs{_rounds_text(spread or [])}", ha="center",
                va="bottom", fontsize=8, color=color, fontweight="bold")
    ax.set_xticks(list(xs.values()) + [1, 4], [LABELS.get(n, n) for n in xs] + ["TLS\n(2 − 1)", "pooling\n(3-unpooled − 3)"],
                  rotation=0, fontsize=7)
    tops = [v for _, v in bars if v is not None]
    ax.set_ylim(0, max(tops) * 1.35 if tops else 1)
    ax.set_ylabel("origin CPU µs per request")
    title = BY_NAME[entry["workload"]].title if entry["workload"] in BY_NAME else entry["workload"]
    ax.set_title(f"the origin's saving, split: {title}", fontsize=9)
    rest = entry["remainder"]
    ax.text(0.99, 0.98, f"whole drop 2 − 3: {entry['total_drop']:.0f} µs"
            + (f"\nremainder 1 − 3-unpooled: {rest:.0f} µs" if rest is not None else ""),
            transform=ax.transAxes, ha="right", va="top", fontsize=7.5, color="#333333")


def origin_cpu(document: dict, out: Path) -> list[Path]:
    workloads = [w for w in ("keepalive-1k", "newconn", "bulk-1m", "upload-1m") if _rows(document, w)]
    fig, axes = plt.subplots(1, max(1, len(workloads)), figsize=(4.2 * max(1, len(workloads)), 4.2), squeeze=False)
    if not workloads:
        _no_data(axes[0][0], "the origin")
    for ax, workload in zip(axes[0], workloads):
        rows = _rows(document, workload)
        values = [r["cpu_us_per_request"].get("origin") or 0 for r in rows]
        ax.bar(range(len(rows)), values, color=COLORS["origin"])
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)), [LABELS.get(r["setup"], r["setup"]) for r in rows], rotation=35,
                      ha="right", fontsize=8)
        ax.set_title(workload, fontsize=9)
        ax.set_ylabel("origin CPU µs per request")
    fig.suptitle("The origin's CPU per request: it pays for TLS unless a proxy terminates it", fontsize=10)
    return _save(fig, out, "origin_cpu", document)


def handshakes(document: dict, out: Path) -> list[Path]:
    """CPU per new connection of the TLS terminator, by handshake variant."""
    setups = [s for s in TLS_SETUPS
              if any(r["setup"] == s for w, _ in HANDSHAKE_VARIANTS for r in _rows(document, w))]
    variants = [(w, label) for w, label in HANDSHAKE_VARIANTS if _rows(document, w)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(setups) + 2), 4.6))
    if not setups:
        _no_data(ax, "handshakes")
        return _save(fig, out, "handshakes", document)
    width = 0.8 / max(1, len(variants))
    cmap = plt.get_cmap("tab10")
    for j, (workload, label) in enumerate(variants):
        xs, ys = [], []
        for i, setup in enumerate(setups):
            row = next((r for r in _rows(document, workload) if r["setup"] == setup), None)
            if row is None:
                continue
            # The component that terminates the client's TLS: the origin when there is no proxy in
            # front that decrypts; in passthrough and forward the proxy only copies bytes.
            role = "origin" if setup in ORIGIN_TERMINATES else "proxy"
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(row["cpu_us_per_request"].get(role) or 0)
        ax.bar(xs, ys, width, label=label, color=cmap(j))
    floor = ((document.get("crypto_floor") or {}).get("per_operation") or {})
    if floor.get("tls13_ecdsa_full_handshake_server_floor_us"):
        ax.axhline(floor["tls13_ecdsa_full_handshake_server_floor_us"], color=COLORS["floor"], linestyle="--",
                   linewidth=1, label="crypto floor: ECDSA sign + 2 X25519 (openssl speed)")
    ax.set_xticks(range(len(setups)), [LABELS.get(s, s) for s in setups], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("CPU µs per new connection (TLS terminator)")
    origin_in, proxy_in = (", ".join(str(SETUP_FACTS[s].number) for s in names)
                           for names in (ORIGIN_TERMINATES, PROXY_TERMINATES))
    ax.set_title(f"Handshake cost of whoever terminates the client's TLS (origin in {origin_in}; "
                 f"proxy in {proxy_in}, nginx)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out, "handshakes", document)


def throughput_latency(document: dict, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cmap = plt.get_cmap("tab10")
    panels = (
        (axes[0], ("keepalive-1k", "newconn"), lambda r: r["requests_per_second"], "requests per second"),
        (axes[1], ("bulk-1m", "bulk-20m", "upload-1m"), lambda r: (r["bytes_per_second"] or 0) / 1e6, "MB/s"),
    )
    for ax, workloads, value, unit in panels:
        present = [w for w in workloads if _rows(document, w)]
        if not present:
            _no_data(ax, ", ".join(workloads))
            continue
        setups = [s for s in ORDER if any(r["setup"] == s for w in present for r in _rows(document, w))]
        width = 0.8 / len(present)
        for j, workload in enumerate(present):
            rows = {r["setup"]: r for r in _rows(document, workload)}
            xs = [i - 0.4 + width * (j + 0.5) for i, s in enumerate(setups) if s in rows]
            ax.bar(xs, [value(rows[s]) or 0 for s in setups if s in rows], width, label=workload, color=cmap(j))
        ax.set_xticks(range(len(setups)), [LABELS.get(s, s) for s in setups], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    ax = axes[2]
    present = [w for w in ("keepalive-1k", "newconn") if _rows(document, w)]
    if present:
        setups = [s for s in ORDER if any(r["setup"] == s for w in present for r in _rows(document, w))]
        width = 0.8 / len(present)
        for j, workload in enumerate(present):
            rows = {r["setup"]: r for r in _rows(document, workload)}
            xs = [i - 0.4 + width * (j + 0.5) for i, s in enumerate(setups) if s in rows]
            p50 = [(rows[s]["latency_us"]["p50"] or 0) / 1000 for s in setups if s in rows]
            p99 = [(rows[s]["latency_us"]["p99"] or 0) / 1000 for s in setups if s in rows]
            ax.bar(xs, p50, width, color=cmap(j), label=f"{workload} p50")
            ax.scatter(xs, p99, color=cmap(j), marker="_", s=120, label=f"{workload} p99")
        ax.set_xticks(range(len(setups)), [LABELS.get(s, s) for s in setups], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("latency, ms")
        ax.legend(fontsize=7)
    else:
        _no_data(ax, "latency")
    concurrency = {w: BY_NAME[w].concurrency for w in ("keepalive-1k", "bulk-1m") if w in BY_NAME}
    fig.suptitle("Throughput and latency with our load generator (Python, threads: "
                 f"{concurrency.get('keepalive-1k')} connections, {concurrency.get('bulk-1m')} for bulk), "
                 "client and servers sharing the machine", fontsize=10)
    return _save(fig, out, "throughput_latency", document)


def vs_nginx(document: dict, out: Path) -> list[Path]:
    rows = [r for r in document.get("vs_nginx") or [] if r["value"] is not None and r["figure"] != "rss_per_connection"]
    memory = next((r for r in document.get("vs_nginx") or [] if r["figure"] == "rss_per_connection"), None)
    fig, (ax, ax_mem) = plt.subplots(1, 2, figsize=(12, 0.45 * max(4, len(rows)) + 1.5),
                                     gridspec_kw={"width_ratios": [3, 1]})
    if rows:
        labels = [f"{r['workload']}: {r['figure'].replace('_', ' ')}" for r in rows]
        colors = [COLORS["info"] if r["met"] is None else COLORS["met"] if r["met"] else COLORS["missed"] for r in rows]
        y = range(len(rows))
        ax.barh(y, [r["value"] for r in rows], color=colors)
        for i, r in enumerate(rows):
            ax.text(r["value"], i, f" {r['value']:g}", va="center", fontsize=7)
            if r["target"] is not None:
                ax.plot([r["target"], r["target"]], [i - 0.4, i + 0.4], color="black", linewidth=1.5)
        ax.axvline(1.0, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        values = [r["value"] for r in rows] + [r["target"] for r in rows if r["target"] is not None]
        ticks = [t for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1, 1.4, 2, 2.5, 3, 5, 10, 20)
                 if min(values) / 1.5 <= t <= max(values) * 1.5]
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ratio (CPU: proxy / nginx, lower is better; throughput: higher is better); | = target")
    else:
        _no_data(ax, "proxy vs nginx (run with nginx installed)")
    if memory and memory["proxy"] is not None:
        values = [memory["proxy"] / 1000, (memory["reference"] or 0) / 1000]
        ax_mem.bar([0, 1], values, color=[COLORS["met"] if memory["met"] else COLORS["missed"], COLORS["nginx"]])
        ax_mem.axhline(memory["target"] / 1000, color="black", linewidth=1.2, label="target")
        ax_mem.set_xticks([0, 1], ["tlsproxy", "nginx"])
        ax_mem.set_ylabel("RSS growth, kB per idle TLS connection")
        ax_mem.legend(fontsize=7)
    else:
        _no_data(ax_mem, "idle connections")
    fig.suptitle("tlsproxy against nginx (1 worker), same run, same machine: green = target met, red = missed",
                 fontsize=10)
    return _save(fig, out, "vs_nginx", document)


CHARTS = (offload, origin_cpu, handshakes, throughput_latency, vs_nginx)


# --------------------------------------------------------------------------- the sweep (its own document)
SWEEP_COLORS = {"threads": COLORS["proxy"], "event loop": COLORS["pooling"], "python floor": "0.55",
                "nginx": COLORS["nginx"]}


def sweep(document: dict, out: str | os.PathLike[str]) -> list[Path]:
    """``course.bench.sweep``'s chart: per workload, proxy CPU per request (top) and p99 (bottom) against
    connections, one line per engine through the medians, one dot per round."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workloads = document["parameters"]["workloads"]
    fig, axes = plt.subplots(2, len(workloads), figsize=(5.5 * len(workloads), 7.5), squeeze=False)
    for column, workload in enumerate(workloads):
        rows = [r for r in document.get("summary", []) if r["workload"] == workload]
        for row_index, (median_key, rounds_key, scale, unit) in enumerate((
                ("proxy_cpu_us_per_request", "proxy_cpu_us_rounds", 1.0, "proxy CPU per request, µs"),
                ("p99_us", "p99_us_rounds", 1e-3, "p99 latency, ms (wrk)"))):
            ax = axes[row_index][column]
            if not rows:
                _no_data(ax, workload)
                continue
            for engine, color in SWEEP_COLORS.items():
                mine = sorted((r for r in rows if r["engine"] == engine and r[median_key] is not None),
                              key=lambda r: r["connections"])
                if not mine:
                    continue
                ax.plot([r["connections"] for r in mine], [r[median_key] * scale for r in mine], "-o",
                        color=color, label=engine, markersize=4)
                for r in mine:
                    ax.scatter([r["connections"]] * len(r[rounds_key]), [v * scale for v in r[rounds_key]],
                               color=color, s=8, alpha=0.5)
            ax.set_xscale("log", base=2)
            ax.set_xticks(document["parameters"]["connections"],
                          [str(c) for c in document["parameters"]["connections"]])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if row_index == 1:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xlabel("concurrent connections (wrk -c)")
            ax.set_ylim(bottom=0 if row_index == 0 else None)
            ax.set_ylabel(unit)
            handshake = document["handshakes"].get(workload, "").replace("; ", ";\n")
            ax.set_title(f"{workload}: {handshake}" if row_index == 0 else workload, fontsize=8)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    floor = any(r["engine"] == "python floor" for r in document.get("summary", []))
    fig.suptitle("One thread per connection against one event loop, and nginx (1 worker)"
                 + (",\nbeside the Python floor (a byte relay, no HTTP)" if floor else "")
                 + ": terminate, TLS 1.3, driven by wrk, one interleaved run", fontsize=10)
    return _save(fig, out, "sweep", document)


def draw_all(document: dict, out: str | os.PathLike[str]) -> list[Path]:
    """Every chart as PNG and SVG in ``out``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for chart in CHARTS:
        paths += chart(document, out)
    return paths
