"""Sliding-window layers on the band only (issue 19): ModernBERT's local layers cost O(S w).

The reference is the masked full attention of the formulas: ops.scaled_dot_product_attention
with ops.sliding_window_mask over all S x S scores (what the plain path runs, and what
tests/test_rotary.py holds to transformers). Against it: the band formula
(ops.band_attention), the schedule's band (fast._band_attention), and the whole default
path on random batch compositions of a ModernBERT with long positions (the committed tiny
model's weights; it has no position table, so only its config limits its length):
mixed lengths, padding, texts shorter and far longer than the window, lengths at the
window's and the blocks' edges, a hand-made mask with holes, float32 and float64; hidden
states and attention maps, whose local layers are full S x S maps with exact zeros outside
the window. Tolerances are the issue's: float32 1e-5 (relative to each layer's largest
value; maps absolute), float64 1e-12.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, id_batch, variant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import minibert
from minibert.encoder import fast, ops, threads
from minibert.model import Model

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
LOCAL, GLOBAL = "sliding_attention", "full_attention"


def positions_of(n: int, holes: int, rng) -> np.ndarray:
    """n increasing positions: 0..n-1, or with ``holes`` random gaps (a hand-made mask's padding)."""
    if not holes:
        return np.arange(n)
    return np.sort(rng.choice(n + holes, n, replace=False))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 90), half=st.integers(0, 40), rows=st.integers(1, 40), holes=st.integers(0, 30),
    dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_the_band_formula_is_the_masked_full_attention(n, half, rows, holes, dtype, seed):
    """ops.band_attention, block by block, == ops.scaled_dot_product_attention with the
    window mask over all n x n scores: the context, and the probabilities of the span's
    keys (the others are exactly 0 in the full one). The span holds every key of the
    window of every query of the block and is at most rows + 2w long."""
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((3, 2, n, 8)).astype(dtype)
    pos = positions_of(n, holes, rng)
    window = ops.window_bias(pos, pos, half, dtype)  # the window of the text's own positions
    full = ops.scaled_dot_product_attention(q, k, v, window)
    assert_array_equal(full.probs == 0, np.broadcast_to(window != 0, full.probs.shape))
    tol = TOLERANCE[dtype]
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        k0, block = ops.band_attention(q, k, v, pos, half, lo, hi)
        k1 = k0 + block.probs.shape[-1]
        assert k1 - k0 <= (hi - lo) + 2 * half
        assert not full.probs[:, lo:hi, :k0].any() and not full.probs[:, lo:hi, k1:].any()
        assert_allclose(block.probs, full.probs[:, lo:hi, k0:k1], rtol=0, atol=tol)
        assert_allclose(block.context, full.context[:, lo:hi], rtol=0, atol=tol * 4)


