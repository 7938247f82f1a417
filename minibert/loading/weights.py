"""A checkpoint -> Weights: the only module that knows checkpoint tensor names.

Loading goes in three steps:

1. open the weights file lazily (:mod:`minibert.loading.checkpoint`: safetensors,
   PyTorch's pytorch_model.bin read without torch, or shards): names, stored
   dtypes and shapes, no data yet;
2. normalise names with one rename table: strip a task-head prefix such as
   ``bert.``, and map TF-era ``LayerNorm.gamma``/``beta`` to ``weight``/``bias``;
3. pick each tensor the encoder needs and check its shape and dtype against
   config.json, all before reading any; then read each one, convert it,
   transpose ``Linear`` weights from PyTorch's ``(out, in)`` to the
   ``(in, out)`` the formulas use (``x @ W + b``) once, here, and refuse NaN
   or infinity, naming the tensor.

Every family of BERT encoders stores the same tensors under its own names:
:data:`NAME_TABLES` has one :class:`NameTable` per family (see
docs/families.md). ALBERT stores fewer distinct layers than it runs: its
``Weights.layers`` holds the distinct ones and ``Weights.layer_map`` says
which one each step of the encoder uses.

Tensors that belong to no part of the encoder (the pooler, MLM and NSP heads)
are never read; their names are kept in
``Weights.ignored`` so ``minibert inspect`` can list them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minibert.encoder.config import Config
from minibert.encoder.ops import sinusoidal_positions
from minibert.encoder.params import (
    AttentionWeights,
    EmbeddingWeights,
    FeedForwardWeights,
    LayerNormWeights,
    LayerWeights,
    RelativeWeights,
    Weights,
)
from minibert.errors import MinibertError
from minibert.loading.checkpoint import InMemory, Safetensors, open_checkpoint, open_file
from minibert.loading.tensorfile import FLOATS, Checkpoint, describe

#: Name prefixes of task-head checkpoints (``BertForMaskedLM`` etc.), stripped.
PREFIXES = ("bert.",)

#: Legacy TF-converted names -> current names.
RENAMES = ((re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
           (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"))  # fmt: skip

#: Embedding slot (its place in :class:`EmbeddingWeights`) -> checkpoint name.
EMBEDDING_NAMES = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "ln.gamma": "embeddings.LayerNorm.weight",
    "ln.beta": "embeddings.LayerNorm.bias",
}


#: Layer slot -> checkpoint name template ({i} = layer index). A slot is the
#: tensor's place in :class:`LayerWeights` (``ln_1.gamma`` is ``layer.ln_1.gamma``),
#: named as the formulas of :mod:`minibert.encoder.ops` name it.
LAYER_NAMES = {
    "attention.W_q": "encoder.layer.{i}.attention.self.query.weight",
    "attention.b_q": "encoder.layer.{i}.attention.self.query.bias",
    "attention.W_k": "encoder.layer.{i}.attention.self.key.weight",
    "attention.b_k": "encoder.layer.{i}.attention.self.key.bias",
    "attention.W_v": "encoder.layer.{i}.attention.self.value.weight",
    "attention.b_v": "encoder.layer.{i}.attention.self.value.bias",
    "attention.W_o": "encoder.layer.{i}.attention.output.dense.weight",
    "attention.b_o": "encoder.layer.{i}.attention.output.dense.bias",
    "ln_1.gamma": "encoder.layer.{i}.attention.output.LayerNorm.weight",
    "ln_1.beta": "encoder.layer.{i}.attention.output.LayerNorm.bias",
    "ffn.W_1": "encoder.layer.{i}.intermediate.dense.weight",
    "ffn.b_1": "encoder.layer.{i}.intermediate.dense.bias",
    "ffn.W_2": "encoder.layer.{i}.output.dense.weight",
    "ffn.b_2": "encoder.layer.{i}.output.dense.bias",
    "ln_2.gamma": "encoder.layer.{i}.output.LayerNorm.weight",
    "ln_2.beta": "encoder.layer.{i}.output.LayerNorm.bias",
}

#: The E -> H projection after the embeddings (ELECTRA, ALBERT): slot -> name.
NO_PROJECTION: dict[str, str] = {}


@dataclass(frozen=True)
class NameTable:
    """One family's checkpoint names.

    prefixes: task-head prefixes to strip (``roberta.`` of ``RobertaForMaskedLM``).
    embeddings: slot -> name; a family without token types has no ``token_type``.
    projection: the E -> H ``Linear`` after the embeddings, or empty.
    layer: slot -> name template; ``{i}`` is the layer index (ALBERT: ``{g}``
    the group, ``{j}`` the layer inside it).
    layer_id: a regex whose groups identify the layer a name belongs to.
    relative: the relative-position tables shared by all layers (MPNet,
    DeBERTa: slot ``relative.table``, ``relative.ln.gamma`` ...), or empty.
    """

    prefixes: tuple[str, ...]
    embeddings: dict[str, str]
    projection: dict[str, str]
    layer: dict[str, str]
    layer_id: str
    relative: dict[str, str] = field(default_factory=dict)


DISTILBERT_LAYER_NAMES = {
    "attention.W_q": "transformer.layer.{i}.attention.q_lin.weight",
    "attention.b_q": "transformer.layer.{i}.attention.q_lin.bias",
    "attention.W_k": "transformer.layer.{i}.attention.k_lin.weight",
    "attention.b_k": "transformer.layer.{i}.attention.k_lin.bias",
    "attention.W_v": "transformer.layer.{i}.attention.v_lin.weight",
    "attention.b_v": "transformer.layer.{i}.attention.v_lin.bias",
    "attention.W_o": "transformer.layer.{i}.attention.out_lin.weight",
    "attention.b_o": "transformer.layer.{i}.attention.out_lin.bias",
    "ln_1.gamma": "transformer.layer.{i}.sa_layer_norm.weight",
    "ln_1.beta": "transformer.layer.{i}.sa_layer_norm.bias",
    "ffn.W_1": "transformer.layer.{i}.ffn.lin1.weight",
    "ffn.b_1": "transformer.layer.{i}.ffn.lin1.bias",
    "ffn.W_2": "transformer.layer.{i}.ffn.lin2.weight",
    "ffn.b_2": "transformer.layer.{i}.ffn.lin2.bias",
    "ln_2.gamma": "transformer.layer.{i}.output_layer_norm.weight",
    "ln_2.beta": "transformer.layer.{i}.output_layer_norm.bias",
}

ALBERT_LAYER_NAMES = {
    "attention.W_q": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.query.weight",
    "attention.b_q": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.query.bias",
    "attention.W_k": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.key.weight",
    "attention.b_k": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.key.bias",
    "attention.W_v": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.value.weight",
    "attention.b_v": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.value.bias",
    "attention.W_o": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.dense.weight",
    "attention.b_o": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.dense.bias",
    "ln_1.gamma": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.LayerNorm.weight",
    "ln_1.beta": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.LayerNorm.bias",
    "ffn.W_1": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn.weight",
    "ffn.b_1": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn.bias",
    "ffn.W_2": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn_output.weight",
    "ffn.b_2": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn_output.bias",
    "ln_2.gamma": "encoder.albert_layer_groups.{g}.albert_layers.{j}.full_layer_layer_norm.weight",
    "ln_2.beta": "encoder.albert_layer_groups.{g}.albert_layers.{j}.full_layer_layer_norm.bias",
}

MPNET_LAYER_NAMES = {
    "attention.W_q": "encoder.layer.{i}.attention.attn.q.weight",
    "attention.b_q": "encoder.layer.{i}.attention.attn.q.bias",
    "attention.W_k": "encoder.layer.{i}.attention.attn.k.weight",
    "attention.b_k": "encoder.layer.{i}.attention.attn.k.bias",
    "attention.W_v": "encoder.layer.{i}.attention.attn.v.weight",
    "attention.b_v": "encoder.layer.{i}.attention.attn.v.bias",
    "attention.W_o": "encoder.layer.{i}.attention.attn.o.weight",
    "attention.b_o": "encoder.layer.{i}.attention.attn.o.bias",
    "ln_1.gamma": "encoder.layer.{i}.attention.LayerNorm.weight",
    "ln_1.beta": "encoder.layer.{i}.attention.LayerNorm.bias",
    **{slot: name for slot, name in LAYER_NAMES.items() if slot.startswith(("ffn.", "ln_2."))},
}

#: DeBERTa-v2/v3: BERT's layer names but for the projections (``query_proj`` ...), and
#: the position projections of c2p and p2c when the keys are not shared (``share_att_key``).
DEBERTA_LAYER_NAMES = {
    **{slot: name.replace(".self.query.", ".self.query_proj.").replace(".self.key.", ".self.key_proj.")
       .replace(".self.value.", ".self.value_proj.") for slot, name in LAYER_NAMES.items()},
    "attention.W_pk": "encoder.layer.{i}.attention.self.pos_key_proj.weight",
    "attention.b_pk": "encoder.layer.{i}.attention.self.pos_key_proj.bias",
    "attention.W_pq": "encoder.layer.{i}.attention.self.pos_query_proj.weight",
    "attention.b_pq": "encoder.layer.{i}.attention.self.pos_query_proj.bias",
}  # fmt: skip

BERT_LAYER_ID = r"encoder\.layer\.(\d+)\."

#: NomicBERT as transformers saves it (``NomicBertModel``): bias-free q/k/v/o projections,
#: SwiGLU down_proj(silu(gate_proj x) * up_proj x), post-LN norms with bias.
NOMIC_LAYER_NAMES = {
    "attention.W_q": "layers.{i}.self_attn.q_proj.weight",
    "attention.W_k": "layers.{i}.self_attn.k_proj.weight",
    "attention.W_v": "layers.{i}.self_attn.v_proj.weight",
    "attention.W_o": "layers.{i}.self_attn.o_proj.weight",
    "ln_1.gamma": "layers.{i}.post_attention_layernorm.weight",
    "ln_1.beta": "layers.{i}.post_attention_layernorm.bias",
    "ffn.W_1": "layers.{i}.mlp.gate_proj.weight",
    "ffn.W_gate": "layers.{i}.mlp.up_proj.weight",
    "ffn.W_2": "layers.{i}.mlp.down_proj.weight",
    "ln_2.gamma": "layers.{i}.post_mlp_layernorm.weight",
    "ln_2.beta": "layers.{i}.post_mlp_layernorm.bias",
}
#: NomicBERT under nomic's original names (nomic-embed-text's own files): fused ``Wqkv``
#: (rows [q | k | v]), ``fc12`` the activated branch (transformers' gate_proj), ``fc11`` the
#: multiplier (up_proj), ``norm1``/``norm2``, ``emb_ln``; the same slots as :data:`NOMIC_LAYER_NAMES`.
NOMIC_ORIGINAL_LAYER_NAMES = {
    "attention.W_qkv": "encoder.layers.{i}.attn.Wqkv.weight",
    "attention.W_o": "encoder.layers.{i}.attn.out_proj.weight",
    "ln_1.gamma": "encoder.layers.{i}.norm1.weight",
    "ln_1.beta": "encoder.layers.{i}.norm1.bias",
    "ffn.W_1": "encoder.layers.{i}.mlp.fc12.weight",
    "ffn.W_gate": "encoder.layers.{i}.mlp.fc11.weight",
    "ffn.W_2": "encoder.layers.{i}.mlp.fc2.weight",
    "ln_2.gamma": "encoder.layers.{i}.norm2.weight",
    "ln_2.beta": "encoder.layers.{i}.norm2.bias",
}
NOMIC_EMBEDDINGS = {slot: name for slot, name in EMBEDDING_NAMES.items() if slot != "position"}

#: ModernBERT (``ModernBertModel``): fused, bias-free Q, K, V (``Wqkv``, rows [q | k | v])
#: and GeGLU input (``Wi``, rows [input | gate]), split at load (:func:`_gated_layer`);
#: its LayerNorms have no bias (config ``norm_bias`` false); layer 0 has no ``attn_norm``.
MODERNBERT_LAYER_NAMES = {
    "attention.W_qkv": "layers.{i}.attn.Wqkv.weight",
    "attention.W_o": "layers.{i}.attn.Wo.weight",
    "ln_1.gamma": "layers.{i}.attn_norm.weight",
    "ln_2.gamma": "layers.{i}.mlp_norm.weight",
    "ffn.W_i": "layers.{i}.mlp.Wi.weight",
    "ffn.W_2": "layers.{i}.mlp.Wo.weight",
}

#: Family (``Config.family``) -> its checkpoint names.
NAME_TABLES = {
    "bert": NameTable(PREFIXES, EMBEDDING_NAMES, NO_PROJECTION, LAYER_NAMES, BERT_LAYER_ID),
    "roberta": NameTable(("roberta.",), EMBEDDING_NAMES, NO_PROJECTION, LAYER_NAMES, BERT_LAYER_ID),
    "distilbert": NameTable(
        ("distilbert.",),
        {slot: name for slot, name in EMBEDDING_NAMES.items() if slot != "token_type"},
        NO_PROJECTION,
        DISTILBERT_LAYER_NAMES,
        r"transformer\.layer\.(\d+)\.",
    ),
    "electra": NameTable(
        ("electra.",),
        EMBEDDING_NAMES,
        {"W_proj": "embeddings_project.weight", "b_proj": "embeddings_project.bias"},
        LAYER_NAMES,
        BERT_LAYER_ID,
    ),
    "albert": NameTable(
        ("albert.",),
        EMBEDDING_NAMES,
        {"W_proj": "encoder.embedding_hidden_mapping_in.weight",
         "b_proj": "encoder.embedding_hidden_mapping_in.bias"},
        ALBERT_LAYER_NAMES,
        r"encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.",
    ),
    "mpnet": NameTable(
        ("mpnet.",),
        {slot: name for slot, name in EMBEDDING_NAMES.items() if slot != "token_type"},
        NO_PROJECTION,
        MPNET_LAYER_NAMES,
        BERT_LAYER_ID,
        {"relative.table": "encoder.relative_attention_bias.weight"},
    ),
    "deberta-v2": NameTable(
        ("deberta.",),
        EMBEDDING_NAMES,
        NO_PROJECTION,
        DEBERTA_LAYER_NAMES,
        BERT_LAYER_ID,
        {"relative.table": "encoder.rel_embeddings.weight",
         "relative.ln.gamma": "encoder.LayerNorm.weight", "relative.ln.beta": "encoder.LayerNorm.bias"},
    ),
    "modernbert": NameTable(
        ("model.",),
        {"word": "embeddings.tok_embeddings.weight", "ln.gamma": "embeddings.norm.weight"},
        NO_PROJECTION,
        MODERNBERT_LAYER_NAMES,
        r"layers\.(\d+)\.",
        {"final_ln.gamma": "final_norm.weight"},
    ),
    "nomic_bert": NameTable(
        ("nomic_bert.", "bert."), NOMIC_EMBEDDINGS, NO_PROJECTION, NOMIC_LAYER_NAMES, r"layers\.(\d+)\."
    ),
}  # fmt: skip

#: NomicBERT's checkpoints under nomic's original names (see :func:`name_table`).
NOMIC_ORIGINAL = NameTable(
    ("nomic_bert.", "bert."),
    NOMIC_EMBEDDINGS | {"ln.gamma": "emb_ln.weight", "ln.beta": "emb_ln.bias"},
    NO_PROJECTION,
    NOMIC_ORIGINAL_LAYER_NAMES,
    r"encoder\.layers\.(\d+)\.",
)


def name_table(config: Config, names) -> NameTable:
    """The family's names; for NomicBERT, nomic's original ones when the checkpoint
    carries them (an ``emb_ln`` tensor), else transformers'."""
    if config.family == "nomic_bert" and any(canonical_name(n, NOMIC_ORIGINAL.prefixes).startswith("emb_ln.")
                                             for n in names):  # fmt: skip
        return NOMIC_ORIGINAL
    return NAME_TABLES[config.family]


