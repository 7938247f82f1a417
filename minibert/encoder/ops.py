"""The formulas of a BERT encoder, one pure NumPy function each.

Section 4 of the article this project grew from (``shared/seed/article.md``)
writes these formulas; where it departs from BERT, the docstring says so
(see also ``docs/errata.md``).

Shape alphabet, used in every docstring and shape comment of this module:

    B  batch size (texts)           S  sequence length (tokens, padded)
    H  hidden size                  h  attention heads
    d  head size, d = H / h         I  intermediate (FFN) size
    V  vocabulary size              P  max position embeddings
    E  embedding size (= H for BERT; smaller for ALBERT / ELECTRA)

Weights are stored the way the formulas are written: ``x @ W + b`` with ``W``
of shape ``(in, out)``. PyTorch checkpoints store ``Linear`` weights as
``(out, in)``; :mod:`minibert.loading.weights` transposes them once, at load time, so
the forward pass never transposes a weight.

Every function stays in its input's dtype: a float32 pass never computes in
float64 and a float64 pass never drops to float32.

The composite formulas (embeddings, attention, the FFN, the encoder layer)
take one layer's weights as the records of :mod:`minibert.loading.weights`, whose
fields carry the names written here (``w.W_q``, ``layer.ln_1.gamma``), and
return what they computed as the records of :mod:`minibert.encoder.trace`: with
``trace=True`` every intermediate, else only what the next formula reads.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from minibert.encoder.params import AttentionWeights, EmbeddingWeights, FeedForwardWeights, LayerWeights
from minibert.encoder.trace import AttentionTrace, EmbeddingTrace, FeedForwardTrace, LayerTrace

__all__ = [
    "ACTIVATIONS",
    "additive_mask",
    "embed",
    "encoder_layer",
    "feed_forward",
    "gelu",
    "gelu_tanh",
    "layer_norm",
    "linear",
    "merge_heads",
    "multi_head_attention",
    "relu",
    "scaled_dot_product_attention",
    "sinusoidal_positions",
    "softmax",
    "split_heads",
]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x)).

    Subtracting the row maximum leaves the result unchanged (it cancels in
    the ratio) and keeps ``exp`` from overflowing. Any shape; normalised along
    ``axis``.
    """
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine map x W + b.

    x: (..., n_in), W: (n_in, n_out), b: (n_out,) -> (..., n_out).
    ``W`` is already transposed from PyTorch's ``(out, in)`` layout at load.
    """
    return x @ W + b


def additive_mask(attention_mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The padding mask as a bias added to attention scores.

    attention_mask: (B, S) of 1 (real token) / 0 (padding) -> (B, 1, 1, S).
    0 where a key may be attended, the dtype's most negative finite number
    where it is padding, so ``softmax`` gives padded keys exactly zero weight
    (``exp`` underflows to 0). This is what transformers adds too
    (``torch.finfo(dtype).min``). Built once per batch, broadcast over heads
    and query positions.
    """
    dtype = np.dtype(dtype)
    bias = (1 - attention_mask.astype(dtype)) * np.finfo(dtype).min
    return bias[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def scaled_dot_product_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
) -> AttentionTrace:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V.

    q, k, v: (..., S, d); mask: additive, broadcastable to (..., S, S), or None.
    Returns its scores, mask, masked_scores, probabilities (..., S, S) and
    context (..., S, d) (an :class:`~minibert.encoder.trace.AttentionTrace`).
    Vaswani et al. 2017, eq. 1; the mask M is 0 or a large negative number.
    The article's worked example (its section 4.3) gets this arithmetic wrong:
    see docs/errata.md.
    """
    d_k = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d_k).astype(q.dtype)  # (..., S, d) -> (..., S, S)
    masked = scores if mask is None else scores + mask
    probs = softmax(masked, axis=-1)
    context = probs @ v  # (..., S, S) -> (..., S, d)
    return AttentionTrace(scores=scores, mask=mask, masked_scores=masked, probs=probs, context=context)


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """Cut the hidden axis into heads: (B, S, H) -> (B, h, S, d)."""
    B, S, H = x.shape
    return x.reshape(B, S, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """Concat(head_1, ..., head_h): (B, h, S, d) -> (B, S, H)."""
    B, h, S, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, h * d)


def multi_head_attention(
    x: np.ndarray, w: AttentionWeights, mask: np.ndarray | None, num_heads: int, trace: bool = False
) -> AttentionTrace:
    """MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O,
    head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    x: (B, S, H); w: W_q, W_k, W_v, W_o (H, H) and their biases (H,)
    (:class:`~minibert.encoder.params.AttentionWeights`); mask (B, 1, 1, S).
    Returns ``output`` (B, S, H) and ``probs`` (B, h, S, S); with ``trace``,
    every intermediate (:class:`~minibert.encoder.trace.AttentionTrace`).
    The h per-head projections W_i^Q are the column blocks of one (H, H)
    matrix, so all heads are projected by one product and split afterwards.
    """
    q = split_heads(linear(x, w.W_q, w.b_q), num_heads)  # (B, S, H) -> (B, h, S, d)
    k = split_heads(linear(x, w.W_k, w.b_k), num_heads)  # (B, S, H) -> (B, h, S, d)
    v = split_heads(linear(x, w.W_v, w.b_v), num_heads)  # (B, S, H) -> (B, h, S, d)
    heads = scaled_dot_product_attention(q, k, v, mask)
    if not trace:  # keep what is read on: the (B, h, S, S) scores go now, as plain locals would
        heads = AttentionTrace(probs=heads.probs, context=heads.context)
    concat = merge_heads(heads.context)  # (B, h, S, d) -> (B, S, H)
    out = linear(concat, w.W_o, w.b_o)
    if trace:
        return replace(heads, q=q, k=k, v=v, concat=concat, output=out)
    return AttentionTrace(probs=heads.probs, output=out)


def erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``scipy.special.erf``, imported on first use: scipy.special adds about
    24 MiB to a process, and float32 on the fast path never calls it (it has
    its own erf, :func:`minibert.encoder.kernels.erf32`)."""
    from scipy.special import erf as scipy_erf

    return scipy_erf(x, out=out)


