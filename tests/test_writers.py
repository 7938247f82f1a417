"""minibert/outputs/writers.py: what OUTPUT means, files written atomically (an error
or a kill leaves the earlier file), and never over what the run reads."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from minibert import MinibertError
from minibert.files import check_target
from minibert.outputs.records import Record
from minibert.outputs.spec import ExtractSpec
from minibert.outputs.writers import is_sharded, open_writer, write_digested

SPEC = ExtractSpec(layers=(0,), num_hidden_layers=2, model="m")


def _record() -> Record:
    return Record(0, "a text", None, ["a", "text"], np.arange(2), {"hidden_states.0": np.ones((2, 4))}, 2)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.npz"
    path.write_bytes(b"the user's earlier file")
    w = open_writer(path, SPEC)
    w.add([_record()])

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(w, "_write", boom)
    with pytest.raises(RuntimeError):
        w.close()
    assert path.read_bytes() == b"the user's earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temp file left behind


def test_bad_output_paths(tmp_path):
    with pytest.raises(MinibertError, match="does not exist"):
        open_writer(tmp_path / "missing" / "out.npz", SPEC)
    with pytest.raises(MinibertError, match="unknown output format"):
        open_writer(tmp_path / "out.csv", SPEC)


def test_what_output_means(tmp_path):
    (tmp_path / "existing.npz").mkdir()  # an existing directory is a directory, whatever its name
    for path in ("feats/", "feats", "runs/2024", tmp_path / "existing.npz"):
        assert is_sharded(path), path
    for path in ("o.npz", "o.safetensors", "o.jsonl", "o.csv"):
        assert not is_sharded(path), path  # .csv: a file, refused by its writer
    with pytest.raises(MinibertError, match="no name before .npz"):
        is_sharded(tmp_path / ".npz")


def test_output_is_never_a_file_the_run_reads(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    (tmp_path / "link.txt").symlink_to(src)
    os.link(src, tmp_path / "hard.txt")
    for out in (src, tmp_path / "link.txt", tmp_path / "hard.txt"):
        with pytest.raises(MinibertError, match="is the input"):
            check_target(out, [(src, "the input")])
    with pytest.raises(MinibertError, match="holds the input"):
        check_target(tmp_path, [(src, "the input")], directory=True)
    check_target(tmp_path / "new.npz", [(src, "the input")])  # not there yet: fine


def test_write_digested_returns_the_size_and_sha256_of_what_it_wrote(tmp_path):
    parts = [b"header", memoryview(np.arange(3, dtype=np.int64)).cast("B")]
    size, digest = write_digested(tmp_path / "f.bin", parts)
    data = (tmp_path / "f.bin").read_bytes()
    assert data == b"header" + np.arange(3, dtype="<i8").tobytes()
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
