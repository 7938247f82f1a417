"""minibert/outputs/records.py: records -> the arrays of the layout, in input order;
stored dtypes rounded once, float16 overflow refused."""

from __future__ import annotations

import numpy as np
import pytest

from minibert import MinibertError
from minibert.features.attention_stats import STATS
from minibert.outputs.records import Record, WordRows, cast_features, offsets, records_to_arrays
from minibert.outputs.spec import ExtractSpec


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


def _maps_and_stats(index: int, k: int, h: int = 2) -> Record:
    """A text of k tokens with made-up maps of layers 1 and 2 and statistics (values tell texts apart)."""
    cells = np.arange(h * k * k, dtype=np.float32).reshape(h, k, k)
    maps = {i: np.full((h, k, k), 100 * index + i, np.float32) + cells for i in (1, 2)}
    stats = {name: np.full((2, h), 10 * index + s, np.float64) for s, name in enumerate(STATS)}
    return Record(index, "t", None, ["t"] * k, np.arange(k), {"hidden_states.2": np.zeros((k, 3))}, k,
                  attentions=maps, attention_stats=stats)  # fmt: skip


def test_attention_maps_are_flat_per_layer_with_offsets_of_h_k_squared():
    spec = ExtractSpec(layers=(0, 2, 1), num_hidden_layers=2, attentions="maps", num_attention_heads=2)
    recs = [_maps_and_stats(1, 1), _maps_and_stats(0, 3), _maps_and_stats(2, 0)]  # any order
    arrays, _, _ = records_to_arrays(recs, spec)
    assert arrays["attention_layers"].tolist() == [2, 1]  # the selected layers but 0, in their order
    assert arrays["attention_offsets"].tolist() == [0, 18, 20, 20]  # 2 heads x 3^2, 2 x 1^2, 2 x 0^2
    for i in (1, 2):
        a = np.asarray(arrays[f"attentions.{i}"])  # kept in parts until written
        assert a.shape == (20,) and a.dtype == np.float32
        np.testing.assert_array_equal(a[:18].reshape(2, 3, 3), recs[1].attentions[i])  # text 0, C order
        np.testing.assert_array_equal(a[18:], recs[0].attentions[i].reshape(-1))
    assert not any(k.startswith("attention_stats") for k in arrays)


def test_attention_statistics_are_texts_by_layers_by_heads():
    spec = ExtractSpec(layers=(1, 2), num_hidden_layers=2, attentions="stats", num_attention_heads=2)
    arrays, _, _ = records_to_arrays([_maps_and_stats(1, 1), _maps_and_stats(0, 3)], spec)
    assert sorted(k for k in arrays if k.startswith("attention")) == ["attention_layers"] + sorted(
        f"attention_stats.{s}" for s in STATS
    )
    assert arrays["attention_stats.to_sep"].shape == (2, 2, 2)  # (N, L', h)
    assert arrays["attention_stats.to_sep"][:, 0, 0].tolist() == [2, 12]  # text 0, then text 1
    empty, _, _ = records_to_arrays([], spec)
    assert (
        empty["attention_stats.entropy"].shape == (0, 2, 2)
        and empty["attention_stats.entropy"].dtype == np.float32
    )
    spec16 = ExtractSpec(layers=(1,), num_hidden_layers=2, attentions="maps", num_attention_heads=2,
                         output_dtype="float16")  # fmt: skip
    assert np.asarray(records_to_arrays([], spec16)[0]["attentions.1"]).dtype == np.float16
    rec = cast_features([_maps_and_stats(0, 2)], np.float16)[0]
    assert rec.attentions[1].dtype == np.float16 and rec.attention_stats["entropy"].dtype == np.float64
