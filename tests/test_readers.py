"""minibert/outputs/readers.py: every writer's file reads back exactly, lazily, and
checked; a text or a layer is asked for the same way from every reader."""

from __future__ import annotations

import numpy as np
import pytest

from minibert import MinibertError
from minibert.features.attention_stats import STATS
from minibert.outputs.npz import NpzArrays
from minibert.outputs.readers import OutputReader, open_file
from minibert.outputs.records import Record
from minibert.outputs.safetensors_file import SafetensorsFile
from minibert.outputs.spec import ExtractSpec
from minibert.outputs.writers import open_writer

SUFFIXES = [".npz", ".safetensors", ".jsonl"]


def _spec(pooled: bool = False, **kw) -> ExtractSpec:
    return ExtractSpec(layers=(0, 2), num_hidden_layers=2, pool="mean" if pooled else "none", model="m", **kw)


def _records(rng, dtype, pooled):
    recs = []
    for index, n in [(2, 3), (0, 5), (1, 1)]:  # out of order: writers restore input order
        shape = (4,) if pooled else (n, 4)
        feats = {f"hidden_states.{i}": rng.normal(size=shape).astype(dtype) for i in (0, 2)}
        tokens = [f"t{index}_{k}" for k in range(n)]
        recs.append(Record(index, f"text {index}", None, tokens, np.arange(n), feats, n))
    return recs


