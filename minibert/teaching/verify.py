"""Recompute a reference file's inputs and compare every layer with it.

A reference file holds what an independent implementation (Hugging Face
transformers, see ``tests/reference/generate.py``) computed for a few texts:
token ids, every hidden state and every attention map. :func:`compare`
re-tokenizes the same texts with minibert, checks the token ids are exactly
equal, runs the model and reports, per layer, the largest absolute difference
and the smallest cosine similarity at the stored (never padding) positions.

Reference file format (version 1)
---------------------------------
An ``.npz`` with no pickled objects (``np.load(path, allow_pickle=False)``
reads it). B inputs, L layers, N stored hidden-state rows, T stored attention
entries, H hidden size, h heads::

    format               ()  int      1
    provenance           ()  str      JSON: generator and its sha256, date, library
                                      versions, model name and sha256, dtype, the
                                      calls made, tolerances (see TOLERANCES)
    texts                ()  str      JSON list of B strings
    text_pairs           ()  str      JSON list of B (string or null): second segments
    tokens               ()  str      JSON list of B lists of token strings
    max_length           ()  int      truncation length (special tokens included)
    input_ids            (B, S) int   right-padded with 0, S = longest input
    token_type_ids       (B, S) int
    attention_mask       (B, S) int   1 real token, 0 padding
    positions            (N, 2) int   (input b, position s) of each stored row
    hidden_states.{i}    (N, H)       hidden_states[i][b, s] for i = 0..L
                                      ([0] embedding output, [i] output of layer i)
    attention_positions  (T, 3) int   (input b, query q, key k) of each stored entry
    attentions.{i}       (T, h)       attentions[i][b, :, q, k] for i = 0..L-1
                                      (the attention probabilities of layer i + 1)

The float dtype of ``hidden_states.*`` is the reference's dtype. Only real
(non-padding) positions are stored; for long inputs only a subset of them
(``positions``), and attention entries on the grid of stored query and key
positions, so a 512-token text does not cost 512 x 512 per head. Indexing
follows transformers' ``output_hidden_states`` / ``output_attentions``.

Tolerances
----------
Chosen by the coarser of the model's and the reference's dtype; the
reference's provenance may carry its own table, else :data:`TOLERANCES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.features.pooling import cosine
from minibert.files import parse_json, sha256_file
from minibert.outputs.npz import NpzArrays

FORMAT_VERSION = 1

#: Max abs difference allowed, by dtype and by kind of array.
TOLERANCES = {
    "float32": {"hidden_states": 1e-4, "attentions": 1e-5},
    "float64": {"hidden_states": 1e-9, "attentions": 1e-9},
}

#: Inputs up to this many tokens run as one padded batch; longer ones alone
#: (so a 512-token text does not make every short one pay for 512 positions).
BATCH_MAX_TOKENS = 64

_REQUIRED = (
    "format",
    "provenance",
    "texts",
    "text_pairs",
    "max_length",
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "positions",
    "attention_positions",
    "hidden_states.0",
)


@dataclass(frozen=True)
class Row:
    """One check: ``name`` (``input_ids``, ``hidden_states[3]``, ``attentions[2]``),
    the max abs difference and min cosine over ``count`` compared values
    (cosine is NaN for token ids), the tolerance, and whether it holds."""

    name: str
    max_abs_diff: float
    min_cosine: float
    tolerance: float
    count: int
    ok: bool


@dataclass(frozen=True)
class Report:
    """The result of :func:`compare`: one :class:`Row` per check, and notes."""

    reference: str
    model: str
    dtype: str
    reference_dtype: str
    provenance: dict
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every check is within its tolerance."""
        return bool(self.rows) and all(r.ok for r in self.rows)


def _json(arrays: NpzArrays, key: str, path: Path):
    """A 0-d string member holding JSON (nested too deep, huge numbers, lone
    surrogates: all one error naming the key, via :func:`parse_json`)."""
    dtype, shape = arrays.header(key)
    if dtype.kind != "U" or shape != ():
        raise MinibertError(f"{path}: key {key!r} is {dtype.name} of shape {shape}, not a JSON string")
    return parse_json(str(arrays[key][()]), f"{path}: key {key!r}")


