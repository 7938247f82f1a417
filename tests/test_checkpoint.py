"""Every weights format a model directory may hold: model.safetensors, pytorch_model.bin in
torch's zip and legacy formats (read without torch), and sharded checkpoints of both.

The .bin files in tests/data/torch/ were written by torch itself
(tests/reference/generate_torch_bin.py) from each tiny model of every family;
each must give hidden states equal bit for bit to the model's model.safetensors
and, like it, match transformers' references (tests/reference/families/).
Edge cases torch would not write (strides, offsets, views) are assembled by hand
(tests/torch_files.py). No test here imports torch except the one that
converts the real model, which is skipped without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, TINY_BERT
from numpy.testing import assert_allclose, assert_array_equal
from reference_helpers import TOLERANCES, read_reference
from safetensors.numpy import load_file, save_file
from torch_files import (
    Call,
    Global,
    assemble,
    ordered_dict,
    storage_id,
    tensor,
    write_legacy,
    write_state_dict,
    write_zip,
)

import minibert
from minibert.loading.checkpoint import open_checkpoint

TORCH = DATA / "torch"
REFS = Path(__file__).resolve().parent / "reference" / "families"
FAMILIES = (
    "tiny-bert", "tiny-bert-gelu-new", "tiny-bert-mlm", "tiny-bert-fp16", "tiny-bert-bf16", "tiny-roberta",
    "tiny-xlm-roberta", "tiny-camembert", "tiny-distilbert", "tiny-electra", "tiny-electra-generator",
    "tiny-albert", "tiny-albert-groups",
)  # fmt: skip
TEXTS = ["Hello world!", "The encoder reads every token of the sentence at once.", "Café 🍕"]


def model_dir(tmp_path: Path, family: str, weights: dict[str, Path], name: str = "m") -> Path:
    """``family``'s config and tokenizer with ``weights`` (file name -> source) instead of its safetensors."""
    d = tmp_path / name
    shutil.copytree(DATA / family, d, ignore=shutil.ignore_patterns("model.safetensors"))
    for target, source in weights.items():
        shutil.copy(source, d / target)
    return d


def assert_same_encoder(a: minibert.Model, b: minibert.Model) -> None:
    ea = a.encode(TEXTS, output_attentions=True)
    eb = b.encode(TEXTS, output_attentions=True)
    for i, (x, y) in enumerate(
        zip(ea.hidden_states + ea.attentions, eb.hidden_states + eb.attentions, strict=True)
    ):
        assert_array_equal(x, y, err_msg=f"output {i}")


_safetensors_models: dict = {}


def safetensors_model(family: str) -> minibert.Model:
    if family not in _safetensors_models:
        _safetensors_models[family] = minibert.load(DATA / family)
    return _safetensors_models[family]


@pytest.mark.parametrize("kind", ["zip", "legacy"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pytorch_model_bin_equals_the_safetensors_copy(tmp_path, family, kind):
    source = TORCH / f"{family}{'.legacy' if kind == 'legacy' else ''}.bin"
    d = model_dir(tmp_path, family, {"pytorch_model.bin": source})
    model = minibert.load(d)
    assert model.weights.format.startswith(f"PyTorch {kind}")
    assert model.weights.files == (d / "pytorch_model.bin",)
    ref = safetensors_model(family)
    assert model.weights.names == ref.weights.names
    assert model.weights.source_dtypes.items() >= ref.weights.source_dtypes.items()  # + tied copies, buffers
    assert_same_encoder(model, ref)


@pytest.mark.parametrize("kind", ["zip", "legacy"])
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "tiny-bert"])  # tiny-bert: test_reference
def test_pytorch_model_bin_matches_transformers(tmp_path, family, kind):
    """As the safetensors models do (test_families): float32 within 1e-4 (observed 1.5e-6)."""
    d = model_dir(
        tmp_path, family, {"pytorch_model.bin": TORCH / f"{family}{'.legacy' * (kind == 'legacy')}.bin"}
    )
    ref = read_reference(REFS / f"{family}-float32.npz")
    enc = minibert.load(d).encode(ref["texts"], ref["text_pairs"])
    b, s = ref["positions"].T
    for i, h in enumerate(enc.hidden_states):
        tol = TOLERANCES["float32"]["hidden_states"]
        assert_allclose(h[b, s], ref[f"hidden_states.{i}"], rtol=0, atol=tol, err_msg=f"hidden_states[{i}]")


