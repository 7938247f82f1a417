"""``minibert view``: one self-contained HTML page of a text's forward pass,
every formula with its numbers and explain's float64 checks (see minibert/teaching/view.py)."""

from __future__ import annotations

import argparse

from minibert import load
from minibert.commands.common import add_model_args, text_arg
from minibert.errors import printable


def add_parser(sub) -> None:
    p = sub.add_parser(
        "view",
        help="write one HTML page of a forward pass: attention views, every formula with its numbers",
        description="Write an HTML page (one file, no network, opens from disk) of TEXT through the "
        "encoder: tokens and embeddings, bertviz-style head and model views, every formula of a chosen "
        "layer, head and token with its shapes, numbers and float64 check, and per-layer plots.",
    )
    add_model_args(p)
    p.add_argument("text", metavar="TEXT", type=text_arg, help="the text to show")
    p.add_argument(
        "--pair",
        metavar="PAIR",
        type=text_arg,
        default=None,
        help="a second text (sentence B) after TEXT; the attention views filter A->A, A->B, B->A, B->B",
    )
    p.add_argument("-o", "--output", required=True, help="the page to write: a file ending in .html")
    p.add_argument("--layer", type=int, default=1, help="layer to open, 1..L or -1 for the last (default 1)")
    p.add_argument("--head", type=int, default=0, help="head to open, 0..h-1 (default 0)")
    p.add_argument(
        "--token",
        default=None,
        help="token to open: a position (0 is [CLS]) or a token string (default: the first word)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minibert.files import check_target, model_sources, write_atomic
    from minibert.teaching.view import check_page_path, view

    path = check_page_path(args.output)
    model = load(args.model, args.dtype)
    check_target(path, model_sources(model))
    page = view(model, args.text, args.layer, args.head, args.token, pair=args.pair, prefix="--")
    data = page.encode("utf-8")
    write_atomic(path, lambda f: f.write(data))
    print(f"wrote {printable(str(path))} ({len(data) / 1e6:.2f} MB): open it in a browser")
    return 0
