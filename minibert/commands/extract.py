"""``minibert extract``: embeddings from all (or chosen) layers of a corpus."""

from __future__ import annotations

import argparse
import sys

from .. import load
from ..errors import MinibertError
from ..extract import LONG_MODES, extract
from ..inputs import read_items
from ..output import Settings, check_output_path, open_writer
from ..pooling import COMBINES, POOLS, select_layers
from ..progress import Progress
from ..words import HOWS
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
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)  # fail before the model loads
    if args.stride is not None and args.long != "window":
        raise MinibertError("--stride applies to --long window only")
    if args.word_pool != "none" and args.pool != "none":
        raise MinibertError(
            f"--word-pool gives one vector per word: it cannot be combined with --pool {args.pool}"
        )
    model = load(args.model, args.dtype)
    layers = select_layers(args.layers, model.num_layers + 1)
    if args.max_length is not None and args.max_length > model.max_length:
        raise MinibertError(f"--max-length {args.max_length} exceeds the model's limit {model.max_length}")
    items = list(read_items(args.input))
    settings = Settings(
        layers, args.pool, args.combine, args.dtype, str(model.path),
        extra={"num_hidden_layers": model.num_layers, "max_length": args.max_length,
               "long": args.long, "stride": args.stride},
        word_pool=args.word_pool,
    )  # fmt: skip
    writer = open_writer(args.output, settings)
    progress = Progress(len(items), enabled=False if args.quiet else None)
    limit = args.max_length or model.max_length
    truncated, windowed = [], 0
    batches = extract(
        model, items, layers, args.pool, args.combine, args.max_length, args.batch_size,
        args.word_pool, args.long, args.stride,
    )  # fmt: skip
    for records in batches:
        writer.add(records)
        truncated += [(r.index, r.num_tokens, len(r.tokens)) for r in records if r.num_tokens > len(r.tokens)]
        windowed += sum(r.num_tokens > limit for r in records) if args.long == "window" else 0
        progress.update(len(records))
    progress.close()
    writer.close()
    if truncated:  # never silent, even with --quiet
        print(truncation_summary(truncated, len(items), limit), file=sys.stderr)
    if windowed and not args.quiet:
        print(f"minibert: {windowed} of {len(items)} texts were longer than {limit} tokens and read in "
              "overlapping windows; none was truncated", file=sys.stderr)  # fmt: skip
    if not args.quiet:
        print(f"minibert: wrote {len(items)} texts, layers {layers}, to {args.output}", file=sys.stderr)
    return 0


def truncation_summary(truncated: list[tuple[int, int, int]], total: int, limit: int, show: int = 5) -> str:
    """Which texts lost tokens, and how many: (index, original, kept) each."""
    truncated = sorted(truncated)
    head = ", ".join(f"text {i}: {n} -> {k}" for i, n, k in truncated[:show])
    more = f", ... ({len(truncated) - show} more)" if len(truncated) > show else ""
    return (
        f"minibert: {len(truncated)} of {total} texts were truncated to {limit} tokens ({head}{more}); "
        "every text's counts are in the output (num_tokens, kept_tokens); --long window keeps every token"
    )
