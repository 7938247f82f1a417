"""Token ids equal transformers' (tests/reference/tokens-*.json): singles,
pairs, truncation with transformers' longest_first rule, and the vocab.txt
fallback when a model has no tokenizer.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, TINY_BERT
from numpy.testing import assert_array_equal

from minibert.loading.tokenizer import Tokenizer


def cases(name: str) -> list[dict]:
    return json.loads((REFERENCE / f"tokens-{name}.json").read_text(encoding="utf-8"))["cases"]


def check_cases(tokenizer: Tokenizer, name: str) -> None:
    for case in cases(name):
        pair = case["text_pair"]
        batch = tokenizer([case["text"]], None if pair is None else [pair], case["max_length"])
        what = f"{case['text'][:40]!r} / {pair!r} / max_length={case['max_length']}"
        assert_array_equal(batch.input_ids[0], case["input_ids"], err_msg=what)
        assert_array_equal(batch.token_type_ids[0], case["token_type_ids"], err_msg=what)
        assert_array_equal(batch.attention_mask[0], 1, err_msg=what)
        assert batch.tokens[0] == case["tokens"], what


def without_tokenizer_json(src: Path, dest: Path) -> Path:
    """A copy of a model's tokenizer files with only vocab.txt (+ tokenizer_config.json)."""
    dest.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    return dest


@pytest.fixture(params=["tiny-bert", "all-MiniLM-L6-v2"])
def model_dir(request):
    if request.param == "tiny-bert":
        return request.param, TINY_BERT
    return request.param, request.getfixturevalue("real_model_dir")


def test_ids_equal_transformers(model_dir):
    name, path = model_dir
    tok = Tokenizer.from_dir(path)
    assert tok.source.endswith("tokenizer.json")
    check_cases(tok, name)


def test_vocab_txt_fallback_gives_the_same_ids(model_dir, tmp_path):
    name, path = model_dir
    tok = Tokenizer.from_dir(without_tokenizer_json(path, tmp_path / "vocab-only"))
    assert tok.source.endswith("vocab.txt")
    check_cases(tok, name)


def test_the_cases_cover_truncation_of_pairs():
    """The reference holds pairs cut by longest_first, including the odd-budget case where
    transformers' legacy Python tokenizer would keep a different token (recorded, not used)."""
    cut = [c for c in cases("all-MiniLM-L6-v2") if c["text_pair"] and c["max_length"] < 32]
    assert len(cut) >= 4 and all(len(c["input_ids"]) == c["max_length"] for c in cut)
    assert any("legacy_input_ids" in c for c in cut)
    long_first = next(c for c in cut if c["text_pair"] == "Short one." and c["max_length"] == 10)
    assert long_first["tokens"][-4:] == ["short", "one", ".", "[SEP]"]  # only the longer one was cut


def test_batch_is_right_padded_with_the_same_ids():
    tok = Tokenizer.from_dir(TINY_BERT)
    singles = [c for c in cases("tiny-bert") if c["text_pair"] is None and c["max_length"] == 64]
    batch = tok([c["text"] for c in singles], None, 64)
    S = max(len(c["input_ids"]) for c in singles)
    assert batch.input_ids.shape == (len(singles), S)
    for b, c in enumerate(singles):
        n = len(c["input_ids"])
        assert_array_equal(batch.input_ids[b, :n], c["input_ids"])
        assert_array_equal(batch.attention_mask[b], [1] * n + [0] * (S - n))
        assert np.all(batch.input_ids[b, n:] == 0) and np.all(batch.token_type_ids[b, n:] == 0)


def test_num_tokens_counts_before_truncation():
    tok = Tokenizer.from_dir(TINY_BERT)
    long = next(c for c in cases("tiny-bert") if len(c["input_ids"]) == 64)
    batch = tok([long["text"], "Hello world!"], None, 64)
    assert batch.num_tokens[0] > 64 and batch.num_tokens[1] == 5
    assert batch.tokens[0][-1] == "[SEP]"


