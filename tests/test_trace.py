"""``encode(..., trace=True)``: every intermediate of the forward pass.

Two kinds of check:
- against transformers: ``tests/reference/trace.npz`` holds the same
  intermediates captured with forward hooks on transformers' BertModel
  (``tests/reference/generate_trace.py``); compared at real token rows;
- internal identities, recomputed here independently in float64 (residual =
  sum of its parts, probabilities sum to 1, padded keys get weight 0, GELU
  with ``math.erf``, LayerNorm statistics, ln_2 of layer i = hidden_states[i+1]).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

TRACE_REF = Path(__file__).resolve().parent / "reference" / "trace.npz"
LAYER_NAMES = (
    "q k v scores mask masked_scores probs context concat attention_output residual_1 ln_1 "
    "ffn_pre ffn_act ffn_output residual_2 ln_2"
).split()
EMBEDDING_NAMES = ("word", "position", "token_type", "sum", "output")

# float32 minibert vs float32 transformers, real token rows. Observed max abs
# difference (numpy 2.4, torch 2.13, 2 threads): embeddings parts 0 (lookups),
# sum 1.5e-8, embedding output 4.8e-7, q/k/v <= 4.8e-6, probs 1.3e-6,
# ffn_pre 4.8e-6, every other intermediate <= 3.5e-6. Tolerance: 1e-4, the
# project's float32 bound for hidden states.
ATOL32 = 1e-4


@pytest.fixture(scope="module")
def reference():
    with np.load(TRACE_REF, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def traced(real_model, reference):
    texts = json.loads(str(reference["provenance"]))["texts"]
    return real_model.encode(texts, trace=True, output_attentions=True)


def test_reference_file_is_small_and_has_provenance(reference):
    assert TRACE_REF.stat().st_size < 1_000_000
    prov = json.loads(str(reference["provenance"]))
    for key in ("model_sha256", "texts", "torch", "transformers", "attn_implementation"):
        assert key in prov, key
    assert prov["attn_implementation"] == "eager"
    assert (reference["attention_mask"] == 0).any(), "the reference batch must contain padding"


def test_trace_has_every_name(traced, real_model):
    assert set(traced.trace) == {"embeddings", "layers"}
    assert set(traced.trace["embeddings"]) == set(EMBEDDING_NAMES)
    assert len(traced.trace["layers"]) == real_model.config.num_hidden_layers
    B, S = traced.input_ids.shape
    cfg = real_model.config
    h, d = cfg.num_attention_heads, cfg.head_size
    for i, layer in enumerate(traced.trace["layers"]):
        assert set(layer) == set(LAYER_NAMES), i
        for name in ("q", "k", "v", "context"):
            assert layer[name].shape == (B, h, S, d), (i, name)
        for name in ("scores", "masked_scores", "probs"):
            assert layer[name].shape == (B, h, S, S), (i, name)
        assert layer["mask"].shape == (B, 1, 1, S)
        assert layer["ffn_pre"].shape == layer["ffn_act"].shape == (B, S, cfg.intermediate_size)
        for name in ("concat", "attention_output", "residual_1", "ln_1", "ffn_output", "residual_2", "ln_2"):
            assert layer[name].shape == (B, S, cfg.hidden_size), (i, name)


def test_token_ids_match_reference(traced, reference):
    assert_array_equal(traced.input_ids, reference["input_ids"])
    assert_array_equal(traced.attention_mask, reference["attention_mask"])
    assert_array_equal(traced.token_type_ids, reference["token_type_ids"])


def _ours(traced, key: str) -> np.ndarray:
    """The minibert intermediate that the reference array ``key`` holds, (B, S, X) or (B, h, S, S)."""
    from minibert.encoder.ops import merge_heads

    part, *rest = key.split("/")
    if part == "embeddings":
        return traced.trace["embeddings"][rest[0]]
    value = traced.trace["layers"][int(rest[0])][rest[1]]
    if rest[1] in ("q", "k", "v"):
        value = merge_heads(value)  # transformers hooks see the projection before the head split
    return value


def test_trace_matches_transformers(traced, reference):
    rows = reference["rows"]
    b, s = rows[:, 0], rows[:, 1]
    keys = [k for k in reference if "/" in k]
    assert len(keys) == 5 + 13 * len(traced.trace["layers"])
    worst = {}
    for key in keys:
        ref = reference[key]
        ours = _ours(traced, key)
        if key.endswith("/probs"):
            ours, ref = ours[b, :, s, :], ref[b, :, s, :]  # real query rows, every key
        else:
            ours = ours[b, s]  # (B, S, X) -> (N, X)
            if ours.shape[-1] != ref.shape[-1]:  # the reference keeps a subset of columns
                cols = "cols_I" if key.endswith(("/ffn_pre", "/ffn_act")) else "cols_H"
                ours = ours[:, reference[cols]]
        worst[key] = float(np.max(np.abs(ours - ref)))
        assert_allclose(ours, ref, rtol=0, atol=ATOL32, err_msg=key)
    assert max(worst.values()) > 0, "suspicious: bit-identical to transformers everywhere"


def test_trace_against_transformers_in_float64(real_model64, reference):
    """minibert in float64 against the float32 reference: the gap is the
    reference's own float32 rounding (observed <= 4.9e-6)."""
    texts = json.loads(str(reference["provenance"]))["texts"]
    enc = real_model64.encode(texts, trace=True)
    rows = reference["rows"]
    b, s = rows[:, 0], rows[:, 1]
    for i in range(len(enc.trace["layers"])):
        key = f"layers/{i}/ln_2"
        assert_allclose(_ours(enc, key)[b, s], reference[key], rtol=0, atol=ATOL32, err_msg=key)
    assert enc.trace["layers"][0]["q"].dtype == np.float64


