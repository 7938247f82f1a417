"""Model.encode / tokenize / forward as a Python API: wrong arguments are one
clean MinibertError naming the argument, concurrent calls are safe and equal to
sequential ones bit for bit, a non-finite forward pass is an error naming the
text and the layer, and large inputs run in bounded working memory."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from blas_helpers import blas_thread_counts
from conftest import id_batch, random_model, variant
from numpy.testing import assert_array_equal

import minibert
from minibert import MinibertError
from minibert.encoder import fast
from minibert.model import Model, NonFiniteError, position_ids

# --------------------------------------------------------------------------- wrong arguments

TEXT_CASES = {
    "None": (None, "texts must be a string or a list of strings, got NoneType"),
    "ints": ([1, 2], "texts[0] must be a string, got int"),
    "bytes": (b"hello", "texts must be a string or a list of strings, got bytes: decode it"),
    "bytes in a list": (["ok", b"x"], "texts[1] is bytes: decode it"),
    "None in a list": (["ok", None], "texts[1] must be a string, got NoneType"),
    "a number": (3.5, "texts must be a string or a list of strings, got float"),
    "a set": ({"a", "b"}, "texts must be a string or a list of strings, got set"),
    "a dict": ({"text": "a"}, "texts must be a string or a list of strings, got dict"),
    "2-D array": (
        np.array([["a", "b"]]),
        "texts must be a 1-D list of strings, got an array of shape (1, 2)",
    ),
    "lone surrogate": ("caf\ud800", "texts[0] holds a lone surrogate ('\\ud800' at character 3)"),
    "low surrogate in a list": (["fine", "x\udfff"], "texts[1] holds a lone surrogate"),
    "surrogate from JSON": (json.loads('["ok", "\\udc80"]'), "texts[1] holds a lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
@pytest.mark.parametrize("call", ["encode", "tokenize", "encode_long"])
def test_wrong_texts_name_the_argument(tiny_model, call, case):
    bad, message = TEXT_CASES[case]
    with pytest.raises(MinibertError, match=re.escape(message)):
        if call == "encode_long":
            minibert.encode_long(tiny_model, bad)
        else:
            getattr(tiny_model, call)(bad)


@pytest.mark.parametrize(
    "texts",
    [
        ("a", "b c"),
        np.array(["a", "b c"]),
        (t for t in ["a", "b c"]),
        iter(["a", "b c"]),
        ["a", np.str_("b c")],
    ],
    ids=["tuple", "numpy array of str", "generator", "iterator", "numpy.str_"],
)
def test_any_sequence_of_strings_is_accepted(tiny_model, texts):
    want = tiny_model.encode(["a", "b c"])
    got = tiny_model.encode(texts)
    assert got.texts == ["a", "b c"] and all(type(t) is str for t in got.texts)
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        assert_array_equal(a, b)


PAIR_CASES = {
    "too many": (["a", "b"], "1 texts but 2 text_pairs"),
    "too few": ([], "1 texts but 0 text_pairs"),
    "an int": ([1], "text_pairs[0] must be a string, got int"),
    "bytes": (b"x", "text_pairs must be a string or a list of strings, got bytes"),
    "surrogate": (["\ud83d"], "text_pairs[0] holds a lone surrogate"),
    "a number": (7, "text_pairs must be a string or a list of strings, got int"),
}


@pytest.mark.parametrize("case", sorted(PAIR_CASES))
def test_wrong_text_pairs_name_the_argument(tiny_model, case):
    bad, message = PAIR_CASES[case]
    with pytest.raises(MinibertError, match=re.escape(message)):
        tiny_model.encode(["a text"], bad)


@pytest.mark.parametrize("impl, trace", [("fast", False), ("plain", False), ("plain", True)])
def test_a_none_pair_is_a_text_without_a_pair(tiny_model, impl, trace):
    """text_pairs [None, p, None]: the None texts are tokenized exactly as with no pairs
    (ids, type ids, tokens, words, offsets) and get their vectors bit for bit: those of
    the text alone padded to the batch's S on every path, and of encode([text]) on the
    default fast path; minibert.words reads them as the text alone."""
    m = variant(tiny_model, impl)
    texts, pairs = ["hello world", "the cat sat", "x"], [None, "on the mat today, it was warm", None]
    mixed = m.encode(texts, pairs, output_attentions=True, trace=trace)
    S = mixed.input_ids.shape[1]
    assert mixed.text_pairs == pairs
    for b in (0, 2):
        alone = m.tokenize([texts[b]])
        n = alone.num_tokens[0]
        assert (mixed.tokens[b], mixed.word_ids[b], mixed.sequence_ids[b], mixed.offsets[b]) == (
            alone.tokens[0], alone.word_ids[0], alone.sequence_ids[0], alone.offsets[0])  # fmt: skip
        for name in ("input_ids", "token_type_ids", "attention_mask"):
            assert_array_equal(getattr(mixed, name)[b, :n], getattr(alone, name)[0], err_msg=name)
        same_S = m.forward(alone.padded(S - n, m.tokenizer.pad_id), output_attentions=True, trace=trace)
        for i, (x, y) in enumerate(zip(mixed.hidden_states, same_S.hidden_states, strict=True)):
            assert_array_equal(x[b], y[0], err_msg=f"text {b}, hidden_states[{i}]")
        for i, (x, y) in enumerate(zip(mixed.attentions, same_S.attentions, strict=True)):
            assert_array_equal(x[b], y[0], err_msg=f"text {b}, attentions[{i}]")
        lone = m.encode([texts[b]])
        if impl == "fast":
            for i, (x, y) in enumerate(zip(mixed.hidden_states, lone.hidden_states, strict=True)):
                assert_array_equal(x[b, :n], y[0], err_msg=f"text {b}, hidden_states[{i}] vs alone")
        w, w1 = minibert.words(mixed, "mean", -1), minibert.words(lone, "mean", -1)
        assert w.words[b] == w1.words[0] and set(w.segments[w.offsets[b] : w.offsets[b + 1]]) == {0}
        if impl == "fast":
            assert_array_equal(w[b][1], w1[0][1])
    # every pair None is no pair at all
    none = m.encode(texts, [None] * 3, trace=trace)
    plain = m.encode(texts, trace=trace)
    assert_array_equal(none.input_ids, plain.input_ids)
    assert none.tokens == plain.tokens
    for x, y in zip(none.hidden_states, plain.hidden_states, strict=True):
        assert_array_equal(x, y)


def test_a_null_text_pair_in_jsonl_is_no_pair(tiny_model_dir, tmp_path):
    """A .jsonl line with "text_pair": null extracts exactly as the line without the field."""
    from fuzz_helpers import run

    outs = []
    pair = '{"text": "a b", "text_pair": "c"}'
    for name, first in (
        ("null", '{"text": "hello world", "text_pair": null}'),
        ("absent", '{"text": "hello world"}'),
    ):
        lines = [first, pair]
        src = tmp_path / f"{name}.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = tmp_path / f"{name}.npz"
        assert run("extract", "--model", tiny_model_dir, src, "-o", out, "--layers", "all", "--quiet")[0] == 0
        outs.append(np.load(out))
    assert sorted(outs[0].files) == sorted(outs[1].files)
    for key in outs[0].files:
        if key != "settings":
            assert_array_equal(outs[0][key], outs[1][key], err_msg=key)


@pytest.mark.parametrize("bad", [5.0, True, False, "8", 1, 0, -3, 10**9, np.float32(8), None.__class__])
def test_wrong_max_length(tiny_model, bad):
    with pytest.raises(MinibertError, match="max_length must be an integer from 2 to 64"):
        tiny_model.encode(["a text"], max_length=bad)


def test_numpy_integers_are_integers(tiny_model):
    assert tiny_model.encode(["a b c d e f"], max_length=np.int64(4)).input_ids.shape == (1, 4)
    assert minibert.encode_long(tiny_model, "a b c", stride=np.int32(2), window=np.int64(8)).num_tokens


@pytest.mark.parametrize("flag", ["output_attentions", "trace"])
@pytest.mark.parametrize("bad", [1, "yes", None, [True]])
def test_wrong_flags(tiny_model, flag, bad):
    with pytest.raises(MinibertError, match=f"{flag} must be True or False"):
        tiny_model.encode(["a text"], **{flag: bad})


def test_max_length_too_small_for_a_pairs_special_tokens(tiny_model):
    """tokenizers would silently return the pair uncut (11 tokens for max_length 2)."""
    with pytest.raises(
        MinibertError, match="max_length 2 leaves no room: a text pair takes 3 special tokens"
    ):
        tiny_model.encode(["hello there my friend"], ["another long sentence"], max_length=2)
    assert tiny_model.encode(["hello there"], max_length=2).input_ids.shape == (1, 2)
    assert tiny_model.encode(["hello there"], ["friend"], max_length=3).input_ids.shape == (1, 3)


def good_batch(model: Model):
    return model.tokenize(["a short text", "and another, a little longer"])


BATCH_CASES = {
    "token id = vocab size": (
        lambda b, m: replace(
            b,
            input_ids=np.where(b.attention_mask == 1, b.input_ids, 0)
            + (m.config.vocab_size - b.input_ids.max()),
        ),
        "input_ids reach",
    ),
    "negative token id": (lambda b, m: replace(b, input_ids=b.input_ids - 1000), "input_ids hold -"),
    "type id 2": (
        lambda b, m: replace(b, token_type_ids=b.token_type_ids + 2),
        "text 0: token_type_ids reach 2, the model has 2 type",
    ),
    "negative type id": (
        lambda b, m: replace(b, token_type_ids=b.token_type_ids - 1),
        "text 0: token_type_ids hold -1",
    ),
    "mask of 2": (
        lambda b, m: replace(b, attention_mask=b.attention_mask * 2),
        "attention_mask must hold only 0 and 1",
    ),
    "float ids": (
        lambda b, m: replace(b, input_ids=b.input_ids.astype(float)),
        "input_ids must be a 2-D integer array",
    ),
    "1-D ids": (lambda b, m: replace(b, input_ids=b.input_ids[0]), "input_ids must be a 2-D integer array"),
    "list ids": (
        lambda b, m: replace(b, input_ids=b.input_ids.tolist()),
        "input_ids must be a 2-D integer array",
    ),
    "shapes differ": (
        lambda b, m: replace(b, attention_mask=b.attention_mask[:, :2]),
        "attention_mask has shape",
    ),
    "too long": (
        lambda b, m: replace(
            b, **{k: np.zeros((2, 65), np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}
        ),
        "the batch has 65 positions, the model at most 64",
    ),
    "tokens missing": (
        lambda b, m: replace(b, tokens=b.tokens[:1]),
        "Batch.tokens has 1 entries for 2 texts",
    ),
    "not a batch": (lambda b, m: b.input_ids, "batch must be a minibert.Batch"),
}


@pytest.mark.parametrize("impl", ["fast", "plain"])
@pytest.mark.parametrize("case", sorted(BATCH_CASES))
def test_hand_built_batches_are_checked_before_numpy_indexes(tiny_model, case, impl):
    make, message = BATCH_CASES[case]
    with pytest.raises(MinibertError, match=re.escape(message)):
        variant(tiny_model, impl).forward(make(good_batch(tiny_model), tiny_model))


def test_words_arguments(tiny_model):
    enc = tiny_model.encode(["some words here"])
    for bad, message in [
        (dict(how="avg"), "how must be one of first, last, mean, first_last, got 'avg'"),
        (dict(how=["mean"]), "how must be one of"),
        (dict(how=np.array(["mean"])), "how must be one of"),
        (dict(layers=True), "an int or a list of ints; got bool"),
        (dict(layers=[0, True]), "layers [0, True]: index must be an integer, got True"),
        (dict(layers=1.0), "an int or a list of ints; got float"),
        (dict(layers="-1,x"), "layers '-1,x': expected 'all'"),
        (dict(layers=[0, 99]), "layers [0, 99]: index 99 is out of range: valid are 0..2 (or -3..-1)"),
        (dict(layers=[-4]), "index -4 is out of range"),
        (dict(layers=[1, -2]), "names a layer twice"),
    ]:
        with pytest.raises(MinibertError, match=re.escape(message)):
            minibert.words(enc, **bad)
    with pytest.raises(MinibertError, match="enc must be a minibert.Encoding"):
        minibert.words(tiny_model.tokenize("a"))
    kept = minibert.encode_long(tiny_model, ["some words here"], layers=[-1])
    with pytest.raises(MinibertError, match="layer 0 was not kept"):
        minibert.words(kept, layers=[0, -1])
    assert minibert.words(kept, "mean", layers=-1).vectors.shape[0] == 1
    # every layers argument takes the forms of minibert.encoder.layers: the string ones too
    assert_array_equal(minibert.words(enc, layers="-1").vectors, minibert.words(enc, layers=[2]).vectors)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stride=0), "stride must be a positive integer"),
        (dict(stride=2.5), "stride must be a positive integer"),
        (dict(stride=True), "stride must be a positive integer"),
        (dict(window=1), "window must be an integer from 2 to 64"),
        (dict(window=65), "window must be an integer from 2 to 64"),
        (dict(window="32"), "window must be an integer from 2 to 64"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=None), "batch_size must be a positive integer"),
        (dict(layers=[7]), "index 7 is out of range: valid are 0..2"),
        (dict(layers="0:0"), "layers '0:0' selects no layer"),
    ],
)
def test_encode_long_arguments(tiny_model, kwargs, message):
    with pytest.raises(MinibertError, match=re.escape(message)):
        minibert.encode_long(tiny_model, "a text " * 40, **kwargs)


def test_encode_long_needs_a_model(tiny_model):
    with pytest.raises(MinibertError, match="model must be a minibert.Model"):
        minibert.encode_long("weights/all-MiniLM-L6-v2", ["a text"])


# --------------------------------------------------------------------------- concurrency


CALLS = [
    dict(texts=["Hello world!", "A second, longer text."]),
    dict(texts=["Hello world!", "A second, longer text."], max_length=5),
    dict(texts=["first segment here"] * 3, text_pairs=["second", "pair two", "z " * 40], max_length=24),
    dict(texts=["word " * 80, "short"], max_length=16),
    dict(texts=["word " * 80], max_length=64),
    dict(texts=["attention please", "x"], output_attentions=True),
    dict(texts=["北京欢迎你 🎉", ""] * 3, max_length=9),
]


def fingerprint(enc) -> list:
    parts = [
        enc.input_ids,
        enc.token_type_ids,
        enc.attention_mask,
        *enc.hidden_states,
        enc.tokens,
        enc.num_tokens,
    ]
    if enc.attentions is not None:
        parts += list(enc.attentions)
    return parts


def assert_same(got: list, want: list, what: str) -> None:
    assert len(got) == len(want), what
    for a, b in zip(got, want, strict=True):
        if isinstance(b, np.ndarray):
            assert_array_equal(a, b, err_msg=what)
        else:
            assert a == b, what


# Issue 9: the tokenizer switched truncation on the shared tokenizers.Tokenizer, so with 4 threads
# and different max_length a call asking for 16 tokens got 64, and others raised IndexError.
def test_concurrent_encode_equals_sequential(tiny_model):
    """8 threads x 280 calls (8 settings x 7 calls, each 5 times) on one set of
    weights and one tokenizer: different texts, max_length, pairs, attentions, impl
    and threads settings, each result equal bit for bit to the same call made
    alone, and the BLAS setting restored afterwards."""
    pytest.importorskip("threadpoolctl")
    models = [variant(tiny_model, impl, threads) for impl in ("fast", "plain") for threads in (None, 1, 2, 3)]
    jobs = [(m, c) for m in models for c in CALLS]
    want = [fingerprint(m.encode(**c)) for m, c in jobs]
    before = blas_thread_counts()
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(jobs)), 5))
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda k: fingerprint(jobs[k][0].encode(**jobs[k][1])), order))
    for k, g in zip(order, got, strict=True):
        m, c = jobs[k]
        assert_same(g, want[k], f"{m.impl} threads={m.threads} {c}")
    assert blas_thread_counts() == before


def test_concurrent_tokenize_and_encode_long(bpe_model):
    """Untruncated tokenizing (encode_long) beside truncating calls never sees their
    truncation: every long text keeps all of its tokens."""
    text = "Long documents are cut into overlapping windows. " * 30
    full = bpe_model.tokenize([text], max_length=None).num_tokens[0]
    want_long = minibert.encode_long(bpe_model, text, stride=40)
    want_short = [bpe_model.tokenize([text], max_length=n).input_ids for n in (8, 16, 32)]

    def job(k: int):
        if k % 2:
            return minibert.encode_long(bpe_model, text, stride=40)
        return bpe_model.tokenize([text], max_length=(8, 16, 32)[k % 3]).input_ids

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(job, range(60)))
    for k, r in enumerate(results):
        if k % 2:
            assert r.num_tokens == [full] and r.attention_mask.sum() == full
            for a, b in zip(r.hidden_states, want_long.hidden_states, strict=True):
                assert_array_equal(a, b)
        else:
            assert_array_equal(r, want_short[(0, 1, 2)[k % 3]])


# --------------------------------------------------------------------------- NaN / Inf


def overflowing_model(dtype: str = "float32") -> Model:
    """A random model whose FFN weights are finite but so large that the forward
    pass overflows float32 (so no check of the weights at load can catch it)."""
    model = random_model(heads=4, max_positions=64, dtype=dtype)
    layers = list(model.weights.layers)
    W_1 = layers[1].ffn.W_1
    huge = np.finfo(W_1.dtype).max / (2 * np.abs(W_1).max())  # every weight finite, their products not
    layers[1] = replace(layers[1], ffn=replace(layers[1].ffn, W_1=W_1 * huge))
    assert np.isfinite(layers[1].ffn.W_1).all()
    return Model(
        model.config, replace(model.weights, layers=tuple(layers)), model.tokenizer, model.path, dtype
    )


@pytest.mark.parametrize("impl", ["fast", "plain"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_non_finite_forward_pass_names_the_text_and_layer(impl, dtype):
    model = variant(overflowing_model(dtype), impl)
    batch = id_batch([5, 9, 3])
    with pytest.raises(
        NonFiniteError, match=r"text 0: the forward pass produced NaN or Inf in hidden_states\[2\]"
    ) as e:
        model.forward(batch)
    assert (e.value.text, e.value.layer) == (0, 2)
    # the function itself does not check: its numbers are there to look at
    with np.errstate(all="ignore"):
        if impl == "plain":
            hidden = minibert.forward(model.weights, model.config, batch.input_ids, batch.token_type_ids,
                                      batch.attention_mask).hidden_states  # fmt: skip
        else:
            positions = position_ids(model.config, batch.input_ids, batch.attention_mask)
            ids, types, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
            hidden, _ = fast.forward(model.weights, model.config, ids, positions, types, mask)
    assert np.isfinite(hidden[1]).all() and not np.isfinite(hidden[2][0, :5]).all()


def test_non_finite_only_in_one_text_names_that_text():
    """One text whose embedding row is huge: its row overflows, its neighbours stay finite."""
    model = random_model(heads=4, max_positions=64)
    word = model.weights.embeddings.word.copy()
    word[7] = 3e38
    weights = replace(model.weights, embeddings=replace(model.weights.embeddings, word=word))
    model = Model(model.config, weights, model.tokenizer, model.path, "float32")
    batch = id_batch([4, 6, 5], seed=3)
    ids = np.where(batch.input_ids == 7, 8, batch.input_ids)
    ids[2, 1] = 7
    with pytest.raises(NonFiniteError, match="text 2: ") as e:
        model.forward(replace(batch, input_ids=ids))
    assert e.value.text == 2


def test_padding_garbage_is_not_a_non_finite_result(tiny_model):
    """Only real tokens count: the plain path's values at padding positions mean nothing."""
    from minibert.model import first_non_finite

    h = np.zeros((2, 4, 3), np.float32)
    h[0, 3] = np.nan
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert first_non_finite([h], mask) is None
    h[1, 3, 2] = np.inf
    assert first_non_finite([h, h], mask) == (1, 0)
    big = np.full((1, 2, 3), 3e38, np.float32)  # the sum overflows, every value is finite
    assert first_non_finite([big], np.ones((1, 2))) is None


