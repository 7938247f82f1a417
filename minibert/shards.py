"""A directory of shards: ``minibert extract``'s output for a corpus.

::

    OUT/
      manifest.json              what was asked, which shards are finished
      shard-00000.safetensors    texts 0 .. S-1      (S = shard_size)
      shard-00001.safetensors    texts S .. 2S-1
      ...

Shard k holds chunk k of the input (:func:`minibert.inputs.chunked`): the
.safetensors layout of :mod:`minibert.output` for its texts, plus ``index``
(N,) int64, the texts' global indices. ``offsets`` and ``input_ids`` are
local to the shard.

``manifest.json``::

    {"format": "minibert-shards", "version": 1,
     "settings": {...},          # layers, pool, combine, dtypes, model, shard_size, ...
     "shards": [{"shard": k, "file": "shard-0000k.safetensors", "first": k*S,
                 "count": n, "tokens": T, "truncated": t, "bytes": ...,
                 "sha256": ..., "input_sha256": ...}, ...],   # sorted by k
     "num_texts": N, "complete": true}         # null / false until the run ends

Nothing is lost on a kill: each shard is written to a temporary file and
renamed, then the manifest is rewritten the same way, so the manifest only
lists shards that are whole on disk. ``--resume`` checks the settings, every
listed shard's sha256, and each finished chunk's input digest, then computes
only the chunks the manifest lacks. The manifest holds nothing about how or
where it was computed, so a run resumed, or spread over Dask workers, ends with
the same manifest and the same bytes as one uninterrupted run.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import MinibertError
from .output import (
    Output,
    Record,
    SafetensorsOutput,
    Settings,
    cast_features,
    records_to_arrays,
    safetensors_parts,
    write_atomic,
)

FORMAT = "minibert-shards"
VERSION = 1
MANIFEST = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _write(path: Path, parts: list) -> tuple[int, str]:
    """Write ``parts`` to ``path`` atomically; return (bytes, sha256)."""
    h, size = hashlib.sha256(), 0

    def write(f):
        nonlocal size
        for part in parts:
            f.write(part)
            h.update(part)
            size += len(part) if isinstance(part, bytes) else part.nbytes

    try:
        write_atomic(path, write)
    except OSError as e:
        raise MinibertError(f"{path}: cannot write ({e.strerror or e})") from None
    return size, h.hexdigest()


def write_shard(out_dir: str | Path, k: int, records: list[Record], settings: Settings, digest: str) -> dict:
    """Write chunk k's records as ``shard-0000k.safetensors`` (atomically)
    and return its manifest entry. Used by every engine; touches no manifest."""
    records = cast_features(sorted(records, key=lambda r: r.index), settings.out_dtype)
    arrays, tokens, words = records_to_arrays(records, settings)
    arrays["index"] = np.asarray([r.index for r in records], dtype=np.int64)
    path = Path(out_dir) / shard_name(k)
    size, sha256 = _write(path, safetensors_parts(arrays, tokens, words, settings))
    return {
        "shard": k,
        "file": path.name,
        "first": records[0].index,
        "count": len(records),
        "tokens": len(tokens),
        "truncated": sum(r.num_tokens > len(r.tokens) for r in records),
        "bytes": size,
        "sha256": sha256,
        "input_sha256": digest,
    }


def read_manifest(path: Path) -> dict:
    """The manifest of shard directory ``path``, checked for shape."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise MinibertError(f"{mpath}: not found ({path} is not a minibert sharded output)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise ValueError(f"version {manifest.get('version')!r}; this minibert reads {VERSION}")
        for key in ("settings", "shards", "complete"):
            if key not in manifest:
                raise ValueError(f"no {key!r}")
    except (OSError, ValueError, AttributeError) as e:
        raise MinibertError(f"{mpath}: not a minibert manifest ({e})") from None
    return manifest


