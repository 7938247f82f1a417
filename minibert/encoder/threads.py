"""How many CPU threads minibert uses, and the machinery behind it.

- :func:`threads`: run a block on n threads (``Model.threads``, ``--threads``);
- :func:`wanted`: the count in force in this thread;
- :func:`blas_limit`: NumPy's BLAS limited to n threads for a block. The BLAS
  count is one setting for the whole process, shared by concurrent forward
  passes (:class:`_BlasThreads` keeps it right whatever order they end in);
- :func:`run_on_threads`: work units on n threads, from a pool kept per
  process and thread count;
- fork safety: a forked child gets fresh locks and its own pools.

The fast path (:mod:`minibert.encoder.fast`) cuts a batch into work units and runs
them here; which thread runs a unit changes no bit of its result.
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from minibert.errors import MinibertError


def run_on_threads(run, todo: list[tuple[int, int]], n: int) -> None:
    """``run(b0, b1)`` for every unit of ``todo`` on n threads (the caller
    and n - 1 pool workers), each thread taking the next unit not yet taken,
    so concurrent calls sharing the pool never wait on each other's units.
    An error stops the remaining units and is raised here."""
    queue = iter(todo)
    lock = threading.Lock()
    failed = threading.Event()

    def worker():
        while not failed.is_set():
            with lock:
                unit = next(queue, None)
            if unit is None:
                return
            try:
                run(*unit)
            except BaseException:
                failed.set()
                raise

    pool = _pool(n)
    # each worker runs in a copy of the caller's context, so np.errstate set by the caller holds there too
    jobs = [pool.submit(contextvars.copy_context().run, worker) for _ in range(n - 1)]
    try:
        worker()
    finally:
        errors = []
        for job in jobs:
            try:
                job.result()
            except BaseException as e:  # re-raised below, after every worker stopped
                errors.append(e)
    if errors:
        raise errors[0]


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """A pool of n - 1 worker threads (the caller is the n-th), kept for reuse.

    Keyed by process id too: a child made by fork inherits the parent's pool
    objects but not their threads, so it must make its own.
    """
    key = (os.getpid(), n)
    with _POOLS_LOCK:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="minibert")
        return _pools[key]


@lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the BLAS libraries loaded (ImportError without it)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class _BlasThreads:
    """minibert's changes to the BLAS thread count, which is one setting for
    the whole process (OpenBLAS's), shared by concurrent forward passes.

    Each pass that needs a count enters a region (:meth:`limit`); the count
    in force is the newest active region's, and when the last region ends
    the count set outside minibert is restored, whatever order concurrent
    regions end in. (threadpoolctl's own limits are a stack per caller, so
    two threads ending in the other order would leave the wrong count.)
    The results do not depend on the count (see :func:`forward`); only the
    speed of a pass that overlaps another with a different count does.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._regions: list[tuple[object, int]] = []  # (token, count), oldest first
        self._outside: list[int] = []  # each BLAS library's count before the first region

    def _libraries(self):
        return _controller().select(user_api="blas").lib_controllers

    def outside(self) -> int:
        """The thread count NumPy's BLAS is set to outside minibert's regions
        (its default: all cores; OPENBLAS_NUM_THREADS; a caller's threadpoolctl
        limit); 1 without threadpoolctl."""
        try:
            libraries = self._libraries()
        except ImportError:
            return 1
        with self._lock:
            counts = self._outside if self._regions else [lib.num_threads for lib in libraries]
        return max([c for c in counts if c], default=1)

    def _set(self, libraries, counts: list[int]) -> None:
        for lib, n in zip(libraries, counts, strict=True):
            if lib.num_threads != n:
                lib.set_num_threads(n)
            # threadpoolctl >= 3.6 lets only the first thread that set a count set
            # it again; this lock already orders minibert's changes, so give it up.
            clear = getattr(lib, "clear_controlling_thread", None)
            if clear is not None:
                clear()

    @contextmanager
    def limit(self, n: int):
        """Run the block with the BLAS set to n threads (ImportError without threadpoolctl)."""
        libraries = self._libraries()
        token = object()
        with self._lock:
            if not self._regions:
                self._outside = [lib.num_threads for lib in libraries]
            self._regions.append((token, n))
            self._set(libraries, [n] * len(libraries))
        try:
            yield
        finally:
            with self._lock:
                self._regions = [r for r in self._regions if r[0] is not token]
                if self._regions:
                    self._set(libraries, [self._regions[-1][1]] * len(libraries))
                else:
                    self._set(libraries, self._outside)


_BLAS = _BlasThreads()


def blas_limit(n: int):
    """A context manager: NumPy's BLAS on n threads inside the block, restored
    after it (see :class:`_BlasThreads`; ImportError without threadpoolctl)."""
    return _BLAS.limit(n)


def _new_locks_after_fork() -> None:
    """A child forked while another thread held one of these locks would wait
    for it forever: the child gets fresh ones (its pools are its own already)."""
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()
    _BLAS._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_locks_after_fork)
_wanted = threading.local()  # .stack: the thread counts asked for by threads() in this thread


def wanted() -> int:
    """Threads the fast path uses in this thread now: the innermost
    :func:`threads` block's count, else what NumPy's BLAS is set to."""
    stack = getattr(_wanted, "stack", None)
    return stack[-1] if stack else _BLAS.outside()


@contextmanager
def threads(n: int | None):
    """Run minibert on ``n`` threads inside the block (None: change nothing).

    The fast path uses n threads (by default as many as NumPy's BLAS is set
    to use, including OPENBLAS_NUM_THREADS and threadpoolctl limits set by
    the caller) and NumPy's BLAS is limited to n threads (threadpoolctl)
    while the block runs. The BLAS limit is process-wide; concurrent blocks
    in other threads with other counts are safe and give the same results
    (:class:`_BlasThreads`). More threads than free cores (e.g. BLAS
    threads x worker processes) collapses throughput: with several
    processes on one machine, give each ``cores // processes``.
    """
    if n is None:
        yield
        return
    if not isinstance(n, (int, np.integer)) or isinstance(n, (bool, np.bool_)) or n < 1:
        raise MinibertError(f"threads must be a positive integer or None, got {n!r}")
    try:
        _controller()
    except ImportError:
        raise MinibertError("threads needs the threadpoolctl package: pip install threadpoolctl") from None
    stack = _wanted.__dict__.setdefault("stack", [])
    with _BLAS.limit(int(n)):
        stack.append(int(n))
        try:
            yield
        finally:
            stack.pop()
