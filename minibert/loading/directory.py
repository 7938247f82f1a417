"""A model directory -> its config, weights, tokenizer and sentence-transformers files,
every one checked (:func:`read_model_dir`); :func:`minibert.load` wraps them in a Model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minibert.encoder.config import Config
from minibert.encoder.params import Weights
from minibert.errors import MinibertError
from minibert.loading import hub
from minibert.loading.checkpoint import open_checkpoint
from minibert.loading.hub import SentenceConfig
from minibert.loading.tokenizer import Tokenizer
from minibert.loading.weights import from_checkpoint

DTYPES = ("float32", "float64")
DEFAULT_MODEL = "all-MiniLM-L6-v2"
FETCH_HINT = "make weights   (or: python weights/fetch.py)"


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory holds, read and checked: the parts of a Model."""

    config: Config
    weights: Weights
    tokenizer: Tokenizer
    path: Path
    dtype: str
    sentence: SentenceConfig | None
    files: tuple[Path, ...]


def default_model_dir() -> Path:
    """``$MINIBERT_WEIGHTS/all-MiniLM-L6-v2``, else ``weights/`` of this checkout."""
    return hub.weights_dir() / DEFAULT_MODEL


def read_model_dir(path: str | Path | None = None, dtype: str = "float32") -> ModelFiles:
    """Every file of a model directory, checked before anything large is allocated
    (see :func:`minibert.load`, which documents ``path`` and ``dtype``)."""
    if str(dtype) not in DTYPES:
        raise MinibertError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if path is None:
        path = default_model_dir()
        if not path.is_dir():
            raise MinibertError(f"default model not found at {path}; fetch it with: {FETCH_HINT}")
    path = hub.resolve(path)
    config = Config.from_json(path / "config.json")
    sentence = hub.sentence_config(path)
    tokenizer = Tokenizer.from_dir(
        path,
        config.pad_token_id,
        config.vocab_size,
        lowercase=sentence is not None and sentence.do_lower_case,
    )
    with open_checkpoint(path) as checkpoint:
        weights = from_checkpoint(checkpoint, config, dtype)
    files = (path / "config.json", *weights.files, *tokenizer.files, *(sentence.files if sentence else ()))
    return ModelFiles(config, weights, tokenizer, path, str(dtype), sentence, files)
