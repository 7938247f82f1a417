"""Fit the coefficients of minibert.encoder.fast.erf32 (run once; its output is pasted there).

Two branches, split at |x| = 0.92:

- |x| <= 0.92: erf(x) = x + x P(x^2), P of degree 5, fitted to erf(x)/x - 1 with
  weight x / erf(x) (the relative error of erf).
- |x| > 0.92: erf(x) = 1 - exp(Q(x)), Q of degree 7, fitted to log(erfc(x)) on
  [0.92, 4] with weight erfc(x) (an error dQ moves erf by erfc(x) dQ).

Each fit is minimax, by Lawson's iteratively reweighted least squares, against
scipy's float64 erf/erfc. The float32 result is then checked against
scipy.special.erf over float32 by tests/test_fast.py (MINIBERT_EXHAUSTIVE=1 for
every value): at most 1 ulp apart.

    python bench/fit_erf.py
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, erfc

SPLIT = 0.92


def lawson(A: np.ndarray, y: np.ndarray, w: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Coefficients p minimising max |w (A p - y)| (Lawson's algorithm)."""
    u = np.full(len(y), 1 / len(y))
    for _ in range(iterations):
        sw = np.sqrt(u) * w
        p, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        e = np.abs(w * (A @ p - y))
        u = u * e
        u /= u.sum()
    return p


def fit() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(1e-4, SPLIT, 20000)
    s = x * x
    P = lawson(np.stack([s**k for k in range(6)], 1), erf(x) / x - 1, x / erf(x))
    t = np.linspace(SPLIT, 4.0, 20000)
    Q = lawson(np.stack([t**k for k in range(8)], 1), np.log(erfc(t)), erfc(t))
    return P, Q


if __name__ == "__main__":
    P, Q = fit()
    print("ERF_P =", ", ".join(str(np.float32(c)) for c in P))
    print("ERF_Q =", ", ".join(str(np.float32(c)) for c in Q))
