"""Reading the small files minibert trusts nothing in: JSON, and file digests.

Every JSON file the project reads (config.json, tokenizer_config.json, the
sentence-transformers files, manifests, inputs) goes through
:func:`parse_json` / :func:`read_json`, so every way such a file can be bad
ends in one :class:`MinibertError` that names the file: missing, unreadable
(permission denied, a directory, a symlink loop), not UTF-8, not JSON,
nested too deep, a number too large to hold (an integer of more than 4300
digits, a float beyond float64, NaN or Infinity, which JSON does not allow),
a lone surrogate, or the wrong type at the top.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 file's text; every failure is one MinibertError naming the path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MinibertError(f"{path}: cannot read {what} ({os_reason(e)})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinibertError(f"{path}: not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


def read_json(path: str | os.PathLike, expect: type | tuple[type, ...] | None = None, what: str = "file"):
    """Read and parse a JSON file (see :func:`parse_json`)."""
    return parse_json(read_text(path, what), str(path), expect)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
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
