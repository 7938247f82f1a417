"""What one ``minibert extract`` run computes: :class:`ExtractSpec`.

One frozen, validated record of a run -- which layers, how tokens and
layers are reduced, how long texts are handled, batch and chunk sizes,
dtypes, and which model (its path and the sha256 of every file it was read
from). Every output records it as its ``settings`` (a JSON object, always
the same keys in the same order, so equal runs write equal bytes), and a
resumed run refuses to continue unless the recorded spec equals its own.

Every rule about the fields, alone or together, is checked here, once, and
each message names the field the way the library spells it (``stride``); a
caller that spells fields differently -- the command line's ``--stride`` --
renders the same error with its own names (:meth:`OptionError.named`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from minibert.encoder.layers import is_int, resolve_layers
from minibert.errors import MinibertError
from minibert.features.pooling import COMBINES, POOLS
from minibert.features.words import HOWS
from minibert.files import sha256_file
from minibert.model import DTYPES

LONG_MODES = ("truncate", "window")
OUTPUT_DTYPES = ("float16", "float32", "float64")
#: What a run records of the attention probabilities: nothing, the maps, or per-head statistics.
ATTENTIONS = ("none", "maps", "stats")

#: Fields an output records only when they are used (a run without them writes
#: the settings of before they existed, byte for byte, so old outputs resume).
OPTIONAL_FIELDS = ("attentions", "num_attention_heads")

#: Texts per chunk (and per shard of a sharded output) unless told otherwise.
CHUNK_SIZE = 1000


class OptionError(MinibertError):
    """A bad option (a field of a spec, or how to run it).

    ``template`` names the options as ``{field}``; ``values`` fills the rest.
    ``str(e)`` names the fields as the library spells them (``stride``);
    :meth:`named` as a caller does, e.g. the command line's ``--stride``.
    Values are never read as templates, so braces in them are safe.
    """

    def __init__(self, template: str, **values):
        self.template = template
        self.values = values
        super().__init__(self.named(lambda name: name))

    def named(self, name: Callable[[str], str]) -> str:
        """The message, with each field spelt ``name(field)``."""
        return self.template.format_map(_Names(name, self.values))

    def __reduce__(self):
        return _option_error, (self.template, self.values)


def _option_error(template: str, values: dict) -> OptionError:
    return OptionError(template, **values)


class _Names(dict):
    def __init__(self, name: Callable[[str], str], values: dict):
        super().__init__(values)
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def check_choice(field: str, value, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``, else an OptionError naming ``field``."""
    if not isinstance(value, str) or value not in choices:
        raise OptionError(f"{{{field}}} must be one of {', '.join(choices)}, got {{value!r}}", value=value)


def check_positive(field: str, value, optional: bool = False) -> None:
    """A positive integer (or, ``optional``, None), else an OptionError naming ``field``."""
    if (value is None and optional) or (is_int(value) and value >= 1):
        return
    what = "a positive integer or None" if optional else "a positive integer"
    raise OptionError(f"{{{field}}} must be {what}, got {{value!r}}", value=value)


def _layers(layers, num_hidden_layers: int) -> tuple[int, ...]:
    """``layers`` resolved (:func:`minibert.encoder.layers.resolve_layers`) for a
    model of ``num_hidden_layers`` layers: the one place a run's layers are
    resolved, for the library and ``--layers`` alike. A bad selection is an
    OptionError naming the field, so each caller spells it its own way."""
    try:
        return tuple(resolve_layers(layers, num_hidden_layers + 1, what="layers"))
    except MinibertError as e:
        message = str(e)  # resolve_layers' messages begin with `what`
        rest = message.removeprefix("layers") if message.startswith("layers") else f": {message}"
        raise OptionError("{layers}{rest}", rest=rest) from None


