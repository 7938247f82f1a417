"""texts -> Batch: token ids, type ids and mask, right-padded, with the tokens.

Wraps the ``tokenizers`` library: ``tokenizer.json`` when the model has one,
else a WordPiece tokenizer built from ``vocab.txt`` with the lower-casing and
accent-stripping that ``tokenizer_config.json`` asks for (as transformers'
``BertTokenizer`` does). Token ids equal transformers' for the same model.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import MAX_CONFIG, read_json, read_text


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

    def rows(self, rows: list[int]) -> Batch:
        """Texts ``rows`` (in that order), every field kept, padded to the
        longest of them: a smaller batch of the same texts."""
        S = int(self.attention_mask[rows].sum(axis=1).max(initial=0))
        per_text = [[values[b] for b in rows] if values else [] for values in self._per_text()]
        return Batch(self.input_ids[rows, :S], self.token_type_ids[rows, :S], self.attention_mask[rows, :S],
                     *per_text)  # fmt: skip

    def padded(self, n: int, pad_id: int) -> Batch:
        """The same texts with ``n`` more padding positions (id ``pad_id``,
        type 0, attention mask 0) at the end of every row."""

        def widen(a: np.ndarray, value: int) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, n)), constant_values=value)

        return replace(
            self, input_ids=widen(self.input_ids, pad_id), token_type_ids=widen(self.token_type_ids, 0),
            attention_mask=widen(self.attention_mask, 0),
        )  # fmt: skip

    def gather(self, rows: list[int], positions: list[np.ndarray], pad_id: int) -> Batch:
        """A batch whose text i is the tokens ``positions[i]`` of text
        ``rows[i]`` (positions into its row), right-padded with ``pad_id``:
        the windows of :func:`minibert.encode_long`. Per-token fields follow
        the tokens; ``num_tokens[i]`` is the new length."""
        B, S = len(rows), max((len(p) for p in positions), default=0)
        ids = np.full((B, S), pad_id, dtype=np.int64)
        types = np.zeros((B, S), dtype=np.int64)
        mask = np.zeros((B, S), dtype=np.int64)
        for i, (b, p) in enumerate(zip(rows, positions, strict=True)):
            ids[i, : len(p)] = self.input_ids[b, p]
            types[i, : len(p)] = self.token_type_ids[b, p]
            mask[i, : len(p)] = 1

        def take(per_text: list) -> list:
            return [[per_text[b][j] for j in p.tolist()] for b, p in zip(rows, positions, strict=True)]

        return Batch(
            ids, types, mask, take(self.tokens), take(self.word_ids), [len(p) for p in positions],
            take(self.sequence_ids) if self.sequence_ids else [], take(self.offsets) if self.offsets else [],
            [self.texts[b] for b in rows] if self.texts else [],
            [self.text_pairs[b] for b in rows] if self.text_pairs else [],
        )  # fmt: skip

    def _per_text(self) -> tuple[list, ...]:
        """The per-text fields, in field order (after the three arrays)."""
        return (self.tokens, self.word_ids, self.num_tokens, self.sequence_ids, self.offsets, self.texts,
                self.text_pairs)  # fmt: skip


def _library_error(e: Exception) -> str:
    """The tokenizers library's message on one line (it raises a bare Exception)."""
    return " ".join(str(e).split())[:300]


def _token(cfg: dict, key: str, default: str | None, source: Path) -> str | None:
    """A special token of tokenizer_config.json: a string, or an AddedToken
    object ``{"content": ...}`` as transformers saves it."""
    value = cfg.get(key, default)
    if isinstance(value, dict):
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise MinibertError(f'{source}: {key} must be a string or {{"content": string}}, got {value!r:.40}')
    return value


