"""minibert/features/attention_stats.py: each statistic against plain float64 loops written
here from its definition, numbers worked by hand, closed forms, the invariants
(hypothesis), and which tokens count as [CLS], [SEP] and punctuation for every
tokenizer family."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_helpers import loops

import minibert
from minibert.features.attention_stats import STATS, head_statistics, is_punctuation, token_kinds


def assert_same(got: dict, want: dict, rtol: float = 1e-12, atol: float = 1e-13) -> None:
    assert list(got) == list(STATS)
    for name in STATS:  # float64 sums in another order: observed differences ~1e-16
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def random_map(rng, h: int, n: int, zeros: float = 0.3) -> np.ndarray:
    """(h, n, n) rows summing to 1, some entries exactly 0 (as padding and softmax underflow give)."""
    p = rng.random((h, n, n)) ** 4 * (rng.random((h, n, n)) > zeros)
    p[..., 0] += 1e-3  # no row all zero
    return p / p.sum(axis=-1, keepdims=True)


def test_numbers_worked_by_hand():
    """One head, three tokens: query 0 on itself, query 1 split between 0 and 1, query 2 on itself."""
    p = np.array([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    cls, sep, punct = np.array([1, 0, 0], bool), np.array([0, 0, 1], bool), np.array([0, 1, 0], bool)
    s = head_statistics(p, cls, sep, punct)
    assert s["entropy"][0] == pytest.approx(math.log(2) / 3)  # only query 1 is uncertain: ln 2
    assert s["to_cls"][0] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["to_sep"][0] == pytest.approx(1 / 3)
    assert s["to_punct"][0] == pytest.approx(0.5 / 3)
    assert s["to_prev"][0] == pytest.approx(0.5 / 3)  # query 0 has no previous token: adds 0
    assert s["to_next"][0] == 0.0
    assert s["to_self"][0] == pytest.approx((1 + 0.5 + 1) / 3)
    assert s["distance"][0] == pytest.approx(0.5 / 3)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_closed_forms_of_a_uniform_and_a_shifted_head(n):
    """Uniform rows: entropy ln n, distance (n^2 - 1) / 3n, each neighbour 1/n of (n - 1) queries.
    A head on the next token: to_next (n - 1)/n, distance (n - 1)/n, entropy 0 (the last query on itself)."""
    uniform = np.full((1, n, n), 1.0 / n)
    none = np.zeros(n, bool)
    s = head_statistics(uniform, none, none, none)
    np.testing.assert_allclose(s["entropy"], math.log(n), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(s["distance"], (n * n - 1) / (3 * n), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(s["to_next"], (n - 1) / n**2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(s["to_self"], 1 / n, rtol=1e-13)
    shifted = np.zeros((1, n, n))
    shifted[0, np.arange(n - 1), np.arange(1, n)] = 1.0
    shifted[0, n - 1, n - 1] = 1.0
    s = head_statistics(shifted, none, none, none)
    assert s["to_next"][0] == pytest.approx((n - 1) / n) and s["entropy"][0] == 0.0
    assert s["distance"][0] == pytest.approx((n - 1) / n) and s["to_prev"][0] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_random_maps_equal_the_loops(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 20))
    p = random_map(rng, 3, n)
    kinds = [rng.random(n) < 0.3 for _ in range(3)]
    assert_same(head_statistics(p, *kinds), loops(p, *kinds))


def test_a_text_without_tokens_has_nan_statistics():
    empty = np.zeros(0, bool)
    s = head_statistics(np.zeros((4, 0, 0)), empty, empty, empty)
    assert all(v.shape == (4,) and np.isnan(v).all() for v in s.values())


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-roberta", "tiny-albert", "tiny-distilbert"])
def test_real_maps_of_every_family_equal_the_loops(family):
    """Maps from the model (float32), with pairs: the statistics of one text's real tokens."""
    model = minibert.load(DATA / family)
    enc = model.encode(["Hello, world! It's here.", "short"], ["A pair: yes.", None], output_attentions=True)
    for b in range(2):
        n = int(enc.attention_mask[b].sum())
        kinds = token_kinds(enc.sequence_ids[b], enc.offsets[b], enc.texts[b], enc.text_pairs[b])
        assert len(enc.attentions) == model.num_layers
        for a in enc.attentions:
            p = a[b, :, :n, :n]
            assert_same(head_statistics(p, *kinds), loops(p.astype(np.float64), *kinds))


