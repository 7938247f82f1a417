"""pytorch_model.bin -> tensors, with no torch and no code from the file run.

A PyTorch checkpoint is a pickle: a program for Python's pickle machine,
which may call any function the file names (``os.system`` as easily as
``torch._utils._rebuild_tensor_v2``). minibert never runs one with pickle's
default ``find_class``. :class:`RestrictedUnpickler` resolves only the globals
a state dict of tensors needs (:data:`ALLOWED`: the tensor rebuild functions,
the storage types, ``collections.OrderedDict``), each mapped to a stand-in
defined here that records what the tensor is (storage, offset, shape,
strides) and builds nothing; any other global is refused, naming it, before
anything is imported. The tensors' bytes are then read as NumPy arrays, one
tensor at a time, only when asked for.

Nor does the file get to choose a method that minibert or the unpickler
calls. BUILD is the one opcode that sets attributes, and nothing here
accepts it: the stand-ins and the allowed functions are :class:`_Inert`
(BUILD refused), the OrderedDict is a :class:`StateDict` (BUILD accepted
only as torch writes it, ``{"_metadata": ...}``, and discarded), and the
builtin containers have no attributes to set. So SETITEM(S), APPEND(S),
ADDITEMS and BUILD, which look up ``__setitem__``, ``extend``, ``append``,
``add`` or ``__setstate__`` on their target, find their class's method or
none; and :func:`state_dict` reads the result with exact type checks and
``dict.items``, never a method of the object. Before the C unpickler runs,
:func:`_scan` walks the pickle's opcodes without building anything and
refuses the protocol-5 buffer opcodes (a state dict of tensors holds no
bytearray; CPython 3.11 prints a SystemError when a BYTEARRAY8 too large to
allocate is freed).

Two layouts (torch/serialization.py, ``_save`` and ``_legacy_save``):

* zip (``torch.save`` since torch 1.6): the member ``<archive>/data.pkl`` is
  the pickle, ``<archive>/data/<key>`` the bytes of storage ``key``, and
  ``<archive>/byteorder`` says "little" or "big" (little when absent);
* legacy (before 1.6, or ``_use_new_zipfile_serialization=False``): five
  pickles back to back -- magic number, protocol version 1001, sys_info, the
  object, the sorted list of storage keys -- then, for each key in that
  order, its element count (int64) and its bytes, both little-endian.

In both, the pickle names a storage by a persistent id ``("storage",
<storage type>, key, location, numel[, view_metadata])``, and a tensor is
``_rebuild_tensor_v2(storage, offset, shape, strides, requires_grad, hooks)``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.loading.tensorfile import (
    DTYPES,
    Checkpoint,
    TensorInfo,
    allocate,
    itemsize,
    open_for_read,
    read_exact,
)

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
#: The largest data.pkl read (bert-large's is ~50 KB: names, shapes, strides).
MAX_PICKLE = 64 << 20

#: torch's storage types -> the stored dtype (:data:`minibert.loading.tensorfile.DTYPES`).
STORAGE_TYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}  # fmt: skip

#: What a malformed pickle makes the C unpickler raise (a truncated stream, an
#: unknown opcode, a stand-in called with the wrong arguments, a missing memo
#: entry, a number too large, ...): each means "not a readable checkpoint".
UNPICKLING_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
    OverflowError, MemoryError, RecursionError,
)  # fmt: skip
#: What reading a zip member can raise: a bad local header, corrupt deflate
#: data, an unsupported compression method, an encrypted member.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError)

STORAGE_KEY = re.compile(r"[\w.-]{1,64}")


class _Inert:
    """A stand-in object: slots only, and a pickle BUILD on it is refused, so
    nothing in the file can change it after it was checked."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"the file sets the state of a {type(self).__name__}")


class _Function(_Inert):
    """An allowed global that is a function: the stand-in, called as it is, but an object
    no BUILD can reach into (a bare function's ``__defaults__`` could be set by the file)."""

    __slots__ = ("func",)

    def __init__(self, func):
        self.func = func

    def __call__(self, *args):
        return self.func(*args)


