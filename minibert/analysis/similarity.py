"""``minibert similarity``: how layers relate, and how contextual their words are.

- Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network
  Representations Revisited", eq. 5): for two representations of the same n
  words, X (n, p) and Y (n, q), each column centred,

      CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

  the alignment of their (linear) Gram matrices XX^T and YY^T: 1 when one is
  an orthogonal transform of the other up to scale, 0 when they share no
  linear structure. Invariant to orthogonal transforms and isotropic scaling
  (not to any invertible linear map, so a layer that only rescales some
  directions still scores below 1).

- After Ethayarajh (2019), "How Contextual are Contextualized Word
  Representations?", per layer, cosines of word vectors:
  anisotropy: the mean cosine of random pairs of words from different
  sentences (the same pairs at every layer) -- how alike two unrelated words
  look; self-similarity: for each word form with at least
  :data:`MIN_OCCURRENCES` occurrences, the mean cosine between two of its
  occurrences, averaged over the forms; intra-sentence similarity: the mean
  cosine of each word with its sentence's mean vector, averaged over
  sentences. Ethayarajh reads self- and intra-sentence similarity against
  anisotropy: a self-similarity near the anisotropy means the word's vectors
  are as different across contexts as unrelated words are.

Shape alphabet: n words, H hidden size, L + 1 layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minibert.analysis.conllu import Sentence, read_sentences, source_name
from minibert.analysis.logreg import BLOCK
from minibert.analysis.vectors import word_vectors
from minibert.errors import MinibertError
from minibert.model import Model, load

MIN_OCCURRENCES = 5
#: Random word pairs for anisotropy.
PAIRS = 10_000


def cross_products(Ls: list[np.ndarray], pairs: list[tuple[int, int]]) -> dict:
    """(X_i - 1 mean(X_i))^T (X_j - 1 mean(X_j)) for each pair (i, j) of the
    layers Ls (each (n, p_i), the same n words), in float64, summed over row
    blocks of :data:`BLOCK` words in order:

        sum over blocks r of (X_i[r] - mean(X_i))^T (X_j[r] - mean(X_j)),

    so only one block of each layer is ever held in float64: the memory is the
    layers themselves plus (p_i, p_j) per pair (no n x H float64 copy of each
    layer, no n x n Gram matrix), and the rounding does not depend on the BLAS
    thread count. Returns {(i, j): (p_i, p_j)}."""
    means = [X.mean(axis=0, dtype=np.float64) for X in Ls]  # (p_i,) each
    out = {(i, j): np.zeros((Ls[i].shape[1], Ls[j].shape[1])) for i, j in pairs}
    for lo in range(0, len(Ls[0]), BLOCK):
        r = [X[lo : lo + BLOCK].astype(np.float64) - m for X, m in zip(Ls, means, strict=True)]  # (b, p_i)
        for i, j in pairs:
            out[i, j] += r[i].T @ r[j]  # (p_i, b) @ (b, p_j)
    return out


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) of the centred X (n, p), Y (n, q)."""
    return float(cka_matrix([X], [Y])[0, 0])


def cka_matrix(As: list[np.ndarray], Bs: list[np.ndarray] | None = None) -> np.ndarray:
    """Linear CKA between every layer of As and every layer of Bs (default
    As itself, symmetric with a diagonal of 1), all from one pass of
    :func:`cross_products` (||M^T||_F = ||M||_F, so the pair (j, i) is (i, j)'s).
    (len(As), len(Bs))."""
    Ls = list(As) if Bs is None else list(As) + list(Bs)
    cols = list(range(len(As))) if Bs is None else list(range(len(As), len(Ls)))
    pairs = {(k, k) for k in range(len(Ls))} | {(min(i, j), max(i, j)) for i in range(len(As)) for j in cols}
    S = cross_products(Ls, sorted(pairs))
    norm = [np.linalg.norm(S[k, k]) for k in range(len(Ls))]  # ||X^T X||_F
    out = np.zeros((len(As), len(cols)))
    for i in range(len(As)):
        for c, j in enumerate(cols):
            out[i, c] = np.sum(S[min(i, j), max(i, j)] ** 2) / (norm[i] * norm[j])
    return out


