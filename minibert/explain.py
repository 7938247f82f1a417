"""One text through the encoder, step by step, with every step checked.

:func:`explain` runs a traced forward pass (``encode(..., trace=True)``) and
walks through it in the order of the formulas in docs/: tokens and ids, the
embedding sum, then for one encoder layer each formula with its shapes in and
out, a slice of the actual numbers (one head, one token), and a check that
recomputes the step in float64 from the traced inputs. The checks are written
independently of :mod:`minibert.ops` (einsum, explicit statistics,
``math.erf`` one scalar at a time), so they test the formula functions rather
than repeat them. It ends with the layer's output and, for every layer, how far
its output is from the previous one (cosine).

To show the padding mask at work, the text is padded with ``pad`` extra
[PAD] positions (attention mask 0); a check confirms they get zero attention
weight and do not change the real tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import MinibertError
from .model import Model

WIDTH = 80
#: Max error a check tolerates, per compute dtype: float32 rounding of values
#: up to ~10 (observed <= 4e-6 on all-MiniLM-L6-v2), float64 rounding (<= 1e-13).
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
SLICE = 6  # numbers shown per vector


@dataclass
class Check:
    """One recomputation: what was checked, the max error, the tolerance."""

    what: str
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(self.error <= self.tol)


@dataclass
class Explanation:
    """The walkthrough's lines and every check made on the way."""

    lines: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class _Style:
    """ANSI colours when writing to a terminal, plain text otherwise."""

    def __init__(self, color: bool):
        self.color = color

    def _wrap(self, code: str, s: str) -> str:
        return f"\033[{code}m{s}\033[0m" if self.color else s

    def bold(self, s: str) -> str:
        return self._wrap("1", s)

    def dim(self, s: str) -> str:
        return self._wrap("2", s)

    def ok(self, s: str) -> str:
        return self._wrap("32", s)

    def bad(self, s: str) -> str:
        return self._wrap("31;1", s)


def _vec(x: np.ndarray, n: int = SLICE) -> str:
    """The first ``n`` numbers of a 1-D array, fixed width, '...' if cut."""
    x = np.asarray(x, dtype=np.float64).ravel()
    body = " ".join(f"{v:8.4f}" for v in x[:n])
    return f"[{body}{' ...' if x.size > n else ''}]"


def _shape(a: np.ndarray | tuple) -> str:
    return "(" + ", ".join(str(n) for n in (a if isinstance(a, tuple) else a.shape)) + ")"


def _maxerr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# Independent float64 recomputations (deliberately not minibert.ops).


