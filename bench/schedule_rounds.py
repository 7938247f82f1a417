"""The fast path's schedule, version against version: seconds per workload,
round-robin, for several checkouts of minibert side by side.

Each version (a directory holding a ``minibert/`` package: this checkout,
or one made with ``git worktree add /tmp/old-X <commit>``) runs in its own
worker process, started once, which loads the model and tokenizes every
workload before the first round. The workers take turns: in each round,
for every workload and thread count, every version runs the workload once,
one at a time (the others wait on their pipe, so no two run at once), in an
order that rotates from round to round. Noise from other processes on a
shared machine thus hits every version alike; the figures are medians over
rounds, and each version's speed relative to the first one is also given
per round (its quartiles say how steady the ratio is).

Workloads (all-MiniLM-L6-v2 by default; each version gets the same texts):

- ``corpus``: 640 texts of 7 to 80 tokens (rotations of
  ``examples/sentences.txt``, cut at a token boundary), sorted by length,
  longest first, and run in batches of 32 as ``minibert extract`` batches
  them: 20 forward passes;
- ``32x128``, ``8x512``: texts of exactly that many tokens (as in
  ``bench/bench.py``);
- ``1x12``: one short sentence, run 20 times per round.

Only ``Model.forward`` is timed (tokenization is done once, before the
rounds). Thread counts are set through ``Model.threads``, which every
version since 27a86b1 has.

Run: ``python bench/schedule_rounds.py OLD_DIR NEW_DIR ... [--rounds 9]``;
the first directory is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"
SHORT_TEXT = "The quick brown fox jumps over the lazy dog."  # 12 tokens with [CLS] and [SEP]
WORKLOADS = ("corpus", "32x128", "8x512", "1x12")
CORPUS_TEXTS, CORPUS_BATCH, CORPUS_TOKENS = 640, 32, (7, 80)
REPEATS = {"1x12": 20}  # forward passes per timing, for workloads too short to time once


def corpus_texts(model, n: int = CORPUS_TEXTS, tokens: tuple[int, int] = CORPUS_TOKENS) -> list[str]:
    """n texts of tokens[0]..tokens[1] tokens (specials included), lengths
    drawn uniformly with a fixed seed; each a rotation of the example
    sentences cut after its last wanted token (re-tokenized, a cut inside
    a word can shift a length by a token)."""
    import numpy as np

    words = (ROOT / "examples" / "sentences.txt").read_text().split()
    rng = np.random.default_rng(21)
    texts = []
    for _ in range(n):
        t = int(rng.integers(tokens[0], tokens[1] + 1))
        k = int(rng.integers(len(words)))
        text = " ".join((words[k:] + words[:k]) * 2)
        batch = model.tokenize([text], max_length=t)
        end = batch.offsets[0][t - 2][1]  # the last token before [SEP]
        texts.append(text[:end])
    return texts


def fixed_texts(B: int, S: int) -> list[str]:
    """B different texts, each longer than S tokens (truncated to S)."""
    words = (ROOT / "examples" / "sentences.txt").read_text().split()
    texts = []
    for b in range(B):
        k = (b * 37) % len(words)
        texts.append(" ".join((words[k:] + words[:k]) * (1 + 2 * S // len(words))))
    return texts


def make_workloads(model) -> dict[str, list[tuple[list[str], int | None]]]:
    """Per workload, its batches as (texts, max_length)."""
    texts = corpus_texts(model)
    lengths = [len(model.tokenize([t]).tokens[0]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    batches = [
        ([texts[i] for i in order[b : b + CORPUS_BATCH]], None) for b in range(0, len(order), CORPUS_BATCH)
    ]
    return {
        "corpus": batches,
        "32x128": [(fixed_texts(32, 128), 128)],
        "8x512": [(fixed_texts(8, 512), 512)],
        "1x12": [([SHORT_TEXT], None)],
    }


# --------------------------------------------------------------------------- the worker


def worker(version: str, weights: str, workloads_file: str) -> None:
    """Load ``version``'s minibert, tokenize every workload, then answer
    "workload threads" lines on stdin with the seconds of one timing."""
    sys.path.insert(0, version)
    import minibert

    assert Path(minibert.__file__).resolve().is_relative_to(Path(version).resolve()), minibert.__file__
    model = minibert.load(weights)
    spec = json.loads(Path(workloads_file).read_text())
    batches = {w: [model.tokenize(t, max_length=m) for t, m in spec[w]] for w in spec}
    print("ready", flush=True)
    for line in sys.stdin:
        workload, threads = line.split()
        model.threads = int(threads)
        start = time.perf_counter()
        for _ in range(REPEATS.get(workload, 1)):
            for batch in batches[workload]:
                model.forward(batch)
        print(time.perf_counter() - start, flush=True)


# --------------------------------------------------------------------------- the rounds


class Worker:
    def __init__(self, version: str, weights: str, workloads_file: str):
        env = dict(os.environ, PYTHONPATH=version, PYTHONDONTWRITEBYTECODE="1")
        env.pop("OPENBLAS_NUM_THREADS", None)  # BLAS threads are set per timing through Model.threads
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", version, "--weights", weights, "--spec", workloads_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready", version

    def time(self, workload: str, threads: int) -> float:
        self.proc.stdin.write(f"{workload} {threads}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[1], q[2]


def run_rounds(versions, names, workloads, thread_counts, rounds, weights, spec_file, log=print):
    """{(workload, threads): {name: [seconds per round]}}, round-robin."""
    workers = [Worker(v, weights, spec_file) for v in versions]
    times = {(w, t): {n: [] for n in names} for w in workloads for t in thread_counts}
    try:
        for w in workloads:  # warm-up: one untimed pass of everything
            for t in thread_counts:
                for wk in workers:
                    wk.time(w, t)
        for r in range(rounds):
            for w in workloads:
                for t in thread_counts:
                    k = r % len(workers)
                    for i in list(range(k, len(workers))) + list(range(k)):
                        times[w, t][names[i]].append(workers[i].time(w, t))
            log(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        for wk in workers:
            wk.close()
    return times


def table(times, names) -> str:
    """Markdown: per workload and thread count, each version's median seconds
    and its speed relative to the first version (base seconds / its seconds,
    per round: median and quartiles)."""
    base = names[0]
    head = "| workload | threads | " + " | ".join(f"{n} (s)" for n in names)
    head += " | " + " | ".join(f"{n} vs {base}: median [q1, q3]" for n in names[1:]) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names) - 1)]
    for (w, t), per in times.items():
        cells = [w, str(t)] + [f"{statistics.median(per[n]):.4f}" for n in names]
        for n in names[1:]:
            ratios = [a / b for a, b in zip(per[base], per[n], strict=True)]
            q1, q2, q3 = quartiles(ratios)
            cells.append(f"{q2:.3f}x [{q1:.3f}, {q3:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("versions", nargs="*", help="checkouts to compare (the first is the baseline)")
    p.add_argument("--names", help="comma-separated names for the versions (default: the directories)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--json", help="also write the seconds of every round here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.weights, args.spec)
    if len(args.versions) < 2:
        p.error("give at least two checkouts")
    versions = [str(Path(v).resolve()) for v in args.versions]
    names = args.names.split(",") if args.names else [Path(v).name for v in versions]
    workloads = args.workloads.split(",")
    thread_counts = [int(t) for t in args.threads.split(",")]
    sys.path.insert(0, versions[-1])
    import minibert

    spec = {w: b for w, b in make_workloads(minibert.load(args.weights)).items() if w in workloads}
    spec_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"schedule_rounds_{os.getpid()}.json"
    spec_file.write_text(json.dumps(spec))
    try:
        times = run_rounds(versions, names, workloads, thread_counts, args.rounds, args.weights, spec_file)
    finally:
        spec_file.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps({f"{w} {t}": per for (w, t), per in times.items()}))
    print(f"{args.rounds} rounds, round-robin, medians; ratios > 1: faster than {names[0]}")
    print(table(times, names))


if __name__ == "__main__":
    main()