#: Names that are not parameters at all (buffers some checkpoints carry).
BUFFERS = re.compile(r"(^|\.)position_ids$")

#: The longest sinusoidal position table computed when a DistilBERT checkpoint
#: has none (transformers' DistilBERT has 512): a bound on what config.json
#: alone can make minibert allocate.
MAX_COMPUTED_POSITIONS = 1 << 16


def layer_slots(config: Config) -> dict[str, str]:
    """The layer slots this config's encoder reads -> their name templates: the
    family's table, less DeBERTa's position projections it does not use
    (``share_att_key`` uses W_q and W_k; c2p needs W_pk, p2c W_pq)."""
    table = NAME_TABLES[config.family].layer
    if config.family != "deberta-v2":
        return dict(table)
    skip = set()
    for term, proj in (("c2p", "pk"), ("p2c", "pq")):
        if config.share_att_key or not config.relative_attention or term not in config.pos_att_type:
            skip |= {f"attention.W_{proj}", f"attention.b_{proj}"}
    return {slot: name for slot, name in table.items() if slot not in skip}


def relative_slots(config: Config) -> dict[str, str]:
    """The relative-position tables this config reads: MPNet's bucket bias;
    DeBERTa's relative embeddings (with ``relative_attention``) and their
    LayerNorm (with ``norm_rel_ebd`` layer_norm)."""
    table = NAME_TABLES[config.family].relative
    if config.family == "deberta-v2":
        if not config.relative_attention:
            return {}
        if "layer_norm" not in config.norm_rel_ebd:
            return {"relative.table": table["relative.table"]}
    return dict(table)