@dataclass(frozen=True)
class ExtractSpec:
    """What a run cuts out of each text's forward pass, and from which model.

    layers: hidden_states indices (0 = embeddings; anything
      :func:`minibert.encoder.layers.resolve_layers` takes; stored non-negative, in
      the order given) of a model of ``num_hidden_layers`` layers.
    pool: none|cls|mean|max, tokens -> one vector per text.
    combine: none|sum|mean|concat, the selected layers -> one array.
    word_pool: none|first|last|mean|first_last, subword tokens -> one vector
      per word (then ``pool`` must be none).
    long: truncate|window, texts past ``max_length``: cut, or read in
      overlapping windows ``stride`` tokens apart (``stride`` only then).
    max_length: truncation (or the window size); None: the model's limit.
    normalize: L2-normalise each pooled vector (needs a pool).
    batch_size: texts per forward pass; shard_size: texts per chunk (and
      per shard of a directory output).
    dtype: compute dtype; output_dtype: the stored one (None: ``dtype``).
    model: the model directory; model_files: its files' sha256 by name
      (:func:`model_digests`), in the order the model read them.
    attentions: none|maps|stats, what is recorded of the attention
      probabilities of the selected encoder layers (``layers`` >= 1: the
      attention of layer i produced hidden_states[i]; the embeddings have
      none): nothing, each text's (h, n, n) maps over its real tokens, or
      per-head statistics (:mod:`minibert.features.attention_stats`); maps need the
      whole text at once, so not with ``long="window"``.
    num_attention_heads: h, recorded with the attentions (None without).
    """

    layers: tuple[int, ...]
    num_hidden_layers: int
    pool: str = "none"
    combine: str = "none"
    word_pool: str = "none"
    long: str = "truncate"
    stride: int | None = None
    max_length: int | None = None
    normalize: bool = False
    batch_size: int = 32
    shard_size: int = CHUNK_SIZE
    dtype: str = "float32"
    output_dtype: str | None = None
    model: str = ""
    model_files: tuple[tuple[str, str], ...] = ()
    attentions: str = "none"
    num_attention_heads: int | None = None

    def __post_init__(self):
        self._check_fields()
        self._check_rules()

    def _check_fields(self) -> None:
        """Each field alone: its type and range. Stored in one form (layers a
        tuple of non-negative ints, counts plain ints, output_dtype filled in,
        model_files pairs), so equal runs give equal specs and equal settings."""

        def store(name: str, value) -> None:
            object.__setattr__(self, name, value)

        if not is_int(self.num_hidden_layers) or self.num_hidden_layers < 0:
            raise OptionError(
                "{num_hidden_layers} must be a count, got {value!r}", value=self.num_hidden_layers
            )
        store("num_hidden_layers", int(self.num_hidden_layers))
        store("layers", _layers(self.layers, self.num_hidden_layers))
        for name, choices in (("pool", POOLS), ("combine", COMBINES), ("word_pool", ("none", *HOWS)),
                              ("long", LONG_MODES), ("dtype", DTYPES),
                              ("attentions", ATTENTIONS)):  # fmt: skip
            check_choice(name, getattr(self, name), choices)
        if self.output_dtype is None:
            store("output_dtype", self.dtype)
        check_choice("output_dtype", self.output_dtype, OUTPUT_DTYPES)
        for name, optional in (
            ("stride", True),
            ("max_length", True),
            ("batch_size", False),
            ("shard_size", False),
            ("num_attention_heads", True),
        ):
            value = getattr(self, name)
            check_positive(name, value, optional)
            store(name, None if value is None else int(value))
        if not isinstance(self.normalize, bool):
            raise OptionError("{normalize} must be true or false, got {value!r}", value=self.normalize)
        if not isinstance(self.model, str):
            raise OptionError("{model} must be a path (a string), got {value!r}", value=self.model)
        files = tuple(self.model_files.items()) if isinstance(self.model_files, Mapping) else self.model_files
        if not isinstance(files, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in files
        ):
            raise OptionError(
                "{model_files} must map file names to sha256 strings, got {value!r}", value=files
            )
        store("model_files", files)

    def _check_rules(self) -> None:
        """The rules between fields: the one place they are written."""
        if self.stride is not None and self.long != "window":
            raise OptionError("{stride} applies to {long} window only")
        if self.word_pool != "none" and self.pool != "none":
            raise OptionError(
                "{word_pool} gives one vector per word: it cannot be combined with {pool} {value}",
                value=self.pool,
            )
        if self.normalize and self.pool == "none":
            raise OptionError("{normalize} L2-normalises pooled vectors: give {pool} cls, mean or max")
        if self.attentions == "none":
            if self.num_attention_heads is not None:
                raise OptionError("{num_attention_heads} is recorded only with {attentions}")
            return
        if self.long == "window":
            raise OptionError(
                "{attentions} need each text whole, and {long} window reads long texts in windows, each "
                "with its own attention: use {long} truncate (or split the texts)"
            )
        if not self.attention_layers:
            raise OptionError(
                "{attentions}: {layers} {value} selects no encoder layer; hidden_states[0] is the "
                "embedding output, which has no attention",
                value=",".join(map(str, self.layers)),
            )
        if self.num_attention_heads is None:
            raise OptionError("{num_attention_heads} must be given with {attentions}")

    @property
    def out_dtype(self) -> np.dtype:
        """The dtype features are stored in."""
        return np.dtype(self.output_dtype)

    @property
    def pooled(self) -> bool:
        """One vector per text (not per token or word)."""
        return self.pool != "none"

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """The encoder layers whose attention is recorded: the selected
        ``layers`` but 0, in their order (empty without ``attentions``)."""
        if self.attentions == "none":
            return ()
        return tuple(i for i in self.layers if i >= 1)

    @property
    def feature_names(self) -> list[str]:
        """The feature arrays an output of this spec holds."""
        if self.combine != "none":
            return ["combined"]
        return [f"hidden_states.{i}" for i in self.layers]

    # -- the recorded form ---------------------------------------------------------
    def to_settings(self) -> dict:
        """The settings every output records: JSON types, fixed key order (the
        bytes of a manifest or a .safetensors header depend on it)."""
        from minibert.version import __version__

        return {
            "layers": list(self.layers),
            "pool": self.pool,
            "word_pool": self.word_pool,
            "combine": self.combine,
            "dtype": self.dtype,
            "output_dtype": self.output_dtype,
            "model": self.model,
            "minibert": __version__,
            "num_hidden_layers": self.num_hidden_layers,
            "max_length": self.max_length,
            "long": self.long,
            "stride": self.stride,
            "normalize": self.normalize,
            "batch_size": self.batch_size,
            "shard_size": self.shard_size,
            "model_files": dict(self.model_files),
        } | self._optional_settings()

    def _optional_settings(self) -> dict:
        """The keys of :data:`OPTIONAL_FIELDS`, only when attentions are recorded."""
        if self.attentions == "none":
            return {}
        return {"attentions": self.attentions, "num_attention_heads": self.num_attention_heads}

    def to_json(self) -> str:
        """:meth:`to_settings` as JSON, as .npz and .safetensors outputs hold it."""
        return json.dumps(self.to_settings())

    @classmethod
    def from_settings(cls, settings: dict, source: str) -> ExtractSpec:
        """The spec an output recorded (:meth:`to_settings`); a missing or bad
        field is one MinibertError naming ``source`` and the field."""
        if not isinstance(settings, dict):
            raise MinibertError(f"{source}: settings are {type(settings).__name__}, not a JSON object")
        names = [f.name for f in fields(cls) if f.name in settings or f.name not in OPTIONAL_FIELDS]
        missing = [k for k in names if k not in settings]
        if missing:
            raise MinibertError(f"{source}: settings have no {missing[0]!r} (not written by this minibert?)")
        try:
            return cls(**{k: settings[k] for k in names})
        except OptionError as e:  # the layers' messages name them bare, as they always have
            raise MinibertError(
                f"{source}: settings {e.named(lambda f: f if f == 'layers' else repr(f))}"
            ) from None

    def differences(self, settings: dict) -> list[str]:
        """The keys whose value in recorded ``settings`` differs from this spec's, sorted."""
        mine = self.to_settings()
        return [k for k in sorted(set(mine) | set(settings)) if mine.get(k) != settings.get(k)]

    # -- for a model ------------------------------------------------------------------
    @classmethod
    def for_model(
        cls,
        model,
        layers="all",
        pool: str = "auto",
        combine: str = "none",
        word_pool: str = "none",
        long: str = "truncate",
        stride: int | None = None,
        max_length: int | None = None,
        normalize: bool = False,
        batch_size: int = 32,
        shard_size: int = CHUNK_SIZE,
        output_dtype: str | None = None,
        attentions: str = "none",
    ) -> ExtractSpec:
        """The spec of a run on ``model`` (a loaded :class:`minibert.Model`):
        its layer count, dtype, path and file digests filled in (``layers``
        are resolved by the spec itself), ``pool="auto"`` resolved (:func:`resolve_pool`), and
        ``max_length`` checked against the model's limit."""
        auto = resolve_pool(model, pool, word_pool)
        if max_length is not None and is_int(max_length) and max_length > model.max_length:
            raise OptionError(
                "{max_length} {value} exceeds the model's limit {limit}",
                value=max_length,
                limit=model.max_length,
            )
        if max_length is None and auto.max_length is not None:
            max_length = auto.max_length
        return cls(
            layers=layers,
            num_hidden_layers=model.num_layers,
            pool=auto.pool,
            combine=combine,
            word_pool=word_pool,
            long=long,
            stride=stride,
            max_length=max_length,
            normalize=normalize or auto.normalize,
            batch_size=batch_size,
            shard_size=shard_size,
            dtype=model.dtype.name,
            output_dtype=output_dtype,
            model=str(Path(model.path).absolute()),
            model_files=model_digests(model),
            attentions=attentions,
            num_attention_heads=None if attentions == "none" else model.config.num_attention_heads,
        )


