"""Writing nginx syntax: directives, blocks, times, sizes, quoting, names.

Theory of operation
-------------------
nginx's configuration language is directives ending in ``;`` and blocks in braces.
``_Writer`` collects indented lines (each directive may carry a ``# comment`` naming
where its value comes from) and renders them as text; a ``_Writer`` can be built
apart and spliced into another (``extend``), as the backend TLS directives are.
The small functions translate our values into nginx's spellings: seconds as
``10s``/``250ms``, sizes as ``8k``/``1024m``, a string quoted only when it must be,
a pool name as one upstream word.
"""

from __future__ import annotations

import contextlib
import re


class _Writer:
    """Indented nginx directives and blocks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, directive: str, comment: str = "") -> None:
        text = f"{directive};" if directive else ""
        if comment:
            text = f"{text}  # {comment}" if text else f"# {comment}"
        self.lines.append("    " * self.depth + text)

    def comment(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.append("    " * self.depth + f"# {line}".rstrip())

    def blank(self) -> None:
        self.lines.append("")

    def extend(self, other: _Writer) -> None:
        self.lines += ["    " * self.depth + line if line else "" for line in other.lines]

    @contextlib.contextmanager
    def block(self, header: str):
        self.lines.append("    " * self.depth + header + " {")
        self.depth += 1
        yield
        self.depth -= 1
        self.lines.append("    " * self.depth + "}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _seconds(value: float) -> str:
    """nginx time syntax: 10.0 -> '10s', 0.25 -> '250ms'."""
    return f"{int(value)}s" if value == int(value) else f"{round(value * 1000)}ms"


def _size(value: int) -> str:
    """nginx size syntax: 8192 -> '8k', 1 << 30 -> '1024m' (nginx sizes stop at m)."""
    for unit, factor in (("m", 1 << 20), ("k", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:*\-$]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _upstream_name(pool: str) -> str:
    """A pool name as an nginx upstream name (one word)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pool)
