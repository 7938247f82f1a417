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
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        return True
    name = Path(text).name
    if name in FORMATS:
        raise MinibertError(f"{path}: no name before {name} (give e.g. out{name} for a file, or out/)")
    return Path(text).suffix == ""


def refuse_overwriting(output: str | Path, sources, sharded: bool, what: str) -> None:
    """OUTPUT must not be one of ``sources`` (files this run reads: the input,
    the model's files) -- the same file, also through a symlink or a hard
    link -- nor, for a directory of shards, hold one: writing would destroy
    what the user wrote. Sources that cannot be read are left for their
    reader to report."""
    out = Path(output)
    try:
        out_stat = out.stat()
    except OSError:
        return  # not there yet: it cannot be a source, nor hold one
    for source in sources:
        src = Path(source)
        try:
            s = src.stat()
        except OSError:
            continue
        if (out_stat.st_dev, out_stat.st_ino) == (s.st_dev, s.st_ino):
            raise MinibertError(f"{out}: is {what} {src} (the same file); choose another OUTPUT")
        if sharded and (
            Path(os.path.realpath(src)).is_relative_to(os.path.realpath(out)) or _holds_link(out, s)
        ):
            raise MinibertError(f"{out}: the output directory holds {what} {src}; choose another OUTPUT")


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
    """The output's format from its extension; its directory must exist."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MinibertError(
            f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)}, "
            "or a directory for sharded output, e.g. out/)"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MinibertError(f"{path}: output directory {parent} does not exist")
    return path


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
