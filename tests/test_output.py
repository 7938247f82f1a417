"""Writers round-trip exactly through open_output, and write atomically."""

from __future__ import annotations

import numpy as np
import pytest

from minibert import MinibertError
from minibert.output import Record, Settings, open_output, open_writer


def _records(rng, dtype, pooled):
    recs = []
    for index, n in [(2, 3), (0, 5), (1, 1)]:  # out of order: writers restore input order
        shape = (4,) if pooled else (n, 4)
        feats = {f"hidden_states.{i}": rng.normal(size=shape).astype(dtype) for i in (0, 2)}
        tokens = [f"t{index}_{k}" for k in range(n)]
        recs.append(Record(index, f"text {index}", None, tokens, np.arange(n), feats, n))
    return recs


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".jsonl"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pooled", [False, True])
def test_round_trip_is_exact(tmp_path, suffix, dtype, pooled):
    rng = np.random.default_rng(1)
    recs = _records(rng, dtype, pooled)
    path = tmp_path / f"out{suffix}"
    w = open_writer(path, Settings([0, 2], "mean" if pooled else "none", "none", np.dtype(dtype).name, "m"))
    w.add(recs)
    w.close()
    out = open_output(path)
    assert out.num_texts == 3
    assert out.layers == [0, 2]
    for r in recs:
        assert out.tokens(r.index) == r.tokens
        for name, v in r.features.items():
            got = out.vectors(r.index, name)
            np.testing.assert_array_equal(got.astype(dtype), v, err_msg=f"{suffix} {name} text {r.index}")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.npz"
    path.write_bytes(b"the user's earlier file")
    w = open_writer(path, Settings([0], "none", "none", "float32", "m"))
    w.add(_records(np.random.default_rng(0), np.float32, False)[:1])

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(w, "_write", boom)
    with pytest.raises(RuntimeError):
        w.close()
    assert path.read_bytes() == b"the user's earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temp file left behind


def test_bad_output_paths(tmp_path):
    s = Settings([0], "none", "none", "float32", "m")
    with pytest.raises(MinibertError, match="does not exist"):
        open_writer(tmp_path / "missing" / "out.npz", s)
    with pytest.raises(MinibertError, match="unknown output format"):
        open_writer(tmp_path / "out.csv", s)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_file_replaced_after_opening_is_not_read_under_the_old_header(tmp_path, suffix):
    """Lazy readers open the file again for each read: a file replaced in
    between (another run's output) is an error, never rows of the new file
    cut by the old file's offsets."""
    rng = np.random.default_rng(2)
    paths = []
    for name, pooled in (("a", False), ("b", True)):
        w = open_writer(
            tmp_path / f"{name}{suffix}",
            Settings([0, 2], "mean" if pooled else "none", "none", "float32", "m"),
        )
        w.add(_records(rng, np.float32, pooled))
        w.close()
        paths.append(tmp_path / f"{name}{suffix}")
    out = open_output(paths[0])
    out.vectors(0, 0)
    paths[1].replace(paths[0])
    with pytest.raises(MinibertError, match="changed since it was opened"):
        out.vectors(1, 2)


def test_wrong_types_name_the_argument(tmp_path):
    with pytest.raises(TypeError, match="open_output: path must be a path"):
        open_output(None)
    path = tmp_path / "o.npz"
    w = open_writer(path, Settings([0, 2], "none", "none", "float32", "m"))
    w.add(_records(np.random.default_rng(0), np.float32, False))
    w.close()
    out = open_output(path)
    for bad in ("0", 1.0, None, True):
        with pytest.raises(MinibertError, match="text index must be an integer"):
            out.tokens(bad)
    with pytest.raises(MinibertError, match="text -1 out of range"):
        out.tokens(-1)  # not the last text: a negative index is a mistake here, as in vectors()
