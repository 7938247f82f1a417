"""texts -> Batch: token ids, type ids and mask, right-padded, with the tokens.

Wraps the ``tokenizers`` library: ``tokenizer.json`` when the model has one,
else a WordPiece tokenizer built from ``vocab.txt`` with the lower-casing and
accent-stripping that ``tokenizer_config.json`` asks for (as transformers'
``BertTokenizer`` does). Token ids equal transformers' for the same model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MinibertError


@dataclass(frozen=True)
class Batch:
    """Tokenized texts, right-padded to the longest in the batch.

    input_ids, token_type_ids, attention_mask: (B, S) int64.
    tokens[b]: the token strings of text b (no padding).
    word_ids[b]: for each token of text b, the index of the word it came
    from in its segment, None for special tokens.
    num_tokens[b]: tokens of text b before truncation (specials included).
    sequence_ids[b]: for each token of text b, 0 if it came from the text,
    1 if from its text_pair, None for special tokens. Word indices restart
    in each segment, and type ids cannot tell segments apart for every
    tokenizer (RoBERTa's are all 0): use these.
    offsets[b]: for each token of text b, its (start, end) character span
    in its own segment's string ((0, 0) for special tokens).
    texts[b], text_pairs[b]: the strings that were tokenized (text_pairs[b]
    None when text b has no second segment), so spans read back as words.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    num_tokens: list[int]
    sequence_ids: list[list[int | None]] = field(default_factory=list)
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text_pairs: list[str | None] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinibertError(f"{path}: cannot read as JSON ({e})") from None


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with truncation and padding done our way."""

    def __init__(self, backend, pad_id: int, source: str = "tokenizer", files: tuple[Path, ...] = ()):
        self.backend = backend
        self.pad_id = pad_id
        self.source = source
        #: the files this tokenizer was built from (they change the token ids)
        self.files = tuple(files)
        backend.no_padding()  # padding is done on the whole batch, in NumPy
        backend.no_truncation()  # truncation is set per call (max_length)

    @classmethod
    def from_dir(cls, path: str | Path, default_pad_id: int = 0) -> Tokenizer:
        """tokenizer.json if present, else vocab.txt (+ tokenizer_config.json)."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        cfg_path = path / "tokenizer_config.json"
        cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
        if (path / "tokenizer.json").is_file():
            source = path / "tokenizer.json"
            try:
                backend = HFTokenizer.from_file(str(source))
            except Exception as e:  # the library raises bare Exception
                raise MinibertError(f"{source}: cannot load tokenizer ({e})") from None
        elif (path / "vocab.txt").is_file():
            from tokenizers.implementations import BertWordPieceTokenizer

            source = path / "vocab.txt"
            lower = cfg.get("do_lower_case", True)
            try:
                backend = BertWordPieceTokenizer(
                    str(source),
                    lowercase=lower,
                    strip_accents=cfg.get("strip_accents"),
                    handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
                    unk_token=cfg.get("unk_token", "[UNK]"),
                    sep_token=cfg.get("sep_token", "[SEP]"),
                    cls_token=cfg.get("cls_token", "[CLS]"),
                    pad_token=cfg.get("pad_token", "[PAD]"),
                    mask_token=cfg.get("mask_token", "[MASK]"),
                )._tokenizer
            except Exception as e:
                raise MinibertError(f"{source}: cannot build a WordPiece tokenizer ({e})") from None
        else:
            raise MinibertError(f"{path}: no tokenizer (neither tokenizer.json nor vocab.txt)")
        pad_token = cfg.get("pad_token")
        if isinstance(pad_token, dict):  # AddedToken serialised
            pad_token = pad_token.get("content")
        pad_id = backend.token_to_id(pad_token) if isinstance(pad_token, str) else None
        files = (source, *((cfg_path,) if cfg_path.is_file() else ()))
        return cls(backend, default_pad_id if pad_id is None else pad_id, str(source), files)

    def __call__(
        self, texts: list[str], text_pairs: list[str | None] | None = None, max_length: int | None = None
    ) -> Batch:
        """Tokenize, truncate each sequence (specials included) to ``max_length``
        with transformers' ``longest_first`` rule for pairs, and right-pad.
        A ``None`` in ``text_pairs`` means that text has no second segment."""
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise MinibertError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        if text_pairs is None:
            text_pairs = [None] * len(texts)
        inputs = [t if p is None else (t, p) for t, p in zip(texts, text_pairs, strict=True)]
        if not inputs:
            empty = np.zeros((0, 0), dtype=np.int64)
            return Batch(empty, empty.copy(), empty.copy(), [], [], [])
        full = None
        if max_length is not None:
            full = [len(e.ids) for e in self.backend.encode_batch(inputs)]
            self.backend.enable_truncation(max_length, strategy="longest_first")
        try:
            encodings = self.backend.encode_batch(inputs)
        finally:
            self.backend.no_truncation()
        S = max(len(e.ids) for e in encodings)
        B = len(encodings)
        input_ids = np.full((B, S), self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros((B, S), dtype=np.int64)
        attention_mask = np.zeros((B, S), dtype=np.int64)
        for b, e in enumerate(encodings):
            n = len(e.ids)
            input_ids[b, :n] = e.ids
            token_type_ids[b, :n] = e.type_ids
            attention_mask[b, :n] = 1
        return Batch(
            input_ids,
            token_type_ids,
            attention_mask,
            tokens=[list(e.tokens) for e in encodings],
            word_ids=[list(e.word_ids) for e in encodings],
            num_tokens=full if full is not None else [len(e.ids) for e in encodings],
            sequence_ids=[list(e.sequence_ids) for e in encodings],
            offsets=[list(e.offsets) for e in encodings],
            texts=list(texts),
            text_pairs=list(text_pairs),
        )
