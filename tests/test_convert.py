"""``minibert convert DIR -o OUT_DIR``: a safetensors copy of any checkpoint minibert reads.

The converted tensors are compared with the model.safetensors that
transformers itself wrote for the same model (tests/data/<family>/), byte for
byte, read here from the safetensors layout directly (json header + slices),
not with minibert's reader.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, snapshot
from numpy.testing import assert_array_equal
from torch_files import Call, Global, assemble, write_zip

import minibert

TORCH = DATA / "torch"
TEXTS = ["Hello world!", "The encoder reads every token of the sentence at once."]


def raw_tensors(path: Path) -> dict[str, tuple[str, list, bytes]]:
    """name -> (dtype, shape, bytes) of a safetensors file, read from its layout."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    return {
        k: (v["dtype"], v["shape"], data[slice(*v["data_offsets"])])
        for k, v in header.items()
        if k != "__metadata__"
    }


def bin_model(tmp_path: Path, family: str, source: Path) -> Path:
    d = tmp_path / "src"
    shutil.copytree(DATA / family, d, ignore=shutil.ignore_patterns("model.safetensors"))
    if source.is_dir():
        for f in source.iterdir():
            shutil.copy(f, d / f.name)
    else:
        shutil.copy(source, d / "pytorch_model.bin")
    return d


@pytest.mark.parametrize(
    "family, source",
    [
        ("tiny-bert-mlm", TORCH / "tiny-bert-mlm.legacy.bin"),  # tied weights: one storage, two names
        ("tiny-bert-bf16", TORCH / "tiny-bert-bf16.bin"),  # bfloat16 stays bfloat16
        ("tiny-bert-fp16", TORCH / "tiny-bert-fp16.legacy.bin"),
        ("tiny-albert", TORCH / "tiny-albert.bin"),
        ("tiny-bert-gelu-new", TORCH / "sharded-bin"),  # shards -> one file
    ],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_convert_keeps_every_tensor_bit_for_bit(tmp_path, family, source):
    src = bin_model(tmp_path, family, source)
    before = snapshot(src)
    out = tmp_path / "out"
    code, _, err = run("convert", src, "-o", out)
    assert code == 0, err
    assert "wrote" in err and str(out / "model.safetensors") in err
    others = {p.name for p in src.iterdir() if not p.name.startswith("pytorch_model")}
    assert {p.name for p in out.iterdir()} == others | {"model.safetensors"}
    got = raw_tensors(out / "model.safetensors")
    want = raw_tensors(DATA / family / "model.safetensors")  # written by transformers
    assert got.items() >= want.items()  # every tensor, same dtype, shape and bytes (+ tied copies)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "predictions.decoder.weight",
            "predictions.decoder.bias"}  # fmt: skip
    assert set(got) - set(want) <= tied  # the copies transformers' safetensors leaves out
    a, b = minibert.load(out), minibert.load(DATA / family)
    assert a.weights.source_dtypes.items() >= b.weights.source_dtypes.items()
    for x, y in zip(a.encode(TEXTS).hidden_states, b.encode(TEXTS).hidden_states, strict=True):
        assert_array_equal(x, y)
    assert_unchanged(before, src)


@pytest.mark.slow
def test_transformers_loads_the_converted_model(tmp_path):
    torch = pytest.importorskip("torch", reason="checking with transformers needs the [reference] extra")
    transformers = pytest.importorskip("transformers")
    src = bin_model(tmp_path, "tiny-roberta", TORCH / "tiny-roberta.legacy.bin")
    out = tmp_path / "out"
    assert run("convert", src, "-o", out)[0] == 0
    tok = transformers.AutoTokenizer.from_pretrained(DATA / "tiny-roberta")
    inputs = tok(TEXTS, return_tensors="pt", padding=True, truncation=True)
    states = []
    for d in (out, DATA / "tiny-roberta"):
        model = transformers.AutoModel.from_pretrained(d, attn_implementation="eager").eval()
        with torch.no_grad():
            states.append(model(**inputs, output_hidden_states=True).hidden_states)
    for x, y in zip(*states, strict=True):
        assert torch.equal(x, y)


