"""Reading the small files minibert trusts nothing in: JSON, and file digests.

Every JSON file the project reads (config.json, tokenizer_config.json, the
sentence-transformers files, manifests, inputs) goes through
:func:`parse_json` / :func:`read_json`, so every way such a file can be bad
ends in one :class:`MinibertError` that names the file: missing, unreadable
(permission denied, a directory, a symlink loop), not UTF-8, not JSON,
nested too deep, a number too large to hold (an integer of more than 4300
digits, a float beyond float64, NaN or Infinity, which JSON does not allow),
a lone surrogate, or the wrong type at the top.

Every file minibert reads is opened with :func:`open_regular`: a FIFO, a
device (``/dev/zero``), a socket or a directory -- or a symlink to one -- is
refused before a byte is read, so none can block or feed minibert without
end; and :func:`read_text` reads at most a limit (:data:`MAX_CONFIG` for
configuration files, :data:`MAX_FILE` for the rest), so a huge or sparse
file is one line naming its size, never a ``MemoryError``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from pathlib import Path

from .errors import MinibertError


def os_reason(e: OSError) -> str:
    """A short reason for an OSError: "permission denied", "no such file", ..."""
    reasons = {
        errno.ENOENT: "no such file",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a parent is not a directory",
        errno.ELOOP: "too many levels of symbolic links",
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "read-only file system",
        errno.EFBIG: "file too large",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENAMETOOLONG: "file name too long",
    }
    return reasons.get(e.errno, e.strerror or str(e))


#: The most minibert reads of a configuration file (config.json,
#: tokenizer_config.json, the sentence-transformers files): real ones are a few KB.
MAX_CONFIG = 1 << 20
#: The most minibert reads of any other file it reads whole (tokenizer.json,
#: vocab.txt, a checkpoint index, a manifest): the largest real tokenizers are ~20 MB.
MAX_FILE = 64 << 20


def not_regular(mode: int) -> str:
    """What a file that is not a regular file is: "is a directory", "a FIFO, not a regular file", ..."""
    if stat.S_ISDIR(mode):
        return "is a directory"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def open_regular(path: str | os.PathLike, what: str = "file"):
    """``path`` open for binary reading, when it is a regular file (a symlink
    is followed); anything else is one MinibertError f"{path}: cannot read
    {what} ({reason})". Checked with ``stat`` before opening, so a device is
    never opened, and again on the opened file (``O_NONBLOCK``, so a FIFO put
    there meanwhile cannot block the open; a regular file ignores the flag)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise MinibertError(f"{path}: cannot read {what} ({not_regular(mode)})")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise MinibertError(f"{path}: cannot read {what} ({os_reason(e)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise MinibertError(f"{path}: cannot read {what} ({not_regular(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def too_large(path: str | os.PathLike, what: str, size: int, limit: int) -> MinibertError:
    return MinibertError(f"{path}: {size:,} bytes; minibert reads at most {limit:,} of a {what}")


def stat_file(path: Path, missing: str, unreadable: str = "cannot read") -> os.stat_result:
    """``path``'s stat, or one MinibertError: f"{path}: {missing}" when it does
    not exist, f"{path}: {unreadable} ({reason})" for any other OSError."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise MinibertError(f"{path}: {missing}") from None
    except OSError as e:
        raise MinibertError(f"{path}: {unreadable} ({os_reason(e)})") from None


def _check_strings(obj, source: str) -> None:
    """Reject lone surrogates (``"\\ud800"``), which no UTF-8 text can hold,
    naming where the string is (``"text_pair"``, ``[3]``)."""
    stack = [(obj, "")]
    while stack:
        o, where = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                at = f" in {where}" if where else ""
                shown = f"{o[:20]!r}..."
                raise MinibertError(f"{source}: holds a lone surrogate{at} ({shown}), not text") from None
        elif isinstance(o, dict):
            for k, v in o.items():
                key = json.dumps(k, ensure_ascii=True)
                stack.append((k, f"{where} key {key}".strip()))
                stack.append((v, f"{where}[{key}]" if where else key))
        elif isinstance(o, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(o))


def parse_json(text: str, source: str, expect: type | tuple[type, ...] | None = None):
    """Parse JSON ``text``; every failure is one MinibertError naming ``source``
    (e.g. ``"corpus.jsonl: line 3"``). ``expect``: the top level's type."""

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise MinibertError(f"{source}: number {literal[:30]} is out of range")
        return value

    def constant(name: str):
        raise MinibertError(f"{source}: {name} is not a JSON number")

    try:
        obj = json.loads(text, parse_float=finite, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise MinibertError(
            f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise MinibertError(f"{source}: not usable JSON ({e})") from None
    except RecursionError:
        raise MinibertError(f"{source}: JSON nested too deeply") from None
    _check_strings(obj, source)
    if expect is not None and not isinstance(obj, expect):
        names = " or ".join(
            {dict: "a JSON object", list: "a JSON list"}.get(t, t.__name__)
            for t in (expect if isinstance(expect, tuple) else (expect,))
        )
        raise MinibertError(f"{source}: expected {names}, got {type(obj).__name__}")
    return obj


def read_text(path: str | os.PathLike, what: str = "file", limit: int = MAX_FILE) -> str:
    """A regular UTF-8 file's text, of at most ``limit`` bytes; every failure
    is one MinibertError naming the path."""
    path = Path(path)
    with open_regular(path, what) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise too_large(path, what, size, limit)
            raw = f.read(limit + 1)  # never more: the file may grow while it is read
        except OSError as e:
            raise MinibertError(f"{path}: cannot read {what} ({os_reason(e)})") from None
    if len(raw) > limit:
        raise too_large(path, what, len(raw), limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinibertError(f"{path}: not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


def read_json(
    path: str | os.PathLike,
    expect: type | tuple[type, ...] | None = None,
    what: str = "file",
    limit: int = MAX_FILE,
):
    """Read and parse a JSON file of at most ``limit`` bytes (see :func:`parse_json`)."""
    return parse_json(read_text(path, what, limit), str(path), expect)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a regular file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_sha256(f, parts) -> tuple[int, str]:
    """Write ``parts`` (bytes or buffers) to the open binary file ``f``; return
    how many bytes that was and their sha256 -- what :func:`sha256_file` of
    the finished file gives, without reading it again."""
    h, size = hashlib.sha256(), 0
    for part in parts:
        f.write(part)
        h.update(part)
        size += len(part) if isinstance(part, bytes) else part.nbytes
    return size, h.hexdigest()
