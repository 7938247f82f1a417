"""``minibert extract --attentions`` and ``--attention-stats`` end to end (issue
12): the maps and statistics each format stores are the model's, per text over
its real tokens, for the selected layers, in float16 when asked; a run without
these options writes what it wrote before; resume refuses another choice; the
projected size goes to stderr only."""

from __future__ import annotations

import hashlib
import io
import json
import sys

import numpy as np
import pytest
from conftest import TINY_BERT
from corpus_helpers import as_if_killed
from fuzz_helpers import assert_one_line_error, run
from reference_helpers import loops

import minibert
from minibert.commands import extract as extract_command
from minibert.corpus.driver import extract_to
from minibert.corpus.inputs import read_items
from minibert.encoder import fast
from minibert.features.attention_stats import STATS, token_kinds
from minibert.outputs.shards import MANIFEST
from minibert.outputs.spec import ExtractSpec

pytestmark = pytest.mark.usefixtures("one_blas_thread")

#: Texts and pairs of different lengths (the batches pad), one with no pair, one empty.
ITEMS = [
    ("The cat sat on the mat.", "It was warm."),
    ("Hello, world!", None),
    ("", None),
    ("A much longer sentence, with commas; and a semicolon too.", "Yes!"),
    ("short", "pair"),
]
FORMATS = ["o.npz", "o.safetensors", "o.jsonl", "feats"]


@pytest.fixture(scope="module")
def model():
    return minibert.load(TINY_BERT)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("corpus") / "in.jsonl"
    lines = [json.dumps({"text": t} | ({"text_pair": p} if p is not None else {})) for t, p in ITEMS]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


def extract(src, out, *args) -> None:
    code, _, err = run("extract", "--model", TINY_BERT, src, "-o", out, "--quiet", "--shard-size", "2",
                       "--batch-size", "3", *args)  # fmt: skip
    assert code == 0, err


def alone(model, n: int):
    """Text n encoded alone, with its attentions."""
    text, pair = ITEMS[n]
    return model.encode([text], None if pair is None else [pair], output_attentions=True)


@pytest.mark.parametrize("name", FORMATS)
def test_maps_in_every_format_are_the_models(model, corpus, tmp_path, name):
    out_path = tmp_path / name
    extract(corpus, out_path, "--attentions", "--pool", "none")
    out = minibert.open_output(out_path)
    assert out.attention_layers == [1, 2]  # --layers all: hidden_states 0..2, and 0 has no attention
    h = model.config.num_attention_heads
    for n in range(len(ITEMS)):
        enc = alone(model, n)
        k = len(enc.tokens[0])
        assert out.tokens(n) == enc.tokens[0]
        for i in (1, 2):
            got = out.attentions(n, i)
            assert got.shape == (h, k, k)
            # batched with other texts against alone: float32 rounding (observed < 1e-7)
            np.testing.assert_allclose(got, enc.attentions[i - 1][0], rtol=0, atol=1e-6, err_msg=f"{n} {i}")
            np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=0, atol=1e-6)
        if name != "o.jsonl":  # a .jsonl records no layer count: -1 needs one
            np.testing.assert_array_equal(out.attentions(n, -1), out.attentions(n, 2))


def test_every_format_stores_the_same_bits(corpus, tmp_path):
    outs = {}
    for name in FORMATS:
        extract(corpus, tmp_path / name, "--attentions", "--layers", "-1", "--pool", "mean")
        outs[name] = minibert.open_output(tmp_path / name)
    for n in range(len(ITEMS)):
        want = outs["o.safetensors"].attentions(n, 2)
        assert want.dtype == np.float32
        for name, out in outs.items():
            got = out.attentions(n, 2)
            np.testing.assert_array_equal(got.astype(np.float32), want, err_msg=f"{name} text {n}")


def test_float16_maps_are_the_float32_maps_rounded_once(corpus, tmp_path):
    extract(corpus, tmp_path / "f32", "--attentions")
    extract(corpus, tmp_path / "f16", "--attentions", "--output-dtype", "float16")
    a, b = minibert.open_output(tmp_path / "f32"), minibert.open_output(tmp_path / "f16")
    for n in range(len(ITEMS)):
        x, y = a.attentions(n, 1), b.attentions(n, 1)
        assert y.dtype == np.float16
        np.testing.assert_array_equal(y, x.astype(np.float16))
        # what the docs promise: 2^-11 relative for normal values, 2^-25 absolute below 2^-14
        err = np.abs(y.astype(np.float64) - x)
        assert np.all(err <= np.maximum(2.0**-11 * np.abs(x), 2.0**-25)), float(err.max())
        np.testing.assert_allclose(y.astype(np.float64).sum(axis=-1), 1.0, rtol=0, atol=1e-3)


