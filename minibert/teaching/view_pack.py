"""How the page of ``minibert view`` stores its numbers: at the precision it
prints them, each layer in its own compressed part, the predictable arrays as
small corrections to a prediction.

The page prints 4 decimals (as ``minibert explain`` does), so it stores every
number as the integer ``n = floor(x * SCALE + 0.5)`` (``SCALE = 10**4``) and
prints ``n / SCALE``: what it prints is the trace rounded to 4 decimals, and
nothing is kept that the page never shows. Arrays that the page could
compute from others it already has are stored as a correction, the
difference between the rounded truth and a prediction made from the rounded
inputs, which is almost always -1, 0 or 1 and compresses to nearly nothing:

    scores      from q and k            sum_i q_i k_i / sqrt(d), in exact integers
                                        (DeBERTa: / its own divisor)
    masked_scores  scores + B           MPNet's bias, DeBERTa's c2p + p2c (stored when B is)
    bias        c2p + p2c               DeBERTa: an integer sum
    probs       from the masked scores  the softmax over the keys a query may see
                                        (a sliding window: the others get 0), with exp_det
    ffn_act     from ffn_pre            GELU (erf from exp_det) or ReLU; a gated FFN:
                                        act(pre) x gate, in exact integers
    residual_1  X + attention_output    an integer sum
    residual_2  ln_1 + ffn_output       an integer sum (pre-LN: residual_1 + ffn_output)
    ln_1, ln_2  LayerNorm of the sums   (pre-LN: attention_input, ln_1, final_ln; ln_2 is
                                        residual_2)
    embeddings.sum  word + position + type

The prediction is the same computation in the browser (view.js) and here, on
IEEE doubles with + - * / and floor only (exp_det, erf_det: no library
function whose last bit may differ between NumPy and a JavaScript engine), so
both get the same integer and ``prediction + correction`` is the stored
truth exactly; tests/test_view.py decodes a page with this module and
tests/test_view_browser.py compares every printed number with the trace.

Each part (the arrays every layer shares, then one per encoder layer) is
its integers in zigzag order (n >= 0 -> 2n, n < 0 -> -2n - 1: the sign in the
lowest bit, so small numbers of either sign have zero high bytes) as uint32
little-endian byte planes (every number's first byte, then every second
byte, ...), deflated, in base 85 (RFC 1924's digits with ``.,:`` for
``&<>``, so the text needs no escaping in HTML). The page inflates a layer's
part with the browser's own DecompressionStream the first time it shows it.
"""

from __future__ import annotations

import base64
import math
import zlib

import numpy as np

from minibert.errors import MinibertError

