"""The ``minibert`` command line: one subcommand per module, registered below.

Each subcommand module exposes ``add_parser(subparsers)`` (which sets
``func`` on its parser) and does its own work; this file only dispatches.
Bad input ends with one line, ``minibert: error: ...``, and exit status 2;
no traceback. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import re
import sys

from .errors import MinibertError


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="minibert",
        description="A pure-NumPy BERT encoder that records every layer.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in commands.REGISTRY:
        add_parser(sub)
    return parser


def join_negative_values(argv: list[str]) -> list[str]:
    """``--layers -4,-3`` -> ``--layers=-4,-3``: argparse would take a value
    that starts with '-' and is not a plain number for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"-\d", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    try:
        return int(args.func(args) or 0)
    except MinibertError as e:
        print(f"minibert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minibert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
