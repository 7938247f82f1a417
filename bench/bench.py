"""make bench: tokens/s of a forward pass that records every hidden state (and every attention map).

Engines, each given the same token ids and the same thread count:

- transformers + torch (SDPA attention, ``output_hidden_states=True``)
- ONNX Runtime: the same model exported at bench time (into a temporary
  directory, never kept) with every hidden state as an output, fused by
  ORT's transformer optimizer, with all graph optimisations on
- minibert plain: the formula functions of ``minibert/encoder/ops.py``
- minibert fast: ``minibert/encoder/fast.py`` (the default of ``Model.encode``)

With attentions (on 32 x 128 and 8 x 512 only, timed in the same rounds):

- transformers eager: ``attn_implementation="eager"`` with
  ``output_attentions=True, output_hidden_states=True`` (SDPA returns no
  attention maps, so transformers falls back to eager for them anyway)
- minibert plain and minibert fast with ``output_attentions=True``: every
  hidden state and every layer's (B, h, S, S) probabilities

The families of issues 18 and 19 (after the default model; ``--families``,
``--families-only``): MPNet, DeBERTa-v3, ModernBERT, NomicBERT, each a
base-size model (hidden 768, 12 heads; the FFN of its family's base config)
with transformers' random initialisation under a fixed torch seed and
``--family-layers`` layers (default 4), built at bench time in a temporary
directory and never kept (:func:`build_family`); MPNet is the real
all-mpnet-base-v2 (12 layers) when ``make weights-mpnet`` has fetched it. On
32 x 128 and 8 x 512, every hidden state returned, in interleaved rounds:
transformers SDPA (left out where transformers has none for the family, and
says so), transformers eager, minibert plain and minibert fast; the table
gives the medians and the quartiles of the per-round ratios, and the run
checks the fast path's last hidden state against transformers' on the timed
batches (:func:`run_families`).

transformers and ONNX Runtime are optional (the ``[reference]`` and
``[bench]`` extras); without them only the minibert columns are printed.

Method: every engine is warmed up, then timed in rounds; each round runs
every engine once, in an order that rotates from round to round, so noise
from other processes on a shared machine hits all engines alike. The figure
is the median over rounds. Threads: torch.set_num_threads, ORT's
intra_op_num_threads, and threadpoolctl for NumPy's BLAS (``Model.threads``).

Also measured: the sgemm ceiling (the encoder's four matrix products at the
32 x 128 batch's size, timed in the same rounds at 1 thread), and the peak
memory of one forward pass on 8 x 512, each engine in its own subprocess
(see :func:`memory_probe`), without and with attentions; and the peak
resident set of a cold one-text ``minibert extract`` against an equivalent
transformers script, each run under ``/usr/bin/time -v`` (see
:func:`measure_extract`).

Run: ``make bench``, or ``python bench/bench.py --help``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Python puts this script's folder first on sys.path, where bench/kernels.py would shadow the
# `kernels` package that transformers imports (its import then failed, and the transformers
# columns were silently skipped): the folder goes, the repository comes in.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import minibert  # noqa: E402
from minibert.model import Model  # noqa: E402

SHORT_TEXT = "The quick brown fox jumps over the lazy dog."  # 12 tokens with [CLS] and [SEP]

# Text for the long workloads (written for this benchmark); each text is a
# different rotation of it, long enough to be truncated to 128 or 512 tokens.
PASSAGE = """
A river town keeps its records in the water. Every spring the melt comes down from the
hills and the people who live along the banks walk out in the evening to see how high it
has climbed against the old stone steps. The ferryman counts them, the baker counts them,
and the children who are not yet allowed to swim count them loudest of all. When the water
reaches the ninth step the market is moved uphill to the square by the church, and the
stalls that sold fish and rope and lamp oil are set out again between the fountain and the
schoolhouse. Nobody remembers deciding this; it is simply what the town does. The library
holds ledgers that go back two hundred years, written in brown ink by clerks whose names are
now street names, and in them the floods are listed next to the price of grain, the number
of weddings, the arrival of a new bell, and a short remark about the weather on the day the
river turned. Read together, the entries become a kind of slow conversation between the
valley and the people in it. A dry year is followed by a careful one; a great flood by a
decade of new walls, new bridges and arguments in the council about who should pay for them.
Engineers came in the last century with plans for a dam upstream, and the ledgers record
their visits with polite suspicion. The dam was built, the floods grew smaller, and for a
while the steps were only steps. Then the winters changed, the melt came earlier and
faster, and the water began to climb again, slowly, as if it had been waiting.
"""

WORKLOADS = ("short", "32x128", "8x512")
ENGINES = ("transformers", "onnxruntime", "minibert-plain", "minibert-fast")
#: Engines that also return every layer's attention probabilities, timed on ATTENTION_WORKLOADS only.
ATTENTION_ENGINES = ("transformers-eager+attn", "minibert-plain+attn", "minibert-fast+attn")
ATTENTION_WORKLOADS = ("32x128", "8x512")


def make_batch(model: Model, workload: str):
    """The token ids of a workload, from minibert's tokenizer (the same ids for
    every engine; they equal transformers' tokenizer's, as the tests show)."""
    if workload == "short":
        return model.tokenize([SHORT_TEXT])
    B, S = (int(n) for n in workload.split("x"))
    words = PASSAGE.split()
    texts = []
    for b in range(B):
        k = (b * 37) % len(words)
        rotated = words[k:] + words[:k]
        texts.append(" ".join(rotated * (1 + 2 * S // len(words))))
    batch = model.tokenize(texts, max_length=S)
    assert batch.input_ids.shape == (B, S) and batch.attention_mask.all(), workload
    return batch


# --------------------------------------------------------------------------- engines


class MinibertEngine:
    def __init__(self, model: Model, impl: str, attentions: bool = False):
        self.model = Model(model.config, model.weights, model.tokenizer, model.path, str(model.dtype))
        self.model.impl = impl
        self.attentions = attentions
        self.name = f"minibert-{impl}" + ("+attn" if attentions else "")

    def set_threads(self, threads: int) -> None:
        self.model.threads = threads

    def __call__(self, batch) -> None:
        self.model.forward(batch, output_attentions=self.attentions)


def quiet_transformers() -> None:
    """No progress bars or info lines from transformers in the bench's output."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


