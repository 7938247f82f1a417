"""Per-head statistics of attention maps, as in Clark et al. (2019), "What Does
BERT Look At? An Analysis of BERT's Attention" (sections 3 and 4).

Shapes: h heads; n the real tokens of one text (queries i, keys j, 0..n-1).
P: (h, n, n), one text's attention probabilities at one layer: row i of head
k is query i's distribution over the n keys (each row sums to 1; padding is
never part of P). Every statistic is one number per head, (h, n, n) -> (h,).

Which queries: every statistic is a **mean over all n queries of the text**,
[CLS] and [SEP] included, each query weighing 1/n -- what Clark et al.'s
analysis code (github.com/clarkkev/attention-analysis, General_Analysis.ipynb)
does for the average attention to [CLS], [SEP], punctuation and the
neighbouring tokens and for the entropies of Figure 4. A query that has no
previous (next) token -- the first (last) -- adds 0 to its share and still
counts in the 1/n, as in that code; so a head that always attends to the
next token scores (n - 1) / n, not 1.

Which keys: [CLS] is the text's first special token, [SEP] every other one
(the tokenizer's special tokens: ``sequence_ids`` None, which covers
RoBERTa's ``<s>`` and ``</s>`` without matching strings); punctuation is a
non-special token whose characters in the input (its offsets span, with
white space stripped) are at least one and all Unicode punctuation (general
category P*: Pc Pd Ps Pe Pi Pf Po). That span is the token's string without
the tokenizer's word-piece or space markers (``##``, ``Ġ``, ``▁``), read
from the text itself, so lower-casing, byte-level encodings and ``[UNK]``
do not change it. Clark et al. count only "." and ",": symbols such as $ or
+ (categories S*) are not punctuation here either. The three sets are
disjoint, so to_cls + to_sep + to_punct <= 1.

Everything is computed in float64 from the map given (float32 from the
model): the formulas below, with 0 ln 0 = 0. A text with no tokens has no
attention: every statistic is NaN.
"""

from __future__ import annotations

import unicodedata

import numpy as np

#: The statistics, in the order outputs store them (``attention_stats.{name}``).
STATS = ("entropy", "to_cls", "to_sep", "to_punct", "to_prev", "to_next", "to_self", "distance")


def entropy(p: np.ndarray) -> np.ndarray:
    """H = (1/n) sum_i -sum_j P_ij ln P_ij, in nats (0 ln 0 = 0): (h, n, n) -> (h,).

    0 for a head whose every query attends to one key, ln n for a head that
    spreads every query evenly: "broad" against "focused" heads (Clark et
    al. 2019, section 3.3, Figure 4; their code smooths P by 1e-4 to avoid
    ln 0, where this takes the limit 0 ln 0 = 0)."""
    logs = np.log(np.where(p > 0, p, 1.0))  # ln 1 = 0 where P = 0
    return -(p * logs).sum(axis=-1).mean(axis=-1)  # (h, n, n) -> (h, n) -> (h,)


def attention_to(p: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(1/n) sum_i sum_{j in K} P_ij, the mean share of attention on the keys
    K (``keys``: (n,) bool): (h, n, n) -> (h,). To [CLS], to [SEP], to
    punctuation (Clark et al. 2019, section 3.2, Figure 2)."""
    return p[:, :, keys].sum(axis=-1).mean(axis=-1)  # (h, n, |K|) -> (h,)


def to_offset(p: np.ndarray, k: int) -> np.ndarray:
    """(1/n) sum_i P_{i, i+k}, queries without a key i + k adding 0: (h, n, n) -> (h,).

    k = 0: attention to itself; -1: to the previous token; +1: to the next
    (Clark et al. 2019, section 3.1, "Relative position")."""
    n = p.shape[-1]
    return np.diagonal(p, offset=k, axis1=1, axis2=2).sum(axis=-1) / n  # (h, n - |k|) -> (h,)


def mean_distance(p: np.ndarray) -> np.ndarray:
    """D = (1/n) sum_i sum_j P_ij |i - j|, in tokens: (h, n, n) -> (h,).

    How far a head looks, from 0 (every query on itself) to n - 1: the mean
    attention distance of Vig and Belinkov (2019, "Analyzing the Structure
    of Attention in a Transformer Language Model"), here per query and then
    averaged like the others. Attention parked on [CLS] counts as far."""
    i = np.arange(p.shape[-1])
    return (p * np.abs(i[:, None] - i[None, :])).sum(axis=-1).mean(axis=-1)  # (h, n, n) -> (h,)


def head_statistics(
    p: np.ndarray, cls: np.ndarray, sep: np.ndarray, punct: np.ndarray
) -> dict[str, np.ndarray]:
    """Every statistic of :data:`STATS` for one text at one layer.

    p: (h, n, n) attention probabilities over the text's real tokens;
    cls, sep, punct: (n,) bool, the keys of :func:`token_kinds`.
    Returns name -> (h,) float64 (NaN when n = 0)."""
    p = np.asarray(p, dtype=np.float64)
    if p.shape[-1] == 0:
        return {name: np.full(p.shape[0], np.nan) for name in STATS}
    return {
        "entropy": entropy(p),
        "to_cls": attention_to(p, cls),
        "to_sep": attention_to(p, sep),
        "to_punct": attention_to(p, punct),
        "to_prev": to_offset(p, -1),
        "to_next": to_offset(p, 1),
        "to_self": to_offset(p, 0),
        "distance": mean_distance(p),
    }


def is_punctuation(text: str) -> bool:
    """At least one character once white space is stripped, and every one Unicode punctuation (P*)."""
    text = text.strip()
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def token_kinds(
    sequence_ids: list[int | None],
    offsets: list[tuple[int, int]],
    text: str,
    text_pair: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of a text's n tokens are [CLS], [SEP] and punctuation: three (n,) bool.

    sequence_ids: per token 0 (the text), 1 (its text_pair) or None (a
    special token); offsets: per token its (start, end) characters in its
    own segment's string (:class:`minibert.Batch`). [CLS] is the first
    special token, [SEP] every other special token, punctuation a
    non-special token whose span is :func:`is_punctuation`."""
    special = np.array([s is None for s in sequence_ids], dtype=bool)
    cls = np.zeros(len(special), dtype=bool)
    cls[np.flatnonzero(special)[:1]] = True
    sep = special & ~cls
    segments = (text, text_pair)
    punct = np.array(
        [
            s is not None and is_punctuation(segments[s][a:b])
            for s, (a, b) in zip(sequence_ids, offsets, strict=True)
        ],
        dtype=bool,
    )
    return cls, sep, punct
