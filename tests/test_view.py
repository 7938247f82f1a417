"""``minibert view`` without a browser: the page is one self-contained file
whose embedded arrays are the trace's, bit for bit (decoded here with the
standard library, not with the page's script); its checks are explain's; the
user's text cannot break out of it; the size budget holds on the real model;
bad arguments end in one line and exit status 2, leaving the user's files as
they were. What a browser draws from it: tests/test_view_browser.py."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, TINY_BERT
from fuzz_helpers import assert_one_line_error, assert_unchanged, fail_fsync, fail_mkstemp, run, snapshot

from minibert import load
from minibert.errors import MinibertError
from minibert.teaching.explain import explain
from minibert.teaching.view import LAYER_ARRAYS, MAX_TOKENS, PAGE_STEP, step_checks, view
from minibert.teaching.view_pack import (
    erf_det,
    exp_det,
    pack,
    predict_act,
    predict_context,
    predict_layer_norm,
    predict_probs,
    predict_product,
    predict_scores,
    unpack,
)

ROOT = Path(__file__).resolve().parent.parent
#: 10 tokens with [CLS] and [SEP]: the text the size budget is stated for.
TEXT10 = "The bank raised interest rates again today."
STEPS = {
    "qkv",
    "multihead",
    "scores",
    "mask",
    "softmax",
    "context",
    "concat",
    "residual_1",
    "ln_1",
    "ffn",
    "residual_2",
    "ln_2",
}


def payload_of(page: str) -> dict:
    """The JSON the page embeds, read back from its script element."""
    m = re.search(r'<script type="application/json" id="minibert-data">(.*?)</script>', page, re.S)
    assert m, "no data element"
    return json.loads(m[1])


def arrays_of(model, payload: dict) -> dict[str, np.ndarray]:
    """The page's arrays, decoded the documented way (base 85 with ``.,:`` for
    ``&<>``, zlib, zigzag uint32 byte planes: view_pack.unpack) and rebuilt:
    each ``name.fix`` plus view_pack's prediction from the arrays before it.
    Integers: the number times 10**digits."""
    out = dict(unpack(payload["common"]))
    parts = [p for p in out if p.startswith("embeddings.") and not p.endswith(".fix")]
    if "embeddings.sum.fix" in out:
        out["embeddings.sum"] = sum(out[p] for p in parts if p != "embeddings.output") + out.pop(
            "embeddings.sum.fix"
        )
    hidden, layers = [out.pop("hidden0")], []
    for i, part in enumerate(payload["layers"]):  # a layer's input is the previous one's ln_2
        layers.append(rebuilt_layer(model, payload, i, unpack(part), layers[-1]["ln_2"] if i else hidden[0],
                                    out.get("bias")))  # fmt: skip
    hidden += [a.get("final_ln", a["ln_2"]) for a in layers]  # pre-LN: the last after the final norm
    for a in layers:
        for name, value in a.items():
            out.setdefault(name, []).append(value)
    for name in list(out):
        if isinstance(out[name], list):  # final_ln: the last layer's only
            out[name] = out[name][0] if name == "final_ln" else np.stack(out[name])
    out["hidden"] = np.stack(hidden)
    return out


def rebuilt_layer(model, payload: dict, i: int, a: dict, X: np.ndarray, mpnet_bias) -> dict:
    """Layer i's arrays: each ``name.fix`` plus its prediction (view_pack's), in the
    order the page rebuilds them; X, the layer's input, rounded."""
    cfg, family = model.config, payload["config"]
    ln, eps = payload["layer_norms"][i], cfg.layer_norm_eps

    def fixed(name, predict):
        return a[name] if name in a else predict() + a.pop(name + ".fix")

    def norm(x, which):
        return predict_layer_norm(x, ln[f"{which}_gamma"], ln[f"{which}_beta"], eps)

    if family["pre_ln"]:
        a["attention_input"] = fixed(
            "attention_input", lambda: X if ln["ln_0_gamma"] is None else norm(X, "ln_0")
        )
    a["scores"] = fixed("scores", lambda: predict_scores(a["q"], a["k"], family["divisor"]))
    bias = mpnet_bias
    if "c2p" in a or "p2c" in a:
        bias = a["bias"] = fixed("bias", lambda: sum(a[n] for n in ("c2p", "p2c") if n in a))
    masked = a["scores"]
    if bias is not None:
        masked = a["masked_scores"] = fixed("masked_scores", lambda: a["scores"] + bias)
    seen = None
    if family["kinds"] and family["kinds"][i] == "sliding_attention":  # |i - j| <= w, written here
        pos = np.arange(a["scores"].shape[-1])
        seen = np.abs(pos[:, None] - pos[None, :]) <= family["window"]
    a["probs"] = fixed("probs", lambda: predict_probs(masked, seen))
    a["context"] = fixed("context", lambda: predict_context(a["probs"], a["v"]))
    a["residual_1"] = fixed("residual_1", lambda: X + a["attention_output"])
    a["ln_1"] = fixed("ln_1", lambda: norm(a["residual_1"], "ln_1"))
    if family["gated"]:
        a["ffn_act"] = fixed("ffn_act", lambda: predict_product(a["ffn_activated"], a["ffn_gate"]))
    else:
        a["ffn_act"] = fixed(
            "ffn_act", lambda: predict_act(a["ffn_pre"], "relu" if cfg.hidden_act == "relu" else "gelu")
        )
    first = a["residual_1"] if family["pre_ln"] else a["ln_1"]
    a["residual_2"] = fixed("residual_2", lambda: first + a["ffn_output"])
    a["ln_2"] = fixed("ln_2", lambda: a["residual_2"] if family["pre_ln"] else norm(a["residual_2"], "ln_2"))
    if "final_ln.fix" in a:
        final = payload["final_norm"]
        a["final_ln"] = fixed(
            "final_ln", lambda: predict_layer_norm(a["ln_2"], final["gamma"], final["beta"], eps)
        )
    return a


