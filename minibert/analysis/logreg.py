"""The linear probe: multinomial logistic regression, written out.

For n word vectors x_i (H,) with labels y_i in 0..K-1, a weight matrix W
(H, K) and a bias b (K,) give each word a distribution over the K labels,

    p(k | x) = softmax(x W + b)_k,

fitted by minimising the mean cross-entropy plus an L2 penalty on W,

    J(W, b) = 1/n sum_i -log p(y_i | x_i) + 1/(2 C n) ||W||_F^2,

whose gradient is exact and cheap:

    dJ/dW = X^T (P - Y) / n + W / (C n),     dJ/db = 1^T (P - Y) / n,

P (n, K) the probabilities, Y (n, K) the one-hot labels. C is scikit-learn's
(``LogisticRegression(C=...)``: C times the summed loss plus 1/2 ||W||^2, the
same minimiser divided by C n); larger C, weaker penalty. The bias is not
penalised. scipy's L-BFGS minimises J; features are standardised first
(:func:`standardize`), so one C grid suits every layer.

Every matrix product is summed over blocks of :data:`BLOCK` of its inner
dimension (:func:`dot`): OpenBLAS rounds an inner dimension above its GEMM_Q
differently at 1 and at n threads (X^T G over 25,000 words does;
docs/performance.md), and the probe promises the same numbers at any thread
count.

Shape alphabet: n words, H features, K labels, L + 1 layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

#: Inner-dimension block of every product (below OpenBLAS's GEMM_Q in either dtype).
BLOCK = 256
#: Stop when the largest gradient entry is below this (J is a mean, so it does not grow with n;
#: scikit-learn's default tol for lbfgs on the same mean loss).
GTOL = 1e-4
MAXITER = 1000
#: Words per block of :func:`mix_objective` (one block's mixed vectors, (MIX_ROWS, H), at a time).
MIX_ROWS = 512


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b summed over blocks of :data:`BLOCK` of the inner dimension, in a
    fixed order, so the rounding does not depend on the BLAS thread count.
    (m, N) @ (N, k) -> (m, k)."""
    H = a.shape[1]
    if H <= BLOCK:
        return a @ b
    out = a[:, :BLOCK] @ b[:BLOCK]
    for lo in range(BLOCK, H, BLOCK):
        out += a[:, lo : lo + BLOCK] @ b[lo : lo + BLOCK]
    return out


