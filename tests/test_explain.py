"""``minibert explain``: every step's checks pass, the numbers shown are the
right slice of the trace, a broken formula is caught, bad arguments name
themselves, and the rendered text is the text of before."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, snapshot
from numpy.testing import assert_array_equal

import minibert
from minibert import cli
from minibert.encoder import ops
from minibert.errors import MinibertError
from minibert.teaching.explain import Check, Explanation, Step, explain, render

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "explain"
#: ModernBERT's and NomicBERT's steps are not taught yet: explain refuses them in one line
#: (tests/test_rotary.py).
FAMILY_MODELS = sorted(
    p.parent
    for p in (ROOT / "tests" / "data").glob("tiny-*/model.safetensors")
    if "modernbert" not in str(p) and "nomic" not in str(p)
)
#: Every step, in order: the header, then the numbered formulas.
NUMBERS = ["1.", "2.", "3.", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11",
           "3.12", "4.", "5."]  # fmt: skip


def check(result, what: str) -> Check:
    found = [c for c in result.checks if c.what == what]
    assert len(found) == 1, (what, [c.what for c in result.checks])
    return found[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_step_is_checked_on_the_real_model(request, dtype):
    model = request.getfixturevalue("real_model" if dtype == "float32" else "real_model64")
    result = explain(model, "The cat sat on the mat.", layer=3, head=5, token="cat")
    assert [s.title.split(" ")[0] for s in result.steps[1:]] == NUMBERS
    assert result.ok, [c for c in result.checks if not c.ok]
    assert len(result.checks) == 26
    for step in ("2.", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12"):
        assert result.step(step).checks, f"step {step} checks nothing"
    # float32: rounding (observed <= 4e-6); float64: agreement to rounding (observed <= 1e-13)
    assert max(c.error for c in result.checks) < (1e-4 if dtype == "float32" else 1e-10)
    assert (
        check(result, "padded keys (2) get weight 0").error
        == 0
        == check(result, "padded keys (2) get weight 0").tol
    )
    assert (
        result.step("3.").title
        == "3. Encoder layer 3 of 6: input X = hidden_states[2], output hidden_states[3]"
    )


def test_the_numbers_shown_are_the_chosen_head_and_token(real_model):
    """Layer 2, head 3, token "sat" (position 3): each shown vector is that slice of an
    independent traced pass, and the output step shows hidden_states[2]."""
    result = explain(real_model, "The cat sat on the mat.", layer=2, head=3, token="sat", pad=0)
    enc = real_model.encode(["The cat sat on the mat."], trace=True)
    t = enc.trace.layers[1]
    for step, label, want in [
        ("2.", "word", enc.trace.embeddings.word[0, 3]),
        ("3.1", "q", t.attention.q[0, 3, 3]),
        ("3.1", "v", t.attention.v[0, 3, 3]),
        ("3.2", "scores", t.attention.scores[0, 3, 3]),
        ("3.4", "P", t.attention.probs[0, 3, 3]),
        ("3.5", "context", t.attention.context[0, 3, 3]),
        ("3.7", "MultiHead", t.attention.output[0, 3]),
        ("3.10", "ffn_act", t.ffn.act[0, 3]),
        ("3.12", "ln_2", t.ln_2[0, 3]),
        ("4.", "layer 2", enc.hidden_states[2][0, 3]),
    ]:
        assert_array_equal(result.step(step).shown[label], want, err_msg=f"{step} {label}")
    assert "padding positions" not in result.text  # pad=0: nothing to check
    assert not any("padding positions" in c.what for c in result.checks)


@pytest.mark.parametrize("path", FAMILY_MODELS, ids=lambda p: p.name)
def test_every_tiny_family(path):
    """Every committed tiny model (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT,
    bf16/fp16 weights, gelu_new): the walkthrough's checks all pass."""
    model = minibert.load(path)
    result = explain(model, "hello world, this is a test", layer=-1)
    assert result.ok, [c for c in result.checks if not c.ok]
    assert all(len(line) <= 80 for line in render(result).splitlines())
    projected = model.weights.embeddings.W_proj is not None
    assert any(c.what == "x = e W_proj + b_proj, float64" for c in result.checks) == projected


def test_a_wrong_formula_fails_its_check(real_model, monkeypatch):
    """The checks can fail: swap exact GELU for its tanh approximation in the
    forward pass and the independent math.erf recomputation flags it, alone."""
    monkeypatch.setitem(ops.ACTIVATIONS, "gelu", ops.gelu_tanh)
    result = explain(real_model, "The cat sat on the mat.", layer=1)
    failed = [c.what for c in result.checks if not c.ok]
    assert failed == ["gelu recomputed with math, float64"], failed
    assert not result.ok and check(result, "gelu recomputed with math, float64").error > 1e-4
    assert "1 of 26 checks FAILED" in render(result).splitlines()[-1]