def printed(a: np.ndarray, digits: int = 4) -> np.ndarray:
    """The trace as the page prints it: floor(x 10**digits + 0.5), computed here in float64."""
    return np.floor(np.asarray(a, np.float64) * 10**digits + 0.5).astype(np.int64)


#: The families' own arrays the page stores, by their trace names: each layer's where the trace has them.
FAMILY_KEYS = ("q_unrotated", "k_unrotated", "c2p", "p2c", "ffn_gate", "attention_input")


def activated(hidden_act: str, pre: np.ndarray) -> np.ndarray:
    """A gated FFN's act(pre), in float64 here: GELU with math.erf, or SiLU."""
    pre = pre.astype(np.float64)
    if hidden_act == "silu":
        return pre / (1 + np.exp(-pre))
    return np.vectorize(lambda u: 0.5 * u * (1 + math.erf(u / math.sqrt(2))))(pre)


def assert_page_holds_the_trace(model, text: str, page: str, pair: str | None = None) -> dict:
    """Every array the page embeds equals the traced forward pass rounded to the
    printed 4 decimals, exactly (the ReLU counterfactual: a float64 recomputation
    from the weights). ``pair``: the text's second segment."""
    payload = payload_of(page)
    assert payload["digits"] == 4
    got = arrays_of(model, payload)
    enc = model.encode([text], None if pair is None else [pair], trace=True)
    emb, layers = enc.trace["embeddings"], enc.trace["layers"]
    assert payload["tokens"] == enc.tokens[0]
    assert payload["types"] == enc.token_type_ids[0].tolist()
    expected = {
        "embeddings.word": emb["word"][0],
        "embeddings.sum": emb["sum"][0],
        "hidden": np.stack([h[0] for h in enc.hidden_states]),
    }
    for name in ("position", "token_type"):  # absent in some families
        if emb[name] is not None:
            expected[f"embeddings.{name}"] = emb[name][0]
    if "projection" in emb:
        expected["embeddings.output"] = emb["output"][0]
    for key in (
        LAYER_ARRAYS + ("scores", "probs", "residual_1", "ffn_act", "residual_2", "ln_2") + FAMILY_KEYS
    ):
        if key in layers[0]:
            expected[key] = np.stack([t[key][0] for t in layers])
    expected |= family_arrays(model, enc)
    assert payload["mask"] == [float(x) for x in layers[0]["mask"][0, 0, 0]]
    integers = {k for k in got if k.startswith("relative.")}  # checked by test_family_pages
    assert set(got) - integers == set(expected) | {"ffn_relu_output"}
    for name, want in expected.items():
        np.testing.assert_array_equal(got[name], printed(want), err_msg=name)
    w = model.weights
    for i, t in enumerate(layers):
        lw = w.layers[w.layer_map[i]]
        a = np.maximum(t["ffn_pre"][0].astype(np.float64), 0) * (t["ffn_gate"][0] if "ffn_gate" in t else 1)
        relu64 = a @ lw.ffn.W_2.astype(np.float64) + lw.ffn.b_2
        np.testing.assert_array_equal(got["ffn_relu_output"][i], printed(relu64), err_msg=f"layer {i}")
    return payload


