"""Kernels: in-place or fused versions of formulas of :mod:`minibert.encoder.ops`,
each kept beside its formula only because the fast schedule (:mod:`minibert.encoder.fast`)
measured faster with it (``bench/kernels.py``: the schedule with the kernel against the
schedule with the formula, round-robin in one process; docs/performance.md lists the gains).

Each docstring names its formula and its measured gain, and ``tests/test_kernels.py``
holds each equal to its formula (hypothesis property tests). A kernel that stops paying
goes, and the schedule calls the formula.

Shape alphabet as in :mod:`minibert.encoder.ops`, plus g (heads at once), n (one text's
tokens, or the keys attention reads) and m (rows of a block: of tokens, or of queries).
"""

from __future__ import annotations

import numpy as np

from minibert.errors import MinibertError


def linear_into(x: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out <- x W + b, returned: :func:`ops.linear` written into a buffer the
    schedule holds, the product with ``out=`` and the bias added in place (the
    same bits). x: (m, n_in), W: (n_in, n_out), b: (n_out,), out: (m, n_out).

    Measured gain (bench/kernels.py, CPU time, median of 4 rounds): the row
    block with this and in-place residual sums against ``ops.linear`` and
    ``ops.feed_forward`` with new temporaries: 4.4% (32 x 128) and 3.7%
    (8 x 512) at 1 thread, 5.2% and 10% at 2 threads.
    """
    np.matmul(x, W, out=out)
    out += b
    return out


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

    Formula: :func:`minibert.encoder.ops.erf` (scipy), inside :func:`ops.gelu`. Measured
    gain (bench/kernels.py, CPU time): ``ops.gelu`` with erf32 against ``ops.gelu`` with
    scipy's erf, 2.7% (32 x 128) and 3.1% (8 x 512) at 1 thread, 5.9% and 6.7% at 2.
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


def gelu_inplace(h: np.ndarray) -> None:
    """h <- GELU(h) = 0.5 h (1 + erf(h / sqrt(2))), in place, h float32, contiguous:
    :func:`ops.gelu` with :func:`erf32` for its erf, the same bits, computed
    :data:`GELU_CHUNK` elements at a time in four scratch buffers that stay in cache.

    Measured gain (bench/kernels.py, CPU time) against ``ops.gelu(x, erf=erf32)``:
    10.0% (32 x 128) and 6.6% (8 x 512) at 1 thread, 6.7% and 2.9% at 2 threads
    (against ``ops.gelu`` with scipy's erf: 13.0%, 9.9%, 13.0%, 9.8%).
    """
    flat = h.reshape(-1)
    root2 = np.sqrt(2).astype(h.dtype)
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


def layer_norm_inplace(y: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> None:
    """y <- LayerNorm(y) = gamma (y - mu) / sqrt(sigma^2 + eps) + beta, in place.

    y: (m, H). The formula of :func:`ops.layer_norm`; the row sums and the
    sums of squares are ``einsum`` reductions, each one pass instead of a
    reduction plus a temporary. (Not a product with a ones vector, though
    it is a little faster: OpenBLAS's matrix-vector product rounds
    differently with its thread count, see :func:`minibert.encoder.fast.forward`.)

    Measured gain (bench/kernels.py, CPU time) against ``ops.layer_norm``: 6.8%
    (32 x 128) and 4.4% (8 x 512) at 1 thread, 5.5% and -1.2% (noise) at 2 threads.
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


#: Keys per matrix product of :func:`times_v`: below OpenBLAS's GEMM_Q, so no product is
#: cut along the keys (on SkylakeX the cut began at 449 keys in float32, 440 in float64).
KEY_BLOCK = 256


def times_v(p: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """out <- p @ v, (g, m, n) @ (g, n, d) -> (g, m, d), summed over the keys
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
        out += np.matmul(p[..., k0 : k0 + KEY_BLOCK], v[:, k0 : k0 + KEY_BLOCK])  # (g, m, d)


def attention(q: np.ndarray, kT: np.ndarray, v: np.ndarray, p: np.ndarray, out: np.ndarray,
              probs: np.ndarray | None = None, bias: np.ndarray | None = None) -> None:  # fmt: skip
    """out <- softmax(q kT) v, and probs <- softmax(q kT) if given, for g heads of one text:
    the formula of :func:`ops.scaled_dot_product_attention` with no mask, for queries
    already divided by sqrt(d) (the schedule folds 1/sqrt(d) into W_q).

    q: (g, m, d), m queries; kT: (g, d, n), n keys; v: (g, n, d); p: (g, m, n) scratch;
    out: (g, m, d), written; probs: None or (g, m, n), written; bias: None or broadcastable
    to (g, m, n), added to the scaled scores (MPNet's relative position bias, DeBERTa's
    terms: the formula's ``bias``; a sliding window's :func:`ops.window_bias`). Global
    attention reads every key (m = n); a block of a sliding-window layer, its span.

    softmax is shift-invariant, and the shift by the row maximum in
    :func:`ops.softmax` only keeps exp from overflowing. Here exp is taken of the raw
    scores in place and the rows are normalised after the product with V (dividing
    (m, d) instead of (m, n)): out = (exp(S) V) / rowsum(exp(S)). If a score is large
    enough to overflow exp (or the row sums, or the product with V: exp(S) near the
    float limit times a value above 1), or every score of a row so negative that the
    row sum underflows, the group is redone with the shift. The product with V is
    :func:`times_v` (the same bits at any BLAS thread count).

    The probabilities, when asked for, are exp(S) / rowsum, divided from the exp(S)
    still in ``p`` after the context is computed: the context is the same arithmetic
    with or without them, so asking for attentions changes no bit of the hidden states.

    Measured gain (bench/kernels.py, CPU time) against ``ops.scaled_dot_product_attention``
    on the same head groups: 6.6% (32 x 128) and 15.5% (8 x 512) at 1 thread, 7.9% and
    15.3% at 2 threads.
    """
    g, m, _ = q.shape
    n = kT.shape[-1]
    tiny = np.finfo(q.dtype).tiny * 2**24
    np.matmul(q, kT, out=p)  # (g, m, d) @ (g, d, n) -> (g, m, n); 1/sqrt(d) is in q
    if bias is not None:
        p += bias
    with np.errstate(over="ignore", under="ignore"):
        np.exp(p, out=p)
    z = np.einsum("ij->i", p.reshape(-1, n))  # (g m, n) -> (g m,): the row sums
    ok = bool(np.isfinite(z).all() and z.min() > tiny)
    if ok:
        times_v(p, v, out)  # (g, m, n) @ (g, n, d) -> (g, m, d)
        ok = bool(np.isfinite(out).all())  # exp(S) near the float limit can overflow times V
    if not ok:
        np.matmul(q, kT, out=p)
        if bias is not None:
            p += bias
        p -= np.max(p, axis=-1, keepdims=True)
        np.exp(p, out=p)
        z = np.einsum("ij->i", p.reshape(-1, n))
        times_v(p, v, out)
    zc = z.reshape(g, m, 1)  # (g m,) -> (g, m, 1)
    out /= zc
    if probs is not None:
        np.divide(p, zc, out=probs)  # (g, m, n) / (g, m, 1) -> (g, m, n)
