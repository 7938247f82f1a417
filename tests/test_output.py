"""minibert/outputs/output.py: open_output opens a file or a directory, each as an OutputReader."""

from __future__ import annotations

import numpy as np
import pytest

from minibert import MinibertError, open_output
from minibert.outputs.readers import FileOutput, OutputReader
from minibert.outputs.records import Record
from minibert.outputs.shards import ShardedOutput, ShardedWriter, write_shard
from minibert.outputs.spec import ExtractSpec
from minibert.outputs.writers import open_writer


def test_open_output_opens_files_and_directories(tmp_path):
    spec = ExtractSpec(layers=(0,), num_hidden_layers=1, shard_size=2, model="m")
    rec = Record(0, "a", None, ["a"], np.arange(1), {"hidden_states.0": np.ones((1, 2), np.float32)}, 1)
    w = open_writer(tmp_path / "o.safetensors", spec)
    w.add([rec])
    w.close()
    with ShardedWriter(tmp_path / "feats", spec) as sink:
        sink.record(write_shard(sink.path, 0, [rec], spec, "digest"))
        sink.close(1)
    with open_output(tmp_path / "o.safetensors") as f, open_output(tmp_path / "feats") as d:
        assert isinstance(f, FileOutput) and isinstance(d, ShardedOutput)
        for out in (f, d):
            assert isinstance(out, OutputReader)
            np.testing.assert_array_equal(out.vectors(0, 0), rec.features["hidden_states.0"])
    assert open_output(str(tmp_path / "feats")).num_texts == 1


def test_what_is_not_an_output(tmp_path):
    with pytest.raises(TypeError, match="open_output: path must be a path"):
        open_output(None)
    with pytest.raises(MinibertError, match="output file not found"):
        open_output(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(MinibertError, match="unknown output format '.csv'"):
        open_output(tmp_path / "x.csv")
    with pytest.raises(MinibertError, match="manifest.json: not found"):
        open_output(tmp_path)