def gelu(x: np.ndarray, erf=erf) -> np.ndarray:
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), exact.

    BERT's activation (config ``hidden_act: "gelu"``; Hendrycks & Gimpel
    2016). The article writes ReLU here, which is not what BERT computes.
    ``erf``: scipy's; the fast schedule passes its float32 one
    (:func:`minibert.encoder.kernels.erf32`).
    """
    return 0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Config ``hidden_act: "gelu_new"`` or ``"gelu_pytorch_tanh"`` (GPT-2, some
    BERT variants).
    """
    c = np.sqrt(2 / np.pi).astype(x.dtype)
    return 0.5 * x * (1 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x**3)))


def relu(x: np.ndarray) -> np.ndarray:
    """ReLU(x) = max(0, x). Config ``hidden_act: "relu"``."""
    return np.maximum(x, 0)


#: ``hidden_act`` value in config.json -> activation function.
ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
}


def feed_forward(x: np.ndarray, w: FeedForwardWeights, act=gelu, trace: bool = False) -> FeedForwardTrace:
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to each position alone.

    x: (B, S, H); w: W_1 (H, I), b_1, W_2 (I, H), b_2
    (:class:`~minibert.encoder.params.FeedForwardWeights`). Returns ``output``
    (B, S, H); with ``trace`` also ``pre`` and ``act`` (B, S, I).
    ``act`` follows config ``hidden_act``: GELU for BERT, where the article
    writes ReLU.
    """
    pre = linear(x, w.W_1, w.b_1)  # (B, S, H) -> (B, S, I)
    a = act(pre)
    out = linear(a, w.W_2, w.b_2)  # (B, S, I) -> (B, S, H)
    return FeedForwardTrace(pre, a, out) if trace else FeedForwardTrace(output=out)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta.

    x: (..., H); mu and sigma^2 are the mean and the biased (1/H) variance
    over the last axis; gamma, beta: (H,). ``eps`` is config
    ``layer_norm_eps`` (1e-12 for BERT).
    """
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean(np.square(x - mu), axis=-1, keepdims=True)
    return gamma * ((x - mu) / np.sqrt(var + np.asarray(eps, x.dtype))) + beta