class TransformersEngine:
    """transformers + torch: SDPA attention and every hidden state (or eager
    attention, ``impl="eager"``); or, with ``attentions``, eager attention
    returning every layer's probabilities too. ``attn`` says which attention
    ran: "eager" when SDPA was asked for but the architecture has none."""

    def __init__(self, path: Path, attentions: bool = False, impl: str = "sdpa"):
        import torch
        from transformers import AutoModel

        quiet_transformers()

        self.torch = torch
        self.attentions = attentions
        self.name = "transformers-eager+attn" if attentions else "transformers"
        self.attn = "eager" if attentions else impl
        try:
            self.model = AutoModel.from_pretrained(str(path), attn_implementation=self.attn).eval()
        except ValueError:  # an architecture without SDPA (DeBERTa-v2/v3 in transformers 5.25)
            self.attn = "eager"
            self.model = AutoModel.from_pretrained(str(path), attn_implementation=self.attn).eval()
        # MPNet takes no token type ids; DeBERTa-v2/v3 has no SDPA and runs its own attention
        self.types = "token_type_ids" in inspect.signature(self.model.forward).parameters

    def set_threads(self, threads: int) -> None:
        self.torch.set_num_threads(threads)

    def __call__(self, batch) -> None:
        t = self.torch
        types = {"token_type_ids": t.from_numpy(batch.token_type_ids)} if self.types else {}
        with t.inference_mode():
            return self.model(
                input_ids=t.from_numpy(batch.input_ids),
                attention_mask=t.from_numpy(batch.attention_mask),
                output_hidden_states=True,
                output_attentions=self.attentions,
                **types,
            ).hidden_states


def make_engine(name: str, model: Model):
    """The engine of a name of ENGINES or ATTENTION_ENGINES (not ORT, which needs an export)."""
    if name.startswith("minibert-"):
        impl, _, attn = name.removeprefix("minibert-").partition("+")
        return MinibertEngine(model, impl, attentions=attn == "attn")
    if name in ("transformers", "transformers-eager+attn"):
        return TransformersEngine(model.path, attentions=name.endswith("+attn"))
    raise SystemExit(f"no engine {name!r}")


def export_onnx(path: Path, out_dir: Path, num_heads: int, hidden: int) -> tuple[Path, str]:
    """Export the model to ONNX with every hidden state as an output, then
    fuse it with ORT's transformer optimizer. Returns (file, description)."""
    import torch
    from transformers import AutoModel

    quiet_transformers()
    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()

    class AllHiddenStates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=True,
            )
            return tuple(out.hidden_states)

    wrapper = AllHiddenStates().eval()  # eval() on the wrapper too: export restores its mode
    n = model.config.num_hidden_layers + 1
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    outputs = [f"hidden_{i}" for i in range(n)]
    example = tuple(torch.ones((2, 16), dtype=torch.long) for _ in inputs)
    raw = out_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = dict(input_names=inputs, output_names=outputs, opset_version=17)
        kwargs["dynamic_axes"] = {name: {0: "batch", 1: "seq"} for name in inputs + outputs}
        try:
            torch.onnx.export(wrapper, example, str(raw), dynamo=False, **kwargs)
            how = "torch.onnx (TorchScript exporter)"
        except Exception:  # exporter versions differ; the dynamo one needs onnxscript
            torch.onnx.export(wrapper, example, str(raw), dynamo=True, **kwargs)
            how = "torch.onnx (dynamo exporter)"
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        fused_file = out_dir / "model.fused.onnx"
        opt.save_model_to_file(str(fused_file))
        return fused_file, f"{how}, fused by onnxruntime.transformers.optimizer: {fused}"
    except Exception as e:  # the optimizer needs the onnx package
        return raw, f"{how}, not fused ({type(e).__name__}: {e})"


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: Path, config, tmp: Path):
        import onnxruntime

        self.ort = onnxruntime
        self.file, self.description = export_onnx(path, tmp, config.num_attention_heads, config.hidden_size)
        self.sessions: dict[int, object] = {}
        self.session = None

    def set_threads(self, threads: int) -> None:
        if threads not in self.sessions:
            ort = self.ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[threads] = ort.InferenceSession(
                str(self.file), options, providers=["CPUExecutionProvider"]
            )
        self.session = self.sessions[threads]

    def __call__(self, batch):
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        return self.session.run(None, feeds)