class ShardedWriter:
    """Writes (or, with ``resume``, continues) a shard directory.

    ``done(k, digest)``: is chunk k already on disk (and was it the same
    input)? ``add(k, records, digest)`` writes a shard; ``record(entry)``
    lists a shard another process wrote; ``close(num_texts)`` marks the
    run complete. The manifest is rewritten atomically after every shard.
    """

    def __init__(self, path: str | Path, settings: Settings, resume: bool = False):
        self.path = Path(path)
        self.settings = settings
        self.mpath = self.path / MANIFEST
        self.entries: dict[int, dict] = {}
        self.resumed_complete = False
        self.num_texts: int | None = None
        if resume and self.mpath.is_file():
            self._resume()
        else:
            self._create(resume)

    # -- opening -----------------------------------------------------------------
    @staticmethod
    def check(path: str | Path, resume: bool = False) -> None:
        """Fail early (before a model loads) on an OUTPUT that cannot be a new
        shard directory: a file, a non-empty directory without ``--resume``
        (or without a manifest to resume from), a missing parent."""
        p = Path(path)
        if resume and (p / MANIFEST).is_file():
            return
        if p.exists() and not p.is_dir():
            raise MinibertError(f"{p}: exists and is not a directory")
        if p.is_dir():
            if any(p.iterdir()):
                hint = "it holds no manifest.json to resume from" if resume else "use --resume to continue"
                raise MinibertError(f"{p}: output directory is not empty ({hint}; or choose a new OUTPUT)")
        elif not p.parent.is_dir():
            what = "is not a directory" if p.parent.exists() else "does not exist"
            raise MinibertError(f"{p}: cannot create output directory ({p.parent} {what})")

    def _create(self, resume: bool) -> None:
        p = self.path
        self.check(p, resume)
        if not p.is_dir():
            try:
                p.mkdir()
            except OSError as e:
                raise MinibertError(f"{p}: cannot create output directory ({e.strerror or e})") from None
        self._save()

    def _resume(self) -> None:
        manifest = read_manifest(self.path)
        mine = json.loads(self.settings.to_json())  # as it would read back
        theirs = manifest["settings"]
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diff:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in diff[:3])
            raise MinibertError(f"{self.mpath}: cannot resume with different settings ({shown})")
        for entry in manifest["shards"]:
            f = self.path / entry["file"]
            if not f.is_file():
                raise MinibertError(f"{f}: listed in {MANIFEST} but missing")
            if f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
                raise MinibertError(f"{f}: corrupt (its size or sha256 differs from {MANIFEST})")
            self.entries[entry["shard"]] = entry
        self.resumed_complete = bool(manifest["complete"])
        self.num_texts = manifest.get("num_texts")
        for tmp in self.path.glob(".*.tmp"):  # left by a kill mid-write: ours, and never complete
            tmp.unlink(missing_ok=True)

    # -- writing -----------------------------------------------------------------
    def done(self, k: int, digest: str) -> bool:
        """True when shard k is finished; its input must be the same."""
        entry = self.entries.get(k)
        if entry is None:
            if self.resumed_complete:
                raise MinibertError(
                    f"{self.mpath}: the input has more texts than the finished run ({self.num_texts})"
                )
            return False
        if entry["input_sha256"] != digest:
            last = entry["first"] + entry["count"] - 1
            raise MinibertError(
                f"{self.mpath}: the input differs from the run being resumed "
                f"(texts {entry['first']}..{last}, {entry['file']})"
            )
        return True

    def add(self, k: int, records: list[Record], digest: str) -> dict:
        entry = write_shard(self.path, k, records, self.settings, digest)
        self.record(entry)
        return entry

    def record(self, entry: dict) -> None:
        self.entries[entry["shard"]] = entry
        self._save()

    def close(self, num_texts: int) -> None:
        """Every chunk of an input of ``num_texts`` texts is on disk."""
        held = sum(e["count"] for e in self.entries.values())
        if held != num_texts:  # only when a resumed run's input is shorter than the first
            raise MinibertError(
                f"{self.mpath}: the input has {num_texts} texts, the run being resumed has {held}"
            )
        self.num_texts = num_texts
        self._save(complete=True)

    def _save(self, complete: bool = False) -> None:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.settings.to_dict(),
            "shards": [self.entries[k] for k in sorted(self.entries)],
            "num_texts": self.num_texts if complete else None,
            "num_tokens": sum(e["tokens"] for e in self.entries.values()) if complete else None,
            "complete": complete,
        }
        _write(self.mpath, [format_manifest(manifest).encode("utf-8")])


