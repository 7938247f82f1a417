"""Files -> features: read back what ``minibert extract`` wrote, trusting nothing.

:class:`OutputReader` is what every reader offers -- a single file
(:class:`FileOutput`: ``.npz``, ``.safetensors``, ``.jsonl``) and a directory
of shards (:class:`minibert.outputs.shards.ShardedOutput`) alike;
:func:`minibert.open_output` opens either. ``.safetensors`` and ``.npz``
files are read lazily: nothing before it is asked for. A ``.safetensors``
file gives a text's rows alone; an ``.npz`` reads a feature array whole on
its first use and keeps it (a text's rows of a compressed member cannot be
reached without reading what comes before them), and its attention maps and
statistics a text at a time.

Nothing is trusted: on opening, every array's shape is checked against the
offsets (:func:`check_layout`) before any feature is read, so a damaged or
hand-edited file is one MinibertError naming it, never a wrong row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from minibert.encoder.layers import is_int, resolve_layer
from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS
from minibert.files import open_regular, os_reason, parse_json, stat_file
from minibert.outputs.npz import LazyArrays, NpzArrays
from minibert.outputs.records import FORMATS
from minibert.outputs.records import offsets as _offsets
from minibert.outputs.safetensors_file import SafetensorsFile
from minibert.outputs.spec import OUTPUT_DTYPES


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

    Attention (``extract --attentions`` or ``--attention-stats``):
    ``attention_layers`` the encoder layers held (empty: none);
    ``attentions(n, layer)`` text n's (h, k, k) probabilities over its k
    tokens at encoder layer ``layer`` (1..L, negative from the last), read
    alone; ``attention_stats(n)`` statistic -> (L', h) of text n
    (:mod:`minibert.features.attention_stats`). Asking an output for what it does not
    hold is a MinibertError saying which option writes it.
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

    @property
    def attention_layers(self) -> list[int]: ...

    def attentions(self, n: int, layer: int) -> np.ndarray: ...

    def attention_stats(self, n: int) -> dict[str, np.ndarray]: ...

    def parts(self) -> Iterator[FileOutput]: ...

    def close(self) -> None: ...

    def __enter__(self) -> OutputReader: ...

    def __exit__(self, *exc) -> None: ...


def text_index(n, num_texts: int) -> int:
    """``n`` as a text index of an output of ``num_texts`` texts, or a MinibertError."""
    if not is_int(n):
        raise MinibertError(f"text index must be an integer, got {n!r}")
    if not 0 <= n < num_texts:
        raise MinibertError(f"text {n} out of range (this output holds {num_texts} texts)")
    return int(n)


def feature_name(name: str | int, names: list[str], num_hidden_layers: int | None) -> str:
    """A feature name, or a hidden_states index (negative: from the last
    layer, when the output records how many layers the model has), -> the
    name of a stored feature array; anything else is a MinibertError."""
    if is_int(name):
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
    :mod:`minibert.outputs.records`), a mapping that reads an array when it is first
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
        heads: int | None = None,
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
        self.attention = check_attention_layout(arrays, np.diff(self.token_offsets), settings, heads, source)
        if settings:  # .npz and .safetensors record what the run wrote (.jsonl: nothing)
            check_agreement(arrays, settings, self.layers, source)

    @property
    def names(self) -> list[str]:
        return [k for k in self.arrays if k.startswith("hidden_states.") or k == "combined"]

    @property
    def attention_layers(self) -> list[int]:
        return list(self.attention.layers)

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

    def attentions(self, n: int, layer: int) -> np.ndarray:
        """Text n's (h, k, k) attention probabilities at encoder layer
        ``layer``: its values alone are read (a slice of the file)."""
        require_attention(self.attention, "maps")
        i = attention_layer(layer, self.attention, self.settings.get("num_hidden_layers"))
        n = text_index(n, self.num_texts)
        k = int(self.token_offsets[n + 1] - self.token_offsets[n])
        start, stop = self.attention.offsets[n : n + 2]
        values = self._read_rows(f"attentions.{i}", int(start), int(stop))
        return values.reshape(self.attention.heads, k, k)  # (h k k,) -> (h, k, k)

    def attention_stats(self, n: int) -> dict[str, np.ndarray]:
        """Text n's attention statistics: name -> (L', h), layers as ``attention_layers``."""
        require_attention(self.attention, "stats")
        n = text_index(n, self.num_texts)
        return {s: self._read_rows(f"attention_stats.{s}", n, n + 1)[0] for s in STATS}

    def _read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``name``: read alone from a lazy file, else sliced."""
        if isinstance(self.arrays, LazyArrays):
            return self.arrays.read_rows(name, start, stop)
        return self.arrays[name][start:stop]

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


