"""CLI subcommands. Each module has ``add_parser(subparsers)``; its parser's
``func(args)`` does the work and returns the exit status.

To add a subcommand: write a module here and append its ``add_parser`` to
REGISTRY (one line).
"""

from minibert.commands import (
    check_article,
    convert,
    explain,
    extract,
    inspect,
    plot,
    probe,
    similarity,
    summary,
    verify,
    view,
)  # fmt: skip

REGISTRY = [
    extract.add_parser,
    summary.add_parser,
    inspect.add_parser,
    verify.add_parser,
    explain.add_parser,
    check_article.add_parser,
    plot.add_parser,
    convert.add_parser,
    view.add_parser,
    probe.add_parser,
    similarity.add_parser,
]
