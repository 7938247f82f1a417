"""``minibert extract``: embeddings from all (or chosen) layers of a corpus."""

from __future__ import annotations

import argparse
import sys

from .. import load
from ..errors import MinibertError
from ..extract import extract
from ..inputs import read_items
from ..output import Settings, check_output_path, open_writer
from ..pooling import COMBINES, POOLS, select_layers
from ..progress import Progress
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
        help="write every layer's embeddings of a corpus to .npz / .safetensors / .jsonl",
        description="INPUT: a UTF-8 text file, one text per line; '-' for stdin; or .jsonl with "
        "a 'text' (and optional 'text_pair') field per line.",
    )
    add_model_args(p)
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output file: .npz, .safetensors or .jsonl")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)  # fail before the model loads
    model = load(args.model, args.dtype)
    layers = select_layers(args.layers, model.config.num_hidden_layers + 1)
    if args.max_length is not None and args.max_length > model.max_length:
        raise MinibertError(f"--max-length {args.max_length} exceeds the model's limit {model.max_length}")
    items = list(read_items(args.input))
    settings = Settings(
        layers, args.pool, args.combine, args.dtype, str(model.path),
        extra={"num_hidden_layers": model.config.num_hidden_layers, "max_length": args.max_length},
    )  # fmt: skip
    writer = open_writer(args.output, settings)
    progress = Progress(len(items), enabled=False if args.quiet else None)
    truncated = 0
    for records in extract(model, items, layers, args.pool, args.combine, args.max_length, args.batch_size):
        writer.add(records)
        truncated += sum(r.num_tokens > len(r.tokens) for r in records)
        progress.update(len(records))
    progress.close()
    writer.close()
    if truncated:  # never silent, even with --quiet
        limit = args.max_length or model.max_length
        print(
            f"minibert: {truncated} of {len(items)} texts were truncated to {limit} tokens", file=sys.stderr
        )
    if not args.quiet:
        print(f"minibert: wrote {len(items)} texts, layers {layers}, to {args.output}", file=sys.stderr)
    return 0
