"""The import picture of src/unmask: no circles, and no arrow from the lower layers back up.

Built from the source with `ast` (nothing is imported), so it sees function-level (lazy)
imports as well as module-level ones. `if TYPE_CHECKING:` imports do not run and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "unmask"

# Layers that must not reach the ones above them (the loop, the commands, the policies, the tasks).
LOWER = ("unmask.engine", "unmask.decoding", "unmask.models")
UPPER = (
    "unmask.caches", "unmask.serve", "unmask.tasks", "unmask.evaluation", "unmask.bench", "unmask.cli",
    "unmask.config", "unmask.generate", "unmask.train",
)
ABOVE_CACHES = tuple(u for u in UPPER if u != "unmask.caches")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("unmask",) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The unmask modules one import statement loads (a `from pkg import name` names a submodule or the package)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    out = set()
    for name in names:
        while name and name not in MODULES:  # `import unmask.x.y` where only unmask.x is ours, etc.
            name = name.rpartition(".")[0]
        if name.startswith("unmask"):
            out.add(name)
    return out


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(module-level targets, function-level targets) of one module."""
    tree = ast.parse(MODULES[module].read_text())
    top, lazy = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top).update(_targets(module, child) - {module})
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, lazy


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
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

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_known_imports():
    # A guard for the parser itself: relative, package and submodule imports all resolve.
    top, _ = GRAPH["unmask.caches.registry"]
    assert {"unmask.caches.base", "unmask.caches.prefix", "unmask.parsing"} <= top
    assert "unmask.engine" in GRAPH["unmask.caches.base"][0]
    assert "unmask.caches.registry" in GRAPH["unmask.config"][1]  # a function-level import


def test_no_import_cycles_at_module_level():
    assert _cycles({m: top for m, (top, _) in GRAPH.items()}) == []


def test_no_import_cycles_even_through_function_level_imports():
    assert _cycles({m: top | lazy for m, (top, lazy) in GRAPH.items()}) == []


@pytest.mark.parametrize("lower, upper", [(LOWER, UPPER), (("unmask.caches",), ABOVE_CACHES)])
def test_no_arrow_back_up(lower, upper):
    wrong = sorted(
        f"{m} -> {t}" for m, (top, lazy) in GRAPH.items() if _under(m, lower) for t in top | lazy if _under(t, upper)
    )
    assert wrong == []