def test_tied_weights_share_one_storage(tmp_path):
    """BertForMaskedLM ties the decoder to the word embeddings: two names, one storage in the file."""
    d = model_dir(tmp_path, "tiny-bert-mlm", {"pytorch_model.bin": TORCH / "tiny-bert-mlm.bin"})
    with open_checkpoint(d) as ckpt:
        word = ckpt.read("bert.embeddings.word_embeddings.weight")
        assert_array_equal(ckpt.read("cls.predictions.decoder.weight"), word)
    assert "cls.predictions.decoder.weight" in minibert.load(d).weights.ignored


def test_an_int64_buffer_is_read_and_ignored(tmp_path):
    """transformers 3 - 4.30 saved embeddings.position_ids (int64) in pytorch_model.bin."""
    d = model_dir(tmp_path, "tiny-bert", {"pytorch_model.bin": TORCH / "tiny-bert.legacy.bin"})
    with open_checkpoint(d) as ckpt:
        assert ckpt.tensors["embeddings.position_ids"].dtype == "I64"
        assert_array_equal(ckpt.read_stored("embeddings.position_ids"), np.arange(64)[None])
    w = minibert.load(d).weights
    assert w.source_dtypes["embeddings.position_ids"] == "I64"
    assert "embeddings.position_ids" not in w.ignored  # a buffer, not a parameter


@pytest.mark.parametrize("kind", ["bin", "safetensors"])
def test_sharded_checkpoints(tmp_path, kind):
    """Shards written by huggingface_hub's split (save_pretrained's), and their index."""
    shards = sorted((TORCH / f"sharded-{kind}").iterdir())
    d = model_dir(tmp_path, "tiny-bert-gelu-new", {p.name: p for p in shards})
    model = minibert.load(d)
    index = d / ("pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json")
    assert model.weights.files == (index, *(d / p.name for p in shards if p.name != index.name))
    assert len(model.weights.files) == 4 and "(3 shards)" in model.weights.format
    assert set(model.files) == {d / "config.json", *model.weights.files, d / "tokenizer.json",
                                d / "tokenizer_config.json"}  # fmt: skip
    assert_same_encoder(model, safetensors_model("tiny-bert-gelu-new"))


def test_safetensors_is_preferred_when_both_are_there(tmp_path):
    """A .bin of other numbers beside the safetensors: the safetensors is read."""
    weights = {
        "model.safetensors": DATA / "tiny-bert-gelu-new" / "model.safetensors",
        "pytorch_model.bin": TORCH / "tiny-bert-mlm.bin",
    }
    d = model_dir(tmp_path, "tiny-bert-gelu-new", weights)
    model = minibert.load(d)
    assert model.weights.files == (d / "model.safetensors",) and model.weights.format == "safetensors"
    assert d / "pytorch_model.bin" not in model.files
    assert_same_encoder(model, safetensors_model("tiny-bert-gelu-new"))


def test_safetensors_index_is_preferred_to_a_bin(tmp_path):
    shards = {p.name: p for p in (TORCH / "sharded-safetensors").iterdir()}
    d = model_dir(tmp_path, "tiny-bert-gelu-new", shards | {"pytorch_model.bin": TORCH / "tiny-bert-mlm.bin"})
    assert minibert.load(d).weights.format.startswith("sharded safetensors")


# --------------------------------------------------------------------------- what torch may write