def int_list(v) -> bool:
    """A JSON list of integers (not booleans)."""
    return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)


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
    integers, ``num_hidden_layers`` an integer or null; ``attentions`` maps
    or stats and ``num_attention_heads`` a positive count, both or neither."""
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
    if states is not None and not (is_int(states) and states >= 0):
        raise MinibertError(f"{source}: settings 'num_hidden_layers' is {states!r}, not a count")
    layers = settings.get("layers", [])
    if layers and (min(layers) < 0 or (states is not None and max(layers) > states)):
        raise MinibertError(
            f"{source}: settings 'layers' {layers} are not hidden_states indices "
            f"0..{'L' if states is None else states} (settings 'num_hidden_layers')"
        )
    if "output_dtype" in settings and settings["output_dtype"] not in OUTPUT_DTYPES:
        raise MinibertError(
            f"{source}: settings 'output_dtype' is {settings['output_dtype']!r}, not one of "
            f"{', '.join(OUTPUT_DTYPES)}"
        )
    if settings.get("attentions", "maps") not in ("maps", "stats"):
        raise MinibertError(
            f"{source}: settings 'attentions' is {settings['attentions']!r}, not maps or stats"
        )
    if ("attentions" in settings) != ("num_attention_heads" in settings):
        raise MinibertError(f"{source}: settings record one of 'attentions' and 'num_attention_heads' only")
    heads = settings.get("num_attention_heads", 1)
    if not (is_int(heads) and heads >= 1):
        raise MinibertError(f"{source}: settings 'num_attention_heads' is {heads!r}, not a positive count")
    return settings


def check_agreement(arrays, settings: dict, layers: list[int], source: str) -> None:
    """What the settings record against what the arrays hold (each already
    checked alone, :func:`check_settings` and :func:`check_layout`): the
    stored ``layers`` are the settings' ``layers``; a ``combined`` array
    exactly when ``combine`` is not none; word rows (``token_offsets``)
    exactly when ``word_pool`` is not none; features and attention maps in
    ``output_dtype``, statistics in float32 (float64 with a float64 output).
    Keys the settings lack are not compared. One MinibertError naming the
    file and the field otherwise."""
    if "layers" in settings and list(settings["layers"]) != layers:
        raise MinibertError(f"{source}: settings 'layers' are {settings['layers']}, the arrays hold {layers}")
    combined = "combined" in arrays
    if "combine" in settings and (settings["combine"] != "none") != combined:
        holds = "a 'combined' array" if combined else "one array per layer"
        raise MinibertError(
            f"{source}: settings 'combine' is {settings['combine']!r}, the arrays hold {holds}"
        )
    words = "token_offsets" in arrays
    if "word_pool" in settings and (settings["word_pool"] != "none") != words:
        holds = "one row per word" if words else "one row per token"
        raise MinibertError(
            f"{source}: settings 'word_pool' is {settings['word_pool']!r}, the arrays hold {holds}"
        )
    if "output_dtype" not in settings:
        return
    out = np.dtype(settings["output_dtype"])
    stats = np.dtype(np.float64 if out == np.float64 else np.float32)
    for name in arrays:
        if name.startswith(("hidden_states.", "attentions.")) or name == "combined":
            want = out
        elif name.startswith("attention_stats."):
            want = stats
        else:
            continue
        dtype = _header(arrays, name)[0]
        if dtype != want:
            raise MinibertError(
                f"{source}: {name!r} is {dtype.name}, settings 'output_dtype' {out.name} says {want.name}"
            )


def settings_pooled(settings: dict, source: str) -> bool:
    """Whether an output holds one vector per text (``pool`` is not none)."""
    return check_settings(settings, source)["pool"] != "none"


def _spec(arrays, name: str, ndim: int, source: str, kinds: str = "iu") -> tuple[int, ...]:
    """The shape of ``arrays[name]``, which must exist and be ``ndim``-D of ``kinds`` (from its header)."""
    if name not in arrays:
        raise MinibertError(f"{source}: no {name!r} array (not a minibert output?)")
    dtype, shape = _header(arrays, name)
    if len(shape) != ndim or dtype.kind not in kinds:
        what = "integers" if kinds == "iu" else "floats"
        raise MinibertError(f"{source}: {name!r} is {dtype.name} of shape {shape}, expected {ndim}-D {what}")
    return shape


def _offsets_of(arrays, name: str, source: str) -> np.ndarray:
    """``arrays[name]`` as offsets: 1-D integers, 0, then non-decreasing."""
    _spec(arrays, name, 1, source)
    o = np.asarray(arrays[name]).astype(np.int64)
    if len(o) == 0 or o[0] != 0 or np.any(np.diff(o) < 0):
        raise MinibertError(f"{source}: {name!r} are not offsets (0, then non-decreasing)")
    return o


def _rows(arrays, name: str, length: int, of: str, source: str, trailing: tuple[int, ...] = ()) -> None:
    """``arrays[name]`` has ``length`` rows (``of``: what a row is) of shape ``trailing``."""
    shape = _spec(arrays, name, 1 + len(trailing), source)
    if shape != (length, *trailing):
        raise MinibertError(f"{source}: {name!r} has shape {shape}, expected {(length, *trailing)} ({of})")


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
    offsets = _offsets_of(arrays, "offsets", source)
    n = len(offsets) - 1
    word_level = "token_offsets" in arrays
    token_offsets = _offsets_of(arrays, "token_offsets", source) if word_level else offsets
    if len(token_offsets) != n + 1:
        raise MinibertError(f"{source}: 'token_offsets' has {len(token_offsets)} entries, 'offsets' {n + 1}")
    num_rows, num_tokens = int(offsets[-1]), int(token_offsets[-1])
    for name in ("num_tokens", "kept_tokens"):
        _rows(arrays, name, n, "one per text", source)
    if not np.array_equal(np.asarray(arrays["kept_tokens"]), np.diff(token_offsets)):
        raise MinibertError(f"{source}: 'kept_tokens' disagree with the offsets")
    _spec(arrays, "layers", 1, source)
    layers = [int(i) for i in np.asarray(arrays["layers"])]
    if "input_ids" in arrays:
        _rows(arrays, "input_ids", num_tokens, "one per token", source)
    if "index" in arrays:
        _rows(arrays, "index", n, "one per text", source)
    if len(tokens) != num_tokens or not all(isinstance(t, str) for t in tokens):
        raise MinibertError(f"{source}: {len(tokens)} token strings, the offsets say {num_tokens}")
    if word_level:
        if words is None or len(words) != num_rows or not all(isinstance(w, str) for w in words):
            got = "no" if words is None else len(words)
            raise MinibertError(f"{source}: {got} word strings, the offsets say {num_rows}")
        _rows(arrays, "spans", num_rows, "one per word", source, (2,))
        _rows(arrays, "segments", num_rows, "one per word", source)
    names = [k for k in arrays if k.startswith("hidden_states.") or k == "combined"]
    expected = ["combined"] if "combined" in names else [f"hidden_states.{i}" for i in layers]
    if sorted(names) != sorted(expected):
        raise MinibertError(f"{source}: feature arrays {sorted(names)} do not match the layers {layers}")
    want = n if pooled else num_rows
    per = "text" if pooled else "word" if word_level else "token"
    for name in names:
        shape = _spec(arrays, name, 2, source, "f")
        if shape[0] != want:
            raise MinibertError(f"{source}: {name!r} has {shape[0]} rows, expected {want} (one per {per})")
    return offsets, token_offsets, layers


@dataclass(frozen=True)
class AttentionLayout:
    """What an output holds of the attention: ``kind`` "maps", "stats" or
    None; the encoder ``layers`` they are of; ``heads`` h; for maps, the
    (N + 1,) ``offsets`` of each text's h k^2 values in ``attentions.{i}``."""

    kind: str | None = None
    layers: tuple[int, ...] = ()
    heads: int | None = None
    offsets: np.ndarray | None = None


