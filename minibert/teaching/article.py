"""Check the worked example of the article this project grew from.

Section 4.3 of the article (summarised, with its numbers, in ``docs/article.md``) works one
attention step by hand:
a 3x3 weight matrix ``W`` times three column vectors it calls X_Q, X_K, X_V,
then ``Q K^T``, the scaling by sqrt(d_k), a softmax and the output. The numbers
it prints are transcribed below (``ARTICLE``): they are the thing being
checked. Every correct value is computed with minibert's own formula functions
(:func:`minibert.encoder.ops.linear`, :func:`minibert.encoder.ops.scaled_dot_product_attention`,
:func:`minibert.encoder.ops.softmax`) in float64.

What the example even means has to be settled first, because as printed it is
not well defined:

- ``Q = W X_Q`` with X_Q = [1, 0, 1]^T: a 3x3 matrix times a column vector,
  a column vector. Fine, but the vectors X_Q, X_K, X_V come from nowhere: the
  example defines three tokens x_1, x_2, x_3 and never uses them, and one
  ``W`` serves as W^Q, W^K and W^V (BERT has three different matrices, plus
  biases).
- ``Q K^T`` of two 3x1 column vectors, as written, is a 3x3 outer product,
  not the 1x2 matrix [1 1] it prints. In the paper's convention the rows of Q
  and K are tokens; with one query and one key, Q and K are 1x3 and Q K^T is
  one number, the dot product q . k. We check that number.
- The softmax of one score (one key) is exactly 1; a 3-vector of weights
  needs three keys. So with one query, one key and one value the attention
  output is V itself.

:func:`consistent_example` then does what the example seems to intend: three
tokens x_1, x_2, x_3 attending to each other with ``W`` as the query, key and
value projection, written the article's way (q_i = W x_i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minibert.encoder import ops
from minibert.encoder.trace import AttentionTrace

# ---------------------------------------------------------------------------
# The article's numbers, transcribed from section 4.3 (column vectors as lists).
W = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=np.float64)
X_Q = np.array([1, 0, 1], dtype=np.float64)
X_K = np.array([0, 1, 1], dtype=np.float64)
X_V = np.array([0, 0, 1], dtype=np.float64)
TOKENS = np.eye(3)  # x_1 = [1, 0, 0], x_2 = [0, 1, 0], x_3 = [0, 0, 1]

ARTICLE = {
    "Q": [1, 1, 2],  # "Q = W X_Q = [1, 1, 2]^T"
    "K": [0, 1, 2],  # "K = W X_K = [0, 1, 2]^T"
    "V": [0, 0, 1],  # "V = W X_V = [0, 0, 1]^T"
    "K^T in the product": [0, 1, 1],  # "Q K^T = [1 1 2]^T [0 1 1] = ..."
    "Q K^T": [[1, 1]],  # "... = [1 1]", a 1x2 matrix
    "d_k": 3,
    "scaled score": 1 / math.sqrt(3),  # "softmax(1 / sqrt(3))"
    "softmax": [0.349, 0.349, 0.302],
    "output": [0.302, 0.302, 0.302],
}
#: The article prints three decimals: a value agrees if it is within rounding.
ARTICLE_ATOL = 5e-4


@dataclass(frozen=True)
class Item:
    """One number (or vector) of the example: the article's and the correct one."""

    quantity: str
    article: object
    correct: object
    note: str

    @property
    def agree(self) -> bool:
        a = np.asarray(self.article, dtype=np.float64)
        c = np.asarray(self.correct, dtype=np.float64)
        return a.shape == c.shape and bool(np.allclose(a, c, rtol=0, atol=ARTICLE_ATOL))


def _Wx(x: np.ndarray) -> np.ndarray:
    """W x for a column vector x, with minibert's ``linear`` (x^T W^T + 0)."""
    return ops.linear(x[None, :], W.T, np.zeros(3))[0]


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> AttentionTrace:
    """minibert's scaled_dot_product_attention on (tokens, d) rows, no mask."""
    return ops.scaled_dot_product_attention(q, k, v)