def test_layers_choose_the_maps(corpus, tmp_path, monkeypatch):
    sizes = []
    real = fast._map_arrays
    monkeypatch.setattr(fast, "_map_arrays", lambda n, *a: sizes.append(n) or real(n, *a))
    extract(corpus, tmp_path / "o.safetensors", "--attentions", "--layers", "0,2")
    assert sizes and set(sizes) == {1}  # only layer 2's maps are computed, batch after batch
    out = minibert.open_output(tmp_path / "o.safetensors")
    assert out.layers == [0, 2] and out.attention_layers == [2]
    with pytest.raises(minibert.MinibertError, match="no attention of layer 1 in this output"):
        out.attentions(0, 1)
    with pytest.raises(minibert.MinibertError, match="attention layer 0 is out of range.*embedding output"):
        out.attentions(0, 0)
    with pytest.raises(minibert.MinibertError, match="attention layer must be an integer"):
        out.attentions(0, "2")
    with pytest.raises(minibert.MinibertError, match="text 5 out of range"):
        out.attentions(5, 2)
    with pytest.raises(
        minibert.MinibertError,
        match=r"has attention maps, not attention statistics \(written with --attentions, not --attention-s",
    ):
        out.attention_stats(0)


def test_word_pool_keeps_token_level_maps(model, corpus, tmp_path):
    """Rows of the features are words; the maps stay over tokens (tokens(n) labels them)."""
    extract(corpus, tmp_path / "w.npz", "--attentions", "--word-pool", "mean", "--layers", "-1")
    out = minibert.open_output(tmp_path / "w.npz")
    assert out.word_level
    n = 3  # "A much longer sentence, ..." has more tokens than words
    k = len(out.tokens(n))
    assert out.attentions(n, 2).shape == (model.config.num_attention_heads, k, k)
    assert len(out.words(n)) < k


@pytest.mark.parametrize("name", FORMATS)
def test_stats_in_every_format_equal_the_loops(model, corpus, tmp_path, name):
    extract(corpus, tmp_path / name, "--attention-stats", "--layers", "2,1", "--pool", "cls")
    out = minibert.open_output(tmp_path / name)
    assert out.attention_layers == [2, 1]
    for n in range(len(ITEMS)):
        enc = alone(model, n)
        kinds = token_kinds(enc.sequence_ids[0], enc.offsets[0], enc.texts[0], enc.text_pairs[0])
        got = out.attention_stats(n)
        assert list(got) == list(STATS)
        for row, i in enumerate((2, 1)):
            want = loops(enc.attentions[i - 1][0].astype(np.float64), *kinds)
            for s in STATS:  # float32 maps of a batch against alone (observed < 1e-6), stored in float32
                np.testing.assert_allclose(got[s][row], want[s], rtol=1e-5, atol=1e-6, err_msg=f"{n} {i} {s}")
    with pytest.raises(minibert.MinibertError, match="has attention statistics, not attention maps"):
        out.attentions(0, 1)


def test_stats_are_float32_even_in_a_float16_output(corpus, tmp_path):
    extract(corpus, tmp_path / "o.safetensors", "--attention-stats", "--output-dtype", "float16")
    out = minibert.open_output(tmp_path / "o.safetensors")
    assert out.arrays["attention_stats.distance"].dtype == np.float32
    assert out.arrays["hidden_states.1"].dtype == np.float16


#: What a run without --attentions/--attention-stats wrote before issue 12, key for key.
SETTINGS_BEFORE = ["layers", "pool", "word_pool", "combine", "dtype", "output_dtype", "model", "minibert",
                   "num_hidden_layers", "max_length", "long", "stride", "normalize", "batch_size",
                   "shard_size", "model_files"]  # fmt: skip


def test_a_run_without_attentions_writes_what_it_wrote_before(corpus, tmp_path):
    extract(corpus, tmp_path / "o.npz", "--pool", "none")
    extract(corpus, tmp_path / "feats")
    out = minibert.open_output(tmp_path / "o.npz")
    assert list(out.settings) == SETTINGS_BEFORE
    assert sorted(out.arrays) == sorted(
        ["offsets", "input_ids", "layers", "num_tokens", "kept_tokens", "hidden_states.0", "hidden_states.1",
         "hidden_states.2", "tokens", "settings"]
    )  # fmt: skip
    assert out.attention_layers == []
    assert list(json.loads((tmp_path / "feats" / MANIFEST).read_text())["settings"]) == SETTINGS_BEFORE
    for reader in (out, minibert.open_output(tmp_path / "feats")):
        with pytest.raises(
            minibert.MinibertError, match=r"no attention maps \(it was not written with --attentions"
        ):
            reader.attentions(0, 1)


