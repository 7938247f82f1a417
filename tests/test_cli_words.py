"""``minibert extract --word-pool`` and ``--long window``: the files hold what
the library computes (minibert.words, minibert.encode_long, each text alone),
in every format, and truncation is never silent.

The library itself is tested against transformers in test_words.py and
test_windows.py; these tests use the committed tiny BPE model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fuzz_helpers import run
from numpy.testing import assert_allclose

import minibert
from minibert.cli import main
from minibert.outputs.output import open_output

TESTS = Path(__file__).resolve().parent
TINY_BPE = TESTS / "data" / "tiny-bpe-bert"
LONG_TEXT = str(np.load(TESTS / "reference" / "windows.npz")["bpe__text"])  # ~1,500 tokens
TEXTS = ["Hello world, tokenizers split words!", "", "Long documents are cut into windows."]
# batched with other texts vs alone: float32 rounding only (observed <= 1e-6)
ATOL = 2e-5


@pytest.fixture(scope="module")
def model():
    return minibert.load(TINY_BPE)


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "corpus.jsonl"
    lines = [{"text": t} for t in TEXTS] + [{"text": "Hello world", "text_pair": "A pair here."}]
    p.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return p


def extract(*args) -> SimpleNamespace:
    """``minibert extract --model TINY_BPE ARGS`` in this process (no second of imports per call)."""
    code, out, err = run("extract", "--model", TINY_BPE, *args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".jsonl"])
@pytest.mark.parametrize("how", ["first", "mean", "first_last"])
def test_word_pool_writes_words_spans_and_vectors(model, corpus, tmp_path, suffix, how):
    out = tmp_path / f"w{suffix}"
    args = ["extract", "--model", str(TINY_BPE), str(corpus), "-o", str(out), "--quiet"]
    assert main([*args, "--word-pool", how, "--layers", "0,-1", "--batch-size", "2"]) == 0
    o = open_output(out)
    pairs = [None, None, None, "A pair here."]
    for n, text in enumerate([*TEXTS, "Hello world"]):
        enc = model.encode([text], None if pairs[n] is None else [pairs[n]])
        want = minibert.words(enc, how, layers=[0, -1])
        assert o.words(n) == want.words[0]
        assert o.tokens(n) == enc.tokens[0]
        lo, hi = o.offsets[n], o.offsets[n + 1]
        np.testing.assert_array_equal(o.arrays["spans"][lo:hi], want.spans)
        np.testing.assert_array_equal(o.arrays["segments"][lo:hi], want.segments)
        for k, layer in enumerate([0, 2]):
            got = o.vectors(n, layer)
            assert got.shape == want.vectors[k].shape or (got.size == 0 and want.vectors[k].size == 0)
            if got.size:
                assert_allclose(got, want.vectors[k], rtol=0, atol=ATOL, err_msg=f"text {n} layer {layer}")
    assert o.words(1) == []  # the empty text has no words
    assert o.arrays["num_tokens"].tolist() == o.arrays["kept_tokens"].tolist()


def test_word_pool_with_combine(model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Hello world\n", encoding="utf-8")
    out = tmp_path / "w.npz"
    r = extract(src, "-o", out, "--word-pool", "first_last", "--layers", "1,2", "--combine", "concat")
    assert r.returncode == 0, r.stderr
    o = open_output(out)
    w = minibert.words(model.encode(["Hello world"]), "first_last", layers=[1, 2])
    assert_allclose(o.vectors(0, "combined"), np.concatenate(list(w.vectors), axis=-1), rtol=0, atol=ATOL)


@pytest.mark.parametrize("suffix", [".npz", ".jsonl"])
def test_long_window_keeps_every_token_and_says_so(model, tmp_path, suffix):
    src = tmp_path / "long.txt"
    src.write_text(f"{LONG_TEXT}\nA short text.\n", encoding="utf-8")
    out = tmp_path / f"o{suffix}"
    r = extract(src, "-o", out, "--long", "window", "--stride", "50", "--layers", "-1")
    assert r.returncode == 0, r.stderr
    assert "1 of 2 texts were longer than 128 tokens and read in overlapping windows" in r.stderr
    assert "truncated" not in r.stderr.replace("none was truncated", "")
    o = open_output(out)
    want = minibert.encode_long(model, [LONG_TEXT, "A short text."], stride=50)
    assert o.arrays["num_tokens"].tolist() == o.arrays["kept_tokens"].tolist() == want.num_tokens
    for n in range(2):
        assert o.tokens(n) == want.tokens[n]
        N = want.num_tokens[n]
        assert_allclose(o.vectors(n, 2), want.hidden_states[2][n, :N], rtol=0, atol=ATOL)


def test_long_window_with_pooling_pools_the_stitched_tokens(model, tmp_path):
    src = tmp_path / "long.txt"
    src.write_text(LONG_TEXT + "\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    assert extract(src, "-o", out, "--long", "window", "--pool", "mean", "--quiet").returncode == 0
    enc = minibert.encode_long(model, LONG_TEXT)
    N = enc.num_tokens[0]
    assert N > 1000
    for i in range(3):  # one vector per original token, each counted once
        assert_allclose(open_output(out).vectors(0, i), enc.hidden_states[i][0, :N].mean(axis=0), atol=1e-5)


def test_long_window_with_word_pool(model, tmp_path):
    src = tmp_path / "long.txt"
    src.write_text(LONG_TEXT + "\n", encoding="utf-8")
    out = tmp_path / "o.safetensors"
    r = extract(src, "-o", out, "--long", "window", "--word-pool", "mean", "--layers", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    want = minibert.words(minibert.encode_long(model, LONG_TEXT), "mean", layers=2)
    o = open_output(out)
    assert o.words(0) == want.words[0]
    assert_allclose(o.vectors(0, 2), want.vectors[0], rtol=0, atol=ATOL)


def test_truncation_summary_names_texts_and_counts(model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(f"short\n{LONG_TEXT}\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    r = extract(src, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    N = model.encode([LONG_TEXT], max_length=128).num_tokens[0]
    S = model.encode(["short"]).num_tokens[0]
    assert f"1 of 2 texts were truncated to 128 tokens (text 1: {N} -> 128)" in r.stderr
    assert "--long window" in r.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(x["num_tokens"], x["kept_tokens"]) for x in lines] == [(S, S), (N, 128)]
    o = open_output(out)
    assert o.arrays["num_tokens"].tolist() == [S, N] and o.arrays["kept_tokens"].tolist() == [S, 128]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stride", "10"], "--stride applies to --long window only"),
        (["--word-pool", "mean", "--pool", "mean"], "cannot be combined with --pool mean"),
        (["--long", "window", "--stride", "200"], "stride 200 leaves gaps: at most 126"),
        (["--long", "window", "--max-length", "2"], "window 2 leaves no room for text"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, args, message):
    src = tmp_path / "in.txt"
    src.write_text(LONG_TEXT + "\n", encoding="utf-8")
    r = extract(src, "-o", tmp_path / "o.npz", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.npz").exists()


def test_windows_refuse_pairs_naming_the_text(corpus, tmp_path):
    r = extract(corpus, "-o", tmp_path / "o.npz", "--long", "window")
    assert r.returncode == 2
    assert "text 3: windows take single texts, not text pairs" in r.stderr