def embedding_slots(config: Config) -> dict[str, str]:
    """The embedding slots this config reads: DeBERTa without ``position_biased_input``
    has no position table, and without token types no type table."""
    names = dict(NAME_TABLES[config.family].embeddings)
    if config.family == "deberta-v2":
        if not config.position_biased_input:
            names.pop("position")
        if config.type_vocab_size == 0:
            names.pop("token_type")
    return names


def _distinct_layer_keys(config: Config) -> Iterator[dict[str, int]]:
    if config.family == "albert":
        G, inner = config.num_hidden_groups, config.inner_group_num
        return ({"g": g, "j": j} for g in range(G) for j in range(inner))
    return ({"i": i} for i in range(config.num_hidden_layers))


def distinct_layers(config: Config) -> list[dict[str, int]]:
    """The name-template keys of each distinct layer the checkpoint stores.

    BERT and most families: one per encoder layer, ``{"i": i}``. ALBERT:
    ``num_hidden_groups`` groups of ``inner_group_num`` layers, ``{"g": g, "j": j}``.
    """
    return list(_distinct_layer_keys(config))


def layer_map(config: Config) -> tuple[int, ...]:
    """Which distinct layer (index into ``Weights.layers``) each encoder step runs.

    BERT: 0, 1, ..., L-1. ALBERT (``AlbertTransformer.forward``): step i of
    num_hidden_layers runs group g = floor(i / (L / G)), i.e. that group's
    inner_group_num layers in order. With one group of one layer (every
    released ALBERT) that is one layer run L times.
    """
    if config.family != "albert":
        return tuple(range(config.num_hidden_layers))
    L, G, inner = config.num_hidden_layers, config.num_hidden_groups, config.inner_group_num
    return tuple(int(i / (L / G)) * inner + j for i in range(L) for j in range(inner))


