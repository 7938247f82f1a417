"""The shape comments of the forward passes are checked against real arrays.

Every single-line statement of minibert/encoder/ops.py, forward.py, fast.py and kernels.py that
carries a comment like ``# (B, S, H) -> (B, h, S, d)`` (or just ``# (P, 1)``)
is watched while the encoder runs on committed tiny models: an assignment's
target, a return value, or the ``out=`` array of a call such as
``np.matmul(x, W, out=y)``, must have the shape the comment gives (after the
last ``->``). B, S come from the batch; H, E, h, d, I, P, V from the config;
the fast path's own letters (N, n, g, m, k, r: its module docstring) are the
values of the variables of those names where the line runs (or in its
callers). ``...`` stands for any leading axes, ``3H`` for 3 x H, ``g n``
for g x n. A wrong comment fails here; ``test_a_swapped_comment_fails``
shows that it does.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

import minibert
from minibert.encoder import fast, threads

ROOT = Path(minibert.__file__).resolve().parent
#: file -> the letters whose sizes are read from the running code's variables
FILES = {
    ROOT / "encoder" / "ops.py": (),
    ROOT / "encoder" / "forward.py": (),
    ROOT / "encoder" / "fast.py": ("N", "n", "g", "m", "k", "r"),
    ROOT / "encoder" / "kernels.py": ("n", "g", "m"),
}
SHAPE = r"\(([^()]*)\)"
FACTOR = re.compile(r"(\d*)([A-Za-z]*)")


def commented_statements(source: str) -> dict[int, tuple[str | None, str]]:
    """line -> (the array the comment speaks of: an assigned name, an ``out=``
    name, or None for a return value; the shape, e.g. ``"B, h, S, d"``)."""
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Assign, ast.Return, ast.Expr)) or node.lineno != node.end_lineno:
            continue
        comment = lines[node.lineno - 1].partition("#")[2]
        m = re.match(rf"\s*{SHAPE}", comment)
        if not m:
            continue
        after = re.findall(rf"->\s*{SHAPE}", comment)
        shape = after[-1] if after else m.group(1)
        if isinstance(node, ast.Assign):
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found[node.lineno] = (node.targets[0].id, shape)
        elif isinstance(node, ast.Return):
            found[node.lineno] = (None, shape)
        elif isinstance(node.value, ast.Call):
            out = [k.value for k in node.value.keywords if k.arg == "out" and isinstance(k.value, ast.Name)]
            if out:
                found[node.lineno] = (out[0].id, shape)
    return found


def expected(shape: str, size, actual: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a comment means: ``size(letter)`` gives each letter's size."""

    def axis(item: str) -> int:
        n = 1
        for factor in item.split():
            count, letter = FACTOR.fullmatch(factor).groups()
            n *= int(count or 1) * (size(letter) if letter else 1)
        return n

    items = [s.strip() for s in shape.split(",") if s.strip()]
    if items and items[0] == "...":
        tail = tuple(axis(s) for s in items[1:])
        return actual[: len(actual) - len(tail)] + tail
    return tuple(axis(s) for s in items)


