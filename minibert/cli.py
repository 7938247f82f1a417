"""The ``minibert`` command line: one subcommand per module, registered below.

Each subcommand module exposes ``add_parser(subparsers)`` (which sets
``func`` on its parser) and does its own work; this file only dispatches.
Bad input ends with one line, ``minibert: error: ...``, and exit status 2;
no traceback -- argparse's usage errors too. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading

from minibert.errors import MinibertError, printable


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line like every other error
    (``minibert: error: extract: argument --pairs: ...``) and a pointer to
    ``--help`` instead of the usage block. Subcommand parsers are made of
    this class too (argparse uses the parent's class)."""

    def error(self, message: str):
        command = self.prog.removeprefix("minibert").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"minibert: error: {one_line(where + message)} (see: {self.prog} --help)\n")


def one_line(message: str) -> str:
    """A message as one line, whatever a file name or a value holds: no
    newline, and no control character a terminal would obey (ESC, CSI, a
    bidi override), each escaped as repr does (:func:`minibert.errors.printable`)."""
    return printable(message)


def build_parser() -> argparse.ArgumentParser:
    from minibert import commands

    parser = Parser(
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


def ignore_file_size_signal() -> None:
    """Past a file-size limit (``ulimit -f``) the kernel sends SIGXFSZ, whose
    default action kills the process with no message. Ignored, the write
    fails with EFBIG instead, which the writers report as one line ("file
    too large") after removing their temporary file: the earlier output stays."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    ignore_file_size_signal()
    try:
        return int(args.func(args) or 0)
    except MinibertError as e:
        print(f"minibert: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minibert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
