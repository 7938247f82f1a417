"""One text through the encoder, step by step, with every step checked.

:func:`explain` runs a traced forward pass (``encode(..., trace=True)``) and
returns an :class:`Explanation`: one :class:`Step` per formula, in the order
of the formulas in docs/ -- tokens and ids, the embedding sum, then for one
encoder layer each formula, its output and every layer's distance from the
one before. A step holds its title, lines that give its formula and shapes,
the numbers it shows (:class:`Shown`: one head, one token) and its checks
(:class:`Check`: a recomputation in float64 from the traced inputs, its max
error and tolerance). Each step is made by one small function below, from
the facts of the walk (:class:`Walk`); :func:`render` turns the steps into
the terminal text, and is the only place that knows colours.

The checks of BERT's steps are written independently of
:mod:`minibert.encoder.ops` (einsum, explicit statistics, ``math.erf`` one
scalar at a time), so they test the formula functions rather than repeat them.
The families' own steps -- MPNet's bucket bias, DeBERTa's c2p and p2c, the
rotation of q and k with its angle table (ModernBERT, NomicBERT), the gated FFN,
the sliding window, the pre-LN norms -- are recomputed in float64 from the
traced inputs by the same formula functions of :mod:`minibert.encoder.ops`
(no formula is written twice), so their checks measure the rounding of the
dtype; tests/test_explain.py holds what they show to independent
recomputations and to the transformers references. To show the padding mask
at work, the text is padded with ``pad`` extra [PAD] positions (attention mask
0); a check confirms they get zero attention weight and do not change the real
tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from minibert.encoder import ops
from minibert.encoder.forward import relative_positions
from minibert.encoder.layers import is_int, resolve_layer, shown_int
from minibert.encoder.params import LayerWeights
from minibert.encoder.trace import AttentionTrace, LayerTrace
from minibert.errors import MinibertError
from minibert.features.pooling import cosine
from minibert.loading.tokenizer import Batch
from minibert.model import Encoding, Model

WIDTH = 80
#: Max error a check tolerates, per compute dtype: float32 rounding of values
#: up to ~10 (observed <= 4e-6 on all-MiniLM-L6-v2), float64 rounding (<= 1e-13).
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
SLICE = 6  # numbers shown per vector


@dataclass(frozen=True)
class Check:
    """One recomputation: what was checked, the max error, the tolerance."""

    what: str
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(self.error <= self.tol)


@dataclass(frozen=True, eq=False)
class Shown:
    """Numbers shown for one vector (the first :data:`SLICE` are printed)."""

    label: str
    values: np.ndarray


#: A line of a step: text (its formula, shapes, a table row), numbers, or a check.
Line = str | Shown | Check


@dataclass(frozen=True, eq=False)
class Step:
    """One step of the walk: ``title`` (``"3.2 scores = Q K^T / sqrt(d_k)"``),
    ``note`` (said after the title), its ``lines`` in order, and ``key``, the
    number it is found by (``"3.2"``; the header has none): read by
    :meth:`Explanation.step` and the view's page, never parsed from the title."""

    title: str
    note: str = ""
    lines: tuple[Line, ...] = ()
    key: str = ""

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(x for x in self.lines if isinstance(x, Check))

    @property
    def shown(self) -> dict[str, np.ndarray]:
        """label -> the vector shown under it."""
        return {x.label: x.values for x in self.lines if isinstance(x, Shown)}


@dataclass(frozen=True, eq=False)
class Explanation:
    """The walk: its steps (the first is the header) and the tolerance of its
    checks; ``walk``, what they were read from (another layer's steps:
    ``explain_walk(replace(e.walk, layer=i))``, no second forward pass)."""

    steps: tuple[Step, ...]
    dtype: str
    tolerance: float
    walk: Walk | None = None

    @property
    def checks(self) -> list[Check]:
        return [c for step in self.steps for c in step.checks]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def step(self, key: str) -> Step:
        """The step of ``key`` (``"3.4"``, ``"2."``)."""
        return next(s for s in self.steps if s.key == key)

    @property
    def text(self) -> str:
        """The walk as plain text (:func:`render` without colours)."""
        return render(self)


# ---------------------------------------------------------------- float64 recomputations
# Independent of minibert.encoder.ops on purpose.


def _maxerr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


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


# ---------------------------------------------------------------- the walk


