"""The ``.jsonl`` output format, written and read back: one JSON object per
text, in input order:
``{"index", "text", "text_pair"?, "tokens", "words"?, "spans"?, "segments"?,
"num_tokens", "kept_tokens", "layers": [{"index", "values"}]}``
(``"index": "combined"`` with --combine; words, spans and segments with
--word-pool), in the spirit of google-research/bert's extract_features.py;
with --attentions also ``"attentions": [{"index": i, "values": (h, n, n)}]``
per selected encoder layer, with --attention-stats
``"attention_stats": {"layers": [...], "entropy": (L', h), ...}``.
Numbers are written with 5 (float16), 9 (float32) or 17 (float64)
significant digits, which read back to the same binary value.

Writing: :func:`jsonl_line` (:class:`minibert.outputs.writers.JsonlWriter`
writes the lines atomically). Reading: :func:`read_jsonl`, every line
checked, into the arrays of :mod:`minibert.outputs.records` (a .jsonl
records no settings).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from minibert.encoder.layers import is_int
from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS
from minibert.files import numbered_lines, open_regular, parse_json
from minibert.outputs.records import Record
from minibert.outputs.records import offsets as _offsets
from minibert.outputs.spec import ExtractSpec

# -- writing ------------------------------------------------------------------------


def _json_text(a: np.ndarray) -> str:
    """A float array as JSON text that reads back to the same binary values."""
    fmt = {2: "%.5g", 4: "%.9g"}.get(a.dtype.itemsize, "%.17g")
    if a.ndim == 1:
        return "[" + ",".join(np.char.mod(fmt, a)) + "]"
    return "[" + ",".join(_json_text(row) for row in a) + "]"


def _layer_key(name: str) -> str:
    """``hidden_states.3`` -> ``3``; ``combined`` -> ``"combined"`` (JSON)."""
    return '"combined"' if name == "combined" else name.removeprefix("hidden_states.")


def jsonl_line(r: Record, spec: ExtractSpec) -> bytes:
    """Record ``r`` as its line of a .jsonl output (the layout above), newline included."""
    head = {"index": r.index, "text": r.text}
    if r.text_pair is not None:
        head["text_pair"] = r.text_pair
    head["tokens"] = r.tokens
    if r.words is not None:
        head["words"] = r.words.words
        head["spans"] = r.words.spans.tolist()
        if r.text_pair is not None:
            head["segments"] = r.words.segments.tolist()
    head["num_tokens"] = r.num_tokens
    head["kept_tokens"] = len(r.tokens)
    layers = ",".join(
        f'{{"index":{_layer_key(name)},"values":{_json_text(v)}}}' for name, v in r.features.items()
    )
    line = json.dumps(head, ensure_ascii=False)[:-1] + ',"layers":[' + layers + "]"
    return (line + _jsonl_attention(r, spec) + "}\n").encode("utf-8")


def _jsonl_attention(r: Record, spec: ExtractSpec) -> str:
    """A record's attention maps or statistics, as ``spec`` asks, as the end
    of its .jsonl line; '' for none."""
    if spec.attentions == "maps":
        maps = ",".join(
            f'{{"index":{i},"values":{_json_text(r.attentions[i])}}}' for i in spec.attention_layers
        )
        return ',"attentions":[' + maps + "]"
    if spec.attentions == "stats":
        # a text without tokens has NaN statistics: JSON null (read back as NaN)
        values = [f'"{s}":{_json_text(r.attention_stats[s]).replace("nan", "null")}' for s in STATS]
        return (
            ',"attention_stats":{"layers":'
            + json.dumps(list(spec.attention_layers))
            + ","
            + ",".join(values)
            + "}"
        )
    return ""


# -- reading ------------------------------------------------------------------------


def _are_json_numbers(values, nulls: bool = False, ints: bool = False) -> bool:
    """Whether ``values`` is JSON numbers (``ints``: integers) in nested lists (``nulls``:
    or null), checked by type: NumPy would read ``true`` as 1.0 (a bool is an int in
    Python), ``"1.5"`` as 1.5 and, as an integer, 1.5 as 1."""
    allowed = ({int} if ints else {int, float}) | ({type(None)} if nulls else set())
    stack = [values]
    while stack:
        v = stack.pop()
        if type(v) is not list:
            if type(v) not in allowed:
                return False
            continue
        types = set(map(type, v))
        if list in types:
            stack.extend(x for x in v if type(x) is list)
            types.discard(list)
        if not types <= allowed:
            return False
    return True


def _jsonl_values(layer, where: str, rows: int | None) -> tuple[str, np.ndarray]:
    """One ``{"index", "values"}`` entry of a .jsonl line: (name, values)."""
    if not isinstance(layer, dict) or "values" not in layer:
        raise MinibertError(f"{where}: each of 'layers' must be an object with 'index' and 'values'")
    idx = layer.get("index")
    if idx != "combined" and not is_int(idx):
        raise MinibertError(f'{where}: layer index {idx!r} is not an integer or "combined"')
    name = "combined" if idx == "combined" else f"hidden_states.{idx}"
    try:
        values = np.asarray(layer["values"], dtype=np.float64) if _are_json_numbers(layer["values"]) else None
    except (ValueError, TypeError):
        values = None
    if values is None or np.isnan(values).any():  # NumPy reads a JSON null as NaN
        raise MinibertError(f"{where}: {name} values are not a list of numbers, or rows of equal length")
    if values.shape == (0,):  # a text with no words has an empty list of values
        values = values.reshape(0, 0)
    if values.ndim not in (1, 2) or (values.ndim == 2 and rows is not None and len(values) != rows):
        raise MinibertError(f"{where}: {name} values have shape {values.shape}, expected ({rows}, H) or (H,)")
    return name, values


def _jsonl_strings(obj: dict, key: str, where: str) -> list[str]:
    v = obj.get(key)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise MinibertError(f"{where}: {key!r} must be a list of strings")
    return v


def read_jsonl(path: Path) -> dict:
    """A .jsonl output, every line checked (:class:`_JsonlLines`), as the
    arguments of a :class:`minibert.outputs.readers.FileOutput`. Read line by
    line (:func:`minibert.files.numbered_lines`, no limit on a line: one text's
    attention maps can be large), so a bad byte is reported at its line."""
    lines = _JsonlLines(path)
    with open_regular(path, "a .jsonl output") as f:
        for lineno, line in numbered_lines(f, str(path)):
            lines.add(parse_json(line, f"{path}: line {lineno}", dict), lineno)
    return _jsonl_output(path, lines)


class _JsonlLines:
    """The lines of a .jsonl output, each checked as it is added: its
    ``index`` in order, string tokens (and words, spans, segments), and per
    layer one row of values per token (word), or one vector -- the same
    layers, and the same kind, on every line."""

    def __init__(self, path: Path):
        self.path = path
        self.tokens: list[str] = []
        self.words: list[str] = []
        self.per_name: dict[str, list[np.ndarray]] = {}
        self.per_text: dict[str, list] = {}
        self.word_level: bool | None = None
        self.layer_names: list[str] | None = None
        self.ndims: set[int] = set()
        self.attention: _JsonlAttention | None = None

    def add(self, obj: dict, lineno: int) -> None:
        where = f"{self.path}: line {lineno}"
        if type(obj.get("index")) is not int or obj["index"] != lineno - 1:
            raise MinibertError(f"{where}: index is {obj.get('index')!r}, expected {lineno - 1}")
        toks = _jsonl_strings(obj, "tokens", where)
        if self.word_level is None:
            self.word_level = "words" in obj
        if ("words" in obj) != self.word_level:
            raise MinibertError(f"{where}: 'words' on some lines and not on others")
        num = obj.get("num_tokens", len(toks))
        if not is_int(num) or num < len(toks):
            raise MinibertError(f"{where}: num_tokens {num!r} is not a count >= its {len(toks)} tokens")
        self.tokens.extend(toks)
        self.per_text.setdefault("kept_tokens", []).append(len(toks))
        self.per_text.setdefault("num_tokens", []).append(num)
        rows = len(toks)
        if self.word_level:
            ws = _jsonl_strings(obj, "words", where)
            rows = len(ws)
            self.words.extend(ws)
            self.per_text.setdefault("rows", []).append(rows)
            spans = _jsonl_ints(obj.get("spans"), (rows, 2), "spans", where)
            segments = _jsonl_ints(obj.get("segments", [0] * rows), (rows,), "segments", where)
            self.per_text.setdefault("spans", []).append(spans)
            self.per_text.setdefault("segments", []).append(segments)
        layers = obj.get("layers")
        if not isinstance(layers, list):
            raise MinibertError(f"{where}: 'layers' must be a list")
        got = [_jsonl_values(layer, where, rows) for layer in layers]
        names, ndims = [name for name, _ in got], {v.ndim for _, v in got}
        if self.layer_names is None:
            self.layer_names, self.ndims = names, ndims
        if names != self.layer_names or len(set(names)) != len(names):
            raise MinibertError(f"{where}: layers {names} differ from the first line's {self.layer_names}")
        if ndims != self.ndims:
            raise MinibertError(f"{where}: values of {sorted(ndims)} dimensions, unlike the first line")
        for name, values in got:
            self.per_name.setdefault(name, []).append(values)
        if self.attention is None:
            self.attention = _JsonlAttention(obj, where)
        self.attention.add(obj, len(toks), where)


class _JsonlAttention:
    """The attention maps (``"attentions": [{"index": i, "values": (h, k, k)}]``)
    or statistics (``"attention_stats": {"layers": [...], name: (L', h)}``)
    of a .jsonl output's lines, each line checked as it is added: the kind
    of the first line on every line, the same layers and heads, k its tokens."""

    def __init__(self, first: dict, where: str):
        self.kind = "maps" if "attentions" in first else "stats" if "attention_stats" in first else None
        if "attentions" in first and "attention_stats" in first:
            raise MinibertError(f"{where}: holds both 'attentions' and 'attention_stats'")
        self.layers: list[int] | None = None
        self.heads: int | None = None
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, obj: dict, k: int, where: str) -> None:
        kind = "maps" if "attentions" in obj else "stats" if "attention_stats" in obj else None
        if kind != self.kind or ("attentions" in obj and "attention_stats" in obj):
            key = {"maps": "'attentions'", "stats": "'attention_stats'", None: "no attention"}
            raise MinibertError(f"{where}: {key[kind]}, unlike the first line ({key[self.kind]})")
        if kind == "maps":
            self._add_maps(obj["attentions"], k, where)
        elif kind == "stats":
            self._add_stats(obj["attention_stats"], where)

    def _same(self, layers: list, heads: int, where: str) -> None:
        if not all(is_int(i) for i in layers) or len(set(layers)) != len(layers):
            raise MinibertError(f"{where}: attention layers {layers} are not distinct integers")
        if self.layers is None:
            self.layers, self.heads = layers, heads
        if layers != self.layers:
            raise MinibertError(
                f"{where}: attention layers {layers} differ from the first line's {self.layers}"
            )
        if heads != self.heads:
            raise MinibertError(f"{where}: {heads} attention heads, the first line has {self.heads}")

    def _add_maps(self, maps, k: int, where: str) -> None:
        if not isinstance(maps, list) or not all(isinstance(m, dict) and "values" in m for m in maps):
            raise MinibertError(f"{where}: 'attentions' must be a list of objects with 'index' and 'values'")
        layers = [m.get("index") for m in maps]
        bad = [i for i in layers if not is_int(i)]
        if bad:
            raise MinibertError(f"{where}: attention layer index {bad[0]!r} is not an integer")
        arrays = []
        for i, m in zip(layers, maps, strict=True):
            a = _jsonl_floats(m["values"], f"attentions of layer {i}", where)
            if k == 0 and a.ndim == 2 and a.shape[1] == 0:  # h empty maps are written [[], ...]
                a = a.reshape(len(a), 0, 0)
            if a.ndim != 3 or a.shape[1:] != (k, k):
                raise MinibertError(
                    f"{where}: attentions of layer {i} have shape {a.shape}, expected (h, {k}, {k})"
                )
            arrays.append(a)
        self._same(layers, arrays[0].shape[0] if arrays else None, where)
        for i, a in zip(layers, arrays, strict=True):
            self.values.setdefault(f"attentions.{i}", []).append(a.reshape(-1))

    def _add_stats(self, stats, where: str) -> None:
        if not isinstance(stats, dict) or sorted(stats) != sorted(["layers", *STATS]):
            raise MinibertError(f"{where}: 'attention_stats' must hold 'layers' and {', '.join(STATS)}")
        layers = stats["layers"]
        if not isinstance(layers, list):
            raise MinibertError(f"{where}: 'attention_stats' 'layers' must be a list of encoder layers")
        arrays = {s: _jsonl_floats(stats[s], f"attention_stats {s!r}", where, nulls=True) for s in STATS}
        shapes = {a.shape for a in arrays.values()}
        shape = next(iter(shapes))
        if len(shapes) != 1 or len(shape) != 2 or shape[0] != len(layers):
            raise MinibertError(
                f"{where}: attention statistics of shapes {sorted(shapes)}, expected ({len(layers)}, h) each"
            )
        self._same(layers, shape[1], where)
        for s, a in arrays.items():
            self.values.setdefault(f"attention_stats.{s}", []).append(a)

    def arrays(self, kept: np.ndarray) -> dict[str, np.ndarray]:
        """The attention arrays of :mod:`minibert.outputs.records` (none without)."""
        if self.kind is None:
            return {}
        out = {"attention_layers": np.asarray(self.layers, dtype=np.int64)}
        if self.kind == "maps":
            out["attention_offsets"] = _offsets(self.heads * kept**2)
            return out | {name: np.concatenate(v) for name, v in self.values.items()}
        return out | {name: np.stack(v) for name, v in self.values.items()}


def _jsonl_floats(values, what: str, where: str, nulls: bool = False) -> np.ndarray:
    """Nested lists of numbers as a float64 array (``nulls``: null is NaN)."""
    try:
        a = np.asarray(values, dtype=np.float64) if _are_json_numbers(values, nulls) else None
    except (ValueError, TypeError):
        a = None
    if a is None or (not nulls and np.isnan(a).any()):
        raise MinibertError(f"{where}: {what} are not lists of numbers of equal lengths")
    return a


def _jsonl_ints(v, shape: tuple[int, ...], key: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.int64) if _are_json_numbers(v, ints=True) else None
    except (ValueError, TypeError, OverflowError):
        a = None
    if a is None or (a.size and a.shape != shape) or (not a.size and math.prod(shape)):
        raise MinibertError(f"{where}: {key!r} must be integers of shape {shape}")
    return a.reshape(shape)


def _jsonl_output(path: Path, lines: _JsonlLines) -> dict:
    """The arrays of a checked .jsonl output, as the arguments of an in-memory
    :class:`minibert.outputs.readers.FileOutput`."""
    source = str(path)
    tokens, per_name, per_text = lines.tokens, lines.per_name, lines.per_text
    words = lines.words if lines.word_level else None
    kinds = {v.ndim for values in per_name.values() for v in values}
    pooled = words is None and kinds == {1}
    if len(kinds) > 1:
        raise MinibertError(f"{source}: some lines hold one vector per text, others one per token")
    widths = {name: {v.shape[-1] for v in values if v.size} for name, values in per_name.items()}
    for name, w in widths.items():
        if len(w) > 1:
            raise MinibertError(f"{source}: {name} has vectors of different widths {sorted(w)}")
    if pooled:
        arrays = {name: np.stack(v) for name, v in per_name.items()}
    else:  # a text with no words has an empty list of values
        arrays = {
            name: np.concatenate([a for a in v if a.size] or [np.zeros((0, 0))])
            for name, v in per_name.items()
        }
    layers = [int(n.split(".")[1]) for n in arrays if n.startswith("hidden_states.")]
    kept = np.asarray(per_text.get("kept_tokens", []), dtype=np.int64)
    arrays |= {
        "offsets": _offsets(kept),
        "layers": np.asarray(layers, dtype=np.int64),
        "num_tokens": np.asarray(per_text.get("num_tokens", []), dtype=np.int64),
        "kept_tokens": kept,
    }
    if words is not None:
        arrays |= {
            "token_offsets": arrays["offsets"],
            "offsets": _offsets(per_text["rows"]),
            "spans": np.concatenate(per_text["spans"]).reshape(-1, 2),
            "segments": np.concatenate(per_text["segments"]),
        }
    attention = lines.attention
    if attention is not None:
        arrays |= attention.arrays(kept)
    heads = attention.heads if attention is not None else None
    return dict(
        arrays=arrays, tokens=tokens, settings={}, pooled=pooled, words=words, source=source, heads=heads
    )
