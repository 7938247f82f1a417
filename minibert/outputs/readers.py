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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from minibert.encoder.layers import is_int, resolve_layer
from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS
from minibert.files import parse_json, stat_file
from minibert.outputs.jsonl import read_jsonl
from minibert.outputs.npz import LazyArrays, NpzArrays
from minibert.outputs.records import FORMATS
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
        self.source = source
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

    def __len__(self) -> int:
        """The number of texts."""
        return self.num_texts

    def __repr__(self) -> str:
        fmt = Path(self.source).suffix.lstrip(".") if self.source != "this output" else "in memory"
        names = self.names
        dtype = _header(self.arrays, names[0])[0].name if names else None
        return describe(self, self.source, fmt, dtype)

    def close(self) -> None:
        close = getattr(self.arrays, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> FileOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(reader: OutputReader, path: str, fmt: str, dtype: str | None) -> str:
    """One line saying what an output holds: where, its format, how many
    texts, which layers, the pooling (a .jsonl records none: pooled or not),
    the features' dtype, and words or attention when it holds them."""
    settings = reader.settings
    pool = settings.get("pool", "pooled" if reader.pooled else "none")
    fields = [
        f"{path!r}",
        f"format={fmt!r}",
        f"texts={reader.num_texts}",
        f"layers={reader.layers}",
        f"pool={pool!r}",
    ]
    if settings.get("combine", "none") != "none":
        fields.append(f"combine={settings['combine']!r}")
    fields.append(f"dtype={dtype!r}")
    if reader.word_level:
        fields.append(f"word_pool={settings.get('word_pool', 'yes')!r}")
    if reader.attention_layers:
        fields.append(f"attentions={reader.attention.kind!r}")
    return f"{type(reader).__name__}({', '.join(fields)})"


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
        return FileOutput(**read_jsonl(path))
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
