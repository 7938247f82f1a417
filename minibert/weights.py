"""model.safetensors -> Weights: the only module that knows checkpoint tensor names.

Loading goes in three steps:

1. read every tensor with the safetensors library (bfloat16, which NumPy lacks,
   is decoded here from its raw bytes);
2. normalise names with one rename table: strip a task-head prefix such as
   ``bert.``, and map TF-era ``LayerNorm.gamma``/``beta`` to ``weight``/``bias``;
3. pick each tensor the encoder needs, check its shape against config.json,
   and transpose ``Linear`` weights from PyTorch's ``(out, in)`` to the
   ``(in, out)`` the formulas use (``x @ W + b``) once, here.

Every family of BERT encoders stores the same tensors under its own names:
:data:`NAME_TABLES` has one :class:`NameTable` per family (see
docs/families.md). ALBERT stores fewer distinct layers than it runs: its
``Weights.layers`` holds the distinct ones and ``Weights.layer_map`` says
which one each step of the encoder uses.

Tensors that belong to no part of the encoder (the pooler, MLM and NSP heads)
are not loaded into :class:`Weights`; their names are kept in
``Weights.ignored`` so ``minibert inspect`` can list them.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import Config
from .errors import MinibertError
from .ops import sinusoidal_positions

#: Name prefixes of task-head checkpoints (``BertForMaskedLM`` etc.), stripped.
PREFIXES = ("bert.",)

#: Legacy TF-converted names -> current names.
RENAMES = ((re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
           (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"))  # fmt: skip

#: Embedding slot -> checkpoint name.
EMBEDDING_NAMES = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "ln_gamma": "embeddings.LayerNorm.weight",
    "ln_beta": "embeddings.LayerNorm.bias",
}

#: Layer slot -> checkpoint name template ({i} = layer index).
LAYER_NAMES = {
    "W_q": "encoder.layer.{i}.attention.self.query.weight",
    "b_q": "encoder.layer.{i}.attention.self.query.bias",
    "W_k": "encoder.layer.{i}.attention.self.key.weight",
    "b_k": "encoder.layer.{i}.attention.self.key.bias",
    "W_v": "encoder.layer.{i}.attention.self.value.weight",
    "b_v": "encoder.layer.{i}.attention.self.value.bias",
    "W_o": "encoder.layer.{i}.attention.output.dense.weight",
    "b_o": "encoder.layer.{i}.attention.output.dense.bias",
    "ln1_gamma": "encoder.layer.{i}.attention.output.LayerNorm.weight",
    "ln1_beta": "encoder.layer.{i}.attention.output.LayerNorm.bias",
    "W_1": "encoder.layer.{i}.intermediate.dense.weight",
    "b_1": "encoder.layer.{i}.intermediate.dense.bias",
    "W_2": "encoder.layer.{i}.output.dense.weight",
    "b_2": "encoder.layer.{i}.output.dense.bias",
    "ln2_gamma": "encoder.layer.{i}.output.LayerNorm.weight",
    "ln2_beta": "encoder.layer.{i}.output.LayerNorm.bias",
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
    """

    prefixes: tuple[str, ...]
    embeddings: dict[str, str]
    projection: dict[str, str]
    layer: dict[str, str]
    layer_id: str


DISTILBERT_LAYER_NAMES = {
    "W_q": "transformer.layer.{i}.attention.q_lin.weight",
    "b_q": "transformer.layer.{i}.attention.q_lin.bias",
    "W_k": "transformer.layer.{i}.attention.k_lin.weight",
    "b_k": "transformer.layer.{i}.attention.k_lin.bias",
    "W_v": "transformer.layer.{i}.attention.v_lin.weight",
    "b_v": "transformer.layer.{i}.attention.v_lin.bias",
    "W_o": "transformer.layer.{i}.attention.out_lin.weight",
    "b_o": "transformer.layer.{i}.attention.out_lin.bias",
    "ln1_gamma": "transformer.layer.{i}.sa_layer_norm.weight",
    "ln1_beta": "transformer.layer.{i}.sa_layer_norm.bias",
    "W_1": "transformer.layer.{i}.ffn.lin1.weight",
    "b_1": "transformer.layer.{i}.ffn.lin1.bias",
    "W_2": "transformer.layer.{i}.ffn.lin2.weight",
    "b_2": "transformer.layer.{i}.ffn.lin2.bias",
    "ln2_gamma": "transformer.layer.{i}.output_layer_norm.weight",
    "ln2_beta": "transformer.layer.{i}.output_layer_norm.bias",
}