class StateDict(OrderedDict):
    """``collections.OrderedDict`` as a checkpoint's pickle makes it. torch pickles a
    state dict's ``_metadata`` attribute as a BUILD: that is accepted and dropped;
    any other state is refused, so no attribute of the file's choosing (``items``,
    ``append``, ``__setstate__``) can shadow a method."""

    def __setstate__(self, state):
        if not (type(state) is dict and list(dict.keys(state)) == ["_metadata"]):
            raise pickle.UnpicklingError("the file sets attributes of an OrderedDict")


class StorageType(_Inert):
    """Stands in for ``torch.FloatStorage`` etc.: only its dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str):
        self.dtype = dtype


class Storage(_Inert):
    """One storage the pickle names: ``numel`` elements of ``dtype``, stored
    under ``key``; ``base``: where a legacy storage view starts in its root."""

    __slots__ = ("key", "dtype", "numel", "base")

    def __init__(self, key: str, dtype: str, numel: int, base: int = 0):
        self.key, self.dtype, self.numel, self.base = key, dtype, numel, base


class TensorRef(_Inert):
    """A tensor as the pickle describes it: elements ``offset + sum(i_k * stride_k)`` of ``storage``."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _natural(value) -> bool:
    return type(value) is int and value >= 0


def _brief(value) -> str:
    """``value`` for an error message, without calling anything of a built object (a
    str of a nested or self-referencing structure may be huge or recurse forever)."""
    if type(value) in (str, bytes):
        return repr(value[:60])
    if type(value) is int and abs(value) < 10**40:
        return str(value)
    return f"<{type(value).__name__}>"


def _sizes(value, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or not all(_natural(v) for v in value):
        raise pickle.UnpicklingError(f"a tensor's {what} is not a tuple of sizes: {_brief(value)}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride) -> TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor``: records, builds nothing."""
    if type(storage) is not Storage:
        raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if not _natural(storage_offset):
        raise pickle.UnpicklingError(f"a tensor's storage offset is {_brief(storage_offset)}")
    size, stride = _sizes(size, "shape"), _sizes(stride, "strides")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"a tensor has shape {size} but strides {stride}")
    return TensorRef(storage, storage_offset, size, stride)


def _no_hooks(hooks) -> None:
    if hooks:  # hooks are functions to run: a weights file has none
        raise pickle.UnpicklingError("a tensor carries backward hooks")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> TensorRef:  # fmt: skip
    """Stands in for ``torch._utils._rebuild_tensor_v2`` (every torch since 1.0)."""
    _no_hooks(backward_hooks)
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks) -> TensorRef:
    """Stands in for ``torch._utils._rebuild_parameter`` (an ``nn.Parameter``): the tensor itself."""
    if type(data) is not TensorRef:
        raise pickle.UnpicklingError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    _no_hooks(backward_hooks)
    return data


#: Every global a checkpoint may name, and what it resolves to. Nothing else.
ALLOWED = {
    ("collections", "OrderedDict"): _Function(StateDict),
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    **{("torch", name): StorageType(dtype) for name, dtype in STORAGE_TYPES.items()},
}


def _text(value):
    """Python 2 era pickles hold bytes where torch now writes str."""
    return value.decode("ascii", "replace") if type(value) is bytes else value


