"""The fast forward pass: the same encoder as :func:`minibert.encoder.forward.forward`,
arranged for speed. :mod:`minibert.encoder.ops` stays the reference; this module is
tested equal to it (``tests/test_fast.py``) and to transformers.

What it does differently, and why (docs/performance.md has the measurements):

- **Packed tokens.** The padded batch (B, S) is packed into the N real tokens
  of all texts, so every matrix product runs on (N, H) and no time is spent on
  padding. Attention runs per text on its own unpadded length, so no mask is
  needed. Padding positions of the returned hidden states are 0 (the plain
  path leaves whatever the formulas give there; neither is meaningful).
- **One fused QKV product.** W_q, W_k, W_v are concatenated into one
  (H, 3H) matrix per layer, built once per Weights and kept beside it
  (:func:`fused_qkv`; the record the formulas take holds them apart); the
  1/sqrt(d) of attention is folded into its W_q and b_q columns, which
  changes float32 results by rounding only. DeBERTa divides its scores by
  sqrt(d (1 + #terms)), a float32 root (:func:`ops.disentangled_scale`):
  its layout folds that number in instead (``fused_qkv(weights, divisor)``).
- **Relative positions once.** MPNet's bias (h, S, S) is computed once per
  batch and added to the scores of every layer. DeBERTa's relative
  embeddings are projected once per Weights and layer (:func:`positions`),
  its clamped gather indices once per batch; per text and head group, c2p
  and p2c are one product of Q (already divided by s) or K with the
  relative embeddings the text reads, then a gather
  (:func:`_disentangled_bias`), added to the scores as MPNet's bias is.
- **Row blocks.** The attention output projection, both LayerNorms and the
  FFN run on blocks of :data:`ROW_BLOCK` tokens (:func:`_layer_rows`), so
  the (rows, I) FFN intermediate stays in cache and is never materialised
  for the whole batch.
- **The formulas, and kernels where they pay.** Each piece is computed by
  the formulas of :mod:`minibert.encoder.ops` (``ops.embed``,
  ``ops.linear``, ``ops.feed_forward``), except three that run as in-place
  kernels of :mod:`minibert.encoder.kernels`, kept because this schedule
  measured faster with them (docs/performance.md, Kernels;
  ``bench/kernels.py``): LayerNorm, the float32 GELU with
  :func:`~minibert.encoder.kernels.erf32` (a polynomial erf within 1 ulp of
  scipy's, the only approximation of the fast path, float32 only) and
  attention per head group (softmax without the max shift, rows normalised
  after the product with V). Each is tested equal to its formula
  (``tests/test_kernels.py``); besides erf32 they change rounding only.

- **Work units, and threads that change no bit.** The batch is cut into
  units of about :data:`UNIT_TOKENS` tokens by the texts' lengths alone
  (:func:`units`); each unit is packed and run through the encoder on its
  own, and n threads only choose which units they run. A row of a BLAS
  product can round differently with the number of rows in the product, so
  cutting by the thread count (as this module did) made 1 and 2 threads
  differ by up to 9e-7; cut by the batch, every thread count gives the same
  bits (float32 and float64, tested). Where a unit runs on an n-thread BLAS
  instead (one-unit batches), it relies on OpenBLAS's matrix products giving
  the same bits at any thread count (tested on the encoder's shapes, in
  ``tests/test_threads.py``; in float32 only, and only once the probabilities
  @ V are summed in blocks of keys, :func:`kernels.times_v`); its
  matrix-vector products do not, so rows are summed with ``einsum``. Units
  also bound the working memory, whatever the batch size. The plain path
  makes no such promise.

- **Sliding windows, the band only.** A local layer of ModernBERT lets query i
  see key j only when |i - j| <= w (w = local_attention // 2); every other
  score gets probability exactly 0. Its attention runs on blocks of
  :data:`BAND_ROWS` queries, each over the keys of its window alone
  (:func:`_band_attention`, the schedule of :func:`ops.band_attention`), so
  a text of n tokens costs O(n w) time and its scores take at most
  :data:`ATTENTION_BLOCK` elements (1 MB in float32), where all n x n scores
  of one head are 256 MB at 8,192 tokens (measured: docs/performance.md,
  Sliding windows). The maps, when asked for, are still (h, S, S), with
  exact zeros outside the window.

- **Attention maps when asked for.** Each text's probabilities are divided
  from the exp(S) its attention already holds in cache straight into the
  returned (B, h, S, S) arrays at [b, :, :n, :n]; everything else stays 0.
  The context is computed the same way with or without them, so the hidden
  states are the same bits (tested). Writing the maps costs mostly the
  first touch of fresh memory; :func:`_map_arrays` allocates them the way
  that measured cheapest.

Not computed here: traces. :meth:`minibert.Model.forward` runs the formulas
of :func:`minibert.encoder.forward.forward` for those and for ``impl="plain"`` (the
choice is made in one place, ``Model._compute``).

Shape alphabet as in :mod:`minibert.encoder.ops` (B, S, H, h, d, I), plus:

    N  real (non-padding) tokens of the work unit, packed into rows
    n  one text's real tokens          g  heads whose scores are computed at once
    m  rows of a block (<= ROW_BLOCK; of a sliding-window layer's queries, <= BAND_ROWS)
    k  keys a block of a sliding-window layer reads (<= m + 2 (local_attention // 2))
    r  DeBERTa's relative embeddings one text reads (<= 2K)

Shape comments are checked while the code runs (``tests/test_shape_comments.py``);
N, n, g, m, k and r are the values of the variables of those names where they run.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Collection

import numpy as np

from minibert.encoder import kernels, ops, threads
from minibert.encoder.config import Config
from minibert.encoder.forward import relative_positions
from minibert.encoder.params import RelativePositions, Weights

#: Tokens per row block of the post-attention part of a layer: (ROW_BLOCK, I)
#: float32 is 1.5 MB for I = 1536, and BLAS is near full speed at this size.
ROW_BLOCK = 256

#: Score elements (g heads x n x n) computed at once in attention: 2**18
#: float32 is 1 MB, so exp and the product with V read them from cache.
ATTENTION_BLOCK = 2**18


def _attention(
    qkv: np.ndarray,
    ctx: np.ndarray,
    scores: np.ndarray,
    h: int,
    probs: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    disentangled: tuple | None = None,
) -> None:
    """ctx <- multi-head attention context of one text, before W^O; and, if
    ``probs`` is given, probs <- its attention probabilities.

    qkv: (n, 3H) = [Q / s | K | V] of the text's n real tokens (s = sqrt(d), or
    DeBERTa's :func:`ops.disentangled_scale`);
    ctx: (n, H), written; scores: flat scratch of >= g n^2 elements for the
    g = :func:`_heads_at_once` heads of a group (see :data:`ATTENTION_BLOCK`);
    probs: None, or (h, n, n), written (a view of the returned (B, h, S, S)
    array at the text's real queries and keys); bias: None, or (h, n, n),
    added to the scaled scores (MPNet's relative position bias,
    :func:`minibert.encoder.ops.relative_position_bias`, computed once per batch);
    disentangled: None, or DeBERTa's position terms of this layer and text
    (:func:`_disentangled`), whose c2p + p2c is computed per head group
    (:func:`_disentangled_bias`) and added to the scaled scores the same way.

    The schedule of :func:`ops.scaled_dot_product_attention` for one text:
    heads go g at a time, g chosen so the g (n, n) score matrices stay in
    cache (all heads at once for short texts, one by one at 512), each group
    computed by the kernel :func:`kernels.attention` (no mask: the text's
    tokens are all real).
    """
    n, H3 = qkv.shape
    d = H3 // (3 * h)
    heads = qkv.reshape(n, 3, h, d)  # (n, 3H) -> (n, 3, h, d)
    out = ctx.reshape(n, h, d).transpose(1, 0, 2)  # (n, H) -> (h, n, d), a view of ctx
    step = _heads_at_once(n, h)
    for h0 in range(0, h, step):
        g = min(step, h - h0)  # heads in this group
        group = slice(h0, h0 + g)
        q = heads[:, 0, group].transpose(1, 0, 2)  # (n, g, d) -> (g, n, d)
        kT = heads[:, 1, group].transpose(1, 2, 0)  # (n, g, d) -> (g, d, n)
        v = heads[:, 2, group].transpose(1, 0, 2)  # (n, g, d) -> (g, n, d)
        p = scores[: g * n * n].reshape(g, n, n)
        group_probs = None if probs is None else probs[group]
        group_bias = None if bias is None else bias[group]
        if disentangled is not None:
            group_bias = _disentangled_bias(q, kT, group, *disentangled)
        kernels.attention(q, kT, v, p, out[group], group_probs, group_bias)


#: Queries per block of a sliding-window layer (:func:`_band_attention`): each block
#: reads at most BAND_ROWS + 2w keys, 192 for ModernBERT's w = 64 (one product of
#: :func:`kernels.times_v`), so it computes 1.5 times the 129 scores per query the
#: window needs. Measured on base shapes (12 heads of 64, w = 64, float32, 1 thread,
#: medians of 6 rounds, one local layer's attention at 2,048 / 8,192 tokens): blocks
#: of 32 27 / 106 ms, 64 27 / 106 ms, 128 31 / 124 ms, 256 43 / 182 ms.
BAND_ROWS = 64


def _band_attention(qkv, ctx, scores, h: int, probs, positions: np.ndarray, half: int) -> None:
    """ctx <- the context of one text in a sliding-window layer, before W^O, computed
    on the band only; and, if ``probs`` is given, probs <- its attention probabilities.

    qkv: (n, 3H) = [Q / s | K | V] (as :func:`_attention`); ctx: (n, H), written;
    scores: flat scratch of >= g m k elements (:func:`_score_scratch`); probs: None,
    or (h, n, n), written in full: the band, and exact zeros outside it;
    positions: (n,) the text's token positions, increasing; half: w, a query sees
    the keys at most w positions away.

    The schedule of :func:`ops.band_attention`: the queries go in blocks of
    m = :data:`BAND_ROWS`, each over the k keys of its span
    (:func:`ops.window_span`, at most m + 2w), with :func:`ops.window_bias` on the
    scores and the heads g at a time, each group by the kernel
    :func:`kernels.attention`. Scores and their memory grow with n (m + 2w), not n^2.
    """
    n, H3 = qkv.shape
    d = H3 // (3 * h)
    heads = qkv.reshape(n, 3, h, d)  # (n, 3H) -> (n, 3, h, d)
    out = ctx.reshape(n, h, d).transpose(1, 0, 2)  # (n, H) -> (h, n, d), a view of ctx
    rows = min(BAND_ROWS, n)
    step = _heads_at_once_in_band(rows, min(n, rows + 2 * half), h)
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        k0, k1 = ops.window_span(positions, lo, hi, half)
        m, k = hi - lo, k1 - k0
        bias = ops.window_bias(positions[lo:hi], positions[k0:k1], half, qkv.dtype)  # (m, k)
        bias = bias if bias.any() else None  # every key of the span in every query's window
        for h0 in range(0, h, step):
            g = min(step, h - h0)  # heads in this group
            group = slice(h0, h0 + g)
            q = heads[lo:hi, 0, group].transpose(1, 0, 2)  # (m, g, d) -> (g, m, d)
            kT = heads[k0:k1, 1, group].transpose(1, 2, 0)  # (k, g, d) -> (g, d, k)
            v = heads[k0:k1, 2, group].transpose(1, 0, 2)  # (k, g, d) -> (g, k, d)
            p = scores[: g * m * k].reshape(g, m, k)
            group_probs = None if probs is None else probs[group, lo:hi, k0:k1]
            kernels.attention(q, kT, v, p, out[group, lo:hi], group_probs, bias)
        if probs is not None:  # outside the band: exact zeros, as in the masked formula
            probs[:, lo:hi, :k0] = 0
            probs[:, lo:hi, k1:] = 0


def _heads_at_once_in_band(m: int, k: int, h: int) -> int:
    """g: heads whose (m, k) band scores :func:`_band_attention` computes at once,
    so that g m k stays within :data:`ATTENTION_BLOCK` (at least one head)."""
    return max(1, min(h, ATTENTION_BLOCK // (m * k)))


def _text_attention(
    qkv: np.ndarray,
    ctx: np.ndarray,
    scores: np.ndarray,
    h: int,
    maps: np.ndarray | None,
    real: np.ndarray,
    bias: np.ndarray | None = None,
    relative: tuple | None = None,
    window: int | None = None,
) -> None:
    """:func:`_attention` of one text, writing its attention probabilities,
    if ``maps`` (h, S, S) is given, at its real queries and keys there
    (``real``: (S,) bool, n of them; every other entry is left as it is, 0).
    ``bias``: None, or the batch's position bias (h, S, S), read
    at the text's real positions (relative distances count padding, as in
    the formulas). ``relative``: None, or DeBERTa's (pos_qT, pos_kT, at_c2p,
    at_p2c) of this layer and batch (see :func:`_disentangled`). ``window``:
    None, or w of a sliding-window layer, whose attention is
    :func:`_band_attention` at the text's positions in the batch (padding
    counts, as in :func:`ops.sliding_window_mask`).

    The tokenizer pads on the right, so the real tokens are the first n and
    the probabilities are written straight into maps[:, :n, :n]; a hand-made
    mask with padding elsewhere goes through a scratch array.
    """
    n = len(qkv)
    at = None if real[:n].all() else np.flatnonzero(real)
    if window is not None:
        positions = np.arange(n) if at is None else at  # (n,)

        def attend(probs):
            _band_attention(qkv, ctx, scores, h, probs, positions, window)

    else:
        if bias is not None:
            bias = bias[:, :n, :n] if at is None else bias[:, at[:, None], at]  # (h, S, S) -> (h, n, n)
        terms = None if relative is None else _disentangled(*relative, at, n)

        def attend(probs):
            _attention(qkv, ctx, scores, h, probs, bias, terms)

    if maps is None:
        return attend(None)
    if at is None:
        return attend(maps[:, :n, :n])
    probs = np.empty((h, n, n), qkv.dtype)
    attend(probs)
    maps[:, at[:, None], at] = probs


def _disentangled(pos_qT, pos_kT, at_c2p, at_p2c, at, n: int) -> tuple:
    """DeBERTa's position terms for one text of n real tokens in one layer:
    (pos_qT, p2c_flat, pos_kT, c2p_flat), each projection restricted to the
    relative embeddings the text reads, with the flat gather indices into its
    product with K or Q.

    pos_qT, pos_kT: (h, d, 2K) or None, the layer's projected relative
    embeddings (pos_qT divided by s; :func:`positions`); at_c2p, at_p2c:
    (S, S), the batch's clamped gather indices clip(+-delta + K, 0, 2K - 1)
    of :func:`ops.disentangled_bias`, read at the text's positions (``at``,
    or the first n). A right-padded text of n tokens reads at most 2n - 1 of
    the 2K embeddings: only the r columns it reads are multiplied.

    The gathers of :func:`_disentangled_bias` read the (n, r) product of one
    head as flat memory: c2p[i, j] = c2p_all[i, c(i, j)] is element
    i r + c(i, j), so c2p_flat = (i r + c(i, j)), (n, n); p2c[i, j] =
    p2c_all[j, c'(j, i)] (rows are keys) is element j r + c'(j, i), so p2c_flat
    is indexed [query, key] already and p2c needs no transpose. One np.take of
    flat indices costs a quarter of take_along_axis's broadcast index arrays
    (3.4 against 14 ms per head at n = 512); the values gathered are the same.
    """
    terms = []
    rows = np.arange(n)[:, None]  # (n, 1)
    for posT, cols, transpose in ((pos_qT, at_p2c, True), (pos_kT, at_c2p, False)):
        if posT is None:
            terms += [None, None]
            continue
        cols = cols[:n, :n] if at is None else cols[at[:, None], at]  # (S, S) -> (n, n)
        lo, hi = int(cols.min()), int(cols.max()) + 1
        flat = rows * (hi - lo) + (cols - lo)  # (n, n): row i of the (n, r) product, column c - lo
        terms += [posT[:, :, lo:hi], np.ascontiguousarray(flat.T) if transpose else flat]
    return tuple(terms)


def _disentangled_bias(q, kT, group: slice, pos_qT, p2c_flat, pos_kT, c2p_flat) -> np.ndarray:
    """c2p + p2c of :func:`ops.disentangled_bias` for g heads of one text, (g, n, n):

        c2p[i, j] = Q_i . Kr_{c(i, j)} / s,    p2c[i, j] = K_j . Qr_{c'(j, i)} / s

    q: (g, n, d), already divided by s (the fused layout); kT: (g, d, n);
    pos_qT, pos_kT: (h, d, r) or None, the projections already divided by s
    (p2c's Qr) or not (c2p's Kr), restricted to the r columns the text reads;
    p2c_flat, c2p_flat: (n, n) flat indices into one head's (n, r) product
    (:func:`_disentangled`). Each term is one product with the r relative
    embeddings, then a gather, as in the formula.
    """
    bias = None
    g, n, _ = q.shape
    if pos_kT is not None:
        r = pos_kT.shape[-1]
        c2p_all = q @ pos_kT[group]  # (g, n, d) @ (g, d, r) -> (g, n, r)
        bias = np.take(c2p_all.reshape(g, n * r), c2p_flat, axis=1)  # (g, n r) -> (g, n, n)
    if pos_qT is not None:
        r = pos_qT.shape[-1]
        p2c_all = np.swapaxes(kT, -1, -2) @ pos_qT[group]  # (g, n, d) @ (g, d, r) -> (g, n, r), [key, .]
        p2c = np.take(p2c_all.reshape(g, n * r), p2c_flat, axis=1)  # (g, n r) -> (g, n, n), [query, key]
        bias = p2c if bias is None else np.add(bias, p2c, out=bias)
    return bias


def _heads_at_once(n: int, h: int) -> int:
    """g: heads whose (n, n) scores :func:`_attention` computes at once, so
    that g n^2 stays within :data:`ATTENTION_BLOCK` (at least one head)."""
    return max(1, min(h, ATTENTION_BLOCK // (n * n)))


def _score_scratch(lengths, h: int, layer_types: tuple[str, ...] = (), half: int = 0) -> int:
    """Elements of the scores scratch that every text of ``lengths`` needs:
    the largest g(n) n^2. Not always the longest text's: g shrinks in steps,
    so a shorter text can need more (n = 190 with h = 12 takes 7 heads at
    once, 252,700 elements; n = 200 takes 6, 240,000). Global layers (every
    family's, and ModernBERT's ``full_attention``) need that; sliding-window
    layers (``layer_types``' ``sliding_attention``, w = ``half``) their
    band's largest g m k (:func:`_band_attention`), so a model of local layers
    only never holds n^2 scores."""
    sizes = [int(n) for n in set(lengths.tolist()) if n]
    need = 1
    if not layer_types or "full_attention" in layer_types:
        need = max((_heads_at_once(n, h) * n**2 for n in sizes), default=1)
    if "sliding_attention" in layer_types:
        for n in sizes:
            m = min(BAND_ROWS, n)
            k = min(n, m + 2 * half)
            need = max(need, _heads_at_once_in_band(m, k, h) * m * k)
    return need


def forward(
    weights: Weights,
    config: Config,
    input_ids: np.ndarray,
    position_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    attention_mask: np.ndarray,
    output_attentions: bool = False,
    attention_layers: Collection[int] | None = None,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray | None, ...] | None]:
    """The encoder, fast: the inputs of :func:`minibert.encoder.forward.forward` (plus
    the position ids, which :func:`minibert.encoder.forward.position_ids` computes per
    family), and its hidden states and attention maps, to float rounding.

    input_ids, position_ids, token_type_ids, attention_mask: (B, S) ints.
    Returns (hidden_states, attentions): hidden_states one array (B, S, H)
    per step of ``weights.layer_map`` plus the embeddings, 0 at padding
    positions; attentions, with ``output_attentions``, one array (B, h, S, S)
    per step, 0 at every padding query and key (each real query's row sums
    to 1 over the real keys), else None; ``attention_layers`` (steps 1..L,
    checked by the caller) keeps only those steps' maps, the others None and
    never allocated. The hidden states are the same bits either way (see
    :func:`_attention`).

    The texts are cut into work units (:func:`units`) by their lengths
    alone, and each unit runs through the encoder on its own, so a text's
    bits depend on the batch, never on the thread count. With n > 1 threads
    (:func:`minibert.encoder.threads.threads`; by default as many as NumPy's BLAS is
    set to use), the units run on n threads, each with a one-thread BLAS: no
    text depends on another, so this parallelises every operation, not only
    the matrix products. A batch that is one unit (one text, a few short
    ones), or one whose largest unit holds most of the work, runs its units
    one after another on an n-thread BLAS instead; OpenBLAS gives the same
    bits at any thread count (``tests/test_threads.py`` checks it on the
    encoder's shapes).
    Working memory is that of one unit per thread, whatever the batch size;
    the returned hidden states are (L + 1) B S H.
    """
    B, S = input_ids.shape
    real = attention_mask.astype(bool)
    dense = bool(real.all())
    steps = len(weights.layer_map) + 1
    alloc = np.empty if dense else np.zeros  # padding positions are 0
    dtype = weights.embeddings.word.dtype
    outs = [alloc((B, S, config.hidden_size), dtype) for _ in range(steps)]
    h = config.num_attention_heads
    maps = None
    if output_attentions:
        wanted = range(1, steps) if attention_layers is None else sorted(set(attention_layers))
        arrays = iter(_map_arrays(len(wanted), (B, h, S, S), dtype, alloc))
        maps = [next(arrays) if i in wanted else None for i in range(1, steps)]
    lengths = real.sum(axis=1)
    todo = units(lengths)
    n = threads.wanted()
    bias, relative, divisor = _relative_terms(config, weights, S, dtype)
    rotary = rotary_tables(config, S, dtype) if config.layer_types else None
    qkv_weights = fused_qkv(weights, divisor)
    inputs = (input_ids, position_ids, token_type_ids, real)
    args = (weights, config, inputs, outs, maps, bias, rotary, relative, qkv_weights)
    work = [float(_cost(lengths[b0:b1], config).sum()) for b0, b1 in todo]
    if n > 1 and len(todo) > 1 and max(work) <= 0.75 * sum(work):
        costliest_first = [todo[j] for j in np.argsort(-np.asarray(work), kind="stable")]
        with threads.blas_limit(1):
            threads.run_on_threads(lambda b0, b1: _encode(*args, b0, b1), costliest_first, min(n, len(todo)))
    else:
        for b0, b1 in todo:
            _encode(*args, b0, b1)
    return tuple(outs), None if maps is None else tuple(maps)


def _relative_terms(config: Config, weights: Weights, S: int, dtype) -> tuple:
    """What the layers read about relative positions in a batch padded to S:
    (bias, relative, divisor), each None where the family has none.

    MPNet: bias (h, S, S), the position bias of every layer, once per batch.
    DeBERTa: divisor, the float32 scale s of its scores; relative, per stored
    layer the projected relative embeddings (:func:`positions`, once per
    Weights) and the (S, S) clamped gather indices of c2p and p2c
    (:func:`ops.disentangled_bias`), once per batch.
    """
    if config.family == "mpnet":
        return (
            ops.relative_position_bias(S, weights.relative.table)[0],
            None,
            None,
        )  # (1, h, S, S) -> (h, S, S)
    if config.family != "deberta-v2":
        return None, None, None
    rel = relative_positions(config, weights, S, dtype)
    if rel.embeddings is None or not rel.terms:
        return None, None, rel.scale
    at_c2p, at_p2c = ops.gather_index(rel.index, rel.span)  # (S, S) each
    return None, (positions(weights, rel), at_c2p, at_p2c), rel.scale


#: Bytes of one layer's attention maps below which each layer gets its own
#: array (see :func:`_map_arrays`): glibc malloc's largest dynamic mmap
#: threshold (32 MiB on 64-bit).
SMALL_MAPS = 32 * 2**20


def _map_arrays(layers: int, shape: tuple[int, ...], dtype, alloc) -> list[np.ndarray]:
    """``layers`` arrays of ``shape`` (B, h, S, S) for the attention maps.

    Writing the maps costs little more than first touching fresh memory
    (the kernel zeroes and maps each page), so the allocation decides it.
    Below :data:`SMALL_MAPS` bytes per layer, one array each: glibc's malloc
    serves blocks of that size from its heap once it has seen one freed,
    so repeated calls reuse pages that are already mapped (32 x 128: no
    system time at all). Larger, each array is a fresh mapping whatever is
    done, and one array for all layers, returned as its ``layers`` views,
    cost less system time than one per layer (8 x 512 at 1 thread: 0.24 s
    against 0.60 s per call; docs/performance.md). A caller that keeps one
    layer's view then keeps every layer's memory; ``np.array(view)`` copies
    it out.
    """
    if int(np.prod(shape)) * np.dtype(dtype).itemsize < SMALL_MAPS:
        return [alloc(shape, dtype) for _ in range(layers)]
    return list(alloc((layers, *shape), dtype))


#: Tokens per work unit (see :func:`units`): enough rows that the fused QKV
#: product runs at full BLAS speed (at 1 thread, units of 256 tokens cost about
#: 8% more than units of 512 on 32 x 128; docs/performance.md), few enough that
#: a batch of a few thousand tokens gives every thread several units.
UNIT_TOKENS = 512

#: Tokens below which a batch is one unit: smaller, the fixed cost of a unit
#: (its packing, its Python per layer) outweighs what a second thread gains.
SPLIT_TOKENS = 128


def _cost(lengths: np.ndarray, config: Config) -> np.ndarray:
    """Work of each text, in multiply-adds: the matrix products per token
    plus attention, which grows with the text's length."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    lengths = lengths.astype(np.float64)
    return lengths * (4 * H * H + 2 * H * I + 2 * lengths * H) * L


def units(lengths: np.ndarray) -> list[tuple[int, int]]:
    """Cut texts 0..B-1 into contiguous work units of about
    :data:`UNIT_TOKENS` tokens each, from the texts' lengths alone.

    A unit is what one matrix product packs together, and a row of a BLAS
    product can round differently depending on how many rows the product
    has: so the units, and with them every bit of the result, must not
    depend on the thread count or the machine. Units are cut at the text
    boundaries nearest to equal shares of the token count; a text is never
    split.

    Their number k is even (the even number nearest to tokens / UNIT_TOKENS,
    at least 2 from :data:`SPLIT_TOKENS` tokens on), so two threads share a
    batch evenly: a batch of 32 short texts is 500 to 2,500 tokens, and as
    one unit (run on a 2-thread BLAS, every other operation on one thread)
    or 3 or 5 units (one thread idle for the last) it ran at 0.89x the
    speed of the old split into one range per thread (issue 21). More
    threads take the units from a queue, the costliest first
    (:func:`forward`).
    """
    B = len(lengths)
    total = int(lengths.sum())
    k = 2 * int(np.floor(total / UNIT_TOKENS / 2 + 0.5))  # the nearest even number
    k = min(B, max(k, 2 if total >= SPLIT_TOKENS else 1))
    if k <= 1:
        return [(0, B)]
    ends = np.concatenate([[0], np.cumsum(lengths)])  # ends[c]: tokens of texts 0..c-1
    cuts = {0, B}
    for j in range(1, k):
        target = total * j / k
        c = int(np.searchsorted(ends, target))  # the first cut at or past the target ...
        cuts.add(c - 1 if target - ends[c - 1] < ends[c] - target else c)  # ... or the one before
    cuts = sorted(cuts)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def rotary_tables(config: Config, S: int, dtype) -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    """ModernBERT and NomicBERT, once per batch: per kind of layer, its rotary tables cos, sin
    (S, d) (:func:`ops.rotary_angles` with the kind's base) and its window w: None on
    global layers, local_attention // 2 on sliding-window ones, whose attention
    reads only the keys within w of each query (:func:`_band_attention`)."""
    d = config.head_size
    positions = np.arange(S)
    out = {}
    for kind, theta in (
        ("full_attention", config.global_rope_theta),
        ("sliding_attention", config.local_rope_theta),
    ):
        cos, sin = ops.rotary_angles(positions, d, theta, dtype)  # (S, d) each
        out[kind] = (cos, sin, None if kind == "full_attention" else config.local_attention // 2)
    return out


def _rotate_qk(qkv: np.ndarray, cos: np.ndarray, sin: np.ndarray, h: int) -> None:
    """Turn the queries and keys of qkv (N, 3H) in place by :func:`ops.rotate`,
    cos and sin (N, d) at each row's position. The queries already carry
    1/sqrt(d) (:func:`fused_qkv`): a rotation is linear, so the order does not matter."""
    N, H3 = qkv.shape
    H = H3 // 3
    for part in (slice(0, H), slice(H, 2 * H)):
        x = qkv[:, part].reshape(N, h, H // h)  # (N, H) -> (N, h, d), a view
        x[...] = ops.rotate(x, cos[:, None], sin[:, None])  # (N, h, d)


def _encode(weights, config, inputs, outs, maps, bias, rotary, relative, qkv_weights, b0, b1) -> None:
    """Run texts b0..b1-1 (``inputs``: ids, positions, types, real, (B, S)) through the encoder,
    writing outs[i][b0:b1] (and, unless ``maps`` is None, each text's attention maps into
    maps[i - 1][b, :, :n, :n]). ``bias``: the batch's relative position bias (h, S, S) of
    every layer (MPNet), or None. ``rotary`` (:func:`rotary_tables`): q and k turned
    (:func:`_rotate_qk`), the band of local layers (:func:`_band_attention`), ModernBERT's
    pre-LN layers (:func:`_layer_rows_pre`) and final LayerNorm; else None. ``relative``: DeBERTa's
    (per stored layer (pos_qT, pos_kT) of :func:`positions`, and the batch's (S, S) c2p
    and p2c gather indices), or None. ``qkv_weights``: :func:`fused_qkv` with the family's scale.

    The texts' N real tokens are packed into (N, H) rows; when there is no
    padding, the rows are the output arrays themselves (no copy). Each layer
    is :func:`ops.encoder_layer` in three parts: the fused Q, K, V
    projection of all N rows (:func:`fused_qkv`), attention text by text
    (:func:`_attention`), and the rest of the layer on blocks of
    :data:`ROW_BLOCK` rows (:func:`_layer_rows`).
    """
    input_ids, position_ids, token_type_ids, real = inputs
    dtype = weights.embeddings.word.dtype
    H, h = config.hidden_size, config.num_attention_heads
    eps = config.layer_norm_eps
    real = real[b0:b1]
    dense = bool(real.all())
    lengths = real.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    N = int(starts[-1])
    if N == 0:
        return

    def pack(a):
        return a[b0:b1].reshape(-1) if dense else a[b0:b1][real]  # (B, S) -> (N,)

    def destination(i):  # rows of outs[i] to write: (N, H), a view when dense
        return outs[i][b0:b1].reshape(N, H) if dense else np.empty((N, H), dtype)

    def publish(i, x):
        if not dense:
            outs[i][b0:b1][real] = x

    types = None if token_type_ids is None else pack(token_type_ids)
    x = destination(0)
    x[...] = ops.embed(pack(input_ids), pack(position_ids), types, weights.embeddings, eps).hidden_state
    publish(0, x)  # DeBERTa multiplies the embeddings by the mask: real rows by 1, padding rows stay 0
    act = activation(config.hidden_act, dtype)
    qkv = np.empty((N, 3 * H), dtype)
    ctx = np.empty((N, H), dtype)
    scores = np.empty(_score_scratch(lengths, h, config.layer_types, config.local_attention // 2), dtype)
    R = min(ROW_BLOCK, N)
    a, f = np.empty((R, H), dtype), np.empty((R, config.intermediate_size), dtype)
    pre_ln, g = config.family == "modernbert", None
    if rotary is not None:
        pos = pack(position_ids)
        turns = {kind: (cos[pos], sin[pos], half) for kind, (cos, sin, half) in rotary.items()}
        g, normed = np.empty_like(f), np.empty((N, H), dtype)
    for i, k in enumerate(weights.layer_map, start=1):
        layer, window = weights.layers[k], None
        src = x
        if pre_ln and layer.ln_1 is not None:  # pre-LN: attention reads LayerNorm_1(x)
            np.copyto(normed, x)
            kernels.layer_norm_inplace(normed, layer.ln_1.gamma, layer.ln_1.beta, eps)
            src = normed
        W_qkv, b_qkv = qkv_weights[k]
        np.matmul(src, W_qkv, out=qkv)  # (N, H) -> (N, 3H)
        qkv += b_qkv
        if rotary is not None:
            cos, sin, window = turns[config.layer_types[i - 1]]
            _rotate_qk(qkv, cos, sin, h)
        layer_maps = None if maps is None else maps[i - 1]
        layer_relative = None if relative is None else (*relative[0][k], *relative[1:])
        for b in range(len(lengths)):
            s, e = starts[b], starts[b + 1]
            if e > s:
                text_maps = None if layer_maps is None else layer_maps[b0 + b]
                text = (qkv[s:e], ctx[s:e], scores, h, text_maps, real[b])
                _text_attention(*text, bias, layer_relative, window)
        x_next = destination(i)
        _rows_of_layer(x, ctx, x_next, layer, act, eps, (a, f, g), pre_ln)
        if i == len(weights.layer_map) and weights.final_ln is not None:  # hidden_states[-1]: normalised
            kernels.layer_norm_inplace(x_next, weights.final_ln.gamma, weights.final_ln.beta, eps)
        publish(i, x_next)
        x = x_next


def _rows_of_layer(x, ctx, x_next, layer, act, eps: float, buffers, pre_ln: bool) -> None:
    """The rest of one layer after attention, on blocks of :data:`ROW_BLOCK` rows:
    :func:`_layer_rows` (post-LN) or :func:`_layer_rows_pre` (pre-LN), with the
    row buffers ``a`` (R, H), ``f`` (R, I) and, for a gated FFN, ``g`` (R, I) or None."""
    a, f, g = buffers
    N, R = len(x), len(a)
    for r0 in range(0, N, R):
        m = min(R, N - r0)  # rows in this block
        rows = slice(r0, r0 + m)
        gm = None if g is None else g[:m]
        if not pre_ln:
            _layer_rows(x[rows], ctx[rows], x_next[rows], layer, act, eps, a[:m], f[:m], gm)
        else:
            _layer_rows_pre(x[rows], ctx[rows], x_next[rows], layer, act, eps, a[:m], f[:m], gm)


def _layer_rows(x, ctx, out, layer, act, eps: float, a: np.ndarray, f: np.ndarray, g=None) -> None:
    """out <- the rest of :func:`ops.encoder_layer` after attention, on m rows:

        x_1 = LayerNorm(x + ctx W^O + b^O)
        out = LayerNorm(x_1 + FFN(x_1)),  FFN(x_1) = act(x_1 W_1 + b_1) W_2 + b_2

    x, ctx, out: (m, H), m <= :data:`ROW_BLOCK`, so the (m, I) FFN
    intermediate stays in cache; a (m, H) and f (m, I): scratch; g (m, I):
    scratch of a gated FFN (NomicBERT's SwiGLU, :func:`ops.glu`), else None. The
    formulas run as the in-place kernels of :mod:`minibert.encoder.kernels`
    (:func:`~minibert.encoder.kernels.linear_into` for ``ops.linear``, the
    residual sums with ``+=``, :func:`~minibert.encoder.kernels.layer_norm_inplace`),
    and ``act`` (:func:`activation`).
    """
    w, ffn = layer.attention, layer.ffn
    kernels.linear_into(ctx, w.W_o, w.b_o, out=a)  # (m, H) -> (m, H)
    a += x
    kernels.layer_norm_inplace(a, layer.ln_1.gamma, layer.ln_1.beta, eps)
    kernels.linear_into(a, ffn.W_1, ffn.b_1, out=f)  # (m, H) -> (m, I)
    if ffn.W_gate is None:
        f = act(f)
    else:  # NomicBERT's SwiGLU (g: (m, I) scratch)
        kernels.linear_into(a, ffn.W_gate, ffn.b_gate, out=g)  # (m, H) -> (m, I)
        f = ops.glu(f, g, act)
    kernels.linear_into(f, ffn.W_2, ffn.b_2, out=out)  # (m, I) -> (m, H)
    out += a
    kernels.layer_norm_inplace(out, layer.ln_2.gamma, layer.ln_2.beta, eps)


def _layer_rows_pre(x, ctx, out, layer, act, eps: float, a: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
    """out <- the rest of :func:`ops.pre_ln_layer` after attention, on m rows:

        x_1 = x + ctx W^O + b^O
        out = x_1 + FFN(LayerNorm_2(x_1)),  FFN(y) = glu(y W_1 + b_1, y W_gate + b_gate) W_2 + b_2

    x, ctx, out: (m, H); a (m, H), f and g (m, I): scratch. The gated FFN is
    :func:`ops.glu` (GeGLU with ModernBERT's GELU)."""
    w, ffn = layer.attention, layer.ffn
    kernels.linear_into(ctx, w.W_o, w.b_o, out=out)  # (m, H) -> (m, H)
    out += x
    np.copyto(a, out)
    kernels.layer_norm_inplace(a, layer.ln_2.gamma, layer.ln_2.beta, eps)
    kernels.linear_into(a, ffn.W_1, ffn.b_1, out=f)  # (m, H) -> (m, I)
    kernels.linear_into(a, ffn.W_gate, ffn.b_gate, out=g)  # (m, H) -> (m, I)
    f = ops.glu(f, g, act)
    kernels.linear_into(f, ffn.W_2, ffn.b_2, out=a)  # (m, I) -> (m, H)
    out += a


def activation(name: str, dtype):
    """The FFN's activation, config ``hidden_act``: the formula of
    :data:`ops.ACTIVATIONS`, except the exact GELU in float32, which runs
    with the kernel :func:`kernels.erf32` for scipy's erf."""
    if name == "gelu" and np.dtype(dtype) == np.float32:
        return _gelu32
    return ops.ACTIVATIONS[name]


def _gelu32(x: np.ndarray) -> np.ndarray:
    """:func:`ops.gelu` with :func:`kernels.erf32`, in place on x (m, I)
    (:func:`kernels.gelu_inplace`)."""
    kernels.gelu_inplace(x)
    return x


_FUSED: dict[tuple, tuple] = {}
_FUSED_LOCK = threading.Lock()


def _per_weights(weights: Weights, key: tuple, build):
    """``build()``, made once per ``weights`` and ``key`` and kept while ``weights``
    lives (keyed by its id, dropped by a ``weakref.finalize`` when it is collected)."""
    key = (id(weights), *key)
    with _FUSED_LOCK:
        value = _FUSED.get(key)
        if value is None:
            value = build()
            _FUSED[key] = value
            weakref.finalize(weights, _FUSED.pop, key, None)
    return value


def fused_qkv(weights: Weights, divisor=None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per stored layer of ``weights``, the schedule's layout of its Q, K, V
    projections: W_qkv (H, 3H) = [W_q / s | W_k | W_v] and b_qkv (3H,)
    = [b_q / s | b_k | b_v], so one product projects all three and
    :func:`kernels.attention` needs no division by the scale s: sqrt(d)
    (``divisor`` None), or ``divisor``, DeBERTa's float32
    :func:`ops.disentangled_scale` sqrt(d (1 + #terms)).

    Built on first use and kept while ``weights`` lives (:func:`_per_weights`):
    W_k, W_v and the scaled W_q are copies, H (3H + 3) numbers per layer
    (7 MB for all-MiniLM-L6-v2). The scale is 1/s in the weights' dtype
    times W_q (which changes float32 results by rounding only).
    """
    s = None if divisor is None else float(divisor)
    return _per_weights(
        weights, ("qkv", s), lambda: tuple(_fuse(layer.attention, divisor) for layer in weights.layers)
    )


def _fuse(w, divisor=None) -> tuple[np.ndarray, np.ndarray]:
    """(W_qkv, b_qkv) of one layer's AttentionWeights (see :func:`fused_qkv`)."""
    H = w.W_q.shape[0]
    root = np.sqrt(w.head_size) if divisor is None else np.float64(divisor)
    s = np.asarray(1 / root, w.W_q.dtype)
    W_qkv = np.empty((H, 3 * H), w.W_q.dtype)
    b_qkv = np.empty(3 * H, w.b_q.dtype)
    W_qkv[:, :H], W_qkv[:, H : 2 * H], W_qkv[:, 2 * H :] = w.W_q * s, w.W_k, w.W_v
    b_qkv[:H], b_qkv[H : 2 * H], b_qkv[2 * H :] = w.b_q * s, w.b_k, w.b_v
    return W_qkv, b_qkv


def positions(weights: Weights, relative: RelativePositions) -> tuple[tuple, ...]:
    """DeBERTa's projected relative embeddings per stored layer, (pos_qT, pos_kT),
    each (h, d, 2K) or None when its term (p2c, c2p) is not in ``pos_att_type``:
    ``ops._position_projections`` of the (LayerNormed) relative embeddings,
    transposed per head for the products with Q and K, and pos_q divided by s,
    as the fused layout divides Q (c2p reads the scaled Q; p2c reads K, so its
    1/s goes here). They depend on the weights alone: projected once per Weights
    and kept while it lives (:func:`_per_weights`), 2 x L x 2K x H numbers
    (38 MB for a 12-layer base model in float32), not per batch, layer call or head.
    """
    key = ("positions", float(relative.scale), relative.terms, relative.share_att_key, relative.span)
    return _per_weights(
        weights, key, lambda: tuple(_project(layer.attention, relative) for layer in weights.layers)
    )


def _project(w, relative: RelativePositions) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(pos_qT, pos_kT) of one layer (see :func:`positions`)."""
    h = w.W_q.shape[1] // w.head_size
    pos_q, pos_k = ops._position_projections(w, relative, h)  # (h, 2K, d) or None each
    if pos_q is not None:
        pos_q = pos_q * np.asarray(1 / np.float64(relative.scale), pos_q.dtype)
    return tuple(None if p is None else np.ascontiguousarray(np.swapaxes(p, -1, -2)) for p in (pos_q, pos_k))
