"""A directory of shards: ``minibert extract``'s output for a corpus.

::

    OUT/
      manifest.json              what was asked, which shards are finished
      shard-00000.safetensors    texts 0 .. S-1      (S = shard_size)
      shard-00001.safetensors    texts S .. 2S-1
      ...

Shard k holds chunk k of the input (:func:`minibert.corpus.inputs.chunked`): the
.safetensors layout of :mod:`minibert.outputs.records` for its texts, plus ``index``
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
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import os_reason, read_json, sha256_file, stat_file, write_atomic
from minibert.outputs.readers import (
    AttentionLayout,
    FileOutput,
    SafetensorsOutput,
    attention_layer,
    check_settings,
    describe,
    feature_name,
    require_attention,
    text_index,
)
from minibert.outputs.records import Record, cast_features, records_to_arrays
from minibert.outputs.safetensors_file import safetensors_parts
from minibert.outputs.spec import ExtractSpec
from minibert.outputs.writers import output_metadata, write_digested

try:
    import fcntl
except ImportError:  # not a POSIX system: no directory lock
    fcntl = None

FORMAT = "minibert-shards"
VERSION = 1
MANIFEST = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


#: The temporary files this module's writers leave when killed mid-write
#: (:func:`minibert.files.atomic_path`: ``.{name}.{8 random characters}.tmp``):
#: the only files ``--resume`` deletes.
OWN_TEMP = re.compile(r"\.(?:shard-\d{5,}\.safetensors|manifest\.json)\.[a-z0-9_]{8}\.tmp")


def write_shard(out_dir: str | Path, k: int, records: list[Record], spec: ExtractSpec, digest: str) -> dict:
    """Write chunk k's records as ``shard-0000k.safetensors`` (atomically)
    and return its manifest entry. Used by every engine; touches no manifest."""
    records = cast_features(sorted(records, key=lambda r: r.index), spec.out_dtype)
    arrays, tokens, words = records_to_arrays(records, spec)
    arrays["index"] = np.asarray([r.index for r in records], dtype=np.int64)
    path = Path(out_dir) / shard_name(k)
    size, sha256 = write_digested(path, safetensors_parts(arrays, output_metadata(spec, tokens, words)))
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
    """The manifest of shard directory ``path``, checked (:func:`check_manifest`): a regular
    file inside the directory (a link out of it, or a FIFO or device, is refused unread)."""
    mpath = Path(path) / MANIFEST
    st = stat_file(mpath, f"not found ({path} is not a minibert sharded output)", "cannot read manifest")
    if Path(os.path.realpath(mpath)).parent != Path(os.path.realpath(path)):
        raise MinibertError(f"{mpath}: a link to {os.path.realpath(mpath)}, outside {path}; not read")
    if not stat.S_ISREG(st.st_mode):
        raise MinibertError(f"{mpath}: not a regular file")
    return check_manifest(read_json(mpath, dict, what="manifest"), mpath)


_ENTRY_COUNTS = ("shard", "first", "count", "tokens", "truncated", "bytes")
_ENTRY_STRINGS = ("file", "sha256", "input_sha256")


def check_manifest(manifest: dict, mpath: Path) -> dict:
    """Every field a reader or a resumed run relies on, with the type it
    must have; each shard entry's ``file`` exactly ``shard_name(shard)``
    (so no entry can point outside the directory: no ``../``, no absolute
    path); shards in order, each at ``shard * shard_size``, none
    overlapping; a complete run's shards 0..K-1 adding up to ``num_texts``.
    One MinibertError naming the manifest and the field otherwise."""

    def bad(what: str) -> MinibertError:
        return MinibertError(f"{mpath}: not a minibert manifest ({what})")

    if manifest.get("format") != FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise bad(f"version {manifest.get('version')!r}; this minibert reads {VERSION}")
    for key in ("settings", "shards", "complete"):
        if key not in manifest:
            raise bad(f"no {key!r}")
    settings = check_settings(manifest["settings"], f"{mpath}", required=("layers", "pool", "combine"))
    size = settings.get("shard_size")
    if size is not None and not (_is_count(size) and size > 0):
        raise MinibertError(f"{mpath}: settings 'shard_size' is {size!r}, not a positive integer")
    if not isinstance(manifest["complete"], bool):
        raise MinibertError(f"{mpath}: 'complete' is {manifest['complete']!r}, not true or false")
    for key in ("num_texts", "num_tokens"):
        if manifest.get(key) is not None and not _is_count(manifest[key]):
            raise MinibertError(f"{mpath}: {key!r} is {manifest[key]!r}, not a count")
    shards = manifest["shards"]
    if not isinstance(shards, list):
        raise MinibertError(f"{mpath}: 'shards' is {type(shards).__name__}, not a list")
    end = 0  # the first text after the previous shard
    for i, e in enumerate(shards):
        where = f"{mpath}: shards[{i}]"
        if not isinstance(e, dict):
            raise MinibertError(f"{where} is {type(e).__name__}, not a JSON object")
        for key in _ENTRY_COUNTS:
            if not _is_count(e.get(key)):
                raise MinibertError(f"{where}.{key} is {e.get(key)!r}, not a count")
        for key in _ENTRY_STRINGS:
            if not isinstance(e.get(key), str):
                raise MinibertError(f"{where}.{key} is {e.get(key)!r}, not a string")
        if e["file"] != shard_name(e["shard"]):
            raise MinibertError(f"{where}.file is {e['file']!r}, expected {shard_name(e['shard'])!r}")
        if i and e["shard"] <= shards[i - 1]["shard"]:
            raise MinibertError(f"{where}: shard {e['shard']} comes after shard {shards[i - 1]['shard']}")
        if size is not None and (e["first"] != e["shard"] * size or not 0 < e["count"] <= size):
            raise MinibertError(
                f"{where}: texts {e['first']}+{e['count']} are not chunk {e['shard']} of {size} texts"
            )
        if e["count"] == 0 or e["first"] < end:
            what = "holds no texts" if e["count"] == 0 else "overlaps the previous shard"
            raise MinibertError(f"{where}: texts {e['first']}+{e['count']} {what}")
        end = e["first"] + e["count"]
    if manifest["complete"]:
        if [e["shard"] for e in shards] != list(range(len(shards))):
            raise MinibertError(f"{mpath}: complete, but shards are missing")
        for key, field in (("num_texts", "count"), ("num_tokens", "tokens")):
            total = sum(e[field] for e in shards)
            if manifest.get(key) is not None and manifest[key] != total:
                raise MinibertError(f"{mpath}: {key!r} is {manifest[key]}, its shards hold {total}")
    return manifest


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_shard(out_dir: Path, entry: dict, digest: bool = True) -> Path:
    """A listed shard's path, once it is known to be a regular file inside
    ``out_dir`` (a symlink out of it is refused) with the size and (unless
    ``digest`` is false) the sha256 the manifest records: a shard is never
    read on trust."""
    f = out_dir / entry["file"]
    st = stat_file(f, f"listed in {MANIFEST} but missing")
    if Path(os.path.realpath(f)).parent != Path(os.path.realpath(out_dir)):
        raise MinibertError(f"{f}: a link to {os.path.realpath(f)}, outside {out_dir}; not read")
    if not stat.S_ISREG(st.st_mode):
        raise MinibertError(f"{f}: not a regular file")
    try:
        same = st.st_size == entry["bytes"] and (not digest or sha256_file(f) == entry["sha256"])
    except OSError as e:
        raise MinibertError(f"{f}: cannot read ({os_reason(e)})") from None
    if not same:
        raise MinibertError(f"{f}: corrupt (its size or sha256 differs from {MANIFEST})")
    return f


class ShardedWriter:
    """Writes (or, with ``resume``, continues) a shard directory.

    ``done(k, digest)``: is chunk k already on disk (and was it the same
    input)? ``record(entry)`` lists a shard :func:`write_shard` wrote (in
    this process or on a Dask worker); ``close(num_texts)`` marks the run
    complete. The manifest is rewritten atomically after every shard.

    One writer at a time: the directory is locked (``flock`` on the
    directory itself, so no lock file is left behind, and the kernel
    releases the lock when its process dies: a killed run never blocks the
    next one); a second writer gets an error naming the directory. Use it
    as a context manager: if the run fails before it lists any shard, what
    it created (its manifest, the directory) is removed, so the corrected
    rerun is not refused for a non-empty directory.
    """

    def __init__(self, path: str | Path, spec: ExtractSpec, resume: bool = False):
        self.path = Path(path)
        self.spec = spec
        self.mpath = self.path / MANIFEST
        self.entries: dict[int, dict] = {}
        self.resumed_complete = False
        self.num_texts: int | None = None
        self._lock_fd: int | None = None
        self._made_dir = False  # this run created the directory
        self._fresh = False  # this run wrote the first manifest
        self._listed = 0  # shards this run listed
        try:
            self._open(resume)
        except BaseException:  # e.g. no space for the first manifest: leave nothing behind
            self.abandon()
            self._unlock()
            raise

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()
        self._unlock()

    # -- opening -----------------------------------------------------------------
    @staticmethod
    def check(path: str | Path, resume: bool = False) -> None:
        """Fail early (before a model loads) on an OUTPUT that cannot be a new
        shard directory: a file, a non-empty directory without ``--resume``
        (or without a manifest to resume from), a missing parent."""
        p = Path(path)
        try:
            if resume and (p / MANIFEST).is_file():
                return
            if p.exists() and not p.is_dir():
                raise MinibertError(f"{p}: exists and is not a directory")
            if p.is_dir():
                if any(p.iterdir()):
                    hint = (
                        "it holds no manifest.json to resume from" if resume else "use --resume to continue"
                    )
                    raise MinibertError(
                        f"{p}: output directory is not empty ({hint}; or choose a new OUTPUT)"
                    )
            elif not p.parent.is_dir():
                try:
                    os.stat(p.parent)  # another OSError (a symlink loop) is named below
                    what = "is not a directory"
                except FileNotFoundError:
                    what = "does not exist"
                raise MinibertError(f"{p}: cannot create output directory ({p.parent} {what})")
        except OSError as e:
            raise MinibertError(f"{p}: cannot use as output directory ({os_reason(e)})") from None

    def _open(self, resume: bool) -> None:
        p = self.path
        self.check(p, resume)
        if not p.is_dir():
            try:
                p.mkdir()
                self._made_dir = True
            except FileExistsError:
                pass  # another run made it a moment ago: the lock decides which of us writes
            except OSError as e:
                raise MinibertError(f"{p}: cannot create output directory ({os_reason(e)})") from None
        self._lock()
        if resume and self.mpath.is_file():
            self._resume()
        else:
            self.check(p, resume)  # again, under the lock: another run may have written here meanwhile
            self._fresh = True
            self._save()

    def _lock(self) -> None:
        """Hold an exclusive ``flock`` on the directory until :meth:`close`
        (or this process ends). A file system without flock (some network
        file systems) runs unlocked, as if single-writer."""
        if fcntl is None:  # not a POSIX system
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            raise MinibertError(f"{self.path}: cannot open output directory ({os_reason(e)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MinibertError(
                f"{self.path}: another minibert extract is writing to this directory (it holds its lock); "
                "wait for it to finish, or choose another OUTPUT"
            ) from None
        except OSError:  # flock not supported here
            os.close(fd)
            return
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def abandon(self) -> None:
        """After a failure: if this run began the directory and listed no
        shard, remove its manifest (and the directory, if this run made it and
        it is now empty); otherwise keep everything, for ``--resume``."""
        if not self._fresh or self._listed:
            return
        try:
            self.mpath.unlink(missing_ok=True)
            if self._made_dir:
                self.path.rmdir()
        except OSError:  # cannot remove it (or a Dask worker's shard is there): leave it, as a kill would
            pass

    def _resume(self) -> None:
        manifest = read_manifest(self.path)
        mine, theirs = self.spec.to_settings(), manifest["settings"]
        self._check_model_files(mine["model_files"], theirs.get("model_files"))
        diff = self.spec.differences(theirs)
        if diff:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in diff[:3])
            raise MinibertError(f"{self.mpath}: cannot resume with different settings ({shown})")
        for entry in manifest["shards"]:
            check_shard(self.path, entry)
            self.entries[entry["shard"]] = entry
        self.resumed_complete = manifest["complete"]
        self.num_texts = manifest.get("num_texts")
        for tmp in self.path.iterdir():  # left by a kill mid-write: only our own names, never complete
            if OWN_TEMP.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)

    def _check_model_files(self, mine, theirs) -> None:
        """Name the first model file whose sha256 differs from the run being
        resumed: its shards and this run's would come from two models."""
        if mine == theirs or not isinstance(mine, dict) or not isinstance(theirs, dict):
            return  # equal, or not recorded on one side: the settings comparison reports it
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                how = "is new" if name not in theirs else "is gone" if name not in mine else "changed"
                raise MinibertError(
                    f"{self.mpath}: cannot resume: the model's {name} {how} since the run being resumed "
                    f"(sha256 differs); its shards and this run's would come from two models"
                )

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

    def record(self, entry: dict) -> None:
        self.entries[entry["shard"]] = entry
        self._listed += 1
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
        self._unlock()

    def _save(self, complete: bool = False) -> None:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.spec.to_settings(),
            "shards": [self.entries[k] for k in sorted(self.entries)],
            "num_texts": self.num_texts if complete else None,
            "num_tokens": sum(e["tokens"] for e in self.entries.values()) if complete else None,
            "complete": complete,
        }
        data = format_manifest(manifest).encode("utf-8")
        write_atomic(self.mpath, lambda f: f.write(data))  # the manifest's own digest is not needed


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


