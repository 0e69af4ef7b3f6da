"""Regenerate every figure under ``diagrams/`` from the code and from real runs.

``make diagrams`` (or ``python -m course.diagrams diagrams``) draws the figures below;
``--code-only`` only those drawn from the code, ``--only=setups`` (say) just one of them:

``architecture``
    ``proxy/`` in layers (the modules are placed here by hand, and checked against
    the source: a module that is not placed stops ``make diagrams``), ``course/``
    above it, and one request through setup 3 as numbered calls between modules;
``setups``
    every setup, from the table in ``course.setups``;
``http1-reader-states``
    the HTTP/1.1 reader's state machine, from ``proxy.http1.reader.TRANSITIONS``,
    the very table the parser runs on;
``exchange-phases``
    one exchange's phases, from ``proxy.exchange.TRANSITIONS``;
``exchange-failures``
    what a failure becomes in each phase, from ``proxy.exchange.ON_FAILURE``;
``connection-states``
    a client connection's life, from ``proxy.lifecycle.TRANSITIONS``, with the states a
    graceful shutdown closes at once (``CUT_AT_SHUTDOWN``) filled;
``ladder-*``
    ladder diagrams of real TLS 1.2, 1.3 and resumed handshakes (``course.capture``);
``status-page``
    a screenshot of the live status page after real traffic (headless Chromium);
``bench/*``
    the benchmark's charts from a ``--quick`` run (``course.bench``).

In the state figures every name and label is an Enum member's ``name`` or ``value``,
read from the table the code runs on: rename a step and the figure follows, add a state
and it is drawn (or, where this module places states by hand, drawing stops and says
where to place it).  Each figure is written as PNG (for the README and notebooks) and SVG.
``--code-only`` draws only the figures drawn from the code (no capture, screenshot or
benchmark run).
"""

from __future__ import annotations

import ast
import os
import sys
import textwrap
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

try:
    import matplotlib
except ModuleNotFoundError as error:  # `make diagrams` without the lab extra: one line, no traceback
    if __name__ == "__main__":
        from course.extras import exit_if_missing

        exit_if_missing("make diagrams (python -m course.diagrams)", error)
    raise

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

from proxy.exchange import Phase  # noqa: E402
from proxy.lifecycle import ConnState  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COLORS = {"tls": "#1f6feb", "http": "#6e7781", "splice": "#bf8700", "connect": "#8250df", "intercept": "#cf222e"}
INK, MUTED, LINE, PAPER, BLUE, PATH = "#24292f", "#57606a", "#d0d7de", "#f6f8fa", "#1f6feb", "#cf222e"
DPI = 130  # figures are measured (boxes fitted to their text) at the dpi they are saved at


