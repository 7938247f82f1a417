"""Features -> files: ``.npz``, ``.safetensors``, ``.jsonl``, written atomically.

Every writer takes :class:`~minibert.records.Record` s (one per text, in any
order) and, on ``close()``, writes the file atomically: into a temporary
file beside the target, then ``os.replace``. A failed or interrupted run
leaves any earlier file at that path untouched. A single file holds the
whole corpus in memory until it is written; for corpora, write a directory
of shards instead (:mod:`minibert.shards`, chosen by :func:`is_sharded`,
whose shards :func:`write_digested` writes).

``.npz`` and ``.safetensors`` hold the arrays of :mod:`minibert.records`.
``.jsonl``: one object per text, in input order:
``{"index", "text", "text_pair"?, "tokens", "words"?, "spans"?, "segments"?,
"num_tokens", "kept_tokens", "layers": [{"index", "values"}]}``
(``"index": "combined"`` with --combine; words, spans and segments with
--word-pool), in the spirit of google-research/bert's extract_features.py;
with --attentions also ``"attentions": [{"index": i, "values": (h, n, n)}]``
per selected encoder layer, with --attention-stats
``"attention_stats": {"layers": [...], "entropy": (L', h), ...}``.
Numbers are written with 5 (float16), 9 (float32) or 17 (float64)
significant digits, which read back to the same binary value.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from .attention_stats import STATS
from .errors import MinibertError
from .files import os_reason, write_sha256
from .records import FORMATS, Record, cast_features, records_to_arrays
from .safetensors_file import safetensors_parts
from .spec import ExtractSpec


def is_sharded(path: str | Path) -> bool:
    """The one rule for what OUTPUT means: a directory of shards when it ends
    with ``/``, is an existing directory, or has no extension; a single file
    when its extension is ``.npz``, ``.safetensors`` or ``.jsonl``.

    A bare ``.npz`` (no name before the extension) is refused rather than
    guessed at: as a file it would be hidden, as a directory (what the rule
    alone gives, since ``Path(".npz").suffix`` is empty) surely not what
    was meant."""
    text = str(path)
    if text.endswith(("/", "\\")) or os.path.isdir(text):  # no OSError: check_target reports it
        return True
    name = Path(text).name
    if name in FORMATS:
        raise MinibertError(f"{path}: no name before {name} (give e.g. out{name} for a file, or out/)")
    return Path(text).suffix == ""


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
        raise MinibertError(f"{path}: exists and is {_kind(st.st_mode)}, not {wanted}; choose another OUTPUT")
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


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


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


def refuse_overwriting(output: str | Path, sources, sharded: bool, what: str) -> None:
    """:func:`check_target` with every one of ``sources`` described as ``what``
    (``"the input"``): OUTPUT is none of them, nor, ``sharded``, holds one."""
    check_target(output, [(source, what) for source in sources], directory=sharded)


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


def check_output_path(path: str | Path) -> Path:
    """The output's format from its extension; where it goes, :func:`check_target`."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MinibertError(
            f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)}, "
            "or a directory for sharded output, e.g. out/)"
        )
    return check_target(path)


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


def write_digested(path: Path, parts: list) -> tuple[int, str]:
    """Write ``parts`` (bytes or buffers) to ``path`` atomically; return the
    bytes written and their sha256, computed as they are written (a shard is
    not read again to be hashed: :func:`minibert.files.write_sha256`)."""
    return write_atomic(path, lambda f: write_sha256(f, parts))


def output_metadata(spec: ExtractSpec, tokens: list[str], words: list[str] | None) -> dict[str, str]:
    """The header metadata of a .safetensors output or shard: settings, token
    strings and (``word_pool``) word strings, each as JSON."""
    metadata = {"settings": spec.to_json(), "tokens": json.dumps(tokens, ensure_ascii=False)}
    if words is not None:
        metadata["words"] = json.dumps(words, ensure_ascii=False)
    return metadata