@dataclass(frozen=True)
class AutoPool:
    """What ``pool="auto"`` means for a model: its pooling, the length it
    truncates to (None: no limit of its own) and whether it L2-normalises."""

    pool: str
    max_length: int | None = None
    normalize: bool = False


class PoolingNote(UserWarning):
    """The model runs modules after pooling that minibert does not (e.g. Dense)."""


def resolve_pool(model, pool: str, word_pool: str = "none") -> AutoPool:
    """``pool="auto"`` -> the model's own sentence-transformers pooling
    (``1_Pooling/config.json``), its ``max_seq_length``, and whether a
    Normalize module follows (as sentence-transformers' ``encode`` does);
    ``none`` for word pooling or a model without a Pooling module. Any other
    ``pool`` is returned as it is. A model that runs more modules after
    pooling (Dense, ...) gets a :class:`PoolingNote` warning: minibert's
    vectors stop before them."""
    if pool != "auto":
        return AutoPool(pool)
    sentence = model.sentence
    if word_pool != "none" or sentence is None or sentence.pooling is None:
        return AutoPool("none")
    if sentence.pooling not in POOLS:
        raise OptionError(
            "{path}: the model pools with {how!r}, which minibert does not implement; "
            "give {pool} none, cls, mean or max",
            path=model.path,
            how=sentence.pooling,
        )
    if sentence.other_modules:
        warnings.warn(
            PoolingNote(
                f"{model.path} also runs {', '.join(sentence.other_modules)} after pooling; "
                "minibert's pooled vectors stop before it"
            ),
            stacklevel=2,
        )
    max_length = min(sentence.max_seq_length, model.max_length) if sentence.max_seq_length else None
    return AutoPool(sentence.pooling, max_length, sentence.normalize)


def model_digests(model) -> dict[str, str]:
    """sha256 of every file ``model`` was read from (``Model.files``: config,
    weights, tokenizer, sentence-transformers files), by its name relative to
    the model directory: what a resumed run must find unchanged."""
    root = Path(model.path)
    return {Path(os.path.relpath(f, root)).as_posix(): sha256_file(f) for f in model.files}
