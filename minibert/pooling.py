"""Trace -> features: choose layers, pool tokens, combine layers.

Shape alphabet: B texts, S tokens (padded), H hidden size, L selected layers.
Layer indices follow transformers' ``hidden_states``: 0 is the embedding
output, i (1..num_hidden_layers) the output of encoder layer i; negative
indices count from the last layer (-1 = last).
"""

from __future__ import annotations

import numpy as np

from .errors import MinibertError

POOLS = ("none", "cls", "mean", "max")
COMBINES = ("none", "sum", "mean", "concat")


def select_layers(spec: str, num_states: int) -> list[int]:
    """``"all"``, ``"-4,-3,-2,-1"`` or a slice ``"0:7"`` -> sorted-as-given
    non-negative indices into ``hidden_states`` (``num_states`` = L + 1)."""
    if not isinstance(spec, str):
        raise MinibertError(
            f"--layers must be a string such as 'all' or '-4,-3,-2,-1', got {type(spec).__name__}"
        )
    spec = spec.strip()
    shown = spec if len(spec) <= 40 else spec[:40] + "..."
    valid = f"valid: 0..{num_states - 1}, or -{num_states}..-1"
    if spec == "all":
        return list(range(num_states))
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) > 3:
                raise ValueError
            start, stop, step = (int(p) if p.strip() else None for p in parts + [""] * (3 - len(parts)))
            if step == 0:
                raise MinibertError(f"--layers {shown!r}: a slice step cannot be 0")
            for bound in (start, stop):
                if bound is not None and not -num_states <= bound <= num_states:
                    raise MinibertError(f"--layers {shown!r}: index {bound} out of range ({valid})")
            indices = list(range(num_states))[slice(start, stop, step)]
        else:
            indices = [int(p) for p in spec.split(",")]
    except ValueError:
        raise MinibertError(
            f"--layers {shown!r}: expected 'all', a list like -4,-3,-2,-1, or a slice like 0:7"
        ) from None
    out = []
    for i in indices:
        if not -num_states <= i < num_states:
            raise MinibertError(f"--layers {shown!r}: index {i} out of range ({valid})")
        out.append(i % num_states)
    if not out:
        raise MinibertError(f"--layers {shown!r} selects no layer ({valid})")
    if len(set(out)) != len(out):
        raise MinibertError(f"--layers {shown!r} names a layer twice")
    return out


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