def _scalar_int(arrays: NpzArrays, key: str, path: Path) -> int:
    dtype, shape = arrays.header(key)
    if dtype.kind not in "iu" or shape != ():
        raise MinibertError(f"{path}: key {key!r} is {dtype.name} of shape {shape}, not an integer")
    return int(arrays[key][()])


def _layer_keys(arrays: NpzArrays, path: Path) -> int:
    """L, from the keys ``hidden_states.0..L`` and ``attentions.0..L-1``: the
    deepest one names L, and every key below it must be there (looked for in
    order, so a key like ``hidden_states.99999999`` costs one step per key
    the file holds, not a hundred million)."""
    numbered = sorted(k for k in arrays if k.startswith(("hidden_states.", "attentions.")))
    depths = []
    for key in numbered:
        kind, _, i = key.partition(".")
        if not (i.isdigit() and len(i) < 7):
            raise MinibertError(f"{path}: unexpected key {key!r} (expected hidden_states.i, attentions.i)")
        depths.append(int(i) + (kind == "attentions"))
    L = max(depths)
    present = set(numbered)
    for i in range(L + 1):
        for key in (f"hidden_states.{i}", f"attentions.{i}")[: 1 + (i < L)]:
            if key not in present:
                raise MinibertError(f"{path}: missing key {key!r}")
    return L


def load_reference(path: str | Path) -> dict:
    """Read and check a reference file; any problem is a one-line :class:`MinibertError`.

    Read lazily (:class:`minibert.outputs.npz.NpzArrays`): every member's shape is
    checked from its header before its data is read, so a damaged or hostile
    file (a zip bomb, a truncated archive, a ``.npy`` named ``.npz``, pickled
    objects) is refused without reading it."""
    path = Path(path)
    if not path.is_file():
        raise MinibertError(f"{path}: reference file not found")
    arrays = NpzArrays(path, "an .npz reference file")
    for key in _REQUIRED:
        if key not in arrays:
            raise MinibertError(f"{path}: missing key {key!r} (not a minibert reference file?)")
    if _scalar_int(arrays, "format", path) != FORMAT_VERSION:
        raise MinibertError(f"{path}: format {arrays['format'][()]} is not {FORMAT_VERSION}")
    ref = {
        "path": path,
        "provenance": _json(arrays, "provenance", path),
        "texts": _json(arrays, "texts", path),
        "text_pairs": _json(arrays, "text_pairs", path),
        "max_length": _scalar_int(arrays, "max_length", path),
        "tokens": _json(arrays, "tokens", path) if "tokens" in arrays else None,
    }
    if not isinstance(ref["texts"], list) or not all(isinstance(t, str) for t in ref["texts"]):
        raise MinibertError(f"{path}: 'texts' must be a JSON list of strings")
    B = len(ref["texts"])
    pairs = ref["text_pairs"]
    if (
        not isinstance(pairs, list)
        or len(pairs) != B
        or not all(p is None or isinstance(p, str) for p in pairs)
    ):
        raise MinibertError(f"{path}: 'text_pairs' must be a JSON list of {B} strings or nulls")
    tokens = ref["tokens"]
    if tokens is not None and (
        not isinstance(tokens, list)
        or len(tokens) != B
        or not all(isinstance(t, list) and all(isinstance(s, str) for s in t) for t in tokens)
    ):
        raise MinibertError(f"{path}: 'tokens' must be a JSON list of {B} lists of strings")
    _check_tolerances(ref["provenance"], path)
    S = None
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        dtype, shape = arrays.header(key)
        if len(shape) != 2 or shape[0] != B or dtype.kind not in "iu" or shape[1] != (S or shape[1]):
            raise MinibertError(f"{path}: {key!r} is {dtype.name} {shape}, expected ({B}, S) integers")
        S = shape[1]
        ref[key] = arrays[key].astype(np.int64)
    if not np.isin(ref["attention_mask"], (0, 1)).all():
        raise MinibertError(f"{path}: 'attention_mask' holds values other than 0 and 1")
    lengths = ref["attention_mask"].sum(1)
    L = _layer_keys(arrays, path)
    for kind, coords, width in (("hidden_states", "positions", 2), ("attentions", "attention_positions", 3)):
        dtype, shape = arrays.header(coords)
        if len(shape) != 2 or shape[1] != width or dtype.kind not in "iu":
            raise MinibertError(f"{path}: {coords!r} has shape {shape}, expected (n, {width}) integers")
        n = shape[0]
        for i in range(L + (kind == "hidden_states")):
            dtype, shape = arrays.header(f"{kind}.{i}")
            if len(shape) != 2 or shape[0] != n or dtype.kind != "f":
                raise MinibertError(f"{path}: '{kind}.{i}' has shape {shape}, expected ({n}, n) floats")
        c = arrays[coords].astype(np.int64)
        if c.size and (
            c[:, 0].min() < 0
            or c[:, 0].max() >= B
            or c[:, 1:].min() < 0
            or np.any(c[:, 1:].max(axis=1) >= lengths[c[:, 0]])
        ):
            raise MinibertError(f"{path}: {coords!r} points outside the inputs' real (non-padding) tokens")
        ref[coords] = c
    ref["hidden_states"] = [arrays[f"hidden_states.{i}"] for i in range(L + 1)]
    ref["attentions"] = [arrays[f"attentions.{i}"] for i in range(L)]
    return ref