def test_real_model_maps_equal_the_loops(real_model):
    enc = real_model.encode(["The bank raised rates again, citing inflation."], output_attentions=True)
    kinds = token_kinds(enc.sequence_ids[0], enc.offsets[0], enc.texts[0])
    p = enc.attentions[3][0]
    assert_same(head_statistics(p, *kinds), loops(p.astype(np.float64), *kinds))


@st.composite
def maps_and_kinds(draw):
    h, n = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = random_map(rng, h, n, zeros=draw(st.sampled_from([0.0, 0.5, 0.95])))
    kind = rng.integers(0, 4, size=n)  # 0 CLS, 1 SEP, 2 punctuation, 3 other: disjoint
    return p, kind == 0, kind == 1, kind == 2


@settings(max_examples=150, deadline=None)
@given(maps_and_kinds())
def test_invariants(case):
    p, cls, sep, punct = case
    n = p.shape[-1]
    s = head_statistics(p, cls, sep, punct)
    eps = 1e-12
    for name in ("to_cls", "to_sep", "to_punct", "to_prev", "to_next", "to_self"):
        assert np.all((s[name] >= 0) & (s[name] <= 1 + eps)), name
    assert np.all(s["to_cls"] + s["to_sep"] + s["to_punct"] <= 1 + eps)  # disjoint keys; the rest >= 0
    assert np.all(s["to_prev"] + s["to_next"] + s["to_self"] <= 1 + eps)
    assert np.all((s["entropy"] >= -eps) & (s["entropy"] <= math.log(n) + eps))
    assert np.all((s["distance"] >= 0) & (s["distance"] <= n - 1 + eps))
    everything = np.ones(n, bool)
    np.testing.assert_allclose(head_statistics(p, everything, sep, punct)["to_cls"], 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "text, expected",
    [
        (".", True), (",", True), ("...", True), ("?!", True), ("—", True), ("«", True), ("。", True),
        ("'", True), (" . ", True), ("$", False), ("+", False), ("a.", False), ("", False), (" ", False),
        ("1", False), ("é", False),
    ],
)  # fmt: skip
def test_punctuation_is_unicode_category_p(text, expected):
    assert is_punctuation(text) is expected


def _kinds_of(model, text, pair=None):
    enc = model.encode([text], None if pair is None else [pair])
    cls, sep, punct = token_kinds(enc.sequence_ids[0], enc.offsets[0], enc.texts[0], enc.text_pairs[0])
    toks = enc.tokens[0]
    return (
        [t for t, c in zip(toks, cls, strict=True) if c],
        [t for t, c in zip(toks, sep, strict=True) if c],
        [t for t, c in zip(toks, punct, strict=True) if c],
    )


def test_special_and_punctuation_tokens_of_each_tokenizer():
    bert = minibert.load(DATA / "tiny-bert")
    # the apostrophe is [UNK] in this vocabulary: still punctuation, read from the text
    assert _kinds_of(bert, "Hello, it's here.", "And this!") == (["[CLS]"], ["[SEP]", "[SEP]"],
                                                                 [",", "[UNK]", ".", "!"])  # fmt: skip
    roberta = minibert.load(DATA / "tiny-roberta")  # <s> and </s>, byte-level BPE
    assert _kinds_of(roberta, "Hi, you.", "Yes!") == (["<s>"], ["</s>", "</s>", "</s>"], [",", ".", "!"])
    bpe = minibert.load(DATA / "tiny-bpe-bert")  # a lone space marker "Ġ" covers a space: not punctuation
    cls, sep, punct = _kinds_of(bpe, "Hello , world")
    assert (cls, sep, punct) == (["<s>"], ["</s>"], [","])
    xlmr = minibert.load(DATA / "tiny-xlm-roberta")  # SentencePiece "▁" markers
    assert _kinds_of(xlmr, "Hi, you.")[2] == [",", "."]
