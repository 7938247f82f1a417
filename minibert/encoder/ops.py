"""The formulas of a BERT encoder, one pure NumPy function each.

Section 4 of the article this project grew from (``shared/seed/article.md``)
writes these formulas; where it departs from BERT, the docstring says so
(see also ``docs/errata.md``).

Shape alphabet, used in every docstring and shape comment of this module:

    B  batch size (texts)           S  sequence length (tokens, padded)
    H  hidden size                  h  attention heads
    d  head size, d = H / h         I  intermediate (FFN) size
    V  vocabulary size              P  max position embeddings
    E  embedding size (= H for BERT; smaller for ALBERT / ELECTRA)
    K  DeBERTa's relative span: relative positions clipped to [-K, K), 2K embeddings

Weights are stored the way the formulas are written: ``x @ W + b`` with ``W``
of shape ``(in, out)``. PyTorch checkpoints store ``Linear`` weights as
``(out, in)``; :mod:`minibert.loading.weights` transposes them once, at load time, so
the forward pass never transposes a weight.

Every function stays in its input's dtype: a float32 pass never computes in
float64 and a float64 pass never drops to float32.

The composite formulas (embeddings, attention, the FFN, the encoder layer)
take one layer's weights as the records of :mod:`minibert.loading.weights`, whose
fields carry the names written here (``w.W_q``, ``layer.ln_1.gamma``), and
return what they computed as the records of :mod:`minibert.encoder.trace`: with
``trace=True`` every intermediate, else only what the next formula reads.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from minibert.encoder.params import (
    AttentionWeights,
    EmbeddingWeights,
    FeedForwardWeights,
    LayerWeights,
    RelativePositions,
)
from minibert.encoder.trace import AttentionTrace, EmbeddingTrace, FeedForwardTrace, LayerTrace

__all__ = [
    "ACTIVATIONS",
    "additive_mask",
    "band_attention",
    "disentangled_bias",
    "disentangled_scale",
    "embed",
    "encoder_layer",
    "feed_forward",
    "gelu",
    "gather_index",
    "gelu_tanh",
    "glu",
    "layer_norm",
    "linear",
    "log_bucket_position",
    "merge_heads",
    "multi_head_attention",
    "relative_position_bias",
    "relative_position_bucket",
    "relative_position_index",
    "relu",
    "rotary_angles",
    "rotary_frequencies",
    "rotate",
    "pre_ln_layer",
    "scaled_dot_product_attention",
    "sinusoidal_positions",
    "softmax",
    "silu",
    "sliding_window_mask",
    "split_heads",
    "window_bias",
    "window_span",
]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x)).

    Subtracting the row maximum leaves the result unchanged (it cancels in
    the ratio) and keeps ``exp`` from overflowing. Any shape; normalised along
    ``axis``.
    """
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine map x W + b.

    x: (..., n_in), W: (n_in, n_out), b: (n_out,) -> (..., n_out).
    ``W`` is already transposed from PyTorch's ``(out, in)`` layout at load.
    """
    return x @ W + b


def additive_mask(attention_mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The padding mask as a bias added to attention scores.

    attention_mask: (B, S) of 1 (real token) / 0 (padding) -> (B, 1, 1, S).
    0 where a key may be attended, the dtype's most negative finite number
    where it is padding, so ``softmax`` gives padded keys exactly zero weight
    (``exp`` underflows to 0). This is what transformers adds too
    (``torch.finfo(dtype).min``). Built once per batch, broadcast over heads
    and query positions.
    """
    dtype = np.dtype(dtype)
    bias = (1 - attention_mask.astype(dtype)) * np.finfo(dtype).min
    return bias[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def sliding_window_mask(attention_mask: np.ndarray, half_window: int, dtype: np.dtype) -> np.ndarray:
    """The padding mask of a sliding-window layer: query i sees key j when j is
    a real token and |i - j| <= w, w = ``half_window`` (ModernBERT's local
    layers: w = local_attention // 2).

    attention_mask: (B, S) of 1 / 0 -> (B, 1, S, S): 0 where the key may be
    attended, the dtype's most negative finite number elsewhere (not summed
    with the padding mask, so no score reaches -inf). Outside the window the
    probabilities are exactly 0, and the maps stay S x S, as transformers
    returns them (``sliding_window_bidirectional_overlay``: ``abs(q_idx -
    kv_idx) <= sliding_window``). The window is :func:`window_bias` of the
    positions 0..S-1. Beltagy et al. 2020 (Longformer), section 3.1.
    """
    dtype = np.dtype(dtype)
    pos = np.arange(attention_mask.shape[1])
    window = window_bias(pos, pos, half_window, dtype)  # (S, S)
    real = attention_mask.astype(bool)[:, None, :]  # (B, S) -> (B, 1, S): real keys
    return np.where(real, window, np.finfo(dtype).min).astype(dtype)[:, None]  # (B, 1, S, S)


def window_bias(
    query_positions: np.ndarray, key_positions: np.ndarray, half_window: int, dtype: np.dtype
) -> np.ndarray:
    """The sliding window as a bias added to the scores: 0 where |p_i - p_j| <= w,
    the dtype's most negative finite number elsewhere (w = ``half_window``).

    query_positions: (m,), key_positions: (k,) ints -> (m, k). Of the whole
    text (both 0..S-1) it is the window of :func:`sliding_window_mask`; of a
    block of queries and the keys of its span (:func:`window_span`) it is
    what :func:`band_attention` adds.
    """
    dtype = np.dtype(dtype)
    near = np.abs(query_positions[:, None] - key_positions[None, :]) <= half_window  # m x k
    return np.where(near, 0, np.finfo(dtype).min).astype(dtype, copy=False)


def window_span(positions: np.ndarray, lo: int, hi: int, half_window: int) -> tuple[int, int]:
    """The keys that queries lo..hi-1 of a text can see through the window:
    (k0, k1), keys k0..k1-1.

    positions: (n,) the text's token positions, increasing (0..n-1 for a
    right-padded text). Key j is in some query's window when positions[lo] - w
    <= positions[j] <= positions[hi - 1] + w (w = ``half_window``), and since
    positions increase these keys are one contiguous run: k0 is the first
    key at or past positions[lo] - w, k1 one past the last at or before
    positions[hi - 1] + w. A block of m queries reads at most m + 2w keys,
    whatever n is: the band of :func:`band_attention`.
    """
    k0 = int(np.searchsorted(positions, positions[lo] - half_window, side="left"))
    k1 = int(np.searchsorted(positions, positions[hi - 1] + half_window, side="right"))
    return k0, k1


def band_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray, half_window: int, lo: int, hi: int
) -> tuple[int, AttentionTrace]:
    """Sliding-window attention of queries lo..hi-1 of one text, computed on the band only:

        context_i = sum over j with |p_i - p_j| <= w of softmax_j(q_i . k_j / sqrt(d)) v_j

    q, k, v: (..., n, d); positions: (n,) increasing (:func:`window_span`);
    w = ``half_window``. The keys outside the span k0..k1-1 of
    :func:`window_span` have probability exactly 0 in
    :func:`scaled_dot_product_attention` with :func:`sliding_window_mask`
    (exp of the most negative number), so they are left out: the scores are
    (..., m, k1 - k0), m = hi - lo, not (..., m, n), and a text of n tokens
    costs O(n (m + 2w)) instead of O(n^2). Inside the span the window is
    :func:`window_bias`. Returns (k0, the block's
    :class:`~minibert.encoder.trace.AttentionTrace`: probabilities (..., m, k1 - k0)
    of keys k0..k1-1, context (..., m, d)): rows lo..hi-1 of the masked full
    attention, to rounding. Beltagy et al. 2020 (Longformer), section 3.2.
    """
    k0, k1 = window_span(positions, lo, hi, half_window)
    mask = window_bias(positions[lo:hi], positions[k0:k1], half_window, q.dtype)  # m x k
    block = scaled_dot_product_attention(q[..., lo:hi, :], k[..., k0:k1, :], v[..., k0:k1, :], mask)
    return k0, block


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    scale=None,
) -> AttentionTrace:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B + M) V.

    q, k, v: (..., S, d); mask: additive, broadcastable to (..., S, S), or None;
    bias B: a position bias broadcastable to (..., S, S) (MPNet's bucket
    bias, DeBERTa's c2p + p2c), or None (BERT). ``scale``: the divisor of
    the scores when it is not sqrt(d_k) (DeBERTa: :func:`disentangled_scale`).
    Returns its scores, mask, masked_scores (= scores + B + M), probabilities
    (..., S, S) and context (..., S, d) (an :class:`~minibert.encoder.trace.AttentionTrace`).
    Vaswani et al. 2017, eq. 1; the mask M is 0 or a large negative number.
    The article's worked example (its section 4.3) gets this arithmetic wrong:
    see docs/errata.md.
    """
    d_k = q.shape[-1]
    divisor = np.sqrt(d_k).astype(q.dtype) if scale is None else np.asarray(scale, q.dtype)
    scores = q @ np.swapaxes(k, -1, -2) / divisor  # (..., S, d) -> (..., S, S)
    masked = scores if bias is None else scores + bias
    masked = masked if mask is None else masked + mask
    probs = softmax(masked, axis=-1)
    context = probs @ v  # (..., S, S) -> (..., S, d)
    return AttentionTrace(
        scores=scores, mask=mask, masked_scores=masked, probs=probs, context=context, bias=bias
    )


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int = 32, max_distance: int = 128):
    """T5's bucket of a relative position r = j - i (key j, query i), as MPNet computes it.

    With n = i - j, half = num_buckets / 2 and e = half / 2 exact buckets:

        bucket(r) = half [n < 0] + ( |n|                                         if |n| < e
                                   ( min(half - 1, e + trunc(log(|n| / e)
                                   (      / log(max_distance / e) (half - e)))   otherwise

    so the two directions get half the buckets each, distances below e one
    bucket each, and larger ones log-spaced buckets up to max_distance, beyond
    which they share the last. relative_position: any shape of ints -> the
    same shape, int64. The log is taken in float32 and truncated toward 0,
    as transformers' ``MPNetEncoder.relative_position_bucket`` does (a float64
    log could round across an integer); at n = 0 the log is of 0 there, and
    its -inf is discarded by the ``where``: here the log is taken of
    max(|n|, 1) instead, which the ``where`` discards the same way. MPNet
    calls it with 32 buckets and max distance 128 whatever its config says
    (``relative_attention_num_buckets`` only sizes the table).
    Raffel et al. 2020 (T5), section 2.1; Song et al. 2020 (MPNet).
    """
    n = -np.asarray(relative_position, dtype=np.int64)
    half = num_buckets // 2
    exact = half // 2
    sign = np.where(n < 0, half, 0)
    n = np.abs(n)
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(exact)
    log_ratio = np.log(ratio) / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
    large = np.minimum(exact + log_ratio.astype(np.int64), half - 1)
    return sign + np.where(n < exact, n, large)


def relative_position_bias(length: int, table: np.ndarray) -> np.ndarray:
    """MPNet's position bias B[h, i, j] = table[bucket(j - i), h] -> (1, h, S, S).

    length: S; table: (R, h), one learned number per bucket and head
    (``encoder.relative_attention_bias``). It depends only on j - i, so it is
    computed once per forward pass and added to the scaled scores of every
    layer (:func:`scaled_dot_product_attention`'s B). Positions are indices
    0..S-1, padding included, as in transformers.
    """
    pos = np.arange(length)
    bucket = relative_position_bucket(pos[None, :] - pos[:, None])  # (S, S)
    return table[bucket].transpose(2, 0, 1)[None]  # (S, S, h) -> (1, h, S, S)


def log_bucket_position(relative_position: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """DeBERTa's log bucket of a relative position delta = i - j (query i, key j).

    With mid = bucket_size / 2:

        bucket(delta) = delta                                                 if |delta| <= mid
                        sign(delta) (mid + ceil(log(|delta| / mid)
                                     / log((max_position - 1) / mid) (mid - 1)))  otherwise

    exact up to mid, log-spaced beyond (transformers' ``make_log_bucket_position``;
    config ``position_buckets``, ``max_relative_positions``). Any shape of ints
    -> the same shape, int64. In float32, as transformers computes it
    whatever the model's dtype, so the same integers come out; positions
    below mid take the log of mid - 1 there, discarded by the ``where``.
    """
    rel = np.asarray(relative_position, dtype=np.int64)
    mid = bucket_size // 2
    size = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    ratio = size.astype(np.float32) / np.float32(mid)
    log_pos = np.ceil(np.log(ratio) / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1))
    return np.where(size <= mid, rel, (log_pos + mid).astype(np.int64) * np.sign(rel))


def relative_position_index(length: int, position_buckets: int, max_relative_positions: int) -> np.ndarray:
    """delta(i, j) = i - j for query i and key j, log-bucketed when
    ``position_buckets`` > 0 (:func:`log_bucket_position`) -> (S, S) int64.

    DeBERTa's ``build_relative_position``; computed once per forward pass
    (it depends only on S) and read by every layer's :func:`disentangled_bias`.
    """
    pos = np.arange(length)
    delta = pos[:, None] - pos[None, :]  # (S, S)
    if position_buckets > 0 and max_relative_positions > 0:
        return log_bucket_position(delta, position_buckets, max_relative_positions)
    return delta


def disentangled_scale(head_size: int, scale_factor: int) -> np.float32:
    """DeBERTa's score divisor sqrt(d (1 + #position terms)), with scale_factor = 1 + #terms.

    The product and its root are float32 whatever the model's dtype, as in
    transformers (``scaled_size_sqrt``: ``torch.sqrt(torch.tensor(d, dtype=torch.float)
    * scale_factor)``): a float64 pass divides by this float32 number (the exact
    root differs by up to 6e-8 relatively, which float64 would see).
    """
    return np.sqrt(np.float32(head_size) * np.float32(scale_factor))


def gather_index(index: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Where DeBERTa's position terms read their all-positions products:

        c(i, j)  = clip(delta(i, j) + K, 0, 2K - 1)     (c2p, row i)
        c'(j, i) = clip(-delta(j, i) + K, 0, 2K - 1)    (p2c, row j of the keys)

    index: delta (S, S), :func:`relative_position_index`; span K -> (c, c'),
    each (S, S) int64: c[i, j] and c'[j, i], relative distances clamped to
    the 2K embeddings (transformers' ``torch.clamp`` before its gathers).
    Read by :func:`disentangled_bias` and by the fast schedule.
    """
    at_c2p = np.clip(index + span, 0, 2 * span - 1)  # (S, S)
    at_p2c = np.clip(-index + span, 0, 2 * span - 1)  # (S, S)
    return at_c2p, at_p2c


def disentangled_bias(
    q: np.ndarray,
    k: np.ndarray,
    pos_q: np.ndarray | None,
    pos_k: np.ndarray | None,
    index: np.ndarray,
    span: int,
    scale,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """DeBERTa's position terms of the attention scores (He et al. 2021, eq. 4):

        c2p[i, j] = Q_i . Kr_{c(i, j)} / s        (content of i -> position of j relative to i)
        p2c[i, j] = K_j . Qr_{c'(j, i)} / s       (position of i relative to j -> content of j)

    with c(i, j) = clip(delta(i, j) + K, 0, 2K - 1) and c'(j, i) = clip(-delta(j, i) + K, 0, 2K - 1)
    (:func:`gather_index`), delta the (bucketed) relative position :func:`relative_position_index`,
    K = ``span`` and s = :func:`disentangled_scale`.
    q, k: (B, h, S, d), the layer's queries and keys (unscaled); pos_q, pos_k:
    (h, 2K, d), the relative embeddings projected (p2c reads pos_q, c2p pos_k;
    None: the term is not in ``pos_att_type``); index: (S, S). Returns (c2p,
    p2c), each (B, h, S, S) or None. Each term is one product with all 2K
    relative positions, (B, h, S, 2K), then a gather of the S x S entries
    that are used (transformers' ``torch.gather``).
    """
    S = q.shape[-2]
    rows = np.arange(S)[:, None]  # (S, 1)
    at_c2p, at_p2c = gather_index(index, span)  # (S, S) each
    c2p = p2c = None
    if pos_k is not None:
        c2p_all = q @ np.swapaxes(pos_k, -1, -2)  # (B, h, S, d) @ (h, d, 2K) -> (B, h, S, 2K)
        c2p = c2p_all[:, :, rows, at_c2p] / np.asarray(scale, q.dtype)  # (B, h, S, 2K) -> (B, h, S, S)
    if pos_q is not None:
        p2c_all = k @ np.swapaxes(pos_q, -1, -2)  # (B, h, S, d) @ (h, d, 2K) -> (B, h, S, 2K)
        p2c = np.swapaxes(p2c_all[:, :, rows, at_p2c], -1, -2) / np.asarray(scale, q.dtype)  # (B, h, S, S)
    return c2p, p2c


def rotary_frequencies(head_size: int, theta: float, dtype) -> np.ndarray:
    """The rotary frequencies w_i = theta^(-2i/d), i = 0 .. d/2 - 1 -> (d/2,).

    Pair i of a query or key turns by the angle p w_i at position p
    (:func:`rotary_angles`): w_0 = 1 radian a position, down to almost
    1 / theta for the last pair, so the first pairs turn fast and the last
    ones barely. theta: the base (config ``global_rope_theta`` /
    ``local_rope_theta``). Su et al. 2021 (RoFormer), eq. 15.
    """
    dtype = np.dtype(dtype)
    i = np.arange(0, head_size, 2, dtype=dtype)  # 0, 2, 4, ..., d - 2
    return 1 / np.power(np.asarray(theta, dtype), i / dtype.type(head_size))  # the d/2 frequencies w_i


def rotary_angles(
    positions: np.ndarray, head_size: int, theta: float, dtype
) -> tuple[np.ndarray, np.ndarray]:
    """The rotary tables: cos(p w_i) and sin(p w_i), w_i = theta^(-2i/d), i < d/2.

    positions: (S,) ints; head_size d (even); theta: the base (ModernBERT:
    config ``global_rope_theta`` on global layers, ``local_rope_theta`` on
    local ones). -> (cos, sin), each (S, d), the d/2 angles written twice
    ([a_0 .. a_{d/2-1}, a_0 .. a_{d/2-1}]) to match :func:`rotate`'s halves.
    Computed in ``dtype``: transformers computes them in float32 whatever the
    model's dtype (``ModernBertRotaryEmbedding``), which a float64 pass here
    does not copy (the float64 references are patched to float64:
    tests/reference/generate_rotary.py). Su et al. 2021 (RoFormer), eq. 34.
    """
    dtype = np.dtype(dtype)
    angles = positions.astype(dtype)[:, None] * rotary_frequencies(head_size, theta, dtype)  # S x d/2: p w_i
    angles = np.concatenate([angles, angles], axis=-1)  # (S, d)
    return np.cos(angles), np.sin(angles)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """RoPE: turn each pair (x_i, x_{i+d/2}) of a query or key by the angle p w_i:

        rotate(x) = x * cos + [-x_2, x_1] * sin,   x = [x_1, x_2] (two halves of d)

    x: (..., S, d); cos, sin: (S, d) from :func:`rotary_angles` (or rows
    broadcastable to x) -> (..., S, d). A rotation keeps lengths, and
    q_m . k_n after turning by m and n depends on m - n only: the relative
    position enters every score. The pairs are the two halves (GPT-NeoX's
    layout, transformers' ``rotate_half``), not neighbours as in the paper.
    Su et al. 2021 (RoFormer), section 3.4.2.
    """
    half = x.shape[-1] // 2
    turned = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # [-x_2, x_1], as x
    return x * cos + turned * sin


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """Cut the hidden axis into heads: (B, S, H) -> (B, h, S, d)."""
    B, S, H = x.shape
    return x.reshape(B, S, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """Concat(head_1, ..., head_h): (B, h, S, d) -> (B, S, H)."""
    B, h, S, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, h * d)


def multi_head_attention(
    x: np.ndarray,
    w: AttentionWeights,
    mask: np.ndarray | None,
    num_heads: int,
    trace: bool = False,
    relative: RelativePositions | None = None,
) -> AttentionTrace:
    """MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O,
    head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    x: (B, S, H); w: W_q, W_k, W_v, W_o (H, H) and their biases (H,)
    (:class:`~minibert.encoder.params.AttentionWeights`); mask (B, 1, 1, S).
    Returns ``output`` (B, S, H) and ``probs`` (B, h, S, S); with ``trace``,
    every intermediate (:class:`~minibert.encoder.trace.AttentionTrace`).
    The h per-head projections W_i^Q are the column blocks of one (H, H)
    matrix, so all heads are projected by one product and split afterwards.
    ``relative`` (:class:`~minibert.encoder.params.RelativePositions`): MPNet's
    bias added to the scores, DeBERTa's scale and c2p + p2c terms
    (:func:`disentangled_bias`), ModernBERT's and NomicBERT's rotary tables
    (q and k turned by :func:`rotate` before the scores; ``trace``'s q and k
    are the turned ones, ``q_unrotated`` and ``k_unrotated`` the projections
    before, ``cos`` and ``sin`` the tables); None for BERT.
    """
    q = split_heads(linear(x, w.W_q, w.b_q), num_heads)  # (B, S, H) -> (B, h, S, d)
    k = split_heads(linear(x, w.W_k, w.b_k), num_heads)  # (B, S, H) -> (B, h, S, d)
    v = split_heads(linear(x, w.W_v, w.b_v), num_heads)  # (B, S, H) -> (B, h, S, d)
    rotary = relative is not None and relative.cos is not None  # ModernBERT, NomicBERT
    q_in, k_in = (q, k) if trace else (None, None)  # the trace keeps them; a plain pass frees them
    if rotary:  # q and k turned by their positions
        q, k = rotate(q, relative.cos, relative.sin), rotate(k, relative.cos, relative.sin)
    bias, c2p, p2c, scale = None, None, None, None
    if relative is not None and relative.bias is not None:  # MPNet
        bias = relative.bias
    elif relative is not None:  # DeBERTa
        scale = relative.scale
        if relative.embeddings is not None and relative.terms:
            pos_q, pos_k = _position_projections(w, relative, num_heads)
            c2p, p2c = disentangled_bias(q, k, pos_q, pos_k, relative.index, relative.span, scale)
            bias = c2p if p2c is None else p2c if c2p is None else c2p + p2c
    heads = scaled_dot_product_attention(q, k, v, mask, bias, scale)
    if not trace:  # keep what is read on: the (B, h, S, S) scores go now, as plain locals would
        heads = AttentionTrace(probs=heads.probs, context=heads.context)
    concat = merge_heads(heads.context)  # (B, h, S, d) -> (B, S, H)
    out = linear(concat, w.W_o, w.b_o)
    if trace:
        heads = replace(heads, q=q, k=k, v=v, concat=concat, output=out, c2p=c2p, p2c=p2c)
        if rotary:
            heads = replace(heads, q_unrotated=q_in, k_unrotated=k_in, cos=relative.cos, sin=relative.sin)
        return heads
    return AttentionTrace(probs=heads.probs, output=out)


def _position_projections(
    w: AttentionWeights, relative: RelativePositions, num_heads: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """DeBERTa's projected relative embeddings (pos_q, pos_k), each (h, 2K, d) or
    None: P W + b, with the layer's own W_q / W_k when ``share_att_key`` (v3),
    else its ``pos_query_proj`` / ``pos_key_proj``."""
    P = relative.embeddings[None]  # (2K, H) -> (1, 2K, H)
    pos_q = pos_k = None
    if "c2p" in relative.terms:
        W, b = (w.W_k, w.b_k) if relative.share_att_key else (w.W_pk, w.b_pk)
        pos_k = split_heads(linear(P, W, b), num_heads)[0]  # (1, 2K, H) -> (h, 2K, d)
    if "p2c" in relative.terms:
        W, b = (w.W_q, w.b_q) if relative.share_att_key else (w.W_pq, w.b_pq)
        pos_q = split_heads(linear(P, W, b), num_heads)[0]  # (1, 2K, H) -> (h, 2K, d)
    return pos_q, pos_k


def erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``scipy.special.erf``, imported on first use: scipy.special adds about
    24 MiB to a process, and float32 on the fast path never calls it (it has
    its own erf, :func:`minibert.encoder.kernels.erf32`)."""
    from scipy.special import erf as scipy_erf

    return scipy_erf(x, out=out)


def gelu(x: np.ndarray, erf=erf) -> np.ndarray:
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), exact.

    BERT's activation (config ``hidden_act: "gelu"``; Hendrycks & Gimpel
    2016). The article writes ReLU here, which is not what BERT computes.
    ``erf``: scipy's; the fast schedule passes its float32 one
    (:func:`minibert.encoder.kernels.erf32`).
    """
    return 0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Config ``hidden_act: "gelu_new"`` or ``"gelu_pytorch_tanh"`` (GPT-2, some
    BERT variants).
    """
    c = np.sqrt(2 / np.pi).astype(x.dtype)
    return 0.5 * x * (1 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x**3)))


def relu(x: np.ndarray) -> np.ndarray:
    """ReLU(x) = max(0, x). Config ``hidden_act: "relu"``."""
    return np.maximum(x, 0)


def glu(pre: np.ndarray, gate: np.ndarray, act) -> np.ndarray:
    """A gated linear unit: act(x W_1 + b_1) * (x W_gate + b_gate), given both products.

    pre, gate: (..., I) -> (..., I). With GELU it is GeGLU (ModernBERT: its
    ``Wi`` gives [pre | gate], ``act(input) * gate``), with SiLU SwiGLU.
    Shazeer 2020, "GLU Variants Improve Transformer", eq. 5-6.
    """
    return act(pre) * gate


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU(x) = x * sigmoid(x) = x / (1 + exp(-x)). Config ``hidden_act: "silu"``
    (NomicBERT's SwiGLU; Elfwing et al. 2018, Ramachandran et al. 2017 "Swish")."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0: x / inf = -0, the limit
        return x / (1 + np.exp(-x))


#: ``hidden_act`` value in config.json -> activation function.
ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
    "silu": silu,
}


def feed_forward(x: np.ndarray, w: FeedForwardWeights, act=gelu, trace: bool = False) -> FeedForwardTrace:
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to each position alone.

    x: (B, S, H); w: W_1 (H, I), b_1, W_2 (I, H), b_2
    (:class:`~minibert.encoder.params.FeedForwardWeights`). Returns ``output``
    (B, S, H); with ``trace`` also ``pre`` and ``act`` (B, S, I).
    ``act`` follows config ``hidden_act``: GELU for BERT, where the article
    writes ReLU. With ``w.W_gate`` (ModernBERT, NomicBERT) the FFN is gated:
    act(x W_1 + b_1) * (x W_gate + b_gate) (:func:`glu`); the trace's ``act``
    is that product and its ``gate`` x W_gate + b_gate (B, S, I).
    """
    pre = linear(x, w.W_1, w.b_1)  # (B, S, H) -> (B, S, I)
    gate = None
    if w.W_gate is None:
        a = act(pre)
    else:  # ModernBERT's GeGLU, NomicBERT's SwiGLU
        gate = linear(x, w.W_gate, w.b_gate)  # (B, S, H) -> (B, S, I)
        a = glu(pre, gate, act)  # (B, S, I)
    out = linear(a, w.W_2, w.b_2)  # (B, S, I) -> (B, S, H)
    return FeedForwardTrace(pre, a, out, gate) if trace else FeedForwardTrace(output=out)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta.

    x: (..., H); mu and sigma^2 are the mean and the biased (1/H) variance
    over the last axis; gamma, beta: (H,). ``eps`` is config
    ``layer_norm_eps`` (1e-12 for BERT).
    """
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean(np.square(x - mu), axis=-1, keepdims=True)
    return gamma * ((x - mu) / np.sqrt(var + np.asarray(eps, x.dtype))) + beta


def sinusoidal_positions(P: int, E: int, dtype=np.float64) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/E)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/E)).

    -> (P, E). The fixed position table of Vaswani et al. 2017 (section 3.5),
    used by DistilBERT when config ``sinusoidal_pos_embds`` is true and the
    checkpoint carries no learned table (transformers'
    ``create_sinusoidal_embeddings``). Computed in float64, then cast.
    """
    pos = np.arange(P, dtype=np.float64)[:, None]  # (P, 1)
    two_i = 2 * (np.arange(E) // 2)  # 0, 0, 2, 2, 4, 4, ...
    angle = pos / np.power(10000.0, two_i / E)  # (P, 1) -> (P, E)
    table = np.where(np.arange(E) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(dtype)


def embed(
    input_ids: np.ndarray,
    position_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    w: EmbeddingWeights,
    eps: float,
    trace: bool = False,
) -> EmbeddingTrace:
    """Embeddings = LayerNorm(word[ids] + position[pos] + token_type[types]).

    input_ids, position_ids, token_type_ids: (B, S) ints; w: the word (V, E),
    position (P, E) and token_type (T, E) tables and the LayerNorm
    (:class:`~minibert.encoder.params.EmbeddingWeights`) -> ``output`` (B, S, E).
    DistilBERT, MPNet and DeBERTa-v3 have no token-type table (``w.token_type``
    None), DeBERTa-v3 no position table (``w.position`` None: positions enter
    only through its attention). ELECTRA and
    ALBERT then project E -> H with one :func:`linear`, ``projection``
    (B, S, H). ``hidden_state``, what the encoder layers read, is the
    projection if there is one, else the output; without ``trace`` the
    record holds only that, with it every part and their sum
    (:class:`~minibert.encoder.trace.EmbeddingTrace`).
    """
    e_word = w.word[input_ids]  # (B, S) -> (B, S, E)
    total, e_pos = e_word, None
    if w.position is not None:  # DeBERTa-v3 (position_biased_input false) has none
        e_pos = w.position[position_ids]  # (B, S) -> (B, S, E)
        total = total + e_pos
    e_type = None
    if w.token_type is not None:
        e_type = w.token_type[token_type_ids]  # (B, S) -> (B, S, E)
        total = total + e_type
    out = layer_norm(total, w.ln.gamma, w.ln.beta, eps)
    projection = None
    if w.W_proj is not None:
        projection = linear(out, w.W_proj, w.b_proj)  # (B, S, E) -> (B, S, H)
    if trace:
        return EmbeddingTrace(e_word, e_pos, e_type, total, out, projection)
    if projection is not None:
        return EmbeddingTrace(projection=projection)
    return EmbeddingTrace(output=out)


def encoder_layer(
    x: np.ndarray,
    layer: LayerWeights,
    mask: np.ndarray | None,
    num_heads: int,
    act,
    eps: float,
    trace: bool = False,
    relative: RelativePositions | None = None,
) -> LayerTrace:
    """One post-LN Transformer encoder layer, as BERT computes it:

        x_1 = LayerNorm(x + MultiHead(x))
        x_2 = LayerNorm(x_1 + FFN(x_1))

    x: (B, S, H); ``layer``: one layer's weights, grouped as the formulas use
    them (:class:`~minibert.encoder.params.LayerWeights`). Returns x_2 (``ln_2``,
    (B, S, H)) and the attention probabilities (``attention.probs``,
    (B, h, S, S)); with ``trace``, every intermediate
    (:class:`~minibert.encoder.trace.LayerTrace`). LayerNorm comes after each
    residual sum (post-LN, Vaswani et al. 2017 and BERT), not before it.
    ``relative``: the relative positions every layer's attention reads
    (MPNet, DeBERTa; :func:`multi_head_attention`), or None.
    """
    attention = multi_head_attention(x, layer.attention, mask, num_heads, trace, relative)
    residual_1 = x + attention.output
    x_1 = layer_norm(residual_1, layer.ln_1.gamma, layer.ln_1.beta, eps)
    ffn = feed_forward(x_1, layer.ffn, act, trace)
    residual_2 = x_1 + ffn.output
    x_2 = layer_norm(residual_2, layer.ln_2.gamma, layer.ln_2.beta, eps)
    if trace:
        return LayerTrace(attention, residual_1, x_1, ffn, residual_2, x_2)
    return LayerTrace(AttentionTrace(probs=attention.probs), ln_2=x_2)


def pre_ln_layer(
    x: np.ndarray,
    layer: LayerWeights,
    mask: np.ndarray | None,
    num_heads: int,
    act,
    eps: float,
    trace: bool = False,
    relative: RelativePositions | None = None,
) -> LayerTrace:
    """One pre-LN Transformer encoder layer, as ModernBERT computes it:

        x_1 = x + MultiHead(LayerNorm_1(x))
        x_2 = x_1 + FFN(LayerNorm_2(x_1))

    LayerNorm comes before each sublayer and the residual stream itself is
    never normalised (Xiong et al. 2020); the encoder ends with one more
    LayerNorm (``Weights.final_ln``). ``layer.ln_1`` None: the identity
    (ModernBERT's first layer, whose input is the normalised embeddings).
    x: (B, S, H) -> ``ln_2`` x_2 (B, S, H); the trace's ``attention_input``
    is LayerNorm_1(x) (x itself in the first layer), ``residual_1`` x_1,
    ``ln_1`` LayerNorm_2(x_1) (what the FFN reads), ``residual_2`` and
    ``ln_2`` both x_2 (:class:`~minibert.encoder.trace.LayerTrace`).
    """
    normed = x if layer.ln_1 is None else layer_norm(x, layer.ln_1.gamma, layer.ln_1.beta, eps)
    attention = multi_head_attention(normed, layer.attention, mask, num_heads, trace, relative)
    x_1 = x + attention.output
    ffn_in = layer_norm(x_1, layer.ln_2.gamma, layer.ln_2.beta, eps)
    ffn = feed_forward(ffn_in, layer.ffn, act, trace)
    x_2 = x_1 + ffn.output
    if trace:
        return LayerTrace(attention, x_1, ffn_in, ffn, x_2, x_2, attention_input=normed)
    return LayerTrace(AttentionTrace(probs=attention.probs), ln_2=x_2)
