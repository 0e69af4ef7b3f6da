"""The notebooks' figures: each function draws one figure from plain values and returns it.

Theory of operation
-------------------
A notebook cell should show the networking: which facts were measured, which flights a
handshake has, what each handshake cost.  How the squares, arrows and dots are laid out
is plumbing, and lives here, one function per figure:

    facts_grid(rows, columns, cells)        notebook 1, step 4: yes / no / n.a. per route
    flight_ladders({title: arrows})         notebook 2, step 4: one arrow per flight
    cpu_scatter({label: samples})           notebook 2, step 5: one dot per handshake
    facts_table_grid({row: {fact: value}})  notebook 6, step 6: the boolean facts of a printed table

Every function takes strings, numbers and booleans (never a ``Playground`` or a trace),
so the figure can be redrawn from saved values and tested without a network.  Each
builds a ``matplotlib.figure.Figure`` directly, without ``pyplot``: no global "current
figure", nothing left open, and a notebook shows it with ``display(figure)`` exactly
once.  ``figure.savefig(path)`` writes a PNG with the Agg renderer, as the tests do.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

BLUE, PURPLE, GREEN, ORANGE, GREY = "#1f5fbf", "#a0307a", "#1c8a3a", "#d9730d", "#444444"

# A measured fact is true, false, or does not apply (None: "no proxy" on the direct route).
_CELL_COLOUR = {True: (0.27, 0.45, 0.70), False: (0.92, 0.92, 0.92), None: (1.0, 1.0, 1.0)}
_TEXT_COLOUR = {True: "white", False: "black", None: "grey"}


def facts_grid(rows: Sequence[str], columns: Sequence[str], cells: Sequence[Sequence[bool | None]], *,
               title: str = "measured in this run", not_applicable: str = "(no proxy)") -> Figure:
    """A grid of yes / no / ``not_applicable`` squares: one row per route, one column per fact."""
    if len(cells) != len(rows) or any(len(row) != len(columns) for row in cells):
        raise ValueError(f"cells must be {len(rows)} rows of {len(columns)} values")
    words = {True: "yes", False: "no", None: not_applicable}
    figure = Figure(figsize=(9, 0.55 * len(rows) + 1.0), layout="tight")
    ax = figure.add_subplot()
    ax.imshow([[_CELL_COLOUR[value] for value in row] for row in cells], aspect="auto")
    for y, row in enumerate(cells):
        for x, value in enumerate(row):
            ax.text(x, y, words[value], ha="center", va="center", color=_TEXT_COLOUR[value])
    ax.set_xticks(range(len(columns)), list(columns), fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.xaxis.tick_top()
    ax.set_title(title, pad=40)
    return figure


def flight_ladders(ladders: Mapping[str, Sequence[tuple[str, str]]], *, title: str = "") -> Figure:
    """One ladder per handshake, side by side: client on the left, server on the right, time
    running down, one arrow per ``(sender, label)``.  ``sender`` is ``"client"`` (blue),
    ``"server"`` (purple) or ``"request"`` (green, dashed: the client's first application data)."""
    colours = {"client": BLUE, "server": PURPLE, "request": GREEN}
    figure = Figure(figsize=(3.75 * len(ladders), 6.5), layout="tight")
    axes = figure.subplots(1, len(ladders), squeeze=False)[0]
    depth = 0.0
    for ax, (name, arrows) in zip(axes, ladders.items()):
        y = 0.0
        for sender, label in arrows:
            if sender not in colours:
                raise ValueError(f"unknown sender {sender!r}: expected one of {', '.join(colours)}")
            to_server = sender != "server"
            ax.annotate("", xy=(1 if to_server else 0, y + 0.4), xytext=(0 if to_server else 1, y),
                        arrowprops={"arrowstyle": "-|>", "color": colours[sender], "lw": 1.4,
                                    "linestyle": "--" if sender == "request" else "-"})
            ax.text(0.5, y + 0.5, label, ha="center", va="top", fontsize=8, color=colours[sender])
            y += 1.0 + 0.42 * (label.count("\n") + 1)
        depth = max(depth, y)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([0, 1], ["client", "server"])
        ax.set_xlim(-0.15, 1.15)
        ax.set_yticks([])
        for x in (0, 1):
            ax.axvline(x, color=GREY, lw=1)
    for ax in axes:
        ax.set_ylim(depth, -0.5)          # time runs down; every ladder on the same scale
    if title:
        figure.suptitle(title)
    return figure


def cpu_scatter(samples: Mapping[str, Sequence[float]], *, colours: Sequence[str] | None = None,
                xlabel: str = "CPU µs per operation", title: str = "", keep: float = 0.98) -> Figure:
    """One row of dots per label (one dot per sample, spread vertically so they do not hide
    each other) and a black bar at each row's median.  The x axis stops a little past the
    ``keep`` quantile of all samples, so that a few outliers do not squash the rest."""
    everything = sorted(value for values in samples.values() for value in values)
    if not everything:
        raise ValueError("no samples to draw")
    colours = list(colours) if colours is not None else [BLUE] * len(samples)
    figure = Figure(figsize=(9, 0.6 * len(samples) + 1.0), layout="tight")
    ax = figure.add_subplot()
    for row, (values, colour) in enumerate(zip(samples.values(), colours)):
        dots = sorted(values)
        jitter = [row + 0.25 * ((i * 7919) % 101 / 101 - 0.5) for i in range(len(dots))]   # deterministic spread
        ax.scatter(dots, jitter, s=4, alpha=0.35, color=colour)
        ax.plot([statistics.median(dots)] * 2, [row - 0.25, row + 0.25], color="black", lw=2)
    ax.set_yticks(range(len(samples)), list(samples), fontsize=8)
    ax.set_xlim(0, everything[min(len(everything) - 1, int(keep * len(everything)))] * 1.1)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return figure


def facts_table_grid(table: Mapping[str, Mapping[str, object]], *, title: str = "") -> Figure:
    """``facts_grid`` drawn from a table as a notebook prints it with ``format_table``: one row per
    key of ``table``, one column per fact whose value is a boolean (text and counts, such as "whose
    certificate" or "TLS sessions", stay in the printed table).  Every row must have the same
    boolean facts; each column label is wrapped at its first space."""
    if not table:
        raise ValueError("no rows to draw")
    facts = [[name for name, value in row.items() if isinstance(value, bool)] for row in table.values()]
    if not facts[0] or any(names != facts[0] for names in facts):
        raise ValueError(f"every row needs the same boolean facts, got {facts}")
    return facts_grid(list(table), [name.replace(" ", "\n", 1) for name in facts[0]],
                      [[row[name] for name in facts[0]] for row in table.values()], title=title)