def _flag(cfg: dict, key: str, default, source: Path, allow_none: bool = False):
    value = cfg.get(key, default)
    if not (isinstance(value, bool) or (allow_none and value is None)):
        raise MinibertError(f"{source}: {key} must be true or false, got {value!r:.40}")
    return value


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with truncation and padding done our way."""

    def __init__(self, backend, pad_id: int, source: str = "tokenizer", files: tuple[Path, ...] = ()):
        self.backend = backend
        self.pad_id = pad_id
        self.source = source
        #: the files this tokenizer was built from (they change the token ids)
        self.files = tuple(files)
        backend.no_padding()  # padding is done on the whole batch, in NumPy
        backend.no_truncation()  # truncation: a copy per max_length, see _truncating
        self._truncators: dict[int, object] = {}

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        default_pad_id: int = 0,
        vocab_size: int | None = None,
        lowercase: bool = False,
    ) -> Tokenizer:
        """tokenizer.json if present, else vocab.txt (+ tokenizer_config.json).

        ``vocab_size`` (config.json's): every id the tokenizer can produce
        must be a row of the embedding table, checked here rather than found
        as an IndexError mid-corpus. ``lowercase``: sentence-transformers'
        ``do_lower_case`` (sentence_bert_config.json), applied as a
        Lowercase normaliser before the model's own, so token offsets still
        point into the text as given. (sentence-transformers calls Python's
        ``str.lower()`` on the text first; the two agree except for
        context-dependent mappings such as a word-final capital sigma.)
        """
        from tokenizers import models, normalizers

        path = Path(path)
        cfg_path = path / "tokenizer_config.json"
        has_cfg = os.path.lexists(cfg_path)
        cfg = read_json(cfg_path, dict, "tokenizer_config.json", MAX_CONFIG) if has_cfg else {}
        backend, source = _read_backend(path, cfg, cfg_path)
        model = backend.model
        if isinstance(model, models.WordPiece) and backend.token_to_id(model.unk_token) is None:
            raise MinibertError(
                f"{source}: the vocabulary has no unknown token {model.unk_token!r:.40}, "
                "which WordPiece needs for every word it cannot split"
            )
        if vocab_size is not None:
            vocab = backend.get_vocab(with_added_tokens=True)
            token, top = max(vocab.items(), key=lambda item: item[1], default=("", -1))
            if top >= vocab_size:
                raise MinibertError(
                    f"{source}: token {token!r:.40} has id {top}, beyond config.json's vocab_size "
                    f"{vocab_size} (is this tokenizer from another model?)"
                )
        if lowercase:
            steps = [normalizers.Lowercase(), *([backend.normalizer] if backend.normalizer else [])]
            backend.normalizer = normalizers.Sequence(steps)
        pad_token = _token(cfg, "pad_token", None, cfg_path)
        pad_id = backend.token_to_id(pad_token) if pad_token is not None else None
        files = (source, *((cfg_path,) if has_cfg else ()))
        return cls(backend, default_pad_id if pad_id is None else pad_id, str(source), files)

    def __call__(
        self, texts: list[str], text_pairs: list[str | None] | None = None, max_length: int | None = None
    ) -> Batch:
        """Tokenize, truncate each sequence (specials included) to ``max_length``
        with transformers' ``longest_first`` rule for pairs, and right-pad.
        A ``None`` in ``text_pairs`` means that text has no second segment.

        Safe to call from several threads at once: the shared ``backend`` is
        never changed after construction (truncation runs on a copy per
        ``max_length``, see :meth:`_truncating`), so no call can see another's
        setting. Texts are checked first (:func:`as_texts`), so a wrong type
        or a lone surrogate is an error naming the text, not one from deep
        inside ``tokenizers``.
        """
        texts = as_texts(texts, "texts")
        pairs = as_pairs(text_pairs, len(texts))
        inputs = [t if p is None else (t, p) for t, p in zip(texts, pairs, strict=True)]
        if not inputs:
            empty = np.zeros((0, 0), dtype=np.int64)
            return Batch(empty, empty.copy(), empty.copy(), [], [], [])
        encodings = self.backend.encode_batch(inputs)
        full = [len(e.ids) for e in encodings]
        if max_length is not None:
            self._check_room(max_length, any(p is not None for p in pairs), any(p is None for p in pairs))
            cut = [b for b, n in enumerate(full) if n > max_length]  # only these need truncating
            if cut:
                shorter = self._truncating(max_length).encode_batch([inputs[b] for b in cut])
                for b, e in zip(cut, shorter, strict=True):
                    if len(e.ids) > max_length:  # tokenizers leaves it long if it cannot cut
                        raise MinibertError(f"text {b}: cannot truncate to max_length {max_length}")
                    encodings[b] = e
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
            num_tokens=full,
            sequence_ids=[list(e.sequence_ids) for e in encodings],
            offsets=[list(e.offsets) for e in encodings],
            texts=texts,
            text_pairs=pairs,
        )

    def _check_room(self, max_length: int, pairs: bool, singles: bool) -> None:
        """max_length must leave room for the special tokens, or tokenizers
        silently returns the sequence uncut."""
        for is_pair, present in ((True, pairs), (False, singles)):
            need = self.backend.num_special_tokens_to_add(is_pair)
            if present and max_length < need:
                what = "a text pair" if is_pair else "a text"
                raise MinibertError(
                    f"max_length {max_length} leaves no room: {what} takes {need} special tokens"
                )

    #: How many truncating copies (one per max_length) a tokenizer keeps.
    TRUNCATORS = 8

    def _truncating(self, max_length: int):
        """A copy of ``backend`` that truncates to ``max_length`` (longest_first),
        made once per length (about 35 ms for a 30k vocabulary) and never
        changed afterwards, so concurrent calls can share it."""
        with _locks.truncators:
            backend = self._truncators.get(max_length)
            if backend is None:
                backend = type(self.backend).from_str(self.backend.to_str())
                backend.enable_truncation(max_length, strategy="longest_first")
                if len(self._truncators) >= self.TRUNCATORS:
                    self._truncators.pop(next(iter(self._truncators)))
                self._truncators[max_length] = backend
            return backend


class _Locks:
    """The lock that guards every tokenizer's truncating copies (made rarely, so
    one lock serves all), renewed in a forked child, which could otherwise
    inherit it held by a thread that does not exist there."""

    def __init__(self):
        self.truncators = threading.Lock()


_locks = _Locks()
os.register_at_fork(after_in_child=_locks.__init__)


_SURROGATE = re.compile("[\ud800-\udfff]")


class TextError(MinibertError):
    """A text of a call that is not text: ``name`` (``texts``, ``text_pairs``),
    ``index`` (its place in the call) and ``reason``, so that a caller with
    its own numbering (``extract``: the input line) can say it again."""

    def __init__(self, name: str, index: int, reason: str):
        self.name, self.index, self.reason = name, index, reason
        super().__init__(f"{name}[{index}] {reason}")


def _check_text(text, name: str, index: int) -> str:
    """``text`` as a str, or a TextError naming it (``texts[3]``)."""
    if not isinstance(text, str):
        if isinstance(text, (bytes, bytearray)):
            raise TextError(name, index, "is bytes: decode it to str first (e.g. .decode('utf-8'))")
        raise TextError(name, index, f"must be a string, got {type(text).__name__}")
    if not text.isascii():
        bad = _SURROGATE.search(text)
        if bad is not None:
            raise TextError(
                name, index, f"holds a lone surrogate ({bad.group()!r} at character {bad.start()}), which is "
                "not text: UTF-8 cannot encode it",
            )  # fmt: skip
    return str(text)  # a str subclass (numpy.str_) becomes a plain str


def _as_list(value, name: str) -> list:
    """One string -> [it]; a list, tuple, 1-D array or other iterable -> a list."""
    if isinstance(value, str):
        return [value]
    if (
        value is None
        or isinstance(value, (bytes, bytearray, dict, set, frozenset))
        or not hasattr(value, "__iter__")
    ):
        hint = ": decode it to str first" if isinstance(value, (bytes, bytearray)) else ""
        raise MinibertError(f"{name} must be a string or a list of strings, got {type(value).__name__}{hint}")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise MinibertError(f"{name} must be a 1-D list of strings, got an array of shape {value.shape}")
    return list(value)


def as_texts(texts, name: str = "texts") -> list[str]:
    """The texts of a call as a list of str: one string, or a list, tuple,
    1-D NumPy array or other iterable of strings. Anything else - None,
    bytes, numbers, a set (no order), a string with a lone surrogate - is a
    MinibertError naming the argument and the text's index."""
    return [_check_text(t, name, i) for i, t in enumerate(_as_list(texts, name))]