def check_attention_layout(
    arrays, kept: np.ndarray, settings: dict, heads: int | None, source: str
) -> AttentionLayout:
    """Check an output's attention arrays (:mod:`minibert.outputs.records`) before
    any is read: maps or statistics, not both, and what the settings record
    (``attentions``; a .jsonl records no settings); ``attention_layers``
    distinct encoder layers (1..L), the selected ``layers`` but 0; for maps,
    ``attention_offsets`` exactly h k_n^2 per text (``kept`` the k_n) and
    one 1-D float array per layer of that length; for statistics, every
    statistic (N, L', h) floats. ``heads``: h, from the settings'
    ``num_attention_heads`` when they record it."""
    found = {k.partition(".")[0] for k in arrays if k.startswith(("attentions.", "attention_stats."))}
    if len(found) > 1:
        raise MinibertError(f"{source}: holds both attention maps and attention statistics")
    kind = {"attentions": "maps", "attention_stats": "stats"}.get(next(iter(found), ""))
    if settings:  # .npz and .safetensors record what the run wrote
        recorded = settings.get("attentions", "none")
        if recorded != (kind or "none"):
            holds = {"maps": "attention maps", "stats": "attention statistics"}.get(kind, "no attention")
            raise MinibertError(f"{source}: settings record attentions {recorded!r}, the arrays hold {holds}")
        heads = settings.get("num_attention_heads")
    if kind is None:
        for name in ("attention_layers", "attention_offsets"):
            if name in arrays:
                raise MinibertError(f"{source}: {name!r} without attention maps or statistics")
        return AttentionLayout()
    if not is_int(heads) or heads < 1:
        raise MinibertError(f"{source}: the number of attention heads is {heads!r}, not a positive count")
    _spec(arrays, "attention_layers", 1, source)
    layers = tuple(int(i) for i in np.asarray(arrays["attention_layers"]))
    selected = settings.get("layers")
    top = settings.get("num_hidden_layers")
    if (
        not layers
        or len(set(layers)) != len(layers)
        or min(layers) < 1
        or (top is not None and max(layers) > top)
        or (selected is not None and list(layers) != [i for i in selected if i >= 1])
    ):
        raise MinibertError(
            f"{source}: 'attention_layers' {list(layers)} are not the selected encoder layers"
        )
    n = len(kept)
    if kind == "stats":
        if "attention_offsets" in arrays:
            raise MinibertError(f"{source}: 'attention_offsets' in an output of attention statistics")
        names = sorted(k for k in arrays if k.startswith("attention_stats."))
        if names != sorted(f"attention_stats.{s}" for s in STATS):
            raise MinibertError(f"{source}: attention statistics {names} are not {', '.join(STATS)}")
        for name in names:
            shape = _spec(arrays, name, 3, source, "f")
            if shape != (n, len(layers), heads):
                raise MinibertError(
                    f"{source}: {name!r} has shape {shape}, expected {(n, len(layers), heads)} "
                    "(texts, layers, heads)"
                )
        return AttentionLayout(kind, layers, heads)
    offsets = _offsets_of(arrays, "attention_offsets", source)
    if len(offsets) != n + 1 or not np.array_equal(np.diff(offsets), heads * np.asarray(kept) ** 2):
        raise MinibertError(
            f"{source}: 'attention_offsets' disagree with {heads} heads x (kept_tokens)^2 values per text"
        )
    names = sorted(k for k in arrays if k.startswith("attentions."))
    if names != sorted(f"attentions.{i}" for i in layers):
        raise MinibertError(
            f"{source}: attention maps {names} do not match 'attention_layers' {list(layers)}"
        )
    for name in names:
        shape = _spec(arrays, name, 1, source, "f")
        if shape != (int(offsets[-1]),):
            raise MinibertError(
                f"{source}: {name!r} holds {shape[0]} values, 'attention_offsets' say {int(offsets[-1])}"
            )
    return AttentionLayout(kind, layers, heads, offsets)


