"""Does each kernel of minibert/encoder/kernels.py pay? The fast schedule timed with
the kernel against the same schedule with the kernel's formula of minibert/encoder/ops.py,
on the real model (all-MiniLM-L6-v2, float32), with every hidden state returned.

Variants (each differs from "schedule", today's default, in one place):

- ``schedule``: the default, every kernel: kernels.linear_into (with the residual sums
  in place), kernels.layer_norm_inplace, kernels.gelu_inplace (with kernels.erf32),
  kernels.attention
- ``linear=formula``: the row block with ops.linear and ops.feed_forward (new
  temporaries, the layer's output copied into place), LayerNorm still the kernel
- ``layer_norm=formula``: ops.layer_norm (through an adapter writing into the kernel's
  array: one extra copy of an (m, H) block, ~1/6 of the formula's passes)
- ``gelu=formula``: ops.gelu with kernels.erf32 passed as its erf (no copy)
- ``erf=scipy``: ops.gelu as the docs teach it, scipy's erf (so erf32's gain)
- ``attention=formula``: ops.scaled_dot_product_attention per head group (timing only:
  its q is already divided by sqrt(d), so the numbers are off by that scale)
- ``all=formula``: every formula above at once, erf32 kept (``ops.gelu`` with it)

Method: a warm-up call per variant, then rounds; in each round every variant runs once
per workload (32 x 128 and 8 x 512 random token ids, 1 and 2 threads), in an order that
rotates from round to round, so noise from other processes (a shared 2-core machine)
hits all alike. The figure is the median of the per-round ratio schedule time / variant
time (above 1: the variant is faster; below: the kernel pays), with its quartiles, both
in CPU time of the process (all its threads; far less disturbed by other processes on
a loaded machine) and in wall-clock time.

Run: ``python bench/kernels.py [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minibert  # noqa: E402
from minibert.encoder import fast, kernels, ops  # noqa: E402

WORKLOADS = {"32x128": (32, 128), "8x512": (8, 512)}


def layer_norm_formula(y, gamma, beta, eps):
    y[...] = ops.layer_norm(y, gamma, beta, eps)


def attention_formula(q, kT, v, p, out, probs=None):
    a = ops.scaled_dot_product_attention(q, kT.swapaxes(-1, -2), v)
    out[...] = a.context
    if probs is not None:
        probs[...] = a.probs


def layer_rows_formula(x, ctx, out, layer, act, eps, a, f):
    """The row block with the formulas: ops.linear and ops.feed_forward, new temporaries
    for every result, the layer's output copied into ``out`` (the same bits)."""
    w = layer.attention
    x_1 = ops.layer_norm(x + ops.linear(ctx, w.W_o, w.b_o), layer.ln_1.gamma, layer.ln_1.beta, eps)
    x_2 = x_1 + ops.feed_forward(x_1, layer.ffn, act).output
    out[...] = ops.layer_norm(x_2, layer.ln_2.gamma, layer.ln_2.beta, eps)


def layer_rows_formula_ln_kernel(x, ctx, out, layer, act, eps, a, f):
    """layer_rows_formula, but LayerNorm still the kernel: what linear_into alone buys."""
    w = layer.attention
    x_1 = x + ops.linear(ctx, w.W_o, w.b_o)
    kernels.layer_norm_inplace(x_1, layer.ln_1.gamma, layer.ln_1.beta, eps)
    x_2 = x_1 + ops.feed_forward(x_1, layer.ffn, act).output
    kernels.layer_norm_inplace(x_2, layer.ln_2.gamma, layer.ln_2.beta, eps)
    out[...] = x_2


def gelu_formula_activation(name, dtype):
    if name == "gelu" and np.dtype(dtype) == np.float32:
        return partial(ops.gelu, erf=kernels.erf32)
    return ops.ACTIVATIONS[name]


def scipy_activation(name, dtype):
    return ops.ACTIVATIONS[name]


PATCHES = {
    "schedule": [],
    "linear=formula": [(fast, "_layer_rows", layer_rows_formula_ln_kernel)],
    "layer_norm=formula": [(kernels, "layer_norm_inplace", layer_norm_formula)],
    "gelu=formula": [(fast, "activation", gelu_formula_activation)],
    "erf=scipy": [(fast, "activation", scipy_activation)],
    "attention=formula": [(kernels, "attention", attention_formula)],
    "all=formula": [
        (kernels, "layer_norm_inplace", layer_norm_formula),
        (fast, "activation", gelu_formula_activation),
        (kernels, "attention", attention_formula),
        (fast, "_layer_rows", layer_rows_formula),
    ],
}


@contextlib.contextmanager
def patched(name: str):
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in PATCHES[name]]
    for module, attr, value in PATCHES[name]:
        setattr(module, attr, value)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def batch(model, B: int, S: int, seed: int = 0) -> minibert.Batch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, model.config.vocab_size, (B, S))
    mask = np.ones((B, S), np.int64)
    tokens = [[f"t{i}" for i in row] for row in ids]
    return minibert.Batch(ids, np.zeros_like(ids), mask, tokens, [[None] * S] * B, [S] * B)


def timed(model, b, name: str) -> tuple[float, float]:
    """(CPU seconds of the process, wall-clock seconds) of one forward pass."""
    with patched(name):
        c0, t0 = time.process_time(), time.perf_counter()
        model.forward(b)
        return time.process_time() - c0, time.perf_counter() - t0


def table(times: dict, names: list[str], cases: list, clock: int) -> None:
    print(f"{'variant':<20}" + "".join(f"{f'{w} {t}t':>30}" for w, t in cases))
    for n in names:
        cells = []
        for c in cases:
            base, mine = [x[clock] for x in times[c, "schedule"]], [x[clock] for x in times[c, n]]
            ratios = [a / b for a, b in zip(base, mine, strict=True)]
            q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            cells.append(f"{med:.3f} [{q1:.2f}, {q3:.2f}] {statistics.median(mine):.2f}s")
        print(f"{n:<20}" + "".join(f"{cell:>30}" for cell in cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variants", nargs="*", default=list(PATCHES))
    args = parser.parse_args(argv)
    model = minibert.load()
    names = ["schedule", *[v for v in args.variants if v != "schedule"]]
    cases = [(w, t) for w in WORKLOADS for t in (1, 2)]
    batches = {w: batch(model, *WORKLOADS[w]) for w in WORKLOADS}
    times = {(c, n): [] for c in cases for n in names}
    for w, t in cases:
        model.threads = t
        for n in names:
            timed(model, batches[w], n)  # warm-up
    for r in range(args.rounds):
        for w, t in cases:
            model.threads = t
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                times[(w, t), n].append(timed(model, batches[w], n))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for clock, what in ((0, "CPU time (all threads)"), (1, "wall clock")):
        print(f"\n{what}: schedule / variant, median [quartiles] of the per-round ratio, median time")
        table(times, names, cases, clock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
