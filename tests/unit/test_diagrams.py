"""course.diagrams: the figures drawn from the code are written, and what they say is the tables' own.

Each state figure is checked against the table it is drawn from: every state's name and
description, every arrow's label (as many as the table has transitions), and, by
changing the table, that the figure follows it.  The architecture is checked against the
source: a module of proxy/ that is not placed stops the drawing with its name.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("matplotlib")

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from course import diagrams  # noqa: E402
from proxy import exchange, lifecycle  # noqa: E402
from proxy.exchange import ON_FAILURE, Failure, Phase, Recovery, Step  # noqa: E402
from proxy.http1.reader import TRANSITIONS as READER_TRANSITIONS, ReaderState  # noqa: E402
from proxy.lifecycle import CUT_AT_SHUTDOWN, ConnEvent, ConnState  # noqa: E402
from tests.conftest import REPO  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> list[str]:
    """Every text in the figure, its line breaks (from wrapping) undone."""
    return [" ".join(t.get_text().split()) for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]


def arrow_labels(fig) -> list[str]:
    """The labels on arrows (drawn on a white ground, unlike the text in a box)."""
    return sorted(" ".join(t.get_text().split()) for t in fig.findobj(matplotlib.text.Text)
                  if t.get_text().strip() and t.get_bbox_patch() is not None)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("name", sorted(diagrams.FROM_CODE))
def test_each_figure_from_the_code_is_written_as_png_and_svg(tmp_path, name):
    paths = diagrams.FROM_CODE[name](tmp_path)
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.svg"]
    width, height = png_size(paths[0].read_bytes())
    assert width > 800 and height > 500
    assert b"<svg" in paths[1].read_bytes()[:1000]


# --------------------------------------------------------------------------- the state figures
def test_reader_states_are_the_readers_table():
    fig = diagrams.reader_states_figure()
    shown = texts(fig)
    for state in ReaderState:
        assert state.name in shown and state.value in shown
    assert arrow_labels(fig) == sorted(event.value for _, event in READER_TRANSITIONS)


def test_exchange_phases_show_every_phase_and_one_label_per_transition():
    fig = diagrams.exchange_phases_figure()
    shown = texts(fig)
    for phase in Phase:
        assert phase.name in shown and phase.value in shown
    assert arrow_labels(fig) == sorted(step.value for _, step in exchange.TRANSITIONS)


def test_exchange_phases_follow_the_table(monkeypatch):
    """Take a transition out of the table and its arrow is gone from the figure."""
    dropped = (Phase.AWAIT_RESPONSE, Step.INTERIM)
    monkeypatch.setattr(exchange, "TRANSITIONS", {k: v for k, v in exchange.TRANSITIONS.items() if k != dropped})
    assert arrow_labels(diagrams.exchange_phases_figure()) == sorted(step.value for _, step in exchange.TRANSITIONS)
    assert Step.INTERIM.value not in texts(diagrams.exchange_phases_figure())


def test_exchange_failures_grid_holds_the_table():
    shown = texts(diagrams.exchange_failures_figure())
    for failure in Failure:
        assert failure.name in shown and failure.value in shown
    rows = {phase for phase, _ in ON_FAILURE}
    assert {p.name for p in Phase if p.name in shown} == {p.name for p in rows}
    for recovery in Recovery:  # a cell for each entry, and one line of the key
        in_table = list(ON_FAILURE.values()).count(recovery)
        assert shown.count(recovery.name) == in_table + (1 if in_table else 0)
        if in_table:
            assert recovery.value in shown


def test_exchange_failures_grid_follows_the_table(monkeypatch):
    changed = {**ON_FAILURE, (Phase.CONNECT, Failure.BACKEND_STALE): Recovery.RETRY}
    monkeypatch.setattr(exchange, "ON_FAILURE", changed)
    shown = texts(diagrams.exchange_failures_figure())
    assert shown.count(Recovery.RETRY.name) == list(changed.values()).count(Recovery.RETRY) + 1


def test_connection_states_show_every_state_and_cut_at_shutdown_filled():
    fig = diagrams.connection_states_figure()
    shown = texts(fig)
    for state in ConnState:
        assert state.name in shown and state.value in shown
    # CLOSE leads from every state to CLOSED: drawn once, from "any state"; every other event as often as it is
    # in the table
    assert "any state" in shown
    expected = [e.value for (_, e) in lifecycle.TRANSITIONS if e is not ConnEvent.CLOSE] + [ConnEvent.CLOSE.value]
    assert arrow_labels(fig) == sorted(expected)
    cut = matplotlib.colors.to_rgba(diagrams.CUT_FILL[0])
    filled = [p for p in fig.findobj(FancyBboxPatch) if tuple(p.get_facecolor()) == cut]
    assert len(filled) == len(CUT_AT_SHUTDOWN)


def test_a_state_without_a_place_stops_the_drawing(monkeypatch):
    layout = {k: v for k, v in diagrams.CONNECTION_LAYOUT.items() if k != "TUNNEL"}
    monkeypatch.setattr(diagrams, "CONNECTION_LAYOUT", layout)
    with pytest.raises(diagrams.LayoutError, match="TUNNEL"):
        diagrams.connection_states_figure()


def test_cut_at_shutdown_is_read_from_lifecycle(monkeypatch):
    monkeypatch.setattr(lifecycle, "CUT_AT_SHUTDOWN", frozenset({ConnState.IDLE}))
    cut = matplotlib.colors.to_rgba(diagrams.CUT_FILL[0])
    fig = diagrams.connection_states_figure()
    assert len([p for p in fig.findobj(FancyBboxPatch) if tuple(p.get_facecolor()) == cut]) == 1


# --------------------------------------------------------------------------- the architecture
def copy_of_proxy(tmp_path):
    shutil.copytree(REPO / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_every_module_of_proxy_is_in_the_architecture():
    modules, _, _, _ = diagrams.proxy_layout()
    shown = texts(diagrams.architecture_figure())
    for module, paths in modules.items():
        assert diagrams.label_of(module, paths) in shown, module
    assert "proxy.modes.terminate" in modules and "proxy.http1" in modules  # read at the right depth
    assert not any(m.startswith("proxy.http1.") for m in modules)


def test_a_new_module_on_the_serve_path_must_be_placed(tmp_path):
    root = copy_of_proxy(tmp_path)
    (root / "proxy" / "newthing.py").write_text('"""Something new."""\n')
    server = root / "proxy" / "server.py"
    server.write_text(server.read_text() + "\nfrom proxy import newthing  # noqa\n")
    with pytest.raises(diagrams.LayoutError, match=r"proxy\.newthing .*ARCH_LAYERS"):
        diagrams.architecture_figure(root)


def test_a_module_serve_never_imports_is_drawn_apart(tmp_path):
    root = copy_of_proxy(tmp_path)
    (root / "proxy" / "orphan.py").write_text('"""Imported by nobody yet."""\n')
    _, _, _, off_path = diagrams.proxy_layout(root)
    assert "proxy.orphan" in off_path
    assert "orphan.py" in texts(diagrams.architecture_figure(root))


def test_the_request_path_names_code_that_exists(monkeypatch):
    modules, _, _, _ = diagrams.proxy_layout()
    diagrams.check_request_path(modules)
    renamed = [*diagrams.REQUEST_PATH[:-1],
               diagrams.PathStep("keep-alive", "proxy.modes.terminate:HTTPConnectionHandler.no_such_method",
                                 (("proxy.modes.terminate", "proxy.pool"),))]
    monkeypatch.setattr(diagrams, "REQUEST_PATH", renamed)
    with pytest.raises(diagrams.LayoutError, match="no_such_method"):
        diagrams.check_request_path(modules)


def test_the_request_path_is_numbered_in_order_in_the_key():
    shown = texts(diagrams.architecture_figure())
    for number, step in enumerate(diagrams.REQUEST_PATH, start=1):
        assert str(number) in shown and step.name in shown
    assert f"phase {Phase.SEND_REQUEST.name} connection {ConnState.FORWARDING.name}" in shown


@pytest.mark.parametrize("argv, status", [(["--help"], 0), (["--bogus"], 2), (["a", "b"], 2)])
def test_an_option_it_does_not_know_is_never_taken_for_the_folder(tmp_path, monkeypatch, capsys, argv, status):
    """`python -m course.diagrams --help` once drew everything into ./--help, benchmark included."""
    monkeypatch.chdir(tmp_path)
    assert diagrams.main(argv) == status
    assert list(tmp_path.iterdir()) == [] and "usage:" in capsys.readouterr().err


def test_only_draws_one_figure_from_the_code_and_the_setups_figure_has_every_setup(tmp_path, monkeypatch):
    """`--only=setups` redraws that figure alone (no benchmark, no capture), with a row per setup."""
    from course.setups import SETUPS

    drawn = []
    monkeypatch.setattr(diagrams, "draw_from_runs", lambda out: drawn.append(out) or [])
    assert diagrams.main([str(tmp_path), "--only=setups"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setups.png", "setups.svg"] and drawn == []
    svg = (tmp_path / "setups.svg").read_text()
    for setup in SETUPS:
        assert f"{setup.number} {setup.name}" in svg and setup.legs[0].label in svg
    assert diagrams.main([str(tmp_path), "--only=bogus"]) == 2
