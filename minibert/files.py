"""Where minibert meets the file system: reading the small files it trusts nothing in (JSON,
file digests), and the one check and the one atomic write of every output.

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
import tempfile
from pathlib import Path

from minibert.errors import MinibertError


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


#: What a file that is not a regular file is, for messages.
KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISREG, "a regular file"),
)


def kind(mode: int) -> str:
    """What the file of ``mode`` is: "a directory", "a FIFO", ..., "a special file"."""
    return next((name for test, name in KINDS if test(mode)), "a special file")


def not_regular(mode: int) -> str:
    """What a file that is not a regular file is: "is a directory", "a FIFO, not a regular file", ..."""
    return "is a directory" if stat.S_ISDIR(mode) else f"{kind(mode)}, not a regular file"


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


def numbered_lines(f, name: str, limit: int | None = None):
    """The lines of binary file ``f`` (line breaks kept), numbered from 1 and
    decoded as UTF-8, read lazily: the one reader of line-numbered text (a
    corpus, a .jsonl output). A line that is not UTF-8, one of more than
    ``limit`` bytes (None: no limit; it is read whole before it is refused)
    or a failed read is one MinibertError naming ``name`` and the line."""
    lineno = 0
    while True:
        try:
            raw = f.readline() if limit is None else f.readline(limit + 1)
        except OSError as e:  # a read error mid-file (an I/O error, a directory opened on some systems)
            raise MinibertError(f"{name}: cannot read ({os_reason(e)})") from None
        if not raw:
            return
        lineno += 1
        if limit is not None and len(raw) > limit:
            raise MinibertError(
                f"{name}: line {lineno} is longer than {limit:,} bytes, the most minibert reads as one line"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MinibertError(
                f"{name}: line {lineno} is not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
            ) from None
        yield lineno, line


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


#: Where a source is stdin: ``extract - -o OUT`` (compared by the file stdin is, ``os.fstat(0)``).
STDIN = "-"

#: Bytes the temporary file's name adds to the output's (``.NAME.xxxxxxxx.tmp``;
#: convert's ``.NAME.tmp-PID``): a name whose temporary file could not be made
#: is refused before any work, not after it.
TMP_NAME_ROOM = 16


def check_target(path: str | Path, sources=(), *, directory: bool = False) -> Path:
    """The one check of where a command writes, made before any work: extract's
    file or shard directory, view's page, plot's figure, convert's folder.
    Refused, each with one MinibertError naming ``path``:

    - a path the file system cannot take: a name too long (also for the
      temporary file written beside it), a parent that is missing or not a
      directory, a symlink loop, permission denied;
    - one that exists and is not a regular file -- a FIFO, a device, a
      socket, also behind a symlink (the atomic rename would replace it) --
      or, ``directory`` (a shard directory, convert's folder), not a directory;
    - one of ``sources``, ``(path, what)`` pairs naming what a run reads (the
      input, ``"-"`` for stdin; the model's files and directory): the same
      file, also through a symlink or a hard link; a symlink into a source
      directory; for ``directory``, one that holds a source.

    Sources that cannot be read are left for their reader to report."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None  # not there, or a dangling symlink (the rename replaces the link)
        _check_parent(path)
    except OSError as e:
        raise MinibertError(f"{path}: cannot write ({os_reason(e)})") from None
    if st is not None and not (stat.S_ISDIR if directory else stat.S_ISREG)(st.st_mode):
        wanted = "a directory" if directory else "a regular file"
        raise MinibertError(f"{path}: exists and is {kind(st.st_mode)}, not {wanted}; choose another OUTPUT")
    if st is None or not stat.S_ISDIR(st.st_mode):
        _check_name_length(path)
    for source, what in sources:
        _refuse_source(path, st, source, what, directory)
    return path


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        raise MinibertError(f"{path}: output directory {parent} does not exist") from None
    except OSError as e:
        raise MinibertError(f"{path}: cannot write ({os_reason(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MinibertError(f"{path}: cannot write ({parent} is not a directory)")


def _check_name_length(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    n = len(os.fsencode(path.name))
    if n + TMP_NAME_ROOM > limit:
        raise MinibertError(
            f"{path}: file name too long ({n} bytes; at most {limit - TMP_NAME_ROOM} here, with the "
            "temporary file written beside it)"
        )


def _refuse_source(out: Path, out_stat: os.stat_result | None, source, what: str, directory: bool) -> None:
    """:func:`check_target`'s rule for one source."""
    stdin = isinstance(source, str) and source == STDIN
    try:
        s = os.fstat(0) if stdin else os.stat(source)
    except OSError:
        return  # stdin closed, or a source its reader will report
    if stdin and not stat.S_ISREG(s.st_mode):
        return  # a pipe or a terminal: no file to overwrite
    name = "on stdin" if stdin else str(source)
    if out_stat is not None and (out_stat.st_dev, out_stat.st_ino) == (s.st_dev, s.st_ino):
        same = "directory" if stat.S_ISDIR(s.st_mode) else "file"
        raise MinibertError(f"{out}: is {what} {name} (the same {same}); choose another OUTPUT")
    if not stdin and stat.S_ISDIR(s.st_mode) and os.path.islink(out):
        real = os.path.realpath(out)
        if Path(real).is_relative_to(os.path.realpath(source)):
            raise MinibertError(f"{out}: a link to {real}, inside {what} {name}; choose another OUTPUT")
    inside = not stdin and Path(os.path.realpath(source)).is_relative_to(os.path.realpath(out))
    if directory and out_stat is not None and (inside or _holds_link(out, s)):
        raise MinibertError(f"{out}: the output directory holds {what} {name}; choose another OUTPUT")


def model_sources(model) -> list[tuple]:
    """A loaded model's files and its directory, as :func:`check_target`'s sources."""
    return [*((f, "a file of the model") for f in model.files), (model.path, "the model directory")]


def _holds_link(directory: Path, s: os.stat_result) -> bool:
    """Whether ``directory`` has an entry that is a hard link to the file of stat ``s``."""
    try:
        if directory.stat().st_dev != s.st_dev:
            return False
        with os.scandir(directory) as entries:
            return any(e.inode() == s.st_ino for e in entries)
    except OSError:
        return False


def atomic_path(path: Path):
    """A temporary file in ``path``'s directory: (fd, name)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def write_atomic(path: Path, write):
    """``write(f)`` into a temporary file beside ``path``, flushed to disk,
    then renamed over ``path``; returns what ``write`` returned. Readers see the old file or the new one,
    never a part. An error or a kill leaves no new file at ``path`` (and any
    earlier file there as it was); an OSError -- no space left, a read-only
    file system, a file-size limit (the CLI ignores SIGXFSZ, so the limit is
    an error here, not a kill), permission denied -- is one MinibertError
    naming ``path``."""
    try:
        fd, tmp = atomic_path(path)
    except OSError as e:
        raise MinibertError(f"{path}: cannot write ({os_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; an output is an ordinary file
        os.replace(tmp, path)
        return result
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise MinibertError(f"{path}: cannot write ({os_reason(e)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(mask)
    return mask


_UMASK = _umask()
