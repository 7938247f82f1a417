"""Arguments and helpers shared by subcommands."""

from __future__ import annotations

import argparse

from minibert.model import DTYPES

#: The largest count any option takes: beyond it a value is a typo, and some
#: (--shard-size) reach C code that cannot hold it.
MAX_COUNT = 2**31 - 1

#: More threads than this is never faster, and a huge count could start as many.
MAX_THREADS = 1024


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--dtype``, for every subcommand that loads a model."""
    p.add_argument(
        "--model",
        default=None,
        help="a model directory (config.json, model.safetensors, tokenizer.json or vocab.txt), the name "
        "of one in weights/, or a Hugging Face repo id already in the local Hugging Face cache "
        "(never downloaded); default: weights/all-MiniLM-L6-v2",
    )
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="compute dtype")


def int_in(low: int, high: int = MAX_COUNT, what: str = "an integer"):
    """An argparse type: an integer from ``low`` to ``high``, else a usage
    error saying which range (never an exception from C code later)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value[:40]!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"expected {what} from {low} to {high}, got {value[:40]}")
        return n

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = int_in(1, what="a positive integer")
threads_count = int_in(1, MAX_THREADS, what="a positive number of threads")


def text_arg(value: str) -> str:
    """An argparse type for a TEXT given on the command line: bytes that are
    not UTF-8 reach Python as lone surrogates, which no tokenizer takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = ord(value[e.start])  # surrogateescape: bytes 0x80..0xff became U+DC80..U+DCFF
        what = f"byte {ch - 0xDC00:#04x}" if 0xDC80 <= ch <= 0xDCFF else f"lone surrogate U+{ch:04X}"
        raise argparse.ArgumentTypeError(f"not valid UTF-8 ({what} at character {e.start + 1})") from None
    return value


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads``: CPU threads for the forward pass (see docs/performance.md)."""
    p.add_argument(
        "--threads",
        type=threads_count,
        default=None,
        help="CPU threads for the forward pass (default: NumPy's BLAS default). With several "
        "processes on one machine, give each cores / processes: more threads than cores is slow",
    )
