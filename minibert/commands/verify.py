"""``minibert verify``: recompute a reference file's texts and print, per
layer, the max abs difference and min cosine; exit 1 when out of tolerance."""

from __future__ import annotations

import argparse

from minibert import load
from minibert.commands.common import add_model_args


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="compare every layer with a reference .npz")
    add_model_args(p)
    p.add_argument("--reference", required=True, help="reference .npz (see tests/reference/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minibert.teaching.verify import compare, format_report

    model = load(args.model, args.dtype)
    report = compare(model, args.reference)
    print(format_report(report))
    return 0 if report.ok else 1