class RestrictedUnpickler(pickle.Unpickler):
    """pickle's C unpickler with ``find_class`` limited to :data:`ALLOWED` and
    persistent ids read as storages (``storages``: key -> :class:`Storage`)."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        raise MinibertError(
            f"{self.source}: refused the global {f'{module}.{name}'[:100]!r}: a weights file needs only "
            "tensors, storages and an OrderedDict (nothing from the file was run; it may be malicious)"
        )

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) in (5, 6) and _text(pid[0]) == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {_brief(pid)}")
        _, storage_type, key, _location, numel, *view = pid
        key = _text(key)
        if type(storage_type) is not StorageType:
            raise pickle.UnpicklingError(f"storage type {_brief(storage_type)} is not a torch storage type")
        if not (type(key) is str and STORAGE_KEY.fullmatch(key) and key not in (".", "..")):
            raise pickle.UnpicklingError(f"storage key {_brief(key)} is not a storage key")
        if not _natural(numel):
            raise pickle.UnpicklingError(f"storage {key} has {_brief(numel)} elements")
        root = self.storages.setdefault(key, Storage(key, storage_type.dtype, numel))
        if (root.dtype, root.numel) != (storage_type.dtype, numel):
            raise pickle.UnpicklingError(f"storage {key} is named with two dtypes or sizes")
        if not view or view[0] is None:
            return root
        view = view[0]
        if not (type(view) is tuple and len(view) == 3 and _natural(view[1]) and _natural(view[2])):
            raise pickle.UnpicklingError(f"storage {key} has view metadata {_brief(view)}")
        _, base, size = view
        if base + size > numel:
            raise pickle.UnpicklingError(f"a view of storage {key} ends at {base + size}, past its {numel}")
        return Storage(key, storage_type.dtype, size, base)


#: Protocol 5's out-of-band buffers and bytearrays: never in a state dict of tensors.
REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}


def _scan(file) -> None:
    """Walk one pickle's opcodes (:func:`pickletools.genops`: arguments decoded, nothing
    built, an argument longer than what is left is an error before any allocation) and
    refuse :data:`REFUSED_OPCODES`; ``file`` is left where it was."""
    start = file.tell()
    for op, _, _ in pickletools.genops(file):
        if op.name in REFUSED_OPCODES:
            raise pickle.UnpicklingError(f"opcode {op.name}, which a state dict of tensors never holds")
    file.seek(start)


def unpickle(file, source: str) -> tuple[object, dict[str, Storage]]:
    """One pickle from ``file`` (scanned first, :func:`_scan`) with
    :class:`RestrictedUnpickler`: (object, storages)."""
    unpickler = RestrictedUnpickler(file, source)
    try:
        _scan(file)
        return unpickler.load(), unpickler.storages
    except UNPICKLING_ERRORS as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise MinibertError(f"{source}: not a readable PyTorch checkpoint ({reason})") from None


def state_dict(obj, storages: dict[str, Storage], source: str) -> dict[str, TensorRef]:
    """The unpickled object -> name -> tensor, each tensor inside its storage.

    A tensor may not reach past its storage's last element, nor have more
    elements than its storage holds (strides of 0 could otherwise make a
    one-element storage claim a table of any size).
    """
    if type(obj) not in (dict, StateDict):
        raise MinibertError(f"{source}: holds a {type(obj).__name__}, not a state dict (name -> tensor)")
    refs = {}
    for name, ref in dict.items(obj):  # not obj.items(): nothing of the file's is called
        if type(name) is not str:
            raise MinibertError(f"{source}: a state dict key is {_brief(name)}, not a tensor name")
        if type(ref) is not TensorRef:
            raise MinibertError(
                f"{source}: entry {name[:80]!r} is a {type(ref).__name__}, not a tensor "
                "(minibert reads a state dict of tensors)"
            )
        numel, storage = math.prod(ref.shape), ref.storage
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
        if numel and (last >= storage.numel or numel > storage.numel - ref.offset):
            raise MinibertError(
                f"{source}: tensor {name!r} of shape {ref.shape} at offset {ref.offset} does not fit "
                f"its storage {storage.key} of {storage.numel:,} elements"
            )
        refs[name] = ref
    return refs


def _strided(flat: np.ndarray, ref: TensorRef) -> np.ndarray:
    """Elements ``[offset, last]`` of a storage -> the tensor, C-contiguous, native byte order."""
    strides = tuple(s * flat.itemsize for s in ref.stride)
    t = np.lib.stride_tricks.as_strided(flat, ref.shape, strides, writeable=False)
    return np.ascontiguousarray(t).astype(t.dtype.newbyteorder("="), copy=False)


def _span(ref: TensorRef) -> int:
    """How many storage elements the tensor's range covers (0 for an empty tensor)."""
    if not math.prod(ref.shape):
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))