def attention_layer(layer, layout: AttentionLayout, num_hidden_layers: int | None) -> int:
    """An encoder layer (1..L; negative: from the last, when the layer count
    is known) whose maps or statistics an output holds, or a MinibertError."""
    if not is_int(layer):
        raise MinibertError(f"attention layer must be an integer, got {layer!r}")
    i = int(layer)
    if num_hidden_layers is not None:
        i = resolve_layer(i, num_hidden_layers + 1, "attention layer", first=1)
    if i not in layout.layers:
        held = ", ".join(map(str, layout.layers))
        raise MinibertError(f"no attention of layer {i} in this output (it holds layers {held})")
    return i


def require_attention(layout: AttentionLayout, kind: str) -> None:
    """A MinibertError unless the output holds attention ``kind`` ("maps" or "stats")."""
    if layout.kind == kind:
        return
    option = {"maps": "--attentions", "stats": "--attention-stats"}
    what = {"maps": "attention maps", "stats": "attention statistics"}
    if layout.kind is None:
        raise MinibertError(f"this output has no {what[kind]} (it was not written with {option[kind]})")
    raise MinibertError(
        f"this output has {what[layout.kind]}, not {what[kind]} (written with {option[layout.kind]}, "
        f"not {option[kind]})"
    )


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
    stat_file(path, "output file not found")
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


