"""Helpers shared by the corpus-scale tests (test_corpus.py, test_distributed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
from fuzz_helpers import run

WORDS = "the a cat dog runs quickly over lazy fox house green blue tree river mountain small".split()

#: One BLAS thread in every run, in the test process and in subprocesses: on a shared 2-core machine,
#: a second BLAS thread competing with other work made extract ~7x slower. Bit-for-bit comparisons
#: are between runs with the same BLAS settings, as they are for a user resuming a run.
ONE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def texts(n: int, seed: int = 0) -> list[str]:
    """n short texts (3-8 words), different lengths so batches are sorted."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


def cli(*args, **kw) -> subprocess.CompletedProcess:
    """``minibert ARGS`` in a subprocess with one BLAS thread."""
    return subprocess.run(
        [sys.executable, "-m", "minibert.cli", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=ONE_THREAD, **kw,
    )  # fmt: skip


def here(*args) -> SimpleNamespace:
    """``minibert ARGS`` in this process (no second of imports per call), as
    :func:`cli` returns it. BLAS threads: see the ``one_blas_thread`` fixture."""
    code, out, err = run(*args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def assert_same_output(a, b) -> None:
    """Every text's tokens and every stored array, bit for bit."""
    assert a.num_texts == b.num_texts and a.layers == b.layers and a.names == b.names
    for n in range(a.num_texts):
        assert a.tokens(n) == b.tokens(n)
        for name in a.names:
            x, y = a.vectors(n, name), b.vectors(n, name)
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y, err_msg=f"text {n} {name}")
