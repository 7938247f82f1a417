"""BLAS threads in tests: the one environment for subprocesses with one BLAS
thread, and the thread counts BLAS has now (test_fast, test_model, test_threads,
test_distributed, the corpus tests and stress.py share them)."""

from __future__ import annotations

import os

#: One BLAS thread in every run, in the test process and in subprocesses: on a shared 2-core machine,
#: a second BLAS thread competing with other work made extract ~7x slower. Bit-for-bit comparisons
#: are between runs with the same BLAS settings, as they are for a user resuming a run.
ONE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def blas_thread_counts() -> list[int]:
    """The thread count of every BLAS library loaded (threadpoolctl: the caller skips without it)."""
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def blas_threads_now() -> int:
    """The most threads any loaded BLAS library uses now."""
    return max(blas_thread_counts())
