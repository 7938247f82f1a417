"""minibert/records.py: records -> the arrays of the layout, in input order;
stored dtypes rounded once, float16 overflow refused."""

from __future__ import annotations

import numpy as np
import pytest

from minibert import MinibertError
from minibert.records import Record, WordRows, cast_features, offsets, records_to_arrays
from minibert.spec import ExtractSpec


def test_offsets_are_running_row_counts():
    np.testing.assert_array_equal(offsets([2, 0, 3]), [0, 2, 2, 5])
    assert offsets([]).tolist() == [0] and offsets([1]).dtype == np.int64


def test_records_in_any_order_become_the_layout_in_input_order():
    spec = ExtractSpec(layers=(1,), num_hidden_layers=1)
    recs = [
        Record(1, "b", None, ["x"], np.array([7]), {"hidden_states.1": np.full((1, 2), 1.0)}, 3),
        Record(0, "a", None, ["p", "q"], np.array([5, 6]), {"hidden_states.1": np.zeros((2, 2))}, 2),
    ]
    arrays, tokens, words = records_to_arrays(recs, spec)
    assert tokens == ["p", "q", "x"] and words is None
    assert sorted(arrays) == [
        "hidden_states.1",
        "input_ids",
        "kept_tokens",
        "layers",
        "num_tokens",
        "offsets",
    ]
    assert arrays["offsets"].tolist() == [0, 2, 3]
    assert arrays["input_ids"].tolist() == [5, 6, 7]
    assert arrays["layers"].tolist() == [1]
    assert arrays["num_tokens"].tolist() == [2, 3] and arrays["kept_tokens"].tolist() == [2, 1]  # text 1 cut
    assert arrays["hidden_states.1"].tolist() == [[0, 0], [0, 0], [1, 1]]


def test_word_rows_get_their_own_offsets():
    spec = ExtractSpec(layers=(0,), num_hidden_layers=1, word_pool="mean")
    recs = [
        Record(0, "ab c", None, ["[CLS]", "a", "##b", "c", "[SEP]"], np.arange(5),
               {"hidden_states.0": np.ones((2, 3))}, 5,
               WordRows(["ab", "c"], np.array([[0, 2], [3, 4]]), np.zeros(2))),
        Record(1, "", None, ["[CLS]", "[SEP]"], np.arange(2), {"hidden_states.0": np.zeros((0, 3))}, 2,
               WordRows([], np.zeros((0, 2)), np.zeros(0))),
    ]  # fmt: skip
    arrays, tokens, words = records_to_arrays(recs, spec)
    assert words == ["ab", "c"] and len(tokens) == 7
    assert arrays["offsets"].tolist() == [0, 2, 2]  # words
    assert arrays["token_offsets"].tolist() == [0, 5, 7]  # tokens
    assert arrays["spans"].tolist() == [[0, 2], [3, 4]] and arrays["segments"].tolist() == [0, 0]
    assert arrays["hidden_states.0"].shape == (2, 3)


def test_no_records_still_give_every_array():
    spec = ExtractSpec(layers=(0, 1), num_hidden_layers=1, combine="sum", output_dtype="float16")
    arrays, tokens, words = records_to_arrays([], spec)
    assert tokens == [] and arrays["offsets"].tolist() == [0] and arrays["layers"].tolist() == [0, 1]
    assert arrays["combined"].shape == (0, 0) and arrays["combined"].dtype == np.float16


def test_float16_output_rounds_once_and_refuses_overflow():
    rng = np.random.default_rng(0)
    feats = {"hidden_states.0": (rng.normal(size=(3, 4)) * 100).astype(np.float32)}
    rec = Record(0, "t", None, ["a", "b", "c"], np.arange(3), dict(feats), 3)
    cast_features([rec], np.float16)
    assert rec.features["hidden_states.0"].dtype == np.float16
    np.testing.assert_array_equal(
        rec.features["hidden_states.0"], feats["hidden_states.0"].astype(np.float16)
    )
    big = Record(3, "t", None, ["a"], np.zeros(1), {"hidden_states.6": np.array([[7e4]], np.float32)}, 1)
    with pytest.raises(MinibertError, match="text 3: hidden_states.6 holds 70000, beyond float16's range"):
        cast_features([big], np.float16)
    same = Record(4, "t", None, ["a"], np.zeros(1), {"combined": np.array([[7e4]], np.float32)}, 1)
    cast_features([same], np.float64)  # wider: never an overflow
    assert same.features["combined"].dtype == np.float64 and same.features["combined"][0, 0] == 7e4