def _check_tolerances(prov, path: Path) -> None:
    """A provenance's own tolerance table, if any: {dtype: {kind: number}}."""
    tolerances = prov.get("tolerances") if isinstance(prov, dict) else None
    if tolerances is None:
        return
    ok = isinstance(tolerances, dict) and all(
        isinstance(t, dict)
        and all(
            isinstance(t.get(k), int | float) and not isinstance(t.get(k), bool)
            for k in TOLERANCES["float32"]
        )
        for t in tolerances.values()
    )
    if not ok:
        raise MinibertError(f"{path}: provenance 'tolerances' is not a table of numbers per dtype and kind")


def _sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except (OSError, MinibertError):  # no model.safetensors (a .bin model): no note
        return None


def _recompute(model, ref: dict) -> tuple[list, list, list, list, list[str]]:
    """minibert's ids per input, and its values at the reference's coordinates.

    Returns (ids, types, hidden rows, attention entries, notes); the rows and
    entries of inputs whose token ids differ from the reference's stay NaN.
    """
    texts, pairs = ref["texts"], ref["text_pairs"]
    B = len(texts)
    ids, types = [None] * B, [None] * B
    L = len(ref["hidden_states"]) - 1
    pos, att = ref["positions"], ref["attention_positions"]
    hidden = [np.full(ref["hidden_states"][i].shape, np.nan) for i in range(L + 1)]
    attn = [np.full(ref["attentions"][i].shape, np.nan) for i in range(L)]
    ref_len = ref["attention_mask"].sum(1)
    notes = []
    for has_pair in (False, True):
        idx = [b for b in range(B) if (pairs[b] is not None) == has_pair]
        if not idx:
            continue
        batch = model.tokenize(
            [texts[b] for b in idx], [pairs[b] for b in idx] if has_pair else None, ref["max_length"]
        )
        lengths = batch.attention_mask.sum(1)
        same = []
        for j, b in enumerate(idx):
            ids[b] = batch.input_ids[j, : lengths[j]]
            types[b] = batch.token_type_ids[j, : lengths[j]]
            want = ref["input_ids"][b, : ref_len[b]]
            if np.array_equal(ids[b], want) and np.array_equal(
                types[b], ref["token_type_ids"][b, : ref_len[b]]
            ):
                same.append(j)
            else:
                theirs = ref["tokens"][b] if ref["tokens"] else ref["input_ids"][b, : ref_len[b]].tolist()
                notes.append(
                    f"input {b}: token ids differ (minibert {batch.tokens[j][:10]}, reference "
                    f"{theirs[:10]}); its activations are not compared"
                )
        short = [j for j in same if lengths[j] <= BATCH_MAX_TOKENS]
        for group in [short] + [[j] for j in same if lengths[j] > BATCH_MAX_TOKENS]:
            if not group:
                continue
            enc = model.forward(batch.rows(group), output_attentions=True)
            if len(enc.hidden_states) != L + 1:
                raise MinibertError(
                    f"{ref['path']}: has {L + 1} hidden states ({L} layers) but the model has "
                    f"{len(enc.hidden_states) - 1} layers"
                )
            for g, j in enumerate(group):
                b = idx[j]
                rows = np.flatnonzero(pos[:, 0] == b)
                for i, h in enumerate(enc.hidden_states):
                    hidden[i][rows] = h[g][pos[rows, 1]]  # (S, H) -> (n_b, H)
                rows = np.flatnonzero(att[:, 0] == b)
                for i, a in enumerate(enc.attentions):
                    attn[i][rows] = a[g][:, att[rows, 1], att[rows, 2]].T  # (h, S, S) -> (n_b, h)
    return ids, types, hidden, attn, notes


