"""Trace -> features: choose layers, pool tokens, combine layers.

Shape alphabet: B texts, S tokens (padded), H hidden size, L selected layers.
Layer indices follow transformers' ``hidden_states``: 0 is the embedding
output, i (1..num_hidden_layers) the output of encoder layer i; negative
indices count from the last layer (-1 = last).
"""

from __future__ import annotations

import numpy as np

from minibert.errors import MinibertError

POOLS = ("none", "cls", "mean", "max")
COMBINES = ("none", "sum", "mean", "concat")


def pool(hidden: np.ndarray, attention_mask: np.ndarray, how: str) -> np.ndarray:
    """One vector per text from its token vectors; padding is ignored.

    hidden: (B, S, H), attention_mask: (B, S) of 1/0 -> (B, H).
    cls: the first token ([CLS] / <s>); mean: average over real tokens;
    max: element-wise maximum over real tokens. The input is not modified,
    and no (B, S, H) temporary is made (reductions with ``where=``): for a
    windowed text of a million tokens that is gigabytes.
    """
    if how == "cls":
        return hidden[:, 0]
    m = attention_mask.astype(bool)[:, :, None]  # (B, S) -> (B, S, 1)
    if how == "mean":
        count = np.maximum(m.sum(axis=1), 1).astype(hidden.dtype)  # (B, 1)
        return hidden.sum(axis=1, where=m) / count
    if how == "max":
        return hidden.max(axis=1, where=m, initial=-np.inf).astype(hidden.dtype)
    raise MinibertError(f"unknown pooling {how!r} (choose from {', '.join(POOLS[1:])})")


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """v / ||v||_2 along the last axis: (..., H) -> (..., H). A zero vector
    stays zero (sentence-transformers' Normalize module, torch's
    ``F.normalize`` with eps 1e-12)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, np.asarray(1e-12, v.dtype))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a, b) = a . b / (||a|| ||b||) along the last axis, in float64:
    (..., H), (..., H) -> (...). A zero vector gives NaN (no direction)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...i,...i->...", a, b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def combine(layers: list[np.ndarray], how: str) -> np.ndarray:
    """Reduce the selected layers to one array, the BERT paper's
    feature-based strategies (Devlin et al. 2019, sec. 5.3):

    sum / mean: element-wise over layers, (..., H) each -> (..., H);
    concat: along the feature axis -> (..., L * H).
    """
    if how == "sum":
        return np.sum(layers, axis=0)
    if how == "mean":
        return np.mean(layers, axis=0)
    if how == "concat":
        return np.concatenate(layers, axis=-1)
    raise MinibertError(f"unknown combine {how!r} (choose from {', '.join(COMBINES[1:])})")
