"""What every weights-file reader shares: the stored dtypes, what a header
says of a tensor (:class:`TensorInfo`), the lazy :class:`Checkpoint`
interface, and allocation and reads that fail with one line.

:mod:`minibert.loading.checkpoint` (safetensors, shards) and
:mod:`minibert.loading.torch_pickle` (PyTorch's pickle) both build on this module;
neither imports the other's internals, so the readers form no import cycle.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import open_regular, parse_json

#: Stored dtype (safetensors' names, used for every format) -> (NumPy dtype of
#: the stored bits, the dtype's own name). bfloat16 is kept as its 16 bits and
#: the float8 types as their bytes: NumPy has neither.
DTYPES = {
    "F64": ("<f8", "float64"), "F32": ("<f4", "float32"), "F16": ("<f2", "float16"),
    "BF16": ("<u2", "bfloat16"), "I64": ("<i8", "int64"), "I32": ("<i4", "int32"),
    "I16": ("<i2", "int16"), "I8": ("i1", "int8"), "U64": ("<u8", "uint64"), "U32": ("<u4", "uint32"),
    "U16": ("<u2", "uint16"), "U8": ("u1", "uint8"), "BOOL": ("?", "bool"), "C64": ("<c8", "complex64"),
    "F8_E4M3": ("u1", "float8_e4m3"), "F8_E5M2": ("u1", "float8_e5m2"), "F8_E8M0": ("u1", "float8_e8m0"),
}  # fmt: skip
#: The stored dtypes minibert decodes to floating point (the encoder's tensors must be one).
FLOATS = ("F32", "F16", "BF16", "F64")
#: NumPy dtype name -> stored dtype (arrays handed over in memory, :class:`InMemory`).
NUMPY_NAMES = {name: key for key, (bits, name) in DTYPES.items() if np.dtype(bits).name == name}


@dataclass(frozen=True)
class TensorInfo:
    """What a header says of one tensor: stored dtype (a :data:`DTYPES` key),
    shape, and the file that holds it (a shard, for a sharded checkpoint)."""

    dtype: str
    shape: tuple[int, ...]
    file: Path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def itemsize(dtype: str) -> int:
    """Bytes per element of a stored dtype."""
    return np.dtype(DTYPES[dtype][0]).itemsize


def describe(dtype: str) -> str:
    """``"I32"`` -> ``"I32 (int32)"``: the stored name and the dtype's own."""
    return f"{dtype} ({DTYPES[dtype][1]})"


def decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored bits -> floating-point values: bfloat16 is the top 16 bits of a
    float32, so ``bits << 16`` viewed as float32 is exact; float16/32/64 are as stored."""
    if dtype == "BF16":
        bits = stored.astype(np.uint32)
        bits <<= 16  # in place: one float32-sized array, no second temporary
        return bits.view(np.float32)
    if dtype not in FLOATS:
        raise ValueError(f"{dtype} is not a floating-point dtype")
    return stored


class Checkpoint:
    """A weights file opened lazily: ``tensors`` (name -> :class:`TensorInfo`)
    from the header alone; :meth:`read` reads one tensor.

    ``path``: the file named in messages (the index, for shards); ``format``:
    what it is, for ``minibert inspect``; ``files``: every file opened (the
    index and each shard), for ``Model.files``. Use as a context manager, or
    call :meth:`close`.
    """

    format = ""

    def __init__(self, path: Path, tensors: dict[str, TensorInfo], files: tuple[Path, ...]):
        self.path = path
        self.tensors = tensors
        self.files = files

    def read_stored(self, name: str) -> np.ndarray:
        """One tensor's stored values, C-contiguous, native byte order
        (bfloat16 and float8 as their raw bits): what :mod:`minibert.loading.convert` copies."""
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """One floating-point tensor's values (bfloat16 decoded to float32 exactly)."""
        return decode(self.read_stored(name), self.tensors[name].dtype)

    def close(self) -> None:
        """Release open files (readers that keep one open override this)."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def allocate(shape: tuple[int, ...], dtype, source: Path, what: str) -> np.ndarray:
    """``np.empty``, with "not enough memory" a one-line error naming ``what``
    (a sparse file can hold a tensor of any size honestly)."""
    try:
        return np.empty(shape, dtype)
    except (MemoryError, ValueError):  # ValueError: more bytes than an address can count
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        raise MinibertError(f"{source}: {what} needs {nbytes:,} bytes, more memory than there is") from None


def read_exact(f, out: np.ndarray, source: Path, what: str) -> None:
    """Fill ``out`` from ``f``'s current position, 4 MiB at a time (a zip
    member's ``readinto`` would otherwise build a whole-tensor temporary);
    a short read is an error naming ``what``."""
    buf = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done : done + (4 << 20)])
        if not n:
            raise MinibertError(f"{source}: {what} ends early: the file is truncated or changed while read")
        done += n


def open_for_read(path: Path, what: str = "weights file"):
    """``path`` open for reading when it is a regular file (:func:`minibert.files.open_regular`:
    a FIFO or a device is refused, never read); every failure a one-line MinibertError."""
    return open_regular(path, what)


# -- the safetensors header ----------------------------------------------------------


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a ``.safetensors`` header says, every claim checked against the
    file: ``tensors`` (name -> :class:`TensorInfo`), each tensor's ``offsets``
    (its first byte within the data), ``start`` (the data's first byte in the
    file: 8 + the header's length) and ``metadata`` (``__metadata__`` as the
    header holds it, unchecked: ``{}`` when absent)."""

    tensors: dict[str, TensorInfo]
    offsets: dict[str, int]
    start: int
    metadata: object


