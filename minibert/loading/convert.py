"""A model directory -> the same model with safetensors weights and no pickle left.

``minibert convert DIR -o OUT_DIR`` is for users who want to drop
``pytorch_model.bin`` for good: minibert reads it without running it, but
other tools (transformers before 4.x's ``weights_only``, older
sentence-transformers) unpickle it with every global allowed.

What OUT_DIR gets:

* ``model.safetensors``: every tensor of the checkpoint minibert reads (single
  file, zip or legacy pickle, or shards), the encoder's and the task heads',
  each with its stored dtype and bits (bfloat16 stays bfloat16), in one file;
  it is read back and compared bit for bit before anything is renamed;
* a module folder's own ``pytorch_model.bin`` (a sentence-transformers Dense
  layer, say) becomes ``model.safetensors`` in the same way;
* every other file and folder, copied as it is, except hidden ones (``.git``)
  and other pickles (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``:
  ``training_args.bin``, optimizer states), which are listed as not copied.

DIR is first loaded by :func:`minibert.load`, so a model minibert cannot run
(a bad config, a NaN weight, a malicious pickle) is refused before anything
is written. OUT_DIR appears whole or not at all: everything is written into a
temporary folder beside it, then renamed. OUT_DIR must not exist (or be an
empty folder) and may not be inside DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import check_target, os_reason
from minibert.loading.checkpoint import WEIGHT_FILES, Checkpoint, Safetensors, open_checkpoint
from minibert.loading.directory import read_model_dir
from minibert.loading.tensorfile import itemsize

#: Names of files that are pickles (code a loader would run): never copied.
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` did: the safetensors files written (and what each
    came from), the files copied, the pickles left out."""

    written: tuple[tuple[Path, str], ...]
    copied: tuple[Path, ...]
    skipped: tuple[Path, ...]


def safetensors_header(checkpoint: Checkpoint, names: list[str], source: str) -> bytes:
    """The header of a safetensors file holding ``names`` of ``checkpoint`` back
    to back: length (u64, little-endian), then JSON padded with spaces to 8 bytes."""
    header: dict = {"__metadata__": {"format": "pt", "converted_from": source}}
    offset = 0
    for name in names:
        info = checkpoint.tensors[name]
        nbytes = info.numel * itemsize(info.dtype)
        header[name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head


def _bytes(a: np.ndarray) -> memoryview:
    """A tensor's stored bits, little-endian, as bytes to write (no copy when already so)."""
    a = np.ascontiguousarray(a)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return memoryview(a.reshape(-1).view(np.uint8))


def write_safetensors(checkpoint: Checkpoint, path: Path) -> None:
    """Every tensor of ``checkpoint`` into a new safetensors file at ``path``,
    one tensor in memory at a time; then read back and compared bit for bit."""
    names = sorted(checkpoint.tensors)
    with open(path, "wb") as f:
        f.write(safetensors_header(checkpoint, names, checkpoint.path.name))
        for name in names:
            f.write(_bytes(checkpoint.read_stored(name)))
        f.flush()
        os.fsync(f.fileno())
    with Safetensors(path) as back:
        for name in names:
            if back.tensors[name].dtype != checkpoint.tensors[name].dtype or not np.array_equal(
                _bytes(back.read_stored(name)), _bytes(checkpoint.read_stored(name))
            ):
                raise MinibertError(f"{path}: tensor {name!r} did not read back as written")


def _check_destination(src: Path, dst: Path) -> None:

    check_target(dst, directory=True)  # a usable path, not a file, a FIFO or a symlink loop
    src_real, dst_real = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if dst_real == src_real or src_real in dst_real.parents:
        raise MinibertError(f"{dst}: is inside the model directory {src}; choose a folder outside it")
    if os.path.lexists(dst) and not (dst.is_dir() and not any(dst.iterdir())):
        raise MinibertError(
            f"{dst}: already exists; convert writes a new folder (give one that does not exist)"
        )
    if not dst_real.parent.is_dir():
        raise MinibertError(f"{dst}: its parent folder {dst.parent} does not exist")


def _convert_folder(folder: Path, out: Path, written: list, copied: list, skipped: list, top: bool) -> None:
    """One folder of the model: its weights converted, other files copied, pickles listed."""
    out.mkdir(exist_ok=True)
    weights: set[Path] = set()
    has_torch = any(os.path.lexists(folder / name) for name in WEIGHT_FILES[2:])
    if top or has_torch:
        with open_checkpoint(folder) as checkpoint:
            write_safetensors(checkpoint, out / "model.safetensors")
            written.append((out / "model.safetensors", f"{checkpoint.path.name} ({checkpoint.format})"))
            weights = set(checkpoint.files)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry in weights:
            continue
        if entry.is_dir() and not entry.is_symlink():
            _convert_folder(entry, out / entry.name, written, copied, skipped, top=False)
        elif entry.name.endswith(PICKLES) or entry.name.endswith(".bin.index.json"):
            skipped.append(entry)  # a pickle, or the index of pickled shards
        elif entry.is_file():
            shutil.copyfile(entry, out / entry.name)  # a symlink (the Hugging Face cache): its content
            copied.append(entry)
        else:
            skipped.append(entry)


def convert(src: str | Path, dst: str | Path) -> Converted:
    """Write ``dst``: the model of ``src`` with safetensors weights (see the module docstring)."""
    src = read_model_dir(src).path  # every check minibert makes, before anything is written
    dst = Path(dst)
    _check_destination(src, dst)
    written: list = []
    copied: list = []
    skipped: list = []
    tmp = dst.resolve().parent / f".{dst.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir()  # as an ordinary folder: the umask decides its mode
    except OSError as e:
        raise MinibertError(f"{tmp}: cannot create ({os_reason(e)})") from None
    try:
        _convert_folder(src, tmp, written, copied, skipped, top=True)
        os.replace(tmp, dst)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MinibertError(f"{dst}: cannot write ({os_reason(e)})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rel = dst.joinpath
    return Converted(
        tuple((rel(p.relative_to(tmp)), what) for p, what in written), tuple(copied), tuple(skipped)
    )
