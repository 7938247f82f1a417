"""minibert.encode_long: windows past the model's limit, stitched per token.

References (tests/reference/windows.npz, from tests/reference/generate_words.py):
a ~1,500-token text per model, cut into windows by a plain loop, each
token's window picked by google-research/bert's ``_check_is_max_context``
written out again, and that window's hidden states from transformers at a
subset of positions (every switch between windows, both sides, the special
tokens, and random others).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import minibert
from minibert import MinibertError
from minibert.features.windows import choose_windows, window_starts

TESTS = Path(__file__).resolve().parent
REFERENCE = TESTS / "reference"
# Observed max abs diff vs transformers, float32: 6.3e-6 (real model), 1.2e-6 (tiny BPE model).
ATOL = 5e-5


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE / "windows.npz")


def max_context_loop(n: int, starts: list[int], size: int) -> list[int]:
    """run_squad.py's rule, one token at a time: most context on both sides,
    the earlier window on ties (all windows here have the same length)."""
    out = []
    for j in range(n):
        best, best_score = None, -1
        for w, s in enumerate(starts):
            if s <= j < s + size and min(j - s, s + size - 1 - j) > best_score:
                best, best_score = w, min(j - s, s + size - 1 - j)
        out.append(best)
    return out


@pytest.mark.parametrize(
    "n, size, stride, starts",
    [
        (10, 4, 3, [0, 3, 6]),  # the last regular window already ends at n
        (11, 4, 3, [0, 3, 6, 7]),  # one more window, flush with the end
        (10, 4, 4, [0, 4, 6]),  # stride = size: no overlap but the last
        (4, 4, 2, [0]),  # fits: one window
        (3, 4, 2, [0]),
    ],
)
def test_window_starts_by_hand(n, size, stride, starts):
    assert window_starts(n, size, stride).tolist() == starts


def test_choose_windows_by_hand():
    # windows [0, 4) and [2, 6) over 6 tokens: token 2 has context (2, 1) in the first, (0, 3) in the
    # second -> first; token 3: (3, 0) vs (1, 2) -> second
    assert choose_windows(6, np.array([0, 2]), 4).tolist() == [0, 0, 0, 1, 1, 1]
    # windows [0, 4) and [1, 5): token 2 has context (2, 1) in the first, (1, 2) in the second,
    # min 1 in both -> the earlier one
    assert choose_windows(5, np.array([0, 1]), 4).tolist() == [0, 0, 0, 1, 1]


@given(n=st.integers(1, 300), size=st.integers(1, 60), data=st.data())
def test_choose_windows_equals_the_max_context_loop(n, size, data):
    stride = data.draw(st.integers(1, size))
    starts = window_starts(n, size, stride)
    chosen = choose_windows(n, starts, min(size, n))
    assert chosen.tolist() == max_context_loop(n, starts.tolist(), min(size, n))
    # every token is in its window, and every window is full
    assert ((starts[chosen] <= np.arange(n)) & (np.arange(n) < starts[chosen] + size)).all()
    assert starts[-1] + min(size, n) == n


def check_against_reference(model, ref, case):
    text = str(ref[f"{case}__text"])
    enc = minibert.encode_long(
        model, [text], stride=int(ref[f"{case}__stride"]), window=int(ref[f"{case}__window"])
    )
    N = len(ref[f"{case}__input_ids"])
    assert N > 2 * int(ref[f"{case}__window"])  # long enough to need several windows
    # exactly the original token count, nothing cut
    assert enc.num_tokens == [N]
    assert enc.attention_mask.sum() == N and enc.hidden_states[0].shape[:2] == (1, N)
    np.testing.assert_array_equal(enc.input_ids[0], ref[f"{case}__input_ids"])
    np.testing.assert_array_equal(enc.windows[0], ref[f"{case}__chosen"], err_msg="window chosen per token")
    positions, hidden = ref[f"{case}__positions"], ref[f"{case}__hidden"]
    for i, h in enumerate(enc.hidden_states):
        assert_allclose(h[0, positions], hidden[i], rtol=0, atol=ATOL, err_msg=f"{case} hidden_states[{i}]")
    return enc


def test_tiny_model_long_text_matches_transformers_window_by_window(bpe_model, ref):
    enc = check_against_reference(bpe_model, ref, "bpe")
    assert len(np.unique(enc.windows[0])) == len(ref["bpe__starts"]) > 20


@pytest.mark.real
@pytest.mark.slow
def test_real_model_long_text_matches_transformers_window_by_window(real_model, ref):
    enc = check_against_reference(real_model, ref, "real")
    assert enc.tokens[0][0] == "[CLS]" and enc.tokens[0][-1] == "[SEP]"


def test_a_text_within_the_limit_gives_the_same_result(bpe_model):
    text = "Long documents are cut into overlapping windows."
    plain, long = bpe_model.encode([text]), minibert.encode_long(bpe_model, [text], stride=7)
    assert long.windows[0].tolist() == [0] * plain.num_tokens[0]
    np.testing.assert_array_equal(long.input_ids, plain.input_ids)
    for a, b in zip(long.hidden_states, plain.hidden_states, strict=True):
        np.testing.assert_array_equal(a, b)  # the same single forward pass: identical


@pytest.mark.real
def test_real_model_text_within_the_limit_gives_the_same_result(real_model):
    text = "A short text gives the same vectors with and without windows."
    plain, long = real_model.encode(text), minibert.encode_long(real_model, text)
    for a, b in zip(long.hidden_states, plain.hidden_states, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_of_long_short_and_empty_texts(bpe_model, ref):
    text = str(ref["bpe__text"])
    long_alone = minibert.encode_long(bpe_model, text, stride=50)
    short = "Hello world"
    enc = minibert.encode_long(bpe_model, [short, text, ""], stride=50, batch_size=3)
    N = long_alone.num_tokens[0]
    assert enc.num_tokens == [bpe_model.encode(short).num_tokens[0], N, 2]
    assert enc.attention_mask.sum(axis=1).tolist() == enc.num_tokens
    # a text's vectors do not depend on its batch, nor on how many windows run at once
    # (observed 0 to ~1e-6: padding to other lengths changes float rounding only)
    for i, h in enumerate(enc.hidden_states):
        assert_allclose(h[1, :N], long_alone.hidden_states[i][0], rtol=0, atol=1e-5)
        assert not h[0, enc.num_tokens[0] :].any() and not h[2, 2:].any()  # padding stays zero
    short_plain = bpe_model.encode(short)
    assert_allclose(
        enc.hidden_states[-1][0, : enc.num_tokens[0]], short_plain.hidden_states[-1][0], atol=1e-5
    )


def test_specials_come_from_the_first_and_last_windows(bpe_model, ref):
    enc = minibert.encode_long(bpe_model, str(ref["bpe__text"]), stride=50)
    w = enc.windows[0]
    assert enc.tokens[0][0] == "<s>" and w[0] == 0
    assert enc.tokens[0][-1] == "</s>" and w[-1] == w.max()
    assert (np.diff(w) >= 0).all()  # windows are used in order, each for one run of tokens


def test_words_of_a_windowed_text(bpe_model, ref):
    text = str(ref["bpe__text"])
    enc = minibert.encode_long(bpe_model, text)
    pre = bpe_model.tokenizer.backend.pre_tokenizer.pre_tokenize_str(text)
    w = minibert.words(enc, "mean", layers=-1)
    assert w.words[0] == [text[a:b].strip() for _, (a, b) in pre]
    assert w.vectors.shape == (1, len(pre), 32)


def test_bad_arguments_name_the_problem(bpe_model, ref):
    text = str(ref["bpe__text"])
    with pytest.raises(MinibertError, match="stride 127 leaves gaps: at most 126"):
        minibert.encode_long(bpe_model, text, stride=127)
    with pytest.raises(MinibertError, match="stride must be a positive integer"):
        minibert.encode_long(bpe_model, text, stride=0)
    with pytest.raises(MinibertError, match="window must be an integer from 2 to 128"):
        minibert.encode_long(bpe_model, text, window=129)
    with pytest.raises(MinibertError, match="window 2 leaves no room for text beside 2 special tokens"):
        minibert.encode_long(bpe_model, text, window=2)


def test_layers_keeps_only_those_and_equals_the_full_result(bpe_model, ref):
    """layers=[...] keeps those hidden states (the rest are None), bit for bit the
    ones every layer gives; memory holds the kept layers, not all of them."""
    text = str(ref["bpe__text"])
    every = minibert.encode_long(bpe_model, [text, "short one"], stride=50)
    kept = minibert.encode_long(bpe_model, [text, "short one"], stride=50, layers=[0, -1])
    last = len(every.hidden_states) - 1
    assert [i for i, h in enumerate(kept.hidden_states) if h is not None] == [0, last]
    for i in (0, last):
        np.testing.assert_array_equal(kept.hidden_states[i], every.hidden_states[i])
    assert [w.tolist() for w in kept.windows] == [w.tolist() for w in every.windows]


# Issue 9: --long window on a 10 MB line allocated 8 GiB: every window's every layer was held.
def test_windows_stream_through_the_model_a_batch_at_a_time(bpe_model, ref, monkeypatch):
    """The model sees at most batch_size windows at a time, however long the text."""
    from minibert.model import Model

    shapes = []
    real = Model.forward
    monkeypatch.setattr(Model, "forward", lambda self, batch, *a, **k: shapes.append(batch.input_ids.shape)
                        or real(self, batch, *a, **k))  # fmt: skip
    text = str(ref["bpe__text"]) * 3
    enc = minibert.encode_long(bpe_model, text, stride=100, window=128, batch_size=4, layers=-1)
    assert len(shapes) > 10 and all(b <= 4 and s <= 128 for b, s in shapes)
    assert enc.hidden_states[-1].shape[1] == enc.num_tokens[0] > 10 * 128