ALBERT_LAYER_NAMES = {
    "W_q": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.query.weight",
    "b_q": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.query.bias",
    "W_k": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.key.weight",
    "b_k": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.key.bias",
    "W_v": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.value.weight",
    "b_v": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.value.bias",
    "W_o": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.dense.weight",
    "b_o": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.dense.bias",
    "ln1_gamma": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.LayerNorm.weight",
    "ln1_beta": "encoder.albert_layer_groups.{g}.albert_layers.{j}.attention.LayerNorm.bias",
    "W_1": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn.weight",
    "b_1": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn.bias",
    "W_2": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn_output.weight",
    "b_2": "encoder.albert_layer_groups.{g}.albert_layers.{j}.ffn_output.bias",
    "ln2_gamma": "encoder.albert_layer_groups.{g}.albert_layers.{j}.full_layer_layer_norm.weight",
    "ln2_beta": "encoder.albert_layer_groups.{g}.albert_layers.{j}.full_layer_layer_norm.bias",
}

BERT_LAYER_ID = r"encoder\.layer\.(\d+)\."

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
}  # fmt: skip

#: Names that are not parameters at all (buffers some checkpoints carry).
BUFFERS = re.compile(r"(^|\.)position_ids$")


def distinct_layers(config: Config) -> list[dict[str, int]]:
    """The name-template keys of each distinct layer the checkpoint stores.

    BERT and most families: one per encoder layer, ``{"i": i}``. ALBERT:
    ``num_hidden_groups`` groups of ``inner_group_num`` layers, ``{"g": g, "j": j}``.
    """
    if config.family == "albert":
        G, inner = config.num_hidden_groups, config.inner_group_num
        return [{"g": g, "j": j} for g in range(G) for j in range(inner)]
    return [{"i": i} for i in range(config.num_hidden_layers)]


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


@dataclass(frozen=True)
class EmbeddingWeights:
    """word (V, E), position (P, E), token_type (T, E) or None (DistilBERT),
    LayerNorm gamma/beta (E,); W_proj (E, H) and b_proj (H,) project the
    embeddings to the hidden size (ELECTRA, ALBERT), else None. E = H for BERT."""

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray | None
    ln_gamma: np.ndarray
    ln_beta: np.ndarray
    W_proj: np.ndarray | None = None
    b_proj: np.ndarray | None = None


@dataclass(frozen=True)
class LayerWeights:
    """One encoder layer. W_q, W_k, W_v, W_o: (H, H); W_1: (H, I); W_2: (I, H)
    (all ``(in, out)``); biases and LayerNorm gamma/beta 1-D."""

    W_q: np.ndarray
    b_q: np.ndarray
    W_k: np.ndarray
    b_k: np.ndarray
    W_v: np.ndarray
    b_v: np.ndarray
    W_o: np.ndarray
    b_o: np.ndarray
    ln1_gamma: np.ndarray
    ln1_beta: np.ndarray
    W_1: np.ndarray
    b_1: np.ndarray
    W_2: np.ndarray
    b_2: np.ndarray
    ln2_gamma: np.ndarray
    ln2_beta: np.ndarray


