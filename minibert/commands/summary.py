"""``minibert summary``: one line per stored layer of an extract output: what
the layer is, mean vector norm, mean cosine to the previous stored layer."""

from __future__ import annotations

import argparse

import numpy as np

from minibert.errors import printable
from minibert.features.pooling import cosine
from minibert.outputs.output import open_output
from minibert.outputs.readers import OutputReader


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="per-layer summary of an extract output file")
    p.add_argument(
        "output", metavar="OUTPUT", help=".npz, .safetensors, .jsonl or shard directory written by extract"
    )
    p.set_defaults(func=run)


def describe(index: int, last: int | None) -> str:
    """What hidden_states[index] is."""
    if index == 0:
        return "embeddings: LN(word + position + type)"
    if index == last:
        return f"output of encoder layer {index} (last)"
    return f"output of encoder layer {index}"


def layer_stats(out: OutputReader) -> list[tuple[int, float, float | None]]:
    """(layer index, mean L2 norm of its vectors, mean cosine to the
    previous stored layer's vector at the same position, or None).

    Read one part at a time (a file is one part, a shard directory one per
    shard), so a corpus that does not fit in memory can be summarised."""
    sums = {i: [0.0, 0.0, 0] for i in out.layers}  # layer -> [sum of norms, sum of cosines, rows]
    for part in out.parts():
        prev = None
        for i in out.layers:
            v = np.asarray(part.arrays[f"hidden_states.{i}"], dtype=np.float64)  # (N or T, H)
            norms = np.linalg.norm(v, axis=-1)
            sums[i][0] += float(norms.sum())
            if prev is not None:  # a zero vector has no direction (NaN): it counts as 0
                sums[i][1] += float(np.nansum(cosine(v, prev)))
            sums[i][2] += len(norms)
            prev = v
    rows = []
    for k, i in enumerate(out.layers):
        total_norm, total_cos, n = sums[i]
        mean_norm = total_norm / n if n else float("nan")
        rows.append((i, mean_norm, None if k == 0 else (total_cos / n if n else float("nan"))))
    return rows


def run(args: argparse.Namespace) -> int:
    out = open_output(args.output)
    settings = out.settings
    kind = "pooled vectors" if out.pooled else "word vectors" if out.word_level else "token vectors"
    print(f"{printable(args.output)}: {out.num_texts} texts, {kind}", end="")
    if settings:
        words = f", word_pool={settings['word_pool']}" if settings.get("word_pool", "none") != "none" else ""
        print(f" (pool={settings.get('pool')}{words}, model={printable(str(settings.get('model')))})", end="")
    print()
    if out.num_texts == 0:
        print("no texts")
        return 0
    if "combined" in out.names:
        width = out.vectors(0, "combined").shape[-1]
        print(f"combined ({settings.get('combine')}) of layers {out.layers}: {width} features per vector")
        return 0
    last = settings.get("num_hidden_layers")
    print(f"{'layer':>5}  {'what it is':<42} {'mean norm':>9}  {'cos(prev)':>9}")
    for i, norm, cos in layer_stats(out):
        cos_s = "" if cos is None else f"{cos:9.4f}"
        print(f"{i:>5}  {describe(i, last):<42} {norm:9.3f}  {cos_s:>9}")
    return 0
