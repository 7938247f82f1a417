"""What a forward pass computed on the way: one typed record per formula.

The composite formulas of :mod:`minibert.encoder.ops` return these records, and
``encode(..., trace=True)`` gathers them into ``Encoding.trace``:

    Trace
      embeddings: EmbeddingTrace      word, position, token_type, sum, output, projection
      layers[i]:  LayerTrace          (encoder layer i + 1)
        attention_input               (pre-LN only: LayerNorm_1 of the layer's input)
        attention: AttentionTrace     q, k, v, scores, mask, masked_scores, probs,
                                      context, concat, output
                                      (+ bias, c2p, p2c: MPNet, DeBERTa;
                                       + q_unrotated, k_unrotated, cos, sin: rotary)
        residual_1, ln_1
        ffn: FeedForwardTrace         pre, act, output (+ gate: a gated FFN)
        residual_2, ln_2              (ln_2 is the layer's output, hidden_states[i + 1])
      final_ln                        (pre-LN only: LayerNorm of the last layer's output)

Shapes as in :mod:`minibert.encoder.ops`. The records hold the arrays the formulas
computed, never copies. A formula called without ``trace`` fills only what
its caller reads on (its output, and the attention probabilities); the other
fields are None, so an untraced pass frees each intermediate as soon as it
is used.

``Trace``, ``EmbeddingTrace`` and ``LayerTrace`` also answer the flat
names of the trace's first, dictionary form (``trace["layers"][0]["q"]``,
``trace["embeddings"]["word"]``, ``"projection" in trace["embeddings"]``;
:data:`LayerTrace.KEYS`): they are read-only mappings onto the typed fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["AttentionTrace", "EmbeddingTrace", "FeedForwardTrace", "LayerTrace", "Trace"]


class _Names(Mapping):
    """Flat names -> typed fields: ``KEYS`` maps each name to its attribute
    path; a name in ``OPTIONAL`` is absent (not a key) while its value is None."""

    KEYS: dict[str, tuple[str, ...]] = {}
    OPTIONAL: tuple[str, ...] = ()

    def _field(self, name: str):
        value = self
        for attribute in self.KEYS[name]:
            value = getattr(value, attribute)
        return value

    def __getitem__(self, name: str):
        if name not in self.KEYS or (name in self.OPTIONAL and self._field(name) is None):
            raise KeyError(name)
        return self._field(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.KEYS if name not in self.OPTIONAL or self._field(name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True, eq=False)
class EmbeddingTrace(_Names):
    """:func:`minibert.encoder.ops.embed`: e = LayerNorm(word[ids] + position[pos] + type[types]).

    word, position, token_type, sum, output: (B, S, E); token_type None for a
    model without token types (DistilBERT). projection: (B, S, H), e W_proj +
    b_proj for ELECTRA and ALBERT, else None (and then not a key).
    """

    word: np.ndarray | None = None
    position: np.ndarray | None = None
    token_type: np.ndarray | None = None
    sum: np.ndarray | None = None
    output: np.ndarray | None = None
    projection: np.ndarray | None = None

    KEYS = {name: (name,) for name in ("word", "position", "token_type", "sum", "output", "projection")}
    OPTIONAL = ("projection",)

    @property
    def hidden_state(self) -> np.ndarray:
        """What the encoder layers read, hidden_states[0]: the projection if
        there is one, else the output."""
        return self.output if self.projection is None else self.projection


@dataclass(frozen=True, eq=False)
class AttentionTrace:
    """Attention, all heads at once: :func:`minibert.encoder.ops.scaled_dot_product_attention`
    fills scores, mask, masked_scores, probs, context; :func:`minibert.encoder.ops.multi_head_attention`
    adds q, k, v, concat and output.

    q, k, v, context: (B, h, S, d); scores = Q K^T / sqrt(d), masked_scores =
    scores + bias + mask, probs = softmax(masked_scores): (B, h, S, S); mask: the
    additive mask, (B, 1, 1, S); concat: (B, S, H); output: MultiHead(X) =
    concat W^O + b^O, (B, S, H).

    The relative-position families add a ``bias`` to the scores, None
    elsewhere: MPNet's bucket bias (1, h, S, S) (:func:`minibert.encoder.ops.relative_position_bias`);
    DeBERTa's c2p + p2c (B, h, S, S), each also recorded as ``c2p`` and ``p2c``
    (:func:`minibert.encoder.ops.disentangled_bias`), and its scores are
    Q K^T / sqrt(d (1 + #terms)).

    The rotary families (ModernBERT, NomicBERT) turn q and k by their
    positions (:func:`minibert.encoder.ops.rotate`): ``q`` and ``k`` are the
    turned ones (what the scores read), ``q_unrotated`` and ``k_unrotated``
    (B, h, S, d) the projections before, ``cos`` and ``sin`` (S, d) the
    tables of the layer's base (:func:`minibert.encoder.ops.rotary_angles`);
    None elsewhere. A sliding-window layer's ``mask`` is (B, 1, S, S).
    """

    q: np.ndarray | None = None
    k: np.ndarray | None = None
    v: np.ndarray | None = None
    scores: np.ndarray | None = None
    mask: np.ndarray | None = None
    masked_scores: np.ndarray | None = None
    probs: np.ndarray | None = None
    context: np.ndarray | None = None
    concat: np.ndarray | None = None
    output: np.ndarray | None = None
    bias: np.ndarray | None = None
    c2p: np.ndarray | None = None
    p2c: np.ndarray | None = None
    q_unrotated: np.ndarray | None = None
    k_unrotated: np.ndarray | None = None
    cos: np.ndarray | None = None
    sin: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FeedForwardTrace:
    """:func:`minibert.encoder.ops.feed_forward`: pre = x W_1 + b_1 (B, S, I), act =
    act(pre) (B, S, I), output = act W_2 + b_2 (B, S, H). A gated FFN (ModernBERT's
    GeGLU, NomicBERT's SwiGLU): gate = x W_gate + b_gate (B, S, I) and act =
    act(pre) * gate (:func:`minibert.encoder.ops.glu`); else gate is None."""

    pre: np.ndarray | None = None
    act: np.ndarray | None = None
    output: np.ndarray | None = None
    gate: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class LayerTrace(_Names):
    """:func:`minibert.encoder.ops.encoder_layer`, post-LN:

        residual_1 = x + MultiHead(x)        ln_1 = LayerNorm(residual_1)
        residual_2 = ln_1 + FFN(ln_1)        ln_2 = LayerNorm(residual_2), the output

    attention: :class:`AttentionTrace`; ffn: :class:`FeedForwardTrace`; the
    rest (B, S, H).

    A pre-LN layer (:func:`minibert.encoder.ops.pre_ln_layer`, ModernBERT):
    ``attention_input`` = LayerNorm_1(x) (x itself where the layer has no
    attention norm), residual_1 = x_1 = x + MultiHead(attention_input),
    ln_1 = LayerNorm_2(x_1), what the FFN reads, and residual_2 = ln_2 =
    x_1 + FFN(ln_1), the output. Post-LN layers leave ``attention_input``
    None (the attention reads x).
    """

    attention: AttentionTrace
    residual_1: np.ndarray | None = None
    ln_1: np.ndarray | None = None
    ffn: FeedForwardTrace | None = None
    residual_2: np.ndarray | None = None
    ln_2: np.ndarray | None = None
    attention_input: np.ndarray | None = None

    #: The trace's flat names (its first, dictionary form) -> typed fields.
    KEYS = {
        **{name: ("attention", name) for name in
           ("q", "k", "v", "scores", "mask", "masked_scores", "probs", "context", "concat")},
        "attention_output": ("attention", "output"),
        "residual_1": ("residual_1",),
        "ln_1": ("ln_1",),
        "ffn_pre": ("ffn", "pre"),
        "ffn_act": ("ffn", "act"),
        "ffn_output": ("ffn", "output"),
        "residual_2": ("residual_2",),
        "ln_2": ("ln_2",),
        # the families' own steps: absent (not keys) where the family has none
        **{name: ("attention", name) for name in
           ("bias", "c2p", "p2c", "q_unrotated", "k_unrotated", "cos", "sin")},
        "ffn_gate": ("ffn", "gate"),
        "attention_input": ("attention_input",),
    }  # fmt: skip
    OPTIONAL = (
        "bias",
        "c2p",
        "p2c",
        "q_unrotated",
        "k_unrotated",
        "cos",
        "sin",
        "ffn_gate",
        "attention_input",
    )

    @property
    def output(self) -> np.ndarray:
        """The layer's output, ``ln_2``."""
        return self.ln_2


@dataclass(frozen=True, eq=False)
class Trace(_Names):
    """Every intermediate of one traced forward pass (``Encoding.trace``):
    ``embeddings`` and one :class:`LayerTrace` per step of the encoder
    (``layers[i]`` produced ``hidden_states[i + 1]``); ``final_ln``, the
    LayerNorm after the last layer of a pre-LN encoder (ModernBERT; it is
    hidden_states[-1], and the last layer's ``ln_2`` its input), else None
    (and then not a key)."""

    embeddings: EmbeddingTrace
    layers: tuple[LayerTrace, ...]
    final_ln: np.ndarray | None = None

    KEYS = {"embeddings": ("embeddings",), "layers": ("layers",), "final_ln": ("final_ln",)}
    OPTIONAL = ("final_ln",)