# --------------------------------------------------------------------------- memory


def _no_work(monkeypatch):
    """Make every way the encoder runs fail, so a test sees that none was tried."""

    def fail(*a, **k):
        raise AssertionError("the forward pass ran")

    for module, name in ((minibert.model, "forward"), (fast, "forward")):
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(Model, "_compute", fail)


def _memory(monkeypatch, n: int) -> None:
    monkeypatch.setattr(minibert.model, "available_memory", lambda: n)


@pytest.mark.parametrize("impl, trace", [("fast", False), ("plain", False), ("plain", True)])
def test_a_result_larger_than_memory_is_refused_before_any_work(tiny_model, monkeypatch, impl, trace):
    """encode/forward compute the result's size after tokenizing (L + 1 hidden states
    (B, S, H), the kept maps (B, h, S, S), a trace's arrays) and refuse one larger than
    the memory available with one MinibertError naming the size and where to go instead,
    before any forward work; one byte more memory and it runs."""
    m = variant(tiny_model, impl)
    texts = ["word " * 60] * 50
    batch = m.tokenize(texts)
    B, S = batch.input_ids.shape
    c, L = m.config, m.num_layers
    hidden = (L + 1) * B * S * c.hidden_size * 4
    maps = L * B * c.num_attention_heads * S * S * 4
    need = hidden + maps
    if trace:
        need += 4 * (L * (10 * B * S * c.hidden_size + 3 * B * c.num_attention_heads * S * S
                          + 2 * B * S * c.intermediate_size) + 4 * B * S * c.hidden_size)  # fmt: skip
    with monkeypatch.context() as patch:
        _no_work(patch)
        _memory(patch, need - 1)
        with pytest.raises(MinibertError) as e:
            m.encode(texts, output_attentions=True, trace=trace)
        message = str(e.value)
        assert f"{L + 1} hidden states of {B} x {S} x {c.hidden_size}" in message, message
        assert f"{L} attention maps of {B} x {c.num_attention_heads} x {S} x {S}" in message
        assert f"would take {need / 2**20:.1f} MiB, more than the {(need - 1) / 2**20:.1f} MiB" in message
        assert "minibert extract" in message and "attention_layers=" in message and "\n" not in message
        with pytest.raises(MinibertError, match="would take"):
            m.forward(batch, output_attentions=True, trace=trace)
        # the hidden states alone, or one layer's maps, may fit where every map does not
        _memory(patch, hidden)
        with pytest.raises(MinibertError, match="would take"):
            m.forward(batch, output_attentions=True, trace=trace, attention_layers=[-2, -1])
    _memory(monkeypatch, need)
    assert m.forward(batch, output_attentions=True, trace=trace).hidden_states[-1].shape == (
        B,
        S,
        c.hidden_size,
    )
    _memory(monkeypatch, hidden + maps // L)
    if not trace:
        one = m.forward(batch, output_attentions=True, attention_layers=[-1])
        assert one.attentions[-1] is not None and one.attentions[0] is None


def test_a_memory_error_in_the_pass_is_the_same_error(tiny_model, monkeypatch):
    """A result that looked as if it fitted but did not: NumPy's MemoryError becomes the
    one MinibertError naming the result's size, not a traceback."""

    def out_of_memory(*a, **k):
        raise MemoryError("Unable to allocate 2.20 GiB")

    monkeypatch.setattr(fast, "forward", out_of_memory)
    message = (
        r"^out of memory computing the result \(3 hidden states of 2 x 3 x 32, float32\), 2,304 bytes: use "
    )
    with pytest.raises(MinibertError, match=message + "`minibert extract`") as e:
        tiny_model.encode(["hello", "world"])
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_encode_long_and_words_check_their_result_too(tiny_model, monkeypatch):
    """encode_long: its kept layers (B x N x H, N the longest text's full length) are
    checked after tokenizing, before any window runs; words: its (L, W, H') vectors."""
    texts = ["word " * 300, "short"]
    N = len(tiny_model.tokenizer(texts).tokens[0])
    H = tiny_model.config.hidden_size
    one_layer = 2 * N * H * 4
    with monkeypatch.context() as patch:
        _no_work(patch)
        _memory(patch, 2 * one_layer - 1)
        message = (rf"encode_long's result \(2 hidden states of 2 x {N} x {H}, float32\) would take "
                   rf"{2 * one_layer:,} bytes, more than the {2 * one_layer - 1:,} bytes of memory "
                   "available: use `minibert extract`")  # fmt: skip
        with pytest.raises(MinibertError, match=message):
            minibert.encode_long(tiny_model, texts, layers=[0, -1])
    seen = []
    real = minibert.features.windows.check_result_size
    monkeypatch.setattr(
        minibert.features.windows, "check_result_size", lambda n, what: seen.append(n) or real(n, what)
    )
    enc = minibert.encode_long(tiny_model, texts, layers=[-1])
    assert enc.hidden_states[-1].shape == (2, N, H) and seen == [one_layer]  # one layer counted
    W = 301
    _memory(monkeypatch, 2 * W * H * 4 - 1)
    with pytest.raises(MinibertError, match=rf"the word vectors \(1 layers x {W} words x {H}, float32"):
        minibert.words(enc, "mean", -1)
    _memory(monkeypatch, 2 * W * H * 4)
    assert minibert.words(enc, "mean", -1).vectors.shape == (1, W, H)


def test_available_memory_reads_meminfo_else_the_physical_memory(monkeypatch):
    import builtins
    import os

    from minibert.model import available_memory

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    now = available_memory()
    assert 0 < now <= physical
    real_open = builtins.open

    def no_meminfo(path, *a, **k):
        if str(path) == "/proc/meminfo":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", no_meminfo)
    assert available_memory() == physical


def test_plain_path_runs_in_chunks_of_texts(monkeypatch):
    """The plain path's (b, h, S, S) scores are bounded: texts go a chunk at a time,
    and the result equals the unchunked pass."""
    model = random_model(heads=4, max_positions=64)
    batch = id_batch([60, 3, 64, 17, 40, 64, 1], seed=5)
    whole = variant(model, "plain").forward(batch).hidden_states
    seen = []
    real = minibert.model.forward
    monkeypatch.setattr(minibert.model, "forward", lambda *a, **k: seen.append(a[2].shape) or real(*a, **k))
    monkeypatch.setattr(minibert.model, "PLAIN_SCORES", 2 * 4 * 64 * 64)  # two texts of 64 tokens
    chunked = variant(model, "plain").forward(batch).hidden_states
    assert seen == [(2, 64), (2, 64), (2, 64), (1, 64)]
    for a, b in zip(chunked, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # observed: equal
    # with attention maps too: the same chunks, maps equal to the formulas' on the
    # whole batch at real queries, 0 at padding queries and keys
    seen.clear()
    maps = variant(model, "plain").forward(batch, output_attentions=True).attentions
    assert seen == [(2, 64), (2, 64), (2, 64), (1, 64)]
    ids, types, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
    formulas = real(model.weights, model.config, ids, types, mask, output_attentions=True).attentions
    real_q = mask.astype(bool)[:, None, :, None]
    for a, b in zip(maps, formulas, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, np.where(real_q, b, 0), rtol=0, atol=1e-6)
        assert not a[np.broadcast_to(~real_q, a.shape)].any()


def test_fast_path_working_memory_does_not_grow_with_the_batch(monkeypatch):
    """Each unit's buffers are sized by the unit (about UNIT_TOKENS tokens), not the batch."""
    model = random_model(heads=4, max_positions=64)
    sizes = []
    real = fast._encode

    def spy(*a):  # _encode(weights, config, (ids, positions, types, real), ..., b0, b1)
        sizes.append(int(a[2][3][a[-2] : a[-1]].sum()))  # the unit's real tokens
        return real(*a)

    monkeypatch.setattr(fast, "_encode", spy)
    model.threads = 1
    model.forward(id_batch([64] * 100))  # 6,400 tokens
    assert len(sizes) == 12 and max(sizes) <= 640


# --------------------------------------------------------------------------- the path, the record


@pytest.mark.parametrize(
    "impl, kwargs, path",
    [
        ("fast", {}, "fast"),
        ("fast", {"output_attentions": True}, "fast"),
        ("fast", {"trace": True}, "formulas"),
        ("fast", {"output_attentions": True, "trace": True}, "formulas"),
        ("plain", {}, "formulas"),
        ("plain", {"output_attentions": True}, "formulas"),
        ("plain", {"output_attentions": True, "trace": True}, "formulas"),
    ],
)
def test_one_place_chooses_the_path(tiny_model, monkeypatch, impl, kwargs, path):
    """Model.forward runs the fast path by default (attention maps included) and
    the formulas of minibert.forward for a trace or impl="plain", never both."""
    seen = []
    real_fast, real_formulas = fast.forward, minibert.model.forward
    monkeypatch.setattr(fast, "forward", lambda *a, **k: seen.append("fast") or real_fast(*a, **k))
    monkeypatch.setattr(
        minibert.model, "forward", lambda *a, **k: seen.append("formulas") or real_formulas(*a, **k)
    )
    enc = variant(tiny_model, impl).encode(["a text", "another text here"], **kwargs)
    assert seen == [path]
    assert (enc.attentions is not None) == kwargs.get("output_attentions", False)
    assert (enc.trace is not None) == kwargs.get("trace", False)


def test_an_encoding_holds_its_batch(tiny_model):
    batch = tiny_model.tokenize(["a text", "another one"], ["its pair", None])
    enc = tiny_model.forward(batch)
    assert enc.batch is batch
    for name in ("input_ids", "token_type_ids", "attention_mask", "tokens", "word_ids", "num_tokens",
                 "sequence_ids", "offsets", "texts", "text_pairs"):  # fmt: skip
        assert getattr(enc, name) is getattr(batch, name), name
    assert enc.texts == ["a text", "another one"] and enc.offsets[0][1] == (0, 1)


@pytest.mark.parametrize("impl, trace", [("plain", False), ("plain", True), ("fast", True)])
def test_attention_maps_of_the_formulas_are_0_at_padding_too(tiny_model, impl, trace):
    """The plain path gives padding queries a softmax row of their own; Model sets
    those rows to 0 so every path returns maps that are 0 at padding. A trace
    keeps the formulas' own probabilities (the maps are copies)."""
    batch = tiny_model.tokenize(["a short one", "a much longer text for the padding of the first"])
    ids, types, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
    weights, config = tiny_model.weights, tiny_model.config
    formulas = minibert.forward(weights, config, ids, types, mask, output_attentions=True)
    enc = variant(tiny_model, impl).forward(batch, output_attentions=True, trace=trace)
    real = mask.astype(bool)
    n = int(real[0].sum())
    assert n < real.shape[1] and formulas.attentions[0][0, :, n:, :n].any()  # the formulas' padding rows
    for i, (a, f) in enumerate(zip(enc.attentions, formulas.attentions, strict=True)):
        assert not a[0, :, n:, :].any() and not a[0, :, :, n:].any(), i
        assert_array_equal(a[0, :, :n, :n], f[0, :, :n, :n])
        assert_array_equal(a[1], f[1])
        if trace:
            assert_array_equal(enc.trace.layers[i].attention.probs, f)  # untouched


# --------------------------------------------------------------------------- repr


def test_an_encodings_repr_is_a_summary_not_its_arrays(tiny_model):
    """print(enc) used to print every array (hundreds of lines for one sentence)."""
    enc = tiny_model.encode(
        ["Hello world", "A much longer text of many words " * 3, "x", "y"], output_attentions=True
    )
    S, H = enc.input_ids.shape[1], tiny_model.config.hidden_size
    text = repr(enc)
    lines = text.splitlines()
    assert len(lines) == 8, text
    assert lines[0] == f"Encoding of 4 texts padded to S={S} tokens"
    assert lines[1] == f"  text 0: 'Hello world' ({enc.num_tokens[0]} tokens)"
    assert lines[2].startswith("  text 1: 'A much longer text of many words A much\u2026' (")  # cut to 40
    assert lines[4] == "  ... 1 more"
    L = tiny_model.config.num_hidden_layers
    assert lines[5] == f"  hidden_states: {L + 1} of {L + 1} (layers 0..{L}), each (4, {S}, {H}) float32"
    h = tiny_model.config.num_attention_heads
    assert lines[6] == f"  attentions: {L} of {L} (layers 1..{L}), each (4, {h}, {S}, {S}) float32"
    assert lines[7] == "  trace: none"
    assert not re.search(r"\d\.\d", text)  # no numbers of any array


def test_an_encodings_repr_says_what_it_holds(tiny_model64):
    enc = tiny_model64.encode(["Who?"], ["Me."], trace=True)
    text = repr(enc)
    assert "text 0: 'Who?' + 'Me.'" in text
    assert "float64" in text and "trace: held (trace=True)" in text and "attentions: none" in text
    L = tiny_model64.config.num_hidden_layers
    long = minibert.encode_long(tiny_model64, ["word " * 40], layers=[-1], window=16, stride=8)
    text = repr(long)
    assert f"hidden_states: 1 of {L + 1} (layer {L})," in text
    counts = [int(w.max()) + 1 for w in long.windows]
    assert f"windows: {counts} per text (encode_long)" in text and counts[0] > 1