def format_manifest(manifest: dict) -> str:
    """JSON with one line per key, and per shard (easy to read and diff)."""

    def one(v) -> str:
        return json.dumps(v, ensure_ascii=False)

    lines = []
    for key, value in manifest.items():
        if key == "shards" and value:
            value = "[\n" + ",\n".join(f"  {one(e)}" for e in value) + "\n ]"
        else:
            value = one(value)
        lines.append(f" {one(key)}: {value}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


class ShardedOutput(Output):
    """A shard directory read lazily: ``vectors(n, layer)`` opens only the
    shard that holds text n and reads only its rows. ``parts()`` yields one
    :class:`~minibert.output.SafetensorsOutput` per shard. An unfinished run
    can be read with ``allow_incomplete=True`` (texts in missing shards raise)."""

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if not manifest["complete"] and not allow_incomplete:
            raise MinibertError(
                f"{self.path / MANIFEST}: the run did not finish ({len(manifest['shards'])} shards); "
                "rerun extract with --resume"
            )
        self.manifest = manifest
        self.settings = manifest["settings"]
        self.pooled = self.settings["pool"] != "none"
        self.layers = [int(i) for i in self.settings["layers"]]
        self.shards = manifest["shards"]
        self.num_texts = manifest["num_texts"] or sum(e["count"] for e in self.shards)
        self._firsts = [e["first"] for e in self.shards]
        self._open: tuple[int, SafetensorsOutput] | None = None

    @property
    def names(self) -> list[str]:
        if self.settings["combine"] != "none":
            return ["combined"]
        return [f"hidden_states.{i}" for i in self.layers]

    @property
    def arrays(self):
        raise MinibertError(
            f"{self.path}: a sharded output has no whole arrays; use vectors(n, layer) or parts()"
        )

    def _shard(self, i: int) -> SafetensorsOutput:
        if self._open is None or self._open[0] != i:
            entry = self.shards[i]
            f = self.path / entry["file"]
            if not f.is_file():
                raise MinibertError(f"{f}: listed in {MANIFEST} but missing")
            out = SafetensorsOutput(f)
            if out.num_texts != entry["count"]:
                raise MinibertError(f"{f}: holds {out.num_texts} texts, {MANIFEST} says {entry['count']}")
            self._open = (i, out)
        return self._open[1]

    def _locate(self, n: int) -> tuple[SafetensorsOutput, int]:
        i = bisect.bisect_right(self._firsts, n) - 1
        if i < 0 or n >= self._firsts[i] + self.shards[i]["count"]:
            raise MinibertError(f"text {n} is in no shard of {self.path} ({self.num_texts} texts)")
        return self._shard(i), n - self._firsts[i]

    def tokens(self, n: int) -> list[str]:
        shard, local = self._locate(n)
        return shard.tokens(local)

    def words(self, n: int) -> list[str]:
        shard, local = self._locate(n)
        return shard.words(local)

    @property
    def word_level(self) -> bool:
        return self.settings.get("word_pool", "none") != "none"

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        self._check(n, name)
        shard, local = self._locate(n)
        return shard.vectors(local, name)

    def parts(self):
        for i in range(len(self.shards)):
            yield self._shard(i)

    def close(self) -> None:
        self._open = None


def model_digest(model_dir: str | Path) -> str:
    """sha256 of a model's weights file: which model a resumed run must use."""
    f = Path(model_dir) / "model.safetensors"
    return sha256_file(f) if f.is_file() else ""


__all__ = ["ShardedOutput", "ShardedWriter", "model_digest", "read_manifest", "write_shard"]