def _json_numbers(values, nulls: bool = False, ints: bool = False) -> bool:
    """Whether ``values`` is JSON numbers (``ints``: integers) in nested lists (``nulls``:
    or null), checked by type: NumPy would read ``true`` as 1.0 (a bool is an int in
    Python), ``"1.5"`` as 1.5 and, as an integer, 1.5 as 1."""
    allowed = ({int} if ints else {int, float}) | ({type(None)} if nulls else set())
    stack = [values]
    while stack:
        v = stack.pop()
        if type(v) is not list:
            if type(v) not in allowed:
                return False
            continue
        types = set(map(type, v))
        if list in types:
            stack.extend(x for x in v if type(x) is list)
            types.discard(list)
        if not types <= allowed:
            return False
    return True


def _jsonl_values(layer, where: str, rows: int | None) -> tuple[str, np.ndarray]:
    """One ``{"index", "values"}`` entry of a .jsonl line: (name, values)."""
    if not isinstance(layer, dict) or "values" not in layer:
        raise MinibertError(f"{where}: each of 'layers' must be an object with 'index' and 'values'")
    idx = layer.get("index")
    if idx != "combined" and not is_int(idx):
        raise MinibertError(f'{where}: layer index {idx!r} is not an integer or "combined"')
    name = "combined" if idx == "combined" else f"hidden_states.{idx}"
    try:
        values = np.asarray(layer["values"], dtype=np.float64) if _json_numbers(layer["values"]) else None
    except (ValueError, TypeError):
        values = None
    if values is None or np.isnan(values).any():  # NumPy reads a JSON null as NaN
        raise MinibertError(f"{where}: {name} values are not a list of numbers, or rows of equal length")
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
    with open_regular(path, "a .jsonl output") as f:
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
        self.attention: _JsonlAttention | None = None

    def add(self, obj: dict, lineno: int) -> None:
        where = f"{self.path}: line {lineno}"
        if type(obj.get("index")) is not int or obj["index"] != lineno - 1:
            raise MinibertError(f"{where}: index is {obj.get('index')!r}, expected {lineno - 1}")
        toks = _jsonl_strings(obj, "tokens", where)
        if self.word_level is None:
            self.word_level = "words" in obj
        if ("words" in obj) != self.word_level:
            raise MinibertError(f"{where}: 'words' on some lines and not on others")
        num = obj.get("num_tokens", len(toks))
        if not is_int(num) or num < len(toks):
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
        if self.attention is None:
            self.attention = _JsonlAttention(obj, where)
        self.attention.add(obj, len(toks), where)


