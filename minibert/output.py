"""Features -> files, and back: ``.npz``, ``.safetensors``, ``.jsonl``.

Every writer takes :class:`Record` s (one per text, in any order) and, on
``close()``, writes the file atomically: into a temporary file beside the
target, then ``os.replace``. A failed or interrupted run leaves any earlier
file at that path untouched. A single file holds the whole corpus in memory
until it is written; for corpora, write a directory of shards instead
(:mod:`minibert.shards`, chosen by :func:`is_sharded`).

Layout of ``.npz`` / ``.safetensors`` (N texts, T tokens in all):

    hidden_states.{i}   (N, H) pooled, or (T, H) token-level: layer i's vectors
                        (i indexes transformers' hidden_states: 0 = embeddings)
    combined            (N, H') / (T, H') instead, with --combine sum|mean|concat
    offsets             (N + 1,) int64: text n owns rows offsets[n]:offsets[n+1]
                        of the token-level arrays (and of input_ids)
    input_ids           (T,) int64: every text's token ids, concatenated
    layers              (L,) int64: the hidden_states indices that were selected
    tokens (.npz only)  (T,) str; in .safetensors the token strings and all
                        settings are in the header metadata (JSON)
    num_tokens          (N,) int64: each text's token count before truncation
    kept_tokens         (N,) int64: ... and after (< num_tokens: truncated)

With --word-pool the rows are words (W in all), not tokens:

    offsets             (N + 1,): text n owns rows offsets[n]:offsets[n+1] of the
                        word-level arrays (hidden_states.{i}, spans, segments, words)
    token_offsets       (N + 1,): ... and tokens[token_offsets[n]:token_offsets[n+1]]
    spans               (W, 2) int64: each word's [start, end) characters in its text
    segments            (W,) int64: 0 a word of the text, 1 of its text_pair
    words (.npz only)   (W,) str; in .safetensors in the header metadata

``.jsonl``: one object per text, in input order:
``{"index", "text", "text_pair"?, "tokens", "words"?, "spans"?, "segments"?,
"num_tokens", "kept_tokens", "layers": [{"index", "values"}]}``
(``"index": "combined"`` with --combine; words, spans and segments with
--word-pool), in the spirit of google-research/bert's extract_features.py.
Numbers are written with 5 (float16), 9 (float32) or 17 (float64)
significant digits, which read back to the same binary value.

Features are stored in ``Settings.output_dtype`` (default: the compute dtype);
``float16`` halves the disk of float32 and is checked for overflow (a value
beyond +-65504 is an error, never a silent inf).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MinibertError

FORMATS = (".npz", ".safetensors", ".jsonl")
OUTPUT_DTYPES = ("float16", "float32", "float64")


@dataclass
class WordRows:
    """A text's words, when its features are word-level: the strings, their
    [start, end) character spans (n_words, 2) and segments (n_words,), 0 for
    the text, 1 for its text_pair."""

    words: list[str]
    spans: np.ndarray
    segments: np.ndarray


@dataclass
class Record:
    """One text's features. ``features`` maps a name (``hidden_states.{i}``
    or ``combined``) to (n_tokens, H), (n_words, H) when ``words`` is given,
    or, pooled, (H,). ``num_tokens`` is the text's token count before
    truncation (> len(tokens) when truncated)."""

    index: int
    text: str
    text_pair: str | None
    tokens: list[str]
    input_ids: np.ndarray
    features: dict[str, np.ndarray]
    num_tokens: int
    words: WordRows | None = None


@dataclass
class Settings:
    """What an output holds: stored in every format so a reader knows.

    ``dtype`` is the compute dtype, ``output_dtype`` the stored one (None:
    the same). A resumed run must have equal settings (:meth:`to_dict`).
    """

    layers: list[int]
    pool: str
    combine: str
    dtype: str
    model: str
    extra: dict = field(default_factory=dict)
    word_pool: str = "none"
    output_dtype: str | None = None

    @property
    def out_dtype(self) -> np.dtype:
        return np.dtype(self.output_dtype or self.dtype)

    def to_dict(self) -> dict:
        from . import __version__

        return {
            "layers": list(self.layers),
            "pool": self.pool,
            "word_pool": self.word_pool,
            "combine": self.combine,
            "dtype": self.dtype,
            "output_dtype": self.out_dtype.name,
            "model": self.model,
            "minibert": __version__,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def is_sharded(path: str | Path) -> bool:
    """The one rule for what OUTPUT means: a directory of shards when it ends
    with ``/``, is an existing directory, or has no extension; a single file
    when its extension is ``.npz``, ``.safetensors`` or ``.jsonl``."""
    text = str(path)
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        return True
    return Path(text).suffix == ""


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


def cast_features(records: list[Record], dtype: np.dtype) -> list[Record]:
    """Records with their features in ``dtype`` (computed in float32/64,
    stored maybe narrower). A value that overflows float16 is an error."""
    dtype = np.dtype(dtype)
    for r in records:
        for name, v in r.features.items():
            if v.dtype == dtype:
                continue
            with np.errstate(over="ignore"):  # overflow is checked on the next line
                c = v.astype(dtype)
            if dtype.itemsize < v.dtype.itemsize and not np.isfinite(c).all() and np.isfinite(v).all():
                bad = float(np.abs(v).max())
                raise MinibertError(
                    f"text {r.index}: {name} holds {bad:.6g}, beyond {dtype.name}'s range "
                    f"(+-{float(np.finfo(dtype).max):.6g}); use --output-dtype float32"
                )
            r.features[name] = c
    return records


def atomic_path(path: Path):
    """A temporary file in ``path``'s directory: (fd, name)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


