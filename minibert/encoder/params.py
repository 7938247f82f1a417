"""The records the formulas take: every weight of the encoder, grouped as
:mod:`minibert.encoder.ops` reads it (one frozen dataclass per part).

They hold arrays only; which checkpoint tensor fills which field is
:mod:`minibert.loading.weights`' job (its name tables and checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LayerNormWeights:
    """LayerNorm's gamma (scale) and beta (shift): (H,) each, or (E,) for the
    embeddings' (:func:`minibert.encoder.ops.layer_norm`)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class EmbeddingWeights:
    """word (V, E), position (P, E), token_type (T, E) or None (DistilBERT),
    ln: the embeddings' LayerNorm (E,); W_proj (E, H) and b_proj (H,) project the
    embeddings to the hidden size (ELECTRA, ALBERT), else None. E = H for BERT.
    (:func:`minibert.encoder.ops.embed`)"""

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray | None
    ln: LayerNormWeights
    W_proj: np.ndarray | None = None
    b_proj: np.ndarray | None = None


@dataclass(frozen=True)
class AttentionWeights:
    """Multi-head attention (:func:`minibert.encoder.ops.multi_head_attention`):
    W_q, W_k, W_v, W_o (H, H), ``(in, out)``; b_q, b_k, b_v, b_o (H,); the
    h heads of d = ``head_size`` are column blocks of W_q, W_k, W_v. (The fast
    schedule's fused, scaled layout of W_q, W_k, W_v is its own, built from
    these: :func:`minibert.encoder.fast.fused_qkv`.)
    """

    W_q: np.ndarray
    b_q: np.ndarray
    W_k: np.ndarray
    b_k: np.ndarray
    W_v: np.ndarray
    b_v: np.ndarray
    W_o: np.ndarray
    b_o: np.ndarray
    head_size: int


@dataclass(frozen=True)
class FeedForwardWeights:
    """The position-wise FFN (:func:`minibert.encoder.ops.feed_forward`): W_1 (H, I),
    b_1 (I,), W_2 (I, H), b_2 (H,), ``(in, out)``."""

    W_1: np.ndarray
    b_1: np.ndarray
    W_2: np.ndarray
    b_2: np.ndarray


@dataclass(frozen=True)
class LayerWeights:
    """One post-LN encoder layer, grouped as :func:`minibert.encoder.ops.encoder_layer`
    reads it: ``attention``, then ``ln_1``, then ``ffn``, then ``ln_2``."""

    attention: AttentionWeights
    ln_1: LayerNormWeights
    ffn: FeedForwardWeights
    ln_2: LayerNormWeights


@dataclass(frozen=True)
class Weights:
    """Every tensor the encoder uses, in the requested dtype.

    ``layers`` are the distinct layers the checkpoint stores and
    ``layer_map[i]`` the one encoder step i runs: ``layers[layer_map[i]]``
    (0, 1, ..., L-1 except for ALBERT, which shares layers). ``names`` maps each slot
    (``"embeddings.word"``, ``"layer.0.attention.W_q"``) to the checkpoint tensor it came
    from; ``ignored`` lists checkpoint tensors the encoder does not use;
    ``checkpoint_shapes`` and ``source_dtypes`` describe every tensor of the
    file as stored; ``format`` says what the weights file was (safetensors,
    PyTorch zip or legacy, sharded) and ``files`` every file read for them.
    """

    embeddings: EmbeddingWeights
    layers: tuple[LayerWeights, ...]
    names: dict
    ignored: tuple[str, ...]
    checkpoint_shapes: dict
    source_dtypes: dict
    layer_map: tuple[int, ...] = ()
    format: str = ""
    files: tuple[Path, ...] = ()