class TorchZip(Checkpoint):
    """``torch.save``'s zip format (torch >= 1.6)."""

    format = "PyTorch zip (torch.save), read without torch"

    def __init__(self, path: Path):
        self._file = open_for_read(path)
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            self._file.close()
            raise MinibertError(f"{path}: not a valid zip archive ({e})") from None
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> None:
        names = self._zip.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.split("/")[1] == "data.pkl"]
        if len(pickles) != 1:
            raise MinibertError(
                f"{path}: a zip archive but not a PyTorch checkpoint ({len(pickles)} <archive>/data.pkl)"
            )
        self._prefix = pickles[0][: -len("data.pkl")]
        order = (
            self._member(f"{self._prefix}byteorder", 16) if f"{self._prefix}byteorder" in names else b"little"
        )
        if order not in (b"little", b"big"):
            raise MinibertError(f"{path}: byteorder is {order[:16]!r}, expected 'little' or 'big'")
        self._order = "<" if order == b"little" else ">"
        info = self._zip.getinfo(pickles[0])
        if info.file_size > MAX_PICKLE:
            raise MinibertError(
                f"{path}: data.pkl claims {info.file_size:,} bytes, more than a state dict needs"
            )
        obj, storages = unpickle(io.BytesIO(self._member(pickles[0], MAX_PICKLE)), str(path))
        for key, storage in storages.items():
            member = f"{self._prefix}data/{key}"
            if member not in names:
                raise MinibertError(f"{path}: storage {key} has no member {member} in the archive")
            need, has = storage.numel * itemsize(storage.dtype), self._zip.getinfo(member).file_size
            if has < need:
                raise MinibertError(
                    f"{path}: storage {key} claims {storage.numel:,} elements of {storage.dtype} "
                    f"({need:,} bytes), its archive member holds {has:,} bytes"
                )
        self._refs = state_dict(obj, storages, str(path))
        tensors = {name: TensorInfo(ref.storage.dtype, ref.shape, path) for name, ref in self._refs.items()}
        super().__init__(path, tensors, (path,))

    def _member(self, name: str, limit: int) -> bytes:
        """At most ``limit`` bytes of a small member (never more: a zip bomb stays packed)."""
        try:
            with self._zip.open(name) as fh:
                return fh.read(limit)
        except ZIP_ERRORS as e:
            raise MinibertError(f"{self._file.name}: cannot read {name} ({e})") from None

    def read_stored(self, name: str) -> np.ndarray:
        ref = self._refs[name]
        storage = ref.storage
        dtype = np.dtype(DTYPES[storage.dtype][0]).newbyteorder(self._order)
        flat = allocate((_span(ref),), dtype, self.path, f"tensor {name!r}")
        member = f"{self._prefix}data/{storage.key}"
        try:
            with self._zip.open(member) as fh:
                fh.seek((storage.base + ref.offset) * flat.itemsize)
                read_exact(fh, flat, self.path, f"storage {storage.key} of tensor {name!r}")
        except ZIP_ERRORS as e:
            raise MinibertError(f"{self.path}: cannot read {member} ({e})") from None
        return _strided(flat, ref)

    def close(self) -> None:
        self._zip.close()
        self._file.close()


