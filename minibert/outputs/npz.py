"""Reading an ``.npz`` archive minibert did not necessarily write: lazily, and
never trusting a size before it has been checked.

``np.load`` of an ``.npz`` hands back members one by one, but a caller that
reads them all (``{k: z[k] for k in z.files}``) decompresses whatever the
archive holds: a member of a few kilobytes can declare gigabytes (a zip
bomb), a truncated archive fails deep inside zipfile, and a ``.npy`` named
``.npz`` is not an archive at all. :class:`NpzArrays` opens the archive,
reads only each member's ``.npy`` header (its dtype and shape, a few hundred
bytes), and checks it before any data is read:

- the member's uncompressed size, as the zip directory records it, is the
  header plus exactly the bytes its shape and dtype need (a member cannot
  read past what it declares: zipfile stops there and checks the CRC);
- a compressed member expands at most :data:`MAX_RATIO` times (plain
  ``np.savez``, which minibert writes, stores members uncompressed; honest
  float data compresses a few times; a zip bomb ~1000 times);
- no member holds Python objects (no pickle, ever).

Callers then check each member's shape against the layout they expect (the
rows the offsets imply, for example) with :meth:`NpzArrays.header`, and only
then read it; a member is read once and kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import open_regular, os_reason

#: A compressed member may expand at most this many times (above FLOOR bytes).
MAX_RATIO = 200
FLOOR = 16 << 20

#: The errors reading a damaged member can raise: a bad CRC or header
#: (BadZipFile), an early end (EOFError), bad compressed data (zlib.error), a
#: bad .npy header (ValueError), the file itself (OSError), an encrypted member
#: (RuntimeError) or an unknown compression method (NotImplementedError).
_DAMAGE = (zipfile.BadZipFile, EOFError, zlib.error, ValueError, OSError, RuntimeError, NotImplementedError)


#: .npy format version -> the reader of its header: (shape, fortran_order, dtype).
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class LazyArrays(Mapping):
    """The arrays of a file, each read only when asked for: ``header(name)``
    gives (dtype, shape) from what was checked on opening, ``arrays[name]``
    reads the data (``read(name)``, which each kind of file defines).
    Subclasses fill ``_specs``: name -> (dtype, shape, ...)."""

    _specs: dict[str, tuple]

    def header(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """(dtype, shape) of array ``name``, without reading it."""
        return self._specs[name][:2]

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``name`` (0 <= start <= stop <= rows);
        kinds of file that can read them alone do so."""
        return self[name][start:stop]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._specs:
            raise KeyError(name)
        return self.read(name)

    def __contains__(self, name) -> bool:
        return name in self._specs

    def __iter__(self):
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def close(self) -> None:
        """Nothing to close: each read opens and closes the file."""


class NpzArrays(LazyArrays):
    """The arrays of an ``.npz`` file, each read only when asked for.

    ``header(name)`` gives (dtype, shape) without reading the data. Every
    problem is one :class:`MinibertError` naming the file (and the member).
    ``what`` names the kind of file in messages ("an .npz output").
    """

    def __init__(self, path: str | Path, what: str = "an .npz file"):
        self.path = Path(path)
        self.what = what
        self._cache: dict[str, np.ndarray] = {}
        #: name -> (dtype, shape, where its data starts in the member, Fortran order)
        self._specs: dict[str, tuple[np.dtype, tuple[int, ...], int, bool]] = {}
        self._identity = None
        with self._archive() as z:
            for info in z.infolist():
                self._check_member(z, info)

    @contextlib.contextmanager
    def _archive(self):
        """The archive, open for one read (:func:`open_unchanged`)."""
        with open_unchanged(self.path, self._identity, self.what) as (f, self._identity):
            try:
                z = zipfile.ZipFile(f)
            except zipfile.BadZipFile:
                raise MinibertError(f"{self.path}: not {self.what} ({self._not_zip()})") from None
            except OSError as e:
                raise MinibertError(f"{self.path}: cannot read {self.what} ({os_reason(e)})") from None
            with z:
                yield z

    def _not_zip(self) -> str:
        with open(self.path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            return "a single .npy array, not an .npz archive"
        return "not a zip archive, or a truncated one"

    def _check_member(self, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        name = info.filename.removesuffix(".npy")
        where = f"{self.path}: member {info.filename!r}"
        if not info.filename.endswith(".npy"):
            raise MinibertError(f"{where} is not an .npy array")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
            MAX_RATIO * info.compress_size, FLOOR
        ):
            raise MinibertError(
                f"{where} expands {info.compress_size:,} bytes to {info.file_size:,} "
                f"(more than {MAX_RATIO} times: a zip bomb?); not read"
            )
        try:
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = _HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} is not supported")
                shape, fortran, dtype = read_header(f)
                header_bytes = f.tell()
        except _DAMAGE as e:
            raise MinibertError(f"{where} is damaged ({_first_line(e)})") from None
        if dtype.hasobject:
            raise MinibertError(f"{where} holds Python objects (pickle), which minibert never loads")
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != header_bytes + nbytes:
            raise MinibertError(
                f"{where} declares {dtype} {shape} ({nbytes:,} bytes) but holds "
                f"{info.file_size - header_bytes:,} bytes"
            )
        self._specs[name] = (dtype, tuple(shape), header_bytes, fortran)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of member ``name``, read alone: the member is
        never held whole (zipfile skips what comes before ``start``: it
        seeks in a stored member, reads and drops a compressed one's bytes),
        unless it is in memory already or in Fortran order (then read whole).
        Where the rows start comes from the header checked on opening (the
        archive cannot have changed since: :func:`open_unchanged`)."""
        dtype, shape, header_bytes, fortran = self._specs[name]
        if name in self._cache or len(shape) == 0 or (fortran and len(shape) > 1):
            return self[name][start:stop]
        row = dtype.itemsize * math.prod(shape[1:])
        out = np.empty((stop - start, *shape[1:]), dtype)
        try:
            with self._archive() as z, z.open(f"{name}.npy") as f:
                f.seek(header_bytes + start * row)
                got = f.readinto(memoryview(out.reshape(-1)).cast("B")) if out.nbytes else 0
        except _DAMAGE as e:
            raise MinibertError(f"{self.path}: member '{name}.npy' is damaged ({_first_line(e)})") from None
        if got != out.nbytes:
            raise MinibertError(f"{self.path}: member '{name}.npy' ended early (the file changed?)")
        return out

    def read(self, name: str) -> np.ndarray:
        if name not in self._cache:
            try:
                with self._archive() as z, z.open(f"{name}.npy") as f:
                    self._cache[name] = np.lib.format.read_array(f, allow_pickle=False)
            except _DAMAGE as e:
                raise MinibertError(
                    f"{self.path}: member '{name}.npy' is damaged ({_first_line(e)})"
                ) from None
        return self._cache[name]


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: device, inode, size, mtime."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def open_unchanged(path: Path, identity: tuple | None, what: str):
    """``path`` open for one read, with its :func:`file_identity`: (file,
    identity). A reader that checked a file's header once opens it this way
    for every later read, so nothing stays open between reads (nothing
    leaks), and a file replaced meanwhile is an error -- never another
    file's bytes read under the checked header. ``identity`` None: the
    first opening. Only a regular file is opened (:func:`minibert.files.open_regular`)."""
    with open_regular(path, what) as f:
        now = file_identity(os.fstat(f.fileno()))
        if identity not in (None, now):
            raise MinibertError(f"{path}: changed since it was opened")
        yield f, now


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
