"""``minibert check-article``: the correct values of the article's worked
example (section 4.3), computed with minibert.encoder.ops, equal an independent
computation by hand (plain Python loops and ``math``), and the article's
wrong values are flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from minibert import cli
from minibert.teaching import article

W = [[1, 0, 1], [0, 1, 0], [1, 1, 1]]  # transcribed again from the article


def matvec(M, x):
    return [sum(M[i][j] * x[j] for j in range(len(x))) for i in range(len(M))]


def by_name(items):
    return {item.quantity: item for item in items}


@pytest.fixture(scope="module")
def items():
    return by_name(article.check_article())


def test_projections_by_hand(items):
    # W [1,0,1]^T = [1+1, 0, 1+1], not the article's [1, 1, 2]
    assert matvec(W, [1, 0, 1]) == [2, 0, 2]
    assert_allclose(items["Q = W [1,0,1]^T"].correct, [2, 0, 2], rtol=0, atol=0)
    assert_allclose(items["K = W [0,1,1]^T"].correct, matvec(W, [0, 1, 1]), rtol=0, atol=0)
    assert_allclose(items["V = W [0,0,1]^T"].correct, matvec(W, [0, 0, 1]), rtol=0, atol=0)
    for name in ("Q = W [1,0,1]^T", "K = W [0,1,1]^T", "V = W [0,0,1]^T"):
        assert not items[name].agree, name


def test_single_query_attention_by_hand(items):
    q, k, v = matvec(W, [1, 0, 1]), matvec(W, [0, 1, 1]), matvec(W, [0, 0, 1])
    score = sum(a * b for a, b in zip(q, k, strict=True))
    assert score == 6
    assert items["score q . k (one query, one key)"].correct == pytest.approx(score, abs=1e-12)
    assert items["scaled score q . k / sqrt(d_k)"].correct == pytest.approx(score / math.sqrt(3), abs=1e-12)
    # softmax over one key is exactly 1; the output is then v itself
    assert_allclose(items["softmax over the keys"].correct, [1.0], rtol=0, atol=0)
    assert_allclose(items["output softmax(.) V"].correct, v, rtol=0, atol=1e-15)
    outer = [[a * b for b in [0, 1, 1]] for a in [1, 1, 2]]
    assert_allclose(items["[1,1,2]^T [0,1,1] as printed"].correct, outer, rtol=0, atol=0)


def test_verdicts(items):
    agreeing = [name for name, item in items.items() if item.agree]
    assert agreeing == ["d_k"], agreeing
    # the article's own final product does not even follow from its numbers
    last = items["its last product, [.349,.349,.302].[0,0,1]"]
    assert last.correct == pytest.approx(0.302) and not last.agree


def test_agree_respects_three_decimals():
    assert article.Item("x", [0.349], [0.3494], "").agree
    assert not article.Item("x", [0.349], [0.3496], "").agree
    assert not article.Item("x", [[1, 1]], [1, 1], "").agree  # shapes must match too


def test_consistent_example_by_hand():
    """Three tokens x_i (one-hot), q_i = k_i = v_i = W x_i, full self-attention,
    recomputed with loops and math.exp."""
    ex = article.consistent_example()
    rows = [matvec(W, x) for x in ([1, 0, 0], [0, 1, 0], [0, 0, 1])]
    scores = [[sum(a * b for a, b in zip(qi, kj, strict=True)) / math.sqrt(3) for kj in rows] for qi in rows]
    probs = []
    for r in scores:
        e = [math.exp(s - max(r)) for s in r]
        probs.append([x / sum(e) for x in e])
    out = [[sum(p[j] * rows[j][c] for j in range(3)) for c in range(3)] for p in probs]
    assert_allclose(ex["Q"], rows, rtol=0, atol=0)
    assert_allclose(ex["scores"], scores, rtol=0, atol=1e-15)
    assert_allclose(ex["probs"], probs, rtol=0, atol=1e-15)
    assert_allclose(ex["context"], out, rtol=0, atol=1e-15)
    assert_allclose(np.sum(ex["probs"], axis=-1), 1.0, rtol=0, atol=1e-15)


def test_check_article_command(capsys):
    assert cli.main(["check-article"]) == 0
    out = capsys.readouterr().out
    assert "10 of 11 values disagree with the article." in out
    line = next(x for x in out.splitlines() if "Q = W [1,0,1]^T" in x)
    assert line.endswith("agree: NO")
    assert "article  [1, 1, 2]" in out and "correct  [2, 0, 2]" in out
    assert max(len(x) for x in out.splitlines()) <= 80
