"""Does the student's file do the exercise, or hand it to the reference implementation?

Theory of operation
-------------------
Every checker compares the student's answers with what the ``proxy`` package gives
for the same input, so a file that simply calls the package (``return
RequestReader()...``) would pass every check and teach nothing.  Before any check
runs, ``find_delegation(path, rules)`` reads the file with ``ast`` (it never runs
it) and looks for a *use* of a name the exercise forbids::

    Reference(forbid=("proxy.http1.reader", "proxy.http1.head", ...),  # modules or objects
              allow=("proxy.http1.fields.TOKEN",),                     # what the README hands out
              why="the proxy's own HTTP/1.1 parser")

How a use is recognised:

1. Every import binds a local name to a dotted path (``import proxy.http1 as h``:
   ``h`` -> ``proxy.http1``; ``from proxy.http1 import RequestReader``:
   ``RequestReader`` -> ``proxy.http1.RequestReader``).
2. Each name or attribute chain the code *reads* (``h.RequestReader``) is extended
   to its dotted path, and that path is resolved by importing it, so a re-export is
   the same object as the original (``proxy.http1.RequestReader`` is
   ``proxy.http1.reader.RequestReader``).
3. The object is forbidden when it is one of the forbidden objects, lives in a
   forbidden module (its ``__module__``, or the path it was reached by), or is such
   a module itself, unless the path is in ``allow``.

Importing a name is not a use: only reading it is, and reads inside ``def demo``
or under ``if __name__ == "__main__":`` are allowed (a demo may compare with the
package).  ``lab.solutions`` is forbidden everywhere, even to import.  Calls of
``importlib.import_module("...")`` and ``__import__("...")`` with a literal name
count too.

This is a guard against the obvious shortcut, not against a determined one
(``getattr`` with a computed string gets through): the message names the line, and
the instructor reads the code anyway.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ALWAYS_FORBIDDEN = "lab.solutions"  # the answers themselves
DEMO_FUNCTIONS = frozenset({"demo"})


@dataclass(frozen=True)
class Reference:
    """What one exercise's solution must not call: the code the checker compares it with."""

    forbid: tuple[str, ...]  # dotted paths: a module (everything in it) or one object
    allow: tuple[str, ...] = ()  # dotted paths inside a forbidden module that the README hands out
    why: str = "the reference implementation"  # what the forbidden code is, for the message


@dataclass(frozen=True)
class Delegation:
    line: int
    used: str  # the dotted path as the student's code reaches it

    def message(self, path: Path, reference: Reference) -> str:
        if self.used.startswith(ALWAYS_FORBIDDEN):
            what = "the reference solution"
        else:
            what = reference.why
        return (f"{path.name} line {self.line} hands the work to {self.used} ({what}): the checks compare "
                "your code with that code, so calling it proves nothing; write this part yourself")


