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
    "mpnet": "mpnet",
    "deberta-v2": "deberta-v2",
    "modernbert": "modernbert",
    "nomic_bert": "nomic_bert",
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)

#: Defaults that differ from BERT's, for keys a family's config.json may omit
#: (the defaults of transformers' config class for that family).
FAMILY_DEFAULTS = {
    "roberta": {"pad_token_id": 1},
    "electra": {"embedding_size": 128},
    "albert": {"embedding_size": 128, "hidden_act": "gelu_new"},
    "mpnet": {"pad_token_id": 1, "relative_attention_num_buckets": 32},
    "deberta-v2": {"type_vocab_size": 0, "layer_norm_eps": 1e-7},
    "modernbert": {"type_vocab_size": 0, "layer_norm_eps": 1e-5, "max_position_embeddings": 8192},
    "nomic_bert": {"hidden_act": "silu", "max_position_embeddings": 2048, "vocab_size": 30528},
}

#: nomic's original config.json keys (GPT-2 style, as nomic-embed-text ships them) -> the BERT names.
NOMIC_KEYS = {
    "n_embd": "hidden_size", "n_head": "num_attention_heads", "n_layer": "num_hidden_layers",
    "n_inner": "intermediate_size", "n_positions": "max_position_embeddings",
    "layer_norm_epsilon": "layer_norm_eps",
}  # fmt: skip

#: ModernBERT's config.json keys -> the BERT names used here.
MODERNBERT_KEYS = {"hidden_activation": "hidden_act", "norm_eps": "layer_norm_eps"}
#: ModernBERT's two kinds of layer (config ``layer_types``): global attention, or
#: attention within a sliding window of ``local_attention`` tokens.
LAYER_TYPES = ("full_attention", "sliding_attention")

#: DeBERTa's position terms (config ``pos_att_type``) minibert computes.
POSITION_TERMS = ("c2p", "p2c")
#: MPNet's bucket function is called with this many buckets whatever the config
#: says (transformers' ``MPNetEncoder.compute_position_bias``): the table needs as many rows.
MPNET_BUCKETS = 32

