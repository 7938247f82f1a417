"""Files -> features: read back what ``minibert extract`` wrote, trusting nothing.

:class:`OutputReader` is what every reader offers -- a single file
(:class:`FileOutput`: ``.npz``, ``.safetensors``, ``.jsonl``) and a directory
of shards (:class:`minibert.shards.ShardedOutput`) alike;
:func:`minibert.open_output` opens either. ``.safetensors`` and ``.npz``
files are read lazily: a text's rows when asked for, never more.

Nothing is trusted: on opening, every array's shape is checked against the
offsets (:func:`check_layout`) before any feature is read, so a damaged or
hand-edited file is one MinibertError naming it, never a wrong row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import MinibertError
from .files import os_reason, parse_json
from .layers import resolve_layer
from .npz import NpzArrays
from .records import FORMATS
from .records import offsets as _offsets
from .safetensors_file import SafetensorsFile, int_list


@runtime_checkable
class OutputReader(Protocol):
    """What any extract output offers, a single file or a directory of shards.

    ``settings``: the run's recorded settings (:meth:`ExtractSpec.to_settings`;
    empty for .jsonl, which records none); ``layers``: the stored
    hidden_states indices; ``num_texts``; ``pooled`` (one vector per text);
    ``names``: the feature arrays (``hidden_states.{i}`` or ``combined``);
    ``word_level``: rows are words (``--word-pool``), not tokens.

    ``tokens(n)``, ``words(n)`` and ``vectors(n, layer)`` give text n's
    strings and its (rows, H) -- or, pooled, (H,) -- array; ``layer`` is a
    feature name or a hidden_states index (negative: from the last layer).
    ``parts()`` yields the output as :class:`FileOutput` pieces (the file
    itself, or each shard), whose ``arrays`` are the whole arrays of that
    piece: only a piece has whole arrays, so statistics over a corpus that
    does not fit in memory go piece by piece. Close it, or use ``with``.
    """

    settings: dict
    layers: list[int]
    num_texts: int
    pooled: bool

    @property
    def names(self) -> list[str]: ...

    @property
    def word_level(self) -> bool: ...

    def tokens(self, n: int) -> list[str]: ...

    def words(self, n: int) -> list[str]: ...

    def vectors(self, n: int, name: str | int) -> np.ndarray: ...

    def parts(self) -> Iterator[FileOutput]: ...

    def close(self) -> None: ...

    def __enter__(self) -> OutputReader: ...

    def __exit__(self, *exc) -> None: ...


def text_index(n, num_texts: int) -> int:
    """``n`` as a text index of an output of ``num_texts`` texts, or a MinibertError."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise MinibertError(f"text index must be an integer, got {n!r}")
    if not 0 <= n < num_texts:
        raise MinibertError(f"text {n} out of range (this output holds {num_texts} texts)")
    return int(n)


def feature_name(name: str | int, names: list[str], num_hidden_layers: int | None) -> str:
    """A feature name, or a hidden_states index (negative: from the last
    layer, when the output records how many layers the model has), -> the
    name of a stored feature array; anything else is a MinibertError."""
    if isinstance(name, int | np.integer) and not isinstance(name, bool):
        i = int(name)
        if num_hidden_layers is not None:
            i = resolve_layer(i, num_hidden_layers + 1)
        name = f"hidden_states.{i}"
    if name not in names:
        raise MinibertError(f"no {name!r} in this output (has: {', '.join(names)})")
    return name


class FileOutput:
    """One output file read back: an :class:`OutputReader` with whole arrays.

    ``arrays``: every array of the file by name (the layout of
    :mod:`minibert.records`), a mapping that reads an array when it is first
    asked for (lazy for .npz and .safetensors; .jsonl is parsed whole):
    ``arrays["num_tokens"]`` / ``arrays["kept_tokens"]`` are each text's
    token counts before and after truncation, ``arrays["spans"]`` a
    word-level output's character spans. ``offsets`` / ``token_offsets``:
    text n owns rows ``offsets[n]:offsets[n+1]`` of the feature arrays, and
    tokens ``token_offsets[n]:token_offsets[n+1]``.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
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

    def _check(self, n: int, name: str | int) -> str:
        name = feature_name(name, self.names, self.settings.get("num_hidden_layers"))
        text_index(n, self.num_texts)
        return name

    def tokens(self, n: int) -> list[str]:
        n = text_index(n, self.num_texts)
        return self._tokens[self.token_offsets[n] : self.token_offsets[n + 1]]

    def words(self, n: int) -> list[str]:
        if self._words is None:
            raise MinibertError("this output has no words (it was not written with --word-pool)")
        n = text_index(n, self.num_texts)
        return self._words[self.offsets[n] : self.offsets[n + 1]]

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        name = self._check(n, name)
        a = self.arrays[name]
        if self.pooled:
            return a[n]
        return a[self.offsets[n] : self.offsets[n + 1]]

    def parts(self) -> Iterator[FileOutput]:
        yield self

    def close(self) -> None:
        close = getattr(self.arrays, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> FileOutput:
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
    if "layers" in settings and not int_list(settings["layers"]):
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


def _metadata_json(metadata: dict, key: str, source: str, expect: type):
    if key not in metadata:
        raise MinibertError(f"{source}: no {key!r} in the header metadata (not a minibert output?)")
    return parse_json(metadata[key], f"{source}: metadata {key!r}", expect)


class SafetensorsOutput(FileOutput):
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


def open_file(path: Path) -> FileOutput:
    """Open an output file by its extension: ``.npz``, ``.safetensors`` (both
    read lazily) or ``.jsonl``. Anything that is not a whole minibert output
    is one MinibertError naming the file and what is wrong."""
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


def _read_npz(path: Path) -> FileOutput:
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
        return FileOutput(arrays, tokens, settings, words=words, source=source)
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


def _read_jsonl(path: Path) -> FileOutput:
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


def _jsonl_output(path: Path, lines: _JsonlLines) -> FileOutput:
    """The arrays of a checked .jsonl output, as one in-memory :class:`FileOutput`."""
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
    return FileOutput(arrays, tokens, {}, pooled, words, source=source)
