"""The extract loop (minibert/corpus/extract.py): a forward pass that goes non-finite
fails the run naming the text's input index and the layer, and writes nothing;
a text that is not text names its input index; windowed texts are batched
so that padding stays bounded. (Bad specs: test_spec.py.)

Malformed-input cases run the CLI in-process through tests/fuzz_helpers.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY_BERT
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, snapshot
from safetensors.numpy import load_file, save_file

import minibert
from minibert.corpus.extract import extract_chunk, length_sorted_batches
from minibert.corpus.inputs import Item
from minibert.model import NonFiniteError
from minibert.outputs.spec import ExtractSpec

TEXTS = ["Hello world!", "the cat sat", "zebra quartz", "plain words here"]  # only text 2 has a 'z'


@pytest.fixture(scope="module")
def overflowing_dir(tmp_path_factory):
    """tiny-bert with the embedding row of 'z' at 3e38: finite weights (nothing to
    reject at load), but any text holding a 'z' overflows float32 in the embedding
    LayerNorm, so hidden_states[0] of that text is NaN."""
    d = tmp_path_factory.mktemp("overflowing") / "tiny-bert"
    shutil.copytree(TINY_BERT, d)
    tensors = load_file(d / "model.safetensors")
    z = minibert.load(TINY_BERT).tokenizer.backend.token_to_id("z")
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name][z] = 3e38
    assert np.isfinite(tensors[name]).all()
    save_file(tensors, d / "model.safetensors")
    return d


def corpus(tmp_path, suffix=".txt"):
    src = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    else:
        src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return src


NON_FINITE_CASES = {
    "npz": ("out.npz", []),
    "jsonl out": ("out.jsonl", []),
    "safetensors": ("out.safetensors", []),
    "jsonl in": ("out.npz", ["--jsonl-input"]),
    "pooled": ("out.npz", ["--pool", "mean"]),
    "last layer only": ("out.npz", ["--layers", "-1"]),
    "word pool": ("out.npz", ["--word-pool", "mean"]),
    "window": ("out.npz", ["--long", "window", "--max-length", "8"]),
    "window, last layer": ("out.npz", ["--long", "window", "--max-length", "8", "--layers", "-1"]),
    "2 threads, batches of 1": ("out.npz", ["--threads", "2", "--batch-size", "1"]),
}


# Issue 9: NaN or Inf from the forward pass gave NaN vectors with exit status 0.
@pytest.mark.parametrize("case", sorted(NON_FINITE_CASES))
def test_non_finite_forward_pass_fails_and_writes_nothing(overflowing_dir, tmp_path, case):
    out_name, args = NON_FINITE_CASES[case]
    jsonl = "--jsonl-input" in args
    args = [a for a in args if a != "--jsonl-input"]
    src = corpus(tmp_path, ".jsonl" if jsonl else ".txt")
    before = snapshot(src, overflowing_dir)
    result = run("extract", "--model", overflowing_dir, src, "-o", tmp_path / out_name, "--quiet", *args)
    msg = assert_one_line_error(result, "text 2:", "hidden_states[0]", "NaN or Inf")
    assert "text 0" not in msg
    assert not (tmp_path / out_name).exists()
    assert_unchanged(before, src, overflowing_dir)


def test_extract_chunk_names_the_input_index(overflowing_dir):
    """The batch is length-sorted: the row in the batch is not the text's place in
    the input, and the error names the latter."""
    model = minibert.load(overflowing_dir)
    items = [Item(100 + i, t) for i, t in enumerate(TEXTS)]
    with pytest.raises(NonFiniteError, match="text 102: ") as e:
        extract_chunk(model, items, ExtractSpec(layers=(0, 1, 2), num_hidden_layers=2))
    assert (e.value.text, e.value.layer) == (102, 0)


SURROGATE_CASES = {
    "text": ({"text": "ok \ud800 here"}, ""),
    "text_pair": ({"text": "fine", "text_pair": "x\udfff"}, "text_pair"),
    "text, windows": ({"text": "ok \ud800 here"}, "window"),
}


# Issue 9: a lone surrogate (a JSON escape such as "\ud800") ended in a traceback from tokenizers.
@pytest.mark.parametrize("case", sorted(SURROGATE_CASES))
def test_lone_surrogate_in_the_input_is_one_line(tmp_path, case):
    obj, what = SURROGATE_CASES[case]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": "first"}), json.dumps(obj), json.dumps({"text": "third one"})]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = snapshot(src)
    args = ["--long", "window"] if what == "window" else []
    result = run("extract", "--model", TINY_BERT, src, "-o", tmp_path / "out.npz", "--quiet", *args)
    msg = assert_one_line_error(result, "surrogate")
    assert "text 1" in msg or "line 2" in msg, msg  # the input's own numbering (reader or model)
    if what == "text_pair":
        assert "pair" in msg
    assert not (tmp_path / "out.npz").exists()
    assert_unchanged(before, src)


def test_explain_with_a_lone_surrogate_is_one_line():
    assert_one_line_error(run("explain", "--model", TINY_BERT, "caf\ud800"), "lone surrogate")


def test_windowed_batches_keep_padding_bounded():
    """A text far longer than the others is a batch of its own (its hidden states
    would otherwise be padded for every text of its batch); ordinary texts still go
    batch_size at a time."""
    items = [Item(0, "x" * 10_000), *(Item(i, "y" * (50 - i)) for i in range(1, 40))]
    batches = list(length_sorted_batches(items, 8, max_chars=8 * 4 * 64))
    assert [it.index for it in batches[0]] == [0]
    assert [len(b) for b in batches[1:]] == [8, 8, 8, 8, 7]
    assert [len(b) for b in length_sorted_batches(items, 8)] == [8] * 5  # without a bound: as before


def test_window_mode_keeps_only_the_selected_layers(monkeypatch):
    """--long window asks encode_long for the selected layers only."""
    model = minibert.load(TINY_BERT)
    seen = []
    real = minibert.corpus.extract.encode_long
    monkeypatch.setattr(
        minibert.corpus.extract, "encode_long", lambda *a, **k: seen.append(k["layers"]) or real(*a, **k)
    )
    items = [Item(0, "word " * 100), Item(1, "short")]
    records = extract_chunk(
        model, items, ExtractSpec(layers=(2,), num_hidden_layers=2, long="window", max_length=16)
    )
    assert [list(layers) for layers in seen] == [[2]]
    assert (
        list(records[0].features) == ["hidden_states.2"]
        and records[0].features["hidden_states.2"].shape[0] > 16
    )
