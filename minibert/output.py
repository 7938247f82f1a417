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
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MinibertError
from .files import os_reason, parse_json
from .npz import LazyArrays, NpzArrays, open_unchanged

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
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; an output is an ordinary file
        os.replace(tmp, path)
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

    Nothing is trusted: on opening, every array's shape is checked against
    the offsets (:func:`check_layout`) before any feature is read, so a
    damaged or hand-edited file is one error naming it, never a wrong row.
    """

    def __init__(
        self,
        arrays,
        tokens: list[str],
        settings: dict,
        pooled: bool | None = None,
        words: list[str] | None = None,
        source: str = "this output",
    ):
        self.arrays = arrays
        self._tokens = tokens
        self._words = words
        self.settings = settings
        self.pooled = settings_pooled(settings, source) if pooled is None else pooled
        self.offsets, self.token_offsets, self.layers = check_layout(
            arrays, tokens, words, self.pooled, source
        )
        self.num_texts = len(self.offsets) - 1

    @property
    def names(self) -> list[str]:
        return [k for k in self.arrays if k.startswith("hidden_states.") or k == "combined"]

    @property
    def word_level(self) -> bool:
        """Rows are words (``--word-pool``), not tokens."""
        return "token_offsets" in self.arrays

    def _text(self, n) -> int:
        """``n`` as a text index of this output, or a MinibertError."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise MinibertError(f"text index must be an integer, got {n!r}")
        if not 0 <= n < self.num_texts:
            raise MinibertError(f"text {n} out of range (this output holds {self.num_texts} texts)")
        return int(n)

    def _check(self, n: int, name: str | int) -> str:
        if isinstance(name, int | np.integer) and not isinstance(name, bool):
            i, states = int(name), self.settings.get("num_hidden_layers")
            if i < 0 and states is not None:
                i %= states + 1  # -1: the last layer, as in --layers
            name = f"hidden_states.{i}"
        if name not in self.names:
            raise MinibertError(f"no {name!r} in this output (has: {', '.join(self.names)})")
        self._text(n)
        return name

    def tokens(self, n: int) -> list[str]:
        n = self._text(n)
        return self._tokens[self.token_offsets[n] : self.token_offsets[n + 1]]

    def words(self, n: int) -> list[str]:
        if self._words is None:
            raise MinibertError("this output has no words (it was not written with --word-pool)")
        n = self._text(n)
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
        close = getattr(self.arrays, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- checking what was read ------------------------------------------------------


def _header(arrays, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of ``arrays[name]``, without reading it when the mapping is lazy."""
    header = getattr(arrays, "header", None)
    if header is not None:
        return header(name)
    a = arrays[name]
    return a.dtype, a.shape


def check_settings(settings, source: str, required: tuple[str, ...] = ("pool",)) -> dict:
    """The settings an output records, checked where readers rely on them:
    ``pool``, ``combine``, ``word_pool`` strings, ``layers`` a list of
    integers, ``num_hidden_layers`` an integer or null."""
    if not isinstance(settings, dict):
        raise MinibertError(f"{source}: settings are {type(settings).__name__}, not a JSON object")
    for key in required:
        if key not in settings:
            raise MinibertError(f"{source}: settings have no {key!r}")
    for key in ("pool", "combine", "word_pool"):
        if key in settings and not isinstance(settings[key], str):
            raise MinibertError(f"{source}: settings {key!r} is {settings[key]!r}, not a string")
    if "layers" in settings and not _int_list(settings["layers"]):
        raise MinibertError(f"{source}: settings 'layers' is {settings['layers']!r}, not a list of integers")
    states = settings.get("num_hidden_layers")
    if states is not None and not (_is_int(states) and states >= 0):
        raise MinibertError(f"{source}: settings 'num_hidden_layers' is {states!r}, not a count")
    return settings


def settings_pooled(settings: dict, source: str) -> bool:
    """Whether an output holds one vector per text (``pool`` is not none)."""
    return check_settings(settings, source)["pool"] != "none"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v) -> bool:
    return isinstance(v, list) and all(_is_int(i) for i in v)


def check_layout(
    arrays, tokens: list[str], words: list[str] | None, pooled: bool, source: str
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Check an output's arrays against each other before any feature is
    read: the offsets (0, then non-decreasing), every per-text array one row
    per text, every per-token and per-word array one row per token or word,
    as many token (word) strings as the offsets say, and one feature array
    per stored layer with the rows the offsets imply. A zip-bomb member or a
    hand-edited shape is refused here, from its header alone.

    Returns (offsets, token_offsets, layers)."""

    def spec(name: str, ndim: int, kinds: str = "iu") -> tuple[int, ...]:
        if name not in arrays:
            raise MinibertError(f"{source}: no {name!r} array (not a minibert output?)")
        dtype, shape = _header(arrays, name)
        if len(shape) != ndim or dtype.kind not in kinds:
            what = "integers" if kinds == "iu" else "floats"
            raise MinibertError(
                f"{source}: {name!r} is {dtype.name} of shape {shape}, expected {ndim}-D {what}"
            )
        return shape

    def offsets_of(name: str) -> np.ndarray:
        spec(name, 1)
        o = np.asarray(arrays[name]).astype(np.int64)
        if len(o) == 0 or o[0] != 0 or np.any(np.diff(o) < 0):
            raise MinibertError(f"{source}: {name!r} are not offsets (0, then non-decreasing)")
        return o

    def rows(name: str, length: int, of: str, trailing: tuple[int, ...] = ()) -> None:
        shape = spec(name, 1 + len(trailing))
        if shape != (length, *trailing):
            raise MinibertError(
                f"{source}: {name!r} has shape {shape}, expected {(length, *trailing)} ({of})"
            )

    offsets = offsets_of("offsets")
    n = len(offsets) - 1
    word_level = "token_offsets" in arrays
    token_offsets = offsets_of("token_offsets") if word_level else offsets
    if len(token_offsets) != n + 1:
        raise MinibertError(f"{source}: 'token_offsets' has {len(token_offsets)} entries, 'offsets' {n + 1}")
    num_rows, num_tokens = int(offsets[-1]), int(token_offsets[-1])
    for name in ("num_tokens", "kept_tokens"):
        rows(name, n, "one per text")
    if not np.array_equal(np.asarray(arrays["kept_tokens"]), np.diff(token_offsets)):
        raise MinibertError(f"{source}: 'kept_tokens' disagree with the offsets")
    spec("layers", 1)
    layers = [int(i) for i in np.asarray(arrays["layers"])]
    if "input_ids" in arrays:
        rows("input_ids", num_tokens, "one per token")
    if "index" in arrays:
        rows("index", n, "one per text")
    if len(tokens) != num_tokens or not all(isinstance(t, str) for t in tokens):
        raise MinibertError(f"{source}: {len(tokens)} token strings, the offsets say {num_tokens}")
    if word_level:
        if words is None or len(words) != num_rows or not all(isinstance(w, str) for w in words):
            got = "no" if words is None else len(words)
            raise MinibertError(f"{source}: {got} word strings, the offsets say {num_rows}")
        rows("spans", num_rows, "one per word", (2,))
        rows("segments", num_rows, "one per word")
    names = [k for k in arrays if k.startswith("hidden_states.") or k == "combined"]
    expected = ["combined"] if "combined" in names else [f"hidden_states.{i}" for i in layers]
    if sorted(names) != sorted(expected):
        raise MinibertError(f"{source}: feature arrays {sorted(names)} do not match the layers {layers}")
    want = n if pooled else num_rows
    per = "text" if pooled else "word" if word_level else "token"
    for name in names:
        shape = spec(name, 2, "f")
        if shape[0] != want:
            raise MinibertError(f"{source}: {name!r} has {shape[0]} rows, expected {want} (one per {per})")
    return offsets, token_offsets, layers


# -- .safetensors ----------------------------------------------------------------


#: safetensors dtype name -> NumPy dtype, for what extract writes (the inverse of SAFETENSORS_DTYPES).
READ_DTYPES = {name: np.dtype(dtype).newbyteorder("<") for dtype, name in SAFETENSORS_DTYPES.items()}


class SafetensorsFile(LazyArrays):
    """A .safetensors output's header, checked against the file, and its
    tensors read on demand -- whole, or a range of rows (a slice of the file).

    Read here rather than with ``safetensors.safe_open`` so that every way the
    file can be bad is a check with a message naming it: too short, a header
    length past the end, a header that is not a JSON object (too deep, huge
    numbers, lone surrogates: :func:`minibert.files.parse_json`), a dtype
    minibert never writes (F8, BF16, ...), a shape that is not a list of
    counts, data offsets outside the file or not the size the shape needs.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._identity = None
        with self._file() as (f, self._identity):
            self.metadata, self._specs, self._start = self._read_header(f)

    def _file(self):
        """The file, open for one read (:func:`minibert.npz.open_unchanged`)."""
        return open_unchanged(self.path, self._identity, "a .safetensors output")

    def _read_header(self, f) -> tuple[dict, dict, int]:
        path = self.path
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise MinibertError(f"{path}: {size} bytes, too short for a .safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise MinibertError(f"{path}: header length {n:,} runs past the end of the file ({size:,} bytes)")
        try:
            text = f.read(n).decode("utf-8")
        except UnicodeDecodeError:
            raise MinibertError(f"{path}: the header is not UTF-8 (not a .safetensors file?)") from None
        header = parse_json(text, f"{path}: header", dict)
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise MinibertError(f"{path}: header '__metadata__' is not a map of strings")
        data = size - 8 - n
        specs = {}
        for name, spec in header.items():
            where = f"{path}: tensor {name!r}"
            if not isinstance(spec, dict):
                raise MinibertError(f"{where}: its header entry is not a JSON object")
            dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
            if not isinstance(dtype, str) or dtype not in READ_DTYPES:
                raise MinibertError(
                    f"{where}: dtype {dtype!r} is not one minibert writes ({', '.join(READ_DTYPES)})"
                )
            if not _int_list(shape) or any(d < 0 for d in shape):
                raise MinibertError(f"{where}: shape {shape!r} is not a list of counts")
            if not _int_list(offsets) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1] <= data:
                raise MinibertError(
                    f"{where}: data_offsets {offsets!r} are not within the file's {data:,} data bytes"
                )
            need = math.prod(shape) * READ_DTYPES[dtype].itemsize
            if offsets[1] - offsets[0] != need:
                raise MinibertError(
                    f"{where}: holds {offsets[1] - offsets[0]:,} bytes, its shape {shape} needs {need:,}"
                )
            specs[name] = (READ_DTYPES[dtype], tuple(shape), offsets[0])
        return metadata, specs, 8 + n

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Tensor ``name``, or its rows ``start:stop`` (read from the file, nothing more)."""
        dtype, shape, offset = self._specs[name]
        if start is None:
            first, out_shape = 0, shape
        else:
            first, out_shape = start, (stop - start, *shape[1:])
        row = dtype.itemsize * math.prod(shape[1:]) if shape else dtype.itemsize
        out = np.empty(out_shape, dtype)
        if out.nbytes:
            with self._file() as (f, _):
                f.seek(self._start + offset + first * row)
                if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                    raise MinibertError(f"{self.path}: ended while reading {name!r} (the file changed?)")
        return out


def _metadata_json(metadata: dict, key: str, source: str, expect: type):
    if key not in metadata:
        raise MinibertError(f"{source}: no {key!r} in the header metadata (not a minibert output?)")
    return parse_json(metadata[key], f"{source}: metadata {key!r}", expect)


class SafetensorsOutput(Output):
    """One .safetensors output, read lazily: offsets, layer indices and token
    strings on open; a text's rows of one array when asked (a slice of the
    file, not the whole tensor)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = SafetensorsFile(self.path)
        try:
            meta, source = self._file.metadata, str(self.path)
            settings = _metadata_json(meta, "settings", source, dict)
            tokens = _metadata_json(meta, "tokens", source, list)
            words = _metadata_json(meta, "words", source, list) if "words" in meta else None
            super().__init__(self._file, tokens, settings, words=words, source=source)
        except BaseException:
            self._file.close()
            raise

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        name = self._check(n, name)
        if self.pooled:
            return self._file.read(name, n, n + 1)[0]
        return self._file.read(name, int(self.offsets[n]), int(self.offsets[n + 1]))


# -- opening any output ------------------------------------------------------------


def open_output(path: str | Path) -> Output:
    """Open what extract wrote: an ``.npz``, ``.safetensors`` or ``.jsonl``
    file, or a directory of shards (see :mod:`minibert.shards`). A
    .safetensors file, an .npz file and a directory are read lazily.
    Anything that is not a whole minibert output is one MinibertError
    naming the file and what is wrong."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"open_output: path must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        from .shards import ShardedOutput

        return ShardedOutput(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise MinibertError(f"{path}: output file not found") from None
    except OSError as e:
        raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".safetensors":
        return SafetensorsOutput(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    raise MinibertError(f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)})")


def _npz_strings(arrays: NpzArrays, name: str, source: str, ndim: int) -> np.ndarray:
    dtype, shape = arrays.header(name)
    if dtype.kind != "U" or len(shape) != ndim:
        raise MinibertError(f"{source}: {name!r} is {dtype.name} of shape {shape}, not {ndim}-D strings")
    return arrays[name]


def _read_npz(path: Path) -> Output:
    arrays = NpzArrays(path, "an .npz output")
    source = str(path)
    try:
        for name in ("settings", "tokens"):
            if name not in arrays:
                raise MinibertError(f"{source}: no {name!r} array (not a minibert output?)")
        settings = parse_json(
            str(_npz_strings(arrays, "settings", source, 0)[()]), f"{source}: 'settings'", dict
        )
        tokens = _npz_strings(arrays, "tokens", source, 1).tolist()
        words = _npz_strings(arrays, "words", source, 1).tolist() if "words" in arrays else None
        return Output(arrays, tokens, settings, words=words, source=source)
    except BaseException:
        arrays.close()
        raise


# -- .jsonl ------------------------------------------------------------------------


def _jsonl_values(layer, where: str, rows: int | None) -> tuple[str, np.ndarray]:
    """One ``{"index", "values"}`` entry of a .jsonl line: (name, values)."""
    if not isinstance(layer, dict) or "values" not in layer:
        raise MinibertError(f"{where}: each of 'layers' must be an object with 'index' and 'values'")
    idx = layer.get("index")
    if idx != "combined" and not _is_int(idx):
        raise MinibertError(f'{where}: layer index {idx!r} is not an integer or "combined"')
    name = "combined" if idx == "combined" else f"hidden_states.{idx}"
    try:
        values = np.asarray(layer["values"], dtype=np.float64)
    except (ValueError, TypeError):
        raise MinibertError(
            f"{where}: {name} values are not a list of numbers, or rows of equal length"
        ) from None
    if values.shape == (0,):  # a text with no words has an empty list of values
        values = values.reshape(0, 0)
    if values.ndim not in (1, 2) or (values.ndim == 2 and rows is not None and len(values) != rows):
        raise MinibertError(f"{where}: {name} values have shape {values.shape}, expected ({rows}, H) or (H,)")
    return name, values


def _jsonl_strings(obj: dict, key: str, where: str) -> list[str]:
    v = obj.get(key)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise MinibertError(f"{where}: {key!r} must be a list of strings")
    return v


def _read_jsonl(path: Path) -> Output:
    """A .jsonl output, every line checked (:class:`_JsonlLines`). Read as
    bytes and decoded line by line, so a bad byte is reported at its line."""
    lines = _JsonlLines(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None
    with f:
        try:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise MinibertError(f"{path}: line {lineno} is not valid UTF-8 ({e.reason})") from None
                lines.add(parse_json(line, f"{path}: line {lineno}", dict), lineno)
        except OSError as e:
            raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None
    return _jsonl_output(path, lines)


class _JsonlLines:
    """The lines of a .jsonl output, each checked as it is added: its
    ``index`` in order, string tokens (and words, spans, segments), and per
    layer one row of values per token (word), or one vector -- the same
    layers, and the same kind, on every line."""

    def __init__(self, path: Path):
        self.path = path
        self.tokens: list[str] = []
        self.words: list[str] = []
        self.per_name: dict[str, list[np.ndarray]] = {}
        self.per_text: dict[str, list] = {}
        self.word_level: bool | None = None
        self.layer_names: list[str] | None = None
        self.ndims: set[int] = set()

    def add(self, obj: dict, lineno: int) -> None:
        where = f"{self.path}: line {lineno}"
        if obj.get("index") != lineno - 1:
            raise MinibertError(f"{where}: index is {obj.get('index')!r}, expected {lineno - 1}")
        toks = _jsonl_strings(obj, "tokens", where)
        if self.word_level is None:
            self.word_level = "words" in obj
        if ("words" in obj) != self.word_level:
            raise MinibertError(f"{where}: 'words' on some lines and not on others")
        num = obj.get("num_tokens", len(toks))
        if not _is_int(num) or num < len(toks):
            raise MinibertError(f"{where}: num_tokens {num!r} is not a count >= its {len(toks)} tokens")
        self.tokens.extend(toks)
        self.per_text.setdefault("kept_tokens", []).append(len(toks))
        self.per_text.setdefault("num_tokens", []).append(num)
        rows = len(toks)
        if self.word_level:
            ws = _jsonl_strings(obj, "words", where)
            rows = len(ws)
            self.words.extend(ws)
            self.per_text.setdefault("rows", []).append(rows)
            spans = _jsonl_ints(obj.get("spans"), (rows, 2), "spans", where)
            segments = _jsonl_ints(obj.get("segments", [0] * rows), (rows,), "segments", where)
            self.per_text.setdefault("spans", []).append(spans)
            self.per_text.setdefault("segments", []).append(segments)
        layers = obj.get("layers")
        if not isinstance(layers, list):
            raise MinibertError(f"{where}: 'layers' must be a list")
        got = [_jsonl_values(layer, where, rows) for layer in layers]
        names, ndims = [name for name, _ in got], {v.ndim for _, v in got}
        if self.layer_names is None:
            self.layer_names, self.ndims = names, ndims
        if names != self.layer_names or len(set(names)) != len(names):
            raise MinibertError(f"{where}: layers {names} differ from the first line's {self.layer_names}")
        if ndims != self.ndims:
            raise MinibertError(f"{where}: values of {sorted(ndims)} dimensions, unlike the first line")
        for name, values in got:
            self.per_name.setdefault(name, []).append(values)


def _jsonl_ints(v, shape: tuple[int, ...], key: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        a = None
    if a is None or (a.size and a.shape != shape) or (not a.size and math.prod(shape)):
        raise MinibertError(f"{where}: {key!r} must be integers of shape {shape}")
    return a.reshape(shape)


def _jsonl_output(path: Path, lines: _JsonlLines) -> Output:
    """The arrays of a checked .jsonl output, as one in-memory :class:`Output`."""
    source = str(path)
    tokens, per_name, per_text = lines.tokens, lines.per_name, lines.per_text
    words = lines.words if lines.word_level else None
    kinds = {v.ndim for values in per_name.values() for v in values}
    pooled = words is None and kinds == {1}
    if len(kinds) > 1:
        raise MinibertError(f"{source}: some lines hold one vector per text, others one per token")
    widths = {name: {v.shape[-1] for v in values if v.size} for name, values in per_name.items()}
    for name, w in widths.items():
        if len(w) > 1:
            raise MinibertError(f"{source}: {name} has vectors of different widths {sorted(w)}")
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
    if words is not None:
        arrays |= {
            "token_offsets": arrays["offsets"],
            "offsets": _offsets(per_text["rows"]),
            "spans": np.concatenate(per_text["spans"]).reshape(-1, 2),
            "segments": np.concatenate(per_text["segments"]),
        }
    return Output(arrays, tokens, {}, pooled, words, source=source)