def family_arrays(model, enc) -> dict[str, np.ndarray]:
    """The trace's arrays of the families' own steps, as the page stores them: MPNet's bias
    (once: every layer adds the same), DeBERTa's and the masked scores, the angle tables'
    first d/2 columns, act(pre) of a gated FFN, the final norm (the last hidden state)."""
    layers, out = enc.trace["layers"], {}
    first = layers[0]
    if "bias" in first:
        out["masked_scores"] = np.stack([t["masked_scores"][0] for t in layers])
        if "c2p" in first or "p2c" in first:
            out["bias"] = np.stack([t["bias"][0] for t in layers])
        else:
            assert all(t["bias"] is first["bias"] for t in layers)
            out["bias"] = first["bias"][0]
    if "cos" in first:
        half = model.config.head_size // 2
        for name in ("cos", "sin"):
            out[name] = np.stack([t[name][:, :half] for t in layers])
    if "ffn_gate" in first:
        out["ffn_activated"] = np.stack([activated(model.config.hidden_act, t["ffn_pre"][0]) for t in layers])
    if "final_ln" in enc.trace:
        out["final_ln"] = enc.trace["final_ln"][0]
    return out


def test_tiny_page_holds_the_trace(tiny_model):
    assert_page_holds_the_trace(
        tiny_model, "the cat sat on the mat", view(tiny_model, "the cat sat on the mat")
    )


def test_float64_page_holds_float64_numbers(tiny_model64):
    payload = assert_page_holds_the_trace(tiny_model64, "a dog ran", view(tiny_model64, "a dog ran"))
    assert payload["dtype"] == "float64"


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-roberta"])
def test_a_pairs_page_holds_the_pairs_trace(family):
    """view(text, pair=...) is the trace of model.encode([text], [pair]) (type ids 1 in sentence B
    for BERT; RoBERTa's </s></s> between the two), sentence B starting where bertviz starts it: the
    first token of the pair (A is [CLS] A [SEP]); and its checks are explain's of the pair."""
    model = load(DATA / family)
    text, pair = "the cat sat", "on the mat"
    page = view(model, text, pair=pair, layer=2, head=1, token=2)
    payload = assert_page_holds_the_trace(model, text, page, pair)
    enc = model.encode([text], [pair])
    seq = enc.sequence_ids[0]
    b = payload["b_start"]
    assert payload["pair"] == pair and seq[b] == 1 and 1 not in seq[:b] and 0 not in seq[b:]
    assert b == len(model.tokenize([text]).tokens[0]) + (family == "tiny-roberta")  # <s> A </s></s> | B </s>
    if family == "tiny-bert":
        assert payload["types"] == [0] * b + [1] * (len(seq) - b)
    # the same text alone is another page, with no sentence B
    alone = payload_of(view(model, text))
    assert alone["pair"] is None and alone["b_start"] is None and len(alone["tokens"]) < len(seq)
    for i, shown in enumerate(payload["checks"]["layers"], 1):
        ours = explain(model, text, layer=i, head=1, token=2, pad=0, pair=pair).checks
        assert [c["what"] for c in shown] == [c.what for c in ours][2:]  # the embeddings' two come first
        assert [c["error"] for c in shown] == [c.error for c in ours][2:]
        assert all(c["ok"] for c in shown)
    assert view(model, [text], pair=[pair], layer=2, head=1, token=2) == page


