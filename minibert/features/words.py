"""Encoding -> one vector per word, per layer: pool each word's subword tokens.

A tokenizer cuts a word into one or more pieces ("unaffable" -> una ##ffa
##ble); the model gives each piece its own vector. ``words`` turns those into
one vector per word, for every selected layer at once, by one of four rules:

    first       v(word) = v(first piece)           (BERT paper, NER: section 5.3)
    last        v(word) = v(last piece)
    mean        v(word) = mean of v(piece) over its pieces
    first_last  v(word) = [v(first piece); v(last piece)]   (2H wide; flair's subtoken_pooling="first_last")

Which pieces form a word is the tokenizer's own answer (the ``tokenizers``
encoding's ``word_ids``, following each tokenizer's pre-tokenization), kept
apart per segment with ``sequence_ids``: word indices restart in a text's
second segment. Special tokens ([CLS], [SEP], <s>, </s>) belong to no word
and are left out. A word's string is read back from the text at the
character spans of its first and last pieces, trimmed of whitespace
(byte-level BPE tokenizers such as RoBERTa's attach the space before a word to
the word).

Shape alphabet: L selected layers, W words in the batch, T non-special
tokens in the batch, H hidden size, B texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from minibert.encoder.layers import is_int, resolve_layers
from minibert.errors import MinibertError
from minibert.model import Encoding, check_result_size, result_too_large

HOWS = ("first", "last", "mean", "first_last")


@dataclass(frozen=True)
class Words:
    """Word vectors of B texts, W words in all; text b's words are the rows
    ``offsets[b]:offsets[b + 1]`` of every per-word array.

    words: per text, the word strings.
    spans: (W, 2) int64, each word's [start, end) characters in its
      segment's string (``texts[b]`` or ``text_pairs[b]``).
    segments: (W,) int64, 0 for a word of the text, 1 for its text_pair.
    token_spans: (W, 2) int64, each word's [first, last + 1) token
      positions in its text's row of the Encoding.
    offsets: (B + 1,) int64.
    layers: the hidden-state index of each entry of ``vectors``' first axis.
    vectors: (L, W, H), or (L, W, 2H) for ``how="first_last"``.
    how: the pooling rule.
    """

    words: list[list[str]]
    spans: np.ndarray
    segments: np.ndarray
    token_spans: np.ndarray
    offsets: np.ndarray
    layers: tuple[int, ...]
    vectors: np.ndarray
    how: str

    def __len__(self) -> int:
        """The number of texts B (not of words: that is ``vectors.shape[1]``)."""
        return len(self.words)

    def __getitem__(self, b: int) -> TextWords:
        """Text b's words and their vectors (L, n_b, H): rows
        ``offsets[b]:offsets[b + 1]`` of ``vectors``. A negative b counts
        from the last text, as for a list."""
        B = len(self.words)
        if not is_int(b):
            raise MinibertError(f"a text index must be an integer, got {type(b).__name__}")
        if not -B <= b < B:
            raise MinibertError(f"text {b} out of range (these words are of {B} texts)")
        b = int(b) % B
        lo, hi = self.offsets[b], self.offsets[b + 1]
        return TextWords(self.words[b], self.vectors[:, lo:hi])  # (L, W, H) -> (L, n_b, H)

    def __iter__(self) -> Iterator[TextWords]:
        """Each text's words and vectors in turn (``w[0]``, ``w[1]``, ...)."""
        return (self[b] for b in range(len(self.words)))

    def __repr__(self) -> str:
        B, (L, W, width) = len(self.words), self.vectors.shape
        return (
            f"Words({B} text{'s' if B != 1 else ''}, {W} words in all, how={self.how!r}, "
            f"layers={self.layers}, vectors {(L, W, width)} {self.vectors.dtype}: "
            "(layers, all words of the batch, H); text b: w[b])"
        )


class TextWords(NamedTuple):
    """One text's words: ``words`` its n_b strings, ``vectors`` (L, n_b, H)
    (2H for ``first_last``), a view of the batch's :attr:`Words.vectors`."""

    words: list[str]
    vectors: np.ndarray


def _flat(per_text: list[list], none: int = -1) -> np.ndarray:
    """Per-text lists of ints or None -> one int64 array, None -> ``none``."""
    n = sum(len(x) for x in per_text)
    return np.fromiter((none if v is None else v for v in chain.from_iterable(per_text)), np.int64, n)


