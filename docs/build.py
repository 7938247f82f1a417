"""Keep the docs honest: quoted source and shown output come from the code.

Two markers in a docs page, each followed by a fenced code block:

    <!-- source: minibert/encoder/ops.py::softmax -->
    ```python
    ...the current source of that function, filled in by this script...
    ```

    <!-- output -->
    ```text
    ...what the python block just before printed, filled in by this script...
    ```

Every other ```python block is a tutorial step: the blocks of one page run in
order, in one namespace, from the repository root (doctest-style blocks,
starting with ``>>>``, are left to doctest: see tests/test_docs_words.py). ``tests/test_docs.py`` runs
them in ``make test`` and fails when a quoted function differs from the source
or a shown output differs from what the code prints (numbers within 1e-3: the
docs print 4 decimals).

    python docs/build.py           # check every page (exit 1 if stale)
    python docs/build.py --write   # refresh quotes and outputs (make docs)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(source|output)\s*(?::\s*(\S+?))?\s*-->\s*$")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass
class Block:
    """A fenced code block: its language, body, marker, and place in the page."""

    lang: str
    body: str
    marker: str | None  # "source", "output" or None
    ref: str | None  # for "source": "path/to/file.py::name"
    start: int  # offsets of the body in the page text
    end: int
    line: int  # 1-based line of the opening fence

    @property
    def runnable(self) -> bool:
        """A tutorial step. Doctest-style blocks (``>>>``) are left to doctest."""
        return self.lang == "python" and self.marker is None and not self.body.lstrip().startswith(">>>")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def parse(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = MARKER.search(before)
        blocks.append(
            Block(
                lang=m[1],
                body=m[2],
                marker=mk[1] if mk else None,
                ref=mk[2] if mk else None,
                start=m.start(2),
                end=m.end(2),
                line=text.count("\n", 0, m.start()) + 1,
            )
        )
    return blocks


def quote(ref: str) -> str:
    """The source of ``path.py::name`` (a function or class, ``Class.method``
    for a method), decorators included, dedented, with a final newline."""
    path, _, name = ref.partition("::")
    file = ROOT / path
    if not file.is_file() or not name:
        raise LookupError(f"source marker {ref!r}: expected an existing path.py::name")
    source = file.read_text(encoding="utf-8")
    node: ast.AST = ast.parse(source)
    for part in name.split("."):
        found = [
            n
            for n in getattr(node, "body", [])
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part
        ]
        if not found:
            raise LookupError(f"source marker {ref!r}: no {part!r} in {path}")
        node = found[0]
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = source.splitlines()[first - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines)) + "\n"


def run(text: str, name: str = "<docs>") -> list[str | None]:
    """Run the page's tutorial blocks in order in one namespace, from the
    repository root; return each block's stdout (None for blocks not run)."""
    namespace: dict = {"__name__": "__docs__"}
    outputs: list[str | None] = []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for block in parse(text):
            if not block.runnable:
                outputs.append(None)
                continue
            buf = io.StringIO()
            # padded with newlines so a traceback names the line of the page
            code = compile("\n" * block.line + block.body, name, "exec")
            with contextlib.redirect_stdout(buf):
                exec(code, namespace)
            outputs.append(buf.getvalue())
    finally:
        os.chdir(cwd)
    return outputs


def expected_output(blocks: list[Block], outputs: list[str | None], i: int) -> str:
    """What output block ``i`` should hold: the stdout of the block before it."""
    if i == 0 or outputs[i - 1] is None:
        raise LookupError(f"output marker at line {blocks[i].line}: no python block right before it")
    return outputs[i - 1]


def same_output(shown: str, actual: str, tol: float = 1e-3) -> bool:
    """Equal text, with numbers compared to ``tol`` (absolute or relative)
    and runs of spaces ignored: float32 results may differ in the last
    printed digit across machines, and NumPy pads columns to the widest."""

    def shape(s: str) -> list[str]:  # the text around the numbers, spacing ignored
        return NUMBER.sub(" # ", s).split()

    if shape(shown) != shape(actual):
        return False
    for a, b in zip(NUMBER.findall(shown), NUMBER.findall(actual), strict=True):
        x, y = float(a), float(b)
        if abs(x - y) > tol * max(1.0, abs(y)):
            return False
    return True


def stale(path: Path, execute: bool = True) -> list[str]:
    """Problems of one page: quotes that differ from the source, outputs that
    differ from what the code prints."""
    text = path.read_text(encoding="utf-8")
    blocks = parse(text)
    problems = []
    for b in blocks:
        if b.marker == "source" and b.body != quote(b.ref):
            problems.append(f"{path.name}:{b.line}: quoted source of {b.ref} is stale")
    if execute and any(b.marker == "output" for b in blocks):
        outputs = run(text, path.name)
        for i, b in enumerate(blocks):
            if b.marker == "output" and not same_output(b.body, expected_output(blocks, outputs, i)):
                problems.append(f"{path.name}:{b.line}: shown output differs from what the code prints")
    return problems


def refresh(path: Path) -> bool:
    """Rewrite one page's quotes and outputs; True if it changed."""
    text = path.read_text(encoding="utf-8")
    blocks = parse(text)
    outputs = run(text, path.name) if any(b.marker == "output" for b in blocks) else []
    new = text
    for i in reversed(range(len(blocks))):
        b = blocks[i]
        if b.marker == "source":
            body = quote(b.ref)
        elif b.marker == "output":
            body = expected_output(blocks, outputs, i)
            if not body.endswith("\n"):
                body += "\n"
        else:
            continue
        new = new[: b.start] + body + new[b.end :]
    if new != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="check or refresh quoted source and shown output in docs/")
    ap.add_argument("--write", action="store_true", help="rewrite stale pages in place")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.write:
        for path in pages():
            if refresh(path):
                print(f"updated {path.relative_to(ROOT)}")
        return 0
    problems = [p for path in pages() for p in stale(path)]
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
