"""Features -> files, and back: ``.npz``, ``.safetensors``, ``.jsonl``.

Every writer takes :class:`Record` s (one per text, in any order) and, on
``close()``, writes the file atomically: into a temporary file beside the
target, then ``os.replace``. A failed or interrupted run leaves any earlier
file at that path untouched.

Layout of ``.npz`` / ``.safetensors`` (N texts, T tokens in all):

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

``.jsonl``: one object per text, in input order:
``{"index", "text", "text_pair"?, "tokens", "words"?, "spans"?, "segments"?,
"num_tokens", "kept_tokens", "layers": [{"index", "values"}]}``
(``"index": "combined"`` with --combine; words, spans and segments with
--word-pool), in the spirit of google-research/bert's extract_features.py.
Numbers are written with 9 (float32) or 17 (float64) significant digits,
which read back to the same binary value.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MinibertError

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
    truncation (> len(tokens) when truncated)."""

    index: int
    text: str
    text_pair: str | None
    tokens: list[str]
    input_ids: np.ndarray
    features: dict[str, np.ndarray]
    num_tokens: int
    words: WordRows | None = None


@dataclass
class Settings:
    """What an output holds: stored in every format so a reader knows."""

    layers: list[int]
    pool: str
    combine: str
    dtype: str
    model: str
    extra: dict = field(default_factory=dict)
    word_pool: str = "none"

    def to_json(self) -> str:
        from . import __version__

        return json.dumps(
            {
                "layers": self.layers,
                "pool": self.pool,
                "word_pool": self.word_pool,
                "combine": self.combine,
                "dtype": self.dtype,
                "model": self.model,
                "minibert": __version__,
                **self.extra,
            }
        )


def check_output_path(path: str | Path) -> Path:
    """The output's format from its extension; its directory must exist."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MinibertError(f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MinibertError(f"{path}: output directory {parent} does not exist")
    return path


def atomic_path(path: Path):
    """A temporary file in ``path``'s directory: (fd, name)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


