"""Each formula of minibert.encoder.ops against an independent float64 computation
(explicit Python loops over scalars, math.erf, math.tanh), and its invariants
as hypothesis property tests.

The loop references below never call numpy's vectorised maths: each one is
the formula written out element by element, so a wrong axis, a transposed
weight or a missing scale in ops.py cannot hide in a shared helper.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose, assert_array_equal

from minibert.encoder import ops
from minibert.encoder.params import (
    AttentionWeights,
    EmbeddingWeights,
    FeedForwardWeights,
    LayerNormWeights,
    LayerWeights,
    RelativePositions,
)

B, S, H, h, I, V, P, T = 2, 5, 8, 2, 12, 11, 7, 2
d = H // h
# Loops in float64 vs NumPy in float64: observed <= 1.0e-15 for every formula, a whole encoder
# layer included. 1e-12 leaves room for summation order, not for a wrong formula.
ATOL64 = 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- loop references


def ref_softmax_row(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def ref_linear(x, W, b):
    """x (..., n_in) as nested lists via ndindex; W (n_in, n_out)."""
    out = np.zeros(x.shape[:-1] + (W.shape[1],))
    for idx in np.ndindex(*x.shape[:-1]):
        for o in range(W.shape[1]):
            out[idx + (o,)] = sum(float(x[idx + (i,)]) * float(W[i, o]) for i in range(W.shape[0])) + b[o]
    return out


def ref_layer_norm(x, gamma, beta, eps):
    out = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape[:-1]):
        row = [float(v) for v in x[idx]]
        mu = sum(row) / len(row)
        var = sum((v - mu) ** 2 for v in row) / len(row)
        for j, v in enumerate(row):
            out[idx + (j,)] = gamma[j] * (v - mu) / math.sqrt(var + eps) + beta[j]
    return out


def ref_attention(q, k, v, mask01):
    """Per batch, head, query: scores over real keys only (padded keys skipped
    entirely, which is what the additive mask must amount to)."""
    Bq, hq, Sq, dq = q.shape
    ctx = np.zeros(q.shape)
    probs = np.zeros((Bq, hq, Sq, Sq))
    for b in range(Bq):
        keys = [j for j in range(Sq) if mask01[b, j]]
        for hh in range(hq):
            for i in range(Sq):
                scores = [
                    sum(q[b, hh, i, t] * k[b, hh, j, t] for t in range(dq)) / math.sqrt(dq) for j in keys
                ]
                p = ref_softmax_row(scores)
                for j, pj in zip(keys, p, strict=True):
                    probs[b, hh, i, j] = pj
                for t in range(dq):
                    ctx[b, hh, i, t] = sum(pj * v[b, hh, j, t] for j, pj in zip(keys, p, strict=True))
    return ctx, probs


def ref_mha(x, w, mask01, num_heads):
    """Head i uses column block i of W_q, W_k, W_v; heads concatenated, then W_o."""
    q, k, v = (ref_linear(x, w[f"W_{n}"], w[f"b_{n}"]) for n in "qkv")
    dh = x.shape[-1] // num_heads
    split = lambda a: np.stack([a[:, :, i * dh : (i + 1) * dh] for i in range(num_heads)], axis=1)  # noqa: E731
    ctx, probs = ref_attention(split(q), split(k), split(v), mask01)
    concat = np.concatenate([ctx[:, i] for i in range(num_heads)], axis=-1)
    return ref_linear(concat, w["W_o"], w["b_o"]), probs


def ref_gelu(x):
    return np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x.astype(np.float64))


def ref_gelu_tanh(x):
    c = math.sqrt(2 / math.pi)
    return np.vectorize(lambda v: 0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v**3))))(x.astype(np.float64))


def layer_weights(rng, dtype=np.float64):
    shapes = {"W_q": (H, H), "W_k": (H, H), "W_v": (H, H), "W_o": (H, H), "W_1": (H, I), "W_2": (I, H)}
    w = {k: rng.normal(0, 0.4, s) for k, s in shapes.items()}
    w |= {f"b_{n}": rng.normal(0, 0.1, H) for n in "qkvo2"} | {"b_1": rng.normal(0, 0.1, I)}
    w |= {f"ln{n}_gamma": 1 + rng.normal(0, 0.1, H) for n in "12"}
    w |= {f"ln{n}_beta": rng.normal(0, 0.1, H) for n in "12"}
    return {k: v.astype(dtype) for k, v in w.items()}


def record(w: dict) -> LayerWeights:
    """The dict of :func:`layer_weights` as the record the formulas read."""
    attention = AttentionWeights(*(w[n] for n in ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")), d)
    ffn = FeedForwardWeights(w["W_1"], w["b_1"], w["W_2"], w["b_2"])
    ln_1, ln_2 = (LayerNormWeights(w[f"ln{n}_gamma"], w[f"ln{n}_beta"]) for n in "12")
    return LayerWeights(attention, ln_1, ffn, ln_2)


MASK01 = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # text 1 is padded after 3 tokens


# ---------------------------------------------------------------- formulas vs loops


def test_softmax_vs_loops(rng):
    x = rng.normal(0, 3, (3, 4, 6))
    got = ops.softmax(x, axis=-1)
    for idx in np.ndindex(3, 4):
        assert_allclose(got[idx], ref_softmax_row(list(x[idx])), rtol=0, atol=ATOL64)
    got0 = ops.softmax(x, axis=0)
    for i, j in np.ndindex(4, 6):
        assert_allclose(got0[:, i, j], ref_softmax_row(list(x[:, i, j])), rtol=0, atol=ATOL64)


def test_softmax_large_inputs_do_not_overflow():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]])
    got = ops.softmax(x)
    assert np.all(np.isfinite(got))
    assert_allclose(got[0], ref_softmax_row([0.0, 1.0, 2.0]), rtol=0, atol=ATOL64)
    assert_array_equal(got[1], [0.0, 0.0, 1.0])


def test_linear_vs_loops(rng):
    x, W, b = rng.normal(size=(B, S, H)), rng.normal(size=(H, I)), rng.normal(size=I)
    assert_allclose(ops.linear(x, W, b), ref_linear(x, W, b), rtol=0, atol=ATOL64)


def test_additive_mask():
    for dtype in (np.float32, np.float64):
        m = ops.additive_mask(MASK01, dtype)
        assert m.shape == (B, 1, 1, S) and m.dtype == dtype
        assert np.all(m[MASK01[:, None, None, :] == 1] == 0)
        assert np.all(m[MASK01[:, None, None, :] == 0] == np.finfo(dtype).min)


def test_scaled_dot_product_attention_vs_loops(rng):
    q, k, v = (rng.normal(0, 1.5, (B, h, S, d)) for _ in range(3))
    mask = ops.additive_mask(MASK01, np.float64)
    a = ops.scaled_dot_product_attention(q, k, v, mask)
    want_ctx, want_probs = ref_attention(q, k, v, MASK01)
    assert_allclose(a.probs, want_probs, rtol=0, atol=ATOL64)
    assert_allclose(a.context, want_ctx, rtol=0, atol=ATOL64)
    for b, hh, i, j in np.ndindex(B, h, S, S):  # its intermediates: the scores, then the mask added
        score = sum(float(q[b, hh, i, t]) * float(k[b, hh, j, t]) for t in range(d)) / math.sqrt(d)
        assert abs(a.scores[b, hh, i, j] - score) <= ATOL64
    assert a.mask is mask and a.q is None and a.output is None  # inputs and later steps are not its own
    assert_array_equal(a.masked_scores, a.scores + mask)
    nomask = ops.scaled_dot_product_attention(q, k, v, None)
    assert_allclose(nomask.context, ref_attention(q, k, v, np.ones((B, S), int))[0], rtol=0, atol=ATOL64)


def test_split_and_merge_heads_vs_loops(rng):
    x = rng.normal(size=(B, S, H))
    split = ops.split_heads(x, h)
    assert split.shape == (B, h, S, d)
    for b, hh, s, t in np.ndindex(B, h, S, d):
        assert split[b, hh, s, t] == x[b, s, hh * d + t]
    assert_array_equal(ops.merge_heads(split), x)


def test_multi_head_attention_vs_loops(rng):
    w = layer_weights(rng)
    x = rng.normal(size=(B, S, H))
    mask = ops.additive_mask(MASK01, np.float64)
    want_out, want_probs = ref_mha(x, w, MASK01, h)
    lean = ops.multi_head_attention(x, record(w).attention, mask, h)
    full = ops.multi_head_attention(x, record(w).attention, mask, h, trace=True)
    for a in (lean, full):
        assert a.probs.shape == (B, h, S, S)
        assert_allclose(a.probs, want_probs, rtol=0, atol=ATOL64)
        assert_allclose(a.output, want_out, rtol=0, atol=ATOL64)
    # without a trace only what the layer reads on is kept: the (B, h, S, S) scores are freed
    kept = {f.name for f in fields(lean) if getattr(lean, f.name) is not None}
    assert kept == {"probs", "output"}, kept
    # the relative-position and rotary families' terms: None for BERT
    relative = {"bias", "c2p", "p2c", "q_unrotated", "k_unrotated", "cos", "sin"}
    assert all(getattr(full, f.name) is not None for f in fields(full) if f.name not in relative)
    assert all(getattr(full, name) is None for name in relative)
    q = ref_linear(x, w["W_q"], w["b_q"])
    for hh in range(h):  # head hh is column block hh of X W_q + b_q
        assert_allclose(full.q[:, hh], q[:, :, hh * d : (hh + 1) * d], rtol=0, atol=ATOL64)
    assert_array_equal(full.concat[:, :, d : 2 * d], full.context[:, 1])


def test_activations_vs_math():
    x = np.linspace(-6, 6, 97)
    assert_allclose(ops.gelu(x), ref_gelu(x), rtol=0, atol=ATOL64)
    assert_allclose(ops.gelu_tanh(x), ref_gelu_tanh(x), rtol=0, atol=ATOL64)
    assert_array_equal(ops.relu(x), np.vectorize(lambda v: max(v, 0.0))(x))
    # exact GELU and its tanh approximation differ (up to ~5e-4 here): the config must pick one
    assert 1e-4 < np.abs(ops.gelu(x) - ops.gelu_tanh(x)).max() < 1e-3
    assert ops.ACTIVATIONS["gelu"] is ops.gelu and ops.ACTIVATIONS["relu"] is ops.relu
    assert ops.ACTIVATIONS["gelu_new"] is ops.ACTIVATIONS["gelu_pytorch_tanh"] is ops.gelu_tanh


def test_feed_forward_vs_loops(rng):
    w = layer_weights(rng)
    x = rng.normal(size=(B, S, H))
    for act, ref_act in ((ops.gelu, ref_gelu), (ops.relu, lambda a: np.maximum(a, 0))):
        pre = ref_linear(x, w["W_1"], w["b_1"])
        want = ref_linear(ref_act(pre), w["W_2"], w["b_2"])
        assert_allclose(ops.feed_forward(x, record(w).ffn, act).output, want, rtol=0, atol=ATOL64)
        traced = ops.feed_forward(x, record(w).ffn, act, trace=True)
        assert_allclose(traced.pre, pre, rtol=0, atol=ATOL64)
        assert_allclose(traced.act, ref_act(pre), rtol=0, atol=ATOL64)
        assert_array_equal(traced.output, ops.feed_forward(x, record(w).ffn, act).output)


def test_layer_norm_vs_loops(rng):
    x = rng.normal(3, 2, (B, S, H))
    gamma, beta = 1 + rng.normal(0, 0.1, H), rng.normal(0, 0.1, H)
    for eps in (1e-12, 1e-5, 0.5):
        assert_allclose(
            ops.layer_norm(x, gamma, beta, eps), ref_layer_norm(x, gamma, beta, eps), rtol=0, atol=ATOL64
        )


def test_embed_vs_loops(rng):
    word, position, token_type = rng.normal(size=(V, H)), rng.normal(size=(P, H)), rng.normal(size=(T, H))
    gamma, beta = 1 + rng.normal(0, 0.1, H), rng.normal(0, 0.1, H)
    ids = rng.integers(0, V, (B, S))
    pos = np.broadcast_to(np.arange(S), (B, S))
    types = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    want = np.zeros((B, S, H))
    for b, s in np.ndindex(B, S):
        want[b, s] = [word[ids[b, s], j] + position[s, j] + token_type[types[b, s], j] for j in range(H)]
    want = ref_layer_norm(want, gamma, beta, 1e-12)
    w = EmbeddingWeights(word, position, token_type, LayerNormWeights(gamma, beta))
    got = ops.embed(ids, pos, types, w, 1e-12)
    assert_allclose(got.output, want, rtol=0, atol=ATOL64)
    assert got.hidden_state is got.output and got.word is None  # no trace: the output alone
    traced = ops.embed(ids, pos, types, w, 1e-12, trace=True)
    assert_array_equal(traced.sum, traced.word + traced.position + traced.token_type)
    assert traced.projection is None and "projection" not in traced
    # ELECTRA / ALBERT: the embeddings (size E) projected to H
    W_proj, b_proj = rng.normal(size=(H, 3)), rng.normal(size=3)
    projected = ops.embed(ids, pos, types, EmbeddingWeights(word, position, token_type, w.ln, W_proj, b_proj),
                          1e-12, trace=True)  # fmt: skip
    assert_allclose(projected.hidden_state, ref_linear(want, W_proj, b_proj), rtol=0, atol=ATOL64)
    assert projected["projection"] is projected.projection


def test_encoder_layer_vs_loops(rng):
    """Post-LN: x1 = LN(x + MHA(x)), x2 = LN(x1 + FFN(x1)), built from the loop references."""
    w = layer_weights(rng)
    x = rng.normal(size=(B, S, H))
    attn, want_probs = ref_mha(x, w, MASK01, h)
    x1 = ref_layer_norm(x + attn, w["ln1_gamma"], w["ln1_beta"], 1e-12)
    ffn = ref_linear(ref_gelu(ref_linear(x1, w["W_1"], w["b_1"])), w["W_2"], w["b_2"])
    want = ref_layer_norm(x1 + ffn, w["ln2_gamma"], w["ln2_beta"], 1e-12)
    mask = ops.additive_mask(MASK01, np.float64)
    lean = ops.encoder_layer(x, record(w), mask, h, ops.gelu, 1e-12)
    traced = ops.encoder_layer(x, record(w), mask, h, ops.gelu, 1e-12, trace=True)
    for layer in (lean, traced):
        assert_allclose(layer.output, want, rtol=0, atol=ATOL64)
        assert_allclose(layer.attention.probs, want_probs, rtol=0, atol=ATOL64)
    assert_allclose(traced.ln_1, x1, rtol=0, atol=ATOL64)
    assert_allclose(traced.ffn.output, ffn, rtol=0, atol=ATOL64)
    assert_array_equal(traced.residual_2, traced.ln_1 + traced.ffn.output)

    # untraced, nothing is kept but the output and the probabilities
    def kept(record) -> list[str]:
        return [f.name for f in fields(record) if getattr(record, f.name) is not None]

    assert kept(lean) == ["attention", "ln_2"] and kept(lean.attention) == ["probs"]


# ---------------------------------------------------------------- properties

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)
# database=None: no .hypothesis/ folder in the working directory (tests write only to tmp_path)
SETTINGS = settings(max_examples=60, deadline=None, database=None)


@SETTINGS
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=finite), finite)
def test_softmax_rows_sum_to_one_and_ignore_a_constant(x, c):
    p = ops.softmax(x)
    assert np.all(p >= 0)
    assert_allclose(p.sum(axis=-1), 1, rtol=0, atol=1e-12)
    assert_allclose(ops.softmax(x + c), p, rtol=0, atol=1e-12)
    p32 = ops.softmax(x.astype(np.float32))
    assert p32.dtype == np.float32
    assert_allclose(p32.sum(axis=-1), 1, rtol=0, atol=1e-6)


@SETTINGS
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 16)), elements=finite))
def test_layer_norm_normalises_before_gamma_beta(x):
    assume(np.all(x.var(axis=-1) > 1e-3))
    y = ops.layer_norm(x, np.ones(x.shape[-1]), np.zeros(x.shape[-1]), 1e-12)
    assert_allclose(y.mean(axis=-1), 0, rtol=0, atol=1e-9)
    assert_allclose(y.var(axis=-1), 1, rtol=0, atol=1e-6)


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, S), min_size=1, max_size=3),
    st.sampled_from([np.float32, np.float64]),
)
def test_padded_keys_get_zero_weight_and_never_change_other_tokens(seed, lengths, dtype):
    rng = np.random.default_rng(seed)
    nb = len(lengths)
    mask01 = np.array([[1] * n + [0] * (S - n) for n in lengths])
    q, k, v = (rng.normal(0, 2, (nb, h, S, d)).astype(dtype) for _ in range(3))
    mask = ops.additive_mask(mask01, dtype)
    a = ops.scaled_dot_product_attention(q, k, v, mask)
    ctx, probs = a.context, a.probs
    assert np.all(probs[np.broadcast_to(mask01[:, None, None, :] == 0, probs.shape)] == 0)
    # new keys and values at every padded position: real queries see exactly the same thing
    k2, v2 = k.copy(), v.copy()
    pad = np.broadcast_to(mask01[:, None, :, None] == 0, k.shape)
    k2[pad] = rng.normal(0, 100, pad.sum())
    v2[pad] = rng.normal(0, 100, pad.sum())
    a2 = ops.scaled_dot_product_attention(q, k2, v2, mask)
    ctx2, probs2 = a2.context, a2.probs
    for b, n in enumerate(lengths):
        assert_array_equal(ctx2[b, :, :n], ctx[b, :, :n])
        assert_array_equal(probs2[b, :, :n], probs[b, :, :n])


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.sampled_from([(1, 4), (2, 3), (4, 2), (3, 5)]))
def test_split_merge_round_trip(nb, ns, heads_and_d):
    nh, nd = heads_and_d
    x = np.arange(nb * ns * nh * nd, dtype=np.float64).reshape(nb, ns, nh * nd)
    s = ops.split_heads(x, nh)
    assert s.shape == (nb, nh, ns, nd)
    assert_array_equal(ops.merge_heads(s), x)


def test_every_function_keeps_float32(rng):
    """float32 in, float32 out, for every formula: no float64 leaks into a float32 pass."""
    f = np.float32
    w = {k: v.astype(f) for k, v in layer_weights(rng).items()}
    ln = LayerNormWeights(w["ln1_gamma"], w["ln1_beta"])
    x = rng.normal(size=(B, S, H)).astype(f)
    q = rng.normal(size=(B, h, S, d)).astype(f)
    mask = ops.additive_mask(MASK01, f)
    assert mask.dtype == f
    outs = {
        "softmax": ops.softmax(x),
        "linear": ops.linear(x, w["W_q"], w["b_q"]),
        "scaled_dot_product_attention": ops.scaled_dot_product_attention(q, q, q, mask).context,
        "split_heads": ops.split_heads(x, h),
        "merge_heads": ops.merge_heads(q),
        "multi_head_attention": ops.multi_head_attention(x, record(w).attention, mask, h, trace=True),
        "gelu": ops.gelu(x),
        "gelu_tanh": ops.gelu_tanh(x),
        "relu": ops.relu(x),
        "feed_forward": ops.feed_forward(x, record(w).ffn, trace=True),
        "layer_norm": ops.layer_norm(x, w["ln1_gamma"], w["ln1_beta"], 1e-12),
        "embed": ops.embed(
            np.zeros((B, S), int),
            np.zeros((B, S), int),
            np.zeros((B, S), int),
            EmbeddingWeights(x[0], x[1], x[0], ln),
            1e-12,
            trace=True,
        ),  # fmt: skip
        "encoder_layer": ops.encoder_layer(x, record(w), mask, h, ops.gelu, 1e-12, trace=True),
        "sinusoidal_positions": ops.sinusoidal_positions(8, H, f),
        "rotary_angles": ops.rotary_angles(np.arange(S), d, 10000.0, f),
        "rotary_frequencies": ops.rotary_frequencies(d, 10000.0, f),
        "rotate": ops.rotate(q, *ops.rotary_angles(np.arange(S), d, 10000.0, f)),
        "sliding_window_mask": ops.sliding_window_mask(MASK01, 1, f),
        "window_bias": ops.window_bias(np.arange(S), np.arange(S), 1, f),
        "band_attention": ops.band_attention(q, q, q, np.arange(S), 1, 1, S)[1],  # (k0, the block's trace)
        "glu": ops.glu(x, x, ops.gelu),
        "silu": ops.silu(x),
        "pre_ln_layer": ops.pre_ln_layer(
            x,
            record(w),
            mask,
            h,
            ops.gelu,
            1e-12,
            trace=True,
            relative=RelativePositions(
                cos=ops.rotary_angles(np.arange(S), d, 1e4, f)[0],
                sin=ops.rotary_angles(np.arange(S), d, 1e4, f)[1],
            ),
        ),  # fmt: skip
        "relative_position_bias": ops.relative_position_bias(S, rng.normal(size=(32, h)).astype(f)),
        "disentangled_bias": ops.disentangled_bias(
            q,
            q,
            *rng.normal(size=(2, h, 6, d)).astype(f),
            ops.relative_position_index(S, 4, 6),
            3,
            ops.disentangled_scale(d, 3),
        ),
    }
    integer = {
        "relative_position_bucket",
        "log_bucket_position",
        "relative_position_index",
        "gather_index",
        "window_span",
    }  # int64 out, or ints
    scalar = {"disentangled_scale"}  # float32 whatever the pass's dtype (transformers' float32 product)
    assert set(outs) >= set(ops.__all__) - {"ACTIVATIONS", "additive_mask"} - integer - scalar
    assert ops.disentangled_scale(d, 3).dtype == f
    for name, out in outs.items():
        for a in arrays_of(out):
            assert a.dtype == f, name
    # and float64 stays float64
    x64 = x.astype(np.float64)
    assert (
        ops.gelu(x64).dtype == ops.layer_norm(x64, w["ln1_gamma"], w["ln1_beta"], 1e-12).dtype == np.float64
    )


def arrays_of(value) -> list[np.ndarray]:
    """Every array of a formula's result: itself, or each field of its record, nested."""
    if isinstance(value, np.ndarray):
        return [value]
    if value is None:
        return []
    if isinstance(value, tuple):  # disentangled_bias: (c2p, p2c)
        return [a for v in value for a in arrays_of(v)]
    return [a for f in fields(value) for a in arrays_of(getattr(value, f.name))]