def _ln64(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm in float64: returns (normalised before gamma/beta, output)."""
    x = x.astype(np.float64)
    n = x.shape[-1]
    mu = x.sum(-1, keepdims=True) / n
    var = ((x - mu) ** 2).sum(-1, keepdims=True) / n
    z = (x - mu) / np.sqrt(var + eps)
    return z, z * gamma.astype(np.float64) + beta.astype(np.float64)


def _affine64(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,io->...o", x.astype(np.float64), W.astype(np.float64)) + b.astype(np.float64)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + erf(x / sqrt 2)), one scalar at a time with math.erf."""
    flat = [0.5 * u * (1.0 + math.erf(u / math.sqrt(2.0))) for u in x.astype(np.float64).ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(x.shape)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    c = math.sqrt(2.0 / math.pi)
    flat = [
        0.5 * u * (1.0 + math.tanh(c * (u + 0.044715 * u**3))) for u in x.astype(np.float64).ravel().tolist()
    ]
    return np.array(flat, dtype=np.float64).reshape(x.shape)


_ACT64: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "gelu": ("GELU(x) = 0.5 x (1 + erf(x / sqrt(2)))", _gelu_erf),
    "gelu_new": ("GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))", _gelu_tanh),
    "gelu_pytorch_tanh": ("GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))", _gelu_tanh),
    "relu": ("ReLU(x) = max(0, x)", lambda x: np.maximum(x.astype(np.float64), 0.0)),
}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def resolve_layer(layer: int, num_layers: int) -> int:
    """``layer`` as 1..L (encoder layer N, output hidden_states[N]); -1 is the last."""
    if 1 <= layer <= num_layers:
        return layer
    if -num_layers <= layer <= -1:
        return num_layers + 1 + layer
    raise MinibertError(
        f"--layer {layer} is out of range: this model has encoder layers 1..{num_layers} "
        f"(or -{num_layers}..-1); hidden_states[0] is the embedding output"
    )


def _resolve_token(token: int | str | None, tokens: list[str]) -> int:
    n = len(tokens)
    if token is None:
        return 1 if n > 2 else 0  # the first token after [CLS]
    if isinstance(token, str) and not token.lstrip("-").isdigit():
        if token in tokens:
            return tokens.index(token)
        raise MinibertError(f"--token {token!r} is not one of the text's tokens: {' '.join(tokens)}")
    t = int(token)
    if -n <= t < n:
        return t % n
    raise MinibertError(f"--token {t} is out of range: the text has {n} tokens (0..{n - 1})")


def explain(
    model: Model,
    text: str,
    layer: int = 1,
    head: int = 0,
    token: int | str | None = None,
    pad: int = 2,
    color: bool = False,
) -> Explanation:
    """Walk ``text`` through ``model``; explain encoder layer ``layer`` (1..L,
    or negative from the end) for attention head ``head`` (0..h-1) and token
    position ``token`` (an index into the text's tokens, or a token string;
    default the first token after [CLS]). Returns the lines and the checks."""
    cfg = model.config
    L, h, d = model.num_layers, cfg.num_attention_heads, cfg.head_size
    N = resolve_layer(layer, L)
    if not 0 <= head < h:
        raise MinibertError(f"--head {head} is out of range: this model has heads 0..{h - 1}")
    if not isinstance(text, str) or not text.strip():
        raise MinibertError("the text to explain is empty")
    plain = model.tokenize([text])
    tokens = plain.tokens[0]
    T = _resolve_token(token, tokens)
    n = len(tokens)
    pad = max(0, min(pad, model.max_length - n))  # positions beyond the table do not exist
    batch = plain.padded(pad, model.tokenizer.pad_id)
    enc = model.forward(batch, trace=True)
    # trace=True runs the plain formulas (not the fast path): compare like with like
    unpadded = model.forward(plain, trace=True) if pad > 0 else enc

    dtype = str(model.dtype)
    tol = TOLERANCE[dtype]
    st = _Style(color)
    out = Explanation()
    emit = out.lines.append

    def heading(s: str) -> None:
        emit("")
        emit(st.bold(s))

    def check(what: str, error: float, tolerance: float = tol) -> None:
        c = Check(what, error, tolerance)
        out.checks.append(c)
        verdict = st.ok("ok") if c.ok else st.bad("FAIL")
        label = f"  check: {what} "
        emit(f"{label:.<58} max err {error:7.1e} {verdict}")

    def row(label: str, x: np.ndarray) -> None:
        emit(f"  {label:<14}{_vec(x)}")

    tok_label = f'token {T} "{tokens[T]}"'
    mask = batch.attention_mask[0].astype(bool)
    S = batch.input_ids.shape[1]
    emit(st.bold(f"minibert explain: {model.path.name}, {dtype}"))
    emit(f"  L={L} layers, H={cfg.hidden_size}, h={h} heads of d={d}, I={cfg.intermediate_size}, "
         f"act={cfg.hidden_act}")  # fmt: skip
    emit(f"  text: {text!r}"[:WIDTH])

    # 1. tokens ---------------------------------------------------------------
    heading(f"1. Tokens: {n} real + {S - n} padding (mask 0), S = {S}")
    emit("  pos  token             id  type  mask")
    for s in range(S):
        tok = tokens[s] if s < n else "[PAD]"
        mark = "  <- token T" if s == T else ""
        emit(f"  {s:>3}  {tok[:16]:<16} {batch.input_ids[0, s]:>5} {batch.token_type_ids[0, s]:>5} "
             f"{batch.attention_mask[0, s]:>5}{mark}")  # fmt: skip

    # 2. embeddings -----------------------------------------------------------
    e = enc.trace["embeddings"]
    ew = model.weights.embeddings
    heading("2. Embeddings: e = LayerNorm(word[id] + position[pos] + type[type])")
    emit(f"  ids (1, {S}) -> word, position, type (1, {S}, {cfg.hidden_size}) -> sum -> e (same)")
    emit(f"  {tok_label}, first {SLICE} of {cfg.hidden_size} numbers:")
    row("word", e["word"][0, T])
    row("position", e["position"][0, T])
    if e["token_type"] is not None:
        row("type", e["token_type"][0, T])
    row("sum", e["sum"][0, T])
    row("LayerNorm", e["output"][0, T])
    parts = e["word"].astype(np.float64) + e["position"]
    if e["token_type"] is not None:
        parts = parts + e["token_type"]
    check("sum = word + position + type", _maxerr(e["sum"], parts))
    z, ln = _ln64(e["sum"], ew.ln.gamma, ew.ln.beta, cfg.layer_norm_eps)
    check("e = LayerNorm(sum), float64", _maxerr(e["output"], ln))
    if "projection" in e:  # ELECTRA, ALBERT: embeddings of size E, projected to H
        E = e["output"].shape[-1]
        emit(f"  projection: x = e W_proj + b_proj, (1, {S}, {E}) -> (1, {S}, {cfg.hidden_size})")
        row("projected", e["projection"][0, T])
        check(
            "x = e W_proj + b_proj, float64",
            _maxerr(e["projection"], _affine64(e["output"], ew.W_proj, ew.b_proj)),
        )

    # 3. the chosen layer -----------------------------------------------------
    t = enc.trace["layers"][N - 1]
    w = model.weights.layers[model.weights.layer_map[N - 1]]  # ALBERT: one shared layer
    x = enc.hidden_states[N - 1]
    X = f"(1, {S}, {cfg.hidden_size})"
    heads = f"(1, {h}, {S}, {d})"
    SS = f"(1, {h}, {S}, {S})"
    heading(f"3. Encoder layer {N} of {L}: input X = hidden_states[{N - 1}], output hidden_states[{N}]")

    emit("")
    emit(st.bold("3.1 Q = X W^Q + b^Q, K = X W^K + b^K, V = X W^V + b^V, split into heads"))
    emit(f"  X {X} -> Q, K, V {X} -> {heads}")
    emit(f"  head {head}, {tok_label}, first {SLICE} of d={d}:")
    row("q", t["q"][0, head, T])
    row("k", t["k"][0, head, T])
    row("v", t["v"][0, head, T])
    for name, W, b in (
        ("q", w.attention.W_q, w.attention.b_q),
        ("k", w.attention.W_k, w.attention.b_k),
        ("v", w.attention.W_v, w.attention.b_v),
    ):
        ref = _affine64(x, W, b).reshape(1, S, h, d).transpose(0, 2, 1, 3)
        check(f"{name.upper()} = X W^{name.upper()} + b, head split, float64", _maxerr(t[name], ref))

    emit("")
    emit(st.bold("3.2 scores = Q K^T / sqrt(d_k)") + f"   d_k = {d}, sqrt(d_k) = {math.sqrt(d):.4f}")
    emit(f"  Q {heads} x K^T -> scores {SS}")
    emit(f"  head {head}, query {tok_label}, score with each key:")
    row("scores", t["scores"][0, head, T])
    q64, k64, v64 = (t[c][0].astype(np.float64) for c in "qkv")
    scores64 = np.einsum("hsd,htd->hst", q64, k64) / math.sqrt(d)
    check("scores = Q K^T / sqrt(d_k), float64", _maxerr(t["scores"][0], scores64))

    emit("")
    emit(st.bold("3.3 masked = scores + M") + "   M = 0 (real key) or the most negative float (padding)")
    emit(f"  M (1, 1, 1, {S}) broadcast over heads and queries -> masked {SS}")
    m = t["mask"][0, 0, 0]
    emit(f"  M for keys 0..{S - 1}: " + " ".join("0" if v == 0 else f"{v:.1e}" for v in m)[: WIDTH - 22])
    check("masked = scores + M", _maxerr(t["masked_scores"], t["scores"].astype(np.float64) + m))

    emit("")
    emit(st.bold("3.4 P = softmax(masked), along the keys"))
    emit(f"  masked {SS} -> P {SS}, each row sums to 1")
    emit(f"  head {head}, query {tok_label}, weight on each key:")
    row("P", t["probs"][0, head, T])
    P = t["probs"][0].astype(np.float64)
    real_rows = P[:, mask]  # (h, n, S)
    check("rows of P sum to 1", float(np.max(np.abs(real_rows.sum(-1) - 1))))
    check(f"padded keys ({S - n}) get weight 0", float(np.max(P[:, :, ~mask], initial=0.0)), 0.0)
    ms = np.where(mask[None, None, :], scores64, -np.inf)
    p64 = np.exp(ms - ms.max(-1, keepdims=True))
    p64 /= p64.sum(-1, keepdims=True)
    check("P = softmax(Q K^T / sqrt(d_k) + M), float64", _maxerr(P[:, mask], p64[:, mask]))

    emit("")
    emit(st.bold("3.5 head_i = P V = softmax(Q K^T / sqrt(d_k) + M) V"))
    emit(f"  P {SS} x V {heads} -> context {heads}")
    emit(f"  head {head}, {tok_label}:")
    row("context", t["context"][0, head, T])
    ctx64 = np.einsum("hst,htd->hsd", p64, v64)
    check("attention recomputed from Q, K, V, float64", _maxerr(t["context"][0][:, mask], ctx64[:, mask]))

    emit("")
    emit(st.bold("3.6 Concat(head_1, ..., head_h)"))
    emit(f"  context {heads} -> concat {X}; head {head} is columns {head * d}..{(head + 1) * d - 1}")
    check(f"concat[..., {head * d}:{(head + 1) * d}] = head {head}",
          _maxerr(t["concat"][0, :, head * d : (head + 1) * d], t["context"][0, head]))  # fmt: skip

    emit("")
    emit(st.bold("3.7 MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O"))
    emit(f"  concat {X} -> attention_output {X}")
    emit(f"  {tok_label}:")
    row("MultiHead", t["attention_output"][0, T])
    check(
        "W^O projection, float64",
        _maxerr(t["attention_output"], _affine64(t["concat"], w.attention.W_o, w.attention.b_o)),
    )

    emit("")
    emit(st.bold("3.8 residual_1 = X + MultiHead(X)"))
    emit(f"  X {X} + MultiHead {X} -> residual_1 {X}")
    row("X", x[0, T])
    row("residual_1", t["residual_1"][0, T])
    check(
        "residual_1 = X + MultiHead(X)",
        _maxerr(t["residual_1"], x.astype(np.float64) + t["attention_output"]),
    )

    def layer_norm_step(num: str, name: str, src: str, res: np.ndarray, g, b) -> None:
        emit("")
        emit(st.bold(f"{num} {name} = LayerNorm({src})") + "   post-LN: after the residual sum")
        emit(f"  = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta over H; eps = {cfg.layer_norm_eps:g}")
        r = res[0, T].astype(np.float64)
        mu, var = r.mean(), r.var()
        emit(f"  {tok_label}: mu = {mu:.4f}, sigma^2 = {var:.4f}")
        row(name, t[name][0, T])
        z, ln = _ln64(res, g, b, cfg.layer_norm_eps)
        zhat = (t[name].astype(np.float64) - b.astype(np.float64)) / g.astype(np.float64)
        check(f"{name}: mean over H before gamma, beta = 0", float(np.max(np.abs(zhat.mean(-1)))))
        check(f"{name}: variance over H before gamma, beta = 1", float(np.max(np.abs(zhat.var(-1) - 1))))
        check(f"{name} = LayerNorm({src}), float64", _maxerr(t[name], ln))

    layer_norm_step("3.9", "ln_1", "residual_1", t["residual_1"], w.ln_1.gamma, w.ln_1.beta)

    act_formula, act64 = _ACT64[cfg.hidden_act]
    emit("")
    emit(st.bold("3.10 FFN(x) = act(x W_1 + b_1) W_2 + b_2, x = ln_1"))
    emit(f"  ln_1 {X} -> x W_1 + b_1 (1, {S}, {cfg.intermediate_size})")
    row("ffn_pre", t["ffn_pre"][0, T])
    check(
        "ffn_pre = ln_1 W_1 + b_1, float64", _maxerr(t["ffn_pre"], _affine64(t["ln_1"], w.ffn.W_1, w.ffn.b_1))
    )
    emit(f"  act: {act_formula}")
    if cfg.hidden_act != "relu":
        emit("  (the article writes ReLU here; BERT uses GELU)")
    row("ffn_act", t["ffn_act"][0, T])
    pre_T = t["ffn_pre"][0, T]
    neg = int(np.sum(pre_T < 0))
    if cfg.hidden_act != "relu":
        emit(f"  {neg} of {pre_T.size} pre-activations of this token are < 0: ReLU would make")
        emit(f"  them 0; {cfg.hidden_act} keeps them slightly negative (min "
             f"{float(np.min(t['ffn_act'][0, T])):.4f})")  # fmt: skip
    real_pre = t["ffn_pre"][0][mask]
    check(f"{cfg.hidden_act} recomputed with math, float64", _maxerr(t["ffn_act"][0][mask], act64(real_pre)))
    emit(f"  act (1, {S}, {cfg.intermediate_size}) -> act W_2 + b_2 = FFN {X}")
    row("FFN", t["ffn_output"][0, T])
    check(
        "FFN = act W_2 + b_2, float64",
        _maxerr(t["ffn_output"], _affine64(t["ffn_act"], w.ffn.W_2, w.ffn.b_2)),
    )

    emit("")
    emit(st.bold("3.11 residual_2 = ln_1 + FFN(ln_1)"))
    row("residual_2", t["residual_2"][0, T])
    check(
        "residual_2 = ln_1 + FFN(ln_1)",
        _maxerr(t["residual_2"], t["ln_1"].astype(np.float64) + t["ffn_output"]),
    )

    layer_norm_step("3.12", "ln_2", "residual_2", t["residual_2"], w.ln_2.gamma, w.ln_2.beta)
    check(f"ln_2 is hidden_states[{N}]", _maxerr(t["ln_2"], enc.hidden_states[N]))

    # 4. output and all layers ------------------------------------------------
    heading(f"4. Output of layer {N}: hidden_states[{N}] {X}")
    out_T = enc.hidden_states[N][0, T]
    emit(f"  {tok_label}, |x| = {np.linalg.norm(out_T.astype(np.float64)):.4f}")
    row(f"layer {N}", out_T)
    if pad > 0:
        worst = max(
            _maxerr(a[0, :n], b[0]) for a, b in zip(enc.hidden_states, unpadded.hidden_states, strict=True)
        )
        check(f"{S - n} padding positions change no real token", worst)

    heading("5. Every layer: how far its output moved from the previous one")
    emit("  cosine(hidden_states[i], hidden_states[i-1]) per real token; mean |x|")
    emit("    i  what                 mean cos   min cos    mean |x|")
    for i, hs in enumerate(enc.hidden_states):
        cur = hs[0, :n]
        what = "embedding output" if i == 0 else f"encoder layer {i}"
        norm = float(np.mean(np.linalg.norm(cur.astype(np.float64), axis=-1)))
        mark = "  <- explained" if i == N else ""
        if i == 0:
            emit(f"  {i:>3}  {what:<20} {'-':>9} {'-':>9} {norm:11.4f}{mark}")
            continue
        cos = _cosine(cur, enc.hidden_states[i - 1][0, :n])
        emit(f"  {i:>3}  {what:<20} {cos.mean():9.4f} {cos.min():9.4f} {norm:11.4f}{mark}")

    failed = [c for c in out.checks if not c.ok]
    emit("")
    if failed:
        emit(st.bad(f"{len(failed)} of {len(out.checks)} checks FAILED (tolerance {tol:g} for {dtype})"))
    else:
        emit(
            st.ok(f"all {len(out.checks)} checks ok")
            + f" (tolerance {tol:g} for {dtype}; padded keys: exactly 0)"
        )
    return out