def _write(path, spec, records):
    w = open_writer(path, spec)
    w.add(records)
    w.close()
    return open_file(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pooled", [False, True])
def test_round_trip_is_exact(tmp_path, suffix, dtype, pooled):
    recs = _records(np.random.default_rng(1), dtype, pooled)
    out = _write(tmp_path / f"out{suffix}", _spec(pooled, dtype=np.dtype(dtype).name), recs)
    assert isinstance(out, OutputReader)
    assert out.num_texts == 3 and out.layers == [0, 2] and out.pooled == pooled
    for r in recs:
        assert out.tokens(r.index) == r.tokens
        for name, v in r.features.items():
            got = out.vectors(r.index, name)
            np.testing.assert_array_equal(got.astype(dtype), v, err_msg=f"{suffix} {name} text {r.index}")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_float16_files_round_trip(tmp_path, suffix):
    recs = _records(np.random.default_rng(0), np.float32, False)
    rng = np.random.default_rng(0)
    for r in recs:  # values of every magnitude float16 holds, not just integers
        r.features = {k: (rng.normal(size=v.shape) * 10.0 ** rng.integers(-6, 4)).astype(np.float32)
                      for k, v in r.features.items()}  # fmt: skip
    want = {r.index: {k: v.astype(np.float16) for k, v in r.features.items()} for r in recs}
    out = _write(tmp_path / f"out{suffix}", _spec(output_dtype="float16"), recs)
    for n, feats in want.items():
        for name, v in feats.items():
            got = out.vectors(n, name)
            if suffix != ".jsonl":  # JSON numbers read back as float64; 5 digits round-trip float16
                assert got.dtype == np.float16
            np.testing.assert_array_equal(got.astype(np.float16), v, err_msg=f"{suffix} {name} text {n}")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_layer_is_a_name_or_an_index(tmp_path, suffix):
    """Negative indices count from the model's last layer (the settings record
    how many it has), as --layers does; an index the model lacks says so."""
    recs = _records(np.random.default_rng(3), np.float32, False)
    out = _write(tmp_path / f"o{suffix}", _spec(), recs)
    for layer in (2, -1, "hidden_states.2"):
        np.testing.assert_array_equal(out.vectors(0, layer), recs[1].features["hidden_states.2"])
    np.testing.assert_array_equal(out.vectors(0, -3), recs[1].features["hidden_states.0"])
    with pytest.raises(MinibertError, match=r"no 'hidden_states.1' in this output \(has: hidden_states.0, "):
        out.vectors(0, 1)
    for bad in (3, -4):
        with pytest.raises(MinibertError, match=f"layer {bad} is out of range: valid are 0..2"):
            out.vectors(0, bad)


def test_jsonl_records_no_layer_count(tmp_path):
    """A .jsonl output records no settings, so a negative index has nothing to count from."""
    out = _write(tmp_path / "o.jsonl", _spec(), _records(np.random.default_rng(3), np.float32, False))
    assert out.settings == {} and out.vectors(0, 2).shape == (5, 4)
    with pytest.raises(MinibertError, match=r"no 'hidden_states.-1' in this output"):
        out.vectors(0, -1)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_file_replaced_after_opening_is_not_read_under_the_old_header(tmp_path, suffix):
    """Lazy readers open the file again for each read: a file replaced in
    between (another run's output) is an error, never rows of the new file
    cut by the old file's offsets."""
    rng = np.random.default_rng(2)
    paths = []
    for name, pooled in (("a", False), ("b", True)):
        _write(tmp_path / f"{name}{suffix}", _spec(pooled), _records(rng, np.float32, pooled))
        paths.append(tmp_path / f"{name}{suffix}")
    out = open_file(paths[0])
    out.vectors(0, 0)
    paths[1].replace(paths[0])
    with pytest.raises(MinibertError, match="changed since it was opened"):
        out.vectors(1, 2)


def test_text_indices_are_checked(tmp_path):
    out = _write(tmp_path / "o.npz", _spec(), _records(np.random.default_rng(0), np.float32, False))
    for bad in ("0", 1.0, None, True):
        with pytest.raises(MinibertError, match="text index must be an integer"):
            out.tokens(bad)
    with pytest.raises(MinibertError, match="text -1 out of range"):
        out.tokens(-1)  # not the last text: a negative index is a mistake here, as in vectors()
    with pytest.raises(MinibertError, match="text 3 out of range"):
        out.vectors(3, 0)
    with pytest.raises(MinibertError, match="no words"):
        out.words(0)
    assert list(out.parts()) == [out] and sorted(out.arrays)[:2] == ["hidden_states.0", "hidden_states.2"]


def _attention_records(rng, h: int = 3) -> list[Record]:
    """Texts of 4, 1 and 0 tokens (out of order) with random maps of layers 2 and 1, and statistics."""
    recs = []
    for index, n in [(1, 1), (0, 4), (2, 0)]:
        maps = {i: rng.random((h, n, n)).astype(np.float32) for i in (2, 1)}
        stats = {s: rng.random((2, h)).astype(np.float32) for s in STATS}
        if n == 0:
            stats = {s: np.full((2, h), np.nan, np.float32) for s in STATS}  # what a text of no token gets
        feats = {f"hidden_states.{i}": rng.normal(size=(n, 4)).astype(np.float32) for i in (0, 2, 1)}
        tokens = [f"t{j}" for j in range(n)]
        recs.append(
            Record(index, "t", None, tokens, np.arange(n), feats, n, attentions=maps, attention_stats=stats)
        )
    return recs


def _attention_spec(kind: str) -> ExtractSpec:
    return ExtractSpec(
        layers=(0, 2, 1), num_hidden_layers=2, model="m", attentions=kind, num_attention_heads=3
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_attention_maps_and_statistics_round_trip_exactly(tmp_path, suffix):
    recs = _attention_records(np.random.default_rng(5))
    maps = _write(tmp_path / f"maps{suffix}", _attention_spec("maps"), recs)
    assert maps.attention_layers == [2, 1]
    for r in recs:
        for i, want in r.attentions.items():
            got = maps.attentions(r.index, i)
            assert got.shape == want.shape
            np.testing.assert_array_equal(
                got.astype(np.float32), want, err_msg=f"{suffix} text {r.index} {i}"
            )
    stats = _write(tmp_path / f"stats{suffix}", _attention_spec("stats"), recs)
    assert stats.attention_layers == [2, 1]
    for r in recs:
        got = stats.attention_stats(r.index)
        for s in STATS:  # NaN (a text of no token) reads back NaN, also through JSON (null)
            np.testing.assert_array_equal(got[s].astype(np.float32), r.attention_stats[s], err_msg=s)


def test_a_texts_maps_are_read_alone(tmp_path, monkeypatch):
    """.safetensors: one read of exactly that text's values; .npz: the member is never read whole."""
    recs = _attention_records(np.random.default_rng(6))
    st = _write(tmp_path / "o.safetensors", _attention_spec("maps"), recs)
    reads = []
    read = SafetensorsFile.read

    def spy(self, name, start=None, stop=None):
        reads.append((name, start, stop))
        return read(self, name, start, stop)

    monkeypatch.setattr(SafetensorsFile, "read", spy)
    st.attentions(1, 2)
    assert reads == [("attentions.2", 48, 51)]  # after text 0's 3 x 4^2 values, text 1's 3 x 1^2

    npz = _write(tmp_path / "o.npz", _attention_spec("maps"), recs)
    whole = []
    monkeypatch.setattr(NpzArrays, "read", lambda self, name: whole.append(name))
    for r in recs:
        np.testing.assert_array_equal(npz.attentions(r.index, 1), r.attentions[1])
    assert whole == []


def test_a_compressed_npz_reads_a_texts_maps_too(tmp_path):
    recs = _attention_records(np.random.default_rng(7))
    _write(tmp_path / "o.npz", _attention_spec("maps"), recs)
    with np.load(tmp_path / "o.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    out = open_file(tmp_path / "c.npz")
    for r in recs:
        np.testing.assert_array_equal(out.attentions(r.index, 2), r.attentions[2])


def test_asking_for_attention_an_output_lacks(tmp_path):
    recs = _attention_records(np.random.default_rng(8))
    stats = _write(tmp_path / "s.safetensors", _attention_spec("stats"), recs)
    with pytest.raises(MinibertError, match=r"has attention statistics, not attention maps \(written with "):
        stats.attentions(0, 2)
    plain = _write(tmp_path / "p.jsonl", _spec(), _records(np.random.default_rng(3), np.float32, False))
    assert plain.attention_layers == []
    with pytest.raises(
        MinibertError, match=r"no attention statistics \(it was not written with --attention-s"
    ):
        plain.attention_stats(0)
    maps = _write(tmp_path / "m.jsonl", _attention_spec("maps"), recs)
    with pytest.raises(
        MinibertError, match=r"no attention of layer -1 in this output \(it holds layers 2, 1\)"
    ):
        maps.attentions(0, -1)  # a .jsonl records no layer count
    with pytest.raises(MinibertError, match="text 3 out of range"):
        maps.attentions(3, 1)
