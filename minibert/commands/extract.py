"""``minibert extract``: embeddings from all (or chosen) layers of a corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import load
from ..errors import MinibertError
from ..extract import CHUNK_SIZE, extract_chunk
from ..inputs import chunk_digest, chunked, count_items, read_items
from ..output import OUTPUT_DTYPES, Settings, check_output_path, is_sharded, open_writer
from ..pooling import COMBINES, POOLS, select_layers
from ..progress import Progress
from ..shards import ShardedWriter, model_digest
from .common import add_model_args


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


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
    p.add_argument("--pool", default="none", choices=POOLS, help="token pooling per text (default: none)")
    p.add_argument("--combine", default="none", choices=COMBINES, help="reduce the selected layers")
    p.add_argument("--max-length", type=positive_int, default=None, help="truncate (special tokens included)")
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
    if args.scheduler is not None and args.engine != "dask":
        raise MinibertError("--scheduler is for --engine dask")
    if args.workers is not None and (args.engine != "dask" or args.scheduler is not None):
        raise MinibertError("--workers is for --engine dask without --scheduler (a local cluster)")
    model = load(args.model, args.dtype)
    layers = select_layers(args.layers, model.config.num_hidden_layers + 1)
    if args.max_length is not None and args.max_length > model.max_length:
        raise MinibertError(f"--max-length {args.max_length} exceeds the model's limit {model.max_length}")
    settings = Settings(
        layers, args.pool, args.combine, args.dtype, str(Path(model.path).absolute()),
        extra={
            "num_hidden_layers": model.config.num_hidden_layers, "max_length": args.max_length,
            "batch_size": args.batch_size, "shard_size": args.shard_size,
            "model_sha256": model_digest(model.path),
        },
        output_dtype=args.output_dtype,
    )  # fmt: skip
    features = dict(layers=layers, pool_how=args.pool, combine_how=args.combine,
                    max_length=args.max_length, batch_size=args.batch_size)  # fmt: skip
    progress = Progress(count_items(args.input), enabled=False if args.quiet else None)
    if sharded:
        sink = ShardedWriter(args.output, settings, resume=args.resume)
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
                sink.add(k, extract_chunk(model, chunk, **features, on_batch=progress.update), digest)
        num_texts = todo.num_texts
        sink.close(num_texts)
        truncated = sum(e["truncated"] for e in sink.entries.values())
    else:
        writer = open_writer(args.output, settings)
        num_texts = truncated = 0
        for chunk in chunked(read_items(args.input), args.shard_size):
            records = extract_chunk(model, chunk, **features, on_batch=progress.update)
            writer.add(records)
            num_texts += len(records)
            truncated += sum(r.num_tokens > len(r.tokens) for r in records)
        writer.close()
    progress.close()
    if truncated:  # never silent, even with --quiet
        limit = args.max_length or model.max_length
        print(f"minibert: {truncated} of {num_texts} texts were truncated to {limit} tokens", file=sys.stderr)
    if not args.quiet:
        rate = f" ({progress.rate():,.1f} texts/s)" if progress.done > progress.skipped else ""
        print(f"minibert: wrote {num_texts} texts, layers {layers}, to {args.output}{rate}", file=sys.stderr)
    return 0


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