class LayoutError(ValueError):
    """The code has something this module does not place yet: say what, and where to place it."""


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{name}.{ext}"
        # metadata without dates keeps regenerated SVGs identical when nothing changed
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- drawing
def canvas(width: float, height: float, xlim=(0.0, 1.0), ylim=(0.0, 1.0)):
    """A figure with one axis-less axes; limits are fixed first, so boxes can be measured."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)  # text widths change with dpi (hinting)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def extent(ax, artist) -> tuple[float, float]:
    """Width and height of a drawn text, in data units."""
    box = artist.get_window_extent(ax.figure.canvas.get_renderer())
    (x0, y0), (x1, y1) = ax.transData.inverted().transform([(box.x0, box.y0), (box.x1, box.y1)])
    return x1 - x0, y1 - y0


def node(ax, x: float, y: float, name: str, note: str = "", *, size: float = 10, note_size: float = 7.5,
         wrap: int = 30, width: float = 0.0, fc: str = PAPER, ec: str = MUTED, lw: float = 1.0, ls: str = "-",
         weight: str = "bold", pad: float = 0.01, zorder: float = 3) -> FancyBboxPatch:
    """A box centred on (x, y) around ``name`` and, smaller, ``note``; the patch, for arrows to clip at."""
    title = ax.text(x, y, name, ha="center", va="center", fontsize=size, weight=weight, color=INK,
                    zorder=zorder + 1)
    tw, th = extent(ax, title)
    sub, nw, nh, gap = None, 0.0, 0.0, 0.0
    if note:
        sub = ax.text(x, y, textwrap.fill(note, wrap), ha="center", va="center", fontsize=note_size,
                      color=MUTED, zorder=zorder + 1, linespacing=1.2)
        nw, nh = extent(ax, sub)
        gap = th * 0.3
    xpad = pad * (ax.get_xlim()[1] - ax.get_xlim()[0])
    ypad = pad * (ax.get_ylim()[1] - ax.get_ylim()[0])
    w, h = max(tw, nw, width) + 2 * xpad, th + gap + nh + 2 * ypad
    top = y + h / 2 - ypad
    title.set_position((x, top - th / 2))
    if sub is not None:
        sub.set_position((x, top - th - gap - nh / 2))
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=f"round,pad=0,rounding_size={min(xpad, ypad):.4f}",
                           fc=fc, ec=ec, lw=lw, ls=ls, zorder=zorder)
    ax.add_patch(patch)
    return patch


def center(patch: FancyBboxPatch) -> tuple[float, float]:
    return patch.get_x() + patch.get_width() / 2, patch.get_y() + patch.get_height() / 2


def arc_point(ax, a: FancyBboxPatch | None, b: FancyBboxPatch | None, pa, pb, rad: float) -> tuple[float, float]:
    """The middle of the visible part of an ``arc3`` arrow from pa to pb (clipped at a and b).

    ``arc3`` bends in display coordinates: the control point is the chord's middle
    moved by ``rad`` times the chord, turned a quarter clockwise (matplotlib's
    ``ConnectionStyle.Arc3``), so the label is computed there too, never guessed.
    """
    (x1, y1), (x2, y2) = ax.transData.transform([pa, pb])
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    visible = []
    for i in range(101):
        t = i / 100
        point = ((1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t * t * x2,
                 (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t * t * y2)
        if not any(p is not None and p.contains_point(point) for p in (a, b)):
            visible.append(point)
    if not visible:
        visible = [((x1 + x2) / 2, (y1 + y2) / 2)]
    mx, my = visible[len(visible) // 2]
    return tuple(ax.transData.inverted().transform((mx, my)))


def arrow(ax, a, b, *, rad: float = 0.0, label: str = "", color: str = BLUE, lw: float = 1.3, ls: str = "-",
          label_size: float = 8.5, label_color: str = INK, label_ha: str = "center", zorder: float = 2) -> None:
    """An arrow between two boxes (or points), clipped at the boxes, with its label at its middle."""
    pa = center(a) if isinstance(a, FancyBboxPatch) else a
    pb = center(b) if isinstance(b, FancyBboxPatch) else b
    patch_a = a if isinstance(a, FancyBboxPatch) else None
    patch_b = b if isinstance(b, FancyBboxPatch) else None
    ax.add_patch(FancyArrowPatch(pa, pb, patchA=patch_a, patchB=patch_b, connectionstyle=f"arc3,rad={rad}",
                                 arrowstyle="-|>", mutation_scale=13, lw=lw, ls=ls, color=color,
                                 shrinkA=2 if patch_a else 0, shrinkB=2 if patch_b else 0, zorder=zorder))
    if label:
        mx, my = arc_point(ax, patch_a, patch_b, pa, pb, rad)
        if label_ha != "center":  # beside the arc's outermost point, not on it
            mx += (0.006 if label_ha == "left" else -0.006) * (ax.get_xlim()[1] - ax.get_xlim()[0])
        ax.text(mx, my, label, ha=label_ha, va="center", fontsize=label_size, color=label_color,
                bbox=dict(fc="white", ec="none", pad=1.2), zorder=zorder + 0.5)


def side_point(patch: FancyBboxPatch, side: str, fraction: float) -> tuple[float, float]:
    """A point on the left or right side of a box, ``fraction`` of the way up."""
    x = patch.get_x() + (patch.get_width() if side == "right" else 0.0)
    return x, patch.get_y() + patch.get_height() * fraction


def loop(ax, patch: FancyBboxPatch, label: str, *, side: str = "left", span=(0.15, 0.85), color: str = BLUE) -> None:
    """A transition from a state to itself: a loop on one side of its box, between two heights of it."""
    top, bottom = side_point(patch, side, span[1]), side_point(patch, side, span[0])
    rad = 2.2 if side == "left" else -2.2  # drawn top to bottom: a positive rad bulges left
    ax.add_patch(FancyArrowPatch(top, bottom, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                 mutation_scale=12, lw=1.3, color=color, shrinkA=0, shrinkB=0, zorder=2))
    mx, my = arc_point(ax, None, None, top, bottom, rad)
    ax.text(mx, my, label, ha="right" if side == "left" else "left", va="center", fontsize=8.5, color=INK,
            bbox=dict(fc="white", ec="none", pad=1.2), zorder=2.5)


def wrapped(text: str, width: int) -> str:
    return textwrap.fill(text, width)


# --------------------------------------------------------------------------- reading the source
IO_MODULES = {"socket", "ssl", "threading", "select", "selectors", "asyncio", "subprocess"}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def gathers_only(tree: ast.Module) -> bool:
    """A package ``__init__`` that defines nothing (a docstring, re-exports) is not a module of its own."""
    return not any(isinstance(item, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) for item in tree.body)


def source_modules(package: Path, collapse: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """{module: its files} under ``package``, read from the source.

    A package named in ``collapse`` counts as one module (``proxy.http1``); ``("*",)``
    collapses every sub-package (``course.bench``).  A package ``__init__`` that only
    gathers names is not a module of its own.
    """
    root = package.parent
    if collapse == ("*",):
        collapse = tuple(f"{package.name}.{d.name}" for d in sorted(package.iterdir())
                         if (d / "__init__.py").is_file())
    modules: dict[str, list[Path]] = {}
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, root)
        group = next((g for g in collapse if name == g or name.startswith(g + ".")), name)
        if path.name == "__init__.py" and group not in collapse and gathers_only(ast.parse(path.read_text("utf-8"))):
            continue
        modules.setdefault(group, []).append(path)
    return modules


def imported_names(path: Path) -> set[str]:
    """Every absolute import in a file (in function bodies too); ``from a import b`` gives ``a.b`` as well."""
    names: set[str] = set()
    for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(item, ast.Import):
            names.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
            names.add(item.module)
            names.update(f"{item.module}.{alias.name}" for alias in item.names)
    return names


def import_graph(modules: dict[str, list[Path]]) -> dict[str, set[str]]:
    """{module: the modules (of ``modules``) it imports}."""
    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in modules:
                return ".".join(parts[:n])
        return None

    return {module: {target for path in paths for name in imported_names(path)
                     if (target := resolve(name)) not in (None, module)}
            for module, paths in modules.items()}


def reachable(graph: dict[str, set[str]], roots: set[str]) -> set[str]:
    seen, frontier = set(roots), list(roots)
    while frontier:
        for target in graph.get(frontier.pop(), ()):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def defines(path: Path, qualname: str) -> bool:
    """Does the file define ``Class.method`` (or ``function``)?"""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    for part in qualname.split("."):
        found = [d for d in body if isinstance(d, (ast.ClassDef, ast.FunctionDef)) and d.name == part]
        if not found:
            return False
        body = found[0].body
    return True


def summary(paths: list[Path]) -> str:
    """The first line of a module's docstring (its package's, for a package)."""
    path = next((p for p in paths if p.name == "__init__.py"), paths[0])
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.split("\n", 1)[0].replace("``", "")


def reading_order(package: Path) -> list[str]:
    """The module names in the "reading order" table of a package's docstring (``proxy.http1``)."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    return [line.split()[0].removesuffix(".py") for line in doc.splitlines()
            if line.split() and line.split()[0].endswith(".py")]


