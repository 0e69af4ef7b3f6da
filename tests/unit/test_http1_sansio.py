"""proxy.http1 is sans-IO: no module in it imports socket, ssl or threading.

The source is parsed, not imported, so an import hidden in a function body or behind
a condition is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import proxy.http1

FORBIDDEN = {"socket", "ssl", "threading", "select", "selectors", "asyncio"}
PACKAGE = Path(proxy.http1.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.update(arg.value.split(".")[0] for arg in node.args if isinstance(arg, ast.Constant))
    return names


def test_the_package_has_modules_to_check() -> None:
    assert len(list(PACKAGE.glob("*.py"))) >= 8


def test_no_io_imports_in_proxy_http1() -> None:
    offenders = {
        path.name: sorted(imported_modules(path) & FORBIDDEN)
        for path in sorted(PACKAGE.glob("*.py"))
        if imported_modules(path) & FORBIDDEN
    }
    assert offenders == {}


def test_the_scanner_would_notice_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import ssl\n    from socket import socket\n    __import__('threading')\n")
    assert imported_modules(bad) >= {"ssl", "socket", "threading"}
