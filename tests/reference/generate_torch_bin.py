"""Every committed tiny model as PyTorch's pytorch_model.bin, in both of torch's formats, and sharded.

    python tests/reference/generate_torch_bin.py   # the [reference] extra: torch==2.13.0, transformers

For each model directory of :data:`MODELS` (every family and dtype variant in
tests/data/), transformers loads the model as the class that saved it (the
``architectures`` of its config.json: task heads included, tied weights tied)
in the dtype it is stored in, and ``torch.save`` writes its state dict, as
transformers 4's ``save_pretrained(safe_serialization=False)`` did:

* ``tests/data/torch/<name>.bin``: the zip format (torch.save's default since 1.6);
* ``tests/data/torch/<name>.legacy.bin``: the legacy format
  (``_use_new_zipfile_serialization=False``; torch before 1.6 wrote only this).

tiny-bert's state dict also carries ``embeddings.position_ids`` (an int64
buffer), as checkpoints saved by transformers 3 to 4.30 do.

And two sharded copies of tiny-bert-gelu-new, split by huggingface_hub's
``split_torch_state_dict_into_shards`` (what ``save_pretrained(max_shard_size=...)``
uses) into shards of at most 20 kB with an index.json naming each tensor's
shard: ``tests/data/torch/sharded-bin/`` (pytorch_model-0000k-of-0000n.bin) and
``tests/data/torch/sharded-safetensors/`` (model-0000k-of-0000n.safetensors).

Checked here with torch: every file, read back by ``torch.load(weights_only=True)``
(or safetensors), holds tensors equal bit for bit to the model's
model.safetensors; transformers loads each .bin directory to the same
hidden states as the safetensors directory. ``tests/data/torch/provenance.json``
records versions and each file's sha256. minibert is not imported.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from provenance import sha256, size_check, versions  # noqa: E402  (this folder, on the script's path)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OUT = DATA / "torch"
MODELS = (
    "tiny-bert", "tiny-bert-gelu-new", "tiny-bert-mlm", "tiny-bert-fp16", "tiny-bert-bf16", "tiny-roberta",
    "tiny-xlm-roberta", "tiny-camembert", "tiny-distilbert", "tiny-electra", "tiny-electra-generator",
    "tiny-albert", "tiny-albert-groups",
)  # fmt: skip
SHARDED = "tiny-bert-gelu-new"
MAX_SHARD = 20_000
MAX_BYTES = 2_500_000  # everything this script writes, together


def load_model(path: Path):
    """The model as the class that saved it, in its stored dtype."""
    import torch
    import transformers

    config = json.loads((path / "config.json").read_text())
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(config.get("dtype"), torch.float32)
    cls = getattr(transformers, config["architectures"][0])
    return cls.from_pretrained(path, dtype=dtype, attn_implementation="eager").eval()


def state_dict(name: str, model) -> dict:
    import torch

    state = model.state_dict()
    if name == "tiny-bert":  # a persistent buffer of transformers 3 - 4.30 checkpoints
        state["embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
    return state


def same_as_safetensors(path: Path, state: dict) -> None:
    """Every tensor of model.safetensors is in ``state``, equal bit for bit (extra: tied copies, buffers)."""
    import torch
    from safetensors.torch import load_file

    def bits(t):
        return t.contiguous().view(torch.uint8)

    for key, t in load_file(path / "model.safetensors").items():
        got = state[key]
        assert got.dtype == t.dtype and got.shape == t.shape, key
        assert torch.equal(bits(got), bits(t)), key


def hidden_states(model_dir: Path, texts: list[str]):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**tok(texts, return_tensors="pt", padding=True), output_hidden_states=True).hidden_states


def check_transformers_loads(src: Path, bin_file: Path) -> None:
    """transformers on a copy of ``src`` with ``bin_file`` as its only weights = transformers on ``src``."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("model.safetensors"))
        shutil.copy(bin_file, d / "pytorch_model.bin")
        texts = ["Hello world!", "The encoder reads every token."]
        for a, b in zip(hidden_states(src, texts), hidden_states(d, texts), strict=True):
            assert torch.equal(a, b)


def write_sharded(src: Path, state: dict, out: Path, kind: str) -> list[Path]:
    """huggingface_hub's split of ``state`` into shards of ``kind`` ("bin" or "safetensors") + index."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pattern = "pytorch_model{suffix}.bin" if kind == "bin" else "model{suffix}.safetensors"
    split = split_torch_state_dict_into_shards(state, filename_pattern=pattern, max_shard_size=MAX_SHARD)
    assert split.is_sharded, "max_shard_size too large for a sharded fixture"
    for filename, names in split.filename_to_tensors.items():
        shard = {n: state[n].contiguous() for n in names}
        if kind == "bin":
            torch.save(shard, out / filename)
        else:
            save_file(shard, str(out / filename), metadata={"format": "pt"})
    index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
    name = "pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json"
    (out / name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return sorted(out.iterdir())


def main() -> int:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the load reports list the task heads a BertModel leaves out
    transformers.logging.disable_progress_bar()
    OUT.mkdir(exist_ok=True)
    written: list[Path] = []
    for name in MODELS:
        src = DATA / name
        model = load_model(src)
        state = state_dict(name, model)
        same_as_safetensors(src, state)
        for suffix, zipped in ((".bin", True), (".legacy.bin", False)):
            path = OUT / f"{name}{suffix}"
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp, _use_new_zipfile_serialization=zipped)
            os.replace(tmp, path)
            back = torch.load(path, weights_only=True)
            assert back.keys() == state.keys(), path
            same_as_safetensors(src, back)
            check_transformers_loads(src, path)
            written.append(path)
        print(f"{name:<24} {', '.join(f'{p.stat().st_size:,}' for p in written[-2:])} bytes (zip, legacy)")
    model = load_model(DATA / SHARDED)
    state = dict(model.state_dict())
    same_as_safetensors(DATA / SHARDED, state)
    for kind in ("bin", "safetensors"):
        files = write_sharded(DATA / SHARDED, state, OUT / f"sharded-{kind}", kind)
        written += files
        print(f"sharded-{kind:<16} {len(files) - 1} shards")
    provenance = {
        "generator": str(Path(__file__).relative_to(ROOT)),
        "generator_sha256": sha256(Path(__file__)),
        "date": datetime.date.today().isoformat(),
        "versions": versions(),
        "calls": {
            "<name>.bin": "torch.save(model.state_dict(), path)",
            "<name>.legacy.bin": "torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)",
            "sharded-*": "huggingface_hub.split_torch_state_dict_into_shards(state, "
            f"max_shard_size={MAX_SHARD})",
        },
        "model": "getattr(transformers, config.architectures[0]).from_pretrained(tests/data/<name>, "
        "dtype=<stored dtype>)",
        "sharded_source": SHARDED,
        "sha256": {str(p.relative_to(OUT)): sha256(p) for p in written},
    }
    (OUT / "provenance.json").write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    return size_check(written, MAX_BYTES)


if __name__ == "__main__":
    sys.exit(main())