class Watch:
    """A tracer that checks each commented line of ``files`` right after it runs."""

    def __init__(self, files: dict[str, tuple[dict, tuple[str, ...]]], sizes: dict[str, int]):
        self.files, self.sizes = files, sizes  # filename -> (statements, letters read from variables)
        self.checked: set[tuple[str, int]] = set()
        self.errors: list[str] = []
        self.last: dict[int, int | None] = {}  # frame id -> the line that just ran

    def size(self, letter: str, frame, local: tuple[str, ...]) -> int:
        if letter in local:
            while frame is not None:
                if isinstance(frame.f_locals.get(letter), (int, np.integer)):
                    return int(frame.f_locals[letter])
                frame = frame.f_back
            raise KeyError(f"{letter}: no variable of that name where the line runs")
        return self.sizes[letter]

    def check(self, frame, lineno: int, value) -> None:
        filename = frame.f_code.co_filename
        statements, local = self.files[filename]
        name, shape = statements[lineno]
        where = f"{Path(filename).name}:{lineno}: {name or 'return value'}"
        if not isinstance(value, np.ndarray):
            self.errors.append(f"{where} is not an array")
            return
        want = expected(shape, lambda letter: self.size(letter, frame, local), value.shape)
        if value.shape != want:
            self.errors.append(f"{where} has shape {value.shape}, the comment says ({shape}) = {want}")
        self.checked.add((filename, lineno))

    def local(self, frame, event, arg):
        statements = self.files[frame.f_code.co_filename][0]
        prev = self.last.get(id(frame))
        if prev in statements:
            name = statements[prev][0]
            if name is not None and name in frame.f_locals:
                self.check(frame, prev, frame.f_locals[name])
        if event == "return":
            self.last.pop(id(frame), None)
            if frame.f_lineno in statements and statements[frame.f_lineno][0] is None:
                self.check(frame, frame.f_lineno, arg)
        else:
            self.last[id(frame)] = frame.f_lineno if event == "line" else None
        return self.local

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename in self.files:
            self.last[id(frame)] = None
            return self.local
        return None

    def __enter__(self):
        sys.settrace(self)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)


def watched_files(paths=FILES) -> dict[str, tuple[dict, tuple[str, ...]]]:
    return {
        str(p): (commented_statements(p.read_text(encoding="utf-8")), local) for p, local in paths.items()
    }


PLAIN = watched_files({p: FILES[p] for p in (ROOT / "encoder" / "ops.py", ROOT / "encoder" / "forward.py")})
FAST = watched_files({p: FILES[p] for p in (ROOT / "encoder" / "fast.py", ROOT / "encoder" / "kernels.py")})


def sizes_of(config, batch) -> dict[str, int]:
    return {
        "H": config.hidden_size, "E": config.embedding_size, "h": config.num_attention_heads,
        "d": config.head_size, "I": config.intermediate_size, "P": config.max_position_embeddings,
        "V": config.vocab_size, "B": batch.input_ids.shape[0], "S": batch.input_ids.shape[1],
        "K": config.relative_span,
    }  # fmt: skip


def run_plain(model, batch) -> None:
    """The formulas, everything kept (ops.py and forward.py are watched)."""
    ids, types_, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
    minibert.forward(model.weights, model.config, ids, types_, mask, output_attentions=True, trace=True)
    if model.config.sinusoidal_pos_embds:  # the table this checkpoint ships is what the formula would build
        minibert.encoder.ops.sinusoidal_positions(
            model.config.max_position_embeddings, model.config.embedding_size
        )


def run_fast(model, batch, module=fast) -> None:
    """The fast path on one thread (the tracer follows one thread). Only fast.py and
    kernels.py are watched: the schedule calls ops.embed on packed tokens, (N,) where
    ops says (B, S)."""
    ids, types_, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
    positions = minibert.encoder.forward.position_ids(model.config, ids, mask)
    with threads.threads(1):
        module.forward(model.weights, model.config, ids, positions, types_, mask, output_attentions=True)


TEXTS = ["a short one", "a somewhat longer text for padding", "", "the last text"]