def read_safetensors_header(
    f, path: Path, max_header: int | None = None, dtypes: tuple[str, ...] | None = None, gaps: bool = False
) -> SafetensorsHeader:
    """The header of the ``.safetensors`` file ``f`` (open at its start;
    ``path`` names it in messages): the one reader of the format, for model
    checkpoints and for minibert's outputs alike.

    The format (huggingface/safetensors): an 8-byte little-endian header
    length n, n bytes of JSON (name -> dtype, shape, data_offsets, and
    ``__metadata__``), then the tensors' little-endian bytes back to back.
    Checked as the safetensors library checks it -- every tensor's byte
    range as long as its shape needs, the ranges tiling the data with no gap
    or overlap, the data as long as the file -- and each bad entry named.
    ``max_header``: the most header bytes accepted (None: any the file holds);
    ``dtypes``: the stored dtypes accepted (None: every :data:`DTYPES` key);
    ``gaps``: data bytes no tensor claims are allowed (never an overlap, nor
    a range past the end) -- for outputs, whose readers then name the array
    a hand-edited header left out, which a gap alone cannot."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    bad = f"{path}: not a valid safetensors file"
    if len(head) < 8:
        raise MinibertError(f"{bad} ({size} bytes, too short for a header)")
    (n,) = struct.unpack("<Q", head)
    if n > size - 8:
        raise MinibertError(f"{bad} (header of {n:,} bytes runs past the end of the file's {size:,} bytes)")
    if max_header is not None and n > max_header:
        raise MinibertError(f"{bad} (header of {n:,} bytes, more than the {max_header:,} it may have)")
    try:
        text = f.read(n).decode("utf-8")
    except UnicodeDecodeError:
        raise MinibertError(f"{bad} (header is not UTF-8)") from None
    try:
        header = parse_json(text, "header", expect=dict)
    except MinibertError as e:
        raise MinibertError(f"{bad} ({e})") from None
    metadata = header.pop("__metadata__", {})
    tensors = {name: _tensor_entry(name, entry, path, dtypes) for name, entry in header.items()}
    offsets = {name: header[name]["data_offsets"][0] for name in tensors}
    _check_tiling(header, path, size - 8 - n, gaps)
    return SafetensorsHeader(tensors, offsets, 8 + n, metadata)


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(name: str, entry, path: Path, dtypes: tuple[str, ...] | None) -> TensorInfo:
    """One tensor's header entry, checked alone: a dtype, a shape of sizes, and
    ``data_offsets`` [start, end] exactly as long as the shape needs."""
    bad = f"{path}: not a valid safetensors file (tensor {name!r}"
    if not isinstance(entry, dict):
        raise MinibertError(f"{bad}: entry is a {type(entry).__name__}, not an object)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise MinibertError(f"{bad}: dtype {dtype!r} is not a string)")
    if dtype not in (dtypes or DTYPES):
        refused = (
            f"which is not a safetensors dtype (minibert reads {', '.join(FLOATS)})"
            if dtypes is None
            else f"which is not one minibert writes ({', '.join(dtypes)})"
        )
        raise MinibertError(f"{path}: tensor {name!r} has dtype {dtype[:20]!r}, {refused}")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise MinibertError(f"{bad}: shape {str(shape)[:60]} is not a list of sizes)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_natural(o) for o in offsets)):
        raise MinibertError(f"{bad}: data_offsets {str(offsets)[:60]} are not [start, end])")
    start, end = offsets
    nbytes = math.prod(shape) * itemsize(dtype)
    if end - start != nbytes:
        raise MinibertError(
            f"{bad}: data_offsets [{start}, {end}] hold {end - start} bytes, "
            f"its shape {tuple(shape)} of {dtype} needs {nbytes})"
        )
    return TensorInfo(dtype, tuple(shape), path)


def _check_tiling(header: dict, path: Path, data_len: int, gaps: bool) -> None:
    """The tensors' byte ranges (each checked alone) tile the file's
    ``data_len`` data bytes: no overlap, nothing past the end, and unless
    ``gaps``, no byte left over."""
    expected = 0
    for start, end, name in sorted((*e["data_offsets"], name) for name, e in header.items()):
        if start < expected or (start > expected and not gaps):
            raise MinibertError(
                f"{path}: not a valid safetensors file (tensor {name!r} starts at byte {start} "
                f"of the data, expected {expected}: a gap or an overlap)"
            )
        expected = end
    if expected > data_len or (expected < data_len and not gaps):
        raise MinibertError(
            f"{path}: not a valid safetensors file (the tensors' data_offsets end at byte {expected:,} "
            f"of the data, the file holds {data_len:,}: truncated or padded)"
        )