def find_delegation(path: Path, reference: Reference | None) -> Delegation | None:
    """The first forbidden use in the file at ``path``, or None.  Never raises for bad syntax
    (the loader reports that)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    finder = _Finder(_Rules(reference or Reference(forbid=())))
    finder.visit(tree)
    return min(finder.found, key=lambda d: d.line, default=None)


# --------------------------------------------------------------------------- the rules
class _Rules:
    """The forbidden objects and modules of one exercise, resolved once."""

    def __init__(self, reference: Reference) -> None:
        self.allow = set(reference.allow)
        self.modules: list[str] = [ALWAYS_FORBIDDEN]
        self.objects: list[object] = []
        for dotted in reference.forbid:
            target = _resolve(dotted)
            if isinstance(target, ModuleType) or target is _MISSING:
                self.modules.append(dotted)
            else:
                self.objects.append(target)
        self._allowed_objects = [obj for obj in map(_resolve, self.allow) if obj is not _MISSING]

    def forbidden(self, dotted: str) -> bool:
        """Is the thing at ``dotted`` (a full attribute chain) forbidden?"""
        parts = dotted.split(".")
        prefixes = [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]  # longest first
        if any(prefix in self.allow for prefix in prefixes):
            return False  # e.g. proxy.http1.fields.TOKEN.fullmatch
        if any(_inside(dotted, module) for module in self.modules):
            return True  # reached through a forbidden module's path
        for prefix in prefixes:  # the deepest object the chain reaches decides
            target = _resolve(prefix)
            if target is _MISSING:
                continue
            if any(target is allowed for allowed in self._allowed_objects):
                return False
            if any(target is obj for obj in self.objects):
                return True
            home = target.__name__ if isinstance(target, ModuleType) else getattr(target, "__module__", None)
            # a re-export: proxy.http1.RequestReader lives in proxy.http1.reader
            return isinstance(home, str) and any(_inside(home, module) for module in self.modules)
        return False


def _inside(dotted: str, module: str) -> bool:
    return dotted == module or dotted.startswith(module + ".")


class _Missing:
    pass


_MISSING = _Missing()
_RESOLVED: dict[str, object] = {}


def _resolve(dotted: str) -> object:
    """The object at ``dotted`` (importing the longest module prefix), or _MISSING."""
    if dotted in _RESOLVED:
        return _RESOLVED[dotted]
    parts = dotted.split(".")
    target: object = _MISSING
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # ImportError, or a module that fails at import: not ours to report
            continue
        for name in parts[cut:]:
            target = getattr(target, name, _MISSING)
            if target is _MISSING:
                break
        break
    _RESOLVED[dotted] = target
    return target


# --------------------------------------------------------------------------- the walk
class _Finder(ast.NodeVisitor):
    def __init__(self, rules: _Rules) -> None:
        self.rules = rules
        self.aliases: dict[str, str] = {}  # local name -> dotted path it was imported as
        self.found: list[Delegation] = []
        self._allowed_depth = 0  # > 0 inside demo() or the __main__ block

    # imports bind names (and an import of the solutions is already a use)
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            self._check_solutions(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # relative imports: a student file is not a package
        self._check_solutions(node.module, node.lineno)
        for alias in node.names:
            dotted = f"{node.module}.{alias.name}"
            if alias.name == "*":
                if self._star_is_forbidden(node.module):
                    self._report(node.module + ".*", node.lineno, force=True)
                continue
            self.aliases[alias.asname or alias.name] = dotted
            self._check_solutions(dotted, node.lineno)

    # regions where the package may be used
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_region(node, node.name in DEMO_FUNCTIONS)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if _is_main_guard(node.test):
            self.visit(node.test)
            self._allowed_depth += 1
            for child in node.body:
                self.visit(child)
            self._allowed_depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _visit_region(self, node: ast.AST, allowed: bool) -> None:
        self._allowed_depth += allowed
        self.generic_visit(node)
        self._allowed_depth -= allowed

    # reads
    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is None:
            self.generic_visit(node)
        elif isinstance(node.ctx, ast.Load):
            self._check(dotted, node.lineno)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in self.aliases:
            self._check(self.aliases[node.id], node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        function = self._dotted(node.func) or (node.func.id if isinstance(node.func, ast.Name) else "")
        if function in ("importlib.import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._check(first.value, node.lineno)
        self.generic_visit(node)

    # helpers
    def _dotted(self, node: ast.AST) -> str | None:
        """``h.RequestReader`` -> "proxy.http1.RequestReader" when ``h`` is an imported name."""
        names: list[str] = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(names)])

    def _check(self, dotted: str, line: int) -> None:
        if self.rules.forbidden(dotted):
            self._report(dotted, line)

    def _check_solutions(self, dotted: str, line: int) -> None:
        if _inside(dotted, ALWAYS_FORBIDDEN):
            self._report(dotted, line, force=True)

    def _star_is_forbidden(self, module: str) -> bool:
        if self.rules.forbidden(module):
            return True
        target = _resolve(module)
        names = getattr(target, "__all__", None) or [n for n in dir(target) if not n.startswith("_")]
        return any(self.rules.forbidden(f"{module}.{name}") for name in names)

    def _report(self, dotted: str, line: int, force: bool = False) -> None:
        if force or not self._allowed_depth:
            self.found.append(Delegation(line, dotted))


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, *test.comparators]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))
