"""config.json -> Config: the fields the forward pass relies on, validated.

Field names are the checkpoint's own (BERT's config.json keys), so a reader
can match each one to the file. ``model_type`` picks the family: every
supported type is a BERT encoder with a different weight-name table, a
different embedding rule, or shared layers (see docs/families.md). DistilBERT
names its fields differently (``dim``, ``n_heads``, ...); :meth:`Config.from_dict`
maps them to the BERT names.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from minibert.encoder.ops import ACTIVATIONS
from minibert.errors import MinibertError
from minibert.files import MAX_CONFIG, read_json

#: config.json ``model_type`` -> the family that runs it.
FAMILIES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "distilbert": "distilbert",
    "electra": "electra",
    "albert": "albert",
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)

#: Defaults that differ from BERT's, for keys a family's config.json may omit
#: (the defaults of transformers' config class for that family).
FAMILY_DEFAULTS = {
    "roberta": {"pad_token_id": 1},
    "electra": {"embedding_size": 128},
    "albert": {"embedding_size": 128, "hidden_act": "gelu_new"},
}

#: The size fields, each a positive integer (DistilBERT: type_vocab_size is 0).
SIZES = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "embedding_size", "num_hidden_groups", "inner_group_num",
)  # fmt: skip
#: No size may exceed this: every real one is far below, and beyond it numbers
#: stop being sizes (a 10**300 in config.json would reach NumPy as an overflow).
MAX_SIZE = 2**31 - 1
#: The most layer steps (num_hidden_layers x inner_group_num) minibert runs: the
#: deepest released BERT-family encoders have 48. ALBERT reuses its stored
#: layers, so the weights file cannot bound its depth; this does.
MAX_LAYER_STEPS = 1024

#: DistilBERT's config.json keys -> the BERT names used here.
DISTILBERT_KEYS = {
    "dim": "hidden_size",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "n_layers": "num_hidden_layers",
    "activation": "hidden_act",
}


@dataclass(frozen=True)
class Config:
    """A BERT-family config: hidden sizes, depth, heads, activation, LayerNorm eps.

    ``embedding_size`` (E) is the width of the embedding tables; it equals
    ``hidden_size`` except for ELECTRA and ALBERT, which project E -> H.
    ``type_vocab_size`` is 0 for DistilBERT, which has no token types.
    ``num_hidden_groups`` and ``inner_group_num`` describe ALBERT's shared
    layers (1 and 1 elsewhere). ``sinusoidal_pos_embds`` (DistilBERT): the
    position table is sin/cos, computed when the checkpoint lacks it.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    model_type: str = "bert"
    embedding_size: int | None = None
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    sinusoidal_pos_embds: bool = False
    #: What was assumed for keys config.json lacks (not a config.json key; ``minibert inspect`` shows it).
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.embedding_size is None:  # BERT: embeddings are as wide as the hidden states
            object.__setattr__(self, "embedding_size", self.hidden_size)

    @property
    def family(self) -> str:
        """ "bert", "roberta", "distilbert", "electra" or "albert"."""
        return FAMILIES[self.model_type]

    @property
    def head_size(self) -> int:
        """d = H / h."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> Config:
        """Validate a parsed config.json; errors name ``source`` and the key.

        Every value the forward pass uses is checked for its JSON type and
        range: sizes are positive integers below :data:`MAX_SIZE`,
        ``layer_norm_eps`` a finite positive number, ``pad_token_id`` a row of
        the vocabulary, the strings known ones.
        """
        if not isinstance(raw, dict):
            raise MinibertError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        notes = ()
        if "model_type" not in raw:
            notes = ("config.json has no model_type: read as BERT (as transformers' BertConfig does)",)
        model_type = raw.get("model_type", "bert")
        _string(model_type, "model_type", source)
        if model_type not in FAMILIES:
            raise MinibertError(
                f"{source}: model_type {model_type[:40]!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        family = FAMILIES[model_type]
        raw = {k: v for k, v in raw.items() if not (k == "pad_token_id" and v is None)}  # null: the default
        raw = FAMILY_DEFAULTS.get(family, {}) | raw
        if family == "distilbert":
            raw = _distilbert_to_bert(raw, source)
        values = {}
        for f in fields(cls):
            if f.name in raw and f.name != "notes":
                values[f.name] = raw[f.name]
            elif f.default is MISSING:
                raise MinibertError(f"{source}: missing required field {f.name!r}")
        _check_values(values, family, source)
        return cls(**values, notes=notes)

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """Read and validate config.json (through :func:`minibert.files.read_json`:
        NaN, Infinity, huge numbers and deep nesting are refused there)."""
        path = Path(path)
        if not os.path.lexists(path):
            raise MinibertError(f"{path}: config.json not found")
        return cls.from_dict(read_json(path, dict, "config.json", MAX_CONFIG), source=str(path))


def _check_values(values: dict, family: str, source: str) -> None:
    """The checks of :meth:`Config.from_dict` on the fields' values (``values``:
    config.json's, with the family's defaults): sizes, the layer steps, heads
    dividing the width, the activation, positions, ``layer_norm_eps``,
    ``pad_token_id``; each failure one MinibertError naming ``source`` and the key."""
    for key in SIZES:
        value = values.get(key, 1)
        if key == "type_vocab_size" and family == "distilbert":
            continue  # DistilBERT: 0, no table
        if not _integer(value) or not 1 <= value <= MAX_SIZE:
            raise MinibertError(
                f"{source}: {key} must be a positive integer up to {MAX_SIZE}, got {_show(value)}"
            )
    steps = values["num_hidden_layers"] * values.get("inner_group_num", 1)
    if steps > MAX_LAYER_STEPS:
        raise MinibertError(
            f"{source}: num_hidden_layers x inner_group_num is {steps} layer steps, "
            f"more than minibert runs ({MAX_LAYER_STEPS})"
        )
    if values["hidden_size"] % values["num_attention_heads"]:
        raise MinibertError(
            f"{source}: hidden_size {values['hidden_size']} is not divisible by "
            f"num_attention_heads {values['num_attention_heads']}"
        )
    act = _string(values.get("hidden_act", "gelu"), "hidden_act", source)
    if act not in ACTIVATIONS:
        raise MinibertError(
            f"{source}: hidden_act {act[:40]!r} is not supported "
            f"(supported: {', '.join(sorted(ACTIVATIONS))})"
        )
    pos = _string(values.get("position_embedding_type", "absolute"), "position_embedding_type", source)
    if pos != "absolute":
        raise MinibertError(
            f"{source}: position_embedding_type {pos[:40]!r} is not supported (only 'absolute')"
        )
    eps = values.get("layer_norm_eps", 1e-12)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and _finite(eps) and eps > 0):
        raise MinibertError(f"{source}: layer_norm_eps must be a finite positive number, got {_show(eps)}")
    pad = values.get("pad_token_id", 0)
    if not _integer(pad) or not 0 <= pad < values["vocab_size"]:
        raise MinibertError(
            f"{source}: pad_token_id must be a token id below vocab_size {values['vocab_size']}, "
            f"got {_show(pad)}"
        )
    sinusoidal = values.get("sinusoidal_pos_embds", False)
    if not isinstance(sinusoidal, bool):
        raise MinibertError(f"{source}: sinusoidal_pos_embds must be true or false, got {_show(sinusoidal)}")
    if family == "roberta" and pad + 1 >= values["max_position_embeddings"]:
        raise MinibertError(
            f"{source}: RoBERTa positions start at pad_token_id + 1 = {pad + 1}, "
            f"beyond max_position_embeddings {values['max_position_embeddings']}"
        )


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float64
        return False


def _show(value) -> str:
    """A config value for a message: its repr, cut short (a 4000-digit number stays one short line)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _string(value, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise MinibertError(f"{source}: {key} must be a string, got {type(value).__name__} {_show(value)}")
    return value


def _distilbert_to_bert(raw: dict, source: str) -> dict:
    """DistilBERT's config.json -> BERT's keys: ``dim`` -> hidden_size etc.

    DistilBERT has no token types (type_vocab_size 0) and hard-codes its
    LayerNorm eps to 1e-12 (transformers' ``modeling_distilbert.py``), so a
    ``layer_norm_eps`` in the file is not used.
    """
    out = {k: v for k, v in raw.items() if k not in DISTILBERT_KEYS}
    for old, new in DISTILBERT_KEYS.items():
        if old in raw:
            if new in raw and raw[new] != raw[old]:
                raise MinibertError(f"{source}: {old}={raw[old]!r} contradicts {new}={raw[new]!r}")
            out[new] = raw[old]
    out |= {"type_vocab_size": 0, "layer_norm_eps": 1e-12}
    return out
