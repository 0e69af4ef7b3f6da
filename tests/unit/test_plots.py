"""course.plots: each figure drawn from plain values, written as a PNG by the Agg renderer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from course.plots import cpu_scatter, facts_grid, facts_table_grid, flight_ladders  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def saved(figure: Figure, path) -> tuple[int, int]:
    """Write ``figure`` as a PNG and return its (height, width) in pixels, read back from the file."""
    assert isinstance(figure, Figure)
    figure.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    return height, width


def texts(figure: Figure) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts]


def test_facts_grid_writes_one_labelled_square_per_fact(tmp_path):
    routes, facts = ["direct", "forward", "reverse"], ["TLS reaches\nthe origin", "proxy reads\nthe path"]
    figure = facts_grid(routes, facts, [[True, None], [True, False], [False, True]])
    assert saved(figure, tmp_path / "grid.png") > (50, 200)
    assert texts(figure) == ["yes", "(no proxy)", "yes", "no", "no", "yes"]
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == routes
    assert [t.get_text() for t in ax.get_xticklabels()] == facts


def test_facts_grid_refuses_a_ragged_grid():
    with pytest.raises(ValueError):
        facts_grid(["a", "b"], ["x", "y"], [[True, False], [True]])


def test_flight_ladders_draw_one_arrow_per_flight_on_one_time_scale(tmp_path):
    ladders = {
        "TLS 1.3 full": [("client", "ClientHello"), ("server", "ServerHello\nFinished"),
                         ("client", "Finished"), ("request", "GET /")],
        "TLS 1.2 resumed": [("client", "ClientHello"), ("server", "ServerHello\nChangeCipherSpec\nFinished"),
                            ("client", "ChangeCipherSpec\nFinished"), ("request", "GET /")],
    }
    figure = flight_ladders(ladders, title="flights")
    assert saved(figure, tmp_path / "ladders.png")[1] > 200
    assert len(figure.axes) == 2
    assert [ax.get_title() for ax in figure.axes] == list(ladders)
    assert texts(figure).count("GET /") == 2
    for ax in figure.axes:
        assert len([a for a in ax.texts if isinstance(a, Annotation)]) == 4    # one arrow per flight
    assert figure.axes[0].get_ylim() == figure.axes[1].get_ylim()              # the same depth for both
    assert figure.axes[0].get_ylim()[0] > figure.axes[0].get_ylim()[1]        # time runs down


def test_flight_ladders_refuse_an_unknown_sender():
    with pytest.raises(ValueError, match="unknown sender"):
        flight_ladders({"x": [("proxy", "ClientHello")]})


def test_cpu_scatter_marks_each_median_and_cuts_the_outliers(tmp_path):
    samples = {"ECDSA": [100.0, 110.0, 120.0] * 40, "RSA": [400.0, 420.0, 440.0] * 40 + [50_000.0]}
    figure = cpu_scatter(samples, colours=["#1f5fbf", "#d9730d"], xlabel="server CPU µs", title="cost")
    assert saved(figure, tmp_path / "scatter.png")[1] > 200
    ax = figure.axes[0]
    medians = [line.get_xdata()[0] for line in ax.lines]
    assert medians == [110.0, 420.0]
    assert len(ax.collections) == 2 and len(ax.collections[1].get_offsets()) == 121
    assert 440.0 < ax.get_xlim()[1] < 50_000.0                                 # the one outlier is cut off
    assert ax.get_xlabel() == "server CPU µs" and ax.get_title() == "cost"


def test_cpu_scatter_needs_samples():
    with pytest.raises(ValueError):
        cpu_scatter({"empty": []})


def test_facts_table_grid_draws_only_the_boolean_facts_of_each_row(tmp_path):
    table = {  # as notebook 6 prints it: text and counts next to the yes / no facts
        "terminate": {"client verified": "the proxy's certificate", "proxy read the path": True,
                      "backend leg encrypted": False, "TLS sessions": 1},
        "reencrypt": {"client verified": "the proxy's certificate", "proxy read the path": True,
                      "backend leg encrypted": True, "TLS sessions": 2},
        "passthrough": {"client verified": "the origin's certificate", "proxy read the path": False,
                        "backend leg encrypted": True, "TLS sessions": 1},
    }
    figure = facts_table_grid(table, title="logged")
    assert saved(figure, tmp_path / "table.png") > (50, 200)
    assert texts(figure) == ["yes", "no", "yes", "yes", "no", "yes"]          # 3 rows x 2 boolean facts
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(table)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["proxy\nread the path", "backend\nleg encrypted"]
    assert ax.get_title() == "logged"


def test_facts_table_grid_refuses_rows_with_different_facts():
    with pytest.raises(ValueError, match="same boolean facts"):
        facts_table_grid({"a": {"x": True}, "b": {"y": False}})
    with pytest.raises(ValueError):
        facts_table_grid({"a": {"count": 3}})                                 # nothing to draw
    with pytest.raises(ValueError):
        facts_table_grid({})