#: The size fields, each a positive integer (DistilBERT: type_vocab_size is 0).
SIZES = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "embedding_size", "num_hidden_groups", "inner_group_num",
    "relative_attention_num_buckets",
)  # fmt: skip
#: Families whose type_vocab_size may be 0 (no token-type table).
NO_TYPES_ALLOWED = ("distilbert", "mpnet", "deberta-v2", "modernbert")
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

    The relative-position families (docs/relative-position-bias.md,
    docs/disentangled-attention.md): MPNet's ``relative_attention_num_buckets``
    (the rows of its bias table); DeBERTa-v2/v3's ``relative_attention``,
    ``max_relative_positions``, ``position_buckets``, ``pos_att_type`` (a tuple
    of "c2p", "p2c"; config.json may write "p2c|c2p"), ``share_att_key``,
    ``norm_rel_ebd``, ``position_biased_input``, ``conv_kernel_size``.

    ModernBERT (docs/families.md): ``layer_types``, one of :data:`LAYER_TYPES`
    per layer (from ``global_attn_every_n_layers`` when config.json has no
    list: every n-th layer global, from layer 0); ``local_attention``, the
    sliding window (a token sees keys at most ``local_attention // 2`` away);
    ``global_rope_theta`` and ``local_rope_theta``, the rotary bases of the two
    kinds of layer (config ``rope_parameters`` in transformers 5's files).
    NomicBERT: every layer ``full_attention`` with base ``global_rope_theta``
    (its ``rope_parameters.rope_theta``, nomic's ``rotary_emb_base``).
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
    relative_attention_num_buckets: int = 32
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    pos_att_type: tuple[str, ...] = ()
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    position_biased_input: bool = True
    conv_kernel_size: int = 0
    layer_types: tuple[str, ...] = ()
    local_attention: int = 128
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
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
    def max_relative(self) -> int:
        """DeBERTa: ``max_relative_positions``, or max_position_embeddings when it is below 1."""
        return (
            self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings
        )

    @property
    def relative_span(self) -> int:
        """DeBERTa's k: relative positions are clipped to [-k, k), and the relative
        embedding table has 2k rows. ``position_buckets`` when positive, else
        :attr:`max_relative`."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

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
        if family == "mpnet":
            raw = raw | {"type_vocab_size": 0}  # no token types (MPNetEmbeddings has no table)
        if family == "deberta-v2":
            raw = _deberta_keys(raw, source)
        if family == "modernbert":
            raw = _modernbert_keys(raw, source)
        if family == "nomic_bert":
            raw = _nomic_keys(raw, source)
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
        if key == "type_vocab_size" and family in NO_TYPES_ALLOWED and value == 0:
            continue  # DistilBERT, MPNet, DeBERTa-v3: 0, no table
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
    if family == "mpnet":
        _check_mpnet(values, source)
    if family == "deberta-v2":
        _check_deberta(values, source)
    if family in ("modernbert", "nomic_bert"):
        _check_modernbert(values, source)


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


def _deberta_keys(raw: dict, source: str) -> dict:
    """DeBERTa-v2/v3's config.json -> the fields of :class:`Config`: ``pos_att_type``
    as a tuple ("p2c|c2p" or a list, as transformers' ``DebertaV2Config`` reads
    it; null is none), each term checked; every key minibert does not run
    refused, naming it."""
    terms = raw.get("pos_att_type")
    if terms is None:
        terms = []
    if isinstance(terms, str):
        terms = [t.strip() for t in terms.lower().split("|")]
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise MinibertError(f"{source}: pos_att_type must be a list of strings or 'a|b', got {_show(terms)}")
    for t in terms:
        if t not in POSITION_TERMS:
            raise MinibertError(
                f"{source}: pos_att_type {t[:40]!r} is not supported (supported: {', '.join(POSITION_TERMS)})"
            )
    out = raw | {"pos_att_type": tuple(dict.fromkeys(terms))}
    for key in ("relative_attention", "share_att_key", "position_biased_input"):
        if key in out and not isinstance(out[key], bool):
            raise MinibertError(f"{source}: {key} must be true or false, got {_show(out[key])}")
    for key in ("max_relative_positions", "position_buckets", "conv_kernel_size"):
        if key in out and not (_integer(out[key]) and abs(out[key]) <= MAX_SIZE):
            raise MinibertError(f"{source}: {key} must be an integer, got {_show(out[key])}")
    norm = _string(out.get("norm_rel_ebd", "none"), "norm_rel_ebd", source)
    if any(part.strip() not in ("none", "layer_norm") for part in norm.lower().split("|")):
        raise MinibertError(
            f"{source}: norm_rel_ebd {norm[:40]!r} is not supported (supported: 'none', 'layer_norm')"
        )
    if out.get("conv_kernel_size", 0) > 0:
        raise MinibertError(
            f"{source}: conv_kernel_size {out['conv_kernel_size']}: the convolution layer of the larger "
            "DeBERTa-v2 models is not implemented"
        )
    if out.get("attention_head_size") not in (None, out.get("hidden_size", 0) // max(1, _num(out))):
        raise MinibertError(
            f"{source}: attention_head_size {_show(out['attention_head_size'])} is not "
            "hidden_size / num_attention_heads, which minibert requires"
        )
    if "embedding_size" in out and out["embedding_size"] != out.get("hidden_size"):
        raise MinibertError(
            f"{source}: embedding_size {_show(out['embedding_size'])} differs from hidden_size: "
            "DeBERTa's embedding projection is not implemented"
        )
    return out


def _num(raw: dict) -> int:
    heads = raw.get("num_attention_heads", 1)
    return heads if _integer(heads) else 1


def _check_mpnet(values: dict, source: str) -> None:
    """MPNet's table must hold the 32 buckets its bucket function gives, and its
    positions count from padding index 1, fixed in transformers' ``MPNetEmbeddings``."""
    if values.get("relative_attention_num_buckets", 32) < MPNET_BUCKETS:
        raise MinibertError(
            f"{source}: relative_attention_num_buckets {values['relative_attention_num_buckets']} is below "
            f"{MPNET_BUCKETS}, the buckets MPNet's bucket function gives whatever the config says"
        )
    if values.get("pad_token_id", 1) != 1:
        raise MinibertError(
            f"{source}: pad_token_id {values['pad_token_id']}: MPNet's positions count from padding index 1 "
            "(fixed in transformers' MPNetEmbeddings), and a different pad id is not supported"
        )
    if values["max_position_embeddings"] <= 2:
        raise MinibertError(
            f"{source}: MPNet positions start at 2, beyond max_position_embeddings "
            f"{values['max_position_embeddings']}"
        )


def _check_deberta(values: dict, source: str) -> None:
    """DeBERTa's log buckets need mid = position_buckets / 2 >= 1 exact buckets below
    a maximum beyond them: log((max_relative_positions - 1) / mid) > 0."""
    buckets = values.get("position_buckets", -1)
    if not values.get("relative_attention", False) or buckets <= 0:
        return
    max_rel = values.get("max_relative_positions", -1)
    max_rel = max_rel if max_rel >= 1 else values["max_position_embeddings"]
    if buckets < 2 or max_rel - 1 <= buckets // 2:
        raise MinibertError(
            f"{source}: position_buckets {buckets} with max_relative_positions {max_rel} is not a bucket "
            "setting minibert implements (needs position_buckets >= 2 and max_relative_positions - 1 > "
            "position_buckets / 2)"
        )


def _modernbert_keys(raw: dict, source: str) -> dict:
    """ModernBERT's config.json -> the fields of :class:`Config`: its names for
    the activation and eps (:data:`MODERNBERT_KEYS`), the layer types (a list,
    or ``global_attn_every_n_layers``), the rotary bases (``global_rope_theta``
    / ``local_rope_theta``, or transformers 5's ``rope_parameters``); every
    setting minibert does not run (a rotary scaling type, biases in the
    projections or norms) refused, naming the key."""
    out = {k: v for k, v in raw.items() if k not in MODERNBERT_KEYS}
    for old, new in MODERNBERT_KEYS.items():
        if old in raw:
            out[new] = raw[old]
    for key in ("attention_bias", "mlp_bias", "norm_bias"):
        if raw.get(key, False) is not False:
            raise MinibertError(
                f"{source}: {key} {_show(raw[key])}: ModernBERT with biases is not implemented (only false)"
            )
    if raw.get("rope_scaling") is not None:
        raise MinibertError(f"{source}: rope_scaling {_show(raw['rope_scaling'])} is not implemented")
    rope = raw.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise MinibertError(f"{source}: rope_parameters must be an object, got {_show(rope)}")
    for kind, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
        params = rope.get(kind) or {}
        if not isinstance(params, dict):
            raise MinibertError(f"{source}: rope_parameters.{kind} must be an object, got {_show(params)}")
        rope_type = params.get("rope_type", "default")
        if rope_type != "default":
            raise MinibertError(
                f"{source}: rope_parameters.{kind}.rope_type {_show(rope_type)} is not implemented "
                "(only 'default')"
            )
        theta = params.get("rope_theta", raw.get(key, Config.__dataclass_fields__[key].default))
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not _finite(theta) or theta <= 1:
            raise MinibertError(f"{source}: {key} must be a finite number above 1, got {_show(theta)}")
        out[key] = float(theta)
    layers = out.get("num_hidden_layers")
    types = raw.get("layer_types")
    if types is None:
        every = raw.get("global_attn_every_n_layers", 3)
        if not _integer(every) or not 1 <= every <= MAX_SIZE:
            raise MinibertError(
                f"{source}: global_attn_every_n_layers must be a positive integer, got {_show(every)}"
            )
        types = [
            LAYER_TYPES[bool(i % every)]
            for i in range(layers if _integer(layers) and 0 < layers <= MAX_LAYER_STEPS else 0)
        ]
    if not isinstance(types, list) or any(t not in LAYER_TYPES for t in types):
        raise MinibertError(
            f"{source}: layer_types must be a list of {' or '.join(LAYER_TYPES)}, got {_show(types)}"
        )
    if _integer(layers) and len(types) != layers:
        raise MinibertError(f"{source}: layer_types has {len(types)} entries, num_hidden_layers is {layers}")
    return out | {"layer_types": tuple(types)}


def _check_modernbert(values: dict, source: str) -> None:
    """The window of sliding-window layers (ModernBERT's) must be a positive integer
    no larger than the positions, and rotary embeddings rotate pairs of
    dimensions: the head size must be even (ModernBERT, NomicBERT)."""
    window = values.get("local_attention", 128)
    windowed = "sliding_attention" in values.get("layer_types", ())
    if windowed and (not _integer(window) or not 1 <= window <= values["max_position_embeddings"]):
        raise MinibertError(
            f"{source}: local_attention must be a positive integer up to max_position_embeddings "
            f"{values['max_position_embeddings']}, got {_show(window)}"
        )
    if (values["hidden_size"] // values["num_attention_heads"]) % 2:
        raise MinibertError(
            f"{source}: head size hidden_size / num_attention_heads = "
            f"{values['hidden_size'] // values['num_attention_heads']} is odd: rotary embeddings need it even"
        )


def _nomic_keys(raw: dict, source: str) -> dict:
    """NomicBERT's config.json (transformers' keys, or nomic's original GPT-2 style
    ones, :data:`NOMIC_KEYS`) -> the fields of :class:`Config`: all layers global,
    the rotary base in ``global_rope_theta`` (default 1000, transformers'
    ``NomicBertConfig.default_theta``); each setting minibert does not run (a
    ``rotary_emb_fraction`` other than 1, interleaved rotary, a scaling,
    biases, pre-norm, an activation other than SwiGLU) refused, naming the key."""
    out = {k: v for k, v in raw.items() if k not in NOMIC_KEYS}
    for old, new in NOMIC_KEYS.items():
        if old in raw:
            out[new] = raw[old]
    fraction = raw.get("rotary_emb_fraction", 1.0)
    if fraction != 1.0 or isinstance(fraction, bool):
        raise MinibertError(
            f"{source}: rotary_emb_fraction {_show(fraction)}: "
            "only 1.0 (every dimension rotated) is implemented"
        )
    refused = {"rotary_emb_interleaved": False, "qkv_proj_bias": False, "mlp_fc1_bias": False,
               "mlp_fc2_bias": False, "prenorm": False, "rotary_scaling_factor": None,
               "rope_scaling": None}  # fmt: skip
    for key, ok in refused.items():
        if key in raw and raw[key] is not ok and raw[key] != ok:
            raise MinibertError(f"{source}: {key} {_show(raw[key])} is not implemented (only {_show(ok)})")
    if "activation_function" in raw:
        if raw["activation_function"] != "swiglu":
            raise MinibertError(
                f"{source}: activation_function {_show(raw['activation_function'])} is not implemented "
                "(only 'swiglu')"
            )
        out["hidden_act"] = "silu"
    rope = raw.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise MinibertError(f"{source}: rope_parameters must be an object, got {_show(rope)}")
    if rope.get("rope_type", "default") != "default":
        raise MinibertError(
            f"{source}: rope_parameters.rope_type {_show(rope['rope_type'])} is not implemented "
            "(only 'default')"
        )
    theta = rope.get("rope_theta", raw.get("rotary_emb_base", 1000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not _finite(theta) or theta <= 1:
        raise MinibertError(f"{source}: rope_theta must be a finite number above 1, got {_show(theta)}")
    layers = out.get("num_hidden_layers")
    count = layers if _integer(layers) and 0 < layers <= MAX_LAYER_STEPS else 0
    return out | {"global_rope_theta": float(theta), "layer_types": (LAYER_TYPES[0],) * count}
