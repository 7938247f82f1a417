"""The reference forward pass: the whole encoder written with the formula
functions of :mod:`minibert.encoder.ops` and no I/O, and the record it returns.

:func:`forward` is what the docs teach (docs/07-encoder.md) and what every
other path is tested against; :mod:`minibert.encoder.fast` runs the same
formulas on its own schedule. :func:`position_ids` is the one family rule
both need. :class:`minibert.Model` chooses which runs (``Model._compute``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minibert.encoder import ops
from minibert.encoder.config import Config
from minibert.encoder.params import RelativePositions, Weights
from minibert.encoder.trace import Trace


@dataclass(frozen=True)
class EncoderOutput:
    """What the encoder computed for a (B, S) batch.

    hidden_states: num_hidden_layers + 1 arrays (B, S, H); [0] is the
      embedding output (projected to H for ELECTRA and ALBERT), [i] the
      output of encoder layer i (transformers' ``output_hidden_states``
      indexing; ALBERT with inner_group_num > 1: one per inner layer).
    attentions: num_hidden_layers arrays (B, h, S, S), or None.
    trace: every intermediate (:class:`minibert.encoder.trace.Trace`), or None.
    """

    hidden_states: tuple[np.ndarray, ...]
    attentions: tuple[np.ndarray, ...] | None = None
    trace: Trace | None = None


def position_ids(config: Config, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The row of the position table each token reads: (B, S) -> (B, S).

    BERT, DistilBERT, ELECTRA, ALBERT: 0, 1, ..., S-1 for every text.
    RoBERTa, XLM-R, CamemBERT (fairseq's ``make_positions``, transformers'
    ``create_position_ids_from_input_ids``): real tokens count from
    pad_token_id + 1 and padding keeps pad_token_id,
    ``pad + cumsum(m) * m`` with m = (input_ids != pad). That is why their
    usable length is max_position_embeddings - pad_token_id - 1 (514 - 2).
    MPNet follows the same rule with its padding index 1 (transformers'
    ``MPNetEmbeddings``; config.py requires pad_token_id 1). DeBERTa counts
    from 0 like BERT (and DeBERTa-v3 reads no position table at all).
    """
    B, S = input_ids.shape
    if config.family in ("roberta", "mpnet"):
        m = (input_ids != config.pad_token_id).astype(np.int64)
        return config.pad_token_id + np.cumsum(m, axis=1) * m
    return np.broadcast_to(np.arange(S, dtype=np.int64), (B, S))


def relative_positions(config: Config, weights: Weights, length: int, dtype) -> RelativePositions | None:
    """What every layer's attention reads about relative positions, for S =
    ``length``: computed once per forward pass, not per layer or head.

    MPNet: the bias (1, h, S, S) from its bucket table
    (:func:`minibert.encoder.ops.relative_position_bias`). DeBERTa: the score
    scale sqrt(d (1 + #terms)) in float32, and with ``relative_attention`` the
    relative embeddings, LayerNormed when ``norm_rel_ebd`` says so (their 2K
    first rows), and the (S, S) bucketed relative positions
    (:func:`minibert.encoder.ops.relative_position_index`). Others: None.
    """
    if config.family == "mpnet":
        return RelativePositions(bias=ops.relative_position_bias(length, weights.relative.table))
    if config.family != "deberta-v2":
        return None
    factor = 1 + len(config.pos_att_type)
    scale = ops.disentangled_scale(config.head_size, factor)
    if not config.relative_attention:
        return RelativePositions(scale_factor=factor, scale=scale)
    span = config.relative_span
    table = weights.relative.table[: 2 * span]
    if weights.relative.ln is not None:
        table = ops.layer_norm(
            table, weights.relative.ln.gamma, weights.relative.ln.beta, config.layer_norm_eps
        )
    index = ops.relative_position_index(length, config.position_buckets, config.max_relative)
    return RelativePositions(
        embeddings=table.astype(dtype, copy=False), index=index, span=span, terms=config.pos_att_type,
        scale_factor=factor, scale=scale, share_att_key=config.share_att_key,
    )  # fmt: skip


