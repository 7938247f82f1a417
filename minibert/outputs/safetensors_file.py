"""The ``.safetensors`` files minibert writes: serialized deterministically,
read back lazily, every header claim checked against the file.

The format (huggingface/safetensors): an 8-byte little-endian header length,
a JSON header padded with spaces to 8 bytes -- each tensor's dtype, shape and
[start, end) data offsets, plus ``__metadata__``, a map of strings -- then
the tensors' little-endian bytes back to back. Outputs and shards hold their
token strings, word strings and settings as JSON strings in the metadata.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.loading.tensorfile import read_safetensors_header
from minibert.outputs.npz import LazyArrays, open_unchanged

#: NumPy dtype -> safetensors dtype name, for what extract writes.
SAFETENSORS_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64", "int64": "I64"}


class Joined:
    """A 1-D array kept as its ``parts`` (1-D arrays of one dtype), joined only
    if asked (``np.asarray``): :func:`safetensors_parts` writes the parts one
    after another, so a chunk's attention maps are never held twice."""

    def __init__(self, parts: list[np.ndarray], dtype):
        self.dtype = np.dtype(dtype)
        self.parts = [np.ascontiguousarray(p, dtype=self.dtype).reshape(-1) for p in parts]
        self.shape = (sum(len(p) for p in self.parts),)
        self.nbytes = self.shape[0] * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        joined = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
        return joined if dtype is None else joined.astype(dtype)


def safetensors_parts(arrays: dict[str, np.ndarray | Joined], metadata: dict[str, str]) -> list:
    """``arrays`` (sorted by name) and ``metadata`` (in its order) as the
    .safetensors buffers to write one after another.

    Serialized here rather than by ``safetensors.numpy.save``, whose header
    lists metadata keys in a random order per process: equal features must
    give equal bytes (and sha256) whichever process or machine wrote them.
    The arrays are not copied into one big bytes object first, and a
    :class:`Joined` array is written part by part, never joined.
    """
    header: dict = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(arrays):
        value = arrays[name]
        parts = value.parts if isinstance(value, Joined) else [np.ascontiguousarray(value)]
        parts = [p.astype(p.dtype.newbyteorder("<"), copy=False) for p in parts]
        nbytes = sum(p.nbytes for p in parts)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[np.dtype(value.dtype).name],
            "shape": list(value.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        blobs.extend(memoryview(p.reshape(-1)).cast("B") for p in parts if p.nbytes)
        offset += nbytes
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return [struct.pack("<Q", len(head)), head, *blobs]


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """:func:`safetensors_parts` joined (for small outputs and tests)."""
    return b"".join(safetensors_parts(arrays, metadata))


#: safetensors dtype name -> NumPy dtype, for what extract writes (the inverse of SAFETENSORS_DTYPES).
READ_DTYPES = {name: np.dtype(dtype).newbyteorder("<") for dtype, name in SAFETENSORS_DTYPES.items()}


class SafetensorsFile(LazyArrays):
    """A .safetensors file's header, checked against the file, and its
    tensors read on demand -- whole, or a range of rows (a slice of the file).

    Read here rather than with ``safetensors.safe_open`` so that every way the
    file can be bad is a check with a message naming it: the header is read
    by :func:`minibert.loading.tensorfile.read_safetensors_header`, the one
    reader of the format (too short, a header length past the end, a header
    that is not a JSON object, a shape that is not a list of counts, data
    offsets not the size the shape needs, overlapping or past the end), with
    only the dtypes minibert writes (not F8, BF16, ...); the metadata must
    be a map of strings.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._identity = None
        with self._file() as (f, self._identity):
            header = read_safetensors_header(f, self.path, dtypes=tuple(READ_DTYPES), gaps=True)
        if not isinstance(header.metadata, dict) or not all(
            isinstance(v, str) for v in header.metadata.values()
        ):
            raise MinibertError(f"{self.path}: header '__metadata__' is not a map of strings")
        self.metadata, self._start = header.metadata, header.start
        self._specs = {
            name: (READ_DTYPES[info.dtype], info.shape, header.offsets[name])
            for name, info in header.tensors.items()
        }

    def _file(self):
        """The file, open for one read (:func:`minibert.outputs.npz.open_unchanged`)."""
        return open_unchanged(self.path, self._identity, "a .safetensors output")

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of tensor ``name``: that slice of the file alone."""
        return self.read(name, start, stop)

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Tensor ``name``, or its rows ``start:stop`` (read from the file, nothing more)."""
        dtype, shape, offset = self._specs[name]
        if start is None:
            first, out_shape = 0, shape
        else:
            first, out_shape = start, (stop - start, *shape[1:])
        row = dtype.itemsize * math.prod(shape[1:]) if shape else dtype.itemsize
        out = np.empty(out_shape, dtype)
        if out.nbytes:
            with self._file() as (f, _):
                f.seek(self._start + offset + first * row)
                if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                    raise MinibertError(f"{self.path}: ended while reading {name!r} (the file changed?)")
        return out
