"""``minibert extract``: embeddings from all (or chosen) layers of a corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import load
from ..errors import MinibertError
from ..extract import CHUNK_SIZE, LONG_MODES, FeatureSpec, extract_chunk
from ..inputs import chunk_digest, chunked, count_items, read_items
from ..output import (
    OUTPUT_DTYPES,
    Settings,
    check_output_path,
    is_sharded,
    open_writer,
    refuse_overwriting,
)
from ..pooling import COMBINES, POOLS, select_layers
from ..progress import Progress
from ..shards import ShardedWriter, model_digests
from ..words import HOWS
from .common import add_model_args, add_threads_arg, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="write every layer's embeddings of a corpus to .npz / .safetensors / .jsonl or shards",
        description="INPUT: a UTF-8 text file, one text per line; '-' for stdin; or .jsonl with "
        "a 'text' (and optional 'text_pair') field per line. OUTPUT: a .npz, .safetensors or "
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


def run(args: argparse.Namespace) -> int:
    sharded = is_sharded(args.output)
    if sharded:
        ShardedWriter.check(args.output, args.resume)  # fail before the model loads
    else:
        check_output_path(args.output)
        for flag, given in (("--resume", args.resume), ("--engine dask", args.engine == "dask")):
            if given:
                raise MinibertError(f"{flag} needs a directory OUTPUT (sharded), not {args.output}")
    if args.input != "-":
        refuse_overwriting(args.output, [args.input], sharded, "the input")
    if args.scheduler is not None and args.engine != "dask":
        raise MinibertError("--scheduler is for --engine dask")
    if args.workers is not None and (args.engine != "dask" or args.scheduler is not None):
        raise MinibertError("--workers is for --engine dask without --scheduler (a local cluster)")
    if args.threads is not None and args.engine == "dask":
        raise MinibertError("--threads is for the local engine (Dask workers share each host's cores)")
    if args.stride is not None and args.long != "window":
        raise MinibertError("--stride applies to --long window only")
    if args.word_pool != "none" and args.pool not in ("none", "auto"):
        raise MinibertError(
            f"--word-pool gives one vector per word: it cannot be combined with --pool {args.pool}"
        )
    model = load(args.model, args.dtype)
    refuse_overwriting(args.output, model.files, sharded, "a file of the model")
    model.threads = args.threads
    args.pool, args.max_length = resolve_pool(model, args)
    if args.normalize and args.pool == "none":
        raise MinibertError("--normalize L2-normalises pooled vectors: give --pool cls, mean or max")
    layers = select_layers(args.layers, model.num_layers + 1)
    if args.max_length is not None and args.max_length > model.max_length:
        raise MinibertError(f"--max-length {args.max_length} exceeds the model's limit {model.max_length}")
    settings = Settings(
        layers, args.pool, args.combine, args.dtype, str(Path(model.path).absolute()),
        extra={
            "num_hidden_layers": model.num_layers, "max_length": args.max_length,
            "long": args.long, "stride": args.stride, "normalize": args.normalize,
            "batch_size": args.batch_size, "shard_size": args.shard_size,
            "model_files": model_digests(model),
        },
        word_pool=args.word_pool, output_dtype=args.output_dtype,
    )  # fmt: skip
    features = FeatureSpec(
        layers, args.pool, args.combine, args.max_length, args.word_pool, args.long, args.stride,
        args.normalize, args.batch_size,
    )  # fmt: skip
    progress = Progress(count_items(args.input), enabled=False if args.quiet else None)
    limit = args.max_length or model.max_length
    counts = TokenCounts(limit)
    if sharded:
        with ShardedWriter(
            args.output, settings, resume=args.resume
        ) as sink:  # removed if no shard gets written
            todo = PendingChunks(read_items(args.input), args.shard_size, sink, progress)
            if args.engine == "dask":
                from ..distributed import extract_shards

                entries = extract_shards(todo, model.path, args.dtype, settings, args.output, features,
                                         scheduler=args.scheduler, workers=args.workers)  # fmt: skip
                for entry in entries:
                    sink.record(entry)
                    progress.update(entry["count"])
            else:
                for k, chunk, digest in todo:
                    sink.add(k, extract_chunk(model, chunk, features, on_batch=progress.update), digest)
            num_texts = todo.num_texts
            sink.close(num_texts)
        counts.add_shards(sink, windows=args.long == "window" and not args.quiet)
    else:
        writer = open_writer(args.output, settings)
        num_texts = 0
        for chunk in chunked(read_items(args.input), args.shard_size):
            records = extract_chunk(model, chunk, features, on_batch=progress.update)
            writer.add(records)
            num_texts += len(records)
            counts.add(np.array([r.index for r in records]), np.array([r.num_tokens for r in records]),
                       np.array([len(r.tokens) for r in records]))  # fmt: skip
        writer.close()
    progress.close()
    if counts.truncated:  # never silent, even with --quiet
        print(truncation_summary(counts.first, counts.truncated, num_texts, limit), file=sys.stderr)
    if args.long == "window" and counts.windowed and not args.quiet:
        print(f"minibert: {counts.windowed} of {num_texts} texts were longer than {limit} tokens and read in "
              "overlapping windows; none was truncated", file=sys.stderr)  # fmt: skip
    if not args.quiet:
        rate = f" ({progress.rate():,.1f} texts/s)" if progress.done > progress.skipped else ""
        print(f"minibert: wrote {num_texts} texts, layers {layers}, to {args.output}{rate}", file=sys.stderr)
    return 0


def resolve_pool(model, args: argparse.Namespace) -> tuple[str, int | None]:
    """``--pool auto`` -> the model's own sentence-transformers pooling and
    its max_seq_length (unless --max-length is given), or none. When the
    model's modules.json has a Normalize module, ``--pool auto`` also sets
    ``args.normalize``, as sentence-transformers' ``encode`` normalises."""
    if args.pool != "auto":
        return args.pool, args.max_length
    sentence = model.sentence
    if args.word_pool != "none" or sentence is None or sentence.pooling is None:
        return "none", args.max_length
    if sentence.pooling not in POOLS:
        raise MinibertError(
            f"{model.path}: the model pools with {sentence.pooling!r}, which minibert does not "
            "implement; give --pool none, cls, mean or max"
        )
    if sentence.other_modules:
        print(
            f"minibert: note: {model.path} also runs {', '.join(sentence.other_modules)} after pooling; "
            "minibert's pooled vectors stop before it",
            file=sys.stderr,
        )
    args.normalize = args.normalize or sentence.normalize
    max_length = args.max_length
    if max_length is None and sentence.max_seq_length:
        max_length = min(sentence.max_seq_length, model.max_length)
    return sentence.pooling, max_length


