"""Sliding-window layers: the band (today's schedule) against full masked attention (the
schedule before it), time and memory of one local layer at S = 512, 2,048 and 8,192.

The model: ModernBERT-base's per-layer shapes (hidden 768, 12 heads of 64, GeGLU
intermediate 1152, local_attention 128: a query sees keys at most 64 tokens away), random
weights, written as a model directory (config.json, model.safetensors, the tiny model's
tokenizer) in a temporary folder and loaded the ordinary way. It has ONE layer, local
(``layer_types: ["sliding_attention"]``), so a forward pass is the embeddings, that layer
and the final norm: one local layer. ``--layers 4`` makes every layer local instead.

Variants, in one process, on the same weights and random ids (one text of S tokens):

- ``band``: ``fast.forward`` as it is, each block of ``fast.BAND_ROWS`` (64) queries over
  the at most 64 + 2 x 64 keys of its window (``fast._band_attention``); ``band-32``,
  ``band-128`` with ``--rows 32 128``: the same with other block sizes;
- ``full``: the same forward with ``fast._band_attention`` replaced by the former schedule
  of a local layer: every n x n score of each head group (``fast._attention``), the window
  added as an (h, n, n) bias (an (n, n) ``ops.window_bias`` broadcast over the heads), its
  scratch of g n^2 scores (``fast._score_scratch`` of a global layer).

Time: a warm-up call per variant and size, then ``--rounds`` rounds; in each round every
(size, variant) runs once, the variants in an order that rotates from round to round;
medians of CPU time of the process (one BLAS thread, one schedule thread: CPU time is far
less disturbed than wall time on a shared, loaded machine) and of wall time, for the
whole layer and for its attention alone (the part that differs). Memory: one
more call of each, under ``tracemalloc`` (NumPy reports its arrays to it): the layer's
working memory, the peak of traced memory during the call less the hidden states it
returns (2 x S x 768 float32), and within it the attention's scores (:func:`measured`).

    python bench/band_scaling.py                          # S = 512 2048 8192, 3 rounds
    python bench/band_scaling.py --sizes 512 2048 --rounds 5 --rows 32 128
    make bench-band
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minibert  # noqa: E402
from minibert.encoder import fast, ops, threads  # noqa: E402
from minibert.encoder.forward import position_ids  # noqa: E402

TINY = ROOT / "tests" / "data" / "tiny-modernbert"
H, HEADS, INTERMEDIATE, WINDOW, VOCAB = 768, 12, 1152, 128, 335


def write_model(path: Path, layers: int, seed: int = 0) -> None:
    """A ModernBERT directory with base-sized layers, all local, random weights."""
    from safetensors.numpy import save_file

    config = json.loads((TINY / "config.json").read_text())
    config.update(
        hidden_size=H, num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, num_hidden_layers=layers,
        local_attention=WINDOW, max_position_embeddings=8192, layer_types=["sliding_attention"] * layers,
    )  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, path / name)
    rng = np.random.default_rng(seed)
    shapes = {"embeddings.tok_embeddings.weight": (VOCAB, H), "embeddings.norm.weight": (H,),
              "final_norm.weight": (H,)}  # fmt: skip
    for i in range(layers):
        p = f"layers.{i}."
        shapes |= {p + "attn.Wqkv.weight": (3 * H, H), p + "attn.Wo.weight": (H, H),
                   p + "mlp.Wi.weight": (2 * INTERMEDIATE, H), p + "mlp.Wo.weight": (H, INTERMEDIATE),
                   p + "mlp_norm.weight": (H,)}  # fmt: skip
        if i:
            shapes[p + "attn_norm.weight"] = (H,)
    tensors = {}
    for name, shape in shapes.items():
        t = 1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else rng.normal(0, 0.02, shape)
        tensors[name] = t.astype(np.float32)
    save_file(tensors, str(path / "model.safetensors"))


def full_masked(qkv, ctx, scores, h, probs, positions, half):
    """The former schedule of a local layer: all n x n scores, the window as a bias."""
    n = len(qkv)
    window = np.broadcast_to(ops.window_bias(positions, positions, half, qkv.dtype), (h, n, n))
    scratch = np.empty(fast._score_scratch(np.array([n]), h), qkv.dtype)
    fast._attention(qkv, ctx, scratch, h, probs, window)


def variant(name: str):
    """(BAND_ROWS, the attention of local layers) of a variant."""
    if name == "full":
        return fast.BAND_ROWS, full_masked
    rows = int(name.split("-")[1]) if "-" in name else fast.BAND_ROWS
    return rows, fast._band_attention


def measured(attention, log: list, trace: bool):
    """``attention`` that appends to ``log`` (CPU seconds, bytes or 0) per call: its own time,
    and with ``trace`` the memory of its scores: what it allocates at its peak (traced),
    plus the scores scratch it is given if it uses it (the band's; the former schedule
    allocates its own n x n one inside)."""

    def wrapped(qkv, ctx, scores, *rest):
        before = tracemalloc.get_traced_memory()[0] if trace else 0
        if trace:
            tracemalloc.reset_peak()
        cpu = time.process_time()
        attention(qkv, ctx, scores, *rest)
        cpu = time.process_time() - cpu
        held = 0 if attention is full_masked else scores.nbytes
        log.append((cpu, tracemalloc.get_traced_memory()[1] - before + held if trace else 0))

    return wrapped


def run(model, inputs, name: str, trace: bool = False):
    """One forward pass of ``name``: (layer CPU s, wall s, attention CPU s, memory), memory
    None, or with ``trace`` (layer MiB, attention's scores MiB): the layer's working memory
    (the traced peak less the hidden states returned) and its attention's (:func:`measured`)."""
    rows, attention = variant(name)
    saved = fast.BAND_ROWS, fast._band_attention
    log: list[tuple[float, int]] = []
    fast.BAND_ROWS, fast._band_attention = rows, measured(attention, log, trace)
    try:
        if trace:
            tracemalloc.start()
        cpu, wall = time.process_time(), time.perf_counter()
        hidden, _ = fast.forward(model.weights, model.config, *inputs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        memory = None
        if trace:
            working = tracemalloc.get_traced_memory()[1] - sum(x.nbytes for x in hidden)
            memory = working / 2**20, max(b for _, b in log) / 2**20
            tracemalloc.stop()
        return cpu, wall, sum(c for c, _ in log), memory
    finally:
        fast.BAND_ROWS, fast._band_attention = saved


def inputs_of(model, S: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB - 5, (1, S))
    mask = np.ones((1, S), np.int64)
    return ids, position_ids(model.config, ids, mask), None, mask


def check_equal(model, S: int, names: list[str]) -> float:
    """The variants' last hidden states agree (float32 rounding): max |a - b| / max |b|."""
    inputs = inputs_of(model, min(S, 1024))
    last = []
    for name in names:
        rows, attention = variant(name)
        saved = fast.BAND_ROWS, fast._band_attention
        fast.BAND_ROWS, fast._band_attention = rows, attention
        try:
            last.append(fast.forward(model.weights, model.config, *inputs)[0][-1])
        finally:
            fast.BAND_ROWS, fast._band_attention = saved
    return max(float(np.abs(a - last[-1]).max() / np.abs(last[-1]).max()) for a in last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, nargs="*", default=[], help="other band block sizes to time")
    parser.add_argument("--layers", type=int, default=1, help="local layers in the model (default 1)")
    args = parser.parse_args()
    names = ["band", *(f"band-{r}" for r in args.rows), "full"]
    with tempfile.TemporaryDirectory() as tmp, threads.threads(1):
        write_model(Path(tmp), args.layers)
        model = minibert.load(tmp, "float32")
        print(f"ModernBERT-shaped, {args.layers} local layer(s): H {H}, {HEADS} heads, I {INTERMEDIATE}, "
              f"local_attention {WINDOW}; float32, 1 thread; {args.rounds} rounds")  # fmt: skip
        print(f"band vs full, last hidden state at {min(max(args.sizes), 1024)} tokens: "
              f"max |diff| / max = {check_equal(model, max(args.sizes), names):.1e}")  # fmt: skip
        inputs = {S: inputs_of(model, S) for S in args.sizes}
        times = {(S, n): [] for S in args.sizes for n in names}
        for S in args.sizes:
            for n in names:
                run(model, inputs[S], n)  # warm-up
        for r in range(args.rounds):
            for S in args.sizes:
                for n in names[r % len(names) :] + names[: r % len(names)]:
                    times[S, n].append(run(model, inputs[S], n)[:3])
        memory = {(S, n): run(model, inputs[S], n, trace=True)[3] for S in args.sizes for n in names}
    table(args.sizes, names, times, memory)


def table(sizes, names, times, memory) -> None:
    """The markdown table: per size, each variant's medians and memory, and full / band."""
    print("\n| S | variant | layer: CPU s (wall s) | its attention: CPU s | layer MiB | scores MiB |")
    print("|---|---|---|---|---|---|")
    for S in sizes:
        med = {n: [statistics.median(t[i] for t in times[S, n]) for i in range(3)] for n in names}
        for n in names:
            cpu, wall, attn = med[n]
            mib = memory[S, n]
            print(f"| {S:,} | {n} | {cpu:.3f} ({wall:.3f}) | {attn:.3f} | {mib[0]:.0f} | {mib[1]:.1f} |")
        band, full = med["band"], med["full"]
        print(f"| {S:,} | full / band | {full[0] / band[0]:.1f}x | {full[2] / band[2]:.1f}x | "
              f"{memory[S, 'full'][0] / memory[S, 'band'][0]:.1f}x | "
              f"{memory[S, 'full'][1] / memory[S, 'band'][1]:.0f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
