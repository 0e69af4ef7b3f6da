"""A ladder (sequence) diagram of a capture: client | proxy | origin, one arrow per packet.

Theory of operation
-------------------
Each column is a host and each arrow one captured TCP segment, drawn at the time it
was captured, from the host that sent it to the one that received it::

    client               proxy                origin
      |---- SYN ----------->|                    |
      |<--- SYN-ACK --------|                    |
      |---- ClientHello --->|                    |
      |<--- ServerHello, ChangeCipherSpec, {EncryptedExtensions, Certificate, ...}
      |---- [Application Data] -->|              |
      |                     |---- SYN ---------->|
      |                     |---- POST /account/statement?id=... HTTP/1.1 -->|

The names come from ``dissect.py`` with the bundle's full key log, so a protected
record is named by what it really holds, in the notation of RFC 8446 §2:
``{...}`` is protected with handshake keys, ``[...]`` with application keys (in TLS 1.2,
with the session keys: its Finished shows as ``[Finished]``), and an opened record that
starts an HTTP message shows its start line: ``[POST /path HTTP/1.1]``.  Pure ACKs (no data, no SYN/FIN/RST)
are left out: they would double the picture and teach nothing about TLS.

Time runs downwards.  Loopback handshakes take a fraction of a millisecond and then
the capture may idle for a second, so the vertical axis is *time, compressed*: each
arrow is at least one row below the previous one, plus a logarithmic share of the
real gap, and gaps over ``GAP_MARK`` seconds get a "≈ 120 ms" mark.  Every arrow is
labelled with its real time since the first packet, at the left.

``ladder_arrows`` computes the arrows (plain values, tested without drawing);
``draw`` renders them with matplotlib to PNG and SVG.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from course.capture.bundle import CaptureBundle
from course.capture.dissect import dissect_all

GAP_MARK = 0.020          # seconds: a gap longer than this gets a "≈" mark
WRAP = 64                 # characters per label line
MAX_ARROWS = 300          # a bulk transfer would draw thousands: the picture keeps the first ones
ROW_INCH = 0.30
COLORS = {"tcp": "#7f7f7f", "handshake": "#1f5fbf", "protected": "#a0307a", "http": "#1c8a3a", "data": "#d9730d"}


@dataclass(frozen=True)
class Arrow:
    time: float               # capture time (seconds since the epoch)
    source: str               # the column that sent it: "client", "proxy" or "origin"
    target: str
    label: str
    kind: str                 # "tcp", "handshake", "protected", "http" or "data": picks the colour
    leg: str
    connection: int           # number of the TCP connection within its leg, from 1


def _tcp_label(segment) -> str:
    flags = segment.flag_text
    if "R" in flags:
        return "RST"
    if "S" in flags:
        return "SYN-ACK" if "A" in flags else "SYN"
    return "FIN" if "F" in flags else ""


def _record_labels(views) -> tuple[list[str], list[str]]:
    """Labels and kinds for the records starting in one segment; consecutive records
    protected with TLS 1.3 handshake keys are grouped in one pair of braces."""
    labels, kinds, group = [], [], []
    for view in views + [None]:
        if view is not None and view.protected and view.keys == "handshake":
            group += view.names
            continue
        if group:
            labels.append("{" + ", ".join(group) + "}")
            kinds.append("protected")
            group = []
        if view is None:
            break
        if view.protected:
            labels.append(f"[{view.detail or ', '.join(view.names)}]")
            kinds.append("protected")
        else:
            labels.append(", ".join(view.names))
            kinds.append("http" if "HTTP/1." in view.names[0] else "handshake")
    return labels, kinds


def ladder_arrows(bundle: CaptureBundle, *, include_acks: bool = False, decrypted: bool = True) -> list[Arrow]:
    """Every segment of every leg as an arrow, in time order.  ``decrypted=False`` names
    the records as an on-path observer without the key log sees them."""
    arrows = []
    for leg_name, leg in bundle.legs.items():
        connections = bundle.connections(leg_name)
        key_log = bundle.keys_log if decrypted else None
        for number, dissection in enumerate(dissect_all(connections, key_log), 1):
            views = dissection.records
            for segment in dissection.connection.segments:
                source, target = leg.ends if segment.sender == "client" else leg.ends[::-1]
                parts, kinds = [], []
                tcp = _tcp_label(segment)
                if tcp:
                    parts.append(tcp)
                    kinds.append("tcp")
                if segment.payload:
                    end = segment.offset + len(segment.payload)
                    starting = [v for v in views[segment.sender] if segment.offset <= v.offset < end]
                    labels, label_kinds = _record_labels(starting)
                    parts += labels
                    kinds += label_kinds
                    if not starting:
                        parts.append(f"({len(segment.payload)} more bytes)" if dissection.is_tls
                                     else _plain_label(segment.payload))
                        kinds.append("data" if dissection.is_tls else "http")
                parts = _count_repeats(parts)
                if not parts and not include_acks:
                    continue
                kind = next((k for k in ("protected", "http", "handshake") if k in kinds), kinds[0] if kinds else "tcp")
                arrows.append(Arrow(segment.time, source, target, ", ".join(parts) or "ACK", kind, leg_name, number))
    return sorted(arrows, key=lambda a: a.time)


def _count_repeats(labels: list[str]) -> list[str]:
    """["[Application Data]"] * 4 -> ["[Application Data] ×4"]: what an observer without keys
    sees of TLS 1.3's encrypted server flight."""
    result: list[str] = []
    for label in labels:
        if result and result[-1].split(" ×")[0] == label:
            count = int(result[-1].split(" ×")[1]) + 1 if " ×" in result[-1] else 2
            result[-1] = f"{label} ×{count}"
        else:
            result.append(label)
    return result