def rotary_layers(config: Config, attention_mask: np.ndarray, dtype) -> dict[str, tuple]:
    """ModernBERT and NomicBERT (all its layers global): per kind of layer (config
    ``layer_types``), what its attention reads, computed once per forward pass:
    (RelativePositions with the rotary tables of its base for positions 0..S-1, its mask). Global layers
    (``full_attention``, ``global_rope_theta``): the padding mask (B, 1, 1, S);
    local layers (``sliding_attention``, ``local_rope_theta``): the sliding-window
    mask (B, 1, S, S) with w = local_attention // 2
    (:func:`minibert.encoder.ops.sliding_window_mask`). Positions count
    padding, as in transformers (``arange(S)``)."""
    S = attention_mask.shape[1]
    positions, d = np.arange(S), config.head_size
    out = {}
    for kind, theta in (
        ("full_attention", config.global_rope_theta),
        ("sliding_attention", config.local_rope_theta),
    ):
        cos, sin = ops.rotary_angles(positions, d, theta, dtype)  # (S, d) each
        if kind == "full_attention":
            mask = ops.additive_mask(attention_mask, dtype)  # (B, S) -> (B, 1, 1, S)
        else:
            mask = ops.sliding_window_mask(attention_mask, config.local_attention // 2, dtype)  # (B, 1, S, S)
        out[kind] = (RelativePositions(cos=cos, sin=sin), mask)
    return out


def forward(
    weights: Weights,
    config: Config,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    output_attentions: bool = False,
    trace: bool = False,
) -> EncoderOutput:
    """The encoder: embeddings, then num_hidden_layers post-LN layers.

    input_ids, token_type_ids, attention_mask: (B, S) ints. Returns every
    hidden state, L+1 arrays (B, S, H); with ``output_attentions`` the L
    attention maps (B, h, S, S); with ``trace`` every intermediate.
    Families differ only in data: the position rule (:func:`position_ids`),
    a missing token-type table (DistilBERT), an E -> H projection after the
    embeddings (ELECTRA, ALBERT; ``hidden_states[0]`` is the projected one,
    as in transformers), and ``weights.layer_map`` (ALBERT runs one shared
    layer L times). With ALBERT's rare ``inner_group_num`` > 1 every inner
    layer is a step: L * inner_group_num + 1 hidden states, as transformers
    5 records them. ModernBERT runs pre-LN layers (:func:`ops.pre_ln_layer`)
    with rotary q and k and a sliding window on its local layers
    (:func:`rotary_layers`), and its last hidden state is after the final
    LayerNorm (as transformers' ``hidden_states[-1]``). NomicBERT runs
    BERT's post-LN layers with rotary q and k and a SwiGLU FFN.

    These are the formulas themselves, the reference. ``Model.encode`` runs
    them for a trace or ``impl="plain"``; otherwise it runs
    :func:`minibert.encoder.fast.forward`, the same encoder arranged for speed (with
    the attention maps too when asked for) and tested equal to this one (see
    :meth:`minibert.model.Model._compute`).
    """
    eps, h = config.layer_norm_eps, config.num_attention_heads
    positions = position_ids(config, input_ids, attention_mask)
    embeddings = ops.embed(input_ids, positions, token_type_ids, weights.embeddings, eps, trace)
    x = embeddings.hidden_state
    if config.family == "deberta-v2":  # DebertaV2Embeddings: embeddings * mask
        x = x * attention_mask[:, :, None].astype(x.dtype)  # (B, S, H), padding rows 0
    mask = ops.additive_mask(attention_mask, x.dtype)  # (B, S) -> (B, 1, 1, S)
    act = ops.ACTIVATIONS[config.hidden_act]
    relative = relative_positions(config, weights, input_ids.shape[1], x.dtype)
    rotary = rotary_layers(config, attention_mask, x.dtype) if config.layer_types else None
    hidden_states, attentions, layers = [x], [], []
    for i, k in enumerate(weights.layer_map):
        if rotary is None:
            layer = ops.encoder_layer(x, weights.layers[k], mask, h, act, eps, trace, relative)
        else:  # rotary: ModernBERT (pre-LN, global or local by layer_types), NomicBERT (post-LN)
            relative, mask = rotary[config.layer_types[i]]
            step = ops.pre_ln_layer if config.family == "modernbert" else ops.encoder_layer
            layer = step(x, weights.layers[k], mask, h, act, eps, trace, relative)
        x = layer.output
        hidden_states.append(x)
        if output_attentions:
            attentions.append(layer.attention.probs)
        if trace:
            layers.append(layer)
    final = None
    if (
        weights.final_ln is not None
    ):  # pre-LN: the last hidden state is normalised, as transformers returns it
        final = hidden_states[-1] = ops.layer_norm(x, weights.final_ln.gamma, weights.final_ln.beta, eps)
    return EncoderOutput(
        tuple(hidden_states),
        tuple(attentions) if output_attentions else None,
        Trace(embeddings, tuple(layers), final) if trace else None,
    )
