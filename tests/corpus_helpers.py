"""Helpers shared by the corpus-scale tests (test_corpus.py, test_distributed.py,
test_extract_attentions.py, test_fuzz_io.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
from blas_helpers import ONE_THREAD
from fuzz_helpers import run

from minibert.outputs.shards import MANIFEST

WORDS = "the a cat dog runs quickly over lazy fox house green blue tree river mountain small".split()

__all__ = ["ONE_THREAD", "as_if_killed", "assert_same_output", "cli", "here", "texts"]


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


def as_if_killed(out_dir, keep: int = 1) -> dict:
    """Rewrite the manifest of shard directory ``out_dir`` to the state a run
    killed after its first ``keep`` shards leaves (the shards' files stay);
    returns the new manifest."""
    manifest = json.loads((out_dir / MANIFEST).read_text())
    manifest["complete"], manifest["num_texts"], manifest["num_tokens"] = False, None, None
    manifest["shards"] = manifest["shards"][:keep]
    (out_dir / MANIFEST).write_text(json.dumps(manifest))
    return manifest