@dataclass(frozen=True)
class Weights:
    """Every tensor the encoder uses, in the requested dtype.

    ``layers`` are the distinct layers the checkpoint stores and
    ``layer_map[i]`` the one encoder step i runs: ``layers[layer_map[i]]``
    (0, 1, ..., L-1 except for ALBERT, which shares layers). ``names`` maps each slot
    (``"embeddings.word"``, ``"layer.0.W_q"``) to the checkpoint tensor it came
    from; ``ignored`` lists checkpoint tensors the encoder does not use;
    ``checkpoint_shapes`` and ``source_dtypes`` describe every tensor of the
    file as stored.
    """

    embeddings: EmbeddingWeights
    layers: tuple[LayerWeights, ...]
    names: dict
    ignored: tuple[str, ...]
    checkpoint_shapes: dict
    source_dtypes: dict
    layer_map: tuple[int, ...] = ()

    def num_parameters(self) -> dict[str, int]:
        """Parameter count per part: embeddings, each distinct layer, total."""
        emb = (getattr(self.embeddings, f.name) for f in fields(EmbeddingWeights))
        counts = {"embeddings": sum(t.size for t in emb if t is not None)}
        for i, layer in enumerate(self.layers):
            counts[f"layer.{i}"] = sum(getattr(layer, f.name).size for f in fields(LayerWeights))
        counts["total"] = sum(counts.values())
        return counts


def _expected_shapes(config: Config) -> tuple[dict, dict]:
    """Checkpoint-orientation shapes each slot must have under ``config``."""
    H, I, E = config.hidden_size, config.intermediate_size, config.embedding_size
    emb = {
        "word": (config.vocab_size, E),
        "position": (config.max_position_embeddings, E),
        "token_type": (config.type_vocab_size, E),
        "ln_gamma": (E,),
        "ln_beta": (E,),
        "W_proj": (H, E),
        "b_proj": (H,),
    }
    layer = {name: (H, H) for name in ("W_q", "W_k", "W_v", "W_o")}
    layer |= {name: (H,) for name in ("b_q", "b_k", "b_v", "b_o", "b_2")}
    layer |= {"ln1_gamma": (H,), "ln1_beta": (H,), "ln2_gamma": (H,), "ln2_beta": (H,)}
    layer |= {"W_1": (I, H), "b_1": (I,), "W_2": (H, I)}
    return emb, layer


def canonical_name(name: str, prefixes: tuple[str, ...] = PREFIXES) -> str:
    """Checkpoint tensor name -> the base-model name the tables use."""
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for pattern, repl in RENAMES:
        name = pattern.sub(repl, name)
    return name