def words(enc: Encoding, how: str = "first", layers: int | list[int] | str | None = None) -> Words:
    """One vector per word of every text, for each of ``layers`` (default:
    all hidden states, 0 = embeddings; any form :func:`minibert.encoder.layers.resolve_layers`
    takes), pooled from its pieces by ``how``.

    Works on any Encoding that kept its texts: ``Model.encode`` (truncated
    words keep the pieces that survived) and :func:`minibert.encode_long`.

    Returns :class:`Words`: ``vectors`` is (L, W, H) -- the L layers, then
    the W words of *all* the batch's texts one after another (text b's are
    rows ``offsets[b]:offsets[b + 1]``), then H (2H for ``first_last``).
    ``w[b]`` is text b's ``(words, vectors (L, n_b, H))``; ``for text in w``
    goes through them in turn.
    """
    if not isinstance(enc, Encoding):
        raise MinibertError(f"enc must be a minibert.Encoding (from Model.encode), got {type(enc).__name__}")
    if not isinstance(how, str) or how not in HOWS:
        raise MinibertError(f"how must be one of {', '.join(HOWS)}, got {how!r}")
    layers = tuple(resolve_layers(layers, len(enc.hidden_states)))
    missing = [i for i in layers if enc.hidden_states[i] is None]
    if missing:
        raise MinibertError(f"layer {missing[0]} was not kept in this Encoding (encode_long's layers=)")
    B = len(enc.tokens)
    if len(enc.texts) != B or len(enc.sequence_ids) != B or len(enc.offsets) != B:
        raise MinibertError("this Encoding does not carry its texts, sequence_ids and offsets")
    lengths = np.array([len(w) for w in enc.word_ids], dtype=np.int64)
    row = np.repeat(np.arange(B), lengths)  # (T_all,) text of each token
    col = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # position in row
    word_id, seg = _flat(enc.word_ids), _flat(enc.sequence_ids)
    char = np.array(list(chain.from_iterable(enc.offsets)), dtype=np.int64).reshape(-1, 2)  # (T_all, 2)

    keep = word_id >= 0  # special tokens have no word
    row, col, word_id, seg, char = row[keep], col[keep], word_id[keep], seg[keep], char[keep]
    T = len(row)
    new = np.ones(T, dtype=bool)  # a token starts a word when text, segment or word changes
    new[1:] = (row[1:] != row[:-1]) | (seg[1:] != seg[:-1]) | (word_id[1:] != word_id[:-1])
    first = np.flatnonzero(new)  # (W,) token index of each word's first piece
    last = np.append(first[1:], T)[: len(first)] - 1  # (W,) ... and of its last piece
    W = len(first)
    kept = next((h for h in enc.hidden_states if h is not None), np.zeros((0, 0, 0), np.float32))
    H = kept.shape[-1]

    width = 2 * H if how == "first_last" else H
    dtype = kept.dtype
    # the per-layer vectors, then their stack: twice the result, checked before any is made
    size = 2 * len(layers) * W * width * dtype.itemsize
    what = f"the word vectors ({len(layers)} layers x {W} words x {width}, {dtype}, and their stack)"
    check_result_size(size, what)
    vectors = []
    try:
        for i in layers:
            h = enc.hidden_states[i]  # (B, S, H)
            if how == "first":
                v = h[row[first], col[first]]  # (W, H)
            elif how == "last":
                v = h[row[last], col[last]]
            elif how == "first_last":
                v = np.concatenate([h[row[first], col[first]], h[row[last], col[last]]], axis=-1)  # (W, 2H)
            elif W == 0:
                v = np.zeros((0, H), h.dtype)
            else:  # mean: sum each run of pieces, divide by its length
                pieces = (last - first + 1).astype(h.dtype)
                v = np.add.reduceat(h[row, col], first, axis=0) / pieces[:, None]  # (T, H) -> (W, H)
            vectors.append(v)
        stacked = np.stack(vectors) if vectors else np.zeros((0, W, width), dtype)  # (L, W, H')
    except MemoryError:
        raise result_too_large(size, what) from None

    counts = np.bincount(row[first], minlength=B)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    spans = np.stack([char[first, 0], char[last, 1]], axis=-1) if W else np.zeros((0, 2), np.int64)
    strings, spans = _read_words(enc, row[first], seg[first], spans)
    per_text = [strings[offsets[b] : offsets[b + 1]] for b in range(B)]
    token_spans = np.stack([col[first], col[last] + 1], axis=-1) if W else np.zeros((0, 2), np.int64)
    return Words(per_text, spans, seg[first], token_spans, offsets, layers, stacked, how)


def _read_words(enc: Encoding, rows: np.ndarray, segs: np.ndarray, spans: np.ndarray):
    """Each word's string from its segment's text, and its span trimmed of
    the whitespace a byte-level tokenizer attaches to it."""
    strings, trimmed = [], spans.copy()
    for w, (b, s, (start, end)) in enumerate(zip(rows.tolist(), segs.tolist(), spans.tolist(), strict=True)):
        source = enc.texts[b] if s == 0 else enc.text_pairs[b]
        raw = source[start:end]
        word = raw.strip()
        lead = len(raw) - len(raw.lstrip())
        trimmed[w] = (start + lead, start + lead + len(word))
        strings.append(word)
    return strings, trimmed