class Writer:
    """Collects records; ``close()`` writes the whole file atomically."""

    def __init__(self, path: str | Path, settings: Settings):
        self.path = check_output_path(path)
        self.settings = settings
        self.records: list[Record] = []

    def add(self, records: list[Record]) -> None:
        self.records.extend(cast_features(records, self.settings.out_dtype))

    def _arrays(self) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
        return records_to_arrays(self.records, self.settings)

    def close(self) -> None:
        write_atomic(self.path, self._write)


def records_to_arrays(
    records: list[Record], settings: Settings
) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
    """Records (any order) -> the arrays of the layout above, in index
    order, every token string, and every word string (None unless
    ``--word-pool``)."""
    records = sorted(records, key=lambda r: r.index)
    kept = np.array([len(r.tokens) for r in records], dtype=np.int64)
    arrays = {
        "offsets": _offsets(kept),
        "input_ids": np.concatenate([r.input_ids for r in records]).astype(np.int64)
        if records
        else np.zeros(0, np.int64),
        "layers": np.asarray(settings.layers, dtype=np.int64),
        "num_tokens": np.array([r.num_tokens for r in records], dtype=np.int64),
        "kept_tokens": kept,
    }
    words = None
    if settings.word_pool != "none":  # rows are words; tokens keep their own offsets
        arrays["token_offsets"] = arrays["offsets"]
        arrays["offsets"] = _offsets([len(r.words.words) for r in records])
        spans = [r.words.spans.reshape(-1, 2) for r in records] or [np.zeros((0, 2))]
        arrays["spans"] = np.concatenate(spans).astype(np.int64)
        segments = [r.words.segments for r in records] or [np.zeros(0)]
        arrays["segments"] = np.concatenate(segments).astype(np.int64)
        words = [w for r in records for w in r.words.words]
    names = list(records[0].features) if records else feature_names(settings)
    for name in names:
        parts = [r.features[name] for r in records]
        if parts:
            pooled = parts[0].ndim == 1
            arrays[name] = np.stack(parts) if pooled else np.concatenate(parts)
        else:
            arrays[name] = np.zeros((0, 0), dtype=settings.out_dtype)
    tokens = [t for r in records for t in r.tokens]
    return arrays, tokens, words


def feature_names(settings: Settings) -> list[str]:
    """The feature arrays an output with these settings holds."""
    if settings.combine != "none":
        return ["combined"]
    return [f"hidden_states.{i}" for i in settings.layers]