class ShardedOutput:
    """A shard directory read lazily, an :class:`~minibert.outputs.readers.OutputReader`:
    ``vectors(n, layer)`` opens only the shard that holds text n and reads
    only its rows. It has no whole arrays: ``parts()`` yields one
    :class:`~minibert.outputs.readers.SafetensorsOutput` per shard, each with its
    ``arrays``. An unfinished run can be read with ``allow_incomplete=True``
    (texts in missing shards raise).

    Nothing in the directory is trusted: the manifest is checked field by
    field (:func:`check_manifest`), and each shard, before its first use, is
    checked to be inside the directory with the size and sha256 the manifest
    records (once per shard: ``verify=False`` skips the sha256, for a
    directory known to be intact), to hold the manifest's texts (its
    ``index``) and to have been written with the manifest's settings.
    """

    def __init__(self, path: str | Path, allow_incomplete: bool = False, verify: bool = True):
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
        self.layers = list(self.settings["layers"])
        self.shards = manifest["shards"]
        self.num_texts = manifest["num_texts"] or sum(e["count"] for e in self.shards)
        self.verify = verify
        self._firsts = [e["first"] for e in self.shards]
        kind = self.settings.get("attentions")
        self.attention = AttentionLayout(
            kind,
            tuple(i for i in self.layers if i >= 1) if kind else (),
            self.settings.get("num_attention_heads"),
        )  # what every shard must hold (each checks its own arrays and settings)
        self._open: tuple[int, SafetensorsOutput] | None = None
        self._checked: set[int] = set()

    @property
    def names(self) -> list[str]:
        if self.settings["combine"] != "none":
            return ["combined"]
        return [f"hidden_states.{i}" for i in self.layers]

    @property
    def word_level(self) -> bool:
        return self.settings.get("word_pool", "none") != "none"

    def _shard(self, i: int) -> SafetensorsOutput:
        if self._open is None or self._open[0] != i:
            entry = self.shards[i]
            f = check_shard(self.path, entry, digest=self.verify and i not in self._checked)
            out = SafetensorsOutput(f)
            if out.num_texts != entry["count"]:
                raise MinibertError(f"{f}: holds {out.num_texts} texts, {MANIFEST} says {entry['count']}")
            first = entry["first"]
            if "index" not in out.arrays or not np.array_equal(
                out.arrays["index"], np.arange(first, first + entry["count"])
            ):
                raise MinibertError(f"{f}: its 'index' is not texts {first}..{first + entry['count'] - 1}")
            if out.settings != self.settings:
                raise MinibertError(f"{f}: written with other settings than {MANIFEST} records")
            self._checked.add(i)
            self.close()
            self._open = (i, out)
        return self._open[1]

    def _locate(self, n: int) -> tuple[SafetensorsOutput, int]:
        n = text_index(n, self.num_texts)
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

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        name = feature_name(name, self.names, self.settings.get("num_hidden_layers"))
        shard, local = self._locate(n)
        return shard.vectors(local, name)

    @property
    def attention_layers(self) -> list[int]:
        return list(self.attention.layers)

    def attentions(self, n: int, layer: int) -> np.ndarray:
        """Text n's (h, k, k) attention at encoder layer ``layer``: only its
        shard is opened, and only its values read."""
        require_attention(self.attention, "maps")
        i = attention_layer(layer, self.attention, self.settings.get("num_hidden_layers"))
        shard, local = self._locate(n)
        return shard.attentions(local, i)

    def attention_stats(self, n: int) -> dict[str, np.ndarray]:
        require_attention(self.attention, "stats")
        shard, local = self._locate(n)
        return shard.attention_stats(local)

    def parts(self) -> Iterator[FileOutput]:
        for i in range(len(self.shards)):
            yield self._shard(i)

    def __len__(self) -> int:
        """The number of texts (``num_texts``)."""
        return self.num_texts

    def __repr__(self) -> str:
        shards = f"directory of {len(self.shards)} shard{'s' if len(self.shards) != 1 else ''}"
        if not self.manifest["complete"]:
            shards += ", unfinished"
        return describe(self, str(self.path), shards, self.settings.get("output_dtype"))

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __enter__(self) -> ShardedOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "ShardedOutput",
    "ShardedWriter",
    "check_manifest",
    "read_manifest",
    "write_shard",
]
