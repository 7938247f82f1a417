"""``minibert extract --engine dask``: the chunks of a corpus on Dask workers.

The driver (:func:`minibert.corpus.driver.extract_to`) reads the input, cuts it
into the same chunks as a local run (:func:`minibert.corpus.inputs.chunked`) and
submits one task per chunk, with its texts; each worker loads the model once
(a per-process cache keyed by model path and dtype) and runs the task the
driver gives -- :func:`minibert.corpus.driver.compute_shard`, the very function a
local run calls: the chunk with the same batches, its shard written into
the shared output directory. The driver lists each finished shard in the manifest as results
come back, so a killed Dask run resumes like a local one, and the finished
manifest equals a local run's.

BLAS threads are capped per task so that, on each host, worker threads x BLAS
threads <= cores: oversubscribed BLAS threads collapse throughput.

Only this module imports dask, and only when the Dask engine is asked for.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from minibert.corpus.inputs import Item
from minibert.errors import MinibertError
from minibert.model import load
from minibert.outputs.spec import ExtractSpec

_MODELS: dict = {}
_LOCK = threading.Lock()


def cached_model(path: str, dtype: str):
    """The worker's model for (path, dtype), loaded on first use only."""
    with _LOCK:
        key = (str(path), str(dtype))
        if key not in _MODELS:
            _MODELS[key] = load(path, dtype)
        return _MODELS[key]


def loaded_models() -> list[tuple[str, str]]:
    """(path, dtype) of the models this process has loaded (on a worker: at most one each)."""
    return sorted(_MODELS)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def blas_threads(client) -> dict[str, int]:
    """Worker address -> BLAS threads, so that per host the worker threads
    times BLAS threads do not exceed the host's cores."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(usable_cores)
    per_host = Counter()
    for w in workers.values():
        per_host[w["host"]] += w["nthreads"]
    return {addr: max(1, cores.get(addr, 1) // per_host[w["host"]]) for addr, w in workers.items()}


def shard_task(job: dict, k: int, items: list[Item], digest: str, threads: dict[str, int]) -> dict:
    """On a worker: ``job["task"]`` for chunk k with the worker's model (its
    shard written); return the shard's manifest entry."""
    from dask.distributed import get_worker
    from threadpoolctl import threadpool_limits

    spec = job["spec"]
    model = cached_model(spec.model, spec.dtype)
    try:
        limit = threads.get(get_worker().address, 1)
    except ValueError:  # not on a worker (a synchronous scheduler): leave BLAS as it is
        limit = None
    with threadpool_limits(limits=limit):
        return job["task"](model, job["out"], k, items, spec, digest)


def extract_shards(
    chunks: Iterable[tuple[int, list[Item], str]],
    task: Callable[..., dict],
    spec: ExtractSpec,
    out_dir: str | Path,
    scheduler: str | None = None,
    workers: int | None = None,
) -> Iterator[dict]:
    """Run ``task(model, out_dir, k, chunk, spec, digest)`` for each
    ``(k, chunk, digest)`` on Dask, with the model ``spec`` was made for;
    yield each shard's manifest entry (what ``task`` returns) as it
    finishes, in any order.

    ``scheduler``: a scheduler address (``tcp://host:8786``); None starts a
    LocalCluster of ``workers`` processes (default: one per core) with one
    thread each. ``spec.model`` and ``out_dir`` must be the same paths on every
    worker (a shared filesystem). At most two tasks per worker thread are in
    flight, so the driver holds a bounded number of chunks.
    """
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise MinibertError(
            "--engine dask needs dask.distributed: pip install 'minibert-numpy[dask]'"
        ) from None
    job = {"task": task, "spec": spec, "out": str(Path(out_dir).absolute())}
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers or usable_cores(), threads_per_worker=1, processes=True,
                dashboard_address=None,
            )  # fmt: skip
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as e:
                raise MinibertError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        with client:
            threads = blas_threads(client)
            limit = 2 * max(1, sum(client.nthreads().values()))
            run = uuid.uuid4().hex[:8]
            pending = as_completed()
            in_flight = 0
            for k, items, digest in chunks:
                key = f"minibert-shard-{k:05d}-{run}"
                pending.add(client.submit(shard_task, job, k, items, digest, threads, key=key, pure=False))
                in_flight += 1
                while in_flight >= limit:
                    yield next(pending).result()
                    in_flight -= 1
            for future in pending:
                yield future.result()
    finally:
        if cluster is not None:
            cluster.close()