def test_module_folders_and_other_files(tmp_path):
    """A Dense module's pickle becomes safetensors too; other pickles are left out and listed."""
    src = bin_model(tmp_path, "tiny-bert-gelu-new", TORCH / "tiny-bert-gelu-new.bin")
    (src / "README.md").write_text("# a model\n")
    (src / "training_args.bin").write_bytes(b"\x80\x02pickled training arguments")
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean"}')
    (src / "2_Dense").mkdir()
    shutil.copy(TORCH / "tiny-electra.bin", src / "2_Dense" / "pytorch_model.bin")  # any state dict
    (src / "2_Dense" / "config.json").write_text('{"in_features": 24}')
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: main\n")
    out = tmp_path / "out"
    code, _, err = run("convert", src, "-o", out)
    assert code == 0, err
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors", "README.md",
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert "not copied" in err and "training_args.bin" in err
    assert (out / "README.md").read_text() == "# a model\n"
    dense = raw_tensors(out / "2_Dense" / "model.safetensors")
    assert dense.keys() >= raw_tensors(DATA / "tiny-electra" / "model.safetensors").keys()


@pytest.mark.parametrize(
    "where", ["the source itself", "inside the source", "a non-empty folder", "no parent"]
)
def test_refuses_a_destination_that_would_lose_or_mix_files(tmp_path, where):
    src = bin_model(tmp_path, "tiny-bert-fp16", TORCH / "tiny-bert-fp16.bin")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    out = {
        "the source itself": src,
        "inside the source": src / "converted",
        "a non-empty folder": tmp_path / "full",
        "no parent": tmp_path / "nowhere" / "out",
    }[where]
    before = snapshot(tmp_path)
    assert_one_line_error(run("convert", src, "-o", out), str(out))
    assert_unchanged(before, tmp_path)


def test_an_empty_destination_folder_is_fine(tmp_path):
    src = bin_model(tmp_path, "tiny-bert-fp16", TORCH / "tiny-bert-fp16.bin")
    (tmp_path / "empty").mkdir()
    assert run("convert", src, "-o", tmp_path / "empty")[0] == 0
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    from minibert.loading import convert

    src = bin_model(tmp_path, "tiny-bert-fp16", TORCH / "tiny-bert-fp16.bin")
    original = convert.write_safetensors

    def full(checkpoint, path):
        original(checkpoint, path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert, "write_safetensors", full)
    before = snapshot(tmp_path)
    assert_one_line_error(run("convert", src, "-o", tmp_path / "out"), "out", "no space left on device")
    assert_unchanged(before, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no OUT_DIR, no temporary folder


def test_a_malicious_pickle_is_refused_before_writing(tmp_path):
    src = bin_model(tmp_path, "tiny-bert-fp16", TORCH / "tiny-bert-fp16.bin")
    write_zip(src / "pytorch_model.bin", assemble(Call(Global("os", "system"), ("touch canary",))), {})
    before = snapshot(tmp_path)
    assert_one_line_error(run("convert", src, "-o", tmp_path / "out"), "pytorch_model.bin", "os.system")
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "out").exists() and not Path("canary").exists()


def test_a_converted_model_is_identical_in_float64(tmp_path):
    src = bin_model(tmp_path, "tiny-distilbert", TORCH / "tiny-distilbert.legacy.bin")
    assert run("convert", src, "-o", tmp_path / "out")[0] == 0
    a, b = minibert.load(tmp_path / "out", "float64"), minibert.load(src, "float64")
    for x, y in zip(a.encode(TEXTS).hidden_states, b.encode(TEXTS).hidden_states, strict=True):
        assert_array_equal(x, y)
    assert np.dtype(a.dtype) == np.float64
