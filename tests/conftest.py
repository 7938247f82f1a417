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
    """BLAS limited to one thread in this process (see corpus_helpers.ONE_THREAD)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def bpe_model():
    """A tiny BERT with a byte-level BPE tokenizer (the space belongs to the word)."""
    return minibert.load(TINY_BPE, "float32")