def test_explain_takes_a_pair(tiny_model):
    """explain's walk is of the pair's tokens, and its header names the pair."""
    result = explain(tiny_model, "the cat", pair="a dog", pad=1)
    assert result.walk.batch.tokens[0] == tiny_model.tokenize(["the cat"], ["a dog"]).tokens[0]
    assert result.ok and "pair: 'a dog'" in result.text
    assert result.walk.batch.token_type_ids[0].tolist()[-3:] == [1, 1, 0]  # B's last two, then [PAD]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (42, "pair: the pair to view must be a str"),
        (["a", "b"], "pair: view shows one pair"),
        ("  ", "pair: the second text is empty"),
    ],
)
def test_a_bad_pair(tiny_model, pair, message):
    with pytest.raises(MinibertError, match=message):
        view(tiny_model, "the cat", pair=pair)


@pytest.mark.parametrize("family", ["tiny-distilbert", "tiny-electra", "tiny-albert", "tiny-roberta"])
def test_other_families(family):
    """No token-type table (DistilBERT), an E -> H projection (ELECTRA, ALBERT),
    one shared layer (ALBERT), positions from pad + 1 (RoBERTa)."""
    model = load(DATA / family)
    payload = assert_page_holds_the_trace(model, "the cat sat", view(model, "the cat sat"))
    arrays = payload["common"]["arrays"]
    assert ("embeddings.token_type" in arrays) == (family != "tiny-distilbert")
    assert ("embeddings.output" in arrays) == (family in ("tiny-electra", "tiny-albert"))
    if family == "tiny-roberta":
        assert payload["positions"][0] == model.config.pad_token_id + 1


#: A text of many short words: 128 tokens with [CLS] and [SEP] on all-MiniLM-L6-v2 (checked below).
WORDS = (
    "When the committee finally met on Tuesday nobody could agree whether the old bridge over the river "
    "should be repaired replaced by a new one or simply closed to traffic because the report was late "
).split()


def _text_of(model, n: int) -> str:
    """The longest prefix of WORDS (repeated) with at most n tokens."""
    words = WORDS * 4
    best = ""
    for k in range(1, len(words)):
        text = " ".join(words[:k])
        if model.tokenize([text]).num_tokens[0] > n:
            return best
        best = text
    return best


def test_real_page_size_budget_and_trace(real_model):
    """<= 0.08 MB a token on all-MiniLM-L6-v2 (measured: 0.069 at 55 tokens, 0.068 at 127; it was
    0.2 when every float32 was stored), and <= 1 MB for 10 tokens (measured 0.92: the script and
    the errata are the same for every page); every array the trace's, rounded as printed."""
    assert MAX_TOKENS >= 128
    page = view(real_model, TEXT10)
    payload = assert_page_holds_the_trace(real_model, TEXT10, page)
    assert len(payload["tokens"]) == 10
    assert len(page.encode("utf-8")) <= 1_000_000
    for n in (56, MAX_TOKENS):
        text = _text_of(real_model, n)
        page = view(real_model, text)
        S = len(payload_of(page)["tokens"])
        assert n - 3 <= S <= n
        size = len(page.encode("utf-8"))
        assert size / S <= 80_000, f"{size} bytes for {S} tokens: {size / S / 1e6:.3f} MB a token"
    assert_page_holds_the_trace(real_model, text, page)


def test_exp_and_erf_of_the_predictions():
    """The page's own exp and erf (only + - * / floor: the same double in NumPy and in the
    browser) against the standard library's."""
    import math

    x = np.linspace(-79, 0, 20001)
    # observed 9e-15: x - k ln 2 carries the rounding of ln 2 times k (up to 116)
    np.testing.assert_allclose(exp_det(x), np.exp(x), rtol=2e-14, atol=0)
    assert (
        exp_det(np.array([-1000.0]))[0]
        == exp_det(np.array([-80.0]))[0]
        == pytest.approx(math.exp(-80), rel=2e-14)
    )
    z = np.linspace(-6, 6, 20001)
    assert np.abs(erf_det(z) - np.array([math.erf(v) for v in z])).max() <= 1.5e-7


def test_pack_round_trip():
    """Any int32 value of either sign, zigzag and byte planes and base 85 and back."""
    rng = np.random.default_rng(0)
    arrays = {
        "small": rng.integers(-3, 4, size=(5, 7)),
        "wide": rng.integers(-(2**31) + 1, 2**31 - 1, size=(3, 11)),
        "edge": np.array([0, -1, 1, 2**31 - 1, -(2**31) + 1, -(2**31)]),
        "empty": np.zeros((0, 4), np.int64),
    }
    back = unpack(pack(arrays))
    assert set(back) == set(arrays)
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a, err_msg=name)
        assert back[name].shape == a.shape