@dataclass(frozen=True, eq=False)
class Walk:
    """What every step reads: the model, the padded batch and its trace, and
    the choices: ``layer`` N (1..L), ``head``, token position ``T``."""

    model: Model
    text: str
    layer: int
    head: int
    T: int
    batch: Batch  # the text and `pad` [PAD] positions
    enc: Encoding  # traced
    unpadded: Encoding  # the text alone, traced (enc itself when pad = 0)
    pair: str | None = None  # the second segment (sentence B), if any

    @property
    def cfg(self):
        return self.model.config

    @property
    def tol(self) -> float:
        return TOLERANCE[str(self.model.dtype)]

    @property
    def tokens(self) -> list[str]:
        return self.batch.tokens[0]

    @property
    def n(self) -> int:
        """Real tokens."""
        return len(self.tokens)

    @property
    def S(self) -> int:
        """Positions, padding included."""
        return self.batch.input_ids.shape[1]

    @property
    def mask(self) -> np.ndarray:
        """(S,) bool: real tokens."""
        return self.batch.attention_mask[0].astype(bool)

    @property
    def t(self) -> LayerTrace:
        return self.enc.trace.layers[self.layer - 1]

    @property
    def a(self) -> AttentionTrace:
        return self.t.attention

    @property
    def w(self) -> LayerWeights:
        return self.model.weights.layers[self.model.weights.layer_map[self.layer - 1]]  # ALBERT: shared

    @property
    def x(self) -> np.ndarray:
        """The layer's input, hidden_states[N - 1]."""
        return self.enc.hidden_states[self.layer - 1]

    @property
    def token(self) -> str:
        return f'token {self.T} "{self.tokens[self.T]}"'

    @property
    def X(self) -> str:
        return f"(1, {self.S}, {self.cfg.hidden_size})"

    @property
    def heads(self) -> str:
        return f"(1, {self.cfg.num_attention_heads}, {self.S}, {self.cfg.head_size})"

    @property
    def SS(self) -> str:
        return f"(1, {self.cfg.num_attention_heads}, {self.S}, {self.S})"

    @property
    def kind(self) -> str | None:
        """The layer's kind (config ``layer_types``): ``"full_attention"`` or
        ``"sliding_attention"`` (ModernBERT, NomicBERT); None for the others."""
        types = self.cfg.layer_types
        return types[self.layer - 1] if types else None

    @property
    def pre_ln(self) -> bool:
        """Pre-LN layers (ModernBERT): the trace records what the attention read."""
        return self.t.attention_input is not None

    @property
    def attention_input(self) -> np.ndarray:
        """What the attention read: LayerNorm_1(X) in a pre-LN layer, else X."""
        return self.x if self.t.attention_input is None else self.t.attention_input

    @property
    def final(self) -> bool:
        """The explained layer is the last of a pre-LN encoder: the final norm follows it."""
        return self.layer == self.model.num_layers and self.enc.trace.final_ln is not None

    @property
    def theta(self) -> float:
        """The rotary base of the layer: ``local_rope_theta`` on a sliding-window
        layer, else ``global_rope_theta``."""
        return self.cfg.local_rope_theta if self.kind == "sliding_attention" else self.cfg.global_rope_theta

    @cached_property
    def allowed(self) -> np.ndarray:
        """(S, S) bool: query i may attend key j (M[i, j] = 0), read from the
        traced mask: the real keys, and within the window on a local layer."""
        return np.broadcast_to(self.a.mask[0, 0] == 0, (self.S, self.S))

    @cached_property
    def p64(self) -> np.ndarray:
        """softmax(Q K^T / sqrt(d) + B + M) in float64 from the traced q, k: (h, S, S)."""
        ms = np.where(self.allowed[None], self.scores64 + self.bias64, -np.inf)
        p = np.exp(ms - ms.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)

    @cached_property
    def divisor(self) -> float:
        """sqrt(d); DeBERTa: sqrt(d (1 + #terms)), the float32 root transformers divides by."""
        if self.cfg.family == "deberta-v2":
            return float(ops.disentangled_scale(self.cfg.head_size, 1 + len(self.cfg.pos_att_type)))
        return math.sqrt(self.cfg.head_size)

    @cached_property
    def scores64(self) -> np.ndarray:
        """Q K^T / divisor in float64 from the traced q, k: (h, S, S)."""
        q64, k64 = (c[0].astype(np.float64) for c in (self.a.q, self.a.k))
        return np.einsum("hsd,htd->hst", q64, k64) / self.divisor

    @cached_property
    def bias64(self) -> np.ndarray:
        """The position bias B in float64: (h, S, S), 0 for BERT (:attr:`terms64` summed)."""
        return sum(self.terms64.values(), np.zeros((self.cfg.num_attention_heads, self.S, self.S)))

    @cached_property
    def terms64(self) -> dict[str, np.ndarray]:
        """The terms of the position bias in float64, each (h, S, S); none for BERT.
        MPNet: ``bias``, its table at the buckets; DeBERTa: ``c2p`` and ``p2c`` from
        the traced q, k and the float64 projections of the relative embeddings (the
        same gathers as the formula)."""
        cfg, weights, S = self.cfg, self.model.weights, self.S
        if cfg.family == "mpnet":
            return {"bias": ops.relative_position_bias(S, weights.relative.table.astype(np.float64))[0]}
        if cfg.family != "deberta-v2" or not cfg.relative_attention or not cfg.pos_att_type:
            return {}
        rel = relative_positions(cfg, weights, S, np.float64)
        names = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o", "W_pk", "b_pk", "W_pq", "b_pq")
        w = self.w.attention
        arrays = {n: None if getattr(w, n) is None else getattr(w, n).astype(np.float64) for n in names}
        w64 = type(w)(**arrays, head_size=cfg.head_size)
        pos_q, pos_k = ops._position_projections(w64, rel, cfg.num_attention_heads)
        q64, k64 = (c.astype(np.float64) for c in (self.a.q, self.a.k))
        c2p, p2c = ops.disentangled_bias(q64, k64, pos_q, pos_k, rel.index, rel.span, float(rel.scale))
        return {name: t[0] for name, t in (("c2p", c2p), ("p2c", p2c)) if t is not None}


def _check(walk: Walk, what: str, error: float, tol: float | None = None) -> Check:
    return Check(what, error, walk.tol if tol is None else tol)


# ---------------------------------------------------------------- one function per step


def _header(walk: Walk) -> Step:
    cfg = walk.cfg
    return Step(
        f"minibert explain: {walk.model.path.name}, {walk.model.dtype}",
        lines=(
            f"  L={walk.model.num_layers} layers, H={cfg.hidden_size}, h={cfg.num_attention_heads} heads of "
            f"d={cfg.head_size}, I={cfg.intermediate_size}, act={cfg.hidden_act}",
            f"  text: {walk.text!r}"[:WIDTH],
            *(() if walk.pair is None else (f"  pair: {walk.pair!r}"[:WIDTH],)),
            *_family_lines(walk),
        ),
    )


def _family_lines(walk: Walk) -> tuple[str, ...]:
    """What this family does differently, in a line or two of the header."""
    cfg = walk.cfg
    if cfg.family == "modernbert":
        kinds = " ".join("G" if k == "full_attention" else "L" for k in cfg.layer_types)
        return (
            f"  ModernBERT: pre-LN layers, rotary q and k, GeGLU FFN; layers {kinds}"[:WIDTH],
            f"  (G global, theta {cfg.global_rope_theta:g}; L local, window |i - j| <= "
            f"{cfg.local_attention // 2}, theta {cfg.local_rope_theta:g})",
        )
    if cfg.family == "nomic_bert":
        return (f"  NomicBERT: post-LN layers, rotary q and k (theta {cfg.global_rope_theta:g}), SwiGLU FFN",)
    return ()


def _tokens(walk: Walk) -> Step:
    b = walk.batch
    rows = ["  pos  token             id  type  mask"]
    for s in range(walk.S):
        tok = walk.tokens[s] if s < walk.n else "[PAD]"
        mark = "  <- token T" if s == walk.T else ""
        rows.append(
            f"  {s:>3}  {tok[:16]:<16} {b.input_ids[0, s]:>5} {b.token_type_ids[0, s]:>5} "
            f"{b.attention_mask[0, s]:>5}{mark}"
        )
    title = f"1. Tokens: {walk.n} real + {walk.S - walk.n} padding (mask 0), S = {walk.S}"
    return Step(title, lines=tuple(rows), key="1.")


