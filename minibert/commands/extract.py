"""``minibert extract``: embeddings from all (or chosen) layers of a corpus.

The arguments become an :class:`~minibert.outputs.spec.ExtractSpec` and an
:class:`~minibert.corpus.driver.Engine`; :func:`minibert.corpus.driver.extract_to` does
the work; this module prints what it returns. A field named in an error is
shown as the option that sets it (``stride`` -> ``--stride``).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from minibert.commands.common import add_model_args, add_threads_arg, positive_int
from minibert.corpus.driver import Engine, ExtractSummary, MapSize, check_output, extract_to
from minibert.corpus.inputs import count_items, read_items
from minibert.corpus.progress import Progress
from minibert.errors import MinibertError, printable
from minibert.features.pooling import COMBINES, POOLS
from minibert.features.words import HOWS
from minibert.model import load
from minibert.outputs.spec import CHUNK_SIZE, LONG_MODES, OUTPUT_DTYPES, ExtractSpec, OptionError, PoolingNote


def add_parser(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="write every layer's embeddings of a corpus to .npz / .safetensors / .jsonl or shards",
        description="INPUT: a UTF-8 text file, one text per line; '-' for stdin; or .jsonl with "
        "a 'text' (and optional 'text_pair') field per line; a pipe or FIFO works too, a device does "
        "not. A line may hold at most 256 MiB (docs/corpus.md). OUTPUT: a .npz, .safetensors or "
        ".jsonl file (held in memory until written), or a directory of shards -- when OUTPUT "
        "ends with '/', is a directory, or has no extension -- written as it goes, at constant "
        "memory, resumable with --resume.",
    )
    add_model_args(p)
    p.add_argument("input", metavar="INPUT")
    p.add_argument(
        "-o", "--output", required=True, help="output: .npz, .safetensors or .jsonl file, or a directory/"
    )
    p.add_argument(
        "--layers",
        default="all",
        help="hidden_states indices: all (default), a list like -4,-3,-2,-1, or a slice like 0:7 "
        "(0 = embeddings, i = output of layer i)",
    )
    p.add_argument(
        "--pool",
        default="auto",
        choices=("auto", *POOLS),
        help="token pooling per text; auto (default): the model's own sentence-transformers pooling "
        "(1_Pooling/config.json, truncating to its max_seq_length) when it has one, else none",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="L2-normalise each pooled vector (sentence-transformers' Normalize module)",
    )
    p.add_argument("--combine", default="none", choices=COMBINES, help="reduce the selected layers")
    p.add_argument(
        "--word-pool",
        default="none",
        choices=("none", *HOWS),
        help="one vector per word from its subword tokens: first, last, mean, or first_last "
        "(concatenated); rows are words, with their strings and character spans (default: none)",
    )
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="truncate to N tokens (special tokens included); with --long window, the window size "
        "(default: the model's limit)",
    )
    p.add_argument(
        "--long",
        default="truncate",
        choices=LONG_MODES,
        help="texts past the limit: truncate (default), or window: overlapping windows stitched "
        "back, each token from the window where it has the most context",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="with --long window: tokens from one window's start to the next (default: half a window)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=CHUNK_SIZE,
        help=f"texts per shard, and per chunk read and length-sorted at a time (default {CHUNK_SIZE}); "
        "memory holds one chunk's features",
    )
    p.add_argument(
        "--output-dtype",
        default=None,
        choices=OUTPUT_DTYPES,
        help="dtype stored on disk (default: the compute --dtype); float16 halves float32's size",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--attentions",
        dest="attentions",
        action="store_const",
        const="maps",
        default="none",
        help="also write the attention maps: per text and selected encoder layer (--layers; layer 0, the "
        "embeddings, has none), the (heads, n, n) probabilities over its n real tokens, read back with "
        "open_output(OUTPUT).attentions(text, layer). The size is QUADRATIC in the text length: heads x n^2 "
        "values per text and layer, e.g. all-MiniLM-L6-v2 at 128 tokens, 6 layers, float32: 4.5 MiB per "
        "text (4.5 GiB per 1000 texts, and a chunk is held in memory: lower --shard-size); --output-dtype "
        "float16 halves it. The projected size is printed before a large run. Not with --long window",
    )
    what.add_argument(
        "--attention-stats",
        dest="attentions",
        action="store_const",
        const="stats",
        help="instead of maps, per text, selected encoder layer and head: entropy, attention to [CLS], "
        "[SEP], punctuation, the previous and next token and itself, and the mean attention distance "
        "(Clark et al. 2019; docs/attention-analysis.md): 8 numbers per head, whatever the length",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into the same OUTPUT directory (same input and settings)",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=("local", "dask"),
        help="local (default): this process; dask: partitions of --shard-size texts on Dask workers "
        "(needs the [dask] extra and a directory OUTPUT)",
    )
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler (default: a local cluster)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes of the local Dask cluster (default: one per core)",
    )
    add_threads_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


#: The options that are ExtractSpec.for_model's arguments of the same name.
SPEC_OPTIONS = ("pool", "combine", "word_pool", "long", "stride", "max_length", "normalize", "batch_size",
                "shard_size", "output_dtype", "attentions")  # fmt: skip

#: Spec fields set by options of another name.
FLAGS = {"attentions": "--attentions/--attention-stats"}

#: Above this many bytes of attention maps written, or NOTE_MEMORY_BYTES held in memory at once (one
#: chunk of a directory OUTPUT, all of a single file), extract says so on stderr before it computes.
NOTE_BYTES = 1 << 30
NOTE_MEMORY_BYTES = 256 << 20


def flag(field: str) -> str:
    """The option that sets a spec or engine field: ``max_length`` -> ``--max-length``."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    try:
        summary = extract(args)
    except OptionError as e:
        raise MinibertError(e.named(flag)) from None
    report(summary, args)
    return 0