# --------------------------------------------------------------------------- architecture
#: proxy/ top to bottom: a module calls the layers below it and the column beside.  Every
#: module of proxy/ must be placed here or be off the serve path (drawn apart, found by
#: itself): a new module that is neither stops `make diagrams` with its name.
ARCH_LAYERS: list[tuple[str, list[tuple[str, float]]]] = [
    ("server & acceptors: listen, accept, TLS handshake, hand over, shut down",
     [("proxy.admin", 0.09), ("proxy.admission", 0.27), ("proxy.acceptors", 0.47), ("proxy.server", 0.71)]),
    ("modes: what a connection is served with (listener mode)",
     [("proxy.modes.passthrough", 0.10), ("proxy.modes.forward", 0.30), ("proxy.modes.terminate", 0.50),
      ("proxy.modes.h2", 0.70), ("proxy.modes.intercept", 0.90)]),
    ("driving: the drive loop and body pump; the tunnel relay",
     [("proxy.relay", 0.2), ("proxy.drive", 0.5)]),
    ("transport: one socket, and every speed trick",
     [("proxy.transport", 0.45)]),
    ("sans-IO cores: bytes in, events out (no socket, ssl or threading)",
     [("proxy.http1", 0.09), ("proxy.h2", 0.25), ("proxy.tls.records", 0.41), ("proxy.tls.clienthello", 0.57),
      ("proxy.exchange", 0.74), ("proxy.lifecycle", 0.90)]),
]
#: Used from every layer: decisions, shared state, configuration, errors.
ARCH_BESIDE = ["proxy.tls.contexts", "proxy.tls.mint", "proxy.pki", "proxy.routing", "proxy.balancer", "proxy.pool",
               "proxy.health", "proxy.policy", "proxy.tls.trace", "proxy.config", "proxy.errors"]
#: ``tlsproxy serve`` starts here, and the server imports its modes by name (importlib).
SERVE_ROOTS = ("proxy.server", "proxy.modes.terminate", "proxy.modes.passthrough", "proxy.modes.forward")
SETUP = 3
WIDTH, LAYERS_RIGHT, BESIDE, CLIENT_AT = 1.45, 0.945, (0.96, 1.14), (0.38, 0.858)  # the picture's geometry


@dataclass(frozen=True)
class PathStep:
    """One step of a request through setup 3: the code that does it and the calls it makes."""

    name: str
    code: str  # "module:Qualified.name", checked to exist
    calls: tuple[tuple[str, str], ...]  # (caller, callee) modules; "client" is the client
    phase: Phase | None = None  # the exchange's phase while it runs
    state: ConnState | None = None  # the connection's state while it runs
    then: str = ""  # the step that comes next, when it is not the one below


T, D, H, X = "proxy.modes.terminate", "proxy.drive", "proxy.http1", "proxy.transport"
REQUEST_PATH = [
    PathStep("accept", "proxy.acceptors:Acceptors._accept",
             (("client", "proxy.acceptors"), ("proxy.acceptors", "proxy.server")), state=ConnState.ACCEPTED),
    PathStep("handshake", "proxy.server:ProxyServer._handshake",
             (("proxy.server", "proxy.tls.contexts"),), state=ConnState.HANDSHAKE),
    PathStep("read_request_head", f"{T}:HTTPConnectionHandler.read_request_head",
             (("proxy.server", T), (T, D), (D, X), (D, H)), Phase.READ_HEAD, ConnState.READING),
    PathStep("route", f"{T}:Exchange.choose_backend",
             ((T, "proxy.routing"), (T, "proxy.balancer"), (T, "proxy.exchange")), Phase.ROUTE, ConnState.FORWARDING),
    PathStep("pool", f"{T}:Exchange.connect",
             ((T, "proxy.pool"), ("proxy.pool", X), (T, "proxy.exchange")), Phase.CONNECT, ConnState.FORWARDING),
    PathStep("send_request", f"{T}:Exchange.send_request",
             ((T, H), (T, D), (D, H), (D, X), (T, "proxy.exchange")), Phase.SEND_REQUEST, ConnState.FORWARDING),
    PathStep("read_response_head", f"{T}:Exchange.read_response_head",
             ((T, D), (D, H), (D, X), (T, "proxy.exchange")), Phase.AWAIT_RESPONSE, ConnState.FORWARDING),
    PathStep("relay_response", f"{T}:Exchange.relay_response",
             ((T, H), (T, D), (D, H), (D, X), (T, "proxy.exchange")), Phase.RESPOND, ConnState.FORWARDING),
    PathStep("keep-alive", f"{T}:HTTPConnectionHandler.run",
             ((T, "proxy.pool"), (T, "proxy.lifecycle")), Phase.DONE, ConnState.IDLE, then="read_request_head"),
]
del T, D, H, X


def proxy_layout(root: Path = REPO):
    """The modules of proxy/ read from the source, checked against the placement above.

    Returns (modules, graph, placed, off_path): ``placed`` maps a module to its layer
    (an index, or "beside"); ``off_path`` are the modules ``tlsproxy serve`` never imports.
    """
    modules = source_modules(root / "proxy", collapse=("proxy.http1", "proxy.h2"))
    graph = import_graph(modules)
    placed: dict[str, int | str] = {m: i for i, (_, row) in enumerate(ARCH_LAYERS) for m, _ in row}
    placed.update(dict.fromkeys(ARCH_BESIDE, "beside"))
    served = reachable(graph, {m for m in SERVE_ROOTS if m in modules})
    off_path = sorted(set(modules) - served)
    unplaced = sorted(set(modules) - set(placed) - set(off_path))
    if unplaced:
        raise LayoutError(f"architecture: {', '.join(unplaced)} in proxy/ but not placed; add "
                          f"{'it' if len(unplaced) == 1 else 'them'} to ARCH_LAYERS or ARCH_BESIDE "
                          f"in course/diagrams.py")
    gone = sorted(set(placed) - set(modules))
    if gone:
        raise LayoutError(f"architecture: {', '.join(gone)} placed but not in proxy/ any more; "
                          f"remove from course/diagrams.py")
    return modules, graph, placed, off_path


def check_request_path(modules: dict[str, list[Path]]) -> None:
    """Every step names code and modules that exist (a rename must not leave the picture behind)."""
    problems = []
    for step in REQUEST_PATH:
        module, qualname = step.code.split(":")
        if module not in modules or not any(defines(p, qualname) for p in modules[module]):
            problems.append(f"{step.name}: {step.code} not found")
        problems += [f"{step.name}: no module {m}" for pair in step.calls for m in pair
                     if m != "client" and m not in modules]
        if step.then and step.then not in {s.name for s in REQUEST_PATH}:
            problems.append(f"{step.name}: then {step.then!r} is no step")
    if problems:
        raise LayoutError("architecture, REQUEST_PATH: " + "; ".join(problems))