DIGITS = 4
SCALE = 10**DIGITS
#: base64.b85encode's digits that HTML would need escaped, and what the page uses instead.
BASE85_SAFE = str.maketrans("&<>", ".,:")
BASE85_BACK = str.maketrans(".,:", "&<>")
#: integers up to this are exact in a double: the integer dot products of the score prediction stay below it
EXACT = 2**53
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
SQRT2 = 1.4142135623730951
#: 1/n! for the Taylor series of exp on [-ln 2 / 2, ln 2 / 2]: error below 1e-16
INV_FACT = [1 / math.factorial(n) for n in range(13)]
#: Abramowitz and Stegun 7.1.26 (|error| <= 1.5e-7): erf(z) = 1 - t (a1 + t (a2 + ...)) exp(-z^2)
ERF_P = 0.3275911
ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def quantize(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` at the printed precision: int64 ``floor(a * SCALE + 0.5)``."""
    x = np.asarray(a, dtype=np.float64) * SCALE
    if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0) >= 2**31 - 1:
        raise MinibertError(f"{name}: a value is not finite or too large to show (|x| >= 214748)")
    return np.floor(x + 0.5).astype(np.int64)


def exp_det(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 with + - * / and floor only (so view.js gets the same
    double): x = k ln 2 + r, exp(r) by its Taylor series, times 2^k. Below
    -80 it is exp(-80) (1.8e-35: a probability or an erf tail that rounds away)."""
    x = np.maximum(x, -80.0)
    k = np.floor(x * LOG2E + 0.5)
    r = x - k * LN2
    p = np.full_like(r, INV_FACT[12])
    for n in range(11, -1, -1):
        p = p * r + INV_FACT[n]
    return np.ldexp(p, k.astype(np.int64))  # p * 2^k: exact


def erf_det(z: np.ndarray) -> np.ndarray:
    """erf(z) to 1.5e-7 (Abramowitz and Stegun 7.1.26), with exp_det."""
    az = np.abs(z)
    t = 1 / (1 + ERF_P * az)
    a1, a2, a3, a4, a5 = ERF_A
    poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    y = 1 - poly * exp_det(-az * az)
    return np.where(z < 0, -y, y)


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(x * SCALE + 0.5).astype(np.int64)


def predict_scores(q: np.ndarray, k: np.ndarray, divisor: float) -> np.ndarray | None:
    """Scores from the stored q and k: (..., S, d) x (..., S, d) -> (..., S, S),
    the integer dot product (exact) over SCALE x divisor (sqrt(d); DeBERTa's
    sqrt(d (1 + #terms)), the float32 root, as a double); None when a dot
    product could leave the exact integers of a double."""
    bound = int(np.abs(q).max(initial=0)) * int(np.abs(k).max(initial=0)) * q.shape[-1]
    if bound >= EXACT:
        return None
    dots = np.einsum("...qi,...ki->...qk", q, k)  # exact in int64
    return np.floor(dots.astype(np.float64) / (SCALE * divisor) + 0.5).astype(np.int64)


def predict_probs(scores: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
    """The softmax of the stored (masked) scores along the last axis, summed in key
    order; ``seen`` (S, S) bool: the keys each query may see (a sliding window), the
    others get 0. None: every key."""
    s = scores / SCALE
    if seen is None:
        e = exp_det(s - s.max(axis=-1, keepdims=True))
    else:
        top = np.where(seen, s, -np.inf).max(axis=-1, keepdims=True)
        e = np.where(seen, exp_det(np.where(seen, s - top, 0.0)), 0.0)
    total = np.zeros(e.shape[:-1])
    for i in range(e.shape[-1]):  # one key after another, as view.js sums
        total = total + e[..., i]
    return _round(e / total[..., None])


def predict_act(pre: np.ndarray, act: str) -> np.ndarray:
    """The FFN activation of the stored pre-activations: ReLU, or GELU with erf_det
    (for the tanh approximations too: the correction then carries the difference)."""
    if act == "relu":
        return np.maximum(pre, 0)
    x = pre / SCALE
    return _round((0.5 * x) * (1 + erf_det(x / SQRT2)))


def predict_context(probs: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Each head's output from the stored P and V: (..., S, S) x (..., S, d) -> (..., S, d),
    sum_s P[t, s] v_s in exact integers over SCALE; None when a sum could leave
    the exact integers of a double."""
    if int(np.abs(probs).max(initial=0)) * int(np.abs(v).max(initial=0)) * probs.shape[-1] >= EXACT:
        return None
    sums = np.einsum("...ts,...si->...ti", probs, v)  # exact in int64
    return np.floor(sums.astype(np.float64) / SCALE + 0.5).astype(np.int64)


def predict_product(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """A gated FFN's act(pre) * gate from the stored act(pre) and gate, element by
    element: the integer product (exact) over SCALE; None when a product could
    leave the exact integers of a double."""
    if int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)) >= EXACT:
        return None
    return np.floor((a * b).astype(np.float64) / SCALE + 0.5).astype(np.int64)


def predict_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm of the stored rows (S, H) -> (S, H) in float64, the sums taken
    in index order as view.js takes them: gamma (x - mu) / sqrt(var + eps) + beta."""
    xs = x / SCALE
    H = xs.shape[-1]
    total = np.zeros(xs.shape[:-1])
    for i in range(H):
        total = total + xs[..., i]
    mu = total / H
    dev = xs - mu[..., None]
    sq = np.zeros(xs.shape[:-1])
    for i in range(H):
        sq = sq + dev[..., i] * dev[..., i]
    root = np.sqrt(sq / H + eps)
    g, b = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    return _round(g * (dev / root[..., None]) + b)


def pack(arrays: dict[str, np.ndarray]) -> dict:
    """Integer arrays as one part: ``blob`` (base 85 of the deflated zigzag
    uint32 byte planes, ``blob_bytes`` long once decoded from base 85) and the index
    ``arrays``: {name: {offset (in numbers), shape}}."""
    index, parts, offset = {}, [], 0
    for name, a in arrays.items():
        index[name] = {"offset": offset, "shape": list(a.shape)}
        parts.append(np.asarray(a, dtype=np.int64).ravel())
        offset += a.size
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    zigzag = np.where(flat >= 0, 2 * flat, -2 * flat - 1).astype("<u4")  # the sign in the lowest bit
    planes = zigzag.view(np.uint8).reshape(-1, 4).T  # (4, n): byte b of every number
    packed = zlib.compress(planes.tobytes(), 6)
    text = base64.b85encode(packed, pad=True).decode("ascii").translate(BASE85_SAFE)
    return {"arrays": index, "blob": text, "blob_bytes": len(packed)}


def unpack(part: dict) -> dict[str, np.ndarray]:
    """The integer arrays of a part, decoded with the standard library and NumPy."""
    raw = zlib.decompress(base64.b85decode(part["blob"].translate(BASE85_BACK))[: part["blob_bytes"]])
    zigzag = np.frombuffer(raw, np.uint8).reshape(4, -1).T.copy().view("<u4").ravel().astype(np.int64)
    numbers = np.where(zigzag % 2 == 0, zigzag // 2, -(zigzag + 1) // 2)
    out = {}
    for name, where in part["arrays"].items():
        n = int(np.prod(where["shape"], dtype=np.int64))
        out[name] = numbers[where["offset"] : where["offset"] + n].reshape(where["shape"]).astype(np.int64)
    return out
