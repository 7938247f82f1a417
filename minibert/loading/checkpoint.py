"""A weights file -> named tensors, read lazily and one at a time.

Four formats, one interface (:class:`Checkpoint`):

* ``model.safetensors``: a JSON header, then the tensors' bytes (read here
  without the safetensors library, so every header problem names its tensor);
* ``pytorch_model.bin``, torch's zip format (torch >= 1.6) or its legacy
  format: read by :mod:`minibert.loading.torch_pickle` with no torch and no pickle code
  run;
* ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``: a
  ``weight_map`` naming the shard file of each tensor (:class:`Sharded`).

Opening a checkpoint reads only its header: every tensor's name, stored dtype
and shape (``Checkpoint.tensors``). ``read(name)`` then reads that tensor and
nothing else, so a tensor the encoder does not use (an 8 GiB head, an fp8
table) is never read. Every size a header claims is checked against the file's
real size when it is opened, so no header can make minibert allocate more than
the file holds, and the caller checks shapes against config.json before it
reads anything.

:func:`open_checkpoint` picks a model directory's weights: safetensors
first (no pickle at all), then the PyTorch pickle (see :data:`WEIGHT_FILES`).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from minibert.errors import MinibertError
from minibert.files import read_json
from minibert.loading.tensorfile import (
    DTYPES,
    NUMPY_NAMES,
    Checkpoint,
    TensorInfo,
    allocate,
    open_for_read,
    read_exact,
    read_safetensors_header,
)
from minibert.loading.torch_pickle import open_torch

#: A model directory's weights files, in order of preference: safetensors
#: (no pickle) before PyTorch's pickle, one file before shards.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: The safetensors library's own limit on the JSON header.
MAX_HEADER = 100_000_000


class InMemory(Checkpoint):
    """Arrays already in memory (tests, models built in code) behind the same interface."""

    format = "arrays in memory"

    def __init__(self, arrays: dict[str, np.ndarray], source: str = "arrays"):
        tensors = {}
        for name, a in arrays.items():
            dtype = NUMPY_NAMES.get(np.asarray(a).dtype.name)
            if dtype is None:
                raise MinibertError(
                    f"{source}: tensor {name!r} has dtype {np.asarray(a).dtype}, not a tensor dtype"
                )
            tensors[name] = TensorInfo(dtype, tuple(np.shape(a)), Path(source))
        super().__init__(Path(source), tensors, ())
        self._arrays = arrays

    def read_stored(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self._arrays[name])


class Safetensors(Checkpoint):
    """``model.safetensors`` (huggingface/safetensors), its header read and
    checked by :func:`minibert.loading.tensorfile.read_safetensors_header`
    (the reader minibert's own .safetensors outputs use too), no longer than
    the safetensors library's own limit, :data:`MAX_HEADER`."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        with open_for_read(path) as f:
            header = read_safetensors_header(f, path, max_header=MAX_HEADER)
        self._start, self._offsets = header.start, header.offsets
        super().__init__(path, header.tensors, (path,))

    def read_stored(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        out = allocate(info.shape, DTYPES[info.dtype][0], self.path, f"tensor {name!r}")
        with open_for_read(self.path) as f:
            f.seek(self._start + self._offsets[name])
            read_exact(f, out, self.path, f"tensor {name!r}")
        return out.astype(out.dtype.newbyteorder("="), copy=False)


def inside(directory: Path, name: object, source: str) -> Path:
    """``directory / name`` for a relative ``name`` that a file names (a shard,
    a sentence-transformers module folder): refused, naming ``source``, when it
    is not a string or could leave the directory (absolute, ``..``).

    Checked on the name, not on the resolved path: the Hugging Face cache
    makes every file of a snapshot a symlink into ``blobs/``, outside it.
    """
    if not isinstance(name, str):
        raise MinibertError(f"{source} must be a string, got {type(name).__name__}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\0" in name:
        raise MinibertError(f"{source} {name[:80]!r} is outside the model directory {directory}")
    return directory.joinpath(*parts)


class Sharded(Checkpoint):
    """``*.index.json``: ``{"weight_map": {tensor name: shard file}}``. Each
    shard is opened (and validated) as the single file would be; a tensor is
    read from the shard the index names."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        index = read_json(path, expect=dict, what="checkpoint index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise MinibertError(f"{path}: weight_map must be an object of tensor name -> shard file")
        suffix = ".safetensors" if path.name.endswith(".safetensors.index.json") else ".bin"
        shards: dict[str, Checkpoint] = {}
        for tensor, shard in weight_map.items():
            shard_path = inside(path.parent, shard, f"{path}: weight_map[{tensor[:80]!r}]")
            if shard not in shards:
                if not shard_path.name.endswith(suffix):
                    raise MinibertError(f"{path}: shard {shard!r} is not a {suffix} file")
                shards[shard] = open_file(shard_path)
        self.format = f"sharded {next(iter(shards.values())).format} ({len(shards)} shards)"
        self._owner: dict[str, Checkpoint] = {}
        tensors: dict[str, TensorInfo] = {}
        for shard in shards.values():
            for name, info in shard.tensors.items():
                if name in tensors:
                    first = tensors[name].file.name
                    raise MinibertError(
                        f"{path}: tensor {name!r} is in two shards, {first} and {shard.path.name}"
                    )
                tensors[name] = info
                self._owner[name] = shard
        for tensor, shard in weight_map.items():
            if tensor not in shards[shard].tensors:
                raise MinibertError(
                    f"{path}: weight_map puts tensor {tensor!r} in {shard}, which does not hold it"
                )
        super().__init__(path, tensors, (path, *(s.path for s in shards.values())))
        self._shards = tuple(shards.values())

    def read_stored(self, name: str) -> np.ndarray:
        return self._owner[name].read_stored(name)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()


def open_file(path: str | os.PathLike) -> Checkpoint:
    """One weights file, its format from its name (an index, safetensors) or,
    for a PyTorch ``.bin``, from its first bytes (zip or legacy pickle)."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return Sharded(path)
    if path.suffix == ".safetensors":
        return Safetensors(path)
    return open_torch(path)


def open_checkpoint(model_dir: str | os.PathLike) -> Checkpoint:
    """The weights of a model directory: the first of :data:`WEIGHT_FILES` it has."""
    model_dir = Path(model_dir)
    for name in WEIGHT_FILES:
        if os.path.lexists(model_dir / name):
            return open_file(model_dir / name)
    raise MinibertError(
        f"{model_dir}: no weights: model.safetensors not found, nor pytorch_model.bin "
        "(or a sharded model.safetensors.index.json / pytorch_model.bin.index.json)"
    )
