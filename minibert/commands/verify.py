"""``minibert verify``: recompute a reference file's texts (by default the default
model's committed reference) and print, per layer, the max abs difference and min
cosine; exit 1 when out of tolerance."""

from __future__ import annotations

import argparse

from minibert import load
from minibert.commands.common import add_model_args
from minibert.errors import MinibertError


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="compare every layer with a reference .npz")
    add_model_args(p)
    p.add_argument(
        "--reference",
        help="reference .npz (see tests/reference/); default: the committed reference of the default model "
        "(tests/reference/all-MiniLM-L6-v2-DTYPE.npz), so required with --model",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minibert.teaching.verify import compare, default_reference, format_report

    if args.reference is None and args.model is not None:
        raise MinibertError("--reference is required with --model (the committed one is the default model's)")
    reference = args.reference if args.reference is not None else default_reference(args.dtype)
    model = load(args.model, args.dtype)
    report = compare(model, reference)
    print(format_report(report))
    return 0 if report.ok else 1
