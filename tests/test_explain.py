"""``minibert explain``: every step's checks pass, the numbers shown are the
right slice of the trace, a broken formula is caught, bad arguments name
themselves, and the rendered text is the text of before."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, snapshot
from numpy.testing import assert_array_equal

import minibert
from minibert import cli
from minibert.encoder import ops
from minibert.errors import MinibertError
from minibert.teaching.explain import Check, Explanation, Step, explain, explain_walk, render

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "explain"
FAMILY_MODELS = sorted(p.parent for p in (ROOT / "tests" / "data").glob("tiny-*/model.safetensors"))
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
    bf16/fp16 weights, gelu_new, MPNet, DeBERTa, ModernBERT, NomicBERT): the
    walkthrough's checks all pass, in both dtypes, for every layer."""
    for dtype in ("float32", "float64"):
        model = minibert.load(path, dtype)
        first = explain(model, "hello world, this is a test", layer=1)
        for i in range(1, model.num_layers + 1):
            result = explain_walk(replace(first.walk, layer=i))
            assert result.ok, (dtype, i, [c for c in result.checks if not c.ok])
            assert all(len(line) <= 80 for line in render(result).splitlines()), (dtype, i)
    result = explain(minibert.load(path), "hello world, this is a test", layer=-1)
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


# --------------------------------------------------------------------------- the families' own steps
#
# What explain shows for ModernBERT's and NomicBERT's steps (the pre-LN norm, the rotation of q and k
# with its angle table, the window, the gated FFN, the final norm), and for MPNet's and DeBERTa's
# relative positions, against numbers computed here: the layer's input and attention maps from the
# transformers references (tests/reference/), everything else in NumPy float64 from the checkpoint's
# own tensors (read with safetensors, under their checkpoint names), never by minibert's formulas.

REFS = ROOT / "tests" / "reference"
#: The references' third text and its pair (batch row 2): longer than ModernBERT's window of +-4.
TEXT, PAIR, ROW = "How old are you?", "I am six years old.", 2
#: Shown numbers against the recomputation: float64 to rounding, float32 to its rounding.
SHOWN_TOL = {"float32": 2e-4, "float64": 1e-9}


