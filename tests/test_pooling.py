"""Pooling and combining, checked against explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import MinibertError
from minibert.features.pooling import combine, pool


def _batch(rng, B=3, S=6, H=4, dtype=np.float32):
    hidden = rng.normal(size=(B, S, H)).astype(dtype)
    lengths = rng.integers(1, S + 1, size=B)
    mask = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int64)
    hidden[mask == 0] = 1e6  # padding holds garbage that must never leak into a pooled vector
    return hidden, mask, lengths


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_pool_ignores_padding(seed):
    rng = np.random.default_rng(seed)
    hidden, mask, lengths = _batch(rng)
    before = hidden.copy()
    for how in ("cls", "mean", "max"):
        got = pool(hidden, mask, how)
        assert got.dtype == hidden.dtype
        for b, n in enumerate(lengths):
            rows = [hidden[b, s].astype(np.float64) for s in range(n)]
            if how == "cls":
                want = rows[0]
            elif how == "mean":
                want = sum(rows) / n
            else:
                want = np.array([max(r[j] for r in rows) for j in range(hidden.shape[2])])
            # float32 sums of <= 6 unit-scale values: error ~1e-7 observed
            np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=1e-6, err_msg=f"{how} text {b}")
    np.testing.assert_array_equal(hidden, before)  # the caller's array is not modified


def test_combine_matches_the_papers_strategies():
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(2, 5, 3)) for _ in range(4)]
    np.testing.assert_allclose(combine(layers, "sum"), layers[0] + layers[1] + layers[2] + layers[3])
    np.testing.assert_allclose(combine(layers, "mean"), (layers[0] + layers[1] + layers[2] + layers[3]) / 4)
    cat = combine(layers, "concat")
    assert cat.shape == (2, 5, 12)
    for i in range(4):
        np.testing.assert_array_equal(cat[..., 3 * i : 3 * i + 3], layers[i])
    with pytest.raises(MinibertError):
        combine(layers, "median")


def test_cosine_by_hand():
    from minibert.features.pooling import cosine

    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
    b = np.array([[4.0, 3.0], [-2.0, 0.0], [1.0, 1.0]], np.float32)
    got = cosine(a, b)
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got[:2], [24 / 25, -1.0], rtol=1e-15)
    assert np.isnan(got[2])