@pytest.mark.parametrize(
    ("text", "named"),
    [(None, "NoneType"), (42, "int"), (["a", "b"], "list of 2"), ([], "list of 0"), ([3], "list of 1 (int)")],
)
def test_text_of_the_wrong_type(tiny_model, text, named):
    with pytest.raises(MinibertError, match="text") as e:
        view(tiny_model, text)
    assert named in str(e.value) and "empty" not in str(e.value)


def test_a_list_of_one_text(tiny_model):
    assert view(tiny_model, ["the cat sat"]) == view(tiny_model, "the cat sat")
    assert view(tiny_model, ("the cat sat",)) == view(tiny_model, "the cat sat")


def test_checks_are_explains_each_with_its_step(real_model):
    """The page carries explain's checks unchanged, layer by layer; every one
    belongs to a step of the page, and every step of a layer has a check."""
    page = view(real_model, "The cat sat.", layer=2, head=5, token="cat")
    payload = payload_of(page)
    assert payload["initial"] == {"layer": 2, "head": 5, "token": 2}
    layers = payload["checks"]["layers"]
    assert len(layers) == real_model.num_layers
    for i, shown in enumerate(layers, 1):
        ours = explain(real_model, "The cat sat.", layer=i, head=5, token=2, pad=0).checks
        emb = [c for c in ours if c.what.startswith(("sum = word", "e = LayerNorm"))]
        rest = [c for c in ours if c not in emb]
        assert [(c["what"], c["error"], c["tol"], c["ok"]) for c in shown] == [
            (c.what, c.error, c.tol, c.ok) for c in rest
        ]
        assert {c["step"] for c in shown} == STEPS, f"layer {i}"
        assert all(c["ok"] for c in shown)
        if i == 1:
            assert [c["what"] for c in payload["checks"]["embeddings"]] == [c.what for c in emb]
            assert {c["step"] for c in payload["checks"]["embeddings"]} == {"embeddings"}


def test_every_check_of_explain_has_a_step_on_the_page(tiny_model):
    """Every step of explain with checks is mapped to a page step by its number; a step the
    page does not know (e.g. one explain adds tomorrow) is kept as "other", never dropped."""
    from minibert.teaching.explain import Check, Explanation, Step, explain

    walk = explain(tiny_model, "the cat sat", 1, 0, 1, pad=0)
    numbers = {s.title.split(" ", 1)[0] for s in walk.steps if s.checks}
    assert numbers <= set(PAGE_STEP), numbers - set(PAGE_STEP)
    found = step_checks(walk)
    assert [c for _, c in found] == walk.checks
    assert dict((c.what, s) for s, c in found)["ffn_pre = ln_1 W_1 + b_1, float64"] == "ffn"
    extra = Step("3.13 something explain checks tomorrow", lines=(Check("x", 0.0, 1.0),))
    assert step_checks(Explanation((*walk.steps, extra), "float32", 1e-4))[-1][0] == "other"


def test_page_is_self_contained(tiny_model):
    page = view(tiny_model, "the cat sat")
    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page  # the Content-Security-Policy: no request of any kind
    for external in ("<link", " src=", "@import", "url(", "fetch(", "XMLHttpRequest", "WebSocket"):
        assert external not in page, external
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {
        "http://www.w3.org/2000/svg"
    }  # a namespace, not a request
    assert (
        page.count("<script") == 3 and page.count("</script>") == 3
    )  # the data, the header fold, the script


def test_the_text_cannot_break_out_of_the_page(tiny_model):
    text = '</script><script>alert("x")</script>&<b>{{DATA}}/*{{JS}}*/'
    page = view(tiny_model, text)
    assert page.count("</script>") == 3
    assert "<b>" not in page and 'alert("x")' not in page.split('id="minibert-data">')[0]
    payload = payload_of(page)
    assert payload["text"] == text