def slot(record, path: str) -> np.ndarray | None:
    """The array at a slot path of a record: ``slot(layer, "ln_1.gamma")``."""
    for name in path.split("."):
        record = getattr(record, name, None)  # None: a slot this family's record lacks
    return record


def num_parameters(weights: Weights) -> dict[str, int]:
    """Parameter count per part: embeddings, each distinct layer, the
    relative-position tables (MPNet, DeBERTa), total. ModernBERT: the
    checkpoint's own tensors (its fused ``Wqkv`` and ``Wi``, and the final norm),
    not the zero biases its records carry."""
    if weights.layers and weights.layers[0].ffn.W_gate is not None:  # ModernBERT, NomicBERT
        return _stored_parameters(weights)
    emb = (slot(weights.embeddings, path) for path in (*EMBEDDING_NAMES, "W_proj", "b_proj"))
    counts = {"embeddings": sum(t.size for t in emb if t is not None)}
    paths = set().union(*(t.layer for t in NAME_TABLES.values()))
    for i, layer in enumerate(weights.layers):
        counts[f"layer.{i}"] = sum(t.size for path in paths if (t := slot(layer, path)) is not None)
    if weights.relative is not None:
        ln = weights.relative.ln
        counts["relative"] = weights.relative.table.size + (0 if ln is None else ln.gamma.size + ln.beta.size)
    counts["total"] = sum(counts.values())
    return counts


