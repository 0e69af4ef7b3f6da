"""The layout is the architecture: proxy/ never imports course/, and the sans-IO cores import no I/O.

Sources are parsed, not imported, so an import hidden in a function body is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import proxy

PROXY = Path(proxy.__file__).parent
IO_MODULES = {"socket", "ssl", "threading", "select", "selectors", "asyncio", "subprocess", "http.client",
              "http.server", "urllib.request"}

#: The sans-IO cores: bytes (or events) in, values out.  Every engine and protocol shares them.
SANS_IO = [
    *sorted((PROXY / "http1").glob("*.py")),
    *sorted((PROXY / "h2").glob("*.py")),  # the h2 -> h1 downgrade: no I/O, not even the h2 library
    PROXY / "exchange.py",
    PROXY / "lifecycle.py",
    PROXY / "routing.py",
    PROXY / "errors.py",
    PROXY / "tls" / "records.py",
    PROXY / "tls" / "clienthello.py",
    PROXY / "tls" / "keyschedule.py",
]


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.update(arg.value for arg in node.args if isinstance(arg, ast.Constant))
    return names


def test_proxy_never_imports_the_course_tooling():
    offenders = {str(p.relative_to(PROXY)): sorted(n for n in imports(p) if n.split(".")[0] in ("course", "lab"))
                 for p in PROXY.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sans_io_cores_import_nothing_that_does_io():
    offenders = {}
    for path in SANS_IO:
        bad = {n for n in imports(path) if n in IO_MODULES or n.split(".")[0] in IO_MODULES}
        # ... nor anything of the proxy's that does (its own kind, and the frozen configuration)
        bad |= {n for n in imports(path) if n.startswith("proxy.") and n != "proxy.config"
                and (PROXY.parent / (n.replace(".", "/") + ".py")) not in SANS_IO
                and not (PROXY.parent / n.replace(".", "/")).is_dir()}
        if bad:
            offenders[str(path.relative_to(PROXY))] = sorted(bad)
    assert offenders == {}


def test_the_scanner_would_notice(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import ssl\n    from course.bench import runner\n    __import__('threading')\n")
    assert {"ssl", "course.bench", "threading"} <= imports(bad)


def test_the_sans_io_list_covers_the_http1_package():
    assert len([p for p in SANS_IO if p.parent.name == "http1"]) >= 8
