"""Byte for byte, one checkout of minibert against another (the proof that a redesign changed no
behaviour): every hidden state, attention map and trace of every committed tiny model and the real
model (float32 and float64, fast and plain, singles and pairs), and the output files of
`minibert extract` in every format and mode, `explain`, `summary`, `inspect` and a `view` page,
each reduced to a sha256. Paths of the checkout and of the output folder are normalised.

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python bench/prove_identical.py old.json /tmp/out-old   # run from outside both trees
    PYTHONPATH=$PWD  python bench/prove_identical.py new.json /tmp/out-new
    python bench/prove_identical.py --compare old.json new.json
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MAIN = Path(__file__).resolve().parent.parent  # the models and weights of this checkout
DATA = MAIN / "tests" / "data"
REAL = MAIN / "weights" / "all-MiniLM-L6-v2"
TEXTS = [
    "The cat sat on the mat.",
    "Hello world",
    "A much longer sentence, with punctuation; and numbers 12345 and naïve café words that split"
    " into pieces.",
    "x",
]
PAIRS = ["Where is it?", None, "Short.", "y"]


def h(a) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:20]


def arrays(out: dict):
    import minibert

    for d in [REAL] + sorted(p for p in DATA.iterdir() if (p / "config.json").exists()):
        for dtype in ("float32", "float64"):
            m = minibert.load(d, dtype=dtype)
            for impl in ("fast", "plain"):
                m.impl = impl
                for pairs in (None, [p or "z" for p in PAIRS]):
                    e = m.encode(TEXTS, pairs, output_attentions=True)
                    key = f"{d.name}/{dtype}/{impl}/{'pairs' if pairs else 'single'}"
                    for i, x in enumerate(e.hidden_states):
                        out[f"{key}/h{i}"] = h(x)
                    for i, x in enumerate(e.attentions):
                        out[f"{key}/a{i}"] = h(x)
            m.impl = "fast"
            e = m.encode(TEXTS, trace=True)
            t = e.trace
            out[f"{d.name}/{dtype}/trace"] = hashlib.sha256(repr(_flatten(t)).encode()).hexdigest()[:20]


def _flatten(obj, depth=0):
    import dataclasses

    if isinstance(obj, np.ndarray):
        return h(obj)
    if dataclasses.is_dataclass(obj):
        return {f.name: _flatten(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_flatten(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {k: _flatten(v, depth + 1) for k, v in obj.items()}
    return repr(obj)


def norm(b: bytes) -> bytes:
    """Paths of this run's checkout and output folder are not the code's behaviour."""
    for path, name in ((OUTDIR, b"<out>"), (os.environ["PYTHONPATH"], b"<repo>"), (str(MAIN), b"<repo>")):
        b = b.replace(str(path).encode(), name)
    return b


def cli(outdir: Path, out: dict):
    src = outdir / "in.txt"
    src.write_text("\n".join(TEXTS + ["word " * 700]) + "\n")
    js = outdir / "in.jsonl"
    js.write_text(
        "\n".join(
            json.dumps({"text": t, "text_pair": p} if p else {"text": t})
            for t, p in zip(TEXTS, PAIRS, strict=True)
        )
        + "\n"
    )
    jobs = []
    for model in (str(REAL), str(DATA / "tiny-bert"), str(DATA / "tiny-roberta")):
        mn = Path(model).name
        for ext in (".npz", ".safetensors", ".jsonl", "/"):
            jobs += [
                (f"{mn}-none{ext}", ["extract", src, "--model", model, "--pool", "none"]),
                (
                    f"{mn}-mean{ext}",
                    ["extract", js, "--model", model, "--pool", "mean", "--normalize", "--layers", "-1"],
                ),
                (
                    f"{mn}-words{ext}",
                    ["extract", src, "--model", model, "--word-pool", "first_last", "--layers", "0,2"],
                ),
                (
                    f"{mn}-window{ext}",
                    [
                        "extract",
                        src,
                        "--model",
                        model,
                        "--long",
                        "window",
                        "--max-length",
                        "64",
                        "--pool",
                        "cls",
                    ],
                ),
                (
                    f"{mn}-att{ext}",
                    [
                        "extract",
                        js,
                        "--model",
                        model,
                        "--attentions",
                        "--output-dtype",
                        "float16",
                        "--layers",
                        "1:3",
                    ],
                ),
                (
                    f"{mn}-stats{ext}",
                    ["extract", src, "--model", model, "--attention-stats", "--dtype", "float64"],
                ),
                (
                    f"{mn}-concat{ext}",
                    [
                        "extract",
                        src,
                        "--model",
                        model,
                        "--combine",
                        "concat",
                        "--layers",
                        "-2,-1",
                        "--pool",
                        "max",
                        "--shard-size",
                        "2",
                    ],
                ),
            ]
    for name, args in jobs:
        target = outdir / (name if not name.endswith("/") else name)
        r = subprocess.run(
            [sys.executable, "-m", "minibert.cli", *map(str, args), "-o", str(target), "--quiet"],
            capture_output=True,
            text=True,
        )
        out[f"cli/{name}/rc"] = r.returncode
        out[f"cli/{name}/stderr"] = r.stderr.strip()[-200:]
    for p in sorted(outdir.rglob("*")):
        if p.is_file() and p.name not in ("in.txt", "in.jsonl"):
            out[f"file/{p.relative_to(outdir)}"] = hashlib.sha256(norm(p.read_bytes())).hexdigest()[:20]
    for args, name in (
        (["explain", "The bank raised rates.", "--layer", "2", "--head", "1"], "explain"),
        (["summary", outdir / "all-MiniLM-L6-v2-none.npz"], "summary"),
        (["inspect", "--model", str(DATA / "tiny-albert")], "inspect"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "minibert.cli", *map(str, args)], capture_output=True, text=True
        )
        out[f"stdout/{name}"] = hashlib.sha256(norm(r.stdout.encode())).hexdigest()[:20]
    r = subprocess.run(
        [sys.executable, "-m", "minibert.cli", "view", "The cat sat.", "-o", str(outdir / "v.html")],
        capture_output=True,
        text=True,
    )
    out["file/v.html"] = (
        hashlib.sha256(norm((outdir / "v.html").read_bytes())).hexdigest()[:20]
        if (outdir / "v.html").exists()
        else r.stderr
    )


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        a, b = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print(f"{len(a)} vs {len(b)} entries; {len(diff)} differ")
        for k in diff[:40]:
            print(" ", k, a.get(k), b.get(k))
        sys.exit(1 if diff else 0)
    result = {}
    outdir = Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    OUTDIR = outdir
    cli(outdir, result)
    arrays(result)
    Path(sys.argv[1]).write_text(json.dumps(result, indent=0, sort_keys=True))
    print(len(result), "entries")