def test_every_shape_comment_holds(monkeypatch):
    checked, errors = set(), []
    # BERT; ELECTRA (E -> H projection); DistilBERT (no token types, sinusoidal table);
    # MPNet (bucket bias); DeBERTa v3 (shared keys, c2p and p2c) and v2 (own position projections);
    # ModernBERT (rotary, sliding window, GeGLU, pre-LN); NomicBERT (rotary, SwiGLU, post-LN)
    for name in ("tiny-bert", "tiny-electra", "tiny-distilbert", "tiny-mpnet", "tiny-deberta-v3",
                 "tiny-deberta-v2", "tiny-modernbert", "tiny-nomic-bert"):  # fmt: skip
        model = minibert.load(DATA / name, "float32")
        for dense in (False, True):  # padded texts, then texts of equal length (rows written in place)
            batch = model.tokenize(TEXTS if not dense else ["a b c d e"] * 3)
            # several units; a head group that is not all heads (g = 1 or 2 here, and a last, smaller group)
            monkeypatch.setattr(fast, "UNIT_TOKENS", 8)
            monkeypatch.setattr(fast, "ATTENTION_BLOCK", 2 * 7 * 7)
            monkeypatch.setattr(fast, "BAND_ROWS", 3)  # ModernBERT's local layers: blocks of 3 queries
            for files, run in ((PLAIN, run_plain), (FAST, run_fast)):
                with Watch(files, sizes_of(model.config, batch)) as watch:
                    run(model, batch)
                checked |= watch.checked
                errors += [f"{name}: {msg}" for msg in watch.errors]
    assert not errors, "\n".join(errors)
    every = {(f, line) for files in (PLAIN, FAST) for f, (lines, _) in files.items() for line in lines}
    assert (
        len([1 for f, _ in every if f.endswith(("fast.py", "kernels.py"))]) >= 12
    )  # the schedule's comments
    missing = sorted(every - checked)
    assert not missing, f"shape comments never reached: {[f'{Path(f).name}:{n}' for f, n in missing]}"


@pytest.mark.parametrize(
    "file, comment, swapped",
    [
        ("fast.py", "# (N, H) -> (N, 3H)", "# (N, H) -> (N, H)"),  # an out= array
        (
            "fast.py",
            "# (n, g, d) -> (g, d, n)",
            "# (n, g, d) -> (g, n, d)",
        ),  # an assignment, fast-path letters
        ("kernels.py", "# (g m, n) -> (g m,): the row sums", "# (g m, n) -> (m,): the row sums"),  # a product
    ],
)
def test_a_swapped_comment_fails(tmp_path, file, comment, swapped, monkeypatch):
    """The checker itself: a copy of fast.py (or of kernels.py, which the schedule then
    calls) with one comment made wrong runs under the same tracer, and the wrong line
    is reported."""
    source = (ROOT / "encoder" / file).read_text(encoding="utf-8")
    assert source.count(comment) == 1
    path = tmp_path / file.replace(".py", "_swapped.py")
    path.write_text(source.replace(comment, swapped), encoding="utf-8")
    module = types.ModuleType("minibert.encoder.swapped")
    module.__package__ = "minibert.encoder"
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    if file == "kernels.py":
        monkeypatch.setattr(fast, "kernels", module)
    model = minibert.load(DATA / "tiny-bert", "float32")
    batch = model.tokenize(TEXTS)
    files = watched_files({path: FILES[ROOT / "encoder" / file]})
    with Watch(files, sizes_of(model.config, batch)) as watch:
        run_fast(model, batch, module if file == "fast.py" else fast)
    line = 1 + source[: source.index(comment)].count("\n")
    assert any(e.startswith(f"{path.name}:{line}:") for e in watch.errors), watch.errors
    assert len(watch.errors) >= 1 and all(f"{path.name}:{line}:" in e for e in watch.errors)


def test_the_reading_of_a_comment():
    sizes = {"B": 2, "S": 5, "H": 8, "g": 3, "n": 4}.__getitem__
    assert expected("B, S, H", sizes, (2, 5, 8)) == (2, 5, 8)
    assert expected("B, H, S", sizes, (2, 5, 8)) != (2, 5, 8)
    assert expected("..., S, S", sizes, (2, 4, 5, 5)) == (2, 4, 5, 5)
    assert expected("S, 3H", sizes, (5, 24)) == (5, 24)
    assert expected("g n,", sizes, (12,)) == (12,)
    found = commented_statements(
        "x = f(y)  # (B, S) -> (B, S, H)\nnp.matmul(a, b, out=c)  # (B, H) @ (H, S) -> (B, S); note\n"
        "def f():\n    return z  # (S,)\nw = g()  # a comment, no shape\n"
    )
    assert found == {1: ("x", "B, S, H"), 2: ("c", "B, S"), 4: (None, "S,")}