# ---------------------------------------------------------------- identities


def _layer_norm64(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return gamma.astype(np.float64) * (x - mu) / np.sqrt(var + eps) + beta.astype(np.float64)


@pytest.mark.parametrize("which", ["real_model", "tiny_model", "tiny_model64"])
def test_identities(request, which):
    """Each traced value is what its formula says, recomputed in float64 from
    the traced inputs. Tolerances cover float32 rounding of the traced values;
    observed max errors: scores 3.8e-6, probs 1.7e-7 (row sums 2.4e-7),
    context 3.0e-7, W^O 1.2e-6, LayerNorm outputs 3.6e-6 (mean 2.3e-8,
    variance 3.7e-7 off), GELU 1.8e-7, embedding LayerNorm 1.1e-6 (real model,
    float32). A batch with padding, so the mask is exercised."""
    real_model = request.getfixturevalue(which)
    traced = real_model.encode(["The cat sat on the mat.", "Attention is all you need!", "Hello"], trace=True)
    mask = traced.attention_mask.astype(bool)
    assert not mask.all()
    tr = traced.trace
    hs = traced.hidden_states
    e = tr["embeddings"]
    assert_array_equal(e["sum"], e["word"] + e["position"] + e["token_type"])
    assert_array_equal(e["output"], hs[0])
    cfg = real_model.config
    eps = cfg.layer_norm_eps
    emb = real_model.weights.embeddings
    assert_allclose(e["output"], _layer_norm64(e["sum"], emb.ln.gamma, emb.ln.beta, eps), atol=1e-5)
    for i, (t, lw) in enumerate(zip(tr["layers"], real_model.weights.layers, strict=True)):
        x = hs[i]
        q, k, v = (t[n].astype(np.float64) for n in "qkv")
        d = q.shape[-1]
        scores = np.einsum("bhsd,bhtd->bhst", q, k) / math.sqrt(d)
        assert_allclose(t["scores"], scores, rtol=1e-5, atol=1e-5, err_msg=f"layer {i} scores")
        assert_array_equal(t["masked_scores"], t["scores"] + t["mask"])
        probs = t["probs"]
        # probabilities: rows of real queries sum to 1, padded keys get weight exactly 0
        row_sums = probs.sum(-1)[mask[:, None, :].repeat(probs.shape[1], 1)]
        assert_allclose(row_sums, 1.0, rtol=0, atol=1e-6, err_msg=f"layer {i} row sums")
        pad_b, pad_s = np.nonzero(~mask)
        assert np.all(probs[pad_b, :, :, pad_s] == 0), f"layer {i}: a padded key got weight"
        # softmax recomputed in float64 from the masked scores (real keys only)
        ms = t["masked_scores"].astype(np.float64)
        ms = np.where(mask[:, None, None, :], ms, -np.inf)
        p64 = np.exp(ms - ms.max(-1, keepdims=True))
        p64 /= p64.sum(-1, keepdims=True)
        assert_allclose(probs, p64, rtol=0, atol=1e-6, err_msg=f"layer {i} softmax")
        ctx = np.einsum("bhst,bhtd->bhsd", probs.astype(np.float64), v)
        assert_allclose(t["context"], ctx, rtol=0, atol=1e-5, err_msg=f"layer {i} context")
        # concat: head j of position s occupies columns j*d:(j+1)*d
        for j in range(q.shape[1]):
            assert_array_equal(t["concat"][:, :, j * d : (j + 1) * d], t["context"][:, j])
        W_o, b_o = lw.attention.W_o.astype(np.float64), lw.attention.b_o.astype(np.float64)
        assert_allclose(t["attention_output"], t["concat"] @ W_o + b_o, atol=1e-5, err_msg=f"layer {i} W^O")
        # residuals are the sum of their parts, bit for bit
        assert_array_equal(t["residual_1"], x + t["attention_output"])
        assert_array_equal(t["residual_2"], t["ln_1"] + t["ffn_output"])
        # LayerNorm: before gamma/beta, mean 0 and variance 1 over the hidden axis
        for name, res, g, bt in (
            ("ln_1", t["residual_1"], lw.ln_1.gamma, lw.ln_1.beta),
            ("ln_2", t["residual_2"], lw.ln_2.gamma, lw.ln_2.beta),
        ):
            assert_allclose(t[name], _layer_norm64(res, g, bt, eps), rtol=0, atol=1e-5, err_msg=f"{i} {name}")
            z = (t[name].astype(np.float64) - bt) / g
            assert_allclose(z.mean(-1), 0, atol=1e-5, err_msg=f"layer {i} {name} mean")
            assert_allclose(z.var(-1), 1, atol=1e-4, err_msg=f"layer {i} {name} variance")
        # GELU, exact erf form, one scalar at a time with the standard library
        pre = t["ffn_pre"][mask][:, :64].astype(np.float64)
        gelu = np.vectorize(lambda u: 0.5 * u * (1 + math.erf(u / math.sqrt(2))))(pre)
        assert_allclose(t["ffn_act"][mask][:, :64], gelu, rtol=0, atol=1e-6, err_msg=f"layer {i} GELU")
        assert_array_equal(t["ln_2"], hs[i + 1])


def test_trace_does_not_change_the_result(real_model, traced, monkeypatch):
    monkeypatch.setattr(real_model, "impl", "plain")  # a trace runs the plain formulas: compare with them
    plain = real_model.encode(["The cat sat on the mat.", "Attention is all you need!", "Hello"])
    for a, b in zip(plain.hidden_states, traced.hidden_states, strict=True):
        assert_array_equal(a, b)


@pytest.mark.parametrize("which", ["real_model", "tiny_model"])
def test_no_trace_by_default(request, which):
    model = request.getfixturevalue(which)
    enc = model.encode(["Hello world", "Hi"])
    assert enc.trace is None
    assert enc.attentions is None
    enc = model.encode(["Hello world"], trace=False)
    assert enc.trace is None


# --------------------------------------------------------------------------- the records


def test_typed_fields_are_the_primary_names_and_the_flat_ones_read_them(tiny_model):
    """Every flat name of the trace's first (dict) form reads the very array of a
    typed field: no copy, the same object; hidden_states[i + 1] is layer i's ln_2."""
    from minibert.encoder.trace import EmbeddingTrace, LayerTrace, Trace

    enc = tiny_model.encode(["The cat sat on the mat.", "Hello"], trace=True)
    trace = enc.trace
    assert isinstance(trace, Trace) and trace["layers"] is trace.layers
    assert isinstance(trace.embeddings, EmbeddingTrace) and trace["embeddings"] is trace.embeddings
    typed = {
        "q": "attention.q", "k": "attention.k", "v": "attention.v", "scores": "attention.scores",
        "mask": "attention.mask", "masked_scores": "attention.masked_scores", "probs": "attention.probs",
        "context": "attention.context", "concat": "attention.concat", "attention_output": "attention.output",
        "residual_1": "residual_1", "ln_1": "ln_1", "ffn_pre": "ffn.pre", "ffn_act": "ffn.act",
        "ffn_output": "ffn.output", "residual_2": "residual_2", "ln_2": "ln_2",
    }  # fmt: skip
    assert set(typed) == set(LAYER_NAMES)
    for i, layer in enumerate(trace.layers):
        assert isinstance(layer, LayerTrace) and list(layer) == LAYER_NAMES and len(layer) == len(LAYER_NAMES)
        for flat, path in typed.items():
            value = layer
            for part in path.split("."):
                value = getattr(value, part)
            assert isinstance(value, np.ndarray) and layer[flat] is value, (i, flat)
        assert layer.output is layer.ln_2 is enc.hidden_states[i + 1]
    assert trace.embeddings.hidden_state is trace.embeddings.output is enc.hidden_states[0]
    with pytest.raises(KeyError):
        trace.layers[0]["W_q"]  # a weight, not an intermediate


@pytest.mark.parametrize("family", ["tiny-electra", "tiny-distilbert"])
def test_optional_embedding_parts(family):
    """ELECTRA projects its embeddings (``"projection" in``, and hidden_states[0] is
    the projection); DistilBERT has no token types (``token_type`` None)."""
    import minibert

    model = minibert.load(Path(__file__).resolve().parent / "data" / family)
    e = model.encode(["hello world"], trace=True).trace.embeddings
    if family == "tiny-electra":
        assert "projection" in e and e["projection"] is e.projection is e.hidden_state
        assert e.output.shape[-1] == model.config.embedding_size != e.projection.shape[-1]
    else:
        assert "projection" not in e and set(e) == set(EMBEDDING_NAMES) and e["token_type"] is None
        with pytest.raises(KeyError):
            e["projection"]


@pytest.mark.parametrize("family", ["tiny-modernbert", "tiny-nomic-bert", "tiny-mpnet", "tiny-deberta-v3"])
def test_the_families_own_intermediates(family):
    """The rotary families record q and k before their rotation, the rotary tables and
    the FFN's gate; ModernBERT also the attention's pre-LN input and the final norm;
    MPNet and DeBERTa their position bias (and c2p, p2c). Each is a key only where the
    family has it, and holds what NumPy recomputes here in float64: the halves of q
    turned by p theta^(-2i/d), act(pre) * gate."""
    import minibert

    model = minibert.load(Path(__file__).resolve().parent / "data" / family, "float64")
    enc = model.encode(["How old are you? I am six years old.", "hello"], trace=True)
    trace, cfg = enc.trace, model.config
    rotary, modern = family in ("tiny-modernbert", "tiny-nomic-bert"), family == "tiny-modernbert"
    assert ("final_ln" in trace) == modern
    for i, layer in enumerate(trace.layers):
        names = set(layer)
        assert (
            {"q_unrotated", "k_unrotated", "cos", "sin", "ffn_gate"} <= names
            if rotary
            else "cos" not in names
        )
        assert ("attention_input" in names) == modern and ("bias" in names) == (not rotary)
        assert ("c2p" in names) == ("p2c" in names) == (family == "tiny-deberta-v3")
        if not rotary:
            continue
        theta = cfg.local_rope_theta if cfg.layer_types[i] == "sliding_attention" else cfg.global_rope_theta
        S, d = layer["q"].shape[-2:]
        angle = np.arange(S)[:, None] * theta ** (-np.arange(0, d, 2) / d)  # (S, d/2)
        c, s = np.cos(angle), np.sin(angle)
        for name in ("q", "k"):
            x = layer[f"{name}_unrotated"]
            x1, x2 = x[..., : d // 2], x[..., d // 2 :]
            assert_allclose(
                layer[name], np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1), rtol=0, atol=1e-13
            )
        pre = layer["ffn_pre"]
        act = (
            np.vectorize(lambda u: 0.5 * u * (1 + math.erf(u / math.sqrt(2))))(pre)
            if modern
            else pre / (1 + np.exp(-pre))
        )
        assert_allclose(layer["ffn_act"], act * layer["ffn_gate"], rtol=0, atol=1e-13)
    if modern:
        assert trace["final_ln"] is enc.hidden_states[-1]
        assert_array_equal(trace.layers[0]["attention_input"], enc.hidden_states[0])  # layer 0: no norm
        assert trace.layers[-1]["ln_2"] is not enc.hidden_states[-1]
