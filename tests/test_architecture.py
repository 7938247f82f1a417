"""The package's import graph flows one way (issue 11): no module imports
another that (directly or not) imports it back, nothing imports the command
line, and the formula layer imports no other part of minibert but its trace
records. Imports under ``if TYPE_CHECKING:`` are not run and do not count;
imports inside functions do (they run when the function does)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minibert"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    return skip


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The minibert modules ``path`` imports at run time."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_blocks(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    # the package's __init__ re-exports the public API: it imports, nothing imports it back
    graph = {k: v - {"minibert"} for k, v in import_graph().items()}
    assert cycles(graph) == []


def test_the_cycle_finder_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_imports_the_command_line():
    for module, deps in import_graph().items():
        if module.startswith(("minibert.commands", "minibert.cli")):
            continue
        bad = {d for d in deps if d.startswith(("minibert.commands", "minibert.cli"))}
        assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module, allowed", [("minibert.encoder.ops", {"minibert.encoder.trace"}), ("minibert.encoder.trace", set())])
def test_the_formula_layer_stands_alone(module, allowed):
    assert import_graph()[module] <= allowed


def test_the_import_scanner_sees_what_runs(tmp_path, monkeypatch):
    """The scanner itself can fail: it finds module-level, relative, absolute and
    function-level imports, and skips those under TYPE_CHECKING, on a package
    written here and on minibert's own known edges."""
    pkg = tmp_path / "minibert"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "c", "d", "e", "sub/__init__", "sub/f"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nimport minibert.c\n"
        "if TYPE_CHECKING:\n    from .d import X\n"
        "def late():\n    from .sub import f\n"
    )
    (pkg / "sub" / "f.py").write_text("from ..e import y\n")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    graph = import_graph()
    # a package counts as imported too (its __init__ runs)
    assert graph["minibert.a"] == {"minibert", "minibert.b", "minibert.c", "minibert.sub", "minibert.sub.f"}
    assert graph["minibert.sub.f"] == {"minibert.e"}
    monkeypatch.undo()
    real = import_graph()
    assert "minibert.encoder.fast" in real["minibert.model"]  # a module-level relative import
    assert "minibert.encoder.trace" in real["minibert.encoder.ops"]
    assert "minibert.loading.weights" not in real["minibert.encoder.ops"]  # only under TYPE_CHECKING there