def unit(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float64 (a zero row stays 0). (n, H) -> (n, H)."""
    X = np.asarray(X, dtype=np.float64)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


def random_pairs(sentence_of: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded pairs (i, j) of words from different sentences. (m,), (m,)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(sentence_of), 2 * n_pairs)
    j = rng.integers(0, len(sentence_of), 2 * n_pairs)
    ok = sentence_of[i] != sentence_of[j]
    return i[ok][:n_pairs], j[ok][:n_pairs]


def anisotropy(U: np.ndarray, i: np.ndarray, j: np.ndarray) -> float:
    """Mean cosine of the pairs (i, j) of unit rows U (n, H)."""
    return float(np.mean(np.einsum("ph,ph->p", U[i], U[j]))) if len(i) else float("nan")


def self_similarity(U: np.ndarray, forms: np.ndarray) -> float:
    """Mean over forms with at least MIN_OCCURRENCES occurrences of the mean
    cosine between two different occurrences: with u the m unit vectors of a
    form, (||sum u||^2 - m) / (m (m - 1))."""
    kinds, which, m = np.unique(forms, return_inverse=True, return_counts=True)
    sums = np.zeros((len(kinds), U.shape[1]))
    np.add.at(sums, which, U)  # (types, H)
    often = m >= MIN_OCCURRENCES
    if not often.any():
        return float("nan")
    s, k = sums[often], m[often]
    return float(np.mean((np.sum(s * s, axis=1) - k) / (k * (k - 1))))


def intra_sentence(U: np.ndarray, offsets: np.ndarray) -> float:
    """Mean over sentences of the mean cosine of each word (unit rows U) with
    the sentence's mean vector (of the unit vectors; offsets (S + 1,))."""
    values = []
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        if hi > lo:
            mean = unit(U[lo:hi].mean(axis=0, keepdims=True))[0]
            values.append(float(np.mean(U[lo:hi] @ mean)))
    return float(np.mean(values)) if values else float("nan")


def _sentences(data) -> list[Sentence]:
    if isinstance(data, (str, Path)):
        return read_sentences(data, None)
    if isinstance(data, list) and data and all(isinstance(s, Sentence) for s in data):
        return data
    raise MinibertError(
        "data must be a path to a CoNLL-U, .jsonl or text file or a non-empty list of Sentence "
        f"(minibert.analysis.conllu), got {type(data).__name__}"
    )


def similarity(
    data,
    model: Model | str | Path | None = None,
    word_pool: str = "mean",
    layers=None,
    seed: int = 0,
    against: Model | str | Path | None = None,
) -> dict:
    """CKA between the layers and Ethayarajh's three measures per layer: the
    record ``minibert similarity --json`` writes."""
    model = model if isinstance(model, Model) else load(model)
    sentences = _sentences(data)
    wv = word_vectors(model, sentences, word_pool, layers)
    forms = np.array([w for s in sentences for w in s.words], dtype=object)[wv.keep]
    sent = np.repeat(np.arange(len(sentences)), [len(s.words) for s in sentences])[wv.keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sent, minlength=len(sentences)))])
    i, j = random_pairs(sent, PAIRS, seed)
    rows = {"anisotropy": [], "self_similarity": [], "intra_sentence": []}
    for v in wv.vectors:
        U = unit(v)
        rows["anisotropy"].append(anisotropy(U, i, j))
        rows["self_similarity"].append(self_similarity(U, forms.astype(str)))
        rows["intra_sentence"].append(intra_sentence(U, offsets))
    record = {"layers": list(wv.layers), "cka": cka_matrix(list(wv.vectors)).tolist(), **rows}
    if against is not None:
        other = against if isinstance(against, Model) else load(against, str(model.dtype))
        ov = word_vectors(other, sentences, word_pool, None)
        if not np.array_equal(ov.keep, wv.keep):
            raise MinibertError("the two models' tokenizers leave different words without pieces")
        record["against"] = {
            "model": str(other.path),
            "layers": list(ov.layers),
            "cka": cka_matrix(list(wv.vectors), list(ov.vectors)).tolist(),
        }
    record["protocol"] = {
        "data": source_name(data),
        "model": str(model.path),
        "word_pool": word_pool,
        "seed": seed,
        "sentences": len(sentences),
        "words": int(wv.vectors.shape[1]),
        "anisotropy_pairs": int(len(i)),
        "self_similarity_min_occurrences": MIN_OCCURRENCES,
        "self_similarity_forms": int(
            np.sum(np.unique(forms.astype(str), return_counts=True)[1] >= MIN_OCCURRENCES)
        ),
        "windowed_sentences": wv.windowed,
        "truncated_sentences": 0,
        "words_without_pieces": wv.dropped,
    }
    return record