def tiny_arrays() -> dict[str, np.ndarray]:
    return load_file(str(TINY_BERT / "model.safetensors"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_strided_and_offset_tensors(tmp_path, legacy):
    """A tensor may be a transposed view (strides (1, n)) or start inside a shared storage:
    both are read as the elements torch would give."""
    arrays = tiny_arrays()
    q = "encoder.layer.0.attention.self.query.weight"
    k = "encoder.layer.0.attention.self.key.weight"
    items, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        if name in (q, k):
            continue
        storages[str(i)] = a
        items[name] = tensor(storage_id(str(i), "float32", a.size, legacy), 0, a.shape)
    # q stored transposed: the storage holds q.T row by row, the tensor reads it with strides (1, 32)
    storages["qt"] = np.ascontiguousarray(arrays[q].T)
    items[q] = tensor(storage_id("qt", "float32", 32 * 32, legacy), 0, (32, 32), (1, 32))
    # k lives after 7 junk elements (NaN: reading them would fail the finite check) of a longer storage
    nan = np.full(7, np.nan, np.float32)
    storages["shared"] = np.concatenate([nan, arrays[k].ravel(), nan[:1]])
    items[k] = tensor(storage_id("shared", "float32", 32 * 32 + 8, legacy), 7, (32, 32))
    path = tmp_path / "m" / "pytorch_model.bin"
    shutil.copytree(TINY_BERT, path.parent, ignore=shutil.ignore_patterns("model.safetensors"))
    pkl = assemble(ordered_dict(items))
    (write_legacy if legacy else write_zip)(path, pkl, storages)
    with open_checkpoint(path.parent) as ckpt:
        assert_array_equal(ckpt.read(q), arrays[q])
        assert_array_equal(ckpt.read(k), arrays[k])
    assert_same_encoder(minibert.load(path.parent), minibert.load(TINY_BERT))


def test_a_parameter_wrapper_and_an_archive_of_another_name(tmp_path):
    """``nn.Parameter`` objects pickle through _rebuild_parameter; the zip's top folder may have any name."""
    arrays = tiny_arrays()
    items = {}
    for i, (name, a) in enumerate(arrays.items()):
        t = tensor(storage_id(str(i), "float32", a.size), 0, a.shape)
        hooks = Call(Global("collections", "OrderedDict"), ())
        items[name] = Call(Global("torch._utils", "_rebuild_parameter"), (t, True, hooks))
    d = tmp_path / "m"
    shutil.copytree(TINY_BERT, d, ignore=shutil.ignore_patterns("model.safetensors"))
    storages = {str(i): a for i, a in enumerate(arrays.values())}
    write_zip(d / "pytorch_model.bin", assemble(ordered_dict(items)), storages, archive="pytorch_model")
    assert_same_encoder(minibert.load(d), minibert.load(TINY_BERT))


def test_float64_storages_load_in_either_dtype(tmp_path):
    arrays = {k: v.astype(np.float64) for k, v in tiny_arrays().items()}
    d = tmp_path / "m"
    shutil.copytree(TINY_BERT, d, ignore=shutil.ignore_patterns("model.safetensors"))
    write_state_dict(d / "pytorch_model.bin", arrays)
    m64 = minibert.load(d, "float64")
    assert set(m64.weights.source_dtypes.values()) == {"F64"}
    assert_array_equal(m64.weights.embeddings.word, arrays["embeddings.word_embeddings.weight"])
    W_1 = arrays["encoder.layer.0.intermediate.dense.weight"].T.astype(np.float32)
    assert_array_equal(minibert.load(d).weights.layers[0].ffn.W_1, W_1)


# --------------------------------------------------------------------------- reading only what is used


def test_tensors_the_encoder_ignores_are_never_read(tmp_path, monkeypatch):
    """An 8 GiB head in the header costs nothing: its bytes are never read (the file is sparse)."""
    arrays = tiny_arrays()
    d = tmp_path / "m"
    shutil.copytree(TINY_BERT, d, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file(arrays, str(d / "plain.safetensors"))
    raw = (d / "plain.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data_len = len(raw) - 8 - n
    huge = 2 * 1024**3  # float32 elements: 8 GiB
    header["cls.huge.weight"] = {
        "dtype": "F32",
        "shape": [huge],
        "data_offsets": [data_len, data_len + 4 * huge],
    }
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(d / "model.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob + raw[8 + n :])
        f.truncate(8 + len(blob) + data_len + 4 * huge)  # a hole: no disk, no memory
    (d / "plain.safetensors").unlink()
    read: list[str] = []
    from minibert.loading import checkpoint

    original = checkpoint.Safetensors.read_stored
    monkeypatch.setattr(checkpoint.Safetensors, "read_stored", lambda self, name: read.append(name) or
                        original(self, name))  # fmt: skip
    model = minibert.load(d)
    assert "cls.huge.weight" in model.weights.ignored and "cls.huge.weight" not in read
    assert sorted(read) == sorted(model.weights.names.values())  # each used tensor once, nothing else


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_ignored_torch_storages_are_never_read(tmp_path, monkeypatch, legacy):
    from minibert.loading import torch_pickle

    arrays = tiny_arrays() | {"cls.head.weight": np.ones((50, 50), np.float32)}
    d = tmp_path / "m"
    shutil.copytree(TINY_BERT, d, ignore=shutil.ignore_patterns("model.safetensors"))
    write_state_dict(d / "pytorch_model.bin", arrays, legacy)
    cls = torch_pickle.TorchLegacy if legacy else torch_pickle.TorchZip
    read: list[str] = []
    original = cls.read_stored
    monkeypatch.setattr(cls, "read_stored", lambda self, name: read.append(name) or original(self, name))
    model = minibert.load(d)
    assert "cls.head.weight" in model.weights.ignored and "cls.head.weight" not in read
    assert sorted(read) == sorted(model.weights.names.values())


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
@pytest.mark.real
def test_the_real_model_as_pytorch_model_bin(real_model_dir, real_model, tmp_path):
    """all-MiniLM-L6-v2 saved by torch (both formats) gives the same hidden states, bit for bit."""
    torch = pytest.importorskip(
        "torch", reason="converting the real model to .bin needs torch ([reference] extra)"
    )
    from safetensors.torch import load_file as torch_load_file

    state = torch_load_file(str(real_model_dir / "model.safetensors"))
    texts = ["The cat sat on the mat.", "A longer sentence, with punctuation; and more words than the first."]
    want = real_model.encode(texts).hidden_states
    for zipped in (True, False):
        d = tmp_path / f"bin-{zipped}"
        shutil.copytree(
            real_model_dir, d, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx*")
        )
        torch.save(state, d / "pytorch_model.bin", _use_new_zipfile_serialization=zipped)
        model = minibert.load(d)
        assert model.weights.format.startswith("PyTorch zip" if zipped else "PyTorch legacy")
        for i, (a, b) in enumerate(zip(model.encode(texts).hidden_states, want, strict=True)):
            assert_array_equal(a, b, err_msg=f"hidden_states[{i}]")


def test_a_tensor_larger_than_memory_is_a_clean_error(monkeypatch):
    """A sparse file can honestly hold a tensor of any size: the allocation fails in one line."""
    from minibert.loading import checkpoint

    with pytest.raises(minibert.MinibertError, match=r"tensor 'w' needs 147,573,952,589,676,412,912 bytes"):
        checkpoint.allocate((2**63 - 1, 4), np.float32, Path("m.safetensors"), "tensor 'w'")

    def no_memory(shape, dtype):
        raise MemoryError

    monkeypatch.setattr(checkpoint.np, "empty", no_memory)
    with pytest.raises(
        minibert.MinibertError, match="m.bin: tensor 'x' needs 400 bytes, more memory than there is"
    ):
        checkpoint.allocate((10, 10), np.float32, Path("m.bin"), "tensor 'x'")