def _cosines(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity (:func:`minibert.features.pooling.cosine`) of the rows of a and b
    (N, n); with ``groups`` (T,), of the vectors formed by the entries that share
    a group, per column. Two zero vectors count as the same direction (1)."""
    if groups is not None:
        a, b = _by_group(a, groups), _by_group(b, groups)
    both_zero = ~a.any(axis=-1) & ~b.any(axis=-1)
    return np.where(both_zero, 1.0, cosine(a, b))


def _by_group(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(T, n) entries -> (G, n, m): for each group and column, the vector of
    its entries (m: the largest group), zero-padded, which changes no cosine."""
    G, (T, n) = int(groups.max()) + 1 if groups.size else 0, x.shape
    counts = np.bincount(groups, minlength=G)
    order = np.argsort(groups, kind="stable")
    place = np.arange(T) - np.repeat(np.cumsum(counts) - counts, counts)  # index inside its group
    out = np.zeros((G, int(counts.max(initial=0)), n))
    out[groups[order], place] = x[order]
    return out.transpose(0, 2, 1)


def _row(name: str, mine: np.ndarray, ref: np.ndarray, keep: np.ndarray, tol: float, groups=None) -> Row:
    mine, ref = mine[keep].astype(np.float64), ref[keep].astype(np.float64)
    if mine.size == 0:
        return Row(name, float("nan"), float("nan"), tol, 0, False)
    diff = float(np.max(np.abs(mine - ref)))
    cos = float(np.min(_cosines(mine, ref, None if groups is None else groups[keep])))
    return Row(name, diff, cos, tol, int(mine.size), bool(diff <= tol))


#: The committed references of the default model, one per dtype (``tests/reference/generate.py``).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "tests" / "reference"


def default_reference(dtype: str = "float32") -> Path:
    """The committed transformers reference of the default model (all-MiniLM-L6-v2)
    in ``dtype``, for ``minibert verify`` with no ``--reference``."""
    path = REFERENCE_DIR / f"all-MiniLM-L6-v2-{np.dtype(dtype).name}.npz"
    if not path.is_file():
        raise MinibertError(f"{path}: the default model's reference is absent; pass --reference")
    return path


def compare(model, reference_path: str | Path) -> Report:
    """Recompute a reference file's inputs with ``model`` and compare every layer.

    Token ids must be exactly equal; hidden states and attention
    probabilities must be within the tolerance of the coarser dtype (model or
    reference), at every stored position. Raises :class:`MinibertError` for a
    missing or malformed reference, or one made for a differently shaped model.
    """
    ref = load_reference(reference_path)
    path, prov = ref["path"], ref["provenance"]
    L, cfg = len(ref["hidden_states"]) - 1, model.config
    if ref["hidden_states"][0].shape[1] != cfg.hidden_size or L != model.num_layers:
        raise MinibertError(
            f"{path}: made for {L} layers of width {ref['hidden_states'][0].shape[1]}, but the model has "
            f"{model.num_layers} layers of width {cfg.hidden_size}"
        )
    if L and ref["attentions"][0].shape[1] != cfg.num_attention_heads:
        raise MinibertError(
            f"{path}: made for {ref['attentions'][0].shape[1]} heads, the model has {cfg.num_attention_heads}"
        )
    if ref["max_length"] > model.max_length:
        raise MinibertError(f"{path}: max_length {ref['max_length']} exceeds the model's {model.max_length}")
    ref_dtype = ref["hidden_states"][0].dtype.name
    dtype = np.dtype(model.dtype).name
    coarse = "float64" if dtype == ref_dtype == "float64" else "float32"
    tolerances = prov.get("tolerances", TOLERANCES) if isinstance(prov, dict) else TOLERANCES
    tol = tolerances.get(coarse, TOLERANCES[coarse])

    ids, types, hidden, attn, notes = _recompute(model, ref)
    rows = []
    lengths = ref["attention_mask"].sum(1)
    for name, mine, want in (
        ("input_ids", ids, ref["input_ids"]),
        ("token_type_ids", types, ref["token_type_ids"]),
    ):
        worst, count = 0.0, 0
        for b, m in enumerate(mine):
            w = want[b, : lengths[b]]
            count += len(w)
            worst = max(worst, float(np.max(np.abs(m - w), initial=0)) if len(m) == len(w) else float("inf"))
        rows.append(Row(name, worst, float("nan"), 0.0, count, worst == 0))
    keep_h = ~np.isnan(hidden[0][:, 0]) if len(hidden[0]) else np.zeros(0, bool)
    for i, (mine, want) in enumerate(zip(hidden, ref["hidden_states"], strict=True)):
        rows.append(_row(f"hidden_states[{i}]", mine, want, keep_h, tol["hidden_states"]))
    att = ref["attention_positions"]
    keep_a = ~np.isnan(attn[0][:, 0]) if L and len(attn[0]) else np.zeros(len(att), bool)
    _, groups = np.unique(att[:, :2], axis=0, return_inverse=True)
    for i, (mine, want) in enumerate(zip(attn, ref["attentions"], strict=True)):
        rows.append(_row(f"attentions[{i}]", mine, want, keep_a, tol["attentions"], groups.reshape(-1)))

    model_path = getattr(model, "path", None)
    if isinstance(prov, dict) and prov.get("model_sha256") and model_path is not None:
        mine_sha = _sha256(Path(model_path) / "model.safetensors")
        if mine_sha is not None and mine_sha != prov["model_sha256"]:
            notes.append(
                f"model.safetensors sha256 {mine_sha[:12]}... differs from the reference's "
                f"{prov['model_sha256'][:12]}... (another checkpoint of the same model?)"
            )
    return Report(
        str(path),
        str(model_path),
        dtype,
        ref_dtype,
        prov if isinstance(prov, dict) else {},
        tuple(rows),
        tuple(notes),
    )


def format_report(report: Report) -> str:
    """An aligned table, one line per check, and a verdict."""
    prov = report.provenance
    versions = prov.get("versions", {})
    made_by = ", ".join(f"{k} {versions[k]}" for k in ("transformers", "torch") if k in versions)
    lines = [
        f"reference: {report.reference} ({prov.get('model', '?')}, {report.reference_dtype}"
        + (f", {made_by}" if made_by else "")
        + (f", {prov['date']}" if "date" in prov else "")
        + ")",
        f"model:     {report.model} ({report.dtype})",
        "",
        f"{'check':<20} {'max |diff|':>12} {'min cosine':>16} {'tolerance':>10} {'values':>9}  result",
    ]
    for r in report.rows:
        cos = "-" if np.isnan(r.min_cosine) else f"{r.min_cosine:.12f}"
        diff = "-" if np.isnan(r.max_abs_diff) else f"{r.max_abs_diff:.3g}"
        lines.append(
            f"{r.name:<20} {diff:>12} {cos:>16} {r.tolerance:>10.0e} {r.count:>9}  {'ok' if r.ok else 'FAIL'}"
        )
    lines.append("")
    lines += [f"note: {n}" for n in report.notes]
    bad = sum(not r.ok for r in report.rows)
    if report.ok:
        lines.append(f"OK: all {len(report.rows)} checks within tolerance")
    else:
        lines.append(f"FAIL: {bad} of {len(report.rows)} checks out of tolerance")
    return "\n".join(lines)