def test_jupyter_shows_the_page_in_an_iframe(tiny_model):
    page = view(tiny_model, "the cat sat")
    shown = page._repr_html_()
    m = re.fullmatch(r'<iframe srcdoc="([^"]*)" style="[^"]*"></iframe>', shown, re.S)
    assert m, shown[:200]
    assert html.unescape(m[1]) == page


def test_cli_writes_the_page(tmp_path, tiny_model):
    out = tmp_path / "cat.html"
    code, stdout, err = run(
        "view", "--model", TINY_BERT, "the cat sat", "-o", out, "--layer", "-1", "--token", "c"
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout
    page = out.read_text(encoding="utf-8")
    assert payload_of(page)["initial"] == {"layer": 2, "head": 0, "token": 2}
    assert page == view(tiny_model, "the cat sat", layer=-1, token="c")
    assert [p.name for p in tmp_path.iterdir()] == ["cat.html"]  # no temporary file left
    code, _, err = run("view", "--model", TINY_BERT, "the cat sat", "--pair", "a dog", "-o", out)
    assert code == 0, err
    assert out.read_text(encoding="utf-8") == view(tiny_model, "the cat sat", pair="a dog")


LONG = " ".join(["the"] * (MAX_TOKENS - 1))  # + [CLS] and [SEP]: one token too many


BAD = {
    "empty text": (["", "-o", "{d}/o.html"], ["empty"]),
    "blank text": (["  \t ", "-o", "{d}/o.html"], ["empty"]),
    "layer 0": (["cat", "-o", "{d}/o.html", "--layer", "0"], ["--layer 0", "1..2"]),
    "layer past the last": (["cat", "-o", "{d}/o.html", "--layer", "3"], ["--layer 3"]),
    "layer before the first": (["cat", "-o", "{d}/o.html", "--layer", "-3"], ["--layer -3"]),
    "layer not a number": (["cat", "-o", "{d}/o.html", "--layer", "two"], ["--layer", "two"]),
    "head past the last": (["cat", "-o", "{d}/o.html", "--head", "4"], ["--head 4", "0..3"]),
    "head negative": (["cat", "-o", "{d}/o.html", "--head", "-1"], ["--head -1"]),
    "token past the last": (["the the", "-o", "{d}/o.html", "--token", "4"], ["--token 4", "0..3"]),
    "token not in the text": (
        ["the the", "-o", "{d}/o.html", "--token", "dog"],
        ["--token 'dog'", "[CLS] the the [SEP]"],
    ),
    "too many tokens": ([LONG, "-o", "{d}/o.html"], [f"{MAX_TOKENS + 1} tokens", f"at most {MAX_TOKENS}"]),
    "too many tokens with the pair": (
        [" ".join(["the"] * (MAX_TOKENS - 4)), "--pair", "the the", "-o", "{d}/o.html"],
        ["the text and its pair", f"{MAX_TOKENS + 1} tokens"],
    ),
    "empty pair": (["cat", "--pair", " ", "-o", "{d}/o.html"], ["--pair", "empty"]),
    "not HTML": (["cat", "-o", "{d}/o.png"], ["o.png", ".html"]),
    "no extension": (["cat", "-o", "{d}/o"], [".html"]),
    "missing directory": (["cat", "-o", "{d}/nowhere/o.html"], ["nowhere", "does not exist"]),
    "no output": (["cat"], ["-o/--output"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_arguments(tmp_path, case):
    args, names = BAD[case]
    (tmp_path / "keep.txt").write_text("the user's file", encoding="utf-8")
    before = snapshot(tmp_path)
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    assert_one_line_error(run("view", "--model", TINY_BERT, *args), *names)
    assert_unchanged(before, tmp_path)


def test_output_that_is_a_directory(tmp_path):
    (tmp_path / "page.html").mkdir()
    before = snapshot(tmp_path)
    result = run("view", "--model", TINY_BERT, "cat", "-o", tmp_path / "page.html")
    assert_one_line_error(result, "page.html", "is a directory")
    assert_unchanged(before, tmp_path)
    assert (tmp_path / "page.html").is_dir()


def test_text_that_is_not_utf8(tmp_path):
    result = run("view", "--model", TINY_BERT, "caf\udce9", "-o", tmp_path / "o.html")
    assert_one_line_error(result, "not valid UTF-8", "0xe9")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fail", [fail_fsync, fail_mkstemp], ids=["disk-full", "read-only"])
def test_write_errors_keep_the_earlier_page(tmp_path, monkeypatch, fail):
    out = tmp_path / "o.html"
    out.write_text("the user's earlier page", encoding="utf-8")
    before = snapshot(tmp_path)
    reason = fail(monkeypatch)
    assert_one_line_error(run("view", "--model", TINY_BERT, "cat", "-o", out), "o.html", reason)
    monkeypatch.undo()
    assert_unchanged(before, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["o.html"]


#: The arrays a family's page adds to BERT's (besides the relative-position integer tables).
OWN = {
    "tiny-modernbert": {"q_unrotated", "k_unrotated", "cos", "sin", "ffn_gate", "ffn_activated",
                        "attention_input", "final_ln"},
    "tiny-nomic-bert": {"q_unrotated", "k_unrotated", "cos", "sin", "ffn_gate", "ffn_activated"},
    "tiny-mpnet": {"bias", "masked_scores"},
    "tiny-deberta-v3": {"c2p", "p2c", "bias", "masked_scores"},
    "tiny-deberta-c2p": {"c2p", "bias", "masked_scores"},
}  # fmt: skip
#: transformers' bucket integers (tests/reference/relpos/buckets.npz) of each family's setting
BUCKETS = {"tiny-mpnet": "mpnet", "tiny-deberta-v3": "deberta_16_128", "tiny-deberta-c2p": "deberta_8_24"}


@pytest.mark.parametrize(
    ("family", "dtype"), [(f, "float32") for f in OWN] + [("tiny-modernbert", "float64")]
)
def test_family_pages(family, dtype):
    """ModernBERT (pre-LN, rotary with two bases, window, GeGLU, final norm), NomicBERT
    (rotary, SwiGLU), MPNet (bucket bias), DeBERTa (c2p and p2c): every array the page
    stores is the trace's, rounded as printed, the family's own included; its bucket and
    gather tables are transformers' integers; every check is explain's, under a step of
    the page (none left to "other checks")."""
    from reference_helpers import read_reference

    model = load(DATA / family, dtype)
    text, pair = "How old are you?", "I am six years old."  # longer than ModernBERT's window
    payload = assert_page_holds_the_trace(model, text, view(model, text, pair=pair, layer=2, head=1), pair)
    got = arrays_of(model, payload)
    assert OWN[family] <= set(got)
    config, S = payload["config"], len(payload["tokens"])
    rotary = family in ("tiny-modernbert", "tiny-nomic-bert")
    assert config["pre_ln"] == (family == "tiny-modernbert") and config["gated"] == rotary
    if config["rotary"]:
        kinds = model.config.layer_types
        assert [r["theta"] for r in config["rotary"]] == [
            model.config.local_rope_theta if k == "sliding_attention" else model.config.global_rope_theta
            for k in kinds
        ]
        d = model.config.head_size
        for r in config["rotary"]:
            np.testing.assert_allclose(r["freq"], r["theta"] ** (-np.arange(0, d, 2) / d), rtol=1e-15)
    if family in BUCKETS:
        ref = read_reference(ROOT / "tests" / "reference" / "relpos" / "buckets.npz")
        at = {int(r): n for n, r in enumerate(ref["relative_position"])}
        i, j = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
        if family == "tiny-mpnet":
            np.testing.assert_array_equal(
                got["relative.bucket"], np.vectorize(lambda r: ref["mpnet"][at[r]])(j - i)
            )
        else:
            delta = np.vectorize(lambda r: ref[BUCKETS[family]][at[r]])(i - j)  # DeBERTa's delta is i - j
            K = config["span"]
            np.testing.assert_array_equal(got["relative.delta"], delta)
            np.testing.assert_array_equal(got["relative.c"], np.clip(delta + K, 0, 2 * K - 1))
            np.testing.assert_array_equal(got["relative.c_prime"], np.clip(-delta + K, 0, 2 * K - 1))
    for n, shown in enumerate(payload["checks"]["layers"], 1):
        ours = explain(model, text, layer=n, head=1, token=payload["initial"]["token"], pad=0, pair=pair)
        assert [c["what"] for c in shown] == [c.what for c in ours.checks][2:]  # the embeddings' come first
        assert all(c["ok"] for c in shown) and "other" not in {c["step"] for c in shown}
