"""``minibert check-article``: recompute every number of the article's worked
example (section 4.3, summarised in docs/article.md) with minibert's formula functions; print
the article's value, the correct value and whether they agree (see minibert/teaching/article.py)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check-article",
        help="recompute the article's worked attention example and show where it is wrong",
        description="Recompute every number of section 4.3 of the article (W x for Q, K, V; Q K^T; "
        "the scaling; softmax; output) with minibert.encoder.ops and print the article's value, the correct "
        "value and whether they agree. docs/article.md summarises the article and its example.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minibert.teaching.article import report

    print(report())
    return 0
