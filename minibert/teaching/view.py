"""``minibert view``: one self-contained HTML page of a real forward pass.

People learn the Transformer from pictures (bertviz's head, model and neuron
views, exBERT, Transformer Explainer); none of them shows every formula of a
real BERT with its actual numbers and a check that those numbers are right.
This page does, for one text: the tokens and embeddings, attention drawn the
bertviz way, each formula of a chosen layer, head and token with its shapes,
its numbers and the float64 recomputation error that :mod:`minibert.teaching.explain`
measures, per-layer plots, and the article's errata where it departs.

The data flows one way::

    text -> explain(pad=0): Model.forward(trace=True), once -> its Walk (the Encoding)
    Walk at layer 1..L -> explain_walk -> each layer's steps and checks
    Encoding + checks -> build_payload (the ONLY reader of both) -> JSON-able dict
    payload -> render -> HTML: minibert/teaching/view_assets/ (template, CSS, JS) + the JSON

The page is one file: no server, no CDN, no third-party script; a
Content-Security-Policy forbids any request. It stores the trace's arrays at
the precision it prints them (4 decimals, as integers), the predictable ones
as small corrections, one compressed part per encoder layer that the browser
inflates (with its built-in DecompressionStream) the first time it shows that
layer: :mod:`minibert.teaching.view_pack`. What it prints about the arrays
(norms, cosines, LayerNorm statistics, the ReLU counterfactual) is computed
here, in float64 from the trace, and explain's checks too;
tests/test_view_browser.py compares every number on the page with the trace
read in Python.

The page shows the real tokens only (explain's ``pad=0``): the mask step
shows M = 0 for every key and says what padding would get
(``minibert explain --pad`` shows it at work).

The other families' own steps come from the same trace and are drawn as
explain numbers them: MPNet's bucket bias and DeBERTa's c2p and p2c with
their gather positions (3.2b), the rotation of q and k with its angle table
(3.1b), the sliding window (3.3), a gated FFN (3.10) and ModernBERT's pre-LN
order (3.0, 3.9, the final norm in 3.12).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from minibert.encoder import ops
from minibert.errors import MinibertError
from minibert.model import Encoding, Model, position_ids
from minibert.teaching.explain import Check, Explanation, explain, explain_walk
from minibert.teaching.view_pack import (
    DIGITS,
    pack,
    predict_act,
    predict_context,
    predict_layer_norm,
    predict_probs,
    predict_product,
    predict_scores,
    quantize,
)

#: Texts longer than this (special tokens included) are refused: the page holds
#: every number of every token (about 0.07 MB a token on all-MiniLM-L6-v2; the
#: scores and weights grow with S) and its head view draws S x S lines per head.
MAX_TOKENS = 128
EXTENSIONS = (".html", ".htm")
ASSETS = "view_assets"

#: explain's steps (by their key, the number their title starts with) -> the step of the
#: page that shows them and their checks, one page step per explain step, so
#: that both number the steps alike (the page takes its numbers from here). A
#: check of any other step is shown under "other checks", never dropped.
PAGE_STEP = {
    "2.": "embeddings",
    "3.0": "attention_norm",
    "3.1": "qkv",
    "3.1b": "rotary",
    "3.2": "scores",
    "3.2b": "bias",
    "3.3": "mask",
    "3.4": "softmax",
    "3.5": "context",
    "3.6": "concat",
    "3.7": "multihead",
    "3.8": "residual_1",
    "3.9": "ln_1",
    "3.10": "ffn",
    "3.11": "residual_2",
    "3.12": "ln_2",
}

#: The trace's per-layer arrays the page stores as they are (rounded to the
#: printed precision); PREDICTED ones are stored as a correction to what the
#: page computes from the others (see minibert/teaching/view_pack.py).
LAYER_ARRAYS = (
    "q", "k", "v", "context", "attention_output", "ln_1", "ffn_pre", "ffn_output",
)  # fmt: skip
#: The families' own per-layer arrays, stored as they are where the trace has them:
#: q and k before their rotation, DeBERTa's position terms, a gated FFN's gate.
FAMILY_ARRAYS = ("q_unrotated", "k_unrotated", "c2p", "p2c", "ffn_gate")


class Page(str):
    """The HTML of a view. A str (write it to a file as is); Jupyter displays
    it inline, in an iframe so that its script and styles stay apart from the
    notebook's."""

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self, quote=True)}" '
            'style="width: 100%; height: 900px; border: 1px solid #ccc"></iframe>'
        )


