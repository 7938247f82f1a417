"""What every weights-file reader shares: the stored dtypes, what a header
says of a tensor (:class:`TensorInfo`), the lazy :class:`Checkpoint`
interface, and allocation and reads that fail with one line.

:mod:`minibert.loading.checkpoint` (safetensors, shards) and
:mod:`minibert.loading.torch_pickle` (PyTorch's pickle) both build on this module;
neither imports the other's internals, so the readers form no import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import open_regular

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
