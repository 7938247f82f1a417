"""Corpus -> per-text features: batching, layer selection, combining, pooling.

Each text's features, as :class:`~minibert.outputs.records.Record` s, one chunk of
the corpus at a time (:mod:`minibert.corpus.driver` drives the chunks into an
output). The corpus is read in chunks of ``spec.shard_size`` texts; inside a
chunk, texts are batched by length (similar lengths together, so little
padding is computed) and each text's record carries its input index, so
writers restore the input order. Only one chunk is in memory at a time, and
since chunks and batches depend only on the input, every run -- resumed,
sharded, or spread over Dask workers -- multiplies the same matrices and gets
the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from minibert.corpus.inputs import Item
from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS, head_statistics, token_kinds
from minibert.features.pooling import combine, l2_normalize, pool
from minibert.features.windows import encode_long
from minibert.features.words import words
from minibert.loading.tokenizer import TextError
from minibert.model import Model, NonFiniteError
from minibert.outputs.records import Record, WordRows, stats_dtype
from minibert.outputs.spec import ExtractSpec


def length_sorted_batches(
    items: list[Item], batch_size: int, max_chars: int | None = None
) -> Iterator[list[Item]]:
    """Batches of ``batch_size`` items, items sorted by character length
    (a cheap proxy for token length), longest first.

    ``max_chars``: a batch also ends before its size (texts x its longest
    text's characters) would pass this, so a very long text is not padded
    together with many others (a batch's hidden states are padded to its
    longest text). A text longer than ``max_chars`` is a batch of its own.
    """
    order = sorted(items, key=lambda it: len(it.text) + len(it.text_pair or ""), reverse=True)
    batch: list[Item] = []
    for it in order:
        if batch:
            longest = len(batch[0].text) + len(batch[0].text_pair or "")
            if len(batch) == batch_size or (max_chars is not None and (len(batch) + 1) * longest > max_chars):
                yield batch
                batch = []
        batch.append(it)
    if batch:
        yield batch


#: Characters per token assumed when sizing batches of windowed texts (English
#: averages about 4 to 5 with WordPiece; a guess only bounds memory, never results).
CHARS_PER_TOKEN = 4


def batch_records(model: Model, items: list[Item], spec: ExtractSpec) -> list[Record]:
    """Run one batch and cut each text's features out of it.

    Token-level features keep only the text's real tokens (no padding);
    ``word_pool`` (first|last|mean|first_last) turns them into one vector
    per word (:func:`minibert.words`); ``combine`` reduces the selected
    layers per token or word, then ``pool`` reduces tokens per text,
    ignoring padding (and ``normalize`` scales each pooled vector to unit
    length). ``long="window"`` runs texts past ``max_length`` (default: the
    model's limit) as overlapping windows ``stride`` tokens apart and
    stitches them (:func:`minibert.encode_long`) instead of truncating them.
    ``attentions`` maps|stats asks the model for its attention probabilities
    and keeps, per text, each selected layer's (h, n, n) map over its n real
    tokens (in the output dtype), or its per-head statistics
    (:func:`attention_records`); nothing is asked of the model otherwise.
    """
    layers, max_length = spec.layers, spec.max_length
    pairs = [it.text_pair for it in items]
    texts = [it.text for it in items]
    if spec.long == "window":
        paired = [it.index for it in items if it.text_pair is not None]
        if paired:
            raise MinibertError(f"text {paired[0]}: windows take single texts, not text pairs")
    try:
        if spec.long == "window":
            enc = encode_long(model, texts, stride=spec.stride, window=max_length, layers=layers)
        else:
            enc = model.encode(
                texts, None if all(p is None for p in pairs) else pairs, max_length,
                output_attentions=spec.attentions != "none",
                attention_layers=spec.attention_layers or None,  # only the maps that are kept
            )  # fmt: skip
    except NonFiniteError as e:  # the batch's row -> the text's input index
        raise NonFiniteError(items[e.text].index, e.layer) from None
    except TextError as e:
        which = " (its text_pair)" if e.name == "text_pairs" else ""
        raise MinibertError(f"text {items[e.index].index}{which} {e.reason}") from None
    if spec.word_pool != "none":
        w = words(enc, spec.word_pool, layers)
        selected = list(w.vectors)  # L x (W, H')
        rows = [slice(w.offsets[b], w.offsets[b + 1]) for b in range(len(items))]
    else:
        selected = [enc.hidden_states[i] for i in layers]  # L x (B, S, H)
        rows = [(b, slice(0, int(n))) for b, n in enumerate(enc.attention_mask.sum(axis=1))]
    if spec.combine != "none":
        named = {"combined": combine(selected, spec.combine)}
    else:
        named = {f"hidden_states.{i}": h for i, h in zip(layers, selected, strict=True)}
    if spec.pool != "none":
        named = {k: pool(v, enc.attention_mask, spec.pool) for k, v in named.items()}  # (B, S, H') -> (B, H')
        if spec.normalize:
            named = {k: l2_normalize(v) for k, v in named.items()}
        rows = list(range(len(items)))
    lengths = enc.attention_mask.sum(axis=1)
    records = []
    for b, it in enumerate(items):
        n = int(lengths[b])
        feats = {k: _own(v[rows[b]], v) for k, v in named.items()}
        ids = enc.input_ids[b, :n].copy()
        word_rows = None
        if spec.word_pool != "none":
            word_rows = WordRows(w.words[b], w.spans[rows[b]], w.segments[rows[b]])
        record = Record(
            it.index, it.text, it.text_pair, enc.tokens[b], ids, feats, enc.num_tokens[b], word_rows
        )
        records.append(attention_records(record, enc, b, spec))
    return records


def attention_records(record: Record, enc, b: int, spec: ExtractSpec) -> Record:
    """Text b's attention, as ``spec.attentions`` asks, added to its record.

    maps: per layer i of ``spec.attention_layers``, ``enc.attentions[i - 1]``
    cut to the text's n real tokens, (B, h, S, S) -> (h, n, n), in the output
    dtype. stats: per statistic of :data:`minibert.features.attention_stats.STATS`,
    (L', h) over those layers (:func:`~minibert.features.attention_stats.head_statistics`,
    its keys from the tokenizer's special tokens and offsets:
    :func:`~minibert.features.attention_stats.token_kinds`)."""
    if spec.attentions == "none":
        return record
    n = len(record.tokens)
    maps = [enc.attentions[i - 1][b, :, :n, :n] for i in spec.attention_layers]  # L' x (h, n, n)
    if spec.attentions == "maps":
        record.attentions = {
            i: np.array(p, dtype=spec.out_dtype) for i, p in zip(spec.attention_layers, maps, strict=True)
        }
        return record
    pair = enc.text_pairs[b] if enc.text_pairs else None
    kinds = token_kinds(enc.sequence_ids[b], enc.offsets[b], enc.texts[b], pair)
    per_layer = [head_statistics(p, *kinds) for p in maps]  # L' x {name: (h,)}
    record.attention_stats = {
        name: np.array([s[name] for s in per_layer], dtype=stats_dtype(spec)) for name in STATS
    }  # name -> (L', h)
    return record


def _own(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """A text's features as their own array: a copy, so the batch's padded
    arrays can be freed, unless the text is the whole batch (a windowed text
    of a million tokens alone in its batch: a copy would double its memory)."""
    if part.size == whole.size and part.flags.c_contiguous:
        return part
    return np.array(part, order="C")


def extract_chunk(
    model: Model, items: list[Item], spec: ExtractSpec, on_batch: Callable[[int], None] | None = None
) -> list[Record]:
    """The records of one chunk, in input order (batched by length inside
    it). ``on_batch(n)`` is called after each batch of n texts (a progress
    bar)."""
    records = []
    max_chars = None
    if spec.long == "window":  # one batch's kept layers: about batch_size full windows at most
        max_chars = spec.batch_size * CHARS_PER_TOKEN * (spec.max_length or model.max_length)
    for batch in length_sorted_batches(items, spec.batch_size, max_chars):
        records.extend(batch_records(model, batch, spec))
        if on_batch is not None:
            on_batch(len(batch))
    return sorted(records, key=lambda r: r.index)
