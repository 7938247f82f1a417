"""Features -> files: ``.npz``, ``.safetensors``, ``.jsonl``, written atomically.

Every writer takes :class:`~minibert.outputs.records.Record` s (one per text, in any
order) and, on ``close()``, writes the file atomically: into a temporary
file beside the target, then ``os.replace``. A failed or interrupted run
leaves any earlier file at that path untouched. A single file holds the
whole corpus in memory until it is written; for corpora, write a directory
of shards instead (:mod:`minibert.outputs.shards`, chosen by :func:`is_sharded`,
whose shards :func:`write_digested` writes).

``.npz`` and ``.safetensors`` hold the arrays of :mod:`minibert.outputs.records`;
``.jsonl`` one line per text (:mod:`minibert.outputs.jsonl`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import check_target, write_atomic, write_sha256
from minibert.outputs.jsonl import jsonl_line
from minibert.outputs.records import FORMATS, Record, cast_features, records_to_arrays
from minibert.outputs.safetensors_file import safetensors_parts
from minibert.outputs.spec import ExtractSpec


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


def check_output_path(path: str | Path) -> Path:
    """The output's format from its extension; where it goes, :func:`check_target`."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MinibertError(
            f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)}, "
            "or a directory for sharded output, e.g. out/)"
        )
    return check_target(path)


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


class JsonlWriter(Writer):
    def _write(self, f) -> None:
        for r in sorted(self.records, key=lambda r: r.index):
            f.write(jsonl_line(r, self.spec))


WRITERS = {".npz": NpzWriter, ".safetensors": SafetensorsWriter, ".jsonl": JsonlWriter}


def open_writer(path: str | Path, spec: ExtractSpec) -> Writer:
    """The writer for ``path``'s extension (checked before any work is done)."""
    path = check_output_path(path)
    return WRITERS[path.suffix](path, spec)  # Writer checks it again: a writer made directly is checked too