class SgemmCeiling:
    """The encoder's four matrix products (QKV, output, FFN in and out) at the
    size of the 32 x 128 batch: the speed NumPy's BLAS reaches on this
    model's shapes, in GFLOP/s."""

    name = "sgemm"

    def __init__(self, config, tokens: int):
        H, I = config.hidden_size, config.intermediate_size
        rng = np.random.default_rng(0)
        self.shapes = [(H, 3 * H), (H, H), (H, I), (I, H)]
        self.pairs = [
            (
                rng.standard_normal((tokens, k), dtype=np.float32),
                rng.standard_normal((k, n), dtype=np.float32),
                np.empty((tokens, n), np.float32),
            )
            for k, n in self.shapes
        ]
        self.flops = sum(2 * tokens * k * n for k, n in self.shapes)

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, batch) -> None:
        from minibert.encoder.threads import threads

        with threads(self.threads):
            for x, w, out in self.pairs:
                np.matmul(x, w, out=out)


def flops_per_token(config, S: int) -> float:
    """Multiply-adds x 2 of one token through the encoder at sequence length S:
    Q, K, V, O projections (4 H^2), FFN (2 H I), attention scores and
    context (2 S H)."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return 2 * L * (4 * H * H + 2 * H * I + 2 * S * H)


# --------------------------------------------------------------------------- timing


def timed_rounds(engines: dict, batch, runs: int, repeat: int, warmup: int = 2) -> dict[str, list[float]]:
    """Median-able seconds per call of each engine: warm up (``warmup`` calls each), then
    ``runs`` rounds, each engine once per round (``repeat`` calls, averaged),
    the order rotating so no engine always runs first or last."""
    names = list(engines)
    for name in names:
        for _ in range(warmup):
            engines[name](batch)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(repeat):
                engines[name](batch)
            times[name].append((time.perf_counter() - t0) / repeat)
    return times


def memory_probe(engine: str, model_dir: Path) -> dict:
    """Run in a subprocess: the memory one forward pass on 8 x 512 needs
    (for a ``+attn`` engine, one that also returns every attention map).

    After the model is loaded and warmed up on the short text, the kernel's
    peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``), the
    8 x 512 batch runs once, and the result is VmHWM (peak resident set)
    minus VmRSS before the run: the extra memory the forward pass touched,
    outputs (all hidden states) included. Both engines are measured the same
    way, at 1 thread. Without clear_refs, falls back to ru_maxrss, which
    then also counts load-time peaks.
    """
    model = minibert.load(model_dir, "float32")
    batch = make_batch(model, "8x512")
    short = make_batch(model, "short")
    run = make_engine(engine, model)
    run.set_threads(1)
    run(short)
    gc.collect()

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after clear_refs, minus VmRSS before"
        before = status("VmRSS")
        run(batch)
        peak = status("VmHWM")
    except OSError:
        import resource

        method = "ru_maxrss minus VmRSS before (includes load-time peaks)"
        before = status("VmRSS")
        run(batch)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"engine": engine, "extra_bytes": peak - before, "baseline_bytes": before, "method": method}


def measure_memory(engines: list[str], model_dir: Path) -> dict[str, dict]:
    results = {}
    for engine in engines:
        cmd = [sys.executable, __file__, "--memory-probe", engine, "--model", str(model_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results[engine] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# The transformers side of the cold-extract comparison: what ``minibert extract
# FILE -o OUT.npz`` does with its defaults on all-MiniLM-L6-v2 (every hidden
# state, mean-pooled over the text's tokens, saved as npz), with transformers.
TRANSFORMERS_EXTRACT = """
import sys
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

model_dir, source, target = sys.argv[1:4]
text = open(source, encoding="utf-8").read().splitlines()[0]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir).eval()
inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=256)
with torch.inference_mode():
    out = model(**inputs, output_hidden_states=True)
