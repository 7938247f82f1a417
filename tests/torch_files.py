"""Hand-made PyTorch checkpoints for tests: torch's two layouts, written without torch.

The pickles are assembled opcode by opcode (:func:`assemble`), not with
minibert's code nor with torch, so a test can write what torch writes
(tests/data/torch/ holds files torch itself wrote) and also what torch never
would: a forbidden global, a storage offset past the end, a stride of 0, an
opcode that claims gigabytes.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class Global:
    """A GLOBAL opcode: ``module.name``."""

    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """``func(*args)``: the callable, its argument tuple, then REDUCE."""

    func: object
    args: tuple


@dataclass(frozen=True)
class PersId:
    """A persistent id (BINPERSID) whose value is ``value``."""

    value: object


@dataclass(frozen=True)
class Build:
    """``obj`` then BUILD with ``state``: sets attributes of an object already made."""

    obj: object
    state: dict


@dataclass(frozen=True)
class Raw:
    """Opcodes inserted as they are."""

    code: bytes


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _emit(obj) -> bytes:
    if isinstance(obj, Raw):
        return obj.code
    if isinstance(obj, Global):
        return b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    if isinstance(obj, Call):
        return _emit(obj.func) + _emit(tuple(obj.args)) + b"R"
    if isinstance(obj, PersId):
        return _emit(obj.value) + b"Q"
    if isinstance(obj, Build):
        return _emit(obj.obj) + _emit(obj.state) + b"b"
    if obj is None:
        return b"N"
    if obj is True or obj is False:
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if 0 <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw  # LONG1
    if isinstance(obj, str):
        return _str(obj)
    if isinstance(obj, tuple):
        return b"(" + b"".join(_emit(o) for o in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_emit(o) for o in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_emit(k) + _emit(v) for k, v in obj.items()) + b"u"
    raise TypeError(type(obj))


def emit(obj) -> bytes:
    """The opcodes of ``obj`` alone (no PROTO, no STOP), to splice into a :class:`Raw`."""
    return _emit(obj)


def assemble(obj) -> bytes:
    """A protocol-2 pickle of ``obj`` (nodes above, or plain data)."""
    return b"\x80\x02" + _emit(obj) + b"."


def ordered_dict(items: dict) -> Raw:
    """``collections.OrderedDict()`` then SETITEMS, as torch's state dicts are pickled."""
    return Raw(_emit(Call(Global("collections", "OrderedDict"), ())) + b"(" + b"".join(
        _emit(k) + _emit(v) for k, v in items.items()) + b"u")  # fmt: skip


STORAGE = {
    "float32": "FloatStorage",
    "float16": "HalfStorage",
    "float64": "DoubleStorage",
    "int64": "LongStorage",
}


def storage_id(key: str, dtype: str, numel: int, legacy: bool = False) -> PersId:
    fields = ("storage", Global("torch", STORAGE[dtype]), key, "cpu", numel)
    return PersId(fields + ((None,) if legacy else ()))


def tensor(storage: PersId, offset: int, shape: tuple, stride: tuple | None = None) -> Call:
    """``torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())``."""
    if stride is None:
        stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    hooks = Call(Global("collections", "OrderedDict"), ())
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), (storage, offset, shape, stride, False, hooks))


def state_pickle(arrays: dict[str, np.ndarray], legacy: bool = False) -> tuple[bytes, dict[str, np.ndarray]]:
    """A state dict of contiguous arrays, one storage each: (pickle, key -> storage array)."""
    items, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        key = str(i)
        storages[key] = np.ascontiguousarray(a)
        items[name] = tensor(storage_id(key, a.dtype.name, a.size, legacy), 0, tuple(a.shape))
    return assemble(ordered_dict(items)), storages


def write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes | np.ndarray], archive: str = "archive",
              extra: dict[str, bytes] | None = None) -> None:  # fmt: skip
    """torch's zip layout: ``archive/data.pkl``, ``archive/data/<key>``, ``archive/byteorder``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"{archive}/data/{key}", data.tobytes() if isinstance(data, np.ndarray) else data)
        z.writestr(f"{archive}/version", b"3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def write_legacy(path: Path, main_pickle: bytes, storages: dict[str, np.ndarray | tuple[int, bytes]]) -> None:
    """torch's legacy layout: magic, protocol, sys_info, the object, the keys, then per key
    an int64 element count and the bytes (a ``(count, bytes)`` pair writes a count that lies)."""
    out = io.BytesIO()
    for obj in (MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):  # fmt: skip
        pickle.dump(obj, out, protocol=2)
    out.write(main_pickle)
    keys = sorted(storages)
    pickle.dump(keys, out, protocol=2)
    for key in keys:
        data = storages[key]
        count, raw = (data.size, data.tobytes()) if isinstance(data, np.ndarray) else data
        out.write(struct.pack("<q", count) + raw)
    path.write_bytes(out.getvalue())


def write_state_dict(path: Path, arrays: dict[str, np.ndarray], legacy: bool = False) -> None:
    """A well-formed checkpoint of ``arrays`` in either layout."""
    data_pkl, storages = state_pickle(arrays, legacy)
    if legacy:
        write_legacy(path, data_pkl, storages)
    else:
        write_zip(path, data_pkl, storages)