def _decode_bfloat16(raw: bytes, shape: list[int]) -> np.ndarray:
    """bfloat16 bytes -> float32, exactly: bfloat16 is the top 16 bits of a float32."""
    u16 = np.frombuffer(raw, dtype="<u2")
    return (u16.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _read_bfloat16(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Decode bfloat16 tensors from the file's raw bytes (NumPy has no bfloat16).

    Layout: 8-byte little-endian header length n, n bytes of JSON header
    giving each tensor's ``data_offsets``, then the data. Only called after
    the safetensors library has validated the file.
    """
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name in names:
            start, end = header[name]["data_offsets"]
            f.seek(8 + n + start)
            out[name] = _decode_bfloat16(f.read(end - start), header[name]["shape"])
    return out


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as NumPy, and each one's stored dtype.

    A missing, truncated or inconsistent file is a :class:`MinibertError`
    naming the file. bfloat16 tensors come back as float32 (exactly).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MinibertError(f"{path}: model.safetensors not found")
    tensors, dtypes = {}, {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                dtypes[name] = f.get_slice(name).get_dtype()
                if dtypes[name] != "BF16":
                    tensors[name] = f.get_tensor(name)
    except SafetensorError as e:
        raise MinibertError(f"{path}: not a valid safetensors file ({e})") from None
    except OSError as e:
        raise MinibertError(f"{path}: cannot read ({e})") from None
    tensors |= _read_bfloat16(path, [k for k, v in dtypes.items() if v == "BF16"])
    return tensors, dtypes


def from_tensors(
    tensors: dict[str, np.ndarray],
    config: Config,
    dtype: str | np.dtype = "float32",
    source: str = "model.safetensors",
    source_dtypes: dict | None = None,
) -> Weights:
    """Pick, check, convert and transpose the encoder's tensors.

    The names come from the family's :class:`NameTable`. Raises
    :class:`MinibertError` naming the tensor for a missing tensor, a
    duplicate (e.g. both ``bert.x`` and ``x``), a shape that contradicts
    config.json, or encoder layers config.json does not have.
    """
    dtype = np.dtype(dtype)
    table = NAME_TABLES[config.family]
    by_name: dict[str, str] = {}  # canonical -> checkpoint name
    for name in tensors:
        canon = canonical_name(name, table.prefixes)
        if canon in by_name:
            raise MinibertError(f"{source}: tensors {by_name[canon]!r} and {name!r} are the same parameter")
        by_name[canon] = name
    emb_shapes, layer_shapes = _expected_shapes(config)
    used: set[str] = set()
    names: dict[str, str] = {}

    def take(canon: str, expected: tuple, transpose: bool, slot: str) -> np.ndarray:
        if canon not in by_name:
            raise MinibertError(f"{source}: missing tensor {canon!r} (config.json expects shape {expected})")
        name = by_name[canon]
        t = tensors[name]
        if tuple(t.shape) != expected:
            raise MinibertError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)}, config.json expects {expected}"
            )
        if not np.issubdtype(t.dtype, np.floating):
            raise MinibertError(f"{source}: tensor {name!r} has dtype {t.dtype}, expected floating point")
        used.add(canon)
        names[slot] = name
        t = t.T if transpose else t
        return np.ascontiguousarray(t, dtype=dtype)

    emb_names = dict(table.embeddings)
    if config.sinusoidal_pos_embds and emb_names["position"] not in by_name:
        # DistilBERT computes a missing sin/cos table rather than loading it
        emb_names.pop("position")
    # The E -> H projection: required when E != H, used whenever the checkpoint has it.
    if config.embedding_size != config.hidden_size or table.projection.get("W_proj") in by_name:
        emb_names |= table.projection
    emb = {
        k: take(name, emb_shapes[k], k.startswith("W_"), f"embeddings.{k}") for k, name in emb_names.items()
    }
    if "position" not in emb:
        emb["position"] = sinusoidal_positions(config.max_position_embeddings, config.embedding_size, dtype)
    emb.setdefault("token_type", None)
    layers = []
    for k, keys in enumerate(distinct_layers(config)):
        layers.append(
            LayerWeights(
                **{
                    slot: take(table.layer[slot].format(**keys), layer_shapes[slot], slot.startswith("W_"),
                               f"layer.{k}.{slot}")
                    for slot in layer_shapes
                }
            )
        )  # fmt: skip
    known = {tuple(keys.values()) for keys in distinct_layers(config)}
    found = {tuple(int(g) for g in m.groups()) for c in by_name if (m := re.match(table.layer_id, c))}
    if extra := sorted(found - known):
        where = (
            f"num_hidden_groups={config.num_hidden_groups}, inner_group_num={config.inner_group_num}"
            if config.family == "albert"
            else f"num_hidden_layers={config.num_hidden_layers}"
        )
        extra = [e[0] if len(e) == 1 else e for e in extra]
        raise MinibertError(f"{source}: has encoder layer(s) {extra} but config.json says {where}")
    ignored = tuple(sorted(by_name[c] for c in by_name if c not in used and not BUFFERS.search(c)))
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    return Weights(
        EmbeddingWeights(**emb), tuple(layers), names, ignored, shapes, dict(source_dtypes or {}),
        layer_map(config),
    )  # fmt: skip


def load_weights(path: str | Path, config: Config, dtype: str | np.dtype = "float32") -> Weights:
    """Read model.safetensors and check every tensor against ``config``."""
    tensors, dtypes = read_safetensors(path)
    return from_tensors(tensors, config, dtype, source=str(path), source_dtypes=dtypes)