class _Bounded:
    """The legacy file as the C unpickler reads it: no ``peek``, so it never
    reads past a pickle's end, and no read past the end of the file, so an
    opcode that claims gigabytes is refused before anything is allocated."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def _check(self, n: int) -> None:
        left = self.size - self.f.tell()
        if n > left:
            raise pickle.UnpicklingError(f"the pickle claims {n:,} bytes, {left:,} are left in the file")

    def read(self, n: int = -1) -> bytes:
        if n is not None and n >= 0:
            self._check(n)
        return self.f.read(n)

    def readinto(self, b) -> int:
        self._check(len(b))
        return self.f.readinto(b)

    def readline(self) -> bytes:
        return self.f.readline()

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int) -> int:
        return self.f.seek(pos)


class TorchLegacy(Checkpoint):
    """``torch.save``'s legacy format (before torch 1.6, or ``_use_new_zipfile_serialization=False``)."""

    format = "PyTorch legacy (torch.save before 1.6), read without torch"

    def __init__(self, path: Path):
        source = str(path)
        with open_for_read(path) as f:
            size = os.fstat(f.fileno()).st_size
            reader = _Bounded(f, size)
            magic, _ = unpickle(reader, source)
            if magic != MAGIC_NUMBER:
                raise MinibertError(f"{path}: a pickle but not a PyTorch checkpoint (no torch magic number)")
            protocol, _ = unpickle(reader, source)
            if protocol != PROTOCOL_VERSION:
                raise MinibertError(f"{path}: PyTorch legacy protocol {_brief(protocol)}, expected 1001")
            sys_info, _ = unpickle(reader, source)
            if type(sys_info) is not dict:
                raise MinibertError(f"{path}: sys_info is a {type(sys_info).__name__}, expected a dict")
            obj, storages = unpickle(reader, source)
            keys, _ = unpickle(reader, source)
            if type(keys) is not list or not all(type(k) is str for k in map(_text, keys)):
                raise MinibertError(f"{path}: the storage key list is not a list of keys")
            self._data: dict[str, int] = {}
            pos = f.tell()
            for key in map(_text, keys):
                if key not in storages or key in self._data:
                    raise MinibertError(
                        f"{path}: storage key {key[:40]!r} is not one the tensors use, or repeated"
                    )
                f.seek(pos)
                head = f.read(8)
                numel = int.from_bytes(head, "little") if len(head) == 8 else -1
                storage = storages[key]
                if numel != storage.numel:
                    raise MinibertError(f"{path}: storage {key} holds {numel:,} elements, the pickle says "
                                        f"{storage.numel:,}")  # fmt: skip
                self._data[key] = pos + 8
                pos += 8 + numel * itemsize(storage.dtype)
                if pos > size:
                    raise MinibertError(
                        f"{path}: storage {key} claims {numel:,} elements of {storage.dtype}, "
                        f"past the end of the file ({size:,} bytes)"
                    )
            if missing := sorted(set(storages) - set(self._data)):
                raise MinibertError(f"{path}: the file has no data for storage {missing[0]}")
        self._refs = state_dict(obj, storages, source)
        tensors = {name: TensorInfo(ref.storage.dtype, ref.shape, path) for name, ref in self._refs.items()}
        super().__init__(path, tensors, (path,))

    def read_stored(self, name: str) -> np.ndarray:
        ref = self._refs[name]
        storage = ref.storage
        # always little-endian (torch's _write_file)
        flat = allocate((_span(ref),), DTYPES[storage.dtype][0], self.path, f"tensor {name!r}")
        with open_for_read(self.path) as f:
            f.seek(self._data[storage.key] + (storage.base + ref.offset) * flat.itemsize)
            read_exact(f, flat, self.path, f"storage {storage.key} of tensor {name!r}")
        return _strided(flat, ref)


def open_torch(path: str | os.PathLike) -> Checkpoint:
    """A ``pytorch_model.bin``: zip or legacy, told apart by its first bytes."""
    path = Path(path)
    with open_for_read(path) as f:
        head = f.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return TorchZip(path)
    if head[:1] == b"\x80":  # pickle's PROTO opcode: the legacy format
        return TorchLegacy(path)
    raise MinibertError(
        f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; "
        "a TorchScript or tar archive is not read)"
    )