def _stored_parameters(weights: Weights) -> dict[str, int]:
    """:func:`num_parameters` from the tensors the checkpoint stores (``Weights.names``)."""
    counts: dict[str, int] = {}
    for slot_path, name in weights.names.items():
        part = (
            ".".join(slot_path.split(".")[:2]) if slot_path.startswith("layer.") else slot_path.split(".")[0]
        )
        counts[part] = counts.get(part, 0) + int(np.prod(weights.checkpoint_shapes[name]))
    counts["total"] = sum(counts.values())
    return counts


def _expected_shapes(config: Config) -> tuple[dict, dict]:
    """Checkpoint-orientation shapes each slot must have under ``config``."""
    H, I, E = config.hidden_size, config.intermediate_size, config.embedding_size
    emb = {
        "word": (config.vocab_size, E),
        "position": (config.max_position_embeddings, E),
        "token_type": (config.type_vocab_size, E),
        "ln.gamma": (E,),
        "ln.beta": (E,),
        "W_proj": (H, E),
        "b_proj": (H,),
    }
    layer = {f"attention.{name}": (H, H) for name in ("W_q", "W_k", "W_v", "W_o")}
    layer |= {f"attention.{name}": (H,) for name in ("b_q", "b_k", "b_v", "b_o")}
    layer |= {f"{ln}.{name}": (H,) for ln in ("ln_1", "ln_2") for name in ("gamma", "beta")}
    layer |= {"ffn.W_1": (I, H), "ffn.b_1": (I,), "ffn.W_2": (H, I), "ffn.b_2": (H,), "ffn.W_gate": (I, H)}
    layer |= {
        "attention.W_pk": (H, H),
        "attention.b_pk": (H,),
        "attention.W_pq": (H, H),
        "attention.b_pq": (H,),
    }
    if config.family in ("modernbert", "nomic_bert"):
        layer |= {"attention.W_qkv": (3 * H, H), "ffn.W_i": (2 * I, H)}
        emb["final_ln.gamma"] = (H,)
    if config.family == "mpnet":
        emb["relative.table"] = (config.relative_attention_num_buckets, config.num_attention_heads)
    else:  # DeBERTa
        emb["relative.table"] = (2 * config.relative_span, H)
    emb |= {"relative.ln.gamma": (H,), "relative.ln.beta": (H,)}
    if config.family == "nomic_bert":  # both name tables: the slots of either
        return emb, {slot: layer[slot] for slot in {*NOMIC_LAYER_NAMES, *NOMIC_ORIGINAL_LAYER_NAMES}}
    return emb, {slot: layer[slot] for slot in layer_slots(config)}  # attention, ln_1, ffn, ln_2


