"""Corpus -> per-text features: batching, layer selection, combining, pooling.

The library half of ``minibert extract`` (the command only parses arguments
and opens files). Texts are batched by length (similar lengths together, so
little padding is computed) and each text's record carries its input index,
so writers restore the input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .inputs import Item
from .model import Model
from .output import Record
from .pooling import combine, pool


def length_sorted_batches(items: list[Item], batch_size: int) -> Iterator[list[Item]]:
    """Batches of ``batch_size`` items, items sorted by character length
    (a cheap proxy for token length), longest first."""
    order = sorted(items, key=lambda it: len(it.text) + len(it.text_pair or ""), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def batch_records(
    model: Model,
    items: list[Item],
    layers: list[int],
    pool_how: str = "none",
    combine_how: str = "none",
    max_length: int | None = None,
) -> list[Record]:
    """Run one batch and cut each text's features out of it.

    Token-level features keep only the text's real tokens (no padding);
    ``combine`` reduces the selected layers per token, then ``pool`` reduces
    tokens per text, ignoring padding.
    """
    pairs = [it.text_pair for it in items]
    enc = model.encode(
        [it.text for it in items], None if all(p is None for p in pairs) else pairs, max_length
    )
    selected = [enc.hidden_states[i] for i in layers]  # L x (B, S, H)
    if combine_how != "none":
        named = {"combined": combine(selected, combine_how)}
    else:
        named = {f"hidden_states.{i}": h for i, h in zip(layers, selected, strict=True)}
    if pool_how != "none":
        named = {k: pool(v, enc.attention_mask, pool_how) for k, v in named.items()}  # (B, S, H') -> (B, H')
    lengths = enc.attention_mask.sum(axis=1)
    records = []
    for b, it in enumerate(items):
        n = int(lengths[b])
        feats = {k: np.ascontiguousarray(v[b] if pool_how != "none" else v[b, :n]) for k, v in named.items()}
        ids = enc.input_ids[b, :n].copy()
        records.append(Record(it.index, it.text, it.text_pair, enc.tokens[b], ids, feats, enc.num_tokens[b]))
    return records


def extract(
    model: Model,
    items: Iterable[Item],
    layers: list[int],
    pool_how: str = "none",
    combine_how: str = "none",
    max_length: int | None = None,
    batch_size: int = 32,
) -> Iterator[list[Record]]:
    """Yield the records of every item, one length-sorted batch at a time."""
    for batch in length_sorted_batches(list(items), batch_size):
        yield batch_records(model, batch, layers, pool_how, combine_how, max_length)
