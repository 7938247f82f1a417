"""The package's layers and its import graph (issues 11 and 21).

minibert is built in layers, each a package (or one module) that may import
only the layers below it:

    errors, files, version            what every layer needs
    encoder                           the formulas, their records, traces, the schedule
    loading                           a model directory -> config, weights, tokenizer
    model                             Model: tokenize, then run the encoder
    features                          pooling, words, windows, attention statistics
    outputs                           one module per file format, shards, specs
    corpus                            the corpus driver
    analysis                          probes and layer similarity over word vectors
    teaching                          explain, view, plot, article, verify
    minibert (its __init__)           the public API
    commands, cli                     the command line

Every import counts, at module level, inside functions (they run when the
function does) and under ``if TYPE_CHECKING:`` (a circle of annotations is
still a circle for the reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minibert"

#: From the ground up: a module may import its own layer and those before it.
LAYERS = (
    "minibert.errors",
    "minibert.files",
    "minibert.version",
    "minibert.encoder",
    "minibert.loading",
    "minibert.model",
    "minibert.features",
    "minibert.outputs",
    "minibert.corpus",
    "minibert.analysis",
    "minibert.teaching",
    "minibert",
    "minibert.commands",
    "minibert.cli",
)


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: Path, known: set[str]) -> set[str]:
    """The modules of the package that ``path`` imports, anywhere in it."""
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
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


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = sorted(package.rglob("*.py"))
    known = {module_name(p, package) for p in paths}
    return {module_name(p, package): imports_of(p, package, known) for p in paths}


def layer(module: str, layers: tuple[str, ...] = LAYERS) -> int:
    """The index of the layer a module belongs to (the longest layer name that is it or holds it)."""
    best = None
    for i, name in enumerate(layers):
        if module == name or (name != layers[0].split(".")[0] and module.startswith(name + ".")):
            if best is None or len(name) > len(layers[best]):
                best = i
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")
    return best


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...] = LAYERS) -> list[tuple[str, str]]:
    """(importer, imported) where the imported module stands in a higher layer."""
    return sorted((a, b) for a, deps in graph.items() for b in deps if layer(b, layers) > layer(a, layers))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_every_module_is_in_a_layer():
    for module in import_graph():
        layer(module)


def test_no_import_runs_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    graph = {
        k: v - {"minibert"} for k, v in import_graph().items()
    }  # the face imports; nothing imports it back
    assert cycles(graph) == []


def test_the_cycle_finder_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("minibert.encoder.ops", {"minibert.encoder.trace", "minibert.encoder.params"}),
        ("minibert.encoder.trace", set()),
        ("minibert.encoder.params", set()),
    ],
)
def test_the_formulas_stand_alone(module, allowed):
    """The formulas import only their records (and numpy/scipy): no loader, no I/O."""
    assert import_graph()[module] - {"minibert", "minibert.encoder"} <= allowed


def test_a_planted_upward_import_fails(tmp_path):
    """The layer check can fail: in a package written here, one module of a low layer imports a
    higher one (at module level, inside a function, and under TYPE_CHECKING); each is found."""
    pkg = tmp_path / "minibert"
    for sub in ("encoder", "outputs", "commands"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .encoder import ops\n")
    (pkg / "errors.py").write_text("")
    (pkg / "encoder" / "ops.py").write_text(
        "from typing import TYPE_CHECKING\nfrom minibert.errors import X\n"
        "if TYPE_CHECKING:\n    from ..outputs import npz\n"
    )
    (pkg / "encoder" / "fast.py").write_text("def late():\n    from minibert.commands import run\n")
    (pkg / "outputs" / "npz.py").write_text("from minibert.encoder import ops\n")
    (pkg / "commands" / "run.py").write_text("import minibert.outputs.npz\n")
    graph = import_graph(pkg)
    assert graph["minibert.encoder.ops"] == {"minibert.errors", "minibert.outputs", "minibert.outputs.npz"}
    assert upward_imports(graph) == [
        ("minibert.encoder.fast", "minibert.commands"),
        ("minibert.encoder.fast", "minibert.commands.run"),
        ("minibert.encoder.ops", "minibert.outputs"),
        ("minibert.encoder.ops", "minibert.outputs.npz"),
    ]
    assert cycles(graph) == [["minibert.encoder.ops", "minibert.outputs.npz"]]


def test_the_scanner_reads_minibert_itself():
    """Known edges of the real package are found (a scanner that finds nothing would pass the rest)."""
    real = import_graph()
    assert "minibert.encoder.fast" in real["minibert.model"]
    assert "minibert.encoder.params" in real["minibert.encoder.ops"]
    assert "minibert.model" in real["minibert.features.words"]
    assert len(real) > 40 and sum(map(len, real.values())) > 100