def check_article() -> list[Item]:
    """Every number of the worked example: the article's value and the correct one."""
    Q, K, V = _Wx(X_Q), _Wx(X_K), _Wx(X_V)
    # One query, one key, one value: (1, d) matrices in the paper's convention.
    single = _attention(Q[None, :], K[None, :], V[None, :])
    printed = np.array(ARTICLE["Q"], dtype=np.float64)[:, None] @ np.array([ARTICLE["K^T in the product"]])
    d_k = Q.shape[-1]
    last = float(np.dot(ARTICLE["softmax"], ARTICLE["V"]))
    return [
        Item("Q = W [1,0,1]^T", ARTICLE["Q"], Q, "row i of W dotted with [1,0,1]: 1+1, 0, 1+1"),
        Item("K = W [0,1,1]^T", ARTICLE["K"], K, "0+1, 1, 1+1"),
        Item("V = W [0,0,1]^T", ARTICLE["V"], V, "the third column of W"),
        Item(
            "K^T used in the product",
            ARTICLE["K^T in the product"],
            K,
            "the article multiplies by [0 1 1] = X_K^T, not by its own K^T = [0 1 2]",
        ),
        Item(
            "[1,1,2]^T [0,1,1] as printed",
            ARTICLE["Q K^T"],
            printed,
            "a 3x1 column times a 1x3 row is a 3x3 outer product, not a 1x2 matrix",
        ),
        Item(
            "score q . k (one query, one key)",
            1,
            single.scores[0, 0] * math.sqrt(d_k),
            "it goes on with 1; as 1x3 rows, Q K^T = q . k = 2*1 + 0*1 + 2*2",
        ),
        Item("d_k", ARTICLE["d_k"], d_k, "the key dimension is 3"),
        Item(
            "scaled score q . k / sqrt(d_k)",
            ARTICLE["scaled score"],
            single.scores[0, 0],
            "6 / sqrt(3) = 2 sqrt(3); the article scales its 1",
        ),
        Item(
            "softmax over the keys",
            ARTICLE["softmax"],
            single.probs[0],
            "one key: the softmax of a single score is exactly 1",
        ),
        Item(
            "output softmax(.) V",
            ARTICLE["output"],
            single.context[0],
            "weight 1 on the only value: the output is V itself",
        ),
        Item(
            "its last product, [.349,.349,.302].[0,0,1]",
            ARTICLE["output"],
            last,
            "even from its own numbers: a dot product of two 3-vectors is one number",
        ),
    ]


def consistent_example() -> dict[str, np.ndarray]:
    """The example made well defined: tokens x_1, x_2, x_3 (rows of X = I),
    q_i = k_i = v_i = W x_i as the article writes it (so Q = K = V = X W^T),
    attention = softmax(Q K^T / sqrt(3)) V over the three tokens, computed
    with minibert's ``linear`` and ``scaled_dot_product_attention``."""
    X = TOKENS
    zeros = np.zeros(3)
    Q = ops.linear(X, W.T, zeros)  # (3 tokens, 3) -> (3, 3): row i is (W x_i)^T
    K = ops.linear(X, W.T, zeros)
    V = ops.linear(X, W.T, zeros)
    a = _attention(Q, K, V)
    return {"X": X, "Q": Q, "K": K, "V": V, "QK^T": Q @ K.T, "scores": a.scores, "mask": a.mask,
            "masked_scores": a.masked_scores, "probs": a.probs, "context": a.context}  # fmt: skip


def format_value(value) -> str:
    """A number, vector or matrix as short text: ``3.464``, ``[2, 0, 2]``,
    ``[0, 1, 1; 0, 2, 2]`` (rows separated by ';')."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return f"{float(a):.4g}"

    def num(x: float) -> str:
        return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))

    if a.ndim == 1:
        return "[" + ", ".join(num(x) for x in a) + "]"
    return "[" + "; ".join(", ".join(num(x) for x in r) for r in a) + "]"


def _matrix(name: str, a: np.ndarray) -> list[str]:
    """A small matrix, 4 decimals, its name on the first row."""
    return [
        f"  {name if i == 0 else '':<7}[" + " ".join(f"{x:8.4f}" for x in row) + " ]"
        for i, row in enumerate(a)
    ]


def report(items: list[Item] | None = None, example: dict | None = None) -> str:
    """The check, item by item (article's value, correct value, agree), for an
    80-column terminal; then the consistent version of the example."""
    items = check_article() if items is None else items
    example = consistent_example() if example is None else example
    lines = [
        "The article's worked example (section 4.3), recomputed with minibert.encoder.ops",
        "",
        "  W = [1 0 1; 0 1 0; 1 1 1]; X_Q = [1,0,1]^T, X_K = [0,1,1]^T, X_V = [0,0,1]^T",
        "  One W serves as W^Q, W^K and W^V, and X_Q, X_K, X_V are not the tokens",
        "  x_1 = [1,0,0], x_2 = [0,1,0], x_3 = [0,0,1] the example defines. Read as",
        "  written: one query, one key, one value, d_k = 3.",
    ]
    for n, item in enumerate(items, 1):
        verdict = "agree: yes" if item.agree else "agree: NO"
        lines.append("")
        lines.append(f"  {f'{n:>2}. {item.quantity} ':.<66} {verdict}")
        lines.append(f"      article  {format_value(item.article):<24} correct  {format_value(item.correct)}")
        lines.append(f"      {item.note}")
    wrong = sum(not i.agree for i in items)
    Q = example["Q"]
    lines += [
        "",
        f"  {wrong} of {len(items)} values disagree with the article.",
        "",
        "A consistent version (our reading): the three tokens attend to each other,",
        "q_i = k_i = v_i = W x_i as the article writes it, so Q = K = V = X W^T.",
    ]
    if np.array_equal(Q[0], X_Q) and np.array_equal(Q[1], X_K):
        lines.append("(Rows 1 and 2 of Q are the article's X_Q and X_K; it does not say why.)")
    lines += _matrix("Q", Q)
    lines += _matrix("QK^T", example["QK^T"])
    lines += _matrix("/sqrt3", example["scores"])
    lines.append("  P = softmax(Q K^T / sqrt(3)), each row sums to 1; output = P V:")
    lines += _matrix("P", example["probs"])
    lines += _matrix("P V", example["context"])
    lines += ["", "The article and its example: docs/article.md; every erratum: docs/errata.md."]
    return "\n".join(lines)