def as_pairs(text_pairs, n: int, name: str = "text_pairs") -> list[str | None]:
    """``text_pairs`` for n texts: None (no pairs), one string (for one text),
    or n entries, each a string or None (that text has no second segment)."""
    if text_pairs is None:
        return [None] * n
    pairs = _as_list(text_pairs, name)
    if len(pairs) != n:
        raise MinibertError(f"{n} texts but {len(pairs)} {name}")
    return [None if p is None else _check_text(p, name, i) for i, p in enumerate(pairs)]


def _read_backend(path: Path, cfg: dict, cfg_path: Path):
    """The tokenizers library's tokenizer of a model directory and the file it came from:
    tokenizer.json, else vocab.txt with tokenizer_config.json's options; a directory with
    only SentencePiece's spm.model, or none, is one error saying what to do."""
    from tokenizers import Tokenizer as HFTokenizer

    if os.path.lexists(path / "tokenizer.json"):
        source = path / "tokenizer.json"
        text = read_text(source, "tokenizer.json")
        try:
            backend = HFTokenizer.from_str(text)
        except Exception as e:  # the library raises bare Exception
            raise MinibertError(f"{source}: cannot load tokenizer ({_library_error(e)})") from None
    elif os.path.lexists(path / "vocab.txt"):
        from tokenizers.implementations import BertWordPieceTokenizer

        source = path / "vocab.txt"
        read_text(source, "vocab.txt")  # a clear error (permission, not UTF-8) before the library reads it
        options = dict(
            lowercase=_flag(cfg, "do_lower_case", True, cfg_path),
            strip_accents=_flag(cfg, "strip_accents", None, cfg_path, allow_none=True),
            handle_chinese_chars=_flag(cfg, "tokenize_chinese_chars", True, cfg_path),
            **{
                f"{name}_token": _token(cfg, f"{name}_token", f"[{name.upper()}]", cfg_path)
                for name in ("unk", "sep", "cls", "pad", "mask")
            },
        )
        try:
            backend = BertWordPieceTokenizer(str(source), **options)._tokenizer
        except Exception as e:  # the library raises bare Exception
            raise MinibertError(
                f"{source}: cannot build a WordPiece tokenizer ({_library_error(e)})"
            ) from None
    elif os.path.lexists(path / "spm.model"):  # DeBERTa-v3, some XLM-R/ALBERT uploads
        raise MinibertError(
            f"{path}: only a SentencePiece spm.model, no tokenizer.json: write one with "
            f'`pip install transformers sentencepiece` then `python -c "from transformers import '
            f"AutoTokenizer; AutoTokenizer.from_pretrained('{path}').save_pretrained('{path}')\"`"
        )
    else:
        raise MinibertError(f"{path}: no tokenizer (neither tokenizer.json nor vocab.txt)")
    return backend, source