def _embeddings(walk: Walk) -> Step:
    e, ew, T, S, H = (
        walk.enc.trace.embeddings,
        walk.model.weights.embeddings,
        walk.T,
        walk.S,
        walk.cfg.hidden_size,
    )
    # DeBERTa-v3, ModernBERT and NomicBERT have no position table (positions enter in the attention),
    # DistilBERT, MPNet, DeBERTa-v3 and ModernBERT no token types
    tables = [
        (n, t)
        for n, t in (("word", e.word), ("position", e.position), ("type", e.token_type))
        if t is not None
    ]
    names = ", ".join(n for n, _ in tables)
    lines: list[Line] = [
        f"  ids (1, {S}) -> {names} (1, {S}, {H}) -> sum -> e (same)",
        *([] if e.position is not None else ["  no position table: positions enter in the attention"]),
        f"  {walk.token}, first {SLICE} of {H} numbers:",
        *(Shown(n, t[0, T]) for n, t in tables),
        Shown("sum", e.sum[0, T]),
        Shown("LayerNorm", e.output[0, T]),
        _check(walk, "sum = " + " + ".join(n for n, _ in tables), _maxerr(e.sum, sum(t.astype(np.float64)
                                                                                   for _, t in tables))),
    ]  # fmt: skip
    _, ln = _ln64(e.sum, ew.ln.gamma, ew.ln.beta, walk.cfg.layer_norm_eps)
    lines.append(_check(walk, "e = LayerNorm(sum), float64", _maxerr(e.output, ln)))
    if e.projection is not None:  # ELECTRA, ALBERT: embeddings of size E, projected to H
        E = e.output.shape[-1]
        lines += [
            f"  projection: x = e W_proj + b_proj, (1, {S}, {E}) -> (1, {S}, {H})",
            Shown("projected", e.projection[0, T]),
            _check(
                walk,
                "x = e W_proj + b_proj, float64",
                _maxerr(e.projection, _affine64(e.output, ew.W_proj, ew.b_proj)),
            ),
        ]
    lookups = {"word": "word[id]", "position": "position[pos]", "type": "type[type]"}
    title = f"2. Embeddings: e = LayerNorm({' + '.join(lookups[n] for n, _ in tables)})"
    return Step(title, lines=tuple(lines), key="2.")


def _layer_heading(walk: Walk) -> Step:
    N, L = walk.layer, walk.model.num_layers
    return Step(
        f"3. Encoder layer {N} of {L}: input X = hidden_states[{N - 1}], output hidden_states[{N}]", key="3."
    )


def _projections(walk: Walk) -> Step:
    a, w, S, T = walk.a, walk.w.attention, walk.S, walk.T
    h, d = walk.cfg.num_attention_heads, walk.cfg.head_size
    q, k = (a.q, a.k) if a.q_unrotated is None else (a.q_unrotated, a.k_unrotated)
    lines: list[Line] = [
        f"  X {walk.X} -> Q, K, V {walk.X} -> {walk.heads}",
        *(["  pre-LN: X here is LayerNorm_1(X) (3.0)"] if walk.pre_ln else []),
        *([] if a.q_unrotated is None else ["  q and k before their rotation (3.1b)"]),
        f"  head {walk.head}, {walk.token}, first {SLICE} of d={d}:",
        Shown("q", q[0, walk.head, T]),
        Shown("k", k[0, walk.head, T]),
        Shown("v", a.v[0, walk.head, T]),
    ]
    for name, traced, W, b in (("q", q, w.W_q, w.b_q), ("k", k, w.W_k, w.b_k), ("v", a.v, w.W_v, w.b_v)):
        ref = _affine64(walk.attention_input, W, b).reshape(1, S, h, d).transpose(0, 2, 1, 3)
        lines.append(
            _check(
                walk, f"{name.upper()} = X W^{name.upper()} + b, head split, float64", _maxerr(traced, ref)
            )
        )
    return Step(
        "3.1 Q = X W^Q + b^Q, K = X W^K + b^K, V = X W^V + b^V, split into heads",
        lines=tuple(lines),
        key="3.1",
    )


#: Positions added to every position by the rotary step's check: q . k must not change.
SHIFT = 5


def _rotary(walk: Walk) -> Step | None:
    """ModernBERT, NomicBERT: q and k turned by their positions (RoPE), with the
    angle table of the shown token and the checks of the rotation."""
    a, cfg, S, T, j = walk.a, walk.cfg, walk.S, walk.T, walk.head
    if a.q_unrotated is None:
        return None
    d, theta = cfg.head_size, walk.theta
    cos64, sin64 = ops.rotary_angles(np.arange(S), d, theta, np.float64)  # (S, d) each
    q64, k64 = (ops.rotate(x[0].astype(np.float64), cos64, sin64) for x in (a.q_unrotated, a.k_unrotated))
    # shifted: every position + SHIFT; the scores, which depend on i - j only, stay
    cos_s, sin_s = ops.rotary_angles(np.arange(S) + SHIFT, d, theta, np.float64)
    q_s, k_s = (ops.rotate(x[0].astype(np.float64), cos_s, sin_s) for x in (a.q_unrotated, a.k_unrotated))
    shifted = _maxerr(q_s @ np.swapaxes(k_s, -1, -2), q64 @ np.swapaxes(k64, -1, -2))
    tables = max(_maxerr(a.cos, cos64), _maxerr(a.sin, sin64))
    lines: list[Line] = [
        "  rotate(x) = x cos(p w) + [-x_2, x_1] sin(p w), x = [x_1, x_2], p the position:",
        f"  pair (x_i, x_i+{d // 2}) turns by the angle p w_i, w_i = theta^(-2i/d), d = {d}",
        _theta_line(walk),
        *_angle_table(walk, theta),
        f"  head {j}, {walk.token}, first {SLICE} of d={d}:",
        Shown("q before", a.q_unrotated[0, j, T]),
        Shown("q rotated", a.q[0, j, T]),
        Shown("k before", a.k_unrotated[0, j, T]),
        Shown("k rotated", a.k[0, j, T]),
        _check(walk, "cos(p w_i), sin(p w_i) tables, float64", tables),
        _check(walk, "q = rotate(q before), float64", _maxerr(a.q[0], q64)),
        _check(walk, "k = rotate(k before), float64", _maxerr(a.k[0], k64)),
        _check(walk, "each pair keeps its length", max(_pair_change(a.q_unrotated, a.q),
                                                       _pair_change(a.k_unrotated, a.k))),
        _check(walk, f"q . k depends on i - j only: positions + {SHIFT}, float64", shifted),
    ]  # fmt: skip
    return Step("3.1b rotary: q and k turned by their position (RoPE)", lines=tuple(lines), key="3.1b")


def _theta_line(walk: Walk) -> str:
    cfg = walk.cfg
    if cfg.family != "modernbert":
        return f"  every layer: theta = {cfg.global_rope_theta:g} (rope_theta)"
    if walk.kind == "sliding_attention":
        return (
            f"  layer {walk.layer} is local: theta = {cfg.local_rope_theta:g} (local_rope_theta; "
            f"global: {cfg.global_rope_theta:g})"
        )
    return (
        f"  layer {walk.layer} is global: theta = {cfg.global_rope_theta:g} (global_rope_theta; "
        f"local: {cfg.local_rope_theta:g})"
    )