mask = inputs["attention_mask"].unsqueeze(-1).float()
pooled = {
    f"hidden_states.{i}": ((h * mask).sum(1) / mask.sum(1)).numpy() for i, h in enumerate(out.hidden_states)
}
np.savez(target, input_ids=inputs["input_ids"][0].numpy(), **pooled)
"""


def max_rss(cmd: list[str]) -> dict:
    """Run ``/usr/bin/time -v CMD`` and read its "Maximum resident set size"."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            return {"max_rss_bytes": int(line.split(":")[1]) * 1024}
    return {"error": ["no 'Maximum resident set size' in /usr/bin/time's output"]}


def measure_extract(model_dir: Path, with_transformers: bool) -> dict[str, dict]:
    """Peak RSS of a cold one-text extract: ``minibert extract`` (the
    console script next to this Python, defaults: every hidden state,
    mean-pooled, to .npz) and, if transformers is there, the same work as a
    transformers script (:data:`TRANSFORMERS_EXTRACT`). Each is a fresh
    process run under ``/usr/bin/time -v``: its "Maximum resident set size"
    covers everything, imports and loading the model included."""
    if not Path("/usr/bin/time").exists():
        return {"error": {"error": ["/usr/bin/time not found (GNU time)"]}}
    results = {}
    with tempfile.TemporaryDirectory(prefix="minibert-bench-extract-") as tmp:
        source = Path(tmp) / "one.txt"
        source.write_text(PASSAGE.strip().splitlines()[0] + "\n", encoding="utf-8")
        script = Path(sys.executable).parent / "minibert"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "minibert.cli"]
        results["minibert"] = max_rss([*cmd, "extract", str(source), "--model", str(model_dir),
                                       "-o", str(Path(tmp) / "minibert.npz"), "--quiet"])  # fmt: skip
        if with_transformers:
            args = [str(model_dir), str(source), str(Path(tmp) / "transformers.npz")]
            results["transformers"] = max_rss([sys.executable, "-c", TRANSFORMERS_EXTRACT, *args])
    return results


# --------------------------------------------------------------------------- families (issues 18 and 19)

#: The families of issues 18 and 19 as base-size encoders built at bench time: transformers'
#: config class and the settings that differ from its defaults (the classes default to a
#: base model for MPNet, ModernBERT and NomicBERT; DeBERTa's to v2-xlarge without relative
#: attention). MPNet: mpnet-base's 514 positions (the class says 512). DeBERTa-v3:
#: deberta-v3-base's settings. ModernBERT: ModernBERT-base (768, 12 heads, GeGLU 1152, every
#: 3rd layer global, window 128, rotary theta 160000 / 10000) with the tokenizer's special ids.
#: NomicBERT: nomic-embed-text-v1.5 (768, 12 heads, SwiGLU 3072, rotary base 1000).
FAMILIES = {
    "mpnet": ("MPNetConfig", {"max_position_embeddings": 514}),
    "deberta-v3": ("DebertaV2Config", {
        "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "relative_attention": True,
        "max_relative_positions": -1, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
        "share_att_key": True, "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
        "type_vocab_size": 0,
    }),
    "modernbert": ("ModernBertConfig", {}),
    "nomic-bert": ("NomicBertConfig", {}),
}  # fmt: skip
#: The real MPNet checkpoint (``make weights-mpnet``), timed instead of a random MPNet when present.
REAL_MPNET = ROOT / "weights" / "all-mpnet-base-v2"
FAMILY_SEED = 0
FAMILY_WORKLOADS = ("32x128", "8x512")
FAMILY_ENGINES = ("transformers-sdpa", "transformers-eager", "minibert-plain", "minibert-fast")
#: A fast-path hidden state further than this from transformers' is flagged in the check.
FAMILY_TOLERANCE = 1e-4


def build_family(name: str, layers: int, tokenizer_dir: Path, out: Path) -> Path:
    """out/<name>: a base-size model of family ``name`` (:data:`FAMILIES`) with
    ``layers`` layers and transformers' random initialisation (torch seed
    :data:`FAMILY_SEED`), saved by ``save_pretrained``, with the WordPiece
    tokenizer of ``tokenizer_dir`` (its vocabulary size and special ids), so
    every family reads the same token ids."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    quiet_transformers()
    path = out / name
    path.mkdir()
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (tokenizer_dir / file).is_file():
            shutil.copy(tokenizer_dir / file, path / file)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    config_class, settings = FAMILIES[name]
    if name == "modernbert":  # its defaults are ModernBERT's own BPE ids
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        settings = settings | {"pad_token_id": tokenizer.token_to_id("[PAD]"), "cls_token_id": cls,
                               "sep_token_id": sep, "bos_token_id": cls, "eos_token_id": sep}  # fmt: skip
    config = getattr(transformers, config_class)(
        vocab_size=tokenizer.get_vocab_size(), num_hidden_layers=layers, **settings
    )
    torch.manual_seed(FAMILY_SEED)
    transformers.AutoModel.from_config(config).eval().save_pretrained(path, safe_serialization=True)
    return path


def family_model(name: str, layers: int, tokenizer_dir: Path, out: Path) -> tuple[Path, str]:
    """The model directory timed for a family, and what it is: all-mpnet-base-v2 for
    MPNet when weights/ holds it, else :func:`build_family`'s random model."""
    if name == "mpnet" and (REAL_MPNET / "model.safetensors").is_file():
        return REAL_MPNET, "all-mpnet-base-v2 (real weights, 12 layers)"
    if name not in FAMILIES:
        raise SystemExit(f"--families: no family {name!r} (of {', '.join(FAMILIES)})")
    what = f"random weights, base shapes, {layers} layer{'s' if layers > 1 else ''}"
    return build_family(name, layers, tokenizer_dir, out), what


