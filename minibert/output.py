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

``.jsonl``: one object per text, in input order:
``{"index", "text", "text_pair"?, "tokens", "layers": [{"index", "values"}]}``
(``"index": "combined"`` with --combine), in the spirit of google-research/bert's
extract_features.py. Numbers are written with 9 (float32) or 17 (float64)
significant digits, which read back to the same binary value.
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
class Record:
    """One text's features. ``features`` maps a name (``hidden_states.{i}``
    or ``combined``) to (n_tokens, H) or, pooled, (H,). ``num_tokens`` is the
    text's token count before truncation (> len(tokens) when truncated)."""

    index: int
    text: str
    text_pair: str | None
    tokens: list[str]
    input_ids: np.ndarray
    features: dict[str, np.ndarray]
    num_tokens: int


@dataclass
class Settings:
    """What an output holds: stored in every format so a reader knows."""

    layers: list[int]
    pool: str
    combine: str
    dtype: str
    model: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        from . import __version__

        return json.dumps(
            {
                "layers": self.layers,
                "pool": self.pool,
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

    def _arrays(self) -> tuple[dict[str, np.ndarray], list[str]]:
        records = sorted(self.records, key=lambda r: r.index)
        lengths = [len(r.tokens) for r in records]
        offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays = {
            "offsets": offsets,
            "input_ids": np.concatenate([r.input_ids for r in records]).astype(np.int64)
            if records
            else np.zeros(0, np.int64),
            "layers": np.asarray(self.settings.layers, dtype=np.int64),
        }
        names = list(records[0].features) if records else self._feature_names()
        for name in names:
            parts = [r.features[name] for r in records]
            if parts:
                pooled = parts[0].ndim == 1
                arrays[name] = np.stack(parts) if pooled else np.concatenate(parts)
            else:
                arrays[name] = np.zeros((0, 0), dtype=self.settings.dtype)
        tokens = [t for r in records for t in r.tokens]
        return arrays, tokens

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


class NpzWriter(Writer):
    def _write(self, f) -> None:
        arrays, tokens = self._arrays()
        arrays["tokens"] = np.asarray(tokens, dtype=str)
        arrays["settings"] = np.asarray(self.settings.to_json())
        np.savez(f, **arrays)


class SafetensorsWriter(Writer):
    def _write(self, f) -> None:
        from safetensors.numpy import save

        arrays, tokens = self._arrays()
        metadata = {"settings": self.settings.to_json(), "tokens": json.dumps(tokens, ensure_ascii=False)}
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
    ``"combined"``).
    """

    def __init__(self, arrays: dict, tokens: list[str], settings: dict, pooled: bool):
        self.arrays = arrays
        self._tokens = tokens
        self.settings = settings
        self.pooled = pooled
        self.layers = [int(i) for i in arrays["layers"]]
        self.offsets = arrays["offsets"]
        self.num_texts = len(self.offsets) - 1

    @property
    def names(self) -> list[str]:
        return [k for k in self.arrays if k.startswith("hidden_states.") or k == "combined"]

    def tokens(self, n: int) -> list[str]:
        return self._tokens[self.offsets[n] : self.offsets[n + 1]]

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
            settings = json.loads(str(arrays.pop("settings")))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            tokens = json.loads(meta["tokens"])
            settings = json.loads(meta["settings"])
        elif path.suffix == ".jsonl":
            return _read_jsonl(path)
        else:
            raise MinibertError(f"{path}: unknown output format {path.suffix!r} (use {', '.join(FORMATS)})")
    except (OSError, ValueError, KeyError) as e:
        raise MinibertError(f"{path}: not a minibert output ({e})") from None
    return Output(arrays, tokens, settings, pooled=settings["pool"] != "none")


def _read_jsonl(path: Path) -> Output:
    tokens, per_name, lengths = [], {}, []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinibertError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
            tokens.extend(obj["tokens"])
            lengths.append(len(obj["tokens"]))
            for layer in obj["layers"]:
                idx = layer["index"]
                name = "combined" if idx == "combined" else f"hidden_states.{idx}"
                per_name.setdefault(name, []).append(np.asarray(layer["values"]))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    pooled = bool(per_name) and next(iter(per_name.values()))[0].ndim == 1
    arrays = {name: (np.stack(v) if pooled else np.concatenate(v)) for name, v in per_name.items()}
    layers = [int(n.split(".")[1]) for n in arrays if n.startswith("hidden_states.")]
    arrays |= {"offsets": offsets, "layers": np.asarray(layers, dtype=np.int64)}
    return Output(arrays, tokens, {}, pooled)