class _JsonlAttention:
    """The attention maps (``"attentions": [{"index": i, "values": (h, k, k)}]``)
    or statistics (``"attention_stats": {"layers": [...], name: (L', h)}``)
    of a .jsonl output's lines, each line checked as it is added: the kind
    of the first line on every line, the same layers and heads, k its tokens."""

    def __init__(self, first: dict, where: str):
        self.kind = "maps" if "attentions" in first else "stats" if "attention_stats" in first else None
        if "attentions" in first and "attention_stats" in first:
            raise MinibertError(f"{where}: holds both 'attentions' and 'attention_stats'")
        self.layers: list[int] | None = None
        self.heads: int | None = None
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, obj: dict, k: int, where: str) -> None:
        kind = "maps" if "attentions" in obj else "stats" if "attention_stats" in obj else None
        if kind != self.kind or ("attentions" in obj and "attention_stats" in obj):
            key = {"maps": "'attentions'", "stats": "'attention_stats'", None: "no attention"}
            raise MinibertError(f"{where}: {key[kind]}, unlike the first line ({key[self.kind]})")
        if kind == "maps":
            self._add_maps(obj["attentions"], k, where)
        elif kind == "stats":
            self._add_stats(obj["attention_stats"], where)

    def _same(self, layers: list, heads: int, where: str) -> None:
        if not all(is_int(i) for i in layers) or len(set(layers)) != len(layers):
            raise MinibertError(f"{where}: attention layers {layers} are not distinct integers")
        if self.layers is None:
            self.layers, self.heads = layers, heads
        if layers != self.layers:
            raise MinibertError(
                f"{where}: attention layers {layers} differ from the first line's {self.layers}"
            )
        if heads != self.heads:
            raise MinibertError(f"{where}: {heads} attention heads, the first line has {self.heads}")

    def _add_maps(self, maps, k: int, where: str) -> None:
        if not isinstance(maps, list) or not all(isinstance(m, dict) and "values" in m for m in maps):
            raise MinibertError(f"{where}: 'attentions' must be a list of objects with 'index' and 'values'")
        layers = [m.get("index") for m in maps]
        bad = [i for i in layers if not is_int(i)]
        if bad:
            raise MinibertError(f"{where}: attention layer index {bad[0]!r} is not an integer")
        arrays = []
        for i, m in zip(layers, maps, strict=True):
            a = _jsonl_floats(m["values"], f"attentions of layer {i}", where)
            if k == 0 and a.ndim == 2 and a.shape[1] == 0:  # h empty maps are written [[], ...]
                a = a.reshape(len(a), 0, 0)
            if a.ndim != 3 or a.shape[1:] != (k, k):
                raise MinibertError(
                    f"{where}: attentions of layer {i} have shape {a.shape}, expected (h, {k}, {k})"
                )
            arrays.append(a)
        self._same(layers, arrays[0].shape[0] if arrays else None, where)
        for i, a in zip(layers, arrays, strict=True):
            self.values.setdefault(f"attentions.{i}", []).append(a.reshape(-1))

    def _add_stats(self, stats, where: str) -> None:
        if not isinstance(stats, dict) or sorted(stats) != sorted(["layers", *STATS]):
            raise MinibertError(f"{where}: 'attention_stats' must hold 'layers' and {', '.join(STATS)}")
        layers = stats["layers"]
        if not isinstance(layers, list):
            raise MinibertError(f"{where}: 'attention_stats' 'layers' must be a list of encoder layers")
        arrays = {s: _jsonl_floats(stats[s], f"attention_stats {s!r}", where, nulls=True) for s in STATS}
        shapes = {a.shape for a in arrays.values()}
        shape = next(iter(shapes))
        if len(shapes) != 1 or len(shape) != 2 or shape[0] != len(layers):
            raise MinibertError(
                f"{where}: attention statistics of shapes {sorted(shapes)}, expected ({len(layers)}, h) each"
            )
        self._same(layers, shape[1], where)
        for s, a in arrays.items():
            self.values.setdefault(f"attention_stats.{s}", []).append(a)

    def arrays(self, kept: np.ndarray) -> dict[str, np.ndarray]:
        """The attention arrays of :mod:`minibert.outputs.records` (none without)."""
        if self.kind is None:
            return {}
        out = {"attention_layers": np.asarray(self.layers, dtype=np.int64)}
        if self.kind == "maps":
            out["attention_offsets"] = _offsets(self.heads * kept**2)
            return out | {name: np.concatenate(v) for name, v in self.values.items()}
        return out | {name: np.stack(v) for name, v in self.values.items()}


def _jsonl_floats(values, what: str, where: str, nulls: bool = False) -> np.ndarray:
    """Nested lists of numbers as a float64 array (``nulls``: null is NaN)."""
    try:
        a = np.asarray(values, dtype=np.float64) if _json_numbers(values, nulls) else None
    except (ValueError, TypeError):
        a = None
    if a is None or (not nulls and np.isnan(a).any()):
        raise MinibertError(f"{where}: {what} are not lists of numbers of equal lengths")
    return a


def _jsonl_ints(v, shape: tuple[int, ...], key: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.int64) if _json_numbers(v, ints=True) else None
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
    attention = lines.attention
    if attention is not None:
        arrays |= attention.arrays(kept)
    heads = attention.heads if attention is not None else None
    return FileOutput(arrays, tokens, {}, pooled, words, source=source, heads=heads)