def label_of(module: str, paths: list[Path]) -> str:
    """proxy.modes.terminate -> modes/terminate.py; proxy.http1 -> http1/ (a file's name, as a student opens it)."""
    path = module.split(".", 1)[-1].replace(".", "/")
    return path + ("/" if len(paths) > 1 or paths[0].name == "__init__.py" else ".py")


def step_numbers(numbers: list[int]) -> str:
    """[3, 6, 7, 8] -> "3, 6–8"."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def architecture_figure(root: Path = REPO):
    modules, graph, placed, off_path = proxy_layout(root)
    check_request_path(modules)
    fig, ax = canvas(20, 15, xlim=(0, WIDTH), ylim=(0, 1))
    draw_course_band(ax, root, modules)
    boxes = draw_proxy_layers(ax, root, modules, off_path)
    layer_of = {m: v for m, v in placed.items() if isinstance(v, int)}
    for source, targets in graph.items():  # an import against the layers is drawn, in red
        for target in targets:
            if source in layer_of and target in layer_of and layer_of[target] < layer_of[source]:
                print(f"architecture: {source} imports {target}, a layer above it", file=sys.stderr)
                arrow(ax, boxes[source], boxes[target], color=PATH, ls="--", rad=0.2)
    draw_request_path(ax, boxes, modules)
    ax.set_title(f"The layers of proxy/, course/ above, and one request through setup {SETUP} as numbered calls (red)",
                 fontsize=12)
    return fig


def draw_course_band(ax, root: Path, modules: dict[str, list[Path]]) -> None:
    """course/ above proxy/: one box per module or package, bold if it imports proxy/; the reverse checked."""
    course = source_modules(root / "course", collapse=("*",)) if (root / "course").is_dir() else {}
    graph = import_graph({**course, **modules})
    reverse = sorted(m for m in modules if any(t in course for t in graph[m]))
    importers = {m for m in course if any(t in modules for t in graph[m])}
    purple = "#8250df"
    ax.add_patch(Rectangle((0.0, 0.885), WIDTH, 0.1, fc="#fbefff", ec=purple, lw=1.0))
    ax.text(0.008, 0.975, "course/: the course's tooling. It imports proxy/; proxy/ never imports it", fontsize=10,
            weight="bold", color=purple, va="top")
    staggered = len(course) > 14  # too many for one line: every other box a little lower
    for i, module in enumerate(sorted(course)):
        x = 0.02 + (i + 0.5) * (WIDTH - 0.04) / len(course)
        y = (0.927 if i % 2 == 0 else 0.902) if staggered else 0.912
        node(ax, x, y, label_of(module, course[module]), size=8.5, fc="white", ec=purple,
             weight="bold" if module in importers else "normal")
    if reverse:
        print(f"architecture: {', '.join(reverse)} import course/", file=sys.stderr)
    verdict = (f"{len(importers)} of {len(course)} course modules import proxy/ (bold); "
               + (f"proxy/ imports course/ in {', '.join(reverse)}: it must not" if reverse
                  else "no module of proxy/ imports course/ (read from the source)"))
    ax.text(WIDTH - 0.008, 0.975, verdict, ha="right", va="top", fontsize=8.5, color=PATH if reverse else MUTED)
    ax.annotate("", xy=(0.03, 0.84), xytext=(0.03, 0.885),
                arrowprops=dict(arrowstyle="-|>", lw=3, color=purple, mutation_scale=20))
    ax.text(0.038, 0.862, "imports", fontsize=8.5, color=purple, va="center")


def draw_proxy_layers(ax, root: Path, modules: dict[str, list[Path]], off_path: list[str]) -> dict:
    """The layers, the column beside them, what serve never imports; {module: its box}."""
    boxes: dict = {}
    note = {m: summary(paths) for m, paths in modules.items()}
    if "proxy.http1" in modules:
        note["proxy.http1"] += "  Read: " + " → ".join(reading_order(root / "proxy" / "http1"))
    does_io = {m for m, paths in modules.items()
               if any(n.split(".")[0] in IO_MODULES for p in paths for n in imported_names(p))}
    ax.text(0.6, 0.855, "proxy/: what `tlsproxy serve` runs", fontsize=10, weight="bold", color=INK, va="center")
    top, height = 0.835, 0.132
    for i, (title, row) in enumerate(ARCH_LAYERS):
        y0 = top - (i + 1) * height
        io_here = sorted(m for m, _ in row if m in does_io) if i == len(ARCH_LAYERS) - 1 else []
        if io_here:  # the last layer is the sans-IO one: its title must stay true
            print(f"architecture: {', '.join(io_here)} in the sans-IO layer import I/O modules", file=sys.stderr)
            title += f": NOT {', '.join(label_of(m, modules[m]) for m in io_here)}"
        ax.add_patch(Rectangle((0.005, y0 + 0.004), LAYERS_RIGHT - 0.005, height - 0.008, lw=0.8, zorder=0,
                               fc="#f6f8fa" if i % 2 else "#eef2f6", ec=LINE))
        ax.text(0.012, y0 + height - 0.012, f"{i + 1}  {title}", fontsize=8.5, style="italic", va="top",
                color=PATH if io_here else MUTED)
        for module, x in row:
            boxes[module] = node(ax, x, y0 + height * 0.44, label_of(module, modules[module]), note[module],
                                 wrap=44 if module == "proxy.http1" else 30, fc="white")
    bottom = top - len(ARCH_LAYERS) * height
    ax.add_patch(Rectangle((BESIDE[0], bottom + 0.004), BESIDE[1] - BESIDE[0], top - bottom - 0.008, lw=0.8,
                           zorder=0, fc="#f6f8fa", ec=LINE))
    ax.text(BESIDE[0] + 0.008, top - 0.012, "beside: used from every layer", fontsize=8.5, style="italic",
            color=MUTED, va="top")
    step = (top - bottom - 0.05) / len(ARCH_BESIDE)
    for k, module in enumerate(ARCH_BESIDE):
        boxes[module] = node(ax, sum(BESIDE) / 2, top - 0.04 - (k + 0.5) * step, label_of(module, modules[module]),
                             note[module], size=9.5, note_size=7, wrap=32, fc="white")
    if off_path:
        ax.text(0.012, bottom - 0.02, "in proxy/ but off the default path (found from the imports): the event-loop "
                "engine and the redirect mode (imported by name when configured), and what course/ and the tests use",
                fontsize=8.5, style="italic", color=MUTED, va="top")
    for k, module in enumerate(off_path):
        if module in boxes:  # placed, but serve no longer reaches it: say so where it stands
            boxes[module].set_linestyle("--")
        else:
            boxes[module] = node(ax, 0.12 + k * 0.26, bottom - 0.07, label_of(module, modules[module]),
                                 note[module], size=9.5, note_size=7, wrap=44, fc="white", ls="--")
    return boxes


#: Bends for call links that would cross a box if drawn straight.
LINK_RADS = {("proxy.modes.terminate", "proxy.http1"): 0.25, ("proxy.modes.terminate", "proxy.exchange"): -0.15,
             ("proxy.modes.terminate", "proxy.lifecycle"): -0.2, ("proxy.pool", "proxy.transport"): 0.1}


def draw_request_path(ax, boxes: dict, modules: dict[str, list[Path]]) -> None:
    """REQUEST_PATH as numbered calls: each link drawn once with the steps that cross it, and a key beside."""
    from course.setups import SETUPS

    setup = next(s for s in SETUPS if s.number == SETUP)
    links: dict[tuple[str, str], list[int]] = {}
    for number, step in enumerate(REQUEST_PATH, start=1):
        for link in step.calls:
            links.setdefault(link, []).append(number)
    if f"proxy.modes.{setup.mode}" not in {m for link in links for m in link}:
        raise LayoutError(f"architecture: setup {SETUP} runs proxy/modes/{setup.mode}.py, not on REQUEST_PATH")
    boxes["client"] = node(ax, *CLIENT_AT, "client", size=9.5, fc="#ffebe9", ec=PATH)
    for module in {m for link in links for m in link}:
        boxes[module].set_edgecolor(PATH)
        boxes[module].set_linewidth(1.8)
    for (caller, callee), numbers in links.items():
        arrow(ax, boxes[caller], boxes[callee], color=PATH, lw=1.6, rad=LINK_RADS.get((caller, callee), 0.0),
              label=step_numbers(numbers), label_color=PATH, label_size=9.5)
    x, y = BESIDE[1] + 0.02, 0.83
    ax.text(x, y, f"One request, setup {setup.number} {setup.name}", fontsize=10, weight="bold", color=PATH,
            va="top")
    ax.text(x, y - 0.025, setup.picture, fontsize=8, family="monospace", color=INK, va="top")
    numbers = {step.name: k for k, step in enumerate(REQUEST_PATH, start=1)}
    for number, step in enumerate(REQUEST_PATH, start=1):
        y -= 0.073 if number > 1 else 0.06
        module, qualname = step.code.split(":")
        ax.text(x, y, f"{number}", fontsize=10, weight="bold", color="white", va="top",
                bbox=dict(boxstyle="circle,pad=0.2", fc=PATH, ec="none"))
        ax.text(x + 0.025, y, step.name, fontsize=10, weight="bold", color=INK, va="top")
        ax.text(x + 0.025, y - 0.022, f"{label_of(module, modules[module])}  {qualname}", fontsize=7.5,
                color=MUTED, va="top")
        where = [f"phase {step.phase.name}" if step.phase else "",
                 f"connection {step.state.name}" if step.state else "",
                 f"then {numbers[step.then]} again" if step.then else ""]
        ax.text(x + 0.025, y - 0.04, "   ".join(w for w in where if w), fontsize=7.5, color=BLUE, va="top")


def draw_architecture(out: Path) -> list[Path]:
    return save(architecture_figure(), out, "architecture")


# --------------------------------------------------------------------------- setups
def draw_setups(out: Path) -> list[Path]:
    from course.setups import ENDS_TLS, SETUPS

    fig, ax = plt.subplots(figsize=(11, 0.2 + len(SETUPS)))  # one inch a row
    columns = {"client": 0.08, "proxy": 0.5, "origin": 0.92}
    for i, setup in enumerate(SETUPS):
        y = 1 - (i + 0.5) / len(SETUPS)
        ax.text(-0.02, y, f"{setup.number} {setup.name}", ha="right", va="center", fontsize=10, weight="bold")
        hops = ["client", "proxy", "origin"] if setup.has_proxy else ["client", "origin"]
        for host in hops:
            ax.add_patch(FancyBboxPatch((columns[host] - 0.055, y - 0.035), 0.11, 0.07,
                                        boxstyle="round,pad=0.005", fc="#f6f8fa", ec="#57606a"))
            ax.text(columns[host], y, host, ha="center", va="center", fontsize=9)
        for leg, (a, b) in zip(setup.legs, zip(hops, hops[1:])):
            style = "-" if leg.kind in (*ENDS_TLS, "http") else "--"
            width = 3 if leg.kind in ENDS_TLS else 1.6
            ax.annotate("", xy=(columns[b] - 0.06, y), xytext=(columns[a] + 0.06, y),
                        arrowprops=dict(arrowstyle="-|>", lw=width, ls=style, color=COLORS[leg.kind]))
            ax.text((columns[a] + columns[b]) / 2, y + 0.03, leg.label, ha="center", fontsize=8,
                    color=COLORS[leg.kind])
        ax.text((columns["client"] + columns["origin"]) / 2, y - 0.055,
                f"decrypts: {setup.terminates}   ·   {setup.summary}", ha="center", fontsize=7.5, color="#57606a")
    ax.set_xlim(-0.25, 1.0)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(f"The {len(SETUPS)} setups (thick: a TLS session ends at the arrow's head; red: at a proxy "
                 "posing as the origin; dashed: bytes copied unread)", fontsize=10)
    return save(fig, out, "setups")


# --------------------------------------------------------------------------- state machines
def from_every_state(transitions: dict, states: list) -> dict:
    """{event: target} for the events every state takes to the same target (drawn once, as "any state")."""
    found = {}
    for event in {e for _, e in transitions}:
        targets = {transitions.get((state, event)) for state in states}
        if len(targets) == 1 and None not in targets:
            found[event] = targets.pop()
    return found


def draw_machine(ax, transitions: dict, layout: dict, *, start: Enum, rads: dict | None = None,
                 sides: dict | None = None, fill=None, loop_side: str = "left",
                 any_state_at: tuple[float, float] | None = None, key_at: tuple[float, float] | None = None,
                 wrap: int = 30, where: str = "") -> dict:
    """Draw a transition table ``{(state, event): state}``: boxes from ``layout``, arrows from the table.

    A state's box shows its ``name`` and ``value``; an arrow's label is the ``value`` of
    its events.  ``start`` gets an entry arrow; a state with no way out has a heavy
    border; an event every state takes to one target is drawn once, from "any state".
    An arrow is straight, or bent by ``rads[(source, target)]`` (default: a gentle arc
    when the reverse arrow exists too), or, if ``sides[(source, target)]`` is "left" or
    "right", runs from that side of one box to the same side of the other, bulging out.
    ``fill(state)`` colours a box.  ``key_at`` places a one-line key to these conventions.
    """
    states = list(type(start))
    unplaced = [s.name for s in states if s not in layout]
    if unplaced:
        raise LayoutError(f"{where}: {', '.join(unplaced)} not placed; add them to its layout in course/diagrams.py")
    rads, sides = rads or {}, sides or {}
    everywhere = from_every_state(transitions, states)
    pairs: dict[tuple, list[str]] = {}
    for (source, event), target in transitions.items():
        if event not in everywhere:
            pairs.setdefault((source, target), []).append(event.value)
    leaving = {source for (source, target) in pairs if source is not target}
    boxes = {}
    for state in states:
        final = state not in leaving
        boxes[state] = node(ax, *layout[state], state.name, state.value, wrap=wrap,
                            fc=fill(state) if fill else PAPER, lw=2.4 if final else 1.0,
                            ec=INK if final else MUTED)
    # the ends of side arrows, spread up each side of a box (below its loop, if it has one there)
    ends: dict[tuple, list[tuple[float, tuple, str]]] = {}
    for (source, target), side in sides.items():
        if (source, target) in pairs:
            ends.setdefault((source, side), []).append((layout[target][1], (source, target), "from"))
            ends.setdefault((target, side), []).append((layout[source][1], (source, target), "to"))
    fraction: dict[tuple, float] = {}
    for (state, side), items in ends.items():
        low, high = (0.15, 0.45) if (state, state) in pairs and side == loop_side else (0.2, 0.8)
        for k, (_, edge, end) in enumerate(sorted(items, key=lambda item: item[0])):
            fraction[edge, end] = low + (high - low) * (k + 1) / (len(items) + 1)
    for (source, target), labels in pairs.items():
        label = " / ".join(labels)
        if source is target:
            has_sides = any(state is source and side == loop_side for state, side in ends)
            loop(ax, boxes[source], label, side=loop_side, span=(0.55, 0.95) if has_sides else (0.15, 0.85))
        elif (source, target) in sides:
            side = sides[source, target]
            pa = side_point(boxes[source], side, fraction[(source, target), "from"])
            pb = side_point(boxes[target], side, fraction[(source, target), "to"])
            upward = pb[1] > pa[1]
            rad = abs(rads.get((source, target), 0.5)) * (1 if (side == "right") == upward else -1)
            arrow(ax, pa, pb, rad=rad, label=label, label_ha="left" if side == "right" else "right")
        else:
            curve = (target, source) in pairs and (target, source) not in sides  # two arrows, one line
            rad = rads.get((source, target), 0.22 if curve else 0.0)
            arrow(ax, boxes[source], boxes[target], rad=rad, label=label)
    box = boxes[start]
    entry = (box.get_x() - 0.05 * (ax.get_xlim()[1] - ax.get_xlim()[0]), center(box)[1])
    arrow(ax, entry, box, color=INK)
    for event, target in everywhere.items():
        if any_state_at is None:
            raise LayoutError(f"{where}: every state takes {event.name}; give draw_machine an any_state_at")
        anywhere = node(ax, *any_state_at, "any state", weight="normal", fc="white", ls="--")
        arrow(ax, anywhere, boxes[target], label=event.value)
    if key_at is not None:
        way_out = "no step but the any-state one leads out" if everywhere else "no step leads out of it"
        ax.text(*key_at, f"⟶ the first state     heavy border: {way_out}", fontsize=8, color=MUTED, va="center")
    return boxes


def choose_sides(edges: list[tuple], rank: dict) -> dict:
    """For states in a column: put each arrow that is not to the next state on the right or the left.

    Shortest first, each goes on the side where it overlaps fewer arrows already placed
    (the right on a tie), so nested arcs do not cross each other's labels.
    """
    placed: dict[str, list[tuple[int, int]]] = {"right": [], "left": []}
    sides = {}
    for source, target in sorted(set(edges), key=lambda e: abs(rank[e[1]] - rank[e[0]])):
        span = sorted((rank[source], rank[target]))
        overlaps = {side: sum(1 for lo, hi in spans if lo < span[1] and span[0] < hi) for side, spans in placed.items()}
        side = min(("right", "left"), key=lambda side: overlaps[side])
        placed[side].append(tuple(span))
        sides[source, target] = side
    return sides


def reader_states_figure():
    from proxy.http1.reader import TRANSITIONS, ReaderState

    layout = {
        ReaderState.HEAD: (0.2, 0.6), ReaderState.BODY: (0.6, 0.6), ReaderState.CLOSED: (0.6, 0.15),
        ReaderState.TUNNEL: (0.97, 0.6), ReaderState.ERROR: (0.4, 0.95),
    }
    fig, ax = canvas(9, 5.5, xlim=(0, 1.15), ylim=(0, 1.08))
    draw_machine(ax, TRANSITIONS, layout, start=ReaderState.HEAD, wrap=24, key_at=(0.01, 0.02),
                 where="http1-reader-states")
    ax.set_title("HTTP/1.1 reader states, drawn from proxy.http1.reader.TRANSITIONS", fontsize=10)
    return fig


def draw_reader_states(out: Path) -> list[Path]:
    return save(reader_states_figure(), out, "http1-reader-states")


RECOVERY_FILL = {"ANSWER": ("#dafbe1", "#1a7f37"), "LINGER": ("#fff8c5", "#9a6700"), "RETRY": ("#ddf4ff", "#0969da"),
                 "ABORT": ("#ffebe9", "#cf222e"), "CLOSE": ("#eaeef2", "#57606a")}
SPARE_FILLS = [("#fbefff", "#8250df"), ("#fff1e5", "#bc4c00"), ("#ffeff7", "#bf3989")]


def recovery_colours() -> dict:
    """{Recovery: (fill, edge)}: a colour for every member, spare ones for members added later."""
    from proxy.exchange import Recovery

    spare = iter(SPARE_FILLS)
    return {r: RECOVERY_FILL.get(r.name) or next(spare, ("#ffffff", INK)) for r in Recovery}


def exchange_phases_figure():
    """The phases top to bottom in ``Phase`` order, each step an arrow from ``TRANSITIONS``.

    A phase's box is filled with the colour of what a backend failure becomes there
    (``ON_FAILURE``, the same colours as exchange-failures).
    """
    from proxy.exchange import ON_FAILURE, TRANSITIONS, ExchangePhase, Failure

    phases = list(Phase)
    rank = {phase: i for i, phase in enumerate(phases)}
    layout = {phase: (0.5, 1 - (i + 0.5) / len(phases)) for i, phase in enumerate(phases)}
    bent = [(s, t) for (s, _), t in TRANSITIONS.items() if rank[t] != rank[s] + 1 and s is not t]
    sides = choose_sides(bent, rank)
    colours = recovery_colours()

    def fill(phase):
        recovery = ON_FAILURE.get((phase, Failure.BACKEND_FAILED))
        return colours[recovery][0] if recovery else PAPER

    fig, ax = canvas(9, 11)
    draw_machine(ax, TRANSITIONS, layout, start=ExchangePhase().phase, sides=sides, fill=fill, wrap=34,
                 loop_side="right", key_at=(0.02, 0.985), where="exchange-phases")
    shown = sorted({r for (p, f), r in ON_FAILURE.items() if f is Failure.BACKEND_FAILED}, key=lambda r: r.name)
    for i, recovery in enumerate(shown):
        y = 0.035 + 0.03 * (len(shown) - 1 - i)
        ax.add_patch(Rectangle((0.02, y - 0.009), 0.03, 0.018, fc=colours[recovery][0], ec=colours[recovery][1]))
        ax.text(0.06, y, f"{recovery.name}", va="center", fontsize=8, weight="bold", color=INK)
    ax.text(0.02, 0.04 + 0.03 * len(shown), f"fill: a {Failure.BACKEND_FAILED.name} there becomes", fontsize=8,
            color=MUTED, va="center")
    ax.set_title("One exchange's phases, drawn from proxy.exchange.TRANSITIONS", fontsize=11)
    return fig


def draw_exchange_phases(out: Path) -> list[Path]:
    return save(exchange_phases_figure(), out, "exchange-phases")


def exchange_failures_figure():
    """``ON_FAILURE`` as a grid: a row per phase that has one, a column per ``Failure``.

    Between two rows, the step that leads from one phase to the next
    (``TRANSITIONS``): the line between "answer 502" and "abort" is a step too.
    """
    from proxy.exchange import ON_FAILURE, TRANSITIONS, Failure, Phase

    phases = [p for p in Phase if any((p, f) in ON_FAILURE for f in Failure)]
    failures = list(Failure)
    colours = recovery_colours()
    used = [r for r in colours if r in ON_FAILURE.values()]
    fig, ax = canvas(13, 2.4 + 0.75 * len(phases) + 0.32 * len(used))
    left, top, legend = 0.25, 0.84, 0.05 + 0.05 * len(used)
    width = (1 - left) / len(failures)
    height = (top - legend - 0.04) / len(phases)
    for j, failure in enumerate(failures):
        x = left + (j + 0.5) * width
        ax.text(x, top + 0.085, failure.name, ha="center", va="center", fontsize=9.5, weight="bold", color=INK)
        ax.text(x, top + 0.04, wrapped(failure.value, 34), ha="center", va="center", fontsize=7.5, color=MUTED)
    for i, phase in enumerate(phases):
        y = top - (i + 0.5) * height
        ax.text(left - 0.012, y + height * 0.12, phase.name, ha="right", va="center", fontsize=9.5,
                weight="bold", color=INK)
        ax.text(left - 0.012, y - height * 0.2, wrapped(phase.value, 40), ha="right", va="center", fontsize=7,
                color=MUTED)
        for j, failure in enumerate(failures):
            recovery = ON_FAILURE.get((phase, failure))
            x0, y0 = left + j * width, top - (i + 1) * height
            fc, ec = colours[recovery] if recovery else ("white", LINE)
            ax.add_patch(Rectangle((x0 + 0.003, y0 + 0.004), width - 0.006, height - 0.008, fc=fc, ec=ec,
                                   lw=1.0, hatch=None if recovery else "///", zorder=1))
            ax.text(x0 + width / 2, y0 + height / 2, recovery.name if recovery else "",
                    ha="center", va="center", fontsize=10, weight="bold", color=ec, zorder=2)
        if i + 1 < len(phases):
            steps = [step.value for (s, step), t in TRANSITIONS.items() if s is phase and t is phases[i + 1]]
            if steps:
                ax.text(0.005, y - height / 2, "↓ " + " / ".join(steps), ha="left", va="center", fontsize=7.5,
                        style="italic", color=BLUE)
    for k, recovery in enumerate(used):
        y = legend - 0.05 * (k + 0.5) + 0.01
        ax.add_patch(Rectangle((0.02, y - 0.015), 0.025, 0.03, fc=colours[recovery][0], ec=colours[recovery][1]))
        ax.text(0.055, y, recovery.name, va="center", fontsize=8.5, weight="bold", color=INK)
        ax.text(0.12, y, recovery.value, va="center", fontsize=8.5, color=INK)
    ax.add_patch(Rectangle((0.62, legend - 0.05 * (len(used) - 0.5) + 0.01 - 0.015), 0.025, 0.03, fc="white",
                           ec=LINE, hatch="///"))
    ax.text(0.655, legend - 0.05 * (len(used) - 0.5) + 0.01, "no entry in ON_FAILURE", va="center", fontsize=8.5,
            color=MUTED)
    ax.set_title("What a failure becomes, by phase: proxy.exchange.ON_FAILURE", fontsize=11)
    return fig


def draw_exchange_failures(out: Path) -> list[Path]:
    return save(exchange_failures_figure(), out, "exchange-failures")


CONNECTION_LAYOUT = {  # ConnState name -> (x, y): the keep-alive loop on the left, the ways out on the right
    "ACCEPTED": (0.16, 0.56), "HANDSHAKE": (0.34, 0.86), "IDLE": (0.52, 0.56), "READING": (0.77, 0.86),
    "FORWARDING": (0.77, 0.26), "TUNNEL": (1.02, 0.56), "DRAINING": (1.27, 0.56), "CLOSED": (0.52, 0.07),
}
CUT_FILL = ("#fff1e5", "#bc4c00")


def connection_states_figure():
    from proxy.lifecycle import CUT_AT_SHUTDOWN, TRANSITIONS, ConnectionLife, ConnState

    layout = {state: CONNECTION_LAYOUT[state.name] for state in ConnState if state.name in CONNECTION_LAYOUT}
    fig, ax = canvas(13.5, 7.5, xlim=(0, 1.4), ylim=(0, 1))
    draw_machine(ax, TRANSITIONS, layout, start=ConnectionLife().state, wrap=26, any_state_at=(0.21, 0.07),
                 key_at=(0.01, 0.97),
                 fill=lambda state: CUT_FILL[0] if state in CUT_AT_SHUTDOWN else PAPER, where="connection-states")
    ax.add_patch(Rectangle((0.95, 0.08), 0.03, 0.04, fc=CUT_FILL[0], ec=MUTED))
    ax.text(0.99, 0.1, "CUT_AT_SHUTDOWN: closed at once by a graceful shutdown", va="center", fontsize=8.5,
            color=INK)
    ax.add_patch(Rectangle((0.95, 0.02), 0.03, 0.04, fc=PAPER, ec=MUTED))
    ax.text(0.99, 0.04, "given until the grace period ends", va="center", fontsize=8.5, color=INK)
    ax.set_title("A client connection's states, drawn from proxy.lifecycle.TRANSITIONS", fontsize=11)
    return fig


def draw_connection_states(out: Path) -> list[Path]:
    return save(connection_states_figure(), out, "connection-states")
# --------------------------------------------------------------------------- from real runs
def screenshot_status_page(out: Path) -> list[Path]:
    """The live status page of a real proxy after some traffic, shot by headless Chromium."""
    import http.client
    import shutil
    import socket
    import ssl
    import subprocess
    import tempfile

    from proxy import config as cfg
    from course.origin import Origin
    from proxy.pki import ensure_demo_certs
    from proxy.server import ProxyServer

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("status page: skipped (chromium is not installed)", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as work:
        pki = ensure_demo_certs(Path(work) / "pki")
        origins = [Origin(name).start() for name in ("web-1", "web-2")]
        config = cfg.validate(cfg.Config(
            listeners=(cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "terminate",
                                          (cfg.CertFiles(*pki.files("www.example.test")),)),),
            pools=(cfg.PoolConfig("web", tuple(cfg.parse_backend(o.url, where="diagram") for o in origins)),),
            routes=(cfg.RouteConfig("web"),), access_log=None, admin=cfg.Address("127.0.0.1", 0)))
        server = ProxyServer(config).bind().start()
        try:
            port = server.addresses[0][1]
            context = ssl.create_default_context(cafile=pki.ca)
            session = None
            for _ in range(12):  # some full and some resumed handshakes, a few requests each
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
                conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                server_hostname="www.example.test", session=session)
                for _ in range(3):
                    conn.request("GET", "/", headers={"Host": "www.example.test"})
                    conn.getresponse().read()
                session = conn.sock.session
                conn.close()
            out.mkdir(parents=True, exist_ok=True)
            path = out / "status-page.png"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={work}/chromium", "--window-size=900,640",
                            "--virtual-time-budget=3000", f"--screenshot={path}", server.admin.url],
                           capture_output=True, timeout=60, check=True)
            return [path]
        finally:
            server.shutdown(grace=1.0)
            for origin in origins:
                origin.stop()


def draw_from_runs(out: Path) -> list[Path]:
    """Ladder diagrams, the status page and benchmark charts, if their modules are present."""
    paths: list[Path] = screenshot_status_page(out)
    try:
        from course.capture import ladder
    except ImportError:
        ladder = None
    if ladder is not None and hasattr(ladder, "regenerate_committed_figures"):
        paths += list(ladder.regenerate_committed_figures(out) or [])
    try:
        from course.bench import runner
    except ImportError:
        runner = None
    if runner is not None and hasattr(runner, "regenerate_committed_figures"):
        paths += list(runner.regenerate_committed_figures(str(out / "bench")) or [])
        from course.bench import sweep

        paths += sweep.regenerate_committed_figures(str(out / "bench" / "sweep"))
    return paths


FROM_CODE = {  # name -> drawing function: the figures drawn from the code alone (`--code-only`)
    "architecture": draw_architecture,
    "setups": draw_setups,
    "http1-reader-states": draw_reader_states,
    "exchange-phases": draw_exchange_phases,
    "exchange-failures": draw_exchange_failures,
    "connection-states": draw_connection_states,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = [a for a in argv if a.startswith("-")]
    folders = [a for a in argv if not a.startswith("-")]
    only = {o.partition("=")[2] for o in options if o.startswith("--only=")}  # --only=setups: that figure alone
    if (set(options) - {"--code-only"} - {f"--only={name}" for name in FROM_CODE}
            or len(folders) > 1):  # `--help` must not become a folder and a benchmark
        print("usage: python -m course.diagrams [FOLDER] [--code-only] [--only=NAME]   (FOLDER: diagrams; "
              "--code-only: only the figures drawn from the code, no captures, screenshot or benchmark; "
              f"--only: one figure drawn from the code, one of {', '.join(FROM_CODE)})", file=sys.stderr)
        return 0 if options in (["--help"], ["-h"]) else 2
    out = Path(folders[0] if folders else "diagrams")
    only_code = "--code-only" in options or bool(only)
    os.environ.setdefault("MPLBACKEND", "Agg")
    written = [path for name, draw in FROM_CODE.items() if not only or name in only for path in draw(out)]
    if not only_code:
        written += draw_from_runs(out)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