def test_a_wrong_layer_norm_fails_its_checks(tiny_model, monkeypatch):
    """LayerNorm without its epsilon-free variance (a mean of squares about 0, not
    about the mean) is caught by the float64 recomputation of both LayerNorms."""
    real = ops.layer_norm

    def wrong(x, gamma, beta, eps):
        return gamma * (x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + eps)) + beta

    monkeypatch.setattr(ops, "layer_norm", wrong)
    result = explain(tiny_model, "hello world", layer=1)
    monkeypatch.setattr(ops, "layer_norm", real)
    failed = {c.what for c in result.checks if not c.ok}
    assert {"e = LayerNorm(sum), float64", "ln_1 = LayerNorm(residual_1), float64",
            "ln_2 = LayerNorm(residual_2), float64"} <= failed, failed  # fmt: skip


def test_steps_are_found_by_their_key_not_their_title(tiny_model):
    """Each numbered step carries its number as a key (the header none); a step
    is found by that key, so a reworded title cannot lose it."""
    walk = explain(tiny_model, "the cat sat", 1, 0, 1, pad=0)
    assert walk.steps[0].key == ""
    for step in walk.steps[1:]:
        assert step.title.startswith(step.key + " "), (step.key, step.title)
    assert [s.key for s in walk.steps[1:]] == NUMBERS
    reworded = Explanation((Step("Scores, reworded", key="3.2"),), "float32", 1e-4)
    assert reworded.step("3.2").title == "Scores, reworded"


def test_render_colours_only_when_asked(tiny_model):
    result = explain(tiny_model, "hello", layer=1, pad=0)
    plain, coloured = render(result), render(result, color=True)
    assert "\033[" not in plain and plain == result.text
    assert "\033[32mok\033[0m" in coloured and "\033[1m3.4 P = softmax" in coloured
    assert re.sub(r"\033\[[0-9;]*m", "", coloured) == plain


@pytest.mark.parametrize(
    "name, model, dtype, kwargs",
    [
        ("tiny-bert-float32-color.txt", "tiny-bert", "float32",
         dict(text="hello world, this is a test", layer=-1, head=1, token="world", pad=2)),
        ("tiny-electra-float64.txt", "tiny-electra", "float64",
         dict(text="hello world", layer=1, head=2, pad=3)),
    ],
)  # fmt: skip
def test_rendering_is_the_text_of_before(name, model, dtype, kwargs):
    """The one golden comparison: the renderer prints, byte for byte, what
    explain printed before its steps became data (tests/data/explain/README.md:
    files written by the code of commit ebe7da9, not by this code)."""
    m = minibert.load(ROOT / "tests" / "data" / model, dtype)
    result = explain(m, **kwargs)
    got = render(result, color="color" in name) + "\n"
    assert got == (GOLDEN / name).read_text(encoding="utf-8")


def test_text_at_the_length_limit(tiny_model):
    """A text truncated to max_position_embeddings leaves no room for the
    demonstration padding: none is added, and every check still passes."""
    result = explain(tiny_model, "hello world " * 100, layer=1, token=-1)
    assert result.ok
    assert result.step("1.").title == f"1. Tokens: {tiny_model.max_length} real + 0 padding (mask 0), S = 64"
    assert not any("padding positions" in c.what for c in result.checks)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer=7), "layer 7 is out of range: valid are 1..6 (or -6..-1)"),
        (dict(layer=0), "layer 0 is out of range"),
        (dict(layer="2"), "layer must be an integer"),
        (dict(head=12), "head 12 is out of range: this model has heads 0..11"),
        (dict(head=1.0), "head must be an integer"),
        (dict(token=99), "token 99 is out of range: the text has 4 tokens (0..3)"),
        (dict(token="zebra"), "token 'zebra' is not one of the text's tokens: [CLS] hello world [SEP]"),
        (dict(text="  "), "the text to explain is empty"),
    ],
)
def test_bad_arguments_name_the_argument(real_model, kwargs, message):
    kwargs = {"text": "hello world"} | kwargs
    with pytest.raises(MinibertError) as e:
        explain(real_model, **kwargs)
    assert str(e.value).startswith(message.split(" ")[0] if "empty" not in message else "the text")
    assert message in str(e.value) and "--" not in str(e.value)


