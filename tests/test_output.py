"""minibert/outputs/output.py: open_output opens a file or a directory, each as an OutputReader."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_BERT
from fuzz_helpers import run

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


@pytest.mark.parametrize(
    "name, args, want",
    [
        (
            "a.npz",
            ["--pool", "none"],
            "FileOutput('{p}', format='npz', texts=3, layers=[0, 1, 2], pool='none', dtype='float32')",
        ),
        (
            "b.safetensors",
            ["--layers", "-1", "--pool", "cls", "--output-dtype", "float16"],
            "SafetensorsOutput('{p}', format='safetensors', texts=3, layers=[2], pool='cls', "
            "dtype='float16')",
        ),
        (
            "c.jsonl",
            ["--layers", "0,-1", "--word-pool", "mean"],
            "FileOutput('{p}', format='jsonl', texts=3, layers=[0, 2], pool='none', dtype='float64', "
            "word_pool='yes')",
        ),
        (
            "d",
            ["--shard-size", "2", "--attentions"],
            "ShardedOutput('{p}', format='directory of 2 shards', texts=3, layers=[0, 1, 2], pool='none', "
            "dtype='float32', attentions='maps')",
        ),
        (
            "e.npz",
            ["--layers", "-2,-1", "--pool", "mean", "--combine", "concat", "--attention-stats"],
            "FileOutput('{p}', format='npz', texts=3, layers=[1, 2], pool='mean', combine='concat', "
            "dtype='float32', attentions='stats')",
        ),
    ],
)
def test_an_output_has_a_length_and_a_one_line_repr(tmp_path, name, args, want):
    """len() is the number of texts, and repr says what is held without reading any feature."""
    src = tmp_path / "in.txt"
    src.write_text("one text\nthe second text\nand a third one\n", encoding="utf-8")
    out = tmp_path / name
    code, _, err = run("extract", src, "-o", out, "--model", TINY_BERT, *args)
    assert code == 0, err
    with open_output(out) as o:
        assert len(o) == 3 == o.num_texts
        assert repr(o) == want.format(p=out)
        assert "\n" not in repr(o)
