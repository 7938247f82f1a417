"""One text's features (:class:`Record`), and the arrays every output holds.

Extract makes one :class:`Record` per text, in any order; writers turn a
chunk of them into the arrays below (:func:`records_to_arrays`), in input
order. Layout of ``.npz`` / ``.safetensors`` (N texts, T tokens in all):

    hidden_states.{i}   (N, H) pooled, or (T, H) token-level: layer i's vectors
                        (i indexes transformers' hidden_states: 0 = embeddings)
    combined            (N, H') / (T, H') instead, with --combine sum|mean|concat
    offsets             (N + 1,) int64: text n owns rows offsets[n]:offsets[n+1]
                        of the token-level arrays (and of input_ids)
    input_ids           (T,) int64: every text's token ids, concatenated
    layers              (L,) int64: the hidden_states indices that were selected
    tokens (.npz only)  (T,) str; in .safetensors the token strings and all
                        settings are in the header metadata (JSON)
    num_tokens          (N,) int64: each text's token count before truncation
    kept_tokens         (N,) int64: ... and after (< num_tokens: truncated)

With --word-pool the rows are words (W in all), not tokens:

    offsets             (N + 1,): text n owns rows offsets[n]:offsets[n+1] of the
                        word-level arrays (hidden_states.{i}, spans, segments, words)
    token_offsets       (N + 1,): ... and tokens[token_offsets[n]:token_offsets[n+1]]
    spans               (W, 2) int64: each word's [start, end) characters in its text
    segments            (W,) int64: 0 a word of the text, 1 of its text_pair
    words (.npz only)   (W,) str; in .safetensors in the header metadata

With --attentions (maps of the L' selected encoder layers, h heads; text n
has k_n = kept_tokens[n] tokens):

    attention_layers    (L',) int64: the encoder layers (1..L) whose maps are stored
    attention_offsets   (N + 1,) int64: text n owns values
                        attention_offsets[n]:attention_offsets[n+1] of each
                        attentions.{i}, that is h * k_n**2 of them
    attentions.{i}      (sum_n h k_n^2,): layer i's maps, text after text, each
                        (h, k_n, k_n) in C order (head, query, key) over the
                        text's real tokens, flattened; read back with
                        ``.reshape(h, k_n, k_n)``

With --attention-stats instead (:mod:`minibert.features.attention_stats`):

    attention_layers    (L',) int64, as above
    attention_stats.{s} (N, L', h): statistic s of every text, layer and head,
                        for s in entropy, to_cls, to_sep, to_punct, to_prev,
                        to_next, to_self, distance

A shard of a directory output adds ``index`` (N,) int64, its texts' global
indices (:mod:`minibert.outputs.shards`). ``.jsonl`` holds the same per text, one
object per line (:mod:`minibert.outputs.writers`).

Features are stored in the spec's ``output_dtype`` (default: the compute
dtype); ``float16`` halves the disk of float32 and is checked for overflow
(a value beyond +-65504 is an error, never a silent inf). Attention maps
too (probabilities in [0, 1] cannot overflow: float16 keeps each to 2^-11
relative, 6e-8 absolute below 6.1e-5, and rounds those under 3e-8 to 0);
attention statistics are stored in float32 (float64 with --output-dtype
float64), never float16: they are small, and float16 would round a distance
of 300 tokens to a quarter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS
from minibert.outputs.safetensors_file import Joined

if TYPE_CHECKING:
    from minibert.outputs.spec import ExtractSpec

#: The file formats an output can have (a directory of shards holds .safetensors files).
FORMATS = (".npz", ".safetensors", ".jsonl")


@dataclass
class WordRows:
    """A text's words, when its features are word-level: the strings, their
    [start, end) character spans (n_words, 2) and segments (n_words,), 0 for
    the text, 1 for its text_pair."""

    words: list[str]
    spans: np.ndarray
    segments: np.ndarray


@dataclass
class Record:
    """One text's features. ``features`` maps a name (``hidden_states.{i}``
    or ``combined``) to (n_tokens, H), (n_words, H) when ``words`` is given,
    or, pooled, (H,). ``num_tokens`` is the text's token count before
    truncation (> len(tokens) when truncated). ``attentions``: encoder layer
    -> (h, n, n) map over the n = len(tokens) real tokens (with
    --attentions); ``attention_stats``: statistic -> (L', h) (with
    --attention-stats)."""

    index: int
    text: str
    text_pair: str | None
    tokens: list[str]
    input_ids: np.ndarray
    features: dict[str, np.ndarray]
    num_tokens: int
    words: WordRows | None = None
    attentions: dict[int, np.ndarray] | None = None
    attention_stats: dict[str, np.ndarray] | None = None


def cast_features(records: list[Record], dtype: np.dtype) -> list[Record]:
    """Records with their features and attention maps in ``dtype`` (computed
    in float32/64, stored maybe narrower). A value that overflows float16 is
    an error."""
    dtype = np.dtype(dtype)
    for r in records:
        for name, v in r.features.items():
            if v.dtype == dtype:
                continue
            with np.errstate(over="ignore"):  # overflow is checked on the next line
                c = v.astype(dtype)
            if dtype.itemsize < v.dtype.itemsize and not np.isfinite(c).all() and np.isfinite(v).all():
                bad = float(np.abs(v).max())
                raise MinibertError(
                    f"text {r.index}: {name} holds {bad:.6g}, beyond {dtype.name}'s range "
                    f"(+-{float(np.finfo(dtype).max):.6g}); use --output-dtype float32"
                )
            r.features[name] = c
        if r.attentions is not None:  # probabilities: no overflow to check
            r.attentions = {i: a.astype(dtype, copy=False) for i, a in r.attentions.items()}
    return records


def stats_dtype(spec: ExtractSpec) -> np.dtype:
    """The dtype attention statistics are stored in: float64 with a float64
    output, else float32 (never float16: see the module docstring)."""
    return np.dtype(np.float64 if spec.out_dtype == np.float64 else np.float32)


def offsets(lengths) -> np.ndarray:
    """Row counts -> (N + 1,) int64 offsets: item n owns rows offsets[n]:offsets[n+1]."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def records_to_arrays(
    records: list[Record], spec: ExtractSpec
) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
    """Records (any order) -> the arrays of the layout above, in index
    order, every token string, and every word string (None unless
    ``word_pool``)."""
    records = sorted(records, key=lambda r: r.index)
    kept = np.array([len(r.tokens) for r in records], dtype=np.int64)
    arrays = {
        "offsets": offsets(kept),
        "input_ids": np.concatenate([r.input_ids for r in records]).astype(np.int64)
        if records
        else np.zeros(0, np.int64),
        "layers": np.asarray(spec.layers, dtype=np.int64),
        "num_tokens": np.array([r.num_tokens for r in records], dtype=np.int64),
        "kept_tokens": kept,
    }
    words = None
    if spec.word_pool != "none":  # rows are words; tokens keep their own offsets
        arrays["token_offsets"] = arrays["offsets"]
        arrays["offsets"] = offsets([len(r.words.words) for r in records])
        spans = [r.words.spans.reshape(-1, 2) for r in records] or [np.zeros((0, 2))]
        arrays["spans"] = np.concatenate(spans).astype(np.int64)
        segments = [r.words.segments for r in records] or [np.zeros(0)]
        arrays["segments"] = np.concatenate(segments).astype(np.int64)
        words = [w for r in records for w in r.words.words]
    names = list(records[0].features) if records else spec.feature_names
    for name in names:
        parts = [r.features[name] for r in records]
        if parts:
            pooled = parts[0].ndim == 1
            arrays[name] = np.stack(parts) if pooled else np.concatenate(parts)
        else:
            arrays[name] = np.zeros((0, 0), dtype=spec.out_dtype)
    arrays |= attention_arrays(records, spec, kept)
    tokens = [t for r in records for t in r.tokens]
    return arrays, tokens, words


def attention_arrays(records: list[Record], spec: ExtractSpec, kept: np.ndarray) -> dict[str, np.ndarray]:
    """The attention arrays of the layout above for ``records`` (in index
    order, ``kept`` their token counts): none without ``spec.attentions``.
    The maps stay the records' own arrays (:class:`~minibert.outputs.safetensors_file.Joined`),
    so a chunk's maps are in memory once, not twice, while they are written."""
    if spec.attentions == "none":
        return {}
    layers, h = spec.attention_layers, spec.num_attention_heads
    arrays = {"attention_layers": np.asarray(layers, dtype=np.int64)}
    if spec.attentions == "maps":
        arrays["attention_offsets"] = offsets(h * kept**2)
        for i in layers:  # (h, n, n) per text -> (sum h n n,), left in parts (written without a copy)
            arrays[f"attentions.{i}"] = Joined([r.attentions[i] for r in records], spec.out_dtype)
        return arrays
    for name in STATS:
        parts = [r.attention_stats[name] for r in records]  # N x (L', h)
        arrays[f"attention_stats.{name}"] = (
            np.stack(parts) if parts else np.zeros((0, len(layers), h), stats_dtype(spec))
        )  # (N, L', h)
    return arrays