def test_window_span_and_bias_at_the_edges():
    """w = 0 sees only itself; a block's span is clipped at both ends of the text; with
    holes the span counts real tokens, not positions."""
    pos = np.arange(10)
    assert ops.window_span(pos, 0, 1, 0) == (0, 1)
    assert ops.window_span(pos, 4, 6, 2) == (2, 8)
    assert ops.window_span(pos, 0, 3, 50) == (0, 10)
    assert ops.window_span(pos, 9, 10, 3) == (6, 10)
    holed = np.array([0, 1, 5, 6, 7, 20])
    assert ops.window_span(holed, 2, 3, 3) == (2, 5)  # positions 2..8: 5, 6, 7
    assert ops.window_span(holed, 5, 6, 13) == (4, 6)  # positions 7..33: 7 and 20
    bias = ops.window_bias(np.array([3]), holed, 2, np.float32)
    assert_array_equal(bias[0] == 0, [False, True, True, False, False, False])
    assert bias.dtype == np.float32 and bias.min() == np.finfo(np.float32).min


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120), half=st.integers(0, 50), rows=st.integers(1, 48), holes=st.integers(0, 20),
    heads=st.integers(1, 4), block=st.sampled_from([16, 600, 2**18]),
    dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_the_schedules_band_is_the_masked_full_attention(n, half, rows, holes, heads, block, dtype, seed):
    """fast._band_attention on the fused layout (queries already divided by sqrt(d)),
    any block size and head grouping, == the masked full formula: the context, and the
    full (h, n, n) probabilities with exact zeros outside the window written over
    whatever the array held. The context is the same bits with or without the maps."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast, "BAND_ROWS", rows)
        patch.setattr(fast, "ATTENTION_BLOCK", block)
        check_the_schedules_band(n, half, heads, holes, dtype, seed)


def check_the_schedules_band(n, half, heads, holes, dtype, seed):
    rng = np.random.default_rng(seed)
    d = 4
    q, k, v = rng.standard_normal((3, heads, n, d)).astype(dtype)
    pos = positions_of(n, holes, rng)
    full = ops.scaled_dot_product_attention(q, k, v, ops.window_bias(pos, pos, half, dtype))
    s = np.asarray(1 / np.sqrt(d), dtype)
    qkv = np.concatenate([x.transpose(1, 0, 2).reshape(n, heads * d) for x in (q * s, k, v)], axis=1)
    lengths = np.array([n])
    scratch = np.empty(fast._score_scratch(lengths, heads, (LOCAL,), half), dtype)
    ctx, again = np.empty((n, heads * d), dtype), np.empty((n, heads * d), dtype)
    probs = np.full((heads, n, n), np.nan, dtype)  # every entry must be written
    fast._band_attention(qkv, ctx, scratch, heads, probs, pos, half)
    fast._band_attention(qkv, again, scratch, heads, None, pos, half)
    assert_array_equal(again, ctx)
    assert_array_equal(probs == 0, full.probs == 0)  # exact zeros exactly outside the window
    tol = TOLERANCE[dtype]
    assert_allclose(probs, full.probs, rtol=0, atol=tol)
    assert_allclose(ctx, full.context.transpose(1, 0, 2).reshape(n, heads * d), rtol=0, atol=4 * tol)


# --------------------------------------------------------------------------- the whole default path

_LONG: dict = {}


def long_modernbert(dtype: str, window: int = 8, types: tuple[str, ...] | None = None) -> Model:
    """tiny-modernbert with 8,192 positions (and another window or layer pattern): the
    committed weights, the config replaced in memory."""
    key = (dtype, window, types)
    if key not in _LONG:
        base = minibert.load(DATA / "tiny-modernbert", dtype)
        config = replace(base.config, max_position_embeddings=8192, local_attention=window)
        if types is not None:
            config = replace(config, layer_types=types)
        _LONG[key] = Model(config, base.weights, base.tokenizer, base.path, dtype, base.sentence)
    return _LONG[key]


def check_fast_equals_plain(model: Model, batch, rtol: float, threads_: int = 1):
    """Hidden states (relative to each layer's largest value) and maps (absolute) at real
    positions; padding 0 on the fast path; the local layers' maps 0 exactly outside the
    window. Returns the fast Encoding."""
    plain = variant(model, "plain").forward(batch, output_attentions=True)
    quick = variant(model, "fast", threads_).forward(batch, output_attentions=True)
    real = batch.attention_mask.astype(bool)
    for i, (f, p) in enumerate(zip(quick.hidden_states, plain.hidden_states, strict=True)):
        d = float(np.abs(f[real] - p[real]).max() / np.abs(p[real]).max())
        assert d <= rtol, f"hidden_states[{i}], lengths {batch.num_tokens}: {d:.2e} > {rtol:.0e}"
        assert not f[~real].any()
    both = real[:, None, :, None] & real[:, None, None, :]
    S = real.shape[1]
    far = np.abs(np.arange(S)[:, None] - np.arange(S)[None]) > model.config.local_attention // 2
    for i, (f, p) in enumerate(zip(quick.attentions, plain.attentions, strict=True)):
        mask = np.broadcast_to(both, f.shape)
        d = float(np.abs(f[mask] - p[mask]).max(initial=0.0))
        assert d <= rtol, f"attentions[{i}], lengths {batch.num_tokens}: {d:.2e} > {rtol:.0e}"
        assert not f[~mask].any()
        if model.config.layer_types[i] == LOCAL:  # (padding queries of the plain path can see far keys)
            assert not f[:, :, far].any() and not p[mask & far].any()
    return quick


#: lengths at the edges: the window (w = 4 of local_attention 8: 4, 5, 9, 10), the band's
#: blocks (BAND_ROWS - 1 .. BAND_ROWS + 1, 2 BAND_ROWS, 2 BAND_ROWS + 1), and far past both
R = fast.BAND_ROWS
EDGES = [1, 2, 4, 5, 9, 10, R - 1, R, R + 1, 2 * R, 2 * R + 1, 700]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(
        st.one_of(st.sampled_from(EDGES), st.integers(1, 20), st.integers(100, 400)), min_size=1, max_size=5
    ),
    window=st.sampled_from([2, 8, 9, 64, 300]),
    seed=st.integers(0, 2**16),
)
def test_random_batch_compositions_band_equals_masked_full(dtype, lengths, window, seed):
    """The default path (band) against the plain path (masked full attention), on any mix
    of lengths with padding: texts shorter than the window and far longer, at the
    window's and the blocks' edges; windows of 2 to 300 tokens (odd ones too); the
    committed global, local, local, global pattern. In float32, 1 and 2 threads give the
    same bits (the promise of fast.forward: a one-unit batch on a 2-thread BLAS is the
    same bits in float32 only; in float64 the global layers of a 257-token text differ
    in the last bit, on main before the band too)."""
    pytest.importorskip("threadpoolctl")
    model = long_modernbert(dtype, window)
    batch = id_batch(lengths, vocab_size=model.config.vocab_size - 3, seed=seed)
    one = check_fast_equals_plain(model, batch, TOLERANCE[dtype])
    if dtype == "float64":
        return
    two = variant(model, "fast", 2).forward(batch, output_attentions=True)
    for a, b in zip(one.hidden_states + one.attentions, two.hidden_states + two.attentions, strict=True):
        assert_array_equal(b, a)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_local_layers_a_mask_with_holes_and_equal_lengths(dtype):
    """Every layer local; a hand-made mask with padding inside a text (positions still count
    it, so the band is over positions, not packed tokens); a batch without padding (the
    maps, written in place, must get their zeros outside the window written too)."""
    model = long_modernbert(dtype, 8, (LOCAL,) * 4)
    batch = id_batch([300, 41, 150], vocab_size=model.config.vocab_size - 3, seed=3)
    mask = batch.attention_mask.copy()
    mask[0, [3, 7, 8, 9, 10, 200]] = 0  # holes: a key at distance 4 of position 6 is now gone
    mask[1, 0] = 0
    check_fast_equals_plain(model, replace(batch, attention_mask=mask), TOLERANCE[dtype])
    dense = id_batch([260, 260], vocab_size=model.config.vocab_size - 3, seed=4)
    check_fast_equals_plain(model, dense, TOLERANCE[dtype])


def test_local_layers_hold_no_quadratic_memory():
    """A model of local layers only, at 4,096 tokens: the schedule's working memory
    (tracemalloc: NumPy reports its arrays) stays far below one S x S score matrix
    (64 MiB in float32), and its scratch is the band's: g m k <= ATTENTION_BLOCK."""
    model = long_modernbert("float32", 8, (LOCAL,) * 4)
    S = 4096
    assert fast._score_scratch(np.array([S]), 3, (LOCAL,), 4) <= fast.ATTENTION_BLOCK
    assert fast._score_scratch(np.array([S]), 3, (LOCAL, GLOBAL), 4) == S * S  # a global layer
    batch = id_batch([S], vocab_size=model.config.vocab_size - 3)
    ids, mask = batch.input_ids, batch.attention_mask
    pos = minibert.encoder.forward.position_ids(model.config, ids, mask)
    with threads.threads(1):
        fast.forward(model.weights, model.config, ids, pos, None, mask)  # warm up
        tracemalloc.start()
        hidden, _ = fast.forward(model.weights, model.config, ids, pos, None, mask)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    returned = sum(x.nbytes for x in hidden)
    held = (peak - returned) / 2**20
    assert held < 8, f"peak {peak / 2**20:.1f} MiB, {held:.1f} MiB besides the returned hidden states"


# --------------------------------------------------------------------------- long texts: the model's limit


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    """tests/data/tiny-modernbert with max_position_embeddings 8192, in a temporary directory."""
    path = tmp_path_factory.mktemp("tiny-modernbert-8192")
    for f in (DATA / "tiny-modernbert").iterdir():
        shutil.copy(f, path / f.name)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 8192
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_text_past_512_tokens_runs_in_one_window_at_the_models_own_limit(long_dir):
    """The model's limit is its config's (8,192 here), nothing at 512: a text of more than
    512 tokens is encoded whole, and encode_long runs it as one window of that limit with
    the same vectors; the default path equals the plain one on it."""
    model = minibert.load(long_dir, "float64")
    assert model.max_length == 8192
    text = " ".join(f"word{i % 50}" for i in range(150))  # 573 tokens
    enc = model.encode([text, "short"], output_attentions=True)
    n = int(enc.attention_mask[0].sum())
    assert n == enc.input_ids.shape[1] > 512 and enc.num_tokens[0] == n  # not truncated
    plain = variant(model, "plain").encode([text, "short"], output_attentions=True)
    real = enc.attention_mask.astype(bool)
    for f, p in zip(enc.hidden_states, plain.hidden_states, strict=True):
        assert_allclose(f[real], p[real], rtol=0, atol=1e-12)
    for f, p in zip(enc.attentions, plain.attentions, strict=True):
        assert_allclose(f[0], p[0], rtol=0, atol=1e-12)
    long = minibert.encode_long(model, [text])
    assert not long.windows[0].any()  # one window
    assert_allclose(long.hidden_states[-1][0][:n], enc.hidden_states[-1][0][:n], rtol=0, atol=1e-12)