def reference_row(path: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Row ROW of a reference: its hidden states (n, H) and attention maps (h, n, n)."""
    from reference_helpers import read_reference

    ref = read_reference(path)
    b, s = ref["positions"].T
    states = [ref[f"hidden_states.{i}"][b == ROW][np.argsort(s[b == ROW])] for i in range(len(ref) - 1)
              if f"hidden_states.{i}" in ref]  # fmt: skip
    b, q, k = ref["attention_positions"].T
    maps = []
    for i in range(len(states) - 1):
        a = np.zeros((ref[f"attentions.{i}"].shape[1], n, n))
        a[:, q[b == ROW], k[b == ROW]] = ref[f"attentions.{i}"][b == ROW].T
        maps.append(a)
    assert all(h.shape[0] == n for h in states)
    return states, maps


def ln64(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    out = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * gamma
    return out if beta is None else out + beta


def turned(x: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RoPE on rows 0..n-1 of x (n, d), halves paired (GPT-NeoX): the turned rows and
    the frequencies theta^(-2i/d) and angles p theta^(-2i/d)."""
    n, d = x.shape
    w = theta ** (-np.arange(0, d, 2) / d)  # (d/2,)
    angle = np.arange(n)[:, None] * w  # (n, d/2)
    x1, x2 = x[:, : d // 2], x[:, d // 2 :]
    c, s = np.cos(angle), np.sin(angle)
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1), w, angle


GELU = np.vectorize(lambda u: 0.5 * u * (1 + math.erf(u / math.sqrt(2))))


def rotary_layer(name: str, N: int, x: np.ndarray, P: np.ndarray) -> dict[str, np.ndarray]:
    """Encoder layer N (1..L) of tiny-modernbert or tiny-nomic-bert on its input x (n, H), in
    float64 from the checkpoint's tensors, with the attention maps P (h, n, n) of the
    reference: every intermediate explain shows, by its explain name."""
    from safetensors.numpy import load_file

    t = {
        k: v.astype(np.float64)
        for k, v in load_file(ROOT / "tests" / "data" / name / "model.safetensors").items()
    }
    cfg = json.loads((ROOT / "tests" / "data" / name / "config.json").read_text())
    H, h, I = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    d, n, i = H // h, x.shape[0], N - 1
    out: dict[str, np.ndarray] = {}
    if name == "tiny-modernbert":
        kind = cfg["layer_types"][i]
        theta, eps, p = cfg["rope_parameters"][kind]["rope_theta"], cfg["norm_eps"], f"layers.{i}."
        xn = x if i == 0 else ln64(x, t[p + "attn_norm.weight"], None, eps)
        out["LN_1(X)"] = xn
        W_qkv, W_o = t[p + "attn.Wqkv.weight"], t[p + "attn.Wo.weight"]
    else:
        theta, eps, p = cfg["rope_parameters"]["rope_theta"], cfg["layer_norm_eps"], f"encoder.layers.{i}."
        xn, W_qkv, W_o = x, t[p + "attn.Wqkv.weight"], t[p + "attn.out_proj.weight"]
    q, k, v = ((xn @ W_qkv[j * H : (j + 1) * H].T).reshape(n, h, d).transpose(1, 0, 2) for j in range(3))
    out["q"], out["k"], out["v"] = q, k, v  # (h, n, d)
    rotated = [turned(q[j], theta) for j in range(h)]
    out["q rotated"] = np.stack([r[0] for r in rotated])
    out["k rotated"] = np.stack([turned(k[j], theta)[0] for j in range(h)])
    out["w"], out["angle"] = rotated[0][1], rotated[0][2]
    out["scores"] = out["q rotated"] @ out["k rotated"].transpose(0, 2, 1) / math.sqrt(d)
    attention = (P @ v).transpose(1, 0, 2).reshape(n, H) @ W_o.T  # (n, H)
    if name == "tiny-modernbert":
        x_1 = x + attention
        f_in = ln64(x_1, t[p + "mlp_norm.weight"], None, eps)
        W_i = t[p + "mlp.Wi.weight"]
        pre, gate, act, W_2 = f_in @ W_i[:I].T, f_in @ W_i[I:].T, GELU, t[p + "mlp.Wo.weight"]
    else:
        x_1 = f_in = ln64(x + attention, t[p + "norm1.weight"], t[p + "norm1.bias"], eps)
        pre, gate, W_2 = (
            f_in @ t[p + "mlp.fc12.weight"].T,
            f_in @ t[p + "mlp.fc11.weight"].T,
            t[p + "mlp.fc2.weight"],
        )
        act = lambda u: u / (1 + np.exp(-u))  # noqa: E731 (SiLU)
    out |= {"residual_1": x + attention, "ln_1": f_in, "ffn_pre": pre, "gate": gate, "act(ffn_pre)": act(pre)}
    out["ffn_act"] = act(pre) * gate
    out["FFN"] = out["ffn_act"] @ W_2.T
    if name == "tiny-modernbert":
        out["output"] = x_1 + out["FFN"]
        if N == cfg["num_hidden_layers"]:
            out["final"] = ln64(out["output"], t["final_norm.weight"], None, eps)
    else:
        out["output"] = ln64(x_1 + out["FFN"], t[p + "norm2.weight"], t[p + "norm2.bias"], eps)
    out["theta"], out["window"] = (
        theta,
        cfg.get("local_attention", 0) // 2
        if name == "tiny-modernbert" and kind == "sliding_attention"
        else None,
    )
    return out


def assert_rotary_steps(result, name: str, dtype: str) -> None:
    """Every number explain shows for a rotary family's layer, head and token equals the
    recomputation above (its input and attention maps from the transformers reference)."""
    walk, tol = result.walk, SHOWN_TOL[dtype]
    N, T, j, n = walk.layer, walk.T, walk.head, walk.n
    states, maps = reference_row(REFS / "rotary" / f"{name}-{dtype}.npz", n)
    want = rotary_layer(name, N, states[N - 1], maps[N - 1])

    def same(key: str, label: str, expected) -> None:
        got = result.step(key).shown[label]
        np.testing.assert_allclose(got[: len(expected)], expected, rtol=0, atol=tol, err_msg=f"{key} {label}")

    # the transformers reference itself, for the recomputation of the layer (its own check)
    np.testing.assert_allclose(want.get("final", want["output"]), states[N], rtol=0, atol=tol * 10)
    if "LN_1(X)" in want and N > 1:
        same("3.0", "LN_1(X)", want["LN_1(X)"][T])
    for label in ("q", "k", "v"):
        same("3.1", label, want[label][j, T])
    for label in ("q rotated", "k rotated"):
        same("3.1b", label, want[label][j, T])
    same("3.1b", "q before", want["q"][j, T])
    table = [
        line
        for line in result.step("3.1b").lines
        if isinstance(line, str) and re.fullmatch(r"\s+\d+(\s+\S+){4}", line)
    ]
    assert len(table) == min(len(want["w"]), 6)
    for line in table:
        i, w, angle, c, s = (float(v) for v in line.split())
        i = int(i)
        assert w == pytest.approx(want["w"][i], rel=1e-5) and angle == pytest.approx(
            want["angle"][T, i], rel=1e-5, abs=1e-12
        )
        assert (
            abs(c - math.cos(want["angle"][T, i])) <= 5e-5 and abs(s - math.sin(want["angle"][T, i])) <= 5e-5
        )
    assert f"theta = {want['theta']:g}" in "\n".join(map(str, result.step("3.1b").lines))
    same("3.2", "scores", want["scores"][j, T])
    same("3.4", "P", maps[N - 1][j, T])  # the reference's own attention map
    if want["window"] is not None:  # a local layer: the keys the token sees
        w = want["window"]
        assert f"sees keys {max(0, T - w)}..{min(n - 1, T + w)}: " in "\n".join(
            map(str, result.step("3.3").lines)
        )
        assert np.all(result.step("3.4").shown["P"][np.abs(np.arange(walk.S) - T) > w] == 0)
    same("3.8", "residual_1", want["residual_1"][T])
    same("3.9", "ln_1", want["ln_1"][T])
    for label in ("ffn_pre", "gate", "act(ffn_pre)", "ffn_act", "FFN"):
        same("3.10", label, want[label][T])
    if "final" in want:
        same("3.12", "final", want["final"][T])
    same("4.", f"layer {N}", states[N][T])  # the reference's hidden state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["tiny-modernbert", "tiny-nomic-bert"])
def test_rotary_families_show_independent_numbers(name, dtype):
    """Every layer (ModernBERT: global, local, local, global with the final norm), head 1,
    token 12 of a text longer than the window: explain's steps show what NumPy computes
    from the checkpoint and the transformers reference, and every check passes."""
    model = minibert.load(ROOT / "tests" / "data" / name, dtype)
    first = explain(model, TEXT, layer=1, head=1, token=12, pair=PAIR)
    keys = [s.key for s in first.steps]
    assert "3.1b" in keys and ("3.0" in keys) == (name == "tiny-modernbert")
    for N in range(1, model.num_layers + 1):
        result = explain_walk(replace(first.walk, layer=N))
        assert result.ok, [c for c in result.checks if not c.ok]
        assert_rotary_steps(result, name, dtype)


def test_a_wrong_rotation_or_gate_fails(monkeypatch):
    """The checks and the comparisons above can fail: neighbours paired instead of
    halves (the paper's layout, not the checkpoint's) breaks explain's pair-length
    check and the comparison; the gate's halves swapped passes explain's float64
    check (the same formula in float64) but not the comparison."""
    model = minibert.load(ROOT / "tests" / "data" / "tiny-modernbert", "float64")

    def neighbours(x, cos, sin):
        half = x.shape[-1] // 2
        c, s = cos[..., :half], sin[..., :half]
        out = np.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
        return out

    with monkeypatch.context() as m:
        m.setattr(ops, "rotate", neighbours)
        result = explain(model, TEXT, layer=2, head=1, token=12, pair=PAIR)
        assert "each pair keeps its length" in {c.what for c in result.checks if not c.ok}
        with pytest.raises(AssertionError):
            assert_rotary_steps(result, "tiny-modernbert", "float64")
    with monkeypatch.context() as m:
        m.setattr(ops, "glu", lambda pre, gate, act: act(gate) * pre)
        result = explain(model, TEXT, layer=1, head=1, token=12, pair=PAIR)  # the first wrong step: 3.10
        assert result.ok
        with pytest.raises(AssertionError, match="3.10"):
            assert_rotary_steps(result, "tiny-modernbert", "float64")


@pytest.mark.parametrize("name", ["tiny-mpnet", "tiny-deberta-v3"])
def test_relative_positions_show_transformers_numbers(name):
    """MPNet's bucket row and DeBERTa's relative positions and gather indices are
    transformers' integers (tests/reference/relpos/buckets.npz), the attention row
    is the reference's, and c2p + p2c is the bias."""
    from reference_helpers import read_reference

    model = minibert.load(ROOT / "tests" / "data" / name, "float64")
    buckets = read_reference(REFS / "relpos" / "buckets.npz")
    at = {int(r): i for i, r in enumerate(buckets["relative_position"])}
    result = explain(model, TEXT, layer=2, head=2, token=9, pair=PAIR)
    assert result.ok, [c for c in result.checks if not c.ok]
    step, T = result.step("3.2b"), 9
    rows = {line[2:16].strip(): [int(v) for v in line[16:].split()] for line in step.lines
            if isinstance(line, str) and re.fullmatch(r"  \S.{13}(\s+-?\d+)+", line)}  # fmt: skip
    keys = rows.pop("key j")
    if name == "tiny-mpnet":
        assert rows["j - i"] == [k - T for k in keys]
        assert rows["bucket(j - i)"] == [buckets["mpnet"][at[k - T]] for k in keys]
    else:
        K = model.config.relative_span
        delta = [buckets["deberta_16_128"][at[T - k]] for k in keys]  # DeBERTa's delta is i - j
        assert rows["delta(i, j)"] == delta
        assert rows["c"] == [min(max(x + K, 0), 2 * K - 1) for x in delta]
        assert rows["c'"] == rows["c"]  # delta(j, i) = -delta(i, j)
        np.testing.assert_allclose(
            step.shown["c2p"] + step.shown["p2c"], step.shown["bias"], rtol=0, atol=1e-12
        )
    states, maps = reference_row(REFS / "relpos" / f"{name}-float64.npz", result.walk.n)
    np.testing.assert_allclose(
        result.step("3.4").shown["P"][: result.walk.n], maps[1][2, T], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(result.step("4.").shown["layer 2"], states[2][T], rtol=0, atol=1e-11)
