"""Shard directories without a model: written atomically, read back exactly
and lazily, resumed only when settings, input and shards all agree."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from minibert import MinibertError, open_output
from minibert.corpus.inputs import Item, chunk_digest, chunked
from minibert.outputs.readers import SafetensorsOutput
from minibert.outputs.records import Record
from minibert.outputs.shards import MANIFEST, ShardedOutput, ShardedWriter, read_manifest, write_shard
from minibert.outputs.spec import ExtractSpec

SIZE = 4  # texts per shard


def _spec(pool="none", **kw) -> ExtractSpec:
    return ExtractSpec(layers=(0, 2), num_hidden_layers=2, pool=pool, shard_size=SIZE, model="m", **kw)


def _items(n: int) -> list[Item]:
    return [Item(i, f"text {i}") for i in range(n)]


def _records(chunk: list[Item], pooled: bool = False) -> list[Record]:
    """Features that encode (text, layer, token, dim) so any mix-up shows."""
    recs = []
    for it in reversed(chunk):  # out of order: the shard restores input order
        n = 1 + it.index % 3
        feats = {}
        for layer in (0, 2):
            v = it.index * 1000 + layer * 100 + np.arange(n)[:, None] * 10 + np.arange(4)[None, :]
            feats[f"hidden_states.{layer}"] = (v.mean(axis=0) if pooled else v).astype(np.float32)
        tokens = [f"t{it.index}_{k}" for k in range(n)]
        recs.append(Record(it.index, it.text, None, tokens, np.arange(n) + it.index, feats, n))
    return recs


def _write(path, n: int, spec: ExtractSpec | None = None, resume: bool = False, stop: int | None = None):
    """Write n texts in shards of SIZE; ``stop``: leave after that many shards
    (as a killed run would: the lock is released, the manifest left as it is)."""
    spec = spec or _spec()
    with ShardedWriter(path, spec, resume=resume) as w:
        for k, chunk in enumerate(chunked(_items(n), SIZE)):
            if k == stop:
                return w
            digest = chunk_digest(chunk)
            if not w.done(k, digest):
                w.record(write_shard(w.path, k, _records(chunk), spec, digest))
        w.close(n)
    return w


def test_shards_round_trip_exactly_and_lazily(tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    _write(out_dir, 10)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        MANIFEST, "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"
    ]  # fmt: skip
    manifest = read_manifest(out_dir)
    assert manifest["complete"] and manifest["num_texts"] == 10
    assert [(e["first"], e["count"]) for e in manifest["shards"]] == [(0, 4), (4, 4), (8, 2)]
    for e in manifest["shards"]:
        data = (out_dir / e["file"]).read_bytes()
        assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()

    opened = []
    init = SafetensorsOutput.__init__

    def spy(self, path):
        opened.append(path.name)
        init(self, path)

    monkeypatch.setattr(SafetensorsOutput, "__init__", spy)
    out = open_output(out_dir)
    assert isinstance(out, ShardedOutput)
    assert out.num_texts == 10 and out.layers == [0, 2] and not out.pooled
    want = {r.index: r for r in _records(_items(10))}
    assert out.tokens(9) == want[9].tokens and opened == ["shard-00002.safetensors"]
    np.testing.assert_array_equal(out.vectors(5, 2), want[5].features["hidden_states.2"])
    assert opened[-1] == "shard-00001.safetensors" and len(opened) == 2  # only the shard holding text 5
    for n in range(10):
        for layer in (0, 2):
            np.testing.assert_array_equal(out.vectors(n, layer), want[n].features[f"hidden_states.{layer}"])
    shard = SafetensorsOutput(out_dir / "shard-00001.safetensors")
    np.testing.assert_array_equal(shard.arrays["index"], [4, 5, 6, 7])  # global indices
    with pytest.raises(MinibertError, match="text 10 out of range"):
        out.vectors(10, 0)
    with pytest.raises(MinibertError, match="no 'hidden_states.1'"):
        out.vectors(0, 1)


def test_manifest_lists_each_shard_as_soon_as_it_is_whole(tmp_path):
    out_dir = tmp_path / "out"
    w = _write(out_dir, 10, stop=2)
    manifest = read_manifest(out_dir)
    assert not manifest["complete"] and manifest["num_texts"] is None
    assert [e["shard"] for e in manifest["shards"]] == [0, 1]
    with pytest.raises(MinibertError, match="did not finish .*--resume"):
        open_output(out_dir)
    partial = ShardedOutput(out_dir, allow_incomplete=True)
    assert partial.num_texts == 8 and partial.tokens(7) == ["t7_0", "t7_1"]
    w.close(8)  # closing with the texts it holds is allowed; with more is not
    with pytest.raises(MinibertError, match="the input has 10 texts, the run being resumed has 8"):
        ShardedWriter(out_dir, _spec(), resume=True).close(10)


def test_resume_skips_finished_shards_and_ends_equal(tmp_path):
    _write(tmp_path / "whole", 10)
    _write(tmp_path / "part", 10, stop=1)
    (tmp_path / "part" / ".shard-00001.safetensors.k3j_x9a2.tmp").write_bytes(b"half a shard")  # killed
    (tmp_path / "part" / ".manifest.json.0abcdefg.tmp").write_bytes(b"half a manifest")
    (tmp_path / "part" / "shard-00001.safetensors").write_bytes(b"renamed, manifest not yet updated")
    users = [
        ".notes.tmp",
        ".shard-00001.safetensors.mine.tmp",
        ".manifest.json.tmp",
    ]  # not names minibert makes
    for name in users:
        (tmp_path / "part" / name).write_text("the user's own file")
    w = _write(tmp_path / "part", 10, resume=True)
    assert sorted(w.entries) == [0, 1, 2]
    assert (tmp_path / "part" / MANIFEST).read_bytes() == (tmp_path / "whole" / MANIFEST).read_bytes()
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "part").glob(".*.tmp")) == sorted(users)


def test_resume_with_nothing_done_starts_fresh(tmp_path):
    _write(tmp_path / "new", 5, resume=True)  # no directory yet: --resume is harmless
    assert open_output(tmp_path / "new").num_texts == 5


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda d: None, "not empty .*--resume"),  # no --resume
        (lambda d: (d / MANIFEST).write_text("{not json"), "manifest.json: not valid JSON"),
        (
            lambda d: (d / MANIFEST).write_text('{"format": "other"}'),
            "manifest.json: not a minibert manifest",
        ),
        (lambda d: (d / "shard-00001.safetensors").unlink(), "shard-00001.safetensors: listed in"),
        (
            lambda d: (d / "shard-00001.safetensors").write_bytes(
                (d / "shard-00001.safetensors").read_bytes()[:-1] + b"\x01"
            ),
            "shard-00001.safetensors: corrupt",
        ),
    ],
)
def test_resume_refuses_what_it_cannot_trust(tmp_path, spoil, message):
    d = tmp_path / "out"
    _write(d, 10, stop=2)
    spoil(d)
    with pytest.raises(MinibertError, match=message):
        _write(d, 10, resume="not empty" not in message)


def test_resume_refuses_other_settings_or_input(tmp_path):
    d = tmp_path / "out"
    _write(d, 10, stop=2)
    with pytest.raises(MinibertError, match=r"different settings \(output_dtype: 'float32' there, 'float16'"):
        ShardedWriter(d, _spec(output_dtype="float16"), resume=True)
    w = ShardedWriter(d, _spec(), resume=True)
    other = [Item(4, "text 4"), Item(5, "CHANGED"), Item(6, "text 6"), Item(7, "text 7")]
    with pytest.raises(MinibertError, match=r"input differs .*texts 4\.\.7, shard-00001"):
        w.done(1, chunk_digest(other))
    _write(tmp_path / "done", 8)
    w = ShardedWriter(tmp_path / "done", _spec(), resume=True)
    with pytest.raises(MinibertError, match="more texts than the finished run"):
        w.done(2, chunk_digest(_items(12)[8:]))


def test_unwritable_output_is_one_error_naming_it(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    with pytest.raises(MinibertError, match="file.txt/out: cannot create output directory"):
        ShardedWriter(blocker / "out", _spec())
    with pytest.raises(MinibertError, match=r"missing/out: cannot create output directory \(.*missing does"):
        ShardedWriter(tmp_path / "missing" / "out", _spec())
    with pytest.raises(MinibertError, match="file.txt: exists and is not a directory"):
        ShardedWriter(blocker, _spec())


def test_empty_input_gives_an_empty_complete_output(tmp_path):
    _write(tmp_path / "out", 0)
    out = open_output(tmp_path / "out")
    assert out.num_texts == 0 and out.layers == [0, 2] and list(out.parts()) == []


def test_manifest_is_plain_json(tmp_path):
    _write(tmp_path / "out", 6)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["settings"]["layers"] == [0, 2] and manifest["settings"]["shard_size"] == SIZE


def test_own_temp_names_are_what_the_writers_make(tmp_path):
    """--resume deletes only OWN_TEMP names: they must be what atomic_path makes."""
    import os

    from minibert.files import atomic_path
    from minibert.outputs.shards import OWN_TEMP, shard_name

    for name in (shard_name(3), shard_name(123456), MANIFEST):
        for _ in range(20):
            fd, tmp = atomic_path(tmp_path / name)
            os.close(fd)
            assert OWN_TEMP.fullmatch(os.path.basename(tmp)), tmp
    others = (".notes.tmp", ".shard-00001.safetensors.tmp", ".manifest.json.abc.tmp", shard_name(1))
    for other in others:
        assert not OWN_TEMP.fullmatch(other)
