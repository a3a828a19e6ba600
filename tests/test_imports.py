"""The package's import graph: no circle, and no door imports one above it.

Read from the source with ``ast`` (nothing is imported), every ``import`` and
``from ... import`` naming a module of ``sslsms_notify``, of three kinds:

- ``top``: at module level, run when the module is imported;
- ``lazy``: inside a function or method, run when it is called. A circle through a
  lazy import is still a circle: the two modules need each other, only later (the
  apprise plugin took ``deliver`` from the CLI that installs the plugin, that way);
- ``typing``: under ``if TYPE_CHECKING:``, never run; counted too, so a circle cannot
  hide in annotations either.

``importlib.import_module("sslsms_notify....")`` and the package's table of lazily
exported names (string constants naming a module, in a module that calls
``import_module``) count as lazy imports.

Not counted: the parent packages Python runs before a submodule (importing
``sslsms_notify.alerting.delivery`` runs ``sslsms_notify/alerting/__init__.py``). Every
``__init__`` re-exporting its submodules would otherwise be "a circle" with each of them.

The doors, from the top: the command line (``sslsms_notify.cli``); the relay, the
integrations (logging, structlog, apprise) and the demo; then everything they stand on
(alerting, stores, gateway, emulator, outcomes, configuration...). A module imports
only from its own level or below. ``sslsms_notify/__init__.py`` is the facade over all
of it and is exempt.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sslsms_notify

PACKAGE = Path(sslsms_notify.__file__).resolve().parent
ROOT = "sslsms_notify"
MAX_LINES = 600
#: the wire and the state know nothing of alerts: they never import these
ABOVE_WIRE_AND_STATE = ("alerting", "config", "cli", "relay", "integrations", "demo")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # "top", "lazy" or "typing"
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _known(name: str) -> str | None:
    """The module of ours ``name`` is, or is in (``a.b.attr`` -> ``a.b``)."""
    while name.startswith(ROOT):
        if name in MODULES:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges_of(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    dynamic = "import_module" in path.read_text(encoding="utf-8")

    def visit(node: ast.AST, kind: str) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            inner = kind
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and kind == "top":
                inner = "lazy"
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit_one(statement, "typing")
                for statement in child.orelse:
                    yield from visit_one(statement, kind)
                continue
            yield from visit_one(child, inner)

    def visit_one(node: ast.AST, kind: str) -> Iterator[Edge]:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif dynamic and isinstance(node, ast.Constant) and node.value in MODULES:
            targets = [str(node.value)]
            kind = "lazy" if kind == "top" else kind
        for name in targets:
            target = _known(name)
            # "from . import x": the package itself is only an edge if no submodule is named
            if target is not None and target != module:
                if isinstance(node, ast.ImportFrom) and target == _resolve(module, path, node):
                    submodules = [f"{target}.{a.name}" for a in node.names]
                    if all(s in MODULES for s in submodules):
                        continue
                yield Edge(module, target, kind, getattr(node, "lineno", 0))
        yield from visit(node, kind)

    yield from visit(tree, "top")


def graph() -> list[Edge]:
    # "from ..x import y" names x and x.y: one edge, not two
    return list(dict.fromkeys(edge for module, path in MODULES.items() for edge in edges_of(module, path)))


EDGES = graph()


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-loops."""
    out: dict[str, list[str]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in out.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            strong(v)
    return found


def door(module: str) -> int:
    """2: the command line; 1: the other doors; 0: what they stand on."""
    if module == "sslsms_notify.cli" or module.startswith("sslsms_notify.cli."):
        return 2
    doors = ("sslsms_notify.relay", "sslsms_notify.integrations", "sslsms_notify.demo")
    if any(module == d or module.startswith(d + ".") for d in doors):
        return 1
    return 0


# -- the tests ---------------------------------------------------------------------------------
def test_the_graph_is_read() -> None:
    """The reader finds what is there: a guard against a test that passes by seeing nothing."""
    found = {(e.source, e.target, e.kind) for e in EDGES}
    assert ("sslsms_notify.integrations.apprise", "sslsms_notify.alerting.delivery", "top") in found
    assert ("sslsms_notify.cli.send", "sslsms_notify.alerting.delivery", "lazy") in found
    assert ("sslsms_notify.cli.send", "sslsms_notify.alerting.notifier", "typing") in found
    assert ("sslsms_notify", "sslsms_notify.alerting.notifier", "lazy") in found  # _LAZY
    assert ("sslsms_notify.cli", "sslsms_notify.cli.send", "top") in found  # from . import send


@pytest.mark.parametrize("kinds", [("top",), ("top", "lazy"), ("top", "lazy", "typing")])
def test_no_import_circle(kinds: tuple[str, ...]) -> None:
    chosen = [e for e in EDGES if e.kind in kinds]
    circles = cycles(chosen)
    detail = [
        f"{' <-> '.join(c)}: " + "; ".join(str(e) for e in chosen if e.source in c and e.target in c)
        for c in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(detail)


def test_no_module_imports_from_a_door_above_it() -> None:
    upward = [e for e in EDGES if e.source != ROOT and door(e.target) > door(e.source)]
    assert not upward, "imports from a door above:\n" + "\n".join(map(str, upward))


def test_nothing_outside_the_command_line_imports_it() -> None:
    into_cli = [e for e in EDGES if door(e.target) == 2 and door(e.source) < 2]
    assert not into_cli, "\n".join(map(str, into_cli))


def test_modules_stay_under_600_lines() -> None:
    long = {
        module: n
        for module, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_the_wire_and_the_stores_know_nothing_of_alerting() -> None:
    """gateway/ is the spec, stores/ the state: either could ship alone (docs/decisions.md map)."""
    above = tuple(f"{ROOT}.{name}" for name in ABOVE_WIRE_AND_STATE)
    base = (f"{ROOT}.gateway", f"{ROOT}.stores")
    upward = [
        e
        for e in EDGES
        if e.source.startswith(base) and any(e.target == a or e.target.startswith(a + ".") for a in above)
    ]
    assert not upward, "\n".join(map(str, upward))
    assert any(e.source.startswith(f"{ROOT}.stores") for e in EDGES)  # the test sees them
