"""``minibert plot attention|layers|heads``: pictures, with the ``[plot]`` extra
(matplotlib). The figures are built in minibert/teaching/plot.py."""

from __future__ import annotations

import argparse

from minibert import load
from minibert.commands.common import MAX_COUNT, add_model_args, int_in, text_arg
from minibert.errors import printable

#: Random pairs behind the anisotropy: 10^6 pairs already pin it to ~1e-3, and hold 64 MB of indices.
MAX_PAIRS = 10**6


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw attention heatmaps or per-layer statistics (needs matplotlib)")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    a = kinds.add_parser("attention", help="attention probabilities of one layer, one head or all heads")
    add_model_args(a)
    a.add_argument("text", metavar="TEXT", type=text_arg)
    a.add_argument("--layer", type=int, default=1, help="encoder layer 1..L, or -1 for the last (default 1)")
    a.add_argument("--head", type=int, default=None, help="one head 0..h-1 (default: a grid of all heads)")
    a.add_argument("-o", "--output", required=True, help="figure file: .png, .svg or .pdf")
    a.set_defaults(func=run_attention)

    lay = kinds.add_parser("layers", help="per layer: mean norm, anisotropy, self-similarity")
    add_model_args(lay)
    lay.add_argument("input", metavar="INPUT", help="texts: one per line, '-' for stdin, or .jsonl")
    lay.add_argument("-o", "--output", required=True, help="figure file: .png, .svg or .pdf")
    lay.add_argument(
        "--pairs",
        type=int_in(1, MAX_PAIRS, "a positive number of pairs"),
        default=5000,
        help="random cross-text token pairs (default 5000)",
    )
    lay.add_argument(
        "--seed", type=int_in(0, MAX_COUNT, "a non-negative seed"), default=0, help="seed of the random pairs"
    )
    lay.set_defaults(func=run_layers)

    hd = kinds.add_parser(
        "heads", help="per layer and head: the attention statistics of an extract --attention-stats output"
    )
    hd.add_argument(
        "source",
        metavar="OUTPUT",
        help="what minibert extract --attention-stats wrote: a file or a directory",
    )
    hd.add_argument("-o", "--output", required=True, help="figure file: .png, .svg or .pdf")
    hd.set_defaults(func=run_heads)


def run_attention(args: argparse.Namespace) -> int:
    from minibert.files import check_target, model_sources
    from minibert.teaching.plot import attention, check_figure_path, require_matplotlib, save

    require_matplotlib()
    check_figure_path(args.output)
    model = load(args.model, args.dtype)
    check_target(args.output, model_sources(model))
    save(attention(model, args.text, args.layer, args.head, prefix="--"), args.output)
    print(f"wrote {printable(args.output)}")
    return 0


def run_layers(args: argparse.Namespace) -> int:
    from minibert.corpus.inputs import read_items
    from minibert.files import check_target, model_sources
    from minibert.teaching.plot import (
        check_figure_path,
        layer_statistics,
        layers_figure,
        layers_table,
        require_matplotlib,
        save,
    )

    require_matplotlib()
    check_figure_path(args.output)
    check_target(args.output, [(args.input, "the input")])  # "-": the file on stdin, if it is one
    model = load(args.model, args.dtype)
    check_target(args.output, model_sources(model))
    texts = [item.text for item in read_items(args.input)]
    stats = layer_statistics(model, texts, num_pairs=args.pairs, seed=args.seed)
    save(layers_figure(stats), args.output)
    print(layers_table(stats))
    print(f"wrote {printable(args.output)}")
    return 0


def run_heads(args: argparse.Namespace) -> int:
    from minibert.files import check_target
    from minibert.outputs.output import open_output
    from minibert.teaching.plot import check_figure_path, head_means, heads_figure, require_matplotlib, save

    require_matplotlib()
    check_figure_path(args.output)
    check_target(args.output, [(args.source, "the extract output")])
    with open_output(args.source) as out:
        stats = head_means(out)
    save(heads_figure(stats), args.output)
    layers = ", ".join(map(str, stats.layers))
    print(f"wrote {printable(args.output)} (means over {stats.texts} texts, layers {layers})")
    return 0