class Writer:
    """Collects records; ``close()`` writes the whole file atomically."""

    def __init__(self, path: str | Path, settings: Settings):
        self.path = check_output_path(path)
        self.settings = settings
        self.records: list[Record] = []

    def add(self, records: list[Record]) -> None:
        self.records.extend(records)

    def _arrays(self) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
        records = sorted(self.records, key=lambda r: r.index)
        kept = np.array([len(r.tokens) for r in records], dtype=np.int64)
        arrays = {
            "offsets": _offsets(kept),
            "input_ids": np.concatenate([r.input_ids for r in records]).astype(np.int64)
            if records
            else np.zeros(0, np.int64),
            "layers": np.asarray(self.settings.layers, dtype=np.int64),
            "num_tokens": np.array([r.num_tokens for r in records], dtype=np.int64),
            "kept_tokens": kept,
        }
        words = None
        if self.settings.word_pool != "none":  # rows are words; tokens keep their own offsets
            arrays["token_offsets"] = arrays["offsets"]
            arrays["offsets"] = _offsets([len(r.words.words) for r in records])
            spans = [r.words.spans.reshape(-1, 2) for r in records] or [np.zeros((0, 2))]
            arrays["spans"] = np.concatenate(spans).astype(np.int64)
            arrays["segments"] = np.concatenate([r.words.segments for r in records] or [np.zeros(0)]).astype(
                np.int64
            )
            words = [w for r in records for w in r.words.words]
        names = list(records[0].features) if records else self._feature_names()
        for name in names:
            parts = [r.features[name] for r in records]
            if parts:
                pooled = parts[0].ndim == 1
                arrays[name] = np.stack(parts) if pooled else np.concatenate(parts)
            else:
                arrays[name] = np.zeros((0, 0), dtype=self.settings.dtype)
        tokens = [t for r in records for t in r.tokens]
        return arrays, tokens, words

    def _feature_names(self) -> list[str]:
        if self.settings.combine != "none":
            return ["combined"]
        return [f"hidden_states.{i}" for i in self.settings.layers]

    def close(self) -> None:
        fd, tmp = atomic_path(self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                self._write(f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _offsets(lengths) -> np.ndarray:
    """Row counts -> (N + 1,) int64 offsets: item n owns rows offsets[n]:offsets[n+1]."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class NpzWriter(Writer):
    def _write(self, f) -> None:
        arrays, tokens, words = self._arrays()
        arrays["tokens"] = np.asarray(tokens, dtype=str)
        if words is not None:
            arrays["words"] = np.asarray(words, dtype=str)
        arrays["settings"] = np.asarray(self.settings.to_json())
        np.savez(f, **arrays)


class SafetensorsWriter(Writer):
    def _write(self, f) -> None:
        from safetensors.numpy import save

        arrays, tokens, words = self._arrays()
        metadata = {"settings": self.settings.to_json(), "tokens": json.dumps(tokens, ensure_ascii=False)}
        if words is not None:
            metadata["words"] = json.dumps(words, ensure_ascii=False)
        f.write(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata))


def _json_numbers(a: np.ndarray) -> str:
    """A float array as JSON text that reads back to the same binary values."""
    fmt = "%.9g" if a.dtype == np.float32 else "%.17g"
    if a.ndim == 1:
        return "[" + ",".join(np.char.mod(fmt, a)) + "]"
    return "[" + ",".join(_json_numbers(row) for row in a) + "]"


def _layer_key(name: str) -> str:
    """``hidden_states.3`` -> ``3``; ``combined`` -> ``"combined"`` (JSON)."""
    return '"combined"' if name == "combined" else name.removeprefix("hidden_states.")


class JsonlWriter(Writer):
    def _write(self, f) -> None:
        for r in sorted(self.records, key=lambda r: r.index):
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
                f'{{"index":{_layer_key(name)},"values":{_json_numbers(v)}}}'
                for name, v in r.features.items()
            )
            line = json.dumps(head, ensure_ascii=False)[:-1] + ',"layers":[' + layers + "]}\n"
            f.write(line.encode("utf-8"))


WRITERS = {".npz": NpzWriter, ".safetensors": SafetensorsWriter, ".jsonl": JsonlWriter}


def open_writer(path: str | Path, settings: Settings) -> Writer:
    """The writer for ``path``'s extension (checked before any work is done)."""
    path = check_output_path(path)
    return WRITERS[path.suffix](path, settings)


class Output:
    """Read back what ``minibert extract`` wrote.

    ``settings`` (dict; empty for .jsonl), ``layers``, ``num_texts``,
    ``pooled``; ``tokens(n)`` and
    ``vectors(n, name)`` give text n's tokens and its (n_tokens, H) or (H,)
    array for ``name`` (``"hidden_states.{i}"``, ``i`` an int, or
    ``"combined"``). Word-level outputs (``--word-pool``): ``words(n)`` and
    ``vectors(n, name)`` of shape (n_words, H), ``arrays["spans"]``.
    ``arrays["num_tokens"]`` / ``arrays["kept_tokens"]``: each text's token
    count before and after truncation.
    """

    def __init__(
        self, arrays: dict, tokens: list[str], settings: dict, pooled: bool, words: list[str] | None = None
    ):
        self.arrays = arrays
        self._tokens = tokens
        self._words = words
        self.settings = settings
        self.pooled = pooled
        self.layers = [int(i) for i in arrays["layers"]]
        self.offsets = arrays["offsets"]
        self.token_offsets = arrays.get("token_offsets", self.offsets)
        self.num_texts = len(self.offsets) - 1

    @property
    def names(self) -> list[str]:
        return [k for k in self.arrays if k.startswith("hidden_states.") or k == "combined"]

    def tokens(self, n: int) -> list[str]:
        return self._tokens[self.token_offsets[n] : self.token_offsets[n + 1]]

    def words(self, n: int) -> list[str]:
        if self._words is None:
            raise MinibertError("this output has no words (it was not written with --word-pool)")
        return self._words[self.offsets[n] : self.offsets[n + 1]]

    def vectors(self, n: int, name: str | int) -> np.ndarray:
        if isinstance(name, int):
            name = f"hidden_states.{name}"
        if name not in self.arrays:
            raise MinibertError(f"no {name!r} in this output (has: {', '.join(self.names)})")
        a = self.arrays[name]
        if self.pooled:
            return a[n]
        return a[self.offsets[n] : self.offsets[n + 1]]


def open_output(path: str | Path) -> Output:
    """Open an ``.npz``, ``.safetensors`` or ``.jsonl`` written by extract."""
    path = Path(path)
    if not path.is_file():
        raise MinibertError(f"{path}: output file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            tokens = [str(t) for t in arrays.pop("tokens")]
            words = [str(w) for w in arrays.pop("words")] if "words" in arrays else None
            settings = json.loads(str(arrays.pop("settings")))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            tokens = json.loads(meta["tokens"])
            words = json.loads(meta["words"]) if "words" in meta else None
            settings = json.loads(meta["settings"])
        elif path.suffix == ".jsonl":
            return _read_jsonl(path)
        else:
            raise MinibertError(f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)})")
    except (OSError, ValueError, KeyError) as e:
        raise MinibertError(f"{path}: not a minibert output ({e})") from None
    return Output(arrays, tokens, settings, pooled=settings["pool"] != "none", words=words)


def _read_jsonl(path: Path) -> Output:
    tokens, words, per_name, per_text = [], [], {}, {}
    word_level = False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinibertError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
            tokens.extend(obj["tokens"])
            per_text.setdefault("kept_tokens", []).append(len(obj["tokens"]))
            per_text.setdefault("num_tokens", []).append(obj.get("num_tokens", len(obj["tokens"])))
            if "words" in obj:
                word_level = True
                words.extend(obj["words"])
                per_text.setdefault("rows", []).append(len(obj["words"]))
                per_text.setdefault("spans", []).append(
                    np.asarray(obj["spans"], dtype=np.int64).reshape(-1, 2)
                )
                segments = obj.get("segments", [0] * len(obj["words"]))
                per_text.setdefault("segments", []).append(np.asarray(segments, dtype=np.int64))
            for layer in obj["layers"]:
                idx = layer["index"]
                name = "combined" if idx == "combined" else f"hidden_states.{idx}"
                per_name.setdefault(name, []).append(np.asarray(layer["values"]))
    pooled = not word_level and bool(per_name) and next(iter(per_name.values()))[0].ndim == 1
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
    if word_level:
        arrays |= {
            "token_offsets": arrays["offsets"],
            "offsets": _offsets(per_text["rows"]),
            "spans": np.concatenate(per_text["spans"]),
            "segments": np.concatenate(per_text["segments"]),
        }
    return Output(arrays, tokens, {}, pooled, words if word_level else None)
