"""Peak memory of ``minibert extract`` vs the number of texts: constant when streaming.

Runs ``minibert extract INPUT -o OUT/ --layers all`` (sharded output) in a fresh
subprocess for each corpus size, on generated short texts (3-8 words), and
reads the child's peak resident set size from ``wait4`` (ru_maxrss). Each run's
output is deleted after it is measured, so the disk holds one run at a time.

    python bench/memory_scaling.py                      # 1k vs 100k texts, mean-pooled
    python bench/memory_scaling.py --pool none --sizes 1000 20000   # token-level

Prints one row per size (peak RSS, wall time, texts/s, output size) and the
ratio of the largest to the smallest peak RSS; the claim is that it stays
within 1.10. BLAS threads default to 1 (``--threads``): on a shared machine, a
second thread competing with other work slows extract several-fold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the a an of to in on at by for with from cat dog bird fox horse river mountain tree house road city "
    "green blue red small large old new quickly slowly runs walks sees finds builds reads writes over under"
).split()


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) + "\n")


def measure(src: Path, out: Path, extra: list[str], threads: int) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one extract run in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "minibert.cli", "extract", str(src), "-o", f"{out}/", "--quiet", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"extract failed ({proc.returncode}): {' '.join(cmd)}")
    return usage.ru_maxrss / 1024, wall  # Linux reports KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--pool", default="mean", help="none keeps every token (disk: ~80 KB per text)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output-dtype", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the extract process")
    p.add_argument("--workdir", default=None, help="where corpora and outputs go (default: a temp dir)")
    args = p.parse_args()

    extra = ["--layers", "all", "--pool", args.pool, "--shard-size", str(args.shard_size),
             "--batch-size", str(args.batch_size)]  # fmt: skip
    if args.output_dtype:
        extra += ["--output-dtype", args.output_dtype]
    if args.model:
        extra += ["--model", args.model]
    print(f"minibert extract --layers all --pool {args.pool} --shard-size {args.shard_size} "
          f"--batch-size {args.batch_size}, {args.threads} BLAS thread(s), sharded output, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'texts':>8} {'peak RSS MiB':>12} {'wall s':>8} {'texts/s':>8} {'output MiB':>10}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="minibert-mem-") as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            src, out = tmp / f"corpus-{n}.txt", tmp / f"out-{n}"
            write_corpus(src, n)
            rss, wall = measure(src, out, extra, args.threads)
            disk = sum(f.stat().st_size for f in out.iterdir()) / 2**20
            shutil.rmtree(out)
            src.unlink()
            rows.append((n, rss))
            print(f"{n:>8} {rss:>12.1f} {wall:>8.1f} {n / wall:>8.1f} {disk:>10.1f}", flush=True)
    (n0, r0), (n1, r1) = min(rows), max(rows)
    print(f"peak RSS, {n1} vs {n0} texts: {r1 / r0:.3f}x (claim: within 1.10x)")


if __name__ == "__main__":
    main()
