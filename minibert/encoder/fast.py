"""The fast forward pass: the same encoder as :func:`minibert.model.forward`,
arranged for speed. :mod:`minibert.encoder.ops` stays the reference; this module is
tested equal to it (``tests/test_fast.py``) and to transformers.

What it does differently, and why (docs/performance.md has the measurements):

- **Packed tokens.** The padded batch (B, S) is packed into the N real tokens
  of all texts, so every matrix product runs on (N, H) and no time is spent on
  padding. Attention runs per text on its own unpadded length, so no mask is
  needed. Padding positions of the returned hidden states are 0 (the plain
  path leaves whatever the formulas give there; neither is meaningful).
- **One fused QKV product.** W_q, W_k, W_v are concatenated once, at load,
  into one (H, 3H) matrix, ``AttentionWeights.W_qkv`` of the same weight
  record the formulas read (:mod:`minibert.loading.weights`; W_k and W_v are views
  into it); the 1/sqrt(d) of attention is folded into its W_q and b_q
  columns, which changes float32 results by rounding only.
- **Row blocks.** The attention output projection, both LayerNorms and the
  FFN run on blocks of :data:`ROW_BLOCK` tokens, so the (rows, I) FFN
  intermediate stays in cache and is never materialised for the whole batch.
- **In place.** Biases, residuals, LayerNorm, softmax and GELU write into
  buffers with ``out=`` and in-place operators instead of new temporaries.
- **A faster float32 erf** for the exact GELU: :func:`erf32`, a polynomial
  approximation that stays within 1 ulp of ``scipy.special.erf`` over the
  whole float32 range (proven by ``tests/test_fast.py``). scipy's erf costs
  about 15 ns per element on this machine, as much as the FFN's two matrix
  products spend per activation; the whole fast GELU about 3.6 ns. This is
  the only approximation in the fast path, and only for float32: float64
  uses ``scipy.special.erf``. (The other changes - folding 1/sqrt(d) into
  W_q, softmax without the max shift, LayerNorm sums - change rounding
  only.)

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
  @ V are summed in blocks of keys, :func:`_times_v`); its
  matrix-vector products do not, so rows are summed with ``einsum``. Units
  also bound the working memory, whatever the batch size. The plain path
  makes no such promise.

- **Attention maps when asked for.** Each text's probabilities are divided
  from the exp(S) its attention already holds in cache straight into the
  returned (B, h, S, S) arrays at [b, :, :n, :n]; everything else stays 0.
  The context is computed the same way with or without them, so the hidden
  states are the same bits (tested). Writing the maps costs mostly the
  first touch of fresh memory; :func:`_map_arrays` allocates them the way
  that measured cheapest.

Not computed here: traces. :meth:`minibert.Model.forward` runs the formulas
of :func:`minibert.model.forward` for those and for ``impl="plain"`` (the
choice is made in one place, ``Model._compute``).

Shape alphabet as in :mod:`minibert.encoder.ops` (B, S, H, h, d, I), plus:

    N  real (non-padding) tokens of the work unit, packed into rows
    n  one text's real tokens          g  heads whose scores are computed at once
    m  rows of a block (<= ROW_BLOCK)

Shape comments are checked while the code runs (``tests/test_shape_comments.py``);
N, n, g and m are the values of the variables of those names where they run.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from minibert.encoder import ops, threads
from minibert.encoder.config import Config
from minibert.encoder.params import Weights
from minibert.errors import MinibertError

#: Tokens per row block of the post-attention part of a layer: (ROW_BLOCK, I)
#: float32 is 1.5 MB for I = 1536, and BLAS is near full speed at this size.
ROW_BLOCK = 256

#: Score elements (g heads x n x n) computed at once in attention: 2**18
#: float32 is 1 MB, so exp and the product with V read them from cache.
ATTENTION_BLOCK = 2**18

#: Elements per chunk of the float32 GELU: its four scratch buffers of this
#: many float32 stay in the L2 cache.
GELU_CHUNK = 65536

# erf32 coefficients (float32). Fitted by bench/fit_erf.py (Lawson's minimax
# iteration on scipy's float64 erf), then checked in float32 over every
# float32 in the tests.
#   |x| <= ERF_SPLIT: erf(x) = x + x * P(x^2)          (P: degree 5)
#   |x| >  ERF_SPLIT: erf(x) = sign(x) (1 - exp(Q(|x|)))  (Q ~ log erfc, degree 7)
ERF_SPLIT = np.float32(0.92)
ERF_P = tuple(np.float32(c) for c in (
    0.12837915, -0.37612498, 0.11281846, -0.026767718, 0.004994827, -0.0005999388,
))  # fmt: skip
ERF_Q = tuple(np.float32(c) for c in (
    0.00017587071, -1.1295208, -0.6333347, -0.108293906, 0.025128596, -0.004174632, 0.00043521659,
    -2.1161703e-05,
))  # fmt: skip
_SIGN = np.int32(-(2**31))  # the float32 sign bit as int32
_SPLIT_BITS = ERF_SPLIT.view(np.int32)


def erf32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """erf(x) for float32 x, within 1 ulp of ``scipy.special.erf`` everywhere.

    A polynomial approximation (see ``ERF_P``, ``ERF_Q``): one branch near 0,
    where erf(x) ~ 2x/sqrt(pi), and one for |x| > 0.92 through erfc =
    exp(log erfc), so the result near 1 keeps full accuracy. Both branches
    are computed for every element and the right one picked with bit masks
    (NumPy has no fast per-element select). NaN stays NaN, erf(+-inf) = +-1.
    This is an approximation: the plain path (:func:`minibert.encoder.ops.gelu`)
    uses scipy's erf. ``tests/test_fast.py`` checks every float32 value.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise MinibertError(f"erf32 takes float32, got {x.dtype}")
    flat = np.ascontiguousarray(x).reshape(-1)
    result = np.empty_like(flat) if out is None else out.reshape(-1)
    scratch = [np.empty(min(GELU_CHUNK, flat.size), np.float32) for _ in range(4)]
    for i in range(0, flat.size, GELU_CHUNK):
        n = min(GELU_CHUNK, flat.size - i)
        a, s, t, u = (buf[:n] for buf in scratch)
        np.copyto(a, flat[i : i + n])
        result[i : i + n] = _erf32_inplace(a, s, t, u)
    return result.reshape(x.shape)