def test_resume_refuses_another_attentions_choice(corpus, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "out"
    extract(corpus, whole, "--attentions")
    extract(corpus, out, "--attentions")
    as_if_killed(out)
    base = ["extract", "--model", TINY_BERT, corpus, "-o", out, "--quiet", "--shard-size", "2",
            "--batch-size", "3", "--resume"]  # fmt: skip
    assert_one_line_error(
        run(*base), "cannot resume with different settings", "attentions: 'maps' there, None now"
    )
    assert_one_line_error(run(*base, "--attention-stats"), "attentions: 'maps' there, 'stats' now")
    assert run(*base, "--attentions")[0] == 0
    for f in sorted(p.name for p in whole.iterdir()):
        assert (out / f).read_bytes() == (whole / f).read_bytes(), f
    plain = tmp_path / "plain"
    extract(corpus, plain)
    as_if_killed(plain)
    base[5] = plain
    assert_one_line_error(run(*base, "--attentions"), "attentions: None there, 'maps' now")


def _sizes(out) -> list[int]:
    """Bytes of each text's stored maps, from the output itself."""
    layers = len(out.attention_layers)
    return [out.attentions(n, out.attention_layers[0]).nbytes * layers for n in range(out.num_texts)]


@pytest.mark.parametrize("shard_size, exact", [(2, False), (10, True)])
def test_the_projected_size_is_what_gets_written(model, corpus, tmp_path, shard_size, exact):
    told = []
    spec = ExtractSpec.for_model(model, layers="all", pool="none", attentions="maps", shard_size=shard_size)
    out_path = tmp_path / "o.safetensors"
    extract_to(model, read_items(corpus), spec, out_path, num_texts=len(ITEMS), on_size=told.append)
    (size,) = told
    sizes = _sizes(minibert.open_output(out_path))
    counted = min(shard_size, len(ITEMS))
    assert (size.counted, size.chunk, size.exact, size.num_texts) == (counted, sum(sizes[:counted]), exact, 5)
    assert size.total == (sum(sizes) if exact else round(sum(sizes[:2]) / 2 * 5))
    assert not size.sharded


def test_the_size_note_goes_to_stderr_only(corpus, tmp_path, monkeypatch):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["--quiet", "--shard-size", "2", "--batch-size", "3", "--attentions"]
    assert run("extract", "--model", TINY_BERT, corpus, "-o", a, *args)[2] == ""  # far below the thresholds
    monkeypatch.setattr(extract_command, "NOTE_BYTES", 0)
    code, stdout, stderr = run("extract", "--model", TINY_BERT, corpus, "-o", b, "--quiet",
                               "--shard-size", "2", "--batch-size", "3", "--attentions")  # fmt: skip
    assert code == 0 and stdout == ""
    (line,) = stderr.splitlines()  # printed even with --quiet
    assert (
        line.startswith("minibert: note: --attentions will write ~") and "for 5 texts (projected from" in line
    )
    assert "a single-file OUTPUT holds all of it in memory" in line
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    _, _, stderr = run("extract", "--model", TINY_BERT, corpus, "-o", tmp_path / "c", "--attention-stats")
    assert "minibert: note" not in stderr  # statistics have a constant size


def test_the_size_note_of_stdin_is_per_chunk(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(extract_command, "NOTE_MEMORY_BYTES", 0)  # stdin: no total, the chunk decides
    text = "".join(f"{t}\n" for t, _ in ITEMS).encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text), encoding="utf-8"))
    code, _, stderr = run("extract", "--model", TINY_BERT, "-", "-o", tmp_path / "d", "--quiet",
                          "--shard-size", "2", "--attentions")  # fmt: skip
    assert code == 0
    (line,) = stderr.splitlines()
    assert "per 2 texts (the input cannot be counted first)" in line and "each chunk of up to 2 texts" in line


@pytest.mark.parametrize(
    "args, names",
    [
        (["--attentions", "--long", "window"], ["--attentions/--attention-stats", "--long window"]),
        (["--attention-stats", "--layers", "0"], ["--layers 0 selects no encoder layer"]),
        (["--attentions", "--attention-stats"], ["not allowed with argument --attentions"]),
    ],
)
def test_options_that_cannot_go_together(corpus, tmp_path, args, names):
    result = run("extract", "--model", TINY_BERT, corpus, "-o", tmp_path / "o.npz", *args)
    assert_one_line_error(result, *names)
    assert not (tmp_path / "o.npz").exists()