def family_engines(model: Model) -> tuple[dict, str]:
    """:data:`FAMILY_ENGINES` for one model (SDPA left out when transformers has
    none for the architecture and would run eager), and which attention ran."""
    engines = {
        "transformers-sdpa": TransformersEngine(model.path),
        "transformers-eager": TransformersEngine(model.path, impl="eager"),
        "minibert-plain": MinibertEngine(model, "plain"),
        "minibert-fast": MinibertEngine(model, "fast"),
    }
    if engines["transformers-sdpa"].attn != "sdpa":
        del engines["transformers-sdpa"]
        return engines, "no SDPA in transformers (eager only)"
    return engines, "SDPA and eager"


def family_check(engines: dict, batch) -> dict[str, float]:
    """The fast path's last hidden state against each transformers engine's on the
    timed batch: max |difference| (float32), and the largest |value| for scale."""
    fast = engines["minibert-fast"].model.forward(batch).hidden_states[-1]
    out = {"largest": float(np.abs(fast).max())}
    for name in ("transformers-sdpa", "transformers-eager"):
        if name in engines:
            theirs = engines[name](batch)[-1].numpy()
            out[name.removeprefix("transformers-")] = float(np.abs(theirs - fast).max())
    return out


def fmt_spread(ratios: list[float] | None) -> str:
    """Median of the per-round ratios [first, third quartile]."""
    if not ratios or len(ratios) < 4:
        return "-"
    q = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.2f}x [{q[0]:.2f}, {q[2]:.2f}]"


def bench_family(name: str, path: Path, thread_counts: list[int], runs: int, workloads: list[str]) -> dict:
    """One family's rows of the family table (printed as they are measured) and
    its accuracy check (at the first thread count)."""
    model = minibert.load(path, "float32")
    engines, attention = family_engines(model)
    batches = {w: make_batch(model, w) for w in workloads}
    for engine in engines.values():
        engine.set_threads(thread_counts[0])
    result = {"attention": attention, "check": {w: family_check(engines, b) for w, b in batches.items()}}
    for threads in thread_counts:
        for engine in engines.values():
            engine.set_threads(threads)
        for workload, batch in batches.items():
            tokens = int(batch.attention_mask.sum())
            times = timed_rounds(engines, batch, runs, 1, warmup=1)  # each call takes seconds
            rate = {n: tokens / statistics.median(t) for n, t in times.items()}
            sdpa = per_round_ratio(times, "minibert-fast", "transformers-sdpa")
            eager = per_round_ratio(times, "minibert-fast", "transformers-eager")
            result[f"{workload}@{threads}"] = dict(rates=rate, fast_over_sdpa=sdpa, fast_over_eager=eager)
            fast, plain = rate["minibert-fast"], rate["minibert-plain"]
            row = [name, workload, str(threads), *(fmt_rate(rate.get(n)) for n in FAMILY_ENGINES)]
            row += [fmt_spread(sdpa), fmt_spread(eager), fmt_ratio(fast, plain)]
            print("| " + " | ".join(row) + " |", flush=True)
    return result


