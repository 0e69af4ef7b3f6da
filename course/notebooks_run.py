"""Execute the course notebooks headless, top to bottom, into a build folder.

``make notebooks`` runs ``python -m course.notebooks_run notebooks build/notebooks``;
the test suite calls ``execute`` on each notebook, so a notebook that no longer runs
fails ``make test``.  Notebooks are committed without outputs; the executed copies
(with outputs and figures) land in the build folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from course.extras import exit_if_missing


def execute(notebook: Path, out_dir: Path | None = None, *, timeout: int = 300) -> Path | None:
    """Run every cell of ``notebook`` with its folder as working directory."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    client.execute()
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    source = Path(argv[0] if argv else "notebooks")
    out = Path(argv[1] if len(argv) > 1 else "build/notebooks")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:  # the lab extra: one line if it is missing, not one FAILED per notebook
        import ipykernel  # noqa: F401  (the "python3" kernel every notebook runs on)
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ModuleNotFoundError as error:
        exit_if_missing("make notebooks (python -m course.notebooks_run)", error)
        raise
    notebooks = sorted(source.glob("[0-9]*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {source}", file=sys.stderr)
        return 1
    failed = 0
    for index, notebook in enumerate(notebooks, 1):
        started = time.monotonic()
        print(f"[{index}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
        try:
            target = execute(notebook, out)
        except Exception as error:  # report every notebook, then fail
            failed += 1
            print(f"FAILED: {str(error).strip().splitlines()[-1] if str(error).strip() else error!r}")
            continue
        print(f"ok in {time.monotonic() - started:.0f}s -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
