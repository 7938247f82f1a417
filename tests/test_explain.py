"""``minibert explain``: the walkthrough runs, every check passes, bad
arguments give one line and exit 2, and a broken formula is caught."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minibert import cli, ops
from minibert.explain import explain

ROOT = Path(__file__).resolve().parent.parent
CHECK = re.compile(r"^  check: (.+?) \.+ max err\s+(\S+) (ok|FAIL)$")


def _checks(text: str) -> list[tuple[str, float, str]]:
    found = []
    for line in text.splitlines():
        if line.startswith("  check:"):
            m = CHECK.match(line)
            assert m, f"malformed check line: {line!r}"
            found.append((m[1], float(m[2]), m[3]))
    return found


def _assert_walkthrough(text: str, num_layers: int) -> None:
    assert "\033[" not in text, "colour codes written to a non-terminal"
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, f"lines wider than 80 columns: {wide}"
    checks = _checks(text)
    assert len(checks) >= 25, checks
    bad = [c for c in checks if c[2] != "ok"]
    assert not bad, bad
    for what in (
        "rows of P sum to 1",
        "get weight 0",
        "residual_1 = X + MultiHead(X)",
        "before gamma, beta = 1",
    ):
        assert any(what in c[0] for c in checks), what
    # the closing table lists every layer
    for i in range(1, num_layers + 1):
        assert re.search(rf"^\s+{i}\s+encoder layer {i}\s+-?\d\.\d{{4}}", text, re.M), i
    assert re.search(r"^all \d+ checks ok", text, re.M)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_explain_real_model(real_model_dir, capsys, dtype):
    rc = cli.main(["explain", "--model", str(real_model_dir), "--dtype", dtype, "The cat sat on the mat.",
                   "--layer", "3", "--head", "5", "--token", "cat"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    _assert_walkthrough(out, 6)
    assert "<- token T" in out and 'token 2 "cat"' in out
    assert "Encoder layer 3 of 6" in out and "head 5" in out
    if dtype == "float64":  # float64 recomputations agree to rounding
        assert max(err for _, err, _ in _checks(out)) < 1e-10


def test_explain_tiny_model(tiny_model_dir, capsys):
    rc = cli.main(["explain", "--model", str(tiny_model_dir), "hello world", "--layer", "-1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    _assert_walkthrough(out, minibert_layers(tiny_model_dir))


FAMILY_MODELS = sorted(p.parent for p in (ROOT / "tests" / "data").glob("tiny-*/model.safetensors"))


@pytest.mark.parametrize("path", FAMILY_MODELS, ids=lambda p: p.name)
def test_explain_every_tiny_family(path):
    """Every committed tiny model (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT,
    bf16/fp16 weights, gelu_new): the walkthrough's checks all pass."""
    import minibert

    model = minibert.load(path)
    result = explain(model, "hello world, this is a test", layer=-1)
    assert result.ok, [c for c in result.checks if not c.ok]
    assert all(len(line) <= 80 for line in result.text.splitlines())
    if model.weights.embeddings.W_proj is not None:
        assert any(c.what == "x = e W_proj + b_proj, float64" for c in result.checks)


def minibert_layers(path: Path) -> int:
    import json

    return json.loads((path / "config.json").read_text())["num_hidden_layers"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "7"], "--layer 7 is out of range"),
        (["--layer", "0"], "--layer 0 is out of range"),
        (["--head", "12"], "--head 12 is out of range"),
        (["--token", "99"], "--token 99 is out of range"),
        (["--token", "zebra"], "--token 'zebra' is not one of the text's tokens"),
    ],
)
def test_explain_bad_arguments(real_model_dir, capsys, args, message):
    rc = cli.main(["explain", "--model", str(real_model_dir), "hello world", *args])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minibert: error: ") and message in lines[0], lines


def test_explain_catches_a_wrong_formula(real_model, monkeypatch):
    """The checks can fail: swap exact GELU for its tanh approximation in the
    forward pass and the independent math.erf recomputation flags it."""
    monkeypatch.setitem(ops.ACTIVATIONS, "gelu", ops.gelu_tanh)
    result = explain(real_model, "The cat sat on the mat.", layer=1)
    failed = [c.what for c in result.checks if not c.ok]
    assert failed == ["gelu recomputed with math, float64"], failed
    assert not result.ok and "checks FAILED" in result.text


def test_explain_colour_only_when_asked(real_model):
    plain = explain(real_model, "hello", layer=1, pad=0)
    coloured = explain(real_model, "hello", layer=1, pad=0, color=True)
    assert "\033[" not in plain.text
    assert "\033[32mok\033[0m" in coloured.text
    assert "padding positions" not in plain.text  # pad=0: no padding, no padding check


def test_explain_console_script(real_model_dir):
    """The real entry point, as a user runs it (stdout is a pipe: no colour)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "minibert.cli", "explain", "--model", str(real_model_dir), "A short test."],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _assert_walkthrough(proc.stdout, 6)


def test_explain_text_at_the_length_limit(tiny_model):
    """A text truncated to max_position_embeddings leaves no room for the
    demonstration padding: none is added, and every check still passes."""
    result = explain(tiny_model, "hello world " * 100, layer=1, token=-1)
    assert result.ok, result.text
    assert f"1. Tokens: {tiny_model.max_length} real + 0 padding" in result.text
    assert "padding positions change no real token" not in result.text
