"""minibert/commands/summary.py: per-layer mean norm and mean cosine to the
previous stored layer, from every kind of output, against numbers worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from fuzz_helpers import run

from minibert.outputs.records import Record
from minibert.outputs.shards import ShardedWriter, write_shard
from minibert.outputs.spec import ExtractSpec
from minibert.outputs.writers import open_writer

# Two tokens per layer; norms and cosines by hand. Layer 1's second vector is zero:
# it has no direction, so its cosines count as 0 (never NaN).
LAYERS = {
    0: [[3, 4], [1, 0]],  # norms 5, 1: mean 3
    1: [[4, 3], [0, 0]],  # norms 5, 0: mean 2.5; cos to layer 0: 24/25 = 0.96, and 0: mean 0.48
    2: [[0, 5], [2, 0]],  # norms 5, 2: mean 3.5; cos to layer 1: 15/25 = 0.6, and 0: mean 0.3
}
WANT = [(0, "embeddings: LN(word + position + type)", "3.000", None),
        (1, "output of encoder layer 1", "2.500", "0.4800"),
        (2, "output of encoder layer 2 (last)", "3.500", "0.3000")]  # fmt: skip


def _record(index: int) -> Record:
    feats = {f"hidden_states.{i}": np.array(v, np.float32) for i, v in LAYERS.items()}
    return Record(index, "a b", None, ["a", "b"], np.arange(2), feats, 2)


@pytest.mark.parametrize("output", ["o.npz", "o.safetensors", "o.jsonl", "feats"])
def test_summary_numbers_by_hand(tmp_path, output):
    spec = ExtractSpec(layers=(0, 1, 2), num_hidden_layers=2, shard_size=1, model="m")
    path = tmp_path / output
    if path.suffix:
        w = open_writer(path, spec)
        w.add([_record(0), _record(1)])
        w.close()
    else:  # one shard per text: the sums run across shards
        with ShardedWriter(path, spec) as sink:
            for k in range(2):
                sink.record(write_shard(path, k, [_record(k)], spec, f"digest {k}"))
            sink.close(2)
    code, out, err = run("summary", path)
    assert code == 0, err
    head, table, *rows = out.splitlines()
    assert head.startswith(f"{path}: 2 texts, token vectors")
    assert table.split() == ["layer", "what", "it", "is", "mean", "norm", "cos(prev)"]
    assert len(rows) == 3
    for row, (i, what, norm, cos) in zip(rows, WANT, strict=True):
        if output == "o.jsonl":  # records no settings: which layer is the model's last is unknown
            what = what.removesuffix(" (last)")
        assert row.startswith(f"{i:>5}  {what}"), row
        assert row.split()[-2:] == ([norm, cos] if cos else [what.split()[-1], norm]), row


def test_summary_of_combined_layers_gives_the_width(tmp_path):
    spec = ExtractSpec(layers=(0, 1, 2), num_hidden_layers=2, combine="concat", model="m")
    rec = _record(0)
    rec.features = {"combined": np.concatenate(list(rec.features.values()), axis=-1)}
    w = open_writer(tmp_path / "c.npz", spec)
    w.add([rec])
    w.close()
    code, out, _ = run("summary", tmp_path / "c.npz")
    assert code == 0 and out.splitlines()[1] == "combined (concat) of layers [0, 1, 2]: 6 features per vector"
