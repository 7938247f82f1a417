"""Shared fixtures: the real model (skipped when absent) and the tiny one."""

from __future__ import annotations

from pathlib import Path

import pytest

import minibert
from minibert.model import default_model_dir

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCE = TESTS / "reference"
TINY_BERT = DATA / "tiny-bert"
TINY_BPE = DATA / "tiny-bpe-bert"


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    path = default_model_dir()
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"real model weights absent at {path}: run `make weights` to fetch them")
    return path


@pytest.fixture(scope="session")
def real_model(real_model_dir):
    return minibert.load(real_model_dir, "float32")


@pytest.fixture(scope="session")
def real_model64(real_model_dir):
    return minibert.load(real_model_dir, "float64")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    if not (TINY_BERT / "model.safetensors").is_file():
        pytest.fail(f"committed tiny model missing at {TINY_BERT}: run `make reference`")
    return TINY_BERT


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    return minibert.load(tiny_model_dir, "float32")


@pytest.fixture(scope="session")
def tiny_model64(tiny_model_dir):
    return minibert.load(tiny_model_dir, "float64")


@pytest.fixture(scope="session")
def small_model_dir(request) -> Path:
    """The committed tiny model when it is there, else the real one (for
    tests of plumbing -- files, shards, resume -- not of the numbers)."""
    if (TINY_BERT / "model.safetensors").is_file():
        return TINY_BERT
    return request.getfixturevalue("real_model_dir")


@pytest.fixture(scope="module")
def one_blas_thread():
    """BLAS limited to one thread in this process (see blas_helpers.ONE_THREAD)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def bpe_model():
    """A tiny BERT with a byte-level BPE tokenizer (the space belongs to the word)."""
    return minibert.load(TINY_BPE, "float32")


def random_model(
    max_positions: int = 512,
    heads: int = 12,
    head_size: int = 2,
    layers: int = 2,
    dtype: str = "float32",
    seed: int = 0,
):
    """A seeded random BERT built in memory (no files): long positions and many
    heads at a tiny hidden size, for tests over lengths up to 512 that the
    committed 64-position tiny model cannot reach. Its tokenizer is the tiny
    model's; tests that use it feed token ids directly (:class:`minibert.Batch`)."""
    import numpy as np

    from minibert.encoder.config import Config
    from minibert.loading.tokenizer import Tokenizer
    from minibert.loading.weights import distinct_layers, from_tensors
    from minibert.model import Model

    H = heads * head_size
    config = Config(vocab_size=50, hidden_size=H, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=2 * H, max_position_embeddings=max_positions)  # fmt: skip
    rng = np.random.default_rng(seed)
    shapes = {
        "embeddings.word_embeddings.weight": (50, H),
        "embeddings.position_embeddings.weight": (max_positions, H),
        "embeddings.token_type_embeddings.weight": (2, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
    }
    for keys in distinct_layers(config):
        p = f"encoder.layer.{keys['i']}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):  # fmt: skip
            shapes |= {p + name + ".weight": (H, H), p + name + ".bias": (H,)}
        shapes |= {p + "intermediate.dense.weight": (2 * H, H), p + "intermediate.dense.bias": (2 * H,),
                   p + "output.dense.weight": (H, 2 * H), p + "output.dense.bias": (H,)}  # fmt: skip
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes |= {p + ln + ".weight": (H,), p + ln + ".bias": (H,)}
    tensors = {}
    for name, shape in shapes.items():
        t = rng.normal(0, 0.5, shape)
        if name.endswith("LayerNorm.weight"):
            t = 1 + 0.1 * t
        tensors[name] = t.astype(np.float32)
    weights = from_tensors(tensors, config, dtype, source="random")
    tokenizer = Tokenizer.from_dir(TINY_BERT)
    return Model(config, weights, tokenizer, TINY_BERT, dtype)


def variant(model, impl: str = "fast", threads: int | None = None):
    """Another Model on the same loaded weights and tokenizer, with its own
    ``impl`` and ``threads`` (session fixtures stay untouched)."""
    from minibert.model import Model

    other = Model(model.config, model.weights, model.tokenizer, model.path, str(model.dtype), model.sentence)
    other.impl, other.threads = impl, threads
    return other


def id_batch(lengths, vocab_size: int = 50, seed: int = 0):
    """A right-padded :class:`minibert.Batch` of random token ids with the given lengths."""
    import numpy as np

    rng = np.random.default_rng(seed)
    B, S = len(lengths), max(lengths)
    ids = np.zeros((B, S), np.int64)
    mask = np.zeros((B, S), np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(1, vocab_size, n)
        mask[b, :n] = 1
    tokens = [[f"t{i}" for i in row[:n]] for row, n in zip(ids, lengths, strict=True)]
    return minibert.Batch(ids, np.zeros_like(ids), mask, tokens, [[None] * n for n in lengths], list(lengths))


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on two cores), each
    worker's BLAS gets one thread, so the workers do not fight over the cores
    (more BLAS threads than free cores collapses throughput: docs/performance.md,
    Threads). Tests that ask for a thread count still get it (threadpoolctl),
    and the thread-independence tests compare counts they set themselves."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        config._minibert_blas = threadpool_limits(1, user_api="blas")