def truncation_summary(
    first: list[tuple[int, int, int]], count: int, total: int, limit: int, show: int = 5
) -> str:
    """Which texts lost tokens, and how many: ``first`` holds (index,
    original, kept) of the first truncated texts, ``count`` how many there are."""
    first = sorted(first)
    head = ", ".join(f"text {i}: {n} -> {k}" for i, n, k in first[:show])
    more = f", ... ({count - show} more)" if count > show else ""
    return (
        f"minibert: {count} of {total} texts were truncated to {limit} tokens ({head}{more}); "
        "every text's counts are in the output (num_tokens, kept_tokens); --long window keeps every token"
    )


class TokenCounts:
    """Texts truncated (a count, and the first few, for the summary) and texts
    longer than ``limit`` (read in windows): constant memory, however many."""

    SHOW = 5

    def __init__(self, limit: int):
        self.limit = limit
        self.truncated = 0
        self.windowed = 0
        self.first: list[tuple[int, int, int]] = []

    def add(self, index: np.ndarray, num_tokens: np.ndarray, kept_tokens: np.ndarray) -> None:
        cut = np.flatnonzero(num_tokens > kept_tokens)
        self.truncated += len(cut)
        self.windowed += int(np.sum(num_tokens > self.limit))
        for j in cut[: self.SHOW - len(self.first)]:  # texts come in index order
            self.first.append((int(index[j]), int(num_tokens[j]), int(kept_tokens[j])))

    def add_shards(self, sink: ShardedWriter, windows: bool) -> None:
        """From the shards' own arrays: those of a resumed or Dask run were not
        computed here. Opens only shards with truncated texts, or every shard
        when ``windows`` (the count of windowed texts) is asked for."""
        from ..output import SafetensorsOutput

        for k in sorted(sink.entries):
            entry = sink.entries[k]
            if not entry["truncated"] and not windows:
                continue
            with SafetensorsOutput(sink.path / entry["file"]) as shard:
                a = shard.arrays
                self.add(a["index"], a["num_tokens"], a["kept_tokens"])


class PendingChunks:
    """The chunks a sharded run still has to compute: ``(k, chunk, digest)``,
    read lazily; finished ones (a resumed run) are checked and skipped.
    ``num_texts`` counts every text read so far."""

    def __init__(self, items, shard_size: int, sink: ShardedWriter, progress: Progress):
        self._chunks = enumerate(chunked(items, shard_size))
        self.sink = sink
        self.progress = progress
        self.num_texts = 0

    def __iter__(self):
        for k, chunk in self._chunks:
            self.num_texts += len(chunk)
            digest = chunk_digest(chunk)
            if self.sink.done(k, digest):
                self.progress.skip(len(chunk))
                continue
            yield k, chunk, digest