def test_truncation_never_changes_the_shared_backend(tmp_path):
    """Truncation runs on a copy per max_length, so a concurrent untruncated call on
    the same backend can never see another call's setting (issue 9: a call asking
    for 16 tokens got 64). The copy gives transformers' ids (test_ids_equal_transformers)."""
    for tok in (
        Tokenizer.from_dir(TINY_BERT),
        Tokenizer.from_dir(without_tokenizer_json(TINY_BERT, tmp_path / "v")),
    ):
        long = "word " * 100
        for n in (8, 16, 8):
            assert tok([long], None, n).input_ids.shape == (1, n)
            assert tok.backend.truncation is None and tok.backend.padding is None
        assert tok([long], None, None).num_tokens[0] > 64
        assert sorted(tok._truncators) == [8, 16]


# --------------------------------------------------------------------------- Batch methods


def each_text(batch) -> list[tuple]:
    """Per text: its real ids, types, and every per-text field, compared text by text."""
    n = batch.attention_mask.sum(axis=1)
    fields = (batch.tokens, batch.word_ids, batch.num_tokens, batch.sequence_ids, batch.offsets, batch.texts,
              batch.text_pairs)  # fmt: skip
    return [
        (
            batch.input_ids[b, : n[b]].tolist(),
            batch.token_type_ids[b, : n[b]].tolist(),
            *(f[b] for f in fields),
        )
        for b in range(len(batch.tokens))
    ]


TEXTS = ["A first text.", "hi", "a somewhat longer third text, with a comma", "four"]
PAIRS = ["its pair", None, "another pair", None]


def test_rows_keeps_every_field_of_the_chosen_texts():
    """Batch.rows is the batch of those texts alone: the same ids and every
    per-text field (offsets and texts too), padded to the longest of them."""
    tok = Tokenizer.from_dir(TINY_BERT)
    batch = tok(TEXTS, PAIRS)
    sub = batch.rows([3, 1])
    assert each_text(sub) == [each_text(batch)[3], each_text(batch)[1]]
    assert each_text(sub) == each_text(tok([TEXTS[3], TEXTS[1]], [None, None]))  # as if tokenized alone
    assert sub.input_ids.shape == (2, max(len(batch.tokens[3]), len(batch.tokens[1])))
    assert sub.texts == ["four", "hi"] and sub.attention_mask.sum(axis=1).tolist() == [6, 4]


def test_padded_adds_masked_positions_and_keeps_every_field():
    tok = Tokenizer.from_dir(TINY_BERT)
    batch = tok(TEXTS, PAIRS)
    wide = batch.padded(3, pad_id=7)
    S = batch.input_ids.shape[1]
    assert wide.input_ids.shape == (4, S + 3)
    assert_array_equal(wide.input_ids[:, :S], batch.input_ids)
    assert (wide.input_ids[:, S:] == 7).all() and not wide.attention_mask[:, S:].any()
    assert not wide.token_type_ids[:, S:].any()
    assert each_text(wide) == each_text(batch)  # offsets, texts, pairs: nothing dropped


def test_gather_makes_windows_of_a_text():
    """Batch.gather: text i is the tokens positions[i] of text rows[i], with their
    per-token fields, right-padded with the pad id."""
    tok = Tokenizer.from_dir(TINY_BERT)
    batch = tok(TEXTS, PAIRS)
    positions = [np.array([0, 2, 3]), np.array([1]), np.array([0, 1, 2, 3, 4])]
    windows = batch.gather([2, 0, 2], positions, pad_id=5)
    assert windows.input_ids.shape == (3, 5) and windows.num_tokens == [3, 1, 5]
    for i, (b, p) in enumerate(zip([2, 0, 2], positions, strict=True)):
        assert_array_equal(windows.input_ids[i, : len(p)], batch.input_ids[b, p])
        assert_array_equal(windows.token_type_ids[i, : len(p)], batch.token_type_ids[b, p])
        assert windows.tokens[i] == [batch.tokens[b][j] for j in p]
        assert windows.offsets[i] == [batch.offsets[b][j] for j in p]
        assert windows.sequence_ids[i] == [batch.sequence_ids[b][j] for j in p]
        assert windows.texts[i] == TEXTS[b] and windows.text_pairs[i] == PAIRS[b]
    assert (windows.input_ids[1, 1:] == 5).all() and windows.attention_mask.sum(axis=1).tolist() == [3, 1, 5]