def standardize(X_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the training vectors (a
    constant feature gets scale 1, so it maps to 0). (n, H) -> (H,), (H,)."""
    mean = X_train.mean(axis=0, dtype=np.float64)
    std = X_train.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def cross_entropy(Z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean cross-entropy of the logits Z (n, K) for the labels y (n,),

        J = 1/n sum_i -log softmax(Z_i)_{y_i} = 1/n sum_i (log sum_k exp Z_ik - Z_{i y_i}),

    and its gradient dJ/dZ = (P - Y) / n, P = softmax(Z) row-wise, Y one-hot
    (n, K), written over Z (the caller's temporary from :func:`logits`: no
    second (n, K) array, whose fresh pages cost more than the arithmetic).
    One exp per entry, each row's max subtracted first, in Z's dtype (float64
    here). Z laid out column by column (Fortran order, as :func:`logits`
    gives it) makes every per-row max and sum run down K contiguous columns
    of n: ten times faster than along rows of K = 17."""
    n = len(y)
    Z -= Z.max(axis=1, keepdims=True)
    zy = Z[np.arange(n), y]  # (n,)
    P = np.exp(Z, out=Z)  # (n, K) unnormalised
    total = P.sum(axis=1)  # (n,)
    J = float(np.mean(np.log(total) - zy))
    P *= (1.0 / (n * total))[:, None]
    P[np.arange(n), y] -= 1.0 / n
    return J, P


def logits(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Z = X W + b, the product in X's dtype, the sum in float64, laid out
    column by column (Fortran order; see :func:`cross_entropy`). (n, H) @ (H, K) -> (n, K)."""
    XW = dot(X, W.astype(X.dtype))  # (n, K)
    Zt = np.empty((len(b), len(X)))  # (K, n)
    np.add(XW.T, b[:, None], out=Zt)
    return Zt.T


def objective(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, alpha: float):
    """J and its gradient: mean cross-entropy + alpha/2 ||W||^2 (alpha = 1 / (C n)).

    W (H, K), b (K,), X (n, H), y (n,) int -> J, dJ/dW (H, K), dJ/db (K,),
    and dJ/dZ (n, K) = (P - Y) / n. The products run in X's dtype, the
    softmax and the sums in float64."""
    J, G = cross_entropy(logits(X, W, b), y)  # (n, K) dJ/dZ
    J += 0.5 * alpha * float(np.sum(W * W))
    gW = dot(G.T.astype(X.dtype), X).T + alpha * W  # (K, n) @ (n, H) -> (K, H), transposed
    return J, gW, G.sum(axis=0), G


def spectrum(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues e (H,) and eigenvectors U (H, H) of X^T X / n, the part of
    :func:`preconditioner` that does not depend on C: computed once per
    training matrix and shared by every C of a grid. The eigendecomposition
    runs on one BLAS thread (its rounding would follow the thread count)."""
    S = dot(X.T, X).astype(np.float64) / len(X)  # (H, H)
    try:
        from minibert.encoder.threads import blas_limit

        with blas_limit(1):
            return np.linalg.eigh(S)
    except ImportError:  # without threadpoolctl, the BLAS as it is set
        return np.linalg.eigh(S)


def preconditioner(X: np.ndarray, alpha: float, basis=None) -> np.ndarray:
    """P = (X^T X / n + alpha I)^(-1/2), (H, H): fitting V with W = P V is the
    same problem (the same minimiser), but its curvature is near the identity,
    so L-BFGS needs a few dozen steps where it needed hundreds (BERT's
    features are strongly correlated). ``basis``: X's :func:`spectrum`, if known."""
    e, U = spectrum(X) if basis is None else basis
    return (U / np.sqrt(np.maximum(e, 0) + alpha)) @ U.T


@dataclass(frozen=True)
class Fit:
    """A fitted probe: W (H, K), b (K,), its C, L-BFGS iterations and whether it converged."""

    W: np.ndarray
    b: np.ndarray
    C: float
    iterations: int
    converged: bool


def fit(X: np.ndarray, y: np.ndarray, K: int, C: float, init: Fit | None = None, basis=None) -> Fit:
    """Minimise J over W, b by L-BFGS from ``init`` (a warm start: the fit for
    the previous C of a grid) or from zero, in the variables V = P^-1 W
    (:func:`preconditioner`; ``basis``: X's :func:`spectrum` if already
    computed). X (n, H) standardised, y (n,) in 0..K-1."""
    H = X.shape[1]
    alpha = 1.0 / (C * len(y))
    P = preconditioner(X, alpha, basis)  # (H, H)

    def f(theta):
        W = P @ theta[: H * K].reshape(H, K)  # (H, H) @ (H, K)
        J, gW, gb, _ = objective(W, theta[H * K :], X, y, alpha)
        return J, np.concatenate([(P.T @ gW).ravel(), gb])  # dJ/dV = P^T dJ/dW

    V0 = np.zeros((H, K)) if init is None else np.linalg.solve(P, init.W)
    theta0 = np.concatenate([V0.ravel(), np.zeros(K) if init is None else init.b])
    r = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": MAXITER, "gtol": GTOL})
    return Fit(P @ r.x[: H * K].reshape(H, K), r.x[H * K :], C, int(r.nit), bool(r.success))


def predict(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmax_k (x W + b)_k per row. (n, H) -> (n,)."""
    return np.argmax(logits(X, W, b), axis=1)


def folds_of(n: int, k: int, seed: int) -> np.ndarray:
    """Each of n rows' fold 0..k-1: a seeded shuffle cut into k near-equal parts. (n,)."""
    fold = np.arange(n) % k
    return fold[np.random.default_rng(seed).permutation(n)]


def fold_scores(
    X: np.ndarray, y: np.ndarray, K: int, Cs: list[float], fold: np.ndarray, j: int
) -> np.ndarray:
    """Held-out accuracy of each C on fold j (``fold`` (n,): each row's fold),
    trained on the other folds. The C grid runs from the strongest penalty to
    the weakest, each fit starting from the previous one (warm starts: a
    small step each, instead of a cold fit per C), all sharing one
    :func:`spectrum`. Returns (len(Cs),) accuracies."""
    train, held = fold != j, fold == j
    Xt, yt = X[train], y[train]
    prev, basis = None, spectrum(Xt)
    scores = np.zeros(len(Cs))
    for c in np.argsort(Cs, kind="stable"):
        prev = fit(Xt, yt, K, Cs[c], prev, basis)
        scores[c] = np.mean(predict(X[held], prev.W, prev.b) == y[held])
    return scores


def cross_validate(X: np.ndarray, y: np.ndarray, K: int, Cs: list[float], k: int, seed: int) -> np.ndarray:
    """Mean held-out accuracy of each C over k folds of the training set
    (:func:`fold_scores` of each fold, summed in fold order). Returns (len(Cs),)."""
    fold = folds_of(len(y), k, seed)
    return sum(fold_scores(X, y, K, Cs, fold, j) for j in range(k)) / k


# ---------------------------------------------------------------- scalar mix


def mix_objective(a, gamma, W, b, Xs: np.ndarray, y: np.ndarray, alpha: float, pmap=map):
    """Tenney et al. (2019, eq. 1)'s scalar mix under the probe:

        s = softmax(a),   x_i = gamma sum_l s_l X_l[i],   p(k | x_i) = softmax(x_i W + b)_k,
        J = mean cross-entropy + alpha/2 (||W||^2 + gamma^2).

    gamma and W trade off (a linear probe sees only their product), so the
    penalty takes both, else gamma would grow and W shrink for free.
    a (L,), gamma float, W (H, K), b (K,), Xs (L, n, H) -> J and the
    gradients in a, gamma, W, b. With c_l = gamma s_l and D = dJ/dx =
    (P - Y) W^T / n (n, H), each word's gradient in its mixed vector:

        dJ/dW = x^T (P - Y) / n + alpha W,    dJ/dc_l = <X_l, D>_F,
        dJ/dgamma = s . dJ/dc + alpha gamma,  dJ/ds_l = gamma dJ/dc_l,
        dJ/da = s * (dJ/ds - s . dJ/ds)       (through the softmax).

    Every term is a sum over words, so :func:`mix_rows` computes them on
    blocks of :data:`MIX_ROWS` words, the mixed vectors formed one block at a
    time (never for all n words): two products of the probe's size per block,
    not two per layer. ``pmap`` runs the blocks (a thread pool's map: their
    sums are added in block order, so the bits do not depend on it)."""
    s = np.exp(a - a.max())
    s /= s.sum()  # (L,)
    n = len(y)
    c = gamma * s  # (L,)
    blocks = range(0, n, MIX_ROWS)
    parts = list(pmap(lambda lo: mix_rows(c, W, b, Xs, y, n, lo, min(lo + MIX_ROWS, n)), blocks))
    J = sum(p[0] for p in parts) + 0.5 * alpha * (float(np.sum(W * W)) + gamma**2)
    gW = sum(p[1] for p in parts) + alpha * W
    gc = sum(p[3] for p in parts)  # (L,)
    g_gamma = float(s @ gc) + alpha * gamma
    gs = gamma * gc  # (L,) dJ/ds
    ga = s * (gs - s @ gs)  # through the softmax
    return J, ga, g_gamma, gW, sum(p[2] for p in parts)


def mix_rows(c: np.ndarray, W, b, Xs: np.ndarray, y: np.ndarray, n: int, lo: int, hi: int):
    """Words lo..hi's share of :func:`mix_objective`: their mixed vectors
    x = sum_l c_l X_l[lo:hi] (r, H) in X's dtype, and their terms of J (the
    cross-entropies summed, / n), dJ/dW (H, K) without the penalty, dJ/db (K,)
    and dJ/dc (L,); the products in X's dtype, the sums over words in float64."""
    dtype = Xs.dtype
    Xb = Xs[:, lo:hi]  # (L, r, H)
    x = np.einsum("l,lrh->rh", c.astype(dtype), Xb)  # (r, H)
    J, G = cross_entropy(logits(x, W, b), y[lo:hi])  # (r, K) (P - Y) / r
    G *= (hi - lo) / n  # (r, K) dJ/dZ
    Gx = G.astype(dtype)
    gW = dot(x.T, Gx).astype(np.float64)  # (H, r) @ (r, K) -> (H, K)
    D = Gx @ W.T.astype(dtype)  # (r, K) @ (K, H) -> (r, H) dJ/dx
    gc = np.einsum("lrh,rh->lr", Xb, D).sum(axis=1, dtype=np.float64)  # (L,) <X_l, D> by word, then summed
    return J * (hi - lo) / n, gW, G.sum(axis=0), gc


@dataclass(frozen=True)
class MixFit:
    """A fitted scalar mix: layer weights s (L,), scale gamma, the probe W, b."""

    weights: np.ndarray
    gamma: float
    W: np.ndarray
    b: np.ndarray
    C: float
    iterations: int
    converged: bool


def fit_mix(Xs: np.ndarray, y: np.ndarray, K: int, C: float, pmap=map) -> MixFit:
    """The scalar mix and its probe learned jointly by L-BFGS, from equal
    weights and gamma = 1; W preconditioned as in :func:`fit`, by the
    equal-weight mix's covariance; ``pmap`` as in :func:`mix_objective`.
    Xs (L, n, H) (a list of L (n, H) is stacked once)."""
    Xs = np.asarray(Xs)
    L, H = Xs.shape[0], Xs.shape[2]
    alpha = 1.0 / (C * len(y))
    P = preconditioner(mix(Xs, np.full(L, 1 / L), 1.0), alpha)

    def f(theta):
        a, gamma = theta[:L], theta[L]
        W = P @ theta[L + 1 : L + 1 + H * K].reshape(H, K)
        J, ga, g_gamma, gW, gb = mix_objective(a, gamma, W, theta[L + 1 + H * K :], Xs, y, alpha, pmap)
        return J, np.concatenate([ga, [g_gamma], (P.T @ gW).ravel(), gb])

    theta0 = np.concatenate([np.zeros(L), [1.0], np.zeros(H * K + K)])
    r = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": MAXITER, "gtol": GTOL})
    a, gamma = r.x[:L], float(r.x[L])
    s = np.exp(a - a.max())
    W = P @ r.x[L + 1 : L + 1 + H * K].reshape(H, K)
    return MixFit(s / s.sum(), gamma, W, r.x[L + 1 + H * K :], C, int(r.nit), bool(r.success))


def mix(Xs: list[np.ndarray], weights: np.ndarray, gamma: float) -> np.ndarray:
    """gamma sum_l s_l X_l. L x (n, H) -> (n, H)."""
    x = np.zeros_like(Xs[0])
    for s_l, X_l in zip(weights, Xs, strict=True):
        x += (gamma * s_l) * X_l
    return x
