"""The shape comments of the teaching path are checked against real arrays.

Every single-line assignment or return in minibert/ops.py and minibert/model.py
that carries a comment like ``# (B, S, H) -> (B, h, S, d)`` (or just
``# (P, 1)``) is watched while the plain forward pass runs on committed tiny
models: the assigned (or returned) array must have the shape on the right of
the arrow, with B, S from the batch and H, E, h, d, I, P, V from the model's
config. ``...`` stands for any leading axes. A wrong comment fails here.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np

import minibert

ROOT = Path(minibert.__file__).resolve().parent
FILES = [ROOT / "ops.py", ROOT / "model.py"]
COMMENT = re.compile(r"#\s*(\([^()]*\))(?:\s*->\s*(\([^()]*\)))?")


def commented_statements(path: Path) -> dict[int, tuple[str | None, list[str]]]:
    """line -> (assigned name, or None for a return; the shape's symbols)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.Assign, ast.Return)) or node.lineno != node.end_lineno:
            continue
        m = COMMENT.search(lines[node.lineno - 1])
        if not m:
            continue
        shape = (m.group(2) or m.group(1))[1:-1]
        symbols = [s.strip() for s in shape.split(",") if s.strip()]
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                continue
            found[node.lineno] = (node.targets[0].id, symbols)
        else:
            found[node.lineno] = (None, symbols)
    return found


STATEMENTS = {str(p): commented_statements(p) for p in FILES}


def expected(symbols: list[str], sizes: dict[str, int], actual: tuple[int, ...]) -> tuple[int, ...]:
    if symbols and symbols[0] == "...":
        tail = tuple(sizes[s] if not s.isdigit() else int(s) for s in symbols[1:])
        return actual[: len(actual) - len(tail)] + tail
    return tuple(sizes[s] if not s.isdigit() else int(s) for s in symbols)


def run_watched(model_dir: Path, texts: list[str]) -> tuple[set, list[str]]:
    """Load the model and run the plain forward pass under a tracer; return
    (the commented lines checked, the errors)."""
    c = minibert.Config.from_json(model_dir / "config.json")
    sizes = {
        "H": c.hidden_size, "E": c.embedding_size, "h": c.num_attention_heads, "d": c.head_size,
        "I": c.intermediate_size, "P": c.max_position_embeddings, "V": c.vocab_size,
    }  # fmt: skip
    checked, errors = set(), []
    last_line: dict[int, int | None] = {}  # frame id -> the line that just ran

    def check(filename, lineno, value):
        name, symbols = STATEMENTS[filename][lineno]
        where = f"{Path(filename).name}:{lineno}: {name or 'return value'}"
        if not isinstance(value, np.ndarray):
            errors.append(f"{where} is not an array")
            return
        want = expected(symbols, sizes, value.shape)
        if value.shape != want:
            errors.append(
                f"{where} has shape {value.shape}, the comment says ({', '.join(symbols)}) = {want}"
            )
        checked.add((filename, lineno))

    def local(frame, event, arg):
        filename, key = frame.f_code.co_filename, id(frame)
        prev = last_line.get(key)
        if prev in STATEMENTS[filename]:
            name = STATEMENTS[filename][prev][0]
            if name is not None and name in frame.f_locals:
                check(filename, prev, frame.f_locals[name])
        if event == "return":
            last_line.pop(key, None)
            line = frame.f_lineno
            if line in STATEMENTS[filename] and STATEMENTS[filename][line][0] is None:
                check(filename, line, arg)
        else:
            last_line[key] = frame.f_lineno if event == "line" else None
        return local

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_filename in STATEMENTS:
            last_line[id(frame)] = None
            return local
        return None

    sys.settrace(tracer)
    try:
        model = minibert.load(model_dir, "float32")
        batch = model.tokenize(texts)
        sizes |= {"B": batch.input_ids.shape[0], "S": batch.input_ids.shape[1]}
        minibert.forward(
            model.weights, model.config, batch.input_ids, batch.token_type_ids, batch.attention_mask,
            output_attentions=True, trace=True,
        )  # fmt: skip
        if c.sinusoidal_pos_embds:  # the table this checkpoint ships is what the formula would build
            minibert.ops.sinusoidal_positions(c.max_position_embeddings, c.embedding_size)
    finally:
        sys.settrace(None)
    return checked, errors


def test_every_shape_comment_holds():
    data = Path(__file__).resolve().parent / "data"
    texts = ["a short one", "a somewhat longer text for padding", ""]
    checked, errors = set(), []
    # BERT; ELECTRA (E -> H projection); DistilBERT (no token types, sinusoidal table)
    for name in ("tiny-bert", "tiny-electra", "tiny-distilbert"):
        c, e = run_watched(data / name, texts)
        checked |= c
        errors += [f"{name}: {msg}" for msg in e]
    assert not errors, "\n".join(errors)
    every = {(f, line) for f, lines in STATEMENTS.items() for line in lines}
    assert len(every) >= 10  # the modules do have shape comments to check
    missing = sorted(every - checked)
    assert not missing, f"shape comments never reached: {[f'{Path(f).name}:{n}' for f, n in missing]}"


def test_a_wrong_comment_would_fail():
    """The checker itself: a comment that disagrees with the array is reported."""
    sizes = {"B": 2, "S": 5, "H": 8}
    assert expected(["B", "S", "H"], sizes, (2, 5, 8)) == (2, 5, 8)
    assert expected(["B", "H", "S"], sizes, (2, 5, 8)) != (2, 5, 8)
    assert expected(["...", "S", "S"], sizes, (2, 4, 5, 5)) == (2, 4, 5, 5)