def _erf32_inplace(x: np.ndarray, s: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """erf32 on one 1-D chunk. Destroys x, s, t; returns u holding erf(x)."""
    P, Q = ERF_P, ERF_Q
    with np.errstate(over="ignore", invalid="ignore"):
        # small |x|: r = x + x P(x^2), into t
        np.multiply(x, x, out=s)
        np.multiply(s, P[5], out=t)
        for c in P[4:0:-1]:
            t += c
            t *= s
        t += P[0]
        t *= x
        t += x
        # large |x|: 1 - exp(Q(|x|)), into u. Q's leading coefficient is
        # negative, so Q(|x|) -> -inf for huge |x| (even inf) and exp gives 0.
        np.abs(x, out=s)
        np.multiply(s, Q[7], out=u)
        for c in Q[6:0:-1]:
            u += c
            u *= s
        u += Q[0]
        np.exp(u, out=u)
        np.subtract(np.float32(1), u, out=u)
    xi, si, ti, ui = x.view(np.int32), s.view(np.int32), t.view(np.int32), u.view(np.int32)
    # mask: all ones where |x| > ERF_SPLIT (positive floats order like their bits)
    np.subtract(_SPLIT_BITS, si, out=si)
    si >>= 31
    # give the large branch the sign of x
    xi &= _SIGN
    ui |= xi
    # u = mask ? u : t  (as t ^ ((t ^ u) & mask))
    ui ^= ti
    ui &= si
    ui ^= ti
    return u


def _gelu_inplace(h: np.ndarray) -> None:
    """h <- GELU(h) = 0.5 h (1 + erf(h / sqrt(2))), in place, h (m, I) contiguous.

    float32: erf is :func:`erf32` (within 1 ulp of scipy's); float64: scipy's
    erf itself, so float64 stays the exact formula of :func:`ops.gelu`.
    """
    flat = h.reshape(-1)
    root2 = np.sqrt(2).astype(h.dtype)
    if h.dtype != np.float32:
        for i in range(0, flat.size, GELU_CHUNK):
            c = flat[i : i + GELU_CHUNK]
            e = np.divide(c, root2)
            ops.erf(e, out=e)
            e += 1
            c *= 0.5
            c *= e
        return
    n0 = min(GELU_CHUNK, flat.size)
    scratch = [np.empty(n0, np.float32) for _ in range(4)]
    for i in range(0, flat.size, GELU_CHUNK):
        c = flat[i : i + GELU_CHUNK]
        a, s, t, u = (buf[: c.size] for buf in scratch)
        np.divide(c, root2, out=a)
        e = _erf32_inplace(a, s, t, u)
        e += 1
        c *= np.float32(0.5)
        c *= e


def _layer_norm_inplace(y: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> None:
    """y <- LayerNorm(y) = gamma (y - mu) / sqrt(sigma^2 + eps) + beta, in place.

    y: (m, H). The formula of :func:`ops.layer_norm`; the row sums and the
    sums of squares are ``einsum`` reductions, each one pass instead of a
    reduction plus a temporary. (Not a product with a ones vector, though
    it is a little faster: OpenBLAS's matrix-vector product rounds
    differently with its thread count, see :func:`forward`.)
    """
    m, H = y.shape
    mu = np.einsum("ij->i", y)  # (m, H) -> (m,)
    mu /= H
    y -= mu[:, None]
    var = np.einsum("ij,ij->i", y, y)  # (m, H) -> (m,)
    var /= H
    var += np.asarray(eps, y.dtype)
    np.sqrt(var, out=var)
    y /= var[:, None]
    y *= gamma
    y += beta


def _attention(
    qkv: np.ndarray, ctx: np.ndarray, scores: np.ndarray, h: int, probs: np.ndarray | None = None
) -> None:
    """ctx <- multi-head attention context of one text, before W^O; and, if
    ``probs`` is given, probs <- its attention probabilities.

    qkv: (n, 3H) = [Q / sqrt(d) | K | V] of the text's n real tokens;
    ctx: (n, H), written; scores: flat scratch of >= g n^2 elements for the
    g = :func:`_heads_at_once` heads of a group (see :data:`ATTENTION_BLOCK`);
    probs: None, or (h, n, n), written (a view of the returned (B, h, S, S)
    array at the text's real queries and keys).

    softmax is shift-invariant, and the shift by the row maximum in
    :func:`ops.softmax` only keeps exp from overflowing. Here exp is taken
    of the raw scores and the rows are normalised after the product with V
    (dividing (n, d) instead of (n, n)): ctx = (exp(S) V) / rowsum(exp(S)).
    If a score is large enough to overflow exp (or the row sums, or the
    product with V: exp(S) near the float limit times a value above 1), or
    every score of a row so negative that the row sum underflows, those
    heads are redone with the shift. Heads go g at a time, g chosen so the g (n, n) score matrices
    stay in cache (all heads at once for short texts, one by one at 512).

    The probabilities, when asked for, are exp(S) / rowsum, divided from
    the cached exp(S) straight into ``probs`` after the context is computed:
    the context is the same arithmetic with or without them, so asking for
    attentions changes no bit of the hidden states.
    """
    n, H3 = qkv.shape
    d = H3 // (3 * h)
    heads = qkv.reshape(n, 3, h, d)  # (n, 3H) -> (n, 3, h, d)
    out = ctx.reshape(n, h, d).transpose(1, 0, 2)  # (n, H) -> (h, n, d), a view of ctx
    step = _heads_at_once(n, h)
    tiny = np.finfo(qkv.dtype).tiny * 2**24
    for h0 in range(0, h, step):
        g = min(step, h - h0)  # heads in this group
        group = slice(h0, h0 + g)
        q = heads[:, 0, group].transpose(1, 0, 2)  # (n, g, d) -> (g, n, d)
        kT = heads[:, 1, group].transpose(1, 2, 0)  # (n, g, d) -> (g, d, n)
        v = heads[:, 2, group].transpose(1, 0, 2)  # (n, g, d) -> (g, n, d)
        p = scores[: g * n * n].reshape(g, n, n)
        np.matmul(q, kT, out=p)  # (g, n, d) @ (g, d, n) -> (g, n, n); 1/sqrt(d) is in W_q
        with np.errstate(over="ignore", under="ignore"):
            np.exp(p, out=p)
        z = np.einsum("ij->i", p.reshape(-1, n))  # (g n, n) -> (g n,): the row sums
        o = out[group]
        ok = bool(np.isfinite(z).all() and z.min() > tiny)
        if ok:
            _times_v(p, v, o)  # (g, n, n) @ (g, n, d) -> (g, n, d)
            ok = bool(np.isfinite(o).all())  # exp(S) near the float limit can overflow times V
        if not ok:
            np.matmul(q, kT, out=p)
            p -= np.max(p, axis=-1, keepdims=True)
            np.exp(p, out=p)
            z = np.einsum("ij->i", p.reshape(-1, n))
            _times_v(p, v, o)
        zc = z.reshape(g, n, 1)  # (g n,) -> (g, n, 1)
        o /= zc
        if probs is not None:
            np.divide(p, zc, out=probs[group])  # (g, n, n) / (g, n, 1) -> (g, n, n)


#: Keys per matrix product of :func:`_times_v`: below OpenBLAS's GEMM_Q, so no product is
#: cut along the keys (on SkylakeX the cut began at 449 keys in float32, 440 in float64).
KEY_BLOCK = 256


def _times_v(p: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """out <- p @ v, (g, n, n) @ (g, n, d) -> (g, n, d), summed over the keys
    :data:`KEY_BLOCK` at a time: one product for n <= KEY_BLOCK, else one per
    block of keys, added in order.

    Why not one product: OpenBLAS cuts a product's inner dimension K (here n,
    the keys) into blocks of its GEMM_Q, and for Q < K < 2Q its one-thread and
    threaded drivers cut at different points, so one product rounds
    differently with the BLAS thread count (n = 449..510 in float32 on
    SkylakeX, 440..510 in float64: all-MiniLM-L6-v2's hidden states up to
    7e-6 apart at 1 and 2 threads). The count
    is one setting for the whole process, so a concurrent call changing it
    changed this call's bits too (issue 17). Products of K <= KEY_BLOCK are
    never cut, and give the same bits at any thread count
    (``tests/test_threads.py``).
    """
    n = p.shape[-1]
    np.matmul(p[..., :KEY_BLOCK], v[:, :KEY_BLOCK], out=out)
    for k0 in range(KEY_BLOCK, n, KEY_BLOCK):
        out += np.matmul(p[..., k0 : k0 + KEY_BLOCK], v[:, k0 : k0 + KEY_BLOCK])  # (g, n, d)


def _text_attention(
    qkv: np.ndarray, ctx: np.ndarray, scores: np.ndarray, h: int, maps: np.ndarray | None, real: np.ndarray
) -> None:
    """:func:`_attention` of one text, writing its attention probabilities,
    if ``maps`` (h, S, S) is given, at its real queries and keys there
    (``real``: (S,) bool, n of them; every other entry is left as it is, 0).

    The tokenizer pads on the right, so the real tokens are the first n and
    the probabilities are written straight into maps[:, :n, :n]; a hand-made
    mask with padding elsewhere goes through a scratch array.
    """
    if maps is None:
        return _attention(qkv, ctx, scores, h)
    n = len(qkv)
    if real[:n].all():
        return _attention(qkv, ctx, scores, h, maps[:, :n, :n])
    at = np.flatnonzero(real)
    probs = np.empty((h, n, n), qkv.dtype)
    _attention(qkv, ctx, scores, h, probs)
    maps[:, at[:, None], at] = probs


def _heads_at_once(n: int, h: int) -> int:
    """g: heads whose (n, n) scores :func:`_attention` computes at once, so
    that g n^2 stays within :data:`ATTENTION_BLOCK` (at least one head)."""
    return max(1, min(h, ATTENTION_BLOCK // (n * n)))


def _score_scratch(lengths, h: int) -> int:
    """Elements of the scores scratch that every text of ``lengths`` needs:
    the largest g(n) n^2. Not always the longest text's: g shrinks in steps,
    so a shorter text can need more (n = 190 with h = 12 takes 7 heads at
    once, 252,700 elements; n = 200 takes 6, 240,000)."""
    return max((_heads_at_once(int(n), h) * int(n) ** 2 for n in set(lengths.tolist()) if n), default=1)


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
    """The encoder, fast: the inputs of :func:`minibert.model.forward` (plus
    the position ids, which :func:`minibert.model.position_ids` computes per
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
    args = (weights, config, input_ids, position_ids, token_type_ids, real, outs, maps)
    work = [float(_cost(lengths[b0:b1], config).sum()) for b0, b1 in todo]
    if n > 1 and len(todo) > 1 and max(work) <= 0.75 * sum(work):
        costliest_first = [todo[j] for j in np.argsort(-np.asarray(work), kind="stable")]
        with threads.blas_limit(1):
            threads.run_on_threads(lambda b0, b1: _encode(*args, b0, b1), costliest_first, min(n, len(todo)))
    else:
        for b0, b1 in todo:
            _encode(*args, b0, b1)
    return tuple(outs), None if maps is None else tuple(maps)


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


def _encode(weights, config, input_ids, position_ids, token_type_ids, real, outs, maps, b0, b1) -> None:
    """Run texts b0..b1-1 through the encoder, writing outs[i][b0:b1] (and,
    unless ``maps`` is None, each text's attention maps into
    maps[i - 1][b, :, :n, :n]).

    The texts' N real tokens are packed into (N, H) rows; when there is no
    padding, the rows are the output arrays themselves (no copy).
    """
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
    x = ops.embed(pack(input_ids), pack(position_ids), types, weights.embeddings, eps).hidden_state
    dest = destination(0)
    dest[...] = x
    publish(0, dest)
    x = dest
    act = _gelu_inplace if config.hidden_act == "gelu" else None
    act_plain = ops.ACTIVATIONS[config.hidden_act]

    R = min(ROW_BLOCK, N)
    qkv = np.empty((N, 3 * H), dtype)
    ctx = np.empty((N, H), dtype)
    scores = np.empty(_score_scratch(lengths, h), dtype)
    x1 = np.empty((R, H), dtype)
    inter = np.empty((R, config.intermediate_size), dtype)

    for i, k in enumerate(weights.layer_map, start=1):
        layer = weights.layers[k]
        attention, ffn = layer.attention, layer.ffn
        np.matmul(x, attention.W_qkv, out=qkv)  # (N, H) -> (N, 3H)
        qkv += attention.b_qkv
        for b in range(len(lengths)):
            s, e = starts[b], starts[b + 1]
            if e > s:
                text_maps = None if maps is None or maps[i - 1] is None else maps[i - 1][b0 + b]
                _text_attention(qkv[s:e], ctx[s:e], scores, h, text_maps, real[b])
        x_next = destination(i)
        for r0 in range(0, N, R):
            r1 = min(r0 + R, N)
            m = r1 - r0
            a = x1[:m]
            np.matmul(ctx[r0:r1], attention.W_o, out=a)  # (m, H) -> (m, H)
            a += attention.b_o
            a += x[r0:r1]
            _layer_norm_inplace(a, layer.ln_1.gamma, layer.ln_1.beta, eps)
            f = inter[:m]
            np.matmul(a, ffn.W_1, out=f)  # (m, H) -> (m, I)
            f += ffn.b_1
            if act is not None:
                act(f)
            else:
                f[...] = act_plain(f)
            y = x_next[r0:r1]
            np.matmul(f, ffn.W_2, out=y)  # (m, I) -> (m, H)
            y += ffn.b_2
            y += a
            _layer_norm_inplace(y, layer.ln_2.gamma, layer.ln_2.beta, eps)
        publish(i, x_next)
        x = x_next
