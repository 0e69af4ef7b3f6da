"""Every notebook runs top to bottom (headless), as a student would run it."""

from __future__ import annotations

import json

import pytest

from course.notebooks_run import execute
from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no numbered notebooks"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook):
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{notebook.name}: commit notebooks without outputs (clear them first)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    execute(notebook, tmp_path, timeout=240)
