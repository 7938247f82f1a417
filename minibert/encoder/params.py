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
    """word (V, E), position (P, E) or None (DeBERTa with ``position_biased_input``
    false), token_type (T, E) or None (DistilBERT, MPNet, DeBERTa-v3),
    ln: the embeddings' LayerNorm (E,); W_proj (E, H) and b_proj (H,) project the
    embeddings to the hidden size (ELECTRA, ALBERT), else None. E = H for BERT.
    (:func:`minibert.encoder.ops.embed`)"""

    word: np.ndarray
    position: np.ndarray | None
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
    W_pk: np.ndarray | None = None
    b_pk: np.ndarray | None = None
    W_pq: np.ndarray | None = None
    b_pq: np.ndarray | None = None


@dataclass(frozen=True)
class FeedForwardWeights:
    """The position-wise FFN (:func:`minibert.encoder.ops.feed_forward`): W_1 (H, I),
    b_1 (I,), W_2 (I, H), b_2 (H,), ``(in, out)``; a gated FFN (ModernBERT's
    GeGLU, :func:`minibert.encoder.ops.glu`) also W_gate (H, I) and b_gate (I,)."""

    W_1: np.ndarray
    b_1: np.ndarray
    W_2: np.ndarray
    b_2: np.ndarray
    W_gate: np.ndarray | None = None
    b_gate: np.ndarray | None = None


@dataclass(frozen=True)
class LayerWeights:
    """One post-LN encoder layer, grouped as :func:`minibert.encoder.ops.encoder_layer`
    reads it: ``attention``, then ``ln_1``, then ``ffn``, then ``ln_2``.
    A pre-LN layer (ModernBERT, :func:`minibert.encoder.ops.pre_ln_layer`):
    ``ln_1`` before the attention (None: the identity, ModernBERT's first
    layer), ``ln_2`` before the FFN."""

    attention: AttentionWeights
    ln_1: LayerNormWeights | None
    ffn: FeedForwardWeights
    ln_2: LayerNormWeights


@dataclass(frozen=True)
class RelativeWeights:
    """The relative-position tables of an encoder, shared by all its layers.

    MPNet: ``table`` (R, h), one learned bias per bucket and head
    (``encoder.relative_attention_bias``, R = relative_attention_num_buckets).
    DeBERTa-v2/v3: ``table`` (2 k, H), the relative position embeddings
    (``encoder.rel_embeddings``, k = position_buckets or max_relative_positions),
    and ``ln`` their LayerNorm when config ``norm_rel_ebd`` says ``layer_norm``,
    else None.
    """

    table: np.ndarray
    ln: LayerNormWeights | None = None


@dataclass(frozen=True)
class RelativePositions:
    """What every layer's attention reads about relative positions, computed
    once per forward pass from :class:`RelativeWeights` and the length S
    (:func:`minibert.encoder.forward.relative_positions`).

    MPNet: ``bias`` (1, h, S, S), added to every layer's scaled scores.
    DeBERTa: ``embeddings`` (2 k, H), the (LayerNormed) relative embeddings;
    ``index`` (S, S) int64, the bucketed relative position delta(i, j) of
    query i and key j; ``span`` k; ``terms``, the position terms of
    ``pos_att_type`` (("c2p", "p2c"), or fewer); ``scale_factor``, 1 + the
    number of terms; ``scale``, the scores' divisor sqrt(d x scale_factor) in
    float32 (:func:`minibert.encoder.ops.disentangled_scale`); ``share_att_key``.
    ModernBERT: ``cos`` and ``sin`` (S, d), the rotary tables of the layer's
    kind (:func:`minibert.encoder.ops.rotary_angles`), turning q and k.
    """

    bias: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    index: np.ndarray | None = None
    span: int = 0
    terms: tuple[str, ...] = ()
    scale_factor: int = 1
    scale: np.floating | None = None
    share_att_key: bool = False
    cos: np.ndarray | None = None
    sin: np.ndarray | None = None


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
    PyTorch zip or legacy, sharded) and ``files`` every file read for them;
    ``relative``: the relative-position tables (MPNet, DeBERTa), else None;
    ``final_ln``: the LayerNorm after the last layer (pre-LN ModernBERT), else None.
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
    relative: RelativeWeights | None = None
    final_ln: LayerNormWeights | None = None