def _plain_label(payload: bytes) -> str:
    first = payload.split(b"\r\n", 1)[0][:60].decode("latin-1")
    return first if first.isprintable() else f"{len(payload)} bytes"


# --------------------------------------------------------------------------- layout
def rows(arrows: list[Arrow]) -> list[float]:
    """The y position of each arrow: one row each (two for a label on two lines), plus
    log-scaled real time gaps."""
    positions, y = [], 0.0
    for index, arrow in enumerate(arrows):
        if index:
            gap_ms = (arrow.time - arrows[index - 1].time) * 1000
            y += 1 + min(2.5, math.log10(1 + max(gap_ms, 0.0))) + (0.6 if len(arrow.label) > WRAP else 0)
        positions.append(y)
    return positions


def _wrap(text: str) -> str:
    """At most two lines of ``WRAP`` characters, broken after a comma."""
    lines = textwrap.wrap(text, WRAP, break_long_words=False)
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), WRAP, placeholder=" …")]
    return "\n".join(lines)


def draw(arrows: list[Arrow], columns: list[str], stem: str | Path, *, title: str = "",
         formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Draw the ladder and save it as ``stem.png`` and ``stem.svg``; return the paths."""
    import matplotlib
    from matplotlib.figure import Figure

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    ys = rows(arrows)
    height = (ys[-1] if ys else 1) * ROW_INCH + 2.2
    x = {name: index * 4.0 for index, name in enumerate(columns)}
    figure = Figure(figsize=(4.0 * len(columns) + 2.5, height))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.96 - 1.2 / height))
    start = arrows[0].time if arrows else 0.0
    for name, position in x.items():
        axes.plot([position, position], [-0.6, (ys[-1] if ys else 1) + 0.8], color="#444444", lw=1.2, zorder=1)
        axes.text(position, -1.2, name, ha="center", va="bottom", fontsize=11, weight="bold",
                  bbox={"boxstyle": "round", "fc": "#eeeeee", "ec": "#444444"})
    previous = None
    for arrow, y in zip(arrows, ys):
        color = COLORS[arrow.kind]
        x0, x1 = x[arrow.source], x[arrow.target]
        axes.annotate("", xy=(x1, y), xytext=(x0, y),
                      arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3, "shrinkA": 0, "shrinkB": 0})
        axes.text((x0 + x1) / 2, y - 0.12, _wrap(arrow.label), ha="center", va="bottom", fontsize=7.5,
                  color=color, linespacing=1.1)
        axes.text(min(x.values()) - 0.35, y, f"{(arrow.time - start) * 1000:.3f} ms", ha="right",
                  va="center", fontsize=7, color="#555555", family="monospace")
        if previous is not None and arrow.time - previous > GAP_MARK:
            axes.text(min(x.values()) - 0.35, y - 0.9, f"≈ {(arrow.time - previous) * 1000:.0f} ms later",
                      ha="right", va="center", fontsize=7, color="#999999", style="italic")
        previous = arrow.time
    axes.set_xlim(min(x.values()) - 2.3, max(x.values()) + 0.6)
    axes.set_ylim((ys[-1] if ys else 1) + 1.0, -2.0)
    axes.axis("off")
    legend = ("grey TCP, blue plaintext TLS handshake, purple encrypted, green plaintext HTTP; pure ACKs left out\n"
              "time runs down (compressed across gaps; real time at the left); "
              "{…} protected with handshake keys, […] with application keys (RFC 8446 §2)")
    figure.suptitle(title, fontsize=12, y=1 - 0.25 / height, va="top")
    figure.text(0.5, 1 - 0.62 / height, legend, ha="center", va="top", fontsize=8, color="#555555")
    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        for extension in formats:
            path = stem.with_suffix("." + extension)
            figure.savefig(path, dpi=110)
            paths.append(path)
    return paths


def draw_bundle(bundle: CaptureBundle, stem: str | Path, *, decrypted: bool = True, **options) -> list[Path]:
    """The ladder diagram of a capture bundle, as ``stem.png`` and ``stem.svg``."""
    columns = [host for host in ("client", "proxy", "origin") if host in bundle.hosts]
    view = "" if decrypted else ", as an on-path observer sees it (no keys)"
    arrows = ladder_arrows(bundle, decrypted=decrypted)
    if len(arrows) > MAX_ARROWS:
        view += f" (first {MAX_ARROWS} of {len(arrows)} packets)"
    return draw(arrows[:MAX_ARROWS], columns, stem, title=f"Ladder diagram: {bundle.title}{view}", **options)


# Figures under diagrams/ (``make diagrams`` calls this through course.diagrams).
COMMITTED = {"ladder-tls13": ("terminate", "1.3", False), "ladder-tls12": ("terminate", "1.2", False),
             "ladder-tls13-resumed": ("terminate", "1.3", True)}


def regenerate_committed_figures(out: str | Path) -> list[Path]:
    """The ladder diagrams of a TLS 1.3, a TLS 1.2 and a resumed handshake through the
    terminating proxy, drawn from the bundled example captures (real runs, made with
    ``tlsproxy capture``), so that no root is needed and the figures change only when
    the captures do."""
    from course.capture.bundle import load_example

    paths: list[Path] = []
    for name, (setup, tls, resumed) in COMMITTED.items():
        paths += draw_bundle(load_example(setup, tls, resumed), Path(out) / name)
    return paths
