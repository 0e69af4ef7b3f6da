"""Regenerate every figure under ``diagrams/`` from the code and from real runs.

``make diagrams`` (or ``python -m course.diagrams diagrams``) draws:

``architecture``
    the package's modules and who imports whom, read from the source with ``ast``;
``setups``
    the six setups, from the table in ``course.setups``;
``http1-reader-states``
    the HTTP/1.1 reader's state machine, from ``proxy.http1.reader.TRANSITIONS``,
    the very table the parser runs on;
``ladder-*``
    ladder diagrams of real TLS 1.2, 1.3 and resumed handshakes (``course.capture``);
``status-page``
    a screenshot of the live status page after real traffic (headless Chromium);
``bench/*``
    the benchmark's charts from a ``--quick`` run (``course.bench``).

Each figure is written as PNG (for the README and notebooks) and SVG.
"""

from __future__ import annotations

import ast
import os
import sys
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
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

PACKAGE = Path(__file__).resolve().parent
COLORS = {"tls": "#1f6feb", "http": "#6e7781", "splice": "#bf8700", "connect": "#8250df"}


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{name}.{ext}"
        # metadata without dates keeps regenerated SVGs identical when nothing changed
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- architecture
def import_graph() -> dict[str, set[str]]:
    """{"proxy.server": {"proxy.config", ...}, ...}: first-party imports of each module group."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        node = group_of(".".join(parts))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = graph.setdefault(node, set())
        for item in ast.walk(tree):
            names = []
            if isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
                names = [item.module]
            elif isinstance(item, ast.Import):
                names = [a.name for a in item.names]
            for name in names:
                if name.startswith("proxy.") and group_of(name) != node:
                    targets.add(group_of(name))
    return graph


def group_of(module: str) -> str:
    """Packages collapse to one node (proxy.http1.head -> proxy.http1)."""
    parts = module.split(".")
    if len(parts) >= 3 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return module


LAYERS = [  # top to bottom: entry points, servers, core logic, foundations
    ["course.cli", "course.demo", "course.diagrams", "course.bench", "course.capture", "course.notebooks_run"],
    ["proxy.server", "proxy.acceptors", "proxy.admin", "proxy.modes", "course.origin", "course.nginx", "course.region"],
    ["proxy.pool", "proxy.health", "proxy.balancer", "proxy.routing", "proxy.relay", "proxy.policy", "proxy.drive"],
    ["proxy.http1", "proxy.tls", "course.clients", "proxy.config", "proxy.pki", "proxy.errors", "course.setups",
     "course.children"],
]


def draw_architecture(out: Path) -> list[Path]:
    graph = import_graph()
    known = set(graph)
    rows = [[m for m in layer if m in known] for layer in LAYERS]
    placed = {m for row in rows for m in row}
    leftovers = sorted(known - placed - {"proxy"})
    if leftovers:
        rows[1].extend(leftovers)
    fig, ax = plt.subplots(figsize=(13, 7))
    pos = {}
    for r, row in enumerate(rows):
        for c, module in enumerate(row):
            x = (c + 0.5) / max(len(row), 1)
            y = 1 - (r + 0.5) / len(rows)
            pos[module] = (x, y)
    for source, targets in graph.items():
        for target in targets - {"proxy.errors"}:  # nearly everything imports errors: not drawn
            if source in pos and target in pos:
                same_row = abs(pos[source][1] - pos[target][1]) < 1e-6
                ax.add_patch(FancyArrowPatch(pos[source], pos[target], arrowstyle="-|>", mutation_scale=9,
                                             connectionstyle=f"arc3,rad={0.35 if same_row else 0.08}",
                                             color="#8c959f", lw=0.7, alpha=0.75, shrinkA=12, shrinkB=12))
    for module, (x, y) in pos.items():
        label = module.removeprefix("proxy.")
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc="#f6f8fa", ec="#57606a"))
    for r, title in enumerate(["entry points", "servers and modes", "proxy logic", "foundations (sans-IO where possible)"]):
        ax.text(-0.02, 1 - (r + 0.5) / len(rows), title, ha="right", va="center", fontsize=8, color="#57606a",
                style="italic")
    ax.set_xlim(-0.2, 1.02)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title("proxy/: modules and their imports, read from the source (arrows to errors omitted)",
                 fontsize=11)
    return save(fig, out, "architecture")


# --------------------------------------------------------------------------- setups
def draw_setups(out: Path) -> list[Path]:
    from course.setups import SETUPS

    fig, ax = plt.subplots(figsize=(11, 6.2))
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
            style = "-" if leg.kind in ("tls", "http") else "--"
            width = 3 if leg.kind == "tls" else 1.6
            ax.annotate("", xy=(columns[b] - 0.06, y), xytext=(columns[a] + 0.06, y),
                        arrowprops=dict(arrowstyle="-|>", lw=width, ls=style, color=COLORS[leg.kind]))
            ax.text((columns[a] + columns[b]) / 2, y + 0.03, leg.label, ha="center", fontsize=8,
                    color=COLORS[leg.kind])
        ax.text((columns["client"] + columns["origin"]) / 2, y - 0.055,
                f"decrypts: {setup.terminates}   ·   {setup.summary}", ha="center", fontsize=7.5, color="#57606a")
    ax.set_xlim(-0.25, 1.0)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title("The six setups (thick blue: a TLS session ends at the arrow's head; dashed: bytes copied unread)",
                 fontsize=10)
    return save(fig, out, "setups")


# --------------------------------------------------------------------------- state machine
def draw_reader_states(out: Path) -> list[Path]:
    from proxy.http1.reader import TRANSITIONS, ReaderState

    layout = {
        ReaderState.HEAD: (0.2, 0.6), ReaderState.BODY: (0.6, 0.6), ReaderState.CLOSED: (0.6, 0.15),
        ReaderState.TUNNEL: (0.95, 0.6), ReaderState.ERROR: (0.4, 0.95),
    }
    fig, ax = plt.subplots(figsize=(9, 5.5))
    pairs: dict[tuple, list[str]] = {}
    for (source, label), target in TRANSITIONS.items():
        pairs.setdefault((source, target), []).append(label.value)
    for (source, target), labels in pairs.items():
        (x1, y1), (x2, y2) = layout[source], layout[target]
        reverse = (target, source) in pairs
        rad = 0.25 if reverse else 0.0
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=14, lw=1.3, color="#1f6feb", shrinkA=28, shrinkB=28))
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        if reverse:
            my += 0.08 if x2 > x1 else -0.08
        ax.text(mx, my, " / ".join(labels), ha="center", va="center", fontsize=8.5,
                bbox=dict(fc="white", ec="none", pad=1))
    for state, (x, y) in layout.items():
        ax.text(x, y, state.name, ha="center", va="center", fontsize=11, weight="bold",
                bbox=dict(boxstyle="round,pad=0.6", fc="#ddf4ff" if state is ReaderState.HEAD else "#f6f8fa",
                          ec="#57606a"))
        ax.text(x, y - 0.085, state.value, ha="center", va="top", fontsize=7, color="#57606a", wrap=True)
    ax.set_xlim(0, 1.15)
    ax.set_ylim(0, 1.05)
    ax.axis("off")
    ax.set_title("HTTP/1.1 reader states, drawn from proxy.http1.reader.TRANSITIONS", fontsize=10)
    return save(fig, out, "http1-reader-states")


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
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "diagrams")
    only_code = "--code-only" in argv
    os.environ.setdefault("MPLBACKEND", "Agg")
    written = draw_architecture(out) + draw_setups(out) + draw_reader_states(out)
    if not only_code:
        written += draw_from_runs(out)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
