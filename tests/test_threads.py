"""minibert.threads: the thread count asked for, NumPy's BLAS limit shared by
concurrent calls, the worker pools, and fork safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import variant
from numpy.testing import assert_array_equal

import minibert
from minibert import fast, threads


def test_threads_none_follows_the_blas_setting(tiny_model, monkeypatch):
    """threads=None uses as many threads as NumPy's BLAS is set to (so a caller's
    threadpoolctl limit or OPENBLAS_NUM_THREADS is respected)."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(fast, "UNIT_TOKENS", 2 * tiny_model.tokenize("one text").num_tokens[0])
    calls = []
    real_run = threads.run_on_threads
    monkeypatch.setattr(
        threads, "run_on_threads", lambda run, todo, n: calls.append(n) or real_run(run, todo, n)
    )
    model = variant(tiny_model, "fast", threads=None)
    with threadpool_limits(limits=1, user_api="blas"):
        model.encode(["one text"] * 4)
    assert calls == []  # one thread: the units one after another
    with threadpool_limits(limits=2, user_api="blas"):
        model.encode(["one text"] * 4)
    assert calls == [2]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_threads_are_an_error(tiny_model, bad):
    with pytest.raises(minibert.MinibertError, match="threads must be a positive integer"):
        variant(tiny_model, "fast", threads=bad).encode(["hi"])


def _encode_in_child(model_dir: str, queue) -> None:
    model = minibert.load(model_dir)
    model.threads = 2
    queue.put(model.encode(["one text", "another text here"] * 40, max_length=7).hidden_states[-1].shape)


def encode_in_forked_child(model_dir, hang: str) -> tuple:
    """Fork, encode 80 texts at 2 threads (new max_length, several units) in the
    child, and return the shape it got; fail with ``hang`` if it hangs."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(str(model_dir), queue))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail(hang)
    assert child.exitcode == 0
    return queue.get(timeout=5)


def test_threads_after_fork(tiny_model_dir):
    """A process forked after the thread pool was used gets a working pool of its own
    (a forked child inherits the pool object but not its threads)."""
    model = variant(minibert.load(tiny_model_dir), "fast", threads=2)
    model.encode(["one text"] * 4)  # the parent's pool exists now
    assert encode_in_forked_child(tiny_model_dir, "the forked child hung in the fast path's thread pool") == (
        80, 7, 32,
    )  # fmt: skip


def test_a_child_forked_while_another_thread_holds_minibert_locks_does_not_hang(tiny_model_dir):
    """A fork copies a lock held by another thread as held, and that thread does not
    exist in the child: minibert's locks are renewed in the child (os.register_at_fork)."""
    from minibert import tokenizer

    locks = [tokenizer._locks.truncators, threads._POOLS_LOCK, threads._BLAS._lock]
    held, release = threading.Event(), threading.Event()

    def hold():
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(60)
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        hang = "the forked child hung on a lock held by a thread of its parent"
        assert encode_in_forked_child(tiny_model_dir, hang) == (80, 7, 32)
    finally:
        release.set()
        holder.join(30)


def test_blas_limit_is_restored_whatever_order_threads_end_in():
    """Regions that end in another order than they began (two threads) leave the
    BLAS thread count as it was before the first began."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    def blas() -> int:
        return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    before = blas()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with threads.threads(3):
            a_in.set()
            b_in.wait(10)
        a_out.set()  # a ends first, while b's region is still open

    def b():
        a_in.wait(10)
        with threads.threads(1):
            b_in.set()
            a_out.wait(10)
            seen["inside b after a ended"] = blas()
            seen["wanted in b"] = threads.wanted()

    workers = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert seen == {"inside b after a ended": 1, "wanted in b": 1}
    assert blas() == before


@pytest.mark.slow
def test_blas_gives_the_same_bits_at_any_thread_count():
    """What the fast path relies on when it runs a unit on an n-thread BLAS: NumPy's
    BLAS (OpenBLAS) computes every matrix product of the encoder's shapes
    (all-MiniLM-L6-v2: H = 384, I = 1536, d = 32) to the same bits with 1, 2 or 3
    threads. If a BLAS ever broke this, results would depend on the thread count, and
    this test says so. (OpenBLAS's matrix-vector product does not keep it, e.g. (300,
    1536) @ (1536,) at 2 threads: so the fast path sums rows with einsum, not with a
    product with ones.)"""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    rng = np.random.default_rng(0)
    H, I, d = 384, 1536, 32
    cases = []
    for dtype in (np.float32, np.float64):
        for K, N in [(H, 3 * H), (H, H), (H, I), (I, H)]:
            W = rng.standard_normal((K, N)).astype(dtype)
            for M in (1, 2, 7, 12, 300, 700):
                cases.append(
                    (
                        f"({M}, {K}) @ ({K}, {N}) {dtype.__name__}",
                        rng.standard_normal((M, K)).astype(dtype),
                        W,
                    )
                )
        for n_tokens in (12, 512):
            q = rng.standard_normal((12, n_tokens, d)).astype(dtype)
            kT = rng.standard_normal((12, d, n_tokens)).astype(dtype)
            cases.append((f"attention scores, n = {n_tokens} {dtype.__name__}", q, kT))
            p = rng.random((12, n_tokens, n_tokens)).astype(dtype)
            cases.append((f"probabilities @ V, n = {n_tokens} {dtype.__name__}", p, q))
    results = {}
    for n in (1, 2, 3):
        with controller.limit(limits=n, user_api="blas"):
            results[n] = [a @ b for _, a, b in cases]
    for n in (2, 3):
        for (what, _, _), got, want in zip(cases, results[n], results[1], strict=True):
            assert_array_equal(got, want, err_msg=f"{what}: {n} threads vs 1")
