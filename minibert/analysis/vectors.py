"""Labelled sentences -> one vector per word, per layer, aligned to the file's words.

A sentence's words are joined with single spaces into one text, and each
word's character span [start, end) in it is kept. The model's tokenizer then
cuts the text its own way (WordPiece splits "n't" into n ' t and
"Zürich" into z ##uri ##ch); every piece is given to the word whose span
holds its last character (a byte-level BPE piece may start at the space
before its word). The pieces of each word are then pooled by
:func:`minibert.features.words.words` (``first``, ``last``, ``mean``) with
these word indices in place of the tokenizer's own, so the file's words, not
the tokenizer's pre-tokenization, decide what a word is.

Texts are run through :func:`minibert.encode_long`, in batches of similar
length (:func:`minibert.corpus.extract.length_sorted_batches`), so a
sentence longer than the model allows is windowed (never cut; counted in
``windowed``), and memory holds one batch's layers besides the result.
A word that gets no piece at all (a character the tokenizer drops) has no
vector: it is counted in ``dropped`` and left out.

Shape alphabet: L + 1 layers kept, N words, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from minibert.analysis.conllu import Sentence
from minibert.corpus.extract import length_sorted_batches
from minibert.corpus.inputs import Item
from minibert.encoder.layers import resolve_layers
from minibert.errors import MinibertError
from minibert.features.windows import encode_long
from minibert.features.words import words as pool_words
from minibert.model import Encoding, Model

#: Texts a batch holds at most (a batch also ends at BATCH_CHARS characters of padded text).
BATCH_SIZE = 64
BATCH_CHARS = 64 * 200


@dataclass(frozen=True)
class WordVectors:
    """vectors (L', N, H) in the model's dtype for the N words that got a
    piece, ``layers`` their hidden-state indices; ``keep`` (N_all,) bool: which
    of the sentences' words these are (in file order); ``windowed``: sentences
    longer than the model allows, run as windows; ``dropped``: words with no piece."""

    vectors: np.ndarray
    layers: tuple[int, ...]
    keep: np.ndarray
    windowed: int
    dropped: int


def spans_of(words: list[str]) -> tuple[str, np.ndarray]:
    """The words joined by spaces, and each word's [start, end) in it. (n, 2)."""
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    ends = starts + np.array([len(w) for w in words])
    return " ".join(words), np.stack([starts, ends], axis=-1).astype(np.int64)


def piece_words(offsets: list[tuple[int, int]], sequence_ids: list, spans: np.ndarray) -> list[int | None]:
    """Each token's word: the word whose span holds the token's last character;
    None for special tokens and pieces with an empty span."""
    ends = np.array([e for _, e in offsets], dtype=np.int64) - 1  # (T,) last character
    word = np.searchsorted(spans[:, 0], ends, side="right") - 1
    inside = (word >= 0) & (ends < spans[np.maximum(word, 0), 1])
    return [
        int(w) if s is not None and ok and e > b else None
        for w, ok, s, (b, e) in zip(word.tolist(), inside.tolist(), sequence_ids, offsets, strict=True)
    ]


def with_file_words(enc: Encoding, spans: list[np.ndarray]) -> Encoding:
    """``enc`` with each token's word index taken from the file's words."""
    ids = [piece_words(o, s, sp) for o, s, sp in zip(enc.offsets, enc.sequence_ids, spans, strict=True)]
    return replace(enc, batch=replace(enc.batch, word_ids=ids))


def word_vectors(
    model: Model, sentences: list[Sentence], how: str = "mean", layers: int | list[int] | str | None = None
) -> WordVectors:
    """One vector per word of ``sentences`` for each of ``layers`` (default all)."""
    if how not in ("first", "last", "mean"):
        raise MinibertError(f"word_pool must be first, last or mean, got {how!r}")
    keep_layers = tuple(resolve_layers(layers, model.num_layers + 1))
    starts = np.cumsum([0] + [len(s.words) for s in sentences])
    N, H = int(starts[-1]), model.config.hidden_size
    out = np.zeros((len(keep_layers), N, H), model.dtype)
    got = np.zeros(N, dtype=bool)
    texts = [spans_of(s.words) for s in sentences]
    items = [Item(i, t) for i, (t, _) in enumerate(texts)]
    windowed = 0
    for batch in length_sorted_batches(items, BATCH_SIZE, BATCH_CHARS):
        enc = encode_long(model, [it.text for it in batch], batch_size=BATCH_SIZE, layers=list(keep_layers))
        windowed += sum(n > model.max_length for n in enc.num_tokens)
        enc = with_file_words(enc, [texts[it.index][1] for it in batch])
        w = pool_words(enc, how, list(keep_layers))
        for b, it in enumerate(batch):
            ids = sorted({i for i in enc.word_ids[b] if i is not None})  # the words that got a piece
            rows = starts[it.index] + np.array(ids, dtype=np.int64)
            out[:, rows] = w.vectors[:, w.offsets[b] : w.offsets[b + 1]]
            got[rows] = True
    vectors = out if got.all() else out[:, got]
    return WordVectors(vectors, keep_layers, got, windowed, int(N - got.sum()))