def sinusoidal_positions(P: int, E: int, dtype=np.float64) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/E)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/E)).

    -> (P, E). The fixed position table of Vaswani et al. 2017 (section 3.5),
    used by DistilBERT when config ``sinusoidal_pos_embds`` is true and the
    checkpoint carries no learned table (transformers'
    ``create_sinusoidal_embeddings``). Computed in float64, then cast.
    """
    pos = np.arange(P, dtype=np.float64)[:, None]  # (P, 1)
    two_i = 2 * (np.arange(E) // 2)  # 0, 0, 2, 2, 4, 4, ...
    angle = pos / np.power(10000.0, two_i / E)  # (P, 1) -> (P, E)
    table = np.where(np.arange(E) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(dtype)


def embed(
    input_ids: np.ndarray,
    position_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    w: EmbeddingWeights,
    eps: float,
    trace: bool = False,
) -> EmbeddingTrace:
    """Embeddings = LayerNorm(word[ids] + position[pos] + token_type[types]).

    input_ids, position_ids, token_type_ids: (B, S) ints; w: the word (V, E),
    position (P, E) and token_type (T, E) tables and the LayerNorm
    (:class:`~minibert.encoder.params.EmbeddingWeights`) -> ``output`` (B, S, E).
    DistilBERT has no token-type table (``w.token_type`` None). ELECTRA and
    ALBERT then project E -> H with one :func:`linear`, ``projection``
    (B, S, H). ``hidden_state``, what the encoder layers read, is the
    projection if there is one, else the output; without ``trace`` the
    record holds only that, with it every part and their sum
    (:class:`~minibert.encoder.trace.EmbeddingTrace`).
    """
    e_word = w.word[input_ids]  # (B, S) -> (B, S, E)
    e_pos = w.position[position_ids]  # (B, S) -> (B, S, E)
    total = e_word + e_pos
    e_type = None
    if w.token_type is not None:
        e_type = w.token_type[token_type_ids]  # (B, S) -> (B, S, E)
        total = total + e_type
    out = layer_norm(total, w.ln.gamma, w.ln.beta, eps)
    projection = None
    if w.W_proj is not None:
        projection = linear(out, w.W_proj, w.b_proj)  # (B, S, E) -> (B, S, H)
    if trace:
        return EmbeddingTrace(e_word, e_pos, e_type, total, out, projection)
    if projection is not None:
        return EmbeddingTrace(projection=projection)
    return EmbeddingTrace(output=out)


def encoder_layer(
    x: np.ndarray,
    layer: LayerWeights,
    mask: np.ndarray | None,
    num_heads: int,
    act,
    eps: float,
    trace: bool = False,
) -> LayerTrace:
    """One post-LN Transformer encoder layer, as BERT computes it:

        x_1 = LayerNorm(x + MultiHead(x))
        x_2 = LayerNorm(x_1 + FFN(x_1))

    x: (B, S, H); ``layer``: one layer's weights, grouped as the formulas use
    them (:class:`~minibert.encoder.params.LayerWeights`). Returns x_2 (``ln_2``,
    (B, S, H)) and the attention probabilities (``attention.probs``,
    (B, h, S, S)); with ``trace``, every intermediate
    (:class:`~minibert.encoder.trace.LayerTrace`). LayerNorm comes after each
    residual sum (post-LN, Vaswani et al. 2017 and BERT), not before it.
    """
    attention = multi_head_attention(x, layer.attention, mask, num_heads, trace)
    residual_1 = x + attention.output
    x_1 = layer_norm(residual_1, layer.ln_1.gamma, layer.ln_1.beta, eps)
    ffn = feed_forward(x_1, layer.ffn, act, trace)
    residual_2 = x_1 + ffn.output
    x_2 = layer_norm(residual_2, layer.ln_2.gamma, layer.ln_2.beta, eps)
    if trace:
        return LayerTrace(attention, residual_1, x_1, ffn, residual_2, x_2)
    return LayerTrace(AttentionTrace(probs=attention.probs), ln_2=x_2)