class Writer:
    """Collects records; ``close()`` writes the whole file atomically."""

    def __init__(self, path: str | Path, spec: ExtractSpec):
        self.path = check_output_path(path)
        self.spec = spec
        self.records: list[Record] = []

    def add(self, records: list[Record]) -> None:
        self.records.extend(cast_features(records, self.spec.out_dtype))

    def _arrays(self) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
        return records_to_arrays(self.records, self.spec)

    def close(self) -> None:
        write_atomic(self.path, self._write)


class NpzWriter(Writer):
    def _write(self, f) -> None:
        arrays, tokens, words = self._arrays()
        arrays["tokens"] = np.asarray(tokens, dtype=str)
        if words is not None:
            arrays["words"] = np.asarray(words, dtype=str)
        arrays["settings"] = np.asarray(self.spec.to_json())
        np.savez(f, **arrays)


class SafetensorsWriter(Writer):
    def _write(self, f) -> None:
        arrays, tokens, words = self._arrays()
        for part in safetensors_parts(arrays, output_metadata(self.spec, tokens, words)):
            f.write(part)


def _json_numbers(a: np.ndarray) -> str:
    """A float array as JSON text that reads back to the same binary values."""
    fmt = {2: "%.5g", 4: "%.9g"}.get(a.dtype.itemsize, "%.17g")
    if a.ndim == 1:
        return "[" + ",".join(np.char.mod(fmt, a)) + "]"
    return "[" + ",".join(_json_numbers(row) for row in a) + "]"


def _layer_key(name: str) -> str:
    """``hidden_states.3`` -> ``3``; ``combined`` -> ``"combined"`` (JSON)."""
    return '"combined"' if name == "combined" else name.removeprefix("hidden_states.")


class JsonlWriter(Writer):
    def _write(self, f) -> None:
        for r in sorted(self.records, key=lambda r: r.index):
            head = {"index": r.index, "text": r.text}
            if r.text_pair is not None:
                head["text_pair"] = r.text_pair
            head["tokens"] = r.tokens
            if r.words is not None:
                head["words"] = r.words.words
                head["spans"] = r.words.spans.tolist()
                if r.text_pair is not None:
                    head["segments"] = r.words.segments.tolist()
            head["num_tokens"] = r.num_tokens
            head["kept_tokens"] = len(r.tokens)
            layers = ",".join(
                f'{{"index":{_layer_key(name)},"values":{_json_numbers(v)}}}'
                for name, v in r.features.items()
            )
            line = json.dumps(head, ensure_ascii=False)[:-1] + ',"layers":[' + layers + "]"
            f.write((line + _jsonl_attention(r, self.spec) + "}\n").encode("utf-8"))


def _jsonl_attention(r: Record, spec: ExtractSpec) -> str:
    """A record's attention maps or statistics, as ``spec`` asks, as the end
    of its .jsonl line; '' for none."""
    if spec.attentions == "maps":
        maps = ",".join(
            f'{{"index":{i},"values":{_json_numbers(r.attentions[i])}}}' for i in spec.attention_layers
        )
        return ',"attentions":[' + maps + "]"
    if spec.attentions == "stats":
        # a text without tokens has NaN statistics: JSON null (read back as NaN)
        values = [f'"{s}":{_json_numbers(r.attention_stats[s]).replace("nan", "null")}' for s in STATS]
        return (
            ',"attention_stats":{"layers":'
            + json.dumps(list(spec.attention_layers))
            + ","
            + ",".join(values)
            + "}"
        )
    return ""


WRITERS = {".npz": NpzWriter, ".safetensors": SafetensorsWriter, ".jsonl": JsonlWriter}


def open_writer(path: str | Path, spec: ExtractSpec) -> Writer:
    """The writer for ``path``'s extension (checked before any work is done)."""
    path = check_output_path(path)
    return WRITERS[path.suffix](path, spec)  # Writer checks it again: a writer made directly is checked too