def write_atomic(path: Path, write) -> None:
    """``write(f)`` into a temporary file beside ``path``, flushed to disk,
    then renamed over ``path``: readers see the old file or the new one,
    never a part. An error or a kill leaves no new file at ``path``."""
    fd, tmp = atomic_path(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; an output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(mask)
    return mask


_UMASK = _umask()


#: NumPy dtype -> safetensors dtype name, for what extract writes.
SAFETENSORS_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64", "int64": "I64"}


def safetensors_parts(
    arrays: dict[str, np.ndarray], tokens: list[str], words: list[str] | None, settings: Settings
) -> list:
    """The .safetensors layout, as the buffers to write one after another:
    arrays, with token strings, word strings (``--word-pool``) and settings
    as JSON in the header metadata.

    Serialized here rather than by ``safetensors.numpy.save``, whose header
    lists metadata keys in a random order per process: equal features must
    give equal bytes (and sha256) whichever process or machine wrote them.
    The arrays are not copied into one big bytes object first. The format
    (huggingface/safetensors): an 8-byte little-endian header length, a JSON
    header padded with spaces to 8 bytes, then the tensors' little-endian
    bytes back to back.
    """
    metadata = {"settings": settings.to_json(), "tokens": json.dumps(tokens, ensure_ascii=False)}
    if words is not None:
        metadata["words"] = json.dumps(words, ensure_ascii=False)
    header: dict = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[a.dtype.name],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        blobs.append(memoryview(a.reshape(-1)).cast("B"))
        offset += a.nbytes
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return [struct.pack("<Q", len(head)), head, *blobs]


def safetensors_bytes(
    arrays: dict[str, np.ndarray], tokens: list[str], words: list[str] | None, settings: Settings
) -> bytes:
    """:func:`safetensors_parts` joined (for small outputs and tests)."""
    return b"".join(safetensors_parts(arrays, tokens, words, settings))


def _offsets(lengths) -> np.ndarray:
    """Row counts -> (N + 1,) int64 offsets: item n owns rows offsets[n]:offsets[n+1]."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class NpzWriter(Writer):
    def _write(self, f) -> None:
        arrays, tokens, words = self._arrays()
        arrays["tokens"] = np.asarray(tokens, dtype=str)
        if words is not None:
            arrays["words"] = np.asarray(words, dtype=str)
        arrays["settings"] = np.asarray(self.settings.to_json())
        np.savez(f, **arrays)


class SafetensorsWriter(Writer):
    def _write(self, f) -> None:
        for part in safetensors_parts(*self._arrays(), self.settings):
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
            line = json.dumps(head, ensure_ascii=False)[:-1] + ',"layers":[' + layers + "]}\n"
            f.write(line.encode("utf-8"))


WRITERS = {".npz": NpzWriter, ".safetensors": SafetensorsWriter, ".jsonl": JsonlWriter}


def open_writer(path: str | Path, settings: Settings) -> Writer:
    """The writer for ``path``'s extension (checked before any work is done)."""
    path = check_output_path(path)
    return WRITERS[path.suffix](path, settings)


class Output:
    """Read back what ``minibert extract`` wrote.

    ``settings`` (dict; empty for .jsonl), ``layers``, ``num_texts``,
    ``pooled``; ``tokens(n)`` and ``vectors(n, name)`` give text n's tokens
    and its (n_tokens, H) or (H,) array for ``name`` (``"hidden_states.{i}"``,
    ``i`` an int -- negative counts from the last layer -- or ``"combined"``).
    Word-level outputs (``--word-pool``): ``words(n)`` and ``vectors(n, name)``
    of shape (n_words, H), ``arrays["spans"]``. ``arrays["num_tokens"]`` /
    ``arrays["kept_tokens"]``: each text's token count before and after
    truncation. ``parts()`` yields the output piece by piece (one piece for a
    file, one per shard for a directory), each with whole ``arrays``, for
    statistics over a corpus that does not fit.
    """

    def __init__(
        self, arrays, tokens: list[str], settings: dict, pooled: bool, words: list[str] | None = None
    ):
        self.arrays = arrays
        self._tokens = tokens
        self._words = words
        self.settings = settings
        self.pooled = pooled
        self.layers = [int(i) for i in arrays["layers"]]
        self.offsets = np.asarray(arrays["offsets"])
        self.token_offsets = (
            np.asarray(arrays["token_offsets"]) if "token_offsets" in arrays else self.offsets
        )
        self.num_texts = len(self.offsets) - 1

    @property
    def names(self) -> list[str]:
        return [k for k in self.arrays if k.startswith("hidden_states.") or k == "combined"]

    @property
    def word_level(self) -> bool:
        """Rows are words (``--word-pool``), not tokens."""
        return "token_offsets" in self.arrays

    def _check(self, n: int, name: str | int) -> str:
        if isinstance(name, int | np.integer):
            i, states = int(name), self.settings.get("num_hidden_layers")
            if i < 0 and states is not None:
                i %= states + 1  # -1: the last layer, as in --layers
            name = f"hidden_states.{i}"
        if name not in self.names:
            raise MinibertError(f"no {name!r} in this output (has: {', '.join(self.names)})")
        if not 0 <= n < self.num_texts:
            raise MinibertError(f"text {n} out of range (this output holds {self.num_texts} texts)")
        return name

    def tokens(self, n: int) -> list[str]:
        return self._tokens[self.token_offsets[n] : self.token_offsets[n + 1]]

    def words(self, n: int) -> list[str]:
        if self._words is None:
            raise MinibertError("this output has no words (it was not written with --word-pool)")
        return self._words[self.offsets[n] : self.offsets[n + 1]]

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        name = self._check(n, name)
        a = self.arrays[name]
        if self.pooled:
            return a[n]
        return a[self.offsets[n] : self.offsets[n + 1]]

    def parts(self):
        yield self

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LazyArrays(Mapping):
    """A .safetensors file's tensors, each read only when asked for."""

    def __init__(self, f):
        self._f = f

    def __contains__(self, name) -> bool:  # without reading the tensor
        return name in self._f.keys()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._f.keys():
            raise KeyError(name)
        return self._f.get_tensor(name)

    def __iter__(self):
        return iter(self._f.keys())

    def __len__(self) -> int:
        return len(self._f.keys())


class SafetensorsOutput(Output):
    """One .safetensors output, read lazily: offsets, layer indices and token
    strings on open; a text's rows of one array when asked (a slice of the
    file, not the whole tensor)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        try:
            self._f = safe_open(str(path), framework="numpy")
            meta = self._f.metadata() or {}
            settings = json.loads(meta["settings"])
            tokens = json.loads(meta["tokens"])
            words = json.loads(meta["words"]) if "words" in meta else None
            super().__init__(
                _LazyArrays(self._f), tokens, settings, pooled=settings["pool"] != "none", words=words
            )
        except MinibertError:
            raise
        except Exception as e:  # the safetensors library's errors have no common base but Exception
            raise MinibertError(f"{path}: not a minibert output ({e})") from None

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        name = self._check(n, name)
        rows = self._f.get_slice(name)
        if self.pooled:
            return rows[n]
        return rows[int(self.offsets[n]) : int(self.offsets[n + 1])]

    def close(self) -> None:
        self._f = None


def open_output(path: str | Path) -> Output:
    """Open what extract wrote: an ``.npz``, ``.safetensors`` or ``.jsonl``
    file, or a directory of shards (see :mod:`minibert.shards`). A
    .safetensors file or a directory is read lazily."""
    path = Path(path)
    if path.is_dir():
        from .shards import ShardedOutput

        return ShardedOutput(path)
    if not path.is_file():
        raise MinibertError(f"{path}: output file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            tokens = [str(t) for t in arrays.pop("tokens")]
            words = [str(w) for w in arrays.pop("words")] if "words" in arrays else None
            settings = json.loads(str(arrays.pop("settings")))
        elif path.suffix == ".safetensors":
            return SafetensorsOutput(path)
        elif path.suffix == ".jsonl":
            return _read_jsonl(path)
        else:
            raise MinibertError(f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)})")
    except (OSError, ValueError, KeyError) as e:
        raise MinibertError(f"{path}: not a minibert output ({e})") from None
    return Output(arrays, tokens, settings, pooled=settings["pool"] != "none", words=words)


def _read_jsonl(path: Path) -> Output:
    tokens, words, per_name, per_text = [], [], {}, {}
    word_level = False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinibertError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
            tokens.extend(obj["tokens"])
            per_text.setdefault("kept_tokens", []).append(len(obj["tokens"]))
            per_text.setdefault("num_tokens", []).append(obj.get("num_tokens", len(obj["tokens"])))
            if "words" in obj:
                word_level = True
                words.extend(obj["words"])
                per_text.setdefault("rows", []).append(len(obj["words"]))
                per_text.setdefault("spans", []).append(
                    np.asarray(obj["spans"], dtype=np.int64).reshape(-1, 2)
                )
                segments = obj.get("segments", [0] * len(obj["words"]))
                per_text.setdefault("segments", []).append(np.asarray(segments, dtype=np.int64))
            for layer in obj["layers"]:
                idx = layer["index"]
                name = "combined" if idx == "combined" else f"hidden_states.{idx}"
                per_name.setdefault(name, []).append(np.asarray(layer["values"]))
    pooled = not word_level and bool(per_name) and next(iter(per_name.values()))[0].ndim == 1
    if pooled:
        arrays = {name: np.stack(v) for name, v in per_name.items()}
    else:  # a text with no words has an empty list of values
        arrays = {
            name: np.concatenate([a for a in v if a.size] or [np.zeros((0, 0))])
            for name, v in per_name.items()
        }
    layers = [int(n.split(".")[1]) for n in arrays if n.startswith("hidden_states.")]
    kept = np.asarray(per_text.get("kept_tokens", []), dtype=np.int64)
    arrays |= {
        "offsets": _offsets(kept),
        "layers": np.asarray(layers, dtype=np.int64),
        "num_tokens": np.asarray(per_text.get("num_tokens", []), dtype=np.int64),
        "kept_tokens": kept,
    }
    if word_level:
        arrays |= {
            "token_offsets": arrays["offsets"],
            "offsets": _offsets(per_text["rows"]),
            "spans": np.concatenate(per_text["spans"]),
            "segments": np.concatenate(per_text["segments"]),
        }
    return Output(arrays, tokens, {}, pooled, words if word_level else None)