def canonical_name(name: str, prefixes: tuple[str, ...] = PREFIXES) -> str:
    """Checkpoint tensor name -> the base-model name the tables use."""
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for pattern, repl in RENAMES:
        name = pattern.sub(repl, name)
    return name


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as NumPy, and each one's stored dtype.

    Floating-point tensors are decoded (bfloat16 to float32, exactly); others
    come back as stored. A bad file is a :class:`MinibertError` naming it.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise MinibertError(f"{path}: model.safetensors not found")
    with Safetensors(path) as f:
        tensors = {n: f.read(n) if i.dtype in FLOATS else f.read_stored(n) for n, i in f.tensors.items()}
        return tensors, {name: info.dtype for name, info in f.tensors.items()}


def from_tensors(
    tensors: dict[str, np.ndarray], config: Config, dtype: str | np.dtype = "float32", source: str = "arrays"
) -> Weights:
    """:func:`from_checkpoint` for arrays already in memory (models built in code, tests)."""
    return from_checkpoint(InMemory(tensors, source), config, dtype)


def _check_finite(t: np.ndarray, name: str, source: Path) -> None:
    """Refuse NaN and infinity, naming the tensor and the first bad index.

    One pass with no temporary array: a sum in float64 is finite exactly when
    every element is (a float32 or float16 sum cannot overflow float64); only
    a float64 tensor of huge finite values can overflow it, and the blockwise
    look that follows then finds nothing and lets it pass.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(t, dtype=np.float64)):
            return
    flat = t.reshape(-1)
    block = 1 << 20
    for start in range(0, flat.size, block):
        bad = np.flatnonzero(~np.isfinite(flat[start : start + block]))
        if bad.size:
            at = tuple(int(i) for i in np.unravel_index(start + int(bad[0]), t.shape))
            raise MinibertError(
                f"{source}: tensor {name!r} holds {flat[start + bad[0]]} at index {at} "
                "(weights must be finite numbers)"
            )


@dataclass(frozen=True)
class _Plan:
    """What to read: (slot, checkpoint name, transpose) per tensor, the embedding
    slots that come from the file, and how many distinct layers."""

    reads: tuple[tuple[str, str, bool], ...]
    embeddings: tuple[str, ...]
    num_layers: int
    ignored: tuple[str, ...]


def _is_linear(slot: str) -> bool:
    """A ``Linear`` weight (``attention.W_q``, ``W_proj``): stored ``(out, in)``, transposed at load."""
    return slot.rsplit(".", 1)[-1].startswith("W_")


def _plan(checkpoint: Checkpoint, config: Config) -> _Plan:
    """Every tensor the encoder needs, checked from the header alone: present
    (and not twice), the shape config.json implies, floating point; and no
    encoder layer config.json lacks. Layers are walked only while the
    checkpoint has them, so an absurd ``num_hidden_layers`` stops at the first
    missing layer at once."""
    infos = checkpoint.tensors
    table = name_table(config, infos)
    by_name: dict[str, str] = {}  # canonical -> checkpoint name
    for name in infos:
        canon = canonical_name(name, table.prefixes)
        if canon in by_name:
            raise MinibertError(
                f"{infos[name].file}: tensors {by_name[canon]!r} and {name!r} are the same parameter"
            )
        by_name[canon] = name
    emb_shapes, layer_shapes = _expected_shapes(config)
    reads: list[tuple[str, str, bool]] = []

    def want(canon: str, expected: tuple, transpose: bool, slot: str) -> None:
        if canon not in by_name:
            raise MinibertError(
                f"{checkpoint.path}: missing tensor {canon!r} (config.json expects shape {expected})"
            )
        name = by_name[canon]
        info = infos[name]
        if info.shape != expected:
            raise MinibertError(
                f"{info.file}: tensor {name!r} has shape {info.shape}, config.json expects {expected}"
            )
        if info.dtype not in FLOATS:
            raise MinibertError(
                f"{info.file}: tensor {name!r} has dtype {describe(info.dtype)}, expected floating point "
                f"({', '.join(FLOATS)})"
            )
        reads.append((slot, name, transpose))

    emb_names = embedding_slots(config) if table is not NOMIC_ORIGINAL else dict(table.embeddings)
    if config.sinusoidal_pos_embds and emb_names["position"] not in by_name:
        # DistilBERT computes a missing sin/cos table rather than loading it
        emb_names.pop("position")
        if config.max_position_embeddings > MAX_COMPUTED_POSITIONS:
            raise MinibertError(
                f"config.json: max_position_embeddings {config.max_position_embeddings} is too many to "
                f"compute a sinusoidal table for (at most {MAX_COMPUTED_POSITIONS}; the checkpoint has none)"
            )
    # The E -> H projection: required when E != H, used whenever the checkpoint has it.
    if config.embedding_size != config.hidden_size or table.projection.get("W_proj") in by_name:
        emb_names |= table.projection
    for k, name in emb_names.items():
        want(name, emb_shapes[k], _is_linear(k), f"embeddings.{k}")
    for k, name in relative_slots(config).items():
        want(name, emb_shapes[k], False, k)
    known = set()
    for k, keys in enumerate(_distinct_layer_keys(config)):
        for slot, shape in layer_shapes.items():
            if slot not in table.layer:  # NomicBERT: the slots of the other name table
                continue
            if config.family == "modernbert" and k == 0 and slot == "ln_1.gamma":
                continue  # ModernBERT's first layer: attn_norm is the identity
            want(table.layer[slot].format(**keys), shape, _is_linear(slot), f"layer.{k}.{slot}")
        known.add(tuple(keys.values()))
    found = {tuple(int(g) for g in m.groups()) for c in by_name if (m := re.match(table.layer_id, c))}
    if extra := sorted(found - known):
        where = (
            f"num_hidden_groups={config.num_hidden_groups}, inner_group_num={config.inner_group_num}"
            if config.family == "albert"
            else f"num_hidden_layers={config.num_hidden_layers}"
        )
        extra = [e[0] if len(e) == 1 else e for e in extra]
        raise MinibertError(f"{checkpoint.path}: has encoder layer(s) {extra} but config.json says {where}")
    used = {canonical_name(name, table.prefixes) for _, name, _ in reads}
    ignored = tuple(sorted(by_name[c] for c in by_name if c not in used and not BUFFERS.search(c)))
    return _Plan(tuple(reads), tuple(emb_names), len(known), ignored)


def from_checkpoint(checkpoint: Checkpoint, config: Config, dtype: str | np.dtype = "float32") -> Weights:
    """Check (:func:`_plan`, from the header alone), then read, convert and
    transpose the encoder's tensors.

    Each used tensor is read, converted to ``dtype``, checked to be finite,
    transposed if it is a ``Linear`` weight, and its raw copy dropped before
    the next is read: the weights are held once (plus one tensor in flight).
    Tensors the encoder does not use are never read.
    """
    dtype = np.dtype(dtype)
    plan = _plan(checkpoint, config)
    infos = checkpoint.tensors
    values: dict[str, np.ndarray] = {}
    for slot, name, transpose in plan.reads:
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf: refused just below
            t = checkpoint.read(name).astype(dtype, copy=False)
        _check_finite(t, name, infos[name].file)  # before the transpose: indices as in the file
        values[slot] = np.ascontiguousarray(t.T) if transpose else t
    emb = {k: values.pop(f"embeddings.{k}") for k in plan.embeddings}
    if "position" not in emb and config.sinusoidal_pos_embds:
        emb["position"] = sinusoidal_positions(config.max_position_embeddings, config.embedding_size, dtype)
    ln = LayerNormWeights(
        emb["ln.gamma"], emb.get("ln.beta", np.zeros_like(emb["ln.gamma"]))
    )  # ModernBERT: none
    embeddings = EmbeddingWeights(
        emb["word"], emb.get("position"), emb.get("token_type"), ln, emb.get("W_proj"), emb.get("b_proj")
    )
    relative = None
    if "relative.table" in values:
        rel_ln = None
        if "relative.ln.gamma" in values:
            rel_ln = LayerNormWeights(values.pop("relative.ln.gamma"), values.pop("relative.ln.beta"))
        relative = RelativeWeights(values.pop("relative.table"), rel_ln)
    slots = layer_slots(config)
    final_ln = None
    if config.family == "modernbert":
        gamma = values.pop("final_ln.gamma")
        final_ln = LayerNormWeights(gamma, np.zeros_like(gamma))
    if config.family in ("modernbert", "nomic_bert"):
        layers = tuple(_gated_layer(values, f"layer.{k}.", config.head_size) for k in range(plan.num_layers))
    else:
        layers = tuple(_layer(values, f"layer.{k}.", config.head_size, slots) for k in range(plan.num_layers))
    return Weights(
        embeddings, layers, {slot: name for slot, name, _ in plan.reads}, plan.ignored,
        {name: info.shape for name, info in infos.items()},
        {name: info.dtype for name, info in infos.items()},
        layer_map(config), checkpoint.format, checkpoint.files, relative, final_ln,
    )  # fmt: skip


def _layer(
    values: dict[str, np.ndarray], prefix: str, head_size: int, slots: dict[str, str] = LAYER_NAMES
) -> LayerWeights:
    """One layer's record from its slots (``prefix`` + ``attention.W_q``, ...),
    taking each out of ``values`` so its array is held once."""

    def group(name: str) -> dict[str, np.ndarray]:  # "ffn." -> {"W_1": ..., "b_1": ..., ...}
        return {path[len(name) :]: values.pop(prefix + path) for path in slots if path.startswith(name)}

    return LayerWeights(
        AttentionWeights(**group("attention."), head_size=head_size), LayerNormWeights(**group("ln_1.")),
        FeedForwardWeights(**group("ffn.")), LayerNormWeights(**group("ln_2.")),
    )  # fmt: skip


def _gated_layer(values: dict[str, np.ndarray], prefix: str, head_size: int) -> LayerWeights:
    """One ModernBERT or NomicBERT layer's record. A fused ``Wqkv`` (H, 3H) is split
    into W_q, W_k, W_v (column blocks [q | k | v], as ``qkv.view(..., 3, h, d)`` and
    transformers' ``Chunk(dim=0)`` read them), ModernBERT's ``Wi`` (H, 2I) into W_1 and
    W_gate (``chunk(2)``: [input | gate]); the biases the checkpoint has none of
    (ModernBERT's ``attention_bias``, ``mlp_bias``, ``norm_bias`` false; NomicBERT's
    projections) are zeros; no ``ln_1`` in ModernBERT's layer 0 (the identity)."""
    take = values.pop
    W_o = take(prefix + "attention.W_o")
    H, dtype = W_o.shape[0], W_o.dtype
    zeros = np.zeros(H, dtype)
    if prefix + "attention.W_qkv" in values:
        W_qkv = take(prefix + "attention.W_qkv")
        W_q, W_k, W_v = (np.ascontiguousarray(W_qkv[:, j * H : (j + 1) * H]) for j in range(3))
    else:
        W_q, W_k, W_v = (take(prefix + f"attention.W_{x}") for x in "qkv")
    attention = AttentionWeights(W_q, zeros, W_k, zeros, W_v, zeros, W_o, zeros, head_size)
    if prefix + "ffn.W_i" in values:
        W_i = take(prefix + "ffn.W_i")
        I = W_i.shape[1] // 2
        W_1, W_gate = np.ascontiguousarray(W_i[:, :I]), np.ascontiguousarray(W_i[:, I:])
    else:
        W_1, W_gate = take(prefix + "ffn.W_1"), take(prefix + "ffn.W_gate")
    b_i = np.zeros(W_1.shape[1], dtype)
    ffn = FeedForwardWeights(W_1, b_i, take(prefix + "ffn.W_2"), zeros, W_gate, b_i)
    gamma_1 = take(prefix + "ln_1.gamma", None)
    ln_1 = None if gamma_1 is None else LayerNormWeights(gamma_1, take(prefix + "ln_1.beta", zeros))
    ln_2 = LayerNormWeights(take(prefix + "ln_2.gamma"), take(prefix + "ln_2.beta", zeros))
    return LayerWeights(attention, ln_1, ffn, ln_2)


def load_weights(path: str | Path, config: Config, dtype: str | np.dtype = "float32") -> Weights:
    """Read a weights file (any of :data:`minibert.loading.checkpoint.WEIGHT_FILES`),
    or a model directory's, and check every tensor against ``config``."""
    path = Path(path)
    with open_checkpoint(path) if path.is_dir() else open_file(path) as checkpoint:
        return from_checkpoint(checkpoint, config, dtype)