#: Lenient arguments of before (issue 17, item 9): each ran, clamped or truncated, exit 0.
#: hello world on the tiny model: 4 tokens of 64 positions, so pad is 0..60.
LENIENT = [
    (dict(token=1.5), "token must be an integer position or a token string, got 1.5"),
    (dict(token=True), "token must be an integer position or a token string, got True"),
    (dict(token=np.float64(2.0)), "token must be an integer position or a token string"),
    (dict(token=[1]), "token must be an integer position or a token string, got [1]"),
    (dict(token=10**5000), "token a huge number is out of range: the text has 4 tokens"),
    (dict(token="\u00b2"), "token '\u00b2' is not one of the text's tokens"),  # a digit int() cannot read
    (dict(pad=-1), "pad must be an integer from 0 to 60 (the text has 4 tokens and the model 64 positions), "
     "got -1"),
    (dict(pad=61), "pad must be an integer from 0 to 60"),
    (dict(pad=10**6), "pad must be an integer from 0 to 60"),
    (dict(pad=10**5000), "got a huge number"),
    (dict(pad=1.5), "pad must be an integer from 0 to 60 (the text has 4 tokens and the model 64 positions), "
     "got 1.5"),
    (dict(pad=2.0), "got 2.0"),
    (dict(pad=True), "got True"),
    (dict(pad="2"), "got '2'"),
    (dict(layer=10**5000), "layer a huge number is out of range"),
    (dict(layer=True), "layer must be an integer, got True"),
    (dict(head=10**5000), "head a huge number is out of range"),
    (dict(head=np.bool_(True)), "head must be an integer"),
    (dict(text=5), "the text to explain must be a string, got int"),
    (dict(text=b"hello"), "the text to explain must be a string, got bytes"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, message", LENIENT, ids=[f"lenient-{i}" for i in range(len(LENIENT))])
def test_lenient_arguments_are_refused_before_the_forward_pass(tiny_model, monkeypatch, kwargs, message):
    """A float, a bool, a pad past the model's positions or below 0: one error naming the
    argument and its range, raised before any forward pass."""

    def no_forward(*a, **k):
        raise AssertionError("the forward pass ran before the arguments were checked")

    monkeypatch.setattr(type(tiny_model), "forward", no_forward)
    kwargs = {"text": "hello world"} | kwargs
    with pytest.raises(MinibertError) as e:
        explain(tiny_model, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300, str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=5), "text: the text to view must be a str (or a list of one str), not int"),
        (dict(token=1.5), "token must be an integer position or a token string, got 1.5"),
        (dict(token=10**5000), "token a huge number is out of range"),
        (dict(layer=2.0), "layer must be an integer, got 2.0"),
        (dict(head=False), "head must be an integer, got False"),
    ],
)
def test_view_shares_explains_argument_checks(tiny_model, kwargs, message):
    from minibert.teaching.view import view

    with pytest.raises(MinibertError) as e:
        view(tiny_model, **({"text": "hello world"} | kwargs))
    assert message in str(e.value), str(e.value)


def test_pad_is_bounded_by_the_model_positions_and_its_default_fits(tiny_model):
    """pad = the room left (max_length - tokens) is accepted and fills the table; with no
    pad given, 2, or what fits (0 for a text at the limit: test_text_at_the_length_limit)."""
    n = len(tiny_model.tokenize(["hello world"]).tokens[0])
    room = tiny_model.max_length - n
    full = explain(tiny_model, "hello world", pad=room)
    assert full.ok and full.walk.S == tiny_model.max_length
    assert explain(tiny_model, "hello world").walk.S == n + 2
    near = "hello " * (tiny_model.max_length - 3)  # leaves one position
    assert explain(tiny_model, near).walk.S == tiny_model.max_length
    with pytest.raises(MinibertError, match="pad must be an integer from 0 to 1 "):
        explain(tiny_model, near, pad=2)


@pytest.mark.parametrize(
    "args, names",
    [
        (["--pad", "1000000000"], ["--pad must be an integer from 0 to 60", "got 1000000000"]),
        (["--pad", "61"], ["--pad must be an integer from 0 to 60"]),
        (["--pad", "-1"], ["--pad"]),
        (["--pad", "1.5"], ["--pad", "'1.5'"]),
        (["--token", "1.5"], ["--token '1.5' is not one of the text's tokens"]),
        (["--token", "\u00b2"], ["--token '\u00b2' is not one of the text's tokens"]),
        (["--token", "9" * 5000], ["--token", "is not one of the text's tokens"]),
        (["--head", "1.5"], ["--head", "'1.5'"]),
        (["--layer", "-99"], ["--layer -99 is out of range"]),
    ],
)
def test_cli_lenient_arguments_are_one_line(tiny_model_dir, tmp_path, args, names):
    before = snapshot(tmp_path)
    assert_one_line_error(run("explain", "--model", tiny_model_dir, "hello world", *args), *names)
    assert_unchanged(before, tmp_path)


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
def test_cli_bad_arguments_name_the_option(real_model_dir, capsys, args, message):
    rc = cli.main(["explain", "--model", str(real_model_dir), "hello world", *args])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minibert: error: ") and message in lines[0], lines


def test_cli_prints_the_walk_and_exits_1_on_a_failed_check(tiny_model_dir, capsys, monkeypatch):
    assert cli.main(["explain", "--model", str(tiny_model_dir), "hello world", "--layer", "-1"]) == 0
    out = capsys.readouterr().out
    assert out == render(explain(minibert.load(tiny_model_dir), "hello world", layer=-1)) + "\n"
    monkeypatch.setitem(ops.ACTIVATIONS, "gelu", ops.gelu_tanh)
    assert cli.main(["explain", "--model", str(tiny_model_dir), "hello world"]) == 1


def test_explain_console_script(real_model_dir):
    """The real entry point, as a user runs it (stdout is a pipe: no colour)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "minibert.cli", "explain", "--model", str(real_model_dir), "A short test."],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\033[" not in proc.stdout
    assert re.search(r"^all 26 checks ok \(tolerance 0.0001 for float32", proc.stdout, re.M)
