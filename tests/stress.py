"""Kill/resume and concurrency stress for sharded ``minibert extract`` (issue 9).

Bounded and local: every process is a ``minibert extract`` on this machine,
into a work directory. Three phases, each checked against one uninterrupted
reference run of the same corpus:

1. kill/resume: ``--kills`` runs with ``--resume``, each killed with SIGKILL
   at a random moment (seeded); after each kill, whatever is on disk must be a
   state a reader and a resume accept (a valid manifest listing only whole
   shards, nothing but minibert's own files), and the next run must get the
   lock the killed one held (the kernel releases it);
2. concurrent resumes: ``--writers`` processes resume the killed directory at
   the same moment: one holds the lock and finishes, the others are refused
   with one line (or, started after it finished, find the run complete); the
   result equals the reference byte for byte -- manifest and every shard;
3. concurrent fresh writers: ``--writers`` processes start the same run into a
   new directory at the same moment: exactly one succeeds, each other one is
   refused with one line, and the result equals the reference.

Throughout, a reader thread opens the directories being written
(``allow_incomplete=True``) and reads every listed text: it may find no
manifest yet, but never a torn manifest or a shard that fails its checks.

Run alone at a larger scale, e.g.::

    python tests/stress.py --texts 3000 --shard-size 50 --kills 20 --writers 6

``tests/test_stress.py`` runs it at a small scale (a few seconds) in the suite.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from blas_helpers import ONE_THREAD

TESTS = Path(__file__).resolve().parent
WORDS = "the a cat dog runs quickly over lazy fox house green blue tree river mountain small".split()
REFUSALS = ("another minibert extract is writing", "output directory is not empty")


def corpus(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Stress:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.workdir)
        self.src = self.work / "in.txt"
        self.rng = np.random.default_rng(args.seed)
        self.failures: list[str] = []
        self.stats = {"kills": 0, "killed mid-run": 0, "refused": 0, "reads": 0}

    def command(self, out: Path, *extra: str) -> list[str]:
        a = self.args
        return [sys.executable, "-m", "minibert.cli", "extract", "--model", str(a.model), str(self.src), "-o",
                str(out), "--quiet", "--pool", "none", "--shard-size", str(a.shard_size), "--batch-size", "4",
                *extra]  # fmt: skip

    def start(self, out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(out, *extra), env=ONE_THREAD, stderr=subprocess.PIPE, text=True)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)

    # -- what may be on disk -------------------------------------------------------
    def check_state(self, d: Path, when: str) -> None:
        """A directory a kill left: a state every reader and resume accepts."""
        from minibert.errors import MinibertError
        from minibert.outputs.shards import MANIFEST, OWN_TEMP, check_shard, read_manifest

        if not d.exists():
            return
        names = [p.name for p in d.iterdir()]
        stray = [
            n for n in names if n != MANIFEST and not n.startswith("shard-") and not OWN_TEMP.fullmatch(n)
        ]
        self.check(not stray, f"{when}: files minibert does not write: {stray}")
        if MANIFEST not in names:
            self.check(not [n for n in names if n.startswith("shard-")], f"{when}: shards without a manifest")
            return
        try:
            for entry in read_manifest(d)["shards"]:
                check_shard(d, entry)
        except MinibertError as e:
            self.failures.append(f"{when}: {e}")

    def check_equal(self, d: Path, when: str) -> None:
        """Manifest and every shard byte for byte as the reference; no temp file left."""
        ref = self.work / "reference"
        got = sorted(p.name for p in d.iterdir())
        want = sorted(p.name for p in ref.iterdir())
        self.check(got == want, f"{when}: files {got}, the reference has {want}")
        for name in set(got) & set(want):
            same = (d / name).read_bytes() == (ref / name).read_bytes()
            self.check(same, f"{when}: {name} differs from the reference")

    def refused(self, proc: subprocess.Popen, err: str, when: str) -> None:
        lines = err.strip().splitlines()
        one = len(lines) == 1 and lines[0].startswith("minibert: error: ") and "Traceback" not in err
        self.check(proc.returncode == 2 and one and any(r in err for r in REFUSALS), f"{when}: {err!r}")
        self.stats["refused"] += 1

    # -- the reader ----------------------------------------------------------------
    def reader(self, dirs: list[Path], stop: threading.Event) -> None:
        from minibert.errors import MinibertError
        from minibert.outputs.shards import ShardedOutput

        while not stop.is_set():
            for d in dirs:
                try:
                    out = ShardedOutput(d, allow_incomplete=True)
                    for e in out.shards:
                        for n in range(e["first"], e["first"] + e["count"]):
                            out.vectors(n, -1)
                            self.stats["reads"] += 1
                except MinibertError as e:
                    if "not found" not in str(e):  # no manifest yet is the one thing a reader may meet
                        self.failures.append(f"reader: {e}")
            time.sleep(0.02)

    # -- the phases ----------------------------------------------------------------
    def reference(self) -> float:
        t = time.perf_counter()
        r = subprocess.run(
            self.command(self.work / "reference"), env=ONE_THREAD, capture_output=True, text=True
        )
        if r.returncode != 0:
            raise SystemExit(f"the reference run failed: {r.stderr}")
        return time.perf_counter() - t

    def kill_and_resume(self, out: Path, seconds: float) -> None:
        for k in range(self.args.kills):
            proc = self.start(out, "--resume")
            time.sleep(float(self.rng.uniform(0, seconds)))
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
                self.stats["killed mid-run"] += 1
            err = proc.communicate()[1]
            self.stats["kills"] += 1
            if finished:
                self.check(proc.returncode == 0, f"kill {k}: finished with {proc.returncode}: {err!r}")
            self.check_state(out, f"after kill {k}")

    def concurrent(self, out: Path, *extra: str, exactly_one: bool) -> None:
        procs = [self.start(out, *extra) for _ in range(self.args.writers)]
        errs = [p.communicate()[1] for p in procs]
        ok = [p.returncode == 0 for p in procs]
        when = f"{self.args.writers} writers{' ' + ' '.join(extra) if extra else ''}"
        self.check(sum(ok) == 1 if exactly_one else sum(ok) >= 1, f"{when}: {sum(ok)} succeeded")
        for p, e, good in zip(procs, errs, ok, strict=True):
            if not good:
                self.refused(p, e, when)
        self.check_equal(out, when)

    def run(self) -> int:
        a = self.args
        corpus(self.src, a.texts, a.seed)
        seconds = self.reference()
        resumed, fresh = self.work / "resumed", self.work / "fresh"
        stop = threading.Event()
        reader = threading.Thread(target=self.reader, args=([resumed, fresh], stop), daemon=True)
        reader.start()
        try:
            self.kill_and_resume(resumed, seconds)
            self.concurrent(resumed, "--resume", exactly_one=False)
            self.concurrent(fresh, exactly_one=True)
        finally:
            stop.set()
            reader.join()
        summary = ", ".join(f"{k} {v}" for k, v in self.stats.items())
        print(f"stress: {a.texts} texts in shards of {a.shard_size}, {a.writers} writers: {summary}")
        for f in self.failures:
            print(f"FAIL {f}")
        return 1 if self.failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(TESTS / "data" / "tiny-bert"))
    p.add_argument("--texts", type=int, default=400)
    p.add_argument("--shard-size", type=int, default=20)
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="default: a temporary directory, removed afterwards")
    args = p.parse_args(argv)
    if args.workdir is not None:
        return Stress(args).run()
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        return Stress(args).run()


if __name__ == "__main__":
    sys.exit(main())