def _angle_table(walk: Walk, theta: float) -> list[str]:
    """w_i, p w_i, cos and sin at the shown token's position p = T, as the layer's
    traced tables hold them (the first pairs, then the last: the slowest)."""
    T, half = walk.T, walk.cfg.head_size // 2
    w = ops.rotary_frequencies(walk.cfg.head_size, theta, np.float64)  # (d/2,)
    rows = [f"  at p = {T}:     i          w_i        p w_i      cos(p w_i)  sin(p w_i)"]
    shown = list(range(half)) if half <= SLICE else [*range(SLICE - 1), half - 1]
    for n, i in enumerate(shown):
        if n and i != shown[n - 1] + 1:
            rows.append(f"  {'...':>17}")
        c, s = walk.a.cos[T, i], walk.a.sin[T, i]
        rows.append(f"  {i:>17} {w[i]:12.6g} {T * w[i]:12.6g} {c:11.4f} {s:11.4f}")
    return rows


def _pair_change(before: np.ndarray, after: np.ndarray) -> float:
    """The largest change of a pair's length |(x_i, x_i+d/2)| under the rotation."""
    half = before.shape[-1] // 2

    def lengths(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return np.hypot(x[..., :half], x[..., half:])

    return _maxerr(lengths(after), lengths(before))


def _scores(walk: Walk) -> Step:
    d = walk.cfg.head_size
    if walk.cfg.family == "deberta-v2":  # DeBERTa: sqrt(d (1 + #terms)), a float32 root
        title, note = (
            "3.2 scores = Q K^T / sqrt(d_k (1 + #terms))",
            f"   d_k = {d}, float32 root = {walk.divisor:.6f}",
        )
        what = "scores = Q K^T / sqrt(d_k (1 + #terms)), float64"
    else:
        title, note = "3.2 scores = Q K^T / sqrt(d_k)", f"   d_k = {d}, sqrt(d_k) = {math.sqrt(d):.4f}"
        what = "scores = Q K^T / sqrt(d_k), float64"
    return Step(
        title,
        note,
        (
            f"  Q {walk.heads} x K^T -> scores {walk.SS}",
            f"  head {walk.head}, query {walk.token}, score with each key:",
            Shown("scores", walk.a.scores[0, walk.head, walk.T]),
            _check(walk, what, _maxerr(walk.a.scores[0], walk.scores64)),
        ),
        key="3.2",
    )


def _position_bias(walk: Walk) -> Step | None:
    """MPNet's bucket bias, DeBERTa's c2p and p2c: the numbers added to the scores."""
    a, cfg, T, S, j = walk.a, walk.cfg, walk.T, walk.S, walk.head
    if a.bias is None:
        return None
    if cfg.family == "mpnet":
        buckets = ops.relative_position_bucket(np.arange(S) - T)
        lines: list[Line] = [
            f"  B {walk.SS}, added to the scores of every layer",
            f"  table {walk.model.weights.relative.table.shape}: one number per bucket and head",
            "  (MPNet's buckets: 32, log-spaced up to distance 128, whatever the config)",
            f"  query {walk.token}: B[{j}, {T}, j] = table[bucket(j - {T}), {j}]",
            *_key_rows(walk, ("j - i", np.arange(S) - T), ("bucket(j - i)", buckets)),
        ]
        title = "3.2b relative position bias: B[h, i, j] = table[bucket(j - i), h]"
    else:
        lines, title = _gathers(walk), "3.2b disentangled attention: B = c2p + p2c"
    for name, term in walk.terms64.items():
        if name != "bias":
            lines += [
                Shown(name, getattr(a, name)[0, j, T]),
                _check(walk, f"{name}, float64", _maxerr(getattr(a, name)[0], term)),
            ]
    lines += [
        Shown("bias", a.bias[0, j, T]),
        _check(walk, "position bias B, float64", _maxerr(a.bias[0], walk.bias64)),
    ]  # fmt: skip
    return Step(title, lines=tuple(lines), key="3.2b")


#: Keys shown in a row of integers (relative positions, buckets, gather indices).
KEYS_SHOWN = 14


def _key_rows(walk: Walk, *rows: tuple[str, np.ndarray]) -> list[str]:
    """Rows of integers over the keys, aligned under a row of key positions: the
    :data:`KEYS_SHOWN` keys around the shown query when there are more."""
    lo = min(max(0, walk.T - KEYS_SHOWN // 2), max(0, walk.S - KEYS_SHOWN))
    keys = range(lo, min(walk.S, lo + KEYS_SHOWN))
    out = [f"  {'key j':<14}" + "".join(f"{j:>4}" for j in keys)]
    out += [f"  {label:<14}" + "".join(f"{values[j]:>4}" for j in keys) for label, values in rows]
    return out


def _gathers(walk: Walk) -> list[Line]:
    """DeBERTa: the relative positions of the shown query's row and where c2p and
    p2c read the all-positions products (transformers' gathers)."""
    cfg, T, S = walk.cfg, walk.T, walk.S
    index = ops.relative_position_index(S, cfg.position_buckets, cfg.max_relative)  # (S, S)
    K = cfg.relative_span
    rows = [("delta(i, j)", index[T])]
    at_c2p, at_p2c = ops.gather_index(index, K)  # (S, S) each: c[i, j], c'[j, i]
    lines: list[Line] = [f"  B {walk.SS}; 2K = {2 * K} relative embeddings Kr, Qr (K = {K})"]
    if "c2p" in cfg.pos_att_type:
        lines.append("  c2p[i, j] = Q_i . Kr_c / s at c = clip(delta(i, j) + K, 0, 2K - 1)")
        rows.append(("c", at_c2p[T]))
    if "p2c" in cfg.pos_att_type:
        lines.append("  p2c[i, j] = K_j . Qr_c' / s at c' = clip(-delta(j, i) + K, 0, 2K - 1)")
        rows.append(("c'", at_p2c[:, T]))
    lines += [
        "  (each: one product with all 2K, then a gather of the S x S entries used)",
        f"  s = sqrt(d (1 + #terms)) = {walk.divisor:.6f}; query {walk.token}:",
        *_key_rows(walk, *rows),
    ]
    return lines


def _mask(walk: Walk) -> Step:
    S, a, T = walk.S, walk.a, walk.T
    M = np.broadcast_to(a.mask[0, 0], (S, S))  # one row per query (a sliding window), or one for all
    if walk.kind == "sliding_attention":  # a row per query: 0 or m, the float min, so the window shows
        keys = " ".join("0" if v == 0 else "m" for v in M[T])[: WIDTH - 22].rstrip()
    else:
        keys = " ".join("0" if v == 0 else f"{v:.1e}" for v in M[T])[: WIDTH - 22]
    plus_b = "" if a.bias is None else " + B"
    summed = a.scores[0].astype(np.float64) + (0.0 if a.bias is None else a.bias[0]) + M
    lines: list[Line] = [
        f"  M {a.mask.shape} broadcast over heads"
        + ("" if a.mask.shape[2] > 1 else " and queries")
        + f" -> masked {walk.SS}",
        f"  M for keys 0..{S - 1}: " + keys,
        *_window_lines(walk, M),
        _check(walk, f"masked = scores{plus_b} + M", _maxerr(a.masked_scores[0], summed)),
    ]
    title = f"3.3 masked = scores{plus_b} + M" + (
        ", M: padding and window" if walk.kind == "sliding_attention" else ""
    )
    note = (
        "   M = 0 (real key) or the most negative float (padding)"
        if not plus_b
        else "   M = 0 or the float min"
    )
    return Step(title, "" if walk.kind == "sliding_attention" else note, tuple(lines), key="3.3")


def _window_lines(walk: Walk, M: np.ndarray) -> list[Line]:
    """A sliding-window layer: which keys the shown query may see, and the mask
    against :func:`ops.sliding_window_mask` of the batch."""
    cfg = walk.cfg
    if walk.kind is None:
        return []
    if walk.kind == "full_attention":
        if cfg.family != "modernbert":
            return []
        return [
            f"  layer {walk.layer} is global: every real key (local: |i - j| <= {cfg.local_attention // 2})"
        ]
    w = cfg.local_attention // 2
    seen = np.flatnonzero(M[walk.T] == 0)
    window = ops.sliding_window_mask(walk.batch.attention_mask, w, np.float64)[0, 0] == 0  # (S, S)
    return [
        f"  layer {walk.layer} is local: query i sees key j only if |i - j| <= w = {w}",
        f"  (w = local_attention // 2 = {cfg.local_attention} // 2); elsewhere M = m = {M.min():.1e}",
        f"  {walk.token} sees keys {seen.min()}..{seen.max()}: {seen.size} of {walk.S}",
        _check(walk, "window: M = 0 where |i - j| <= w, j real", float(np.sum(window != (M == 0))), 0.0),
    ]


def _softmax(walk: Walk) -> Step:
    mask, S, n = walk.mask, walk.S, walk.n
    P = walk.a.probs[0].astype(np.float64)
    real_rows = P[:, mask]  # (h, n, S)
    lines: list[Line] = [
        f"  masked {walk.SS} -> P {walk.SS}, each row sums to 1",
        f"  head {walk.head}, query {walk.token}, weight on each key:",
        Shown("P", walk.a.probs[0, walk.head, walk.T]),
        _check(walk, "rows of P sum to 1", float(np.max(np.abs(real_rows.sum(-1) - 1)))),
        _check(walk, f"padded keys ({S - n}) get weight 0", float(np.max(P[:, :, ~mask], initial=0.0)), 0.0),
    ]
    if walk.kind == "sliding_attention":  # real keys outside a real query's window
        seen = np.flatnonzero(walk.allowed[walk.T])
        lines.insert(3, Shown(f"P, keys {seen[0]}..", walk.a.probs[0, walk.head, walk.T, seen]))
        outside = ~walk.allowed & mask[None, :] & mask[:, None]  # (S, S)
        lines.append(
            _check(
                walk, "keys outside the window get weight 0", float(np.max(P[:, outside], initial=0.0)), 0.0
            )
        )
    what = (
        "P = softmax(Q K^T / sqrt(d_k) + M), float64"
        if walk.a.bias is None
        else "P = softmax(scores + B + M), float64"
    )
    lines.append(_check(walk, what, _maxerr(P[:, mask], walk.p64[:, mask])))
    return Step("3.4 P = softmax(masked), along the keys", lines=tuple(lines), key="3.4")


def _context(walk: Walk) -> Step:
    a, m = walk.a, walk.mask
    ctx64 = np.einsum("hst,htd->hsd", walk.p64, a.v[0].astype(np.float64))
    return Step(
        "3.5 head_i = P V = softmax(Q K^T / sqrt(d_k) + M) V",
        lines=(
            f"  P {walk.SS} x V {walk.heads} -> context {walk.heads}",
            f"  head {walk.head}, {walk.token}:",
            Shown("context", a.context[0, walk.head, walk.T]),
            _check(
                walk, "attention recomputed from Q, K, V, float64", _maxerr(a.context[0][:, m], ctx64[:, m])
            ),
        ),
        key="3.5",
    )


def _concat(walk: Walk) -> Step:
    head, d = walk.head, walk.cfg.head_size
    cols = slice(head * d, (head + 1) * d)
    return Step(
        "3.6 Concat(head_1, ..., head_h)",
        lines=(
            f"  context {walk.heads} -> concat {walk.X}; "
            f"head {head} is columns {cols.start}..{cols.stop - 1}",
            _check(  # every head, so the check does not depend on the head chosen
                walk,
                "concat = the heads side by side, every head",
                _maxerr(walk.a.concat[0], walk.a.context[0].transpose(1, 0, 2).reshape(walk.S, -1)),
            ),
        ),
        key="3.6",
    )


def _multi_head(walk: Walk) -> Step:
    a, w = walk.a, walk.w.attention
    return Step(
        "3.7 MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O",
        lines=(
            f"  concat {walk.X} -> attention_output {walk.X}",
            f"  {walk.token}:",
            Shown("MultiHead", a.output[0, walk.T]),
            _check(walk, "W^O projection, float64", _maxerr(a.output, _affine64(a.concat, w.W_o, w.b_o))),
        ),
        key="3.7",
    )


def _residual_1(walk: Walk) -> Step:
    t, X = walk.t, walk.X
    formula = "X + MultiHead(LayerNorm_1(X))" if walk.pre_ln else "X + MultiHead(X)"
    return Step(
        f"3.8 residual_1 = {formula}",
        lines=(
            f"  X {X} + MultiHead {X} -> residual_1 {X}",
            Shown("X", walk.x[0, walk.T]),
            Shown("residual_1", t.residual_1[0, walk.T]),
            _check(
                walk,
                f"residual_1 = {formula}",
                _maxerr(t.residual_1, walk.x.astype(np.float64) + t.attention.output),
            ),
        ),
        key="3.8",
    )


def _layer_norm(walk: Walk, num: str, name: str, src: str) -> Step:
    """``name`` (ln_1, ln_2) = LayerNorm(``src``) with the layer's gamma and beta."""
    out, res, ln = getattr(walk.t, name), getattr(walk.t, src), getattr(walk.w, name)
    lines = _norm_lines(walk, out, res, ln, name, f"{name} = LayerNorm({src})")
    return Step(f"{num} {name} = LayerNorm({src})", "   post-LN: after the residual sum", lines, key=num)


def _norm_lines(walk: Walk, out: np.ndarray, x: np.ndarray, ln, name: str, what: str) -> tuple[Line, ...]:
    """out = LayerNorm(x) with ``ln``'s gamma and beta: its statistics for the shown
    token, the output and three checks (named by ``name`` and ``what``). Before
    gamma and beta a row has mean 0 and variance sigma^2 / (sigma^2 + eps), which
    is 1 but for eps (1e-5 for MPNet and ModernBERT: 1e-5 / sigma^2 off): the
    variance check takes eps out, so that it holds to rounding in float64 too."""
    eps, T = walk.cfg.layer_norm_eps, walk.T
    r = x[0, T].astype(np.float64)
    _, ln64 = _ln64(x, ln.gamma, ln.beta, eps)
    zhat = (out.astype(np.float64) - ln.beta.astype(np.float64)) / ln.gamma.astype(np.float64)
    var = x.astype(np.float64).var(-1)
    mean_0 = float(np.max(np.abs(zhat.mean(-1))))
    var_1 = float(np.max(np.abs(zhat.var(-1) * (var + eps) / var - 1)))
    return (
        f"  = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta over H; eps = {eps:g}",
        f"  {walk.token}: mu = {r.mean():.4f}, sigma^2 = {r.var():.4f}",
        Shown(name, out[0, T]),
        _check(walk, f"{name}: mean over H before gamma, beta = 0", mean_0),
        _check(walk, f"{name}: variance over H before gamma, beta = 1", var_1),
        _check(walk, f"{what}, float64", _maxerr(out, ln64)),
    )


def _ln_1(walk: Walk) -> Step:
    if walk.pre_ln:  # pre-LN: the FFN's own norm; the residual stream goes on as it is
        t, note = walk.t, "   pre-LN: the FFN's input only"
        lines = _norm_lines(walk, t.ln_1, t.residual_1, walk.w.ln_2, "ln_1", "ln_1 = LayerNorm_2(residual_1)")
        return Step("3.9 ln_1 = LayerNorm_2(residual_1)", note, lines, key="3.9")
    return _layer_norm(walk, "3.9", "ln_1", "residual_1")


def _attention_norm(walk: Walk) -> Step | None:
    """Pre-LN (ModernBERT): the attention reads LayerNorm_1(X), not X; the first
    layer has no such norm (its input, the embeddings, was just normalised)."""
    if not walk.pre_ln:
        return None
    t, title = walk.t, "3.0 LayerNorm_1(X): pre-LN, the attention reads X normalised"
    if walk.w.ln_1 is None:
        lines: tuple[Line, ...] = (
            "  this layer has no attention norm: LayerNorm_1 is the identity",
            "  (its input, the embedding output, was normalised just before)",
            _check(walk, "the attention reads X itself", _maxerr(t.attention_input, walk.x), 0.0),
        )
    else:
        lines = _norm_lines(
            walk, t.attention_input, walk.x, walk.w.ln_1, "LN_1(X)", "LN_1(X) = LayerNorm_1(X)"
        )
    return Step(title, "", (f"  X {walk.X} -> {walk.X}; X itself goes on to the residual", *lines), key="3.0")


def _feed_forward(walk: Walk) -> Step:
    if walk.t.ffn.gate is not None:
        return _gated_feed_forward(walk)
    cfg, t, f, w, T, S = walk.cfg, walk.t, walk.t.ffn, walk.w.ffn, walk.T, walk.S
    act_formula, act64 = _ACT64[cfg.hidden_act]
    lines: list[Line] = [
        f"  ln_1 {walk.X} -> x W_1 + b_1 (1, {S}, {cfg.intermediate_size})",
        Shown("ffn_pre", f.pre[0, T]),
        _check(walk, "ffn_pre = ln_1 W_1 + b_1, float64", _maxerr(f.pre, _affine64(t.ln_1, w.W_1, w.b_1))),
        f"  act: {act_formula}",
    ]
    if cfg.hidden_act != "relu":
        lines.append("  (the article writes ReLU here; BERT uses GELU)")
    lines.append(Shown("ffn_act", f.act[0, T]))
    if cfg.hidden_act != "relu":
        neg, lowest = int(np.sum(f.pre[0, T] < 0)), float(np.min(f.act[0, T]))
        lines += [
            f"  {neg} of {f.pre[0, T].size} pre-activations of this token are < 0: ReLU would make",
            f"  them 0; {cfg.hidden_act} keeps them slightly negative (min {lowest:.4f})",
        ]
    lines += [
        _check(
            walk,
            f"{cfg.hidden_act} recomputed with math, float64",
            _maxerr(f.act[0][walk.mask], act64(f.pre[0][walk.mask])),
        ),
        f"  act (1, {S}, {cfg.intermediate_size}) -> act W_2 + b_2 = FFN {walk.X}",
        Shown("FFN", f.output[0, T]),
        _check(walk, "FFN = act W_2 + b_2, float64", _maxerr(f.output, _affine64(f.act, w.W_2, w.b_2))),
    ]
    return Step("3.10 FFN(x) = act(x W_1 + b_1) W_2 + b_2, x = ln_1", lines=tuple(lines), key="3.10")


#: A gated FFN's name and its activation's formula, by config ``hidden_act``.
GATED = {
    "gelu": ("GeGLU", "GELU(x) = 0.5 x (1 + erf(x / sqrt(2)))"),
    "gelu_new": ("GeGLU", "GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))"),
    "gelu_pytorch_tanh": ("GeGLU", "GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))"),
    "silu": ("SwiGLU", "SiLU(x) = x sigmoid(x) = x / (1 + exp(-x))"),
    "relu": ("ReGLU", "ReLU(x) = max(0, x)"),
}


def _gated_feed_forward(walk: Walk) -> Step:
    """ModernBERT's GeGLU, NomicBERT's SwiGLU: act(x W_1 + b_1) * (x W_gate + b_gate),
    the two halves, the activation and the product, with :func:`ops.glu` in float64."""
    cfg, t, f, w, T, S, I = (
        walk.cfg,
        walk.t,
        walk.t.ffn,
        walk.w.ffn,
        walk.T,
        walk.S,
        walk.cfg.intermediate_size,
    )
    name, formula = GATED[cfg.hidden_act]
    act = ops.ACTIVATIONS[cfg.hidden_act]
    pre64, gate64 = f.pre.astype(np.float64), f.gate.astype(np.float64)
    halves = "Wi, in two halves" if cfg.family == "modernbert" else "fc12, then fc11"
    m, flips = walk.mask, int(np.sum(f.gate[0, T] < 0))
    glu64 = ops.glu(pre64[0], gate64[0], act)  # (S, I)
    lines: list[Line] = [
        f"  ln_1 {walk.X} -> two products (1, {S}, {I}): x W_1 + b_1, to activate,",
        f"  and the gate x W_gate + b_gate (the checkpoint's {halves})",
        Shown("ffn_pre", f.pre[0, T]),
        Shown("gate", f.gate[0, T]),
        _check(walk, "ffn_pre = ln_1 W_1 + b_1, float64", _maxerr(f.pre, _affine64(t.ln_1, w.W_1, w.b_1))),
        _check(walk, "gate = ln_1 W_gate + b_gate, float64", _maxerr(f.gate, _affine64(t.ln_1, w.W_gate,
                                                                                         w.b_gate))),
        f"  act on the first only: {formula}",
        Shown("act(ffn_pre)", act(pre64[0, T])),
        f"  then times the gate, number by number ({name}; the article: ReLU, no gate)",
        Shown("ffn_act", f.act[0, T]),
        f"  {flips} of {I} gate values of this token are < 0: they flip act's sign",
        _check(walk, f"ffn_act = act(ffn_pre) * gate, {name}, float64", _maxerr(f.act[0][m], glu64[m])),
        f"  act (1, {S}, {I}) -> act W_2 + b_2 = FFN {walk.X}",
        Shown("FFN", f.output[0, T]),
        _check(walk, "FFN = act W_2 + b_2, float64", _maxerr(f.output, _affine64(f.act, w.W_2, w.b_2))),
    ]  # fmt: skip
    return Step(
        "3.10 FFN(x) = (act(x W_1 + b_1) * (x W_gate + b_gate)) W_2 + b_2",
        f"   {name}",
        tuple(lines),
        key="3.10",
    )


def _residual_2(walk: Walk) -> Step:
    t = walk.t
    src = "residual_1" if walk.pre_ln else "ln_1"  # pre-LN: the stream, not the FFN's normalised input
    sum_error = _maxerr(t.residual_2, getattr(t, src).astype(np.float64) + t.ffn.output)
    return Step(
        f"3.11 residual_2 = {src} + FFN(ln_1)",
        lines=(
            Shown("residual_2", t.residual_2[0, walk.T]),
            _check(walk, f"residual_2 = {src} + FFN(ln_1)", sum_error),
        ),
        key="3.11",
    )


def _ln_2(walk: Walk) -> Step:
    N = walk.layer
    if walk.final:  # pre-LN's last layer: the final norm
        return _final_norm(walk)
    if walk.pre_ln:  # no LayerNorm after the sum: the output is residual_2 itself
        output = _check(
            walk, f"residual_2 is hidden_states[{N}]", _maxerr(walk.t.ln_2, walk.enc.hidden_states[N])
        )
        lines = (f"  pre-LN adds no LayerNorm after the sum; layer {N + 1} normalises its input", output)
        return Step(f"3.12 hidden_states[{N}] = residual_2", "   pre-LN", lines, key="3.12")
    step = _layer_norm(walk, "3.12", "ln_2", "residual_2")
    output = _check(walk, f"ln_2 is hidden_states[{N}]", _maxerr(walk.t.ln_2, walk.enc.hidden_states[N]))
    return replace(step, lines=(*step.lines, output))


def _final_norm(walk: Walk) -> Step:
    """Pre-LN: the encoder's last step, one more LayerNorm after its last layer."""
    N, final = walk.layer, walk.enc.trace.final_ln
    what = "final = LayerNorm_final(residual_2)"
    lines = (
        "  pre-LN: the stream is normalised once more, after the last layer",
        *_norm_lines(walk, final, walk.t.residual_2, walk.model.weights.final_ln, "final", what),
        _check(walk, f"final is hidden_states[{N}]", _maxerr(final, walk.enc.hidden_states[N])),
    )
    return Step(
        f"3.12 hidden_states[{N}] = LayerNorm_final(residual_2)", "   the final norm", lines, key="3.12"
    )


def _output(walk: Walk) -> Step:
    N, n = walk.layer, walk.n
    out_T = walk.enc.hidden_states[N][0, walk.T]
    lines: list[Line] = [
        f"  {walk.token}, |x| = {np.linalg.norm(out_T.astype(np.float64)):.4f}",
        Shown(f"layer {N}", out_T),
    ]
    if walk.S > n:
        pairs = zip(walk.enc.hidden_states, walk.unpadded.hidden_states, strict=True)
        worst = max(_maxerr(a[0, :n], b[0]) for a, b in pairs)
        lines.append(_check(walk, f"{walk.S - n} padding positions change no real token", worst))
    return Step(f"4. Output of layer {N}: hidden_states[{N}] {walk.X}", lines=tuple(lines), key="4.")


def _every_layer(walk: Walk) -> Step:
    n = walk.n
    rows = [
        "  cosine(hidden_states[i], hidden_states[i-1]) per real token; mean |x|",
        "    i  what                 mean cos   min cos    mean |x|",
    ]
    states = walk.enc.hidden_states
    for i, hs in enumerate(states):
        cur = hs[0, :n]
        what = "embedding output" if i == 0 else f"encoder layer {i}"
        if i == len(states) - 1 and walk.enc.trace.final_ln is not None:
            what = f"layer {i} + final norm"
        norm = float(np.mean(np.linalg.norm(cur.astype(np.float64), axis=-1)))
        mark = "  <- explained" if i == walk.layer else ""
        if i == 0:
            rows.append(f"  {i:>3}  {what:<20} {'-':>9} {'-':>9} {norm:11.4f}{mark}")
            continue
        cos = cosine(cur, states[i - 1][0, :n])
        rows.append(f"  {i:>3}  {what:<20} {cos.mean():9.4f} {cos.min():9.4f} {norm:11.4f}{mark}")
    return Step("5. Every layer: how far its output moved from the previous one", lines=tuple(rows), key="5.")


#: The walk, in order.
STEPS: tuple[Callable[[Walk], Step], ...] = (
    _header,
    _tokens,
    _embeddings,
    _layer_heading,
    _attention_norm,
    _projections,
    _rotary,
    _scores,
    _position_bias,
    _mask,
    _softmax,
    _context,
    _concat,
    _multi_head,
    _residual_1,
    _ln_1,
    _feed_forward,
    _residual_2,
    _ln_2,
    _output,
    _every_layer,
)


# ---------------------------------------------------------------- arguments and the walk


def resolve_head(head, num_heads: int, what: str = "head") -> int:
    """An attention head 0..h-1, or a MinibertError naming ``what``."""
    if not is_int(head):
        raise MinibertError(f"{what} must be an integer, got {head!r:.40}")
    if not 0 <= head < num_heads:
        raise MinibertError(
            f"{what} {shown_int(head)} is out of range: this model has heads 0..{num_heads - 1}"
        )
    return int(head)


def resolve_token(token: int | str | None, tokens: list[str], what: str = "token") -> int:
    """A token position (negative from the end) or a token string -> its
    position; None: the first token after [CLS]."""
    n = len(tokens)
    if token is None:
        return 1 if n > 2 else 0
    if isinstance(token, str):
        try:
            t = int(token) if token.lstrip("-").isdigit() else None
        except ValueError:  # a digit int() does not read: "²"
            t = None
        if t is None:
            if token in tokens:
                return tokens.index(token)
            raise MinibertError(f"{what} {token!r:.60} is not one of the text's tokens: {' '.join(tokens)}")
    elif is_int(token):
        t = int(token)
    else:
        raise MinibertError(f"{what} must be an integer position or a token string, got {token!r:.40}")
    if -n <= t < n:
        return t % n
    raise MinibertError(f"{what} {shown_int(t)} is out of range: the text has {n} tokens (0..{n - 1})")


#: [PAD] positions appended by default (fewer when the text leaves less room).
PAD = 2


def resolve_pad(pad: int | None, n: int, max_length: int, what: str = "pad") -> int:
    """[PAD] positions to append to a text of ``n`` tokens: an integer from 0
    to ``max_length - n`` (positions past the model's table do not exist);
    None: :data:`PAD`, or as many as fit."""
    room = max(0, max_length - n)
    if pad is None:
        return min(PAD, room)
    if not is_int(pad) or not 0 <= pad <= room:
        shown = shown_int(pad) if is_int(pad) else f"{pad!r:.40}"
        raise MinibertError(
            f"{what} must be an integer from 0 to {room} (the text has {n} tokens and the model "
            f"{max_length} positions), got {shown}"
        )
    return int(pad)


def explain(
    model: Model,
    text: str,
    layer: int = 1,
    head: int = 0,
    token: int | str | None = None,
    pad: int | None = None,
    *,
    pair: str | None = None,
    prefix: str = "",
) -> Explanation:
    """Walk ``text`` through ``model``; explain encoder layer ``layer`` (1..L,
    or negative from the end) for attention head ``head`` (0..h-1) and token
    position ``token`` (an index into the text's tokens, negative from the
    end, or a token string; default the first token after [CLS]). ``pad``:
    [PAD] positions appended to show the mask, 0 to ``model.max_length``
    minus the text's tokens (default 2, or as many as fit). ``prefix`` goes
    before the argument names in messages (the command line passes ``"--"``,
    so they name its options). Returns the steps and their checks;
    :func:`render` prints them. Every argument is checked before the forward
    pass: a bool or a float is not an integer, and each error names the
    argument and its range. The text goes through the model once, traced
    (with ``pad`` [PAD] positions, and once more without them when pad > 0).
    ``pair``: a second segment (sentence B), tokenized with the text as
    ``model.tokenize([text], [pair])`` does ([CLS] A [SEP] B [SEP], type ids
    0 then 1); ``token`` indexes the tokens of both.
    """
    N = resolve_layer(layer, model.num_layers + 1, f"{prefix}layer", first=1)
    head = resolve_head(head, model.config.num_attention_heads, f"{prefix}head")
    if not isinstance(text, str):
        raise MinibertError(f"the text to explain must be a string, got {type(text).__name__}")
    if not text.strip():
        raise MinibertError("the text to explain is empty")
    if pair is not None and not isinstance(pair, str):
        raise MinibertError(
            f"{prefix}pair: the second text must be a string or None, got {type(pair).__name__}"
        )
    if pair is not None and not pair.strip():
        raise MinibertError(f"{prefix}pair: the second text is empty")
    plain = model.tokenize([text], None if pair is None else [pair])
    T = resolve_token(token, plain.tokens[0], f"{prefix}token")
    pad = resolve_pad(pad, len(plain.tokens[0]), model.max_length, f"{prefix}pad")
    batch = plain.padded(pad, model.tokenizer.pad_id)
    enc = model.forward(batch, trace=True)
    # trace=True runs the plain formulas (not the fast path): compare like with like
    unpadded = model.forward(plain, trace=True) if pad > 0 else enc
    return explain_walk(Walk(model, text, N, head, T, batch, enc, unpadded, pair))


def explain_walk(walk: Walk) -> Explanation:
    """Every step of :data:`STEPS` on ``walk``."""
    steps = (step(walk) for step in STEPS)  # a step of another family is None
    return Explanation(tuple(s for s in steps if s is not None), str(walk.model.dtype), walk.tol, walk)


# ---------------------------------------------------------------- the terminal text


class _Style:
    """ANSI colours when writing to a terminal, plain text otherwise."""

    def __init__(self, color: bool):
        self.color = color

    def _wrap(self, code: str, s: str) -> str:
        return f"\033[{code}m{s}\033[0m" if self.color else s

    def bold(self, s: str) -> str:
        return self._wrap("1", s)

    def ok(self, s: str) -> str:
        return self._wrap("32", s)

    def bad(self, s: str) -> str:
        return self._wrap("31;1", s)


def _vec(x: np.ndarray, n: int = SLICE) -> str:
    """The first ``n`` numbers of a 1-D array, fixed width, '...' if cut."""
    x = np.asarray(x, dtype=np.float64).ravel()
    body = " ".join(f"{v:8.4f}" for v in x[:n])
    return f"[{body}{' ...' if x.size > n else ''}]"


def _line(line: Line, st: _Style) -> str:
    if isinstance(line, Shown):
        return f"  {line.label:<14}{_vec(line.values)}"
    if isinstance(line, Check):
        label = f"  check: {line.what} "
        verdict = st.ok("ok") if line.ok else st.bad("FAIL")
        return f"{label:.<58} max err {line.error:7.1e} {verdict}"
    return line


def render(explanation: Explanation, color: bool = False) -> str:
    """The walk as terminal text: a title per step (a blank line before
    each but the first), its lines, then the verdict. ``color``: ANSI bold
    titles and green/red verdicts."""
    st = _Style(color)
    out: list[str] = []
    for i, step in enumerate(explanation.steps):
        out += ([""] if i else []) + [st.bold(step.title) + step.note]
        out += [_line(line, st) for line in step.lines]
    checks = explanation.checks
    failed = [c for c in checks if not c.ok]
    tol, dtype = explanation.tolerance, explanation.dtype
    out.append("")
    if failed:
        out.append(st.bad(f"{len(failed)} of {len(checks)} checks FAILED (tolerance {tol:g} for {dtype})"))
    else:
        out.append(
            st.ok(f"all {len(checks)} checks ok")
            + f" (tolerance {tol:g} for {dtype}; padded keys: exactly 0)"
        )
    return "\n".join(out)
