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
``(out, in)``; :mod:`minibert.weights` transposes them once, at load time, so
the forward pass never transposes a weight.

Every function stays in its input's dtype: a float32 pass never computes in
float64 and a float64 pass never drops to float32.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

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
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    trace: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V.

    q, k, v: (..., S, d); mask: additive, broadcastable to (..., S, S), or None.
    Returns (context (..., S, d), probabilities (..., S, S)).
    Vaswani et al. 2017, eq. 1; the mask M is 0 or a large negative number.
    The article's worked example (its section 4.3) gets this arithmetic wrong:
    see docs/errata.md.
    """
    d_k = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d_k).astype(q.dtype)  # (..., S, d) -> (..., S, S)
    masked = scores if mask is None else scores + mask
    probs = softmax(masked, axis=-1)
    context = probs @ v  # (..., S, S) -> (..., S, d)
    if trace is not None:
        trace.update(scores=scores, mask=mask, masked_scores=masked, probs=probs, context=context)
    return context, probs


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """Cut the hidden axis into heads: (B, S, H) -> (B, h, S, d)."""
    B, S, H = x.shape
    return x.reshape(B, S, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """Concat(head_1, ..., head_h): (B, h, S, d) -> (B, S, H)."""
    B, h, S, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, h * d)


def multi_head_attention(
    x: np.ndarray,
    W_q: np.ndarray,
    b_q: np.ndarray,
    W_k: np.ndarray,
    b_k: np.ndarray,
    W_v: np.ndarray,
    b_v: np.ndarray,
    W_o: np.ndarray,
    b_o: np.ndarray,
    mask: np.ndarray | None,
    num_heads: int,
    trace: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O,
    head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    x: (B, S, H); W_q, W_k, W_v, W_o: (H, H); biases (H,); mask (B, 1, 1, S).
    Returns (output (B, S, H), attention probabilities (B, h, S, S)).
    The h per-head projections W_i^Q are the column blocks of one (H, H)
    matrix, so all heads are projected by one product and split afterwards.
    ``trace``, when a dict, receives every intermediate by its formula name.
    """
    q = split_heads(linear(x, W_q, b_q), num_heads)  # (B, S, H) -> (B, h, S, d)
    k = split_heads(linear(x, W_k, b_k), num_heads)  # (B, S, H) -> (B, h, S, d)
    v = split_heads(linear(x, W_v, b_v), num_heads)  # (B, S, H) -> (B, h, S, d)
    context, probs = scaled_dot_product_attention(q, k, v, mask, trace)
    concat = merge_heads(context)  # (B, h, S, d) -> (B, S, H)
    out = linear(concat, W_o, b_o)
    if trace is not None:
        trace.update(q=q, k=k, v=v, concat=concat, attention_output=out)
    return out, probs


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), exact.

    BERT's activation (config ``hidden_act: "gelu"``; Hendrycks & Gimpel
    2016). The article writes ReLU here, which is not what BERT computes.
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


def feed_forward(
    x: np.ndarray,
    W_1: np.ndarray,
    b_1: np.ndarray,
    W_2: np.ndarray,
    b_2: np.ndarray,
    act=gelu,
    trace: dict | None = None,
) -> np.ndarray:
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to each position alone.

    x: (B, S, H), W_1: (H, I), W_2: (I, H) -> (B, S, H).
    ``act`` follows config ``hidden_act``: GELU for BERT, where the article
    writes ReLU.
    """
    pre = linear(x, W_1, b_1)  # (B, S, H) -> (B, S, I)
    a = act(pre)
    out = linear(a, W_2, b_2)  # (B, S, I) -> (B, S, H)
    if trace is not None:
        trace.update(ffn_pre=pre, ffn_act=a, ffn_output=out)
    return out


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
    word: np.ndarray,
    position: np.ndarray,
    token_type: np.ndarray | None,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    trace: dict | None = None,
) -> np.ndarray:
    """Embeddings = LayerNorm(word[ids] + position[pos] + token_type[types]).

    input_ids, position_ids, token_type_ids: (B, S) ints; word (V, E),
    position (P, E), token_type (T, E) tables -> (B, S, E).
    DistilBERT has no token-type table (``token_type=None``). ELECTRA and
    ALBERT then project E -> H with one :func:`linear` (in the forward pass).
    """
    e_word = word[input_ids]  # (B, S) -> (B, S, E)
    e_pos = position[position_ids]  # (B, S) -> (B, S, E)
    total = e_word + e_pos
    e_type = None
    if token_type is not None:
        e_type = token_type[token_type_ids]  # (B, S) -> (B, S, E)
        total = total + e_type
    out = layer_norm(total, gamma, beta, eps)
    if trace is not None:
        trace.update(word=e_word, position=e_pos, token_type=e_type, sum=total, output=out)
    return out


def encoder_layer(
    x: np.ndarray,
    layer,
    mask: np.ndarray | None,
    num_heads: int,
    act,
    eps: float,
    trace: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One post-LN Transformer encoder layer, as BERT computes it:

        x_1 = LayerNorm(x + MultiHead(x))
        x_2 = LayerNorm(x_1 + FFN(x_1))

    x: (B, S, H); ``layer`` holds one layer's weights
    (:class:`minibert.weights.LayerWeights`). Returns (x_2 (B, S, H),
    attention probabilities (B, h, S, S)). LayerNorm comes after each
    residual sum (post-LN, Vaswani et al. 2017 and BERT), not before it.
    """
    attn, probs = multi_head_attention(
        x, layer.W_q, layer.b_q, layer.W_k, layer.b_k, layer.W_v, layer.b_v,
        layer.W_o, layer.b_o, mask, num_heads, trace,
    )  # fmt: skip
    residual_1 = x + attn
    x_1 = layer_norm(residual_1, layer.ln1_gamma, layer.ln1_beta, eps)
    ffn = feed_forward(x_1, layer.W_1, layer.b_1, layer.W_2, layer.b_2, act, trace)
    residual_2 = x_1 + ffn
    x_2 = layer_norm(residual_2, layer.ln2_gamma, layer.ln2_beta, eps)
    if trace is not None:
        trace.update(residual_1=residual_1, ln_1=x_1, residual_2=residual_2, ln_2=x_2)
    return x_2, probs
