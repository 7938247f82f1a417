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


#: The limits of issues 18 and 19's families (max abs difference, hidden states and attentions).
STRICT_TOLERANCES = {"float32": 1e-5, "float64": 1e-12}


def assert_matches_reference(enc, ref: dict, dtype: str, label: str) -> None:
    """An Encoding against a transformers reference: ids, mask and token types at real
    positions, then every hidden state and attention map at the reference's positions
    within :data:`STRICT_TOLERANCES`, the worst difference in the message."""
    mask = ref["attention_mask"].astype(bool)
    np.testing.assert_array_equal(enc.attention_mask, ref["attention_mask"])
    np.testing.assert_array_equal(enc.input_ids[mask], ref["input_ids"][mask])
    if ref["provenance"]["has_token_type_ids"]:
        np.testing.assert_array_equal(enc.token_type_ids[mask], ref["token_type_ids"][mask])
    assert len(enc.hidden_states) == ref["provenance"]["num_hidden_states"]
    tol = STRICT_TOLERANCES[dtype]
    b, s = ref["positions"].T
    for i, h in enumerate(enc.hidden_states):
        assert h.dtype == np.dtype(dtype)
        got, expected = h[b, s], ref[f"hidden_states.{i}"]
        err = np.abs(got - expected).max()
        assert err <= tol, f"{label} hidden_states[{i}]: {err:.2e}"
    b, q, k = ref["attention_positions"].T
    for i, a in enumerate(enc.attentions):
        got, expected = a[b, :, q, k], ref[f"attentions.{i}"]
        err = np.abs(got - expected).max()
        assert err <= tol, f"{label} attentions[{i}]: {err:.2e}"


def read_reference(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    for key in ("provenance", "texts", "text_pairs"):  # JSON strings (a table of buckets has none)
        if key in ref:
            ref[key] = json.loads(str(ref[key]))
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
