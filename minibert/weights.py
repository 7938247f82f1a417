"""model.safetensors -> Weights: the only module that knows checkpoint tensor names.

Loading goes in three steps:

1. read every tensor with the safetensors library (bfloat16, which NumPy lacks,
   is decoded here from its raw bytes);
2. normalise names with one rename table: strip a task-head prefix such as
   ``bert.``, and map TF-era ``LayerNorm.gamma``/``beta`` to ``weight``/``bias``;
3. pick each tensor the encoder needs, check its shape against config.json,
   and transpose ``Linear`` weights from PyTorch's ``(out, in)`` to the
   ``(in, out)`` the formulas use (``x @ W + b``) once, here.

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

#: Names that are not parameters at all (buffers some checkpoints carry).
BUFFERS = re.compile(r"(^|\.)position_ids$")


@dataclass(frozen=True)
class EmbeddingWeights:
    """word (V, H), position (P, H), token_type (T, H), LayerNorm gamma/beta (H,)."""

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    ln_gamma: np.ndarray
    ln_beta: np.ndarray


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

    ``layers[i]`` is encoder layer i. ``names`` maps each slot
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

    def num_parameters(self) -> dict[str, int]:
        """Parameter count per part: embeddings, each layer, total."""
        counts = {"embeddings": sum(getattr(self.embeddings, f.name).size for f in fields(EmbeddingWeights))}
        for i, layer in enumerate(self.layers):
            counts[f"layer.{i}"] = sum(getattr(layer, f.name).size for f in fields(LayerWeights))
        counts["total"] = sum(counts.values())
        return counts


def _expected_shapes(config: Config) -> tuple[dict, dict]:
    """Checkpoint-orientation shapes each slot must have under ``config``."""
    H, I = config.hidden_size, config.intermediate_size
    emb = {
        "word": (config.vocab_size, H),
        "position": (config.max_position_embeddings, H),
        "token_type": (config.type_vocab_size, H),
        "ln_gamma": (H,),
        "ln_beta": (H,),
    }
    layer = {name: (H, H) for name in ("W_q", "W_k", "W_v", "W_o")}
    layer |= {name: (H,) for name in ("b_q", "b_k", "b_v", "b_o", "b_2")}
    layer |= {"ln1_gamma": (H,), "ln1_beta": (H,), "ln2_gamma": (H,), "ln2_beta": (H,)}
    layer |= {"W_1": (I, H), "b_1": (I,), "W_2": (H, I)}
    return emb, layer


def canonical_name(name: str) -> str:
    """Checkpoint tensor name -> the BertModel name the tables use."""
    for prefix in PREFIXES:
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

    Raises :class:`MinibertError` naming the tensor for a missing tensor, a
    duplicate (e.g. both ``bert.x`` and ``x``), a shape that contradicts
    config.json, or encoder layers beyond ``num_hidden_layers``.
    """
    dtype = np.dtype(dtype)
    by_name: dict[str, str] = {}  # canonical -> checkpoint name
    for name in tensors:
        canon = canonical_name(name)
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

    emb = EmbeddingWeights(
        **{k: take(EMBEDDING_NAMES[k], emb_shapes[k], False, f"embeddings.{k}") for k in emb_shapes}
    )
    layers = []
    for i in range(config.num_hidden_layers):
        layers.append(
            LayerWeights(
                **{
                    k: take(LAYER_NAMES[k].format(i=i), layer_shapes[k], k.startswith("W_"), f"layer.{i}.{k}")
                    for k in layer_shapes
                }
            )
        )
    extra_layers = sorted(
        {int(m.group(1)) for c in by_name if (m := re.match(r"encoder\.layer\.(\d+)\.", c))}
        - set(range(config.num_hidden_layers))
    )
    if extra_layers:
        raise MinibertError(
            f"{source}: has encoder layer(s) {extra_layers} but config.json says "
            f"num_hidden_layers={config.num_hidden_layers}"
        )
    ignored = tuple(sorted(by_name[c] for c in by_name if c not in used and not BUFFERS.search(c)))
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    return Weights(emb, tuple(layers), names, ignored, shapes, dict(source_dtypes or {}))


def load_weights(path: str | Path, config: Config, dtype: str | np.dtype = "float32") -> Weights:
    """Read model.safetensors and check every tensor against ``config``."""
    tensors, dtypes = read_safetensors(path)
    return from_tensors(tensors, config, dtype, source=str(path), source_dtypes=dtypes)