def step_number(step) -> str:
    """An explain step's number, its key (``"3.4"``, ``"2."``)."""
    return step.key


def step_checks(explanation: Explanation) -> list[tuple[str, Check]]:
    """Every check of an explanation with the page step it belongs to (see PAGE_STEP)."""
    return [(PAGE_STEP.get(step_number(step), "other"), c) for step in explanation.steps for c in step.checks]


def step_numbers(explanation: Explanation) -> dict[str, str]:
    """Page step -> explain's number for it ("3.7"): the page's step titles use these."""
    return {PAGE_STEP[step_number(s)]: step_number(s).rstrip(".") for s in explanation.steps
            if step_number(s) in PAGE_STEP}  # fmt: skip


def _number(x: float) -> float | str:
    """JSON has no NaN or infinity: a check that produced one says so as text."""
    return float(x) if math.isfinite(x) else str(x)


def _with_fix(stored: dict, name: str, truth: np.ndarray, prediction: np.ndarray | None) -> None:
    """Store ``truth`` (integers) as ``name.fix`` = truth - prediction, or as
    itself when there is no prediction."""
    if prediction is None:
        stored[name] = truth
    else:
        stored[name + ".fix"] = truth - prediction


def _layer_part(model: Model, i: int, t, x: np.ndarray, hidden: np.ndarray, relu_output: np.ndarray) -> dict:
    """Encoder layer ``i``'s arrays at the printed precision, the predictable
    ones as corrections (view_pack's table); ``x`` is the layer's input and
    ``hidden`` its output, hidden_states[i + 1], both rounded (S, H). The
    families' own arrays are stored as they are: q and k before their rotation,
    the angle table's cos and sin (S, d/2), c2p and p2c, the FFN's gate and act(pre)."""
    cfg, eps = model.config, model.config.layer_norm_eps
    pre_ln = t.attention_input is not None
    norms = layer_norms(model, model.weights.layer_map[i], pre_ln)
    stored = {key: quantize(t[key][0], key) for key in LAYER_ARRAYS + FAMILY_ARRAYS if key in t}
    if "cos" in t:  # the angle table: cos and sin of the d/2 angles, at every position
        stored |= {n: quantize(t[n][:, : cfg.head_size // 2], n) for n in ("cos", "sin")}
    if pre_ln:  # what the attention reads: LayerNorm_1(X), or X itself (ModernBERT's first layer)
        ln = norms["ln_0"]
        prediction = x if ln is None else predict_layer_norm(x, ln.gamma, ln.beta, eps)
        _with_fix(stored, "attention_input", quantize(t["attention_input"][0], "attention_input"), prediction)
    bias = quantize(t["bias"][0], "bias") if cfg.family == "mpnet" else None  # the same in every layer
    _attention_part(stored, t, score_divisor(cfg), bias)
    _after_attention(stored, t, x, hidden, norms, cfg.hidden_act, eps)
    if i == len(model.weights.layer_map) - 1 and model.weights.final_ln is not None:  # pre-LN's final norm
        final = model.weights.final_ln
        ln_2 = quantize(t["ln_2"][0], "ln_2")
        _with_fix(stored, "final_ln", hidden, predict_layer_norm(ln_2, final.gamma, final.beta, eps))
    stored["ffn_relu_output"] = quantize(relu_output, "ffn_relu_output")
    return pack(stored)


def _attention_part(stored: dict, t, divisor: float, bias: np.ndarray | None) -> None:
    """scores, the position bias (DeBERTa: c2p + p2c) and the masked scores, P and the
    heads' outputs, as corrections; ``bias``: MPNet's, rounded (h, S, S), else None.
    A sliding-window layer's P is predicted over the keys its traced mask lets in."""
    scores = quantize(t["scores"][0], "scores")  # (h, S, S)
    _with_fix(stored, "scores", scores, predict_scores(stored["q"], stored["k"], divisor))
    terms = [stored[n] for n in ("c2p", "p2c") if n in stored]
    if terms:  # DeBERTa: B = c2p + p2c
        bias = quantize(t["bias"][0], "bias")
        _with_fix(stored, "bias", bias, sum(terms))
    masked = scores
    if bias is not None:
        masked = quantize(t["masked_scores"][0], "masked_scores")
        _with_fix(stored, "masked_scores", masked, scores + bias)
    mask = t["mask"][0, 0]  # (1, S), or (S, S) on a sliding-window layer
    seen = mask == 0 if mask.shape[0] > 1 else None
    probs = quantize(t["probs"][0], "probs")
    _with_fix(stored, "probs", probs, predict_probs(masked, seen))
    _with_fix(stored, "context", stored.pop("context"), predict_context(probs, stored["v"]))


def _after_attention(
    stored: dict, t, x: np.ndarray, hidden: np.ndarray, norms: dict, act: str, eps: float
) -> None:
    """The residual sums, the LayerNorms and the FFN's activation, as corrections.
    Pre-LN (``"ln_0"`` in ``norms``): residual_2 = residual_1 + FFN and the layer's
    output is residual_2 itself; post-LN: residual_2 = ln_1 + FFN and the output
    (hidden) is LayerNorm(residual_2)."""
    r1 = quantize(t["residual_1"][0], "residual_1")
    _with_fix(stored, "residual_1", r1, x + stored["attention_output"])
    ln_1, ln = stored.pop("ln_1"), norms["ln_1"]
    _with_fix(stored, "ln_1", ln_1, predict_layer_norm(r1, ln.gamma, ln.beta, eps))
    truth = quantize(t["ffn_act"][0], "ffn_act")
    if "ffn_gate" in stored:  # gated: act(pre), then times the gate
        stored["ffn_activated"] = quantize(
            ops.ACTIVATIONS[act](t["ffn_pre"][0].astype(np.float64)), "ffn_activated"
        )
        _with_fix(stored, "ffn_act", truth, predict_product(stored["ffn_activated"], stored["ffn_gate"]))
    else:
        _with_fix(
            stored, "ffn_act", truth, predict_act(stored["ffn_pre"], "relu" if act == "relu" else "gelu")
        )
    r2 = quantize(t["residual_2"][0], "residual_2")
    pre_ln = "ln_0" in norms
    _with_fix(stored, "residual_2", r2, (r1 if pre_ln else ln_1) + stored["ffn_output"])
    if pre_ln:  # no LayerNorm after the sum
        _with_fix(stored, "ln_2", quantize(t["ln_2"][0], "ln_2"), r2)
    else:
        _with_fix(
            stored, "ln_2", hidden, predict_layer_norm(r2, norms["ln_2"].gamma, norms["ln_2"].beta, eps)
        )


def layer_norms(model: Model, k: int, pre_ln: bool) -> dict:
    """The LayerNorms (:class:`~minibert.encoder.params.LayerNormWeights`) that make
    stored layer k's traced arrays: ``ln_1`` and ``ln_2`` the trace's ln_1 and ln_2;
    pre-LN (ModernBERT), ``ln_0`` the attention's (None: the identity), ``ln_1`` the
    FFN's and ``ln_2`` None (no norm after the sum)."""
    w = model.weights.layers[k]
    return {"ln_0": w.ln_1, "ln_1": w.ln_2, "ln_2": None} if pre_ln else {"ln_1": w.ln_1, "ln_2": w.ln_2}


def score_divisor(cfg) -> float:
    """What the scores are divided by: sqrt(d), or DeBERTa's float32 sqrt(d (1 + #terms))."""
    if cfg.family == "deberta-v2":
        return float(ops.disentangled_scale(cfg.head_size, 1 + len(cfg.pos_att_type)))
    return math.sqrt(cfg.head_size)


def _layer_norms(model: Model, pre_ln: bool) -> list[dict]:
    """Each encoder layer's LayerNorm weights, as the page predicts with them
    (float64 from the model's dtype: JSON keeps every double exactly); a norm
    the layer does not have is None."""

    def numbers(ln, name):
        return None if ln is None else getattr(ln, name).astype(np.float64).tolist()

    return [
        {f"{role}_{name}": numbers(ln, name) for role, ln in layer_norms(model, k, pre_ln).items()
         for name in ("gamma", "beta")}
        for k in model.weights.layer_map
    ]  # fmt: skip


def _final_norm(model: Model) -> dict | None:
    """The LayerNorm after the last layer (pre-LN, ModernBERT), as the page predicts with it."""
    ln = model.weights.final_ln
    return (
        None
        if ln is None
        else {name: getattr(ln, name).astype(np.float64).tolist() for name in ("gamma", "beta")}
    )


def _common_part(model: Model, enc: Encoding) -> tuple[dict, np.ndarray]:
    """The arrays every layer shares: the embeddings, every hidden state, and the
    relative positions (MPNet's bias and buckets, DeBERTa's relative positions and
    gather positions: integers, not scaled)."""
    emb = enc.trace["embeddings"]
    stored = {"embeddings.word": quantize(emb["word"][0], "word")}
    for name in ("position", "token_type"):  # DeBERTa-v3, ModernBERT, NomicBERT: no position table
        if emb[name] is not None:
            stored[f"embeddings.{name}"] = quantize(emb[name][0], name)
    parts = sum(stored[k] for k in list(stored))
    _with_fix(stored, "embeddings.sum", quantize(emb["sum"][0], "sum"), parts)
    if "projection" in emb:  # ELECTRA, ALBERT: hidden_states[0] is the projection of this
        stored["embeddings.output"] = quantize(emb["output"][0], "output")
    # hidden_states[1..L] are each layer's ln_2, stored with the layer
    hidden = quantize(np.stack([hs[0] for hs in enc.hidden_states]), "hidden_states")  # (L+1, S, H)
    stored["hidden0"] = hidden[0]
    stored |= _relative_part(model, enc)
    return pack(stored), hidden


def _relative_part(model: Model, enc: Encoding) -> dict[str, np.ndarray]:
    """MPNet: its bias B (h, S, S), rounded, the same in every layer, and the bucket of
    every (query, key); DeBERTa: the relative position delta(i, j) and the gather
    positions c and c' (S, S) of :func:`ops.gather_index`."""
    cfg, S = model.config, enc.input_ids.shape[1]
    first = enc.trace["layers"][0]
    if cfg.family == "mpnet":
        pos = np.arange(S)
        return {"bias": quantize(first["bias"][0], "bias"),
                "relative.bucket": ops.relative_position_bucket(pos[None, :] - pos[:, None])}  # fmt: skip
    if "c2p" not in first and "p2c" not in first:
        return {}
    delta = ops.relative_position_index(S, cfg.position_buckets, cfg.max_relative)  # (S, S)
    c, c_prime = ops.gather_index(delta, cfg.relative_span)
    return {"relative.delta": delta, "relative.c": c, "relative.c_prime": c_prime}


def _cosines(a: np.ndarray) -> np.ndarray:
    """Cosine between every two rows: (S, H) -> (S, S)."""
    unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    return unit @ unit.T


def _rounded(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), DIGITS).tolist()


def statistics(enc: Encoding, relu: list[np.ndarray]) -> dict:
    """What the page prints about the arrays, computed here in float64 from
    the trace and rounded as printed: per hidden state, each token's norm, its
    cosine to the previous layer and its three nearest tokens; per layer, the
    LayerNorms' mean and variance, the activation's minimum, the ReLU
    counterfactual's cosine and largest difference, each head's sum of P."""
    hs = np.stack([h[0] for h in enc.hidden_states]).astype(np.float64)  # (L+1, S, H)
    layers = enc.trace["layers"]
    cos = np.stack([_cosines(h) for h in hs])  # (L+1, S, S)
    S = hs.shape[1]
    np.einsum("lii->li", cos)[...] = -np.inf  # not a token's own neighbour
    near = np.argsort(-cos, axis=-1, kind="stable")[..., : min(3, S - 1)]  # (L+1, S, 3)
    f64 = [{k: t[k][0].astype(np.float64) for k in ("residual_1", "residual_2", "ffn_output", "ffn_act")}
           for t in layers]  # fmt: skip
    pre_ln = {}
    if (
        layers[0].attention_input is not None
    ):  # pre-LN: the statistics of each layer's input, its first norm's
        pre_ln = {"mean_input": hs[:-1].mean(-1), "variance_input": hs[:-1].var(-1)}  # (L, S) each
    per_layer = {
        "mean_residual_1": [t["residual_1"].mean(-1) for t in f64],
        "variance_residual_1": [t["residual_1"].var(-1) for t in f64],
        "mean_residual_2": [t["residual_2"].mean(-1) for t in f64],
        "variance_residual_2": [t["residual_2"].var(-1) for t in f64],
        "min_ffn_act": [t["ffn_act"].min(-1) for t in f64],
        "cosine": [np.einsum("sh,sh->s", t["ffn_output"], r) / np.linalg.norm(t["ffn_output"], axis=-1)
                   / np.linalg.norm(r, axis=-1) for t, r in zip(f64, relu, strict=True)],
        "maxdiff": [np.abs(t["ffn_output"] - r).max(-1) for t, r in zip(f64, relu, strict=True)],
        "sum_probs": [t["probs"][0].astype(np.float64).sum(-1) for t in layers],  # (h, S)
    }  # fmt: skip
    return {
        **{k: _rounded(v) for k, v in pre_ln.items()},
        "norm": _rounded(np.linalg.norm(hs, axis=-1)),  # (L+1, S)
        "cos_prev": _rounded(
            np.einsum("lsh,lsh->ls", hs[1:], hs[:-1])
            / np.linalg.norm(hs[1:], axis=-1)
            / np.linalg.norm(hs[:-1], axis=-1)
        ),  # fmt: skip
        "nearest": near.tolist(),
        "nearest_cos": _rounded(np.take_along_axis(cos, near, axis=-1)),
        **{k: _rounded(np.stack(v)) for k, v in per_layer.items()},
    }


def _preview(enc: Encoding) -> dict:
    """Every layer's and head's probabilities in 16 levels (p * 15, rounded), for
    the model view's thumbnails only: (L, h, S, S)."""
    probs = np.stack([t["probs"][0] for t in enc.trace["layers"]]).astype(np.float64)
    return pack({"preview": np.floor(probs * 15 + 0.5).astype(np.int64)})


def build_payload(model: Model, enc: Encoding, explanations: list[Explanation], initial: dict) -> dict:
    """Everything the page shows, as a JSON-able dict, from the traced
    Encoding of one text and explain's walk of each layer 1..L.

    The ONLY function that reads the trace (by the dict-style keys of
    :class:`minibert.encoder.trace.Trace`) and explain's checks, so a change of
    either is made here alone.
    """
    cfg = model.config
    emb, layers = enc.trace["embeddings"], enc.trace["layers"]
    # The article's FFN: ReLU instead of GELU on the same pre-activations, with the layer's own W_2, b_2
    # (a gated FFN: ReLU(pre) times the same gate).
    relu = []
    for k, t in zip(model.weights.layer_map, layers, strict=True):
        w = model.weights.layers[k]
        a = np.maximum(t["ffn_pre"][0].astype(np.float64), 0)
        if "ffn_gate" in t:
            a = a * t["ffn_gate"][0]
        relu.append(a @ w.ffn.W_2.astype(np.float64) + w.ffn.b_2)  # (S, I) -> (S, H)
    common, hidden = _common_part(model, enc)
    parts = [_layer_part(model, i, t, hidden[i], hidden[i + 1], relu[i]) for i, t in enumerate(layers)]

    def as_dict(step: str, c: Check) -> dict:
        return {"step": step, "what": c.what, "error": _number(c.error), "tol": c.tol, "ok": c.ok}

    per_layer = [step_checks(e) for e in explanations]
    mask = layers[0]["mask"][0, 0, 0]  # (1, 1, 1, S) -> (S,), the same M in every layer
    return {
        "model": model.path.name,
        "dtype": str(model.dtype),
        "digits": DIGITS,
        "config": {
            "L": len(layers),
            "H": cfg.hidden_size,
            "h": cfg.num_attention_heads,
            "d": cfg.head_size,
            "I": cfg.intermediate_size,
            "E": int(emb["word"].shape[-1]),
            "act": cfg.hidden_act,
            "eps": cfg.layer_norm_eps,
            **_family_config(model, enc),
        },
        "text": enc.texts[0],
        "pair": enc.text_pairs[0] if enc.text_pairs is not None else None,
        # sentence B's first token (bertviz's sentence_b_start: [CLS] A [SEP] are A's), None without a pair
        "b_start": next((s for s, seq in enumerate(enc.sequence_ids[0]) if seq == 1), None),
        "tokens": enc.tokens[0],
        "ids": enc.input_ids[0].tolist(),
        "types": enc.token_type_ids[0].tolist(),
        "positions": position_ids(cfg, enc.input_ids, enc.attention_mask)[0].tolist(),
        "mask": [_number(x) for x in mask.astype(np.float64)],
        "initial": initial,
        "numbers": step_numbers(explanations[0]),
        # every layer's explain repeats the embedding checks: they are taken from layer 1's
        "checks": {
            "embeddings": [as_dict(s, c) for s, c in per_layer[0] if s == "embeddings"],
            "layers": [[as_dict(s, c) for s, c in found if s != "embeddings"] for found in per_layer],
        },
        "stats": statistics(enc, relu),
        "preview": _preview(enc),
        "layer_norms": _layer_norms(model, layers[0].attention_input is not None),
        "final_norm": _final_norm(model),
        "common": common,
        "layers": parts,
    }


def _family_config(model: Model, enc: Encoding) -> dict:
    """What the page needs to know of the family: its name, the score divisor,
    pre-LN or post-LN, a gated FFN; the rotary layers' kind, base and frequencies
    (:func:`ops.rotary_frequencies`) and the window's half width; DeBERTa's span
    and terms."""
    cfg, first = model.config, enc.trace["layers"][0]
    out = {
        "family": cfg.family,
        "divisor": score_divisor(cfg),
        "pre_ln": first.attention_input is not None,
        "gated": "ffn_gate" in first,
        "kinds": list(cfg.layer_types) or None,
        "window": cfg.local_attention // 2 if "sliding_attention" in cfg.layer_types else None,
        "rotary": None,
    }
    if "cos" in first:
        thetas = [
            cfg.local_rope_theta if k == "sliding_attention" else cfg.global_rope_theta
            for k in cfg.layer_types
        ]
        freq = {
            theta: ops.rotary_frequencies(cfg.head_size, theta, np.float64).tolist() for theta in set(thetas)
        }
        out["rotary"] = [{"theta": theta, "freq": freq[theta]} for theta in thetas]
    if cfg.family == "deberta-v2":
        out |= {"span": cfg.relative_span, "terms": list(cfg.pos_att_type)}
    return out


def _article_items() -> list[dict]:
    """The article's worked example (section 4.3), every number recomputed by
    :func:`minibert.teaching.article.check_article`, for the page's errata."""
    from minibert.teaching.article import check_article, format_value

    return [
        {"quantity": i.quantity, "article": format_value(i.article), "correct": format_value(i.correct),
         "agree": i.agree, "note": i.note}
        for i in check_article()
    ]  # fmt: skip


def render(payload: dict) -> Page:
    """The page: the template with the CSS, the script and the payload as JSON
    put in. ``<``, ``>`` and ``&`` in the JSON are escaped (valid JSON), so no
    text of the user's can close the script element."""
    assets = resources.files("minibert.teaching") / ASSETS
    template = (assets / "page.html").read_text(encoding="utf-8")
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    pair = "" if payload.get("pair") is None else f" / {payload['pair']}"
    title = html.escape(f"minibert view: {payload['text']}{pair}"[:200])
    values = {
        "{{TITLE}}": title,
        "/*{{CSS}}*/": (assets / "view.css").read_text(encoding="utf-8"),
        "/*{{JS}}*/": (assets / "view.js").read_text(encoding="utf-8"),
        "{{DATA}}": data,
    }
    # one pass over the template: what is put in (the user's text too) is never searched for marks
    page = re.sub("|".join(map(re.escape, values)), lambda m: values[m[0]], template)
    return Page(page)


def _one_text(text, name: str = "text") -> str:
    """The text to view (or its pair, ``name``): a str, or a list (or tuple)
    of one str, as encode takes texts."""
    what = "text" if name == "text" else "pair"
    if isinstance(text, (list, tuple)):
        if len(text) != 1 or not isinstance(text[0], str):
            kinds = ", ".join(sorted({type(x).__name__ for x in text})) or "nothing"
            raise MinibertError(
                f"{name}: view shows one {what}: give a str or a list of one str, "
                f"not a {type(text).__name__} of {len(text)} ({kinds})"
            )
        return text[0]
    if not isinstance(text, str):
        raise MinibertError(
            f"{name}: the {what} to view must be a str (or a list of one str), not {type(text).__name__}"
        )
    return text


def view(
    model: Model,
    text: str | list[str],
    layer: int = 1,
    head: int = 0,
    token: int | str | None = None,
    *,
    pair: str | list[str] | None = None,
    prefix: str = "",
) -> Page:
    """The page of ``text`` through ``model``, opened at encoder layer
    ``layer`` (1..L, or negative from the end), head ``head`` (0..h-1) and
    token ``token`` (an index into the text's tokens or a token string;
    default the first token after [CLS]); the page lets the reader choose
    others. ``pair``: a second text (sentence B, a str or a list of one
    str), encoded with the text as ``model.encode([text], [pair])`` does;
    the head and model views then filter the attention between the two
    sentences as bertviz does (all, A->A, A->B, B->A, B->B). ``prefix``
    goes before argument names in messages (the command line passes
    ``"--"``). Returns the HTML (:class:`Page`: a str, shown inline by
    Jupyter).
    """
    text = _one_text(text)
    if not text.strip():
        raise MinibertError("the text to view is empty")
    if pair is not None:
        pair = _one_text(pair, f"{prefix}pair")
    n = model.tokenize([text], None if pair is None else [pair]).num_tokens[0]
    if n > MAX_TOKENS:
        what = "the text" if pair is None else "the text and its pair"
        raise MinibertError(
            f"{what} has {n} tokens; a page shows every number of every token, at most {MAX_TOKENS} "
            "(shorten the text)"
        )
    # one traced forward pass; explain's steps of every layer read it
    first = explain(model, text, layer, head, token, pad=0, pair=pair, prefix=prefix).walk
    layers = range(1, model.num_layers + 1)
    walks = [explain_walk(replace(first, layer=i)) for i in layers]
    initial = {"layer": first.layer, "head": first.head, "token": first.T}
    payload = build_payload(model, first.enc, walks, initial)
    payload["article"] = _article_items()
    return render(payload)


def check_page_path(path: str | Path) -> Path:
    """An .html (or .htm) path, not a directory, where a file can be written
    (:func:`minibert.files.check_target`)."""
    from minibert.files import check_target

    path = Path(path)
    if path.suffix.lower() not in EXTENSIONS:
        raise MinibertError(f"{path}: the page is HTML: give a file name ending in .html")
    if os.path.isdir(path):
        raise MinibertError(f"{path}: is a directory; give a file name ending in .html")
    return check_target(path)