def extract(args: argparse.Namespace) -> ExtractSummary:
    engine = Engine(args.engine, args.threads, args.scheduler, args.workers)
    sources = [args.input]  # "-": the file on stdin, if it is one
    check_output(args.output, args.resume, engine, sources)  # fail before the model loads
    model = load(args.model, args.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoolingNote)
        spec = ExtractSpec.for_model(
            model,
            layers=args.layers,
            **{k: getattr(args, k) for k in SPEC_OPTIONS},
        )
    for w in caught:
        if issubclass(w.category, PoolingNote):
            print(f"minibert: note: {printable(str(w.message))}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    total = count_items(args.input)
    progress = Progress(total, enabled=False if args.quiet else None)
    return extract_to(model, read_items(args.input), spec, args.output, resume=args.resume, engine=engine,
                      progress=progress, sources=sources, num_texts=total, on_size=size_note)  # fmt: skip


def size_note(size: MapSize) -> None:
    """Say on stderr (never in the output) how large the attention maps will
    be, when they pass :data:`NOTE_BYTES` written or :data:`NOTE_MEMORY_BYTES`
    in memory. Printed even with --quiet, like truncation."""
    held = size.chunk if size.sharded else (size.total or size.chunk)
    if (size.total or 0) <= NOTE_BYTES and held <= NOTE_MEMORY_BYTES:
        return
    counted = f"the token counts of the first {size.counted} texts"
    if size.total is None:
        total = f"~{_mib(size.chunk)} per {size.counted} texts (the input cannot be counted first)"
    elif size.exact:
        total = f"{_mib(size.total)} for {size.num_texts} texts"
    else:
        total = f"~{_mib(size.total)} for {size.num_texts} texts (projected from {counted})"
    memory = (
        f"each chunk of up to {size.counted} texts holds ~{_mib(size.chunk)} in memory until it is written"
        if size.sharded
        else "a single-file OUTPUT holds all of it in memory until the end (a directory holds one chunk)"
    )
    print(
        f"minibert: note: --attentions will write {total}; {memory}; heads x n^2 values per text and layer: "
        "--attention-stats, --output-dtype float16, fewer --layers or a lower --shard-size need less",
        file=sys.stderr,
    )


def _mib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def report(summary: ExtractSummary, args: argparse.Namespace) -> None:
    """Truncation (never silent, even with --quiet), windows, and what was written."""
    if summary.truncated:
        print(truncation_summary(summary), file=sys.stderr)
    if summary.windowed and not args.quiet:
        print(f"minibert: {summary.windowed} of {summary.num_texts} texts were longer than {summary.limit} "
              "tokens and read in overlapping windows; none was truncated", file=sys.stderr)  # fmt: skip
    if not args.quiet:
        rate = f" ({summary.rate:,.1f} texts/s)" if summary.rate is not None else ""
        layers = list(summary.layers)
        print(
            f"minibert: wrote {summary.num_texts} texts, layers {layers}, to {printable(args.output)}{rate}",
            file=sys.stderr,
        )


def truncation_summary(summary: ExtractSummary, show: int = 5) -> str:
    """Which texts lost tokens, and how many."""
    first, count = sorted(summary.first_truncated), summary.truncated
    head = ", ".join(f"text {i}: {n} -> {k}" for i, n, k in first[:show])
    more = f", ... ({count - show} more)" if count > show else ""
    return (
        f"minibert: {count} of {summary.num_texts} texts were truncated to {summary.limit} tokens "
        f"({head}{more}); every text's counts are in the output (num_tokens, kept_tokens); "
        "--long window keeps every token"
    )