def run_families(names: list[str], layers: int, tokenizer_dir: Path, thread_counts, runs: int) -> dict:
    """The family section of ``make bench`` (issues 18 and 19): per family, tokens/s
    of transformers (SDPA, eager) and minibert (plain, fast) with every hidden state, on
    :data:`FAMILY_WORKLOADS`, in the interleaved rounds of :func:`timed_rounds`; then
    each model's description and the fast path's accuracy against transformers."""
    print(f"\n## Families (issues 18 and 19): median of {runs} interleaved rounds, tokens/s\n")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    header = ["family", "workload", "threads", "transformers SDPA", "transformers eager", "minibert plain"]
    header += ["minibert fast", "fast/SDPA per round [quartiles]", "fast/eager per round [quartiles]"]
    header += ["fast/plain"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results = {}
    with tempfile.TemporaryDirectory(prefix="minibert-bench-families-") as tmp:
        for name in names:
            path, what = family_model(name, layers, tokenizer_dir, Path(tmp))
            results[name] = bench_family(name, path, thread_counts, runs, list(FAMILY_WORKLOADS))
            results[name]["model"] = what
            gc.collect()
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nmodels, and the fast path's last hidden state against transformers' (max |difference|):")
    for name, r in results.items():
        for workload, c in r["check"].items():
            diffs = ", ".join(f"{k} {c[k]:.1e}" for k in ("sdpa", "eager") if k in c)
            flag = "" if max(c.get("sdpa", 0), c["eager"]) <= FAMILY_TOLERANCE else "  MISMATCH"
            print(f"  {name} ({r['model']}; {r['attention']}) {workload}: {diffs}"
                  f" (largest |value| {c['largest']:.1f}){flag}")  # fmt: skip
    return results


# --------------------------------------------------------------------------- report


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor(),
        "cores": os.cpu_count(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))},
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')} kernels,"
            f" {Path(p.get('filepath', '?')).name})"
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = ["threadpoolctl missing"]
    for module in ("torch", "transformers", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--runs", type=int, default=7, help="timed rounds per workload (median; default 7)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"of {', '.join(WORKLOADS)}")
    every = ENGINES + ATTENTION_ENGINES
    parser.add_argument("--engines", default=",".join(every), help=f"of {', '.join(every)}")
    skip = "skip the peak-memory subprocesses (forward passes, cold extract)"
    parser.add_argument("--no-memory", action="store_true", help=skip)
    families = f"families timed after the default model (of {', '.join(FAMILIES)}; or none)"
    parser.add_argument("--families", default=",".join(FAMILIES), help=families)
    layers = "encoder layers of the random family models (default 4; the real MPNet keeps its 12)"
    parser.add_argument("--family-layers", type=int, default=4, help=layers)
    parser.add_argument("--families-only", action="store_true", help="only the family section")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    model_dir = args.model or minibert.model.default_model_dir()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, model_dir)))
        return 0
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    family_names = [] if args.families == "none" else args.families.split(",")
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.families_only:
        env = environment()
        print(f"# minibert benchmark, family section; CPU: {env['cpu']}, {env['cores']} cores")
        print(", ".join(f"{m} {env[m]}" for m in ("numpy", "torch", "transformers") if m in env))
        families = run_families(family_names, args.family_layers, model_dir, thread_counts, args.runs)
        if args.json:
            args.json.write_text(json.dumps({"environment": environment(), "families": families}, indent=1))
        return 0

    model = minibert.load(model_dir, "float32")
    config = model.config
    wanted = args.engines.split(",")
    engines: dict[str, object] = {}
    notes = []
    tmp = tempfile.TemporaryDirectory(prefix="minibert-bench-")
    if "transformers" in wanted:
        try:
            engines["transformers"] = TransformersEngine(model.path)
            if engines["transformers"].attn != "sdpa":
                notes.append("transformers column: eager attention (transformers has no SDPA for this model)")
        except ImportError as e:
            notes.append(f"transformers column skipped: {e} (install the [reference] extra)")
    if "onnxruntime" in wanted:
        try:
            engines["onnxruntime"] = OnnxRuntimeEngine(model.path, config, Path(tmp.name))
            notes.append(f"ONNX model: {engines['onnxruntime'].description}")
        except ImportError as e:
            notes.append(f"onnxruntime column skipped: {e} (install the [bench] extra)")
    for impl in ("plain", "fast"):
        if f"minibert-{impl}" in wanted:
            engines[f"minibert-{impl}"] = MinibertEngine(model, impl)
    # with attentions: timed in the same rounds as the engines above, on ATTENTION_WORKLOADS
    attention_engines: dict[str, object] = {}
    for name in ATTENTION_ENGINES:
        if name in wanted:
            try:
                attention_engines[name] = make_engine(name, model)
            except ImportError as e:
                notes.append(f"{name} column skipped: {e} (install the [reference] extra)")

    env = environment()
    print("# minibert benchmark: tokens/s of a forward pass recording every hidden state (and attention map)")
    print(f"model: {model.path.name}, float32; CPU: {env['cpu']}, {env['cores']} cores")
    print(f"numpy {env['numpy']}, BLAS: {'; '.join(env['blas'])}; OPENBLAS_*/OMP_*/MKL_* env: {env['env']}")
    versions = ", ".join(f"{m} {env[m]}" for m in ("torch", "transformers", "onnxruntime") if m in env)
    if versions:
        print(versions)
    print(f"median of {args.runs} interleaved rounds after warm-up; wall clock")
    for note in notes:
        print(note)

    # sanity: every engine computes the same hidden states (max abs difference to minibert fast)
    check = make_batch(model, "short")
    if "minibert-fast" in engines and "onnxruntime" in engines:
        ref = engines["minibert-fast"].model.forward(check).hidden_states
        engines["onnxruntime"].set_threads(1)
        got = engines["onnxruntime"](check)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True))
        print(f"check: ONNX Runtime vs minibert fast, max |difference| over all hidden states = {diff:.1e}")
    if "minibert-fast" in engines and "transformers" in engines:
        ref = engines["minibert-fast"].model.forward(check).hidden_states
        engines["transformers"].set_threads(1)
        got = [h.numpy() for h in engines["transformers"](check)]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True))
        print(f"check: transformers vs minibert fast, max |difference| over all hidden states = {diff:.1e}")

    results = {"environment": env, "notes": notes, "rates": {}, "attention_rates": {}, "runs": args.runs}
    for threads in thread_counts:
        for engine in [*engines.values(), *attention_engines.values()]:
            engine.set_threads(threads)
        print(f"\n## {threads} thread{'s' if threads > 1 else ''}\n")
        header = ["workload", "tokens"] + [n for n in ENGINES if n in engines]
        header += ["fast/transformers", "fast/ORT", "fast/plain"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        attention_rows = []
        for workload in args.workloads.split(","):
            batch = make_batch(model, workload)
            tokens = int(batch.attention_mask.sum())
            contenders = dict(engines)
            if workload in ATTENTION_WORKLOADS:
                contenders |= attention_engines
            if workload == "32x128" and threads == 1:
                contenders["sgemm"] = SgemmCeiling(config, tokens)
                contenders["sgemm"].set_threads(1)
            # short runs are repeated inside a round so each timing is >= ~50 ms
            probe = engines.get("minibert-fast") or next(iter(engines.values()))
            t0 = time.perf_counter()
            probe(batch)
            repeat = max(1, int(0.05 / max(time.perf_counter() - t0, 1e-6)))
            times = timed_rounds(contenders, batch, args.runs, repeat)
            rate = {n: tokens / statistics.median(t) for n, t in times.items() if n in engines}
            results["rates"][f"{workload}@{threads}"] = rate
            if workload in ATTENTION_WORKLOADS and attention_engines:
                attention_rows.append((workload, tokens, times))
                attention = {n: tokens / statistics.median(times[n]) for n in attention_engines}
                attention["per_round_fast_over_eager"] = per_round_ratio(
                    times, "minibert-fast+attn", "transformers-eager+attn"
                )
                results["attention_rates"][f"{workload}@{threads}"] = attention
            fast = rate.get("minibert-fast")
            row = [workload, str(tokens)] + [fmt_rate(rate.get(n)) for n in ENGINES if n in engines]
            row += [
                fmt_ratio(fast, rate.get("transformers")),
                fmt_ratio(fast, rate.get("onnxruntime")),
                fmt_ratio(fast, rate.get("minibert-plain")),
            ]
            print("| " + " | ".join(row) + " |", flush=True)
            if "sgemm" in times:
                gflops = contenders["sgemm"].flops / statistics.median(times["sgemm"]) / 1e9
                per_token = flops_per_token(config, 128)
                ceiling = gflops * 1e9 / per_token
                results["ceiling"] = {"gflops": gflops, "flops_per_token": per_token, "tok_s": ceiling}
                results["ceiling"]["fast_percent"] = None if fast is None else 100 * fast / ceiling
        if attention_rows:
            print_attention_table(attention_rows, attention_engines, threads)
    if "ceiling" in results:
        c = results["ceiling"]
        pct = "-" if c["fast_percent"] is None else f"{c['fast_percent']:.0f}%"
        print(
            f"\nsgemm ceiling (1 thread, the encoder's matrix products on 4096 tokens): {c['gflops']:.1f}"
            " GFLOP/s;"
            f" {c['flops_per_token'] / 1e6:.1f} MFLOP/token at 128 tokens -> {c['tok_s']:,.0f} tok/s;"
            f" minibert fast on 32x128 reaches {pct} of it"
        )

    if not args.no_memory and "8x512" in args.workloads:
        probes = [n for n in ("transformers", "minibert-plain", "minibert-fast") if n in engines]
        probes += [n for n in ("transformers-eager+attn", "minibert-fast+attn") if n in attention_engines]
        memory = measure_memory(probes, model_dir)
        results["memory"] = memory
        method = next((m["method"] for m in memory.values() if "method" in m), "")
        print(f"\npeak memory of one forward pass on 8x512 ({method}; 1 thread; all hidden states kept;")
        print(" +attn: every layer's (8, 12, 512, 512) attention maps kept too, 576 MiB of float32):")
        for name, m in memory.items():
            if "extra_bytes" in m:
                print(f"  {name:23s} {m['extra_bytes'] / 2**20:8.1f} MiB")
            else:
                print(f"  {name:23s} failed: {m['error']}")
    if not args.no_memory:
        cold = measure_extract(model_dir, with_transformers="transformers" in engines)
        results["extract_memory"] = cold
        print("\npeak RSS of a cold one-text extract (/usr/bin/time -v, Maximum resident set size):")
        for name, m in cold.items():
            if "max_rss_bytes" in m:
                print(f"  {name:23s} {m['max_rss_bytes'] / 2**20:8.1f} MiB")
            else:
                print(f"  {name:23s} failed: {m['error']}")

    if family_names:
        family_args = (family_names, args.family_layers, model_dir, thread_counts, args.runs)
        results["families"] = run_families(*family_args)

    print("\ntargets (issues 5 and 12):")
    for line in targets(results):
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    tmp.cleanup()
    return 0


def per_round_ratio(times: dict[str, list[float]], a: str, b: str) -> list[float] | None:
    """a's speed over b's in each round (the rounds interleave them)."""
    if a not in times or b not in times:
        return None
    return [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]


def print_attention_table(rows, attention_engines: dict, threads: int) -> None:
    """The with-attentions rows of one thread count: tokens/s per engine,
    fast over eager from the medians, and the quartiles of the per-round ratio."""
    plural = "s" if threads > 1 else ""
    print(f"\n### with attentions (every hidden state and every layer's maps), {threads} thread{plural}\n")
    names = list(attention_engines)
    header = ["workload", "tokens", *names, "fast/eager", "fast/eager per round [quartiles]"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for workload, tokens, times in rows:
        rate = {n: tokens / statistics.median(times[n]) for n in names}
        fast, eager = rate.get("minibert-fast+attn"), rate.get("transformers-eager+attn")
        ratios = per_round_ratio(times, "minibert-fast+attn", "transformers-eager+attn")
        spread = "-"
        if ratios and len(ratios) >= 4:
            q = statistics.quantiles(ratios, n=4)
            spread = f"{statistics.median(ratios):.2f}x [{q[0]:.2f}, {q[2]:.2f}]"
        row = [workload, str(tokens), *(fmt_rate(rate[n]) for n in names), fmt_ratio(fast, eager), spread]
        print("| " + " | ".join(row) + " |", flush=True)


def targets(results: dict) -> list[str]:
    """The issues' targets (5: speed and memory without attentions; 12: with
    attentions, and the cold extract's peak), each marked met or missed from this run."""
    out = []
    rates = results["rates"]

    def ratio(key, other):
        r = rates.get(key, {})
        return None if other not in r or "minibert-fast" not in r else r["minibert-fast"] / r[other]

    def mark(ok: bool | None) -> str:
        return "n/a " if ok is None else ("met " if ok else "MISSED")

    def check(ok, text):
        return f"{mark(ok)} {text}"

    for key in sorted(rates):
        workload, threads = key.split("@")
        t, o = ratio(key, "transformers"), ratio(key, "onnxruntime")
        if workload == "short":
            out.append(f"{mark(None if t is None else t >= 2.0)} {key}: fast >= 2x transformers ({fmt_x(t)})")
            out.append(f"     {key}: fast / ONNX Runtime = {fmt_x(o)} (printed, no target)")
        else:
            ok_t = None if t is None else t >= 1.2
            ok_o = None if o is None else o >= 1.0
            out.append(check(ok_t, f"{key}: fast >= 1.2x transformers ({fmt_x(t)})"))
            out.append(check(ok_o, f"{key}: fast >= 1.0x ONNX Runtime ({fmt_x(o)})"))
    c = results.get("ceiling")
    if c and c["fast_percent"] is not None:
        out.append(f"{mark(c['fast_percent'] >= 75)} >= 75% of the sgemm ceiling ({c['fast_percent']:.0f}%)")
    mem = results.get("memory", {})
    if "extra_bytes" in mem.get("minibert-fast", {}) and "extra_bytes" in mem.get("transformers", {}):
        ok = mem["minibert-fast"]["extra_bytes"] <= mem["transformers"]["extra_bytes"]
        out.append(f"{mark(ok)} peak memory on 8x512: minibert fast <= transformers")
    for key, r in sorted(results.get("attention_rates", {}).items()):
        fast, eager = r.get("minibert-fast+attn"), r.get("transformers-eager+attn")
        x = None if fast is None or eager is None else fast / eager
        ok = None if x is None else x >= 1.0
        out.append(check(ok, f"{key} with attentions: fast >= 1.0x eager ({fmt_x(x)})"))
    fa, ea = mem.get("minibert-fast+attn", {}), mem.get("transformers-eager+attn", {})
    if "extra_bytes" in fa and "extra_bytes" in ea:
        f, e = fa["extra_bytes"] / 2**20, ea["extra_bytes"] / 2**20
        text = f"peak memory on 8x512 with attentions: fast <= eager ({f:.0f} vs {e:.0f} MiB)"
        out.append(check(f <= e, text))
    cold = results.get("extract_memory", {})
    if "max_rss_bytes" in cold.get("minibert", {}):
        m = cold["minibert"]["max_rss_bytes"] / 2**20
        t = cold.get("transformers", {}).get("max_rss_bytes")
        vs = "" if t is None else f"; transformers {t / 2**20:.0f} MiB"
        out.append(check(m <= 170, f"cold one-text minibert extract peak RSS <= 170 MiB ({m:.0f} MiB{vs})"))
    return out


def fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
