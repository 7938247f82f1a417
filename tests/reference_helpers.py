"""Independent references shared by several test modules: the family
references' reader and the tolerances they are held to (test_families,
test_checkpoint), and the attention statistics by plain loops written from
their definitions (test_attention_stats, test_extract_attentions, test_plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from minibert.features.attention_stats import STATS

TOLERANCES = {  # max abs difference
    "float32": {"hidden_states": 1e-4, "attentions": 1e-5},
    "float64": {"hidden_states": 1e-9, "attentions": 1e-9},
}


def read_reference(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    ref["provenance"] = json.loads(str(ref["provenance"]))
    ref["texts"] = json.loads(str(ref["texts"]))
    ref["text_pairs"] = json.loads(str(ref["text_pairs"]))
    return ref


def loops(p, cls, sep, punct) -> dict[str, np.ndarray]:
    """Every statistic by plain loops over heads, queries and keys, in Python floats."""
    h, n, _ = p.shape
    out = {name: np.zeros(h) for name in STATS}
    for k in range(h):
        sums = dict.fromkeys(STATS, 0.0)
        for i in range(n):
            for j in range(n):
                v = float(p[k, i, j])
                if v > 0:
                    sums["entropy"] -= v * math.log(v)
                sums["to_cls"] += v if cls[j] else 0.0
                sums["to_sep"] += v if sep[j] else 0.0
                sums["to_punct"] += v if punct[j] else 0.0
                sums["to_prev"] += v if j == i - 1 else 0.0
                sums["to_next"] += v if j == i + 1 else 0.0
                sums["to_self"] += v if j == i else 0.0
                sums["distance"] += v * abs(i - j)
        for name in STATS:
            out[name][k] = sums[name] / n
    return out
