"""Each kernel of minibert/encoder/kernels.py equals its formula of minibert/encoder/ops.py:
property tests (hypothesis) over random shapes and values. (erf32 itself is checked over
every float32 in tests/test_fast.py; here against scipy on hypothesis' floats.)"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import erf

from minibert.encoder import kernels, ops

FLOATS32 = st.floats(width=32, allow_nan=False, allow_infinity=True)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def ordered(x):
        i = x.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=FLOATS32))
def test_erf32_is_scipys_erf_within_an_ulp(x):
    """erf32 stands for ops.erf (scipy) in float32. Observed: at most 1 ulp."""
    assert ulp_distance(kernels.erf32(x), erf(x)).max() <= 1


@settings(max_examples=100, deadline=None)
@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 9), st.integers(1, 70)), elements=st.floats(-12, 12, width=32)
    ),  # fmt: skip
    st.sampled_from([7, 64, kernels.GELU_CHUNK]),
)
def test_gelu_inplace_is_the_formula_bit_for_bit(x, chunk):
    """gelu_inplace(x) == ops.gelu(x, erf=erf32), every bit, whatever the chunking."""
    saved, kernels.GELU_CHUNK = kernels.GELU_CHUNK, chunk
    try:
        y = x.copy()
        kernels.gelu_inplace(y)
    finally:
        kernels.GELU_CHUNK = saved
    assert_array_equal(y, ops.gelu(x, erf=kernels.erf32))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12), st.integers(2, 96), st.sampled_from([np.float32, np.float64]),
    st.floats(0.01, 100), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_layer_norm_inplace_is_the_formula(m, H, dtype, scale, seed):
    """layer_norm_inplace(y) == ops.layer_norm(y) to rounding (einsum sums, not np.mean).
    Tolerance: a few ulp of the inputs' size in units of their standard deviation (a
    row's mean, summed in another order, is off by an ulp of |x|), times |gamma|."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, H)) * scale + rng.standard_normal()).astype(dtype)
    gamma, beta = rng.standard_normal(H).astype(dtype), rng.standard_normal(H).astype(dtype)
    y = x.copy()
    kernels.layer_norm_inplace(y, gamma, beta, 1e-12)
    size = np.abs(x).max(axis=-1) / x.std(axis=-1, dtype=np.float64)  # (m,): |x| in standard deviations
    atol = 64 * np.finfo(dtype).eps * (1 + size.max()) * (1 + np.abs(gamma).max())
    assert_allclose(y, ops.layer_norm(x, gamma, beta, 1e-12), rtol=0, atol=atol)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 4), st.integers(1, 40), st.sampled_from([4, 8, 32]),
    st.sampled_from([np.float32, np.float64]), st.floats(0.1, 30), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_attention_is_the_formula(g, n, d, dtype, scale, seed):
    """attention(q / sqrt(d), k^T, v) == ops.scaled_dot_product_attention(q, k, v), context
    and probabilities, to rounding; large scales take the shifted fallback. The context is
    the same bits with and without the probabilities asked for. Tolerance: 8 ulp times
    the largest score (exp turns a score's rounding into a relative error that size)."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((3, g, n, d)) * [[[[scale]]], [[[scale]]], [[[1]]]]).astype(dtype)
    want = ops.scaled_dot_product_attention(q, k, v)
    s = np.asarray(1 / np.sqrt(d), dtype)
    qs = q * s
    kT = np.ascontiguousarray(k.swapaxes(-1, -2))
    out, again = np.empty((g, n, d), dtype), np.empty((g, n, d), dtype)
    probs = np.empty((g, n, n), dtype)
    kernels.attention(qs, kT, v, np.empty((g, n, n), dtype), out)
    kernels.attention(qs, kT, v, np.empty((g, n, n), dtype), again, probs)
    assert_array_equal(again, out)
    # exp(s) of a score s carries a relative error of about |s| ulp (in q k^T's rounding)
    tol = 8 * np.finfo(dtype).eps * (1 + np.abs(want.scores).max())
    assert_allclose(probs, want.probs, rtol=0, atol=tol)
    assert_allclose(out, want.context, rtol=0, atol=tol * max(1.0, np.abs(v).max()))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 50), st.integers(1, 50),
    st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_linear_into_is_the_formula_bit_for_bit(m, n_in, n_out, dtype, seed):
    """linear_into(x, W, b, out) == ops.linear(x, W, b), every bit, and returns out."""
    rng = np.random.default_rng(seed)
    x, W, b = (rng.standard_normal(shape).astype(dtype) for shape in ((m, n_in), (n_in, n_out), (n_out,)))
    out = np.full((m, n_out), np.nan, dtype)
    assert kernels.linear_into(x, W, b, out) is out
    assert_array_equal(out, ops.linear(x, W, b))
