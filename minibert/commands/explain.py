"""``minibert explain``: one text through the network, step by step, each
step checked by an independent float64 recomputation (see minibert/teaching/explain.py)."""

from __future__ import annotations

import argparse
import os
import sys

from minibert import load
from minibert.commands.common import add_model_args, int_in, text_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="walk one text through the encoder, formula by formula, checking each step",
        description="Walk TEXT through the encoder: tokens, embeddings, then every formula of one "
        "encoder layer with shapes, a slice of the numbers and a float64 check of each step.",
    )
    add_model_args(p)
    p.add_argument("text", metavar="TEXT", type=text_arg, help="the text to explain")
    p.add_argument(
        "--pair", metavar="PAIR", type=text_arg, default=None, help="a second text (sentence B) after TEXT"
    )
    p.add_argument("--layer", type=int, default=1, help="encoder layer 1..L, or -1 for the last (default 1)")
    p.add_argument("--head", type=int, default=0, help="attention head 0..h-1 to show (default 0)")
    p.add_argument(
        "--token",
        default=None,
        help="token position (0 is [CLS]) or a token string (default: the first word)",
    )
    p.add_argument(
        "--pad",
        type=int_in(0, what="a count of [PAD] positions"),
        default=None,
        help="[PAD] positions to append, to show the mask (default 2, or as many as fit; at most the "
        "model's positions minus the text's tokens)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minibert.teaching.explain import explain, render

    model = load(args.model, args.dtype)
    result = explain(
        model, args.text, args.layer, args.head, args.token, args.pad, pair=args.pair, prefix="--"
    )
    print(render(result, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return 0 if result.ok else 1
