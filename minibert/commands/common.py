"""Arguments and helpers shared by subcommands."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--dtype``, for every subcommand that loads a model."""
    p.add_argument(
        "--model",
        default=None,
        help="a model directory (config.json, model.safetensors, tokenizer.json or vocab.txt), the name "
        "of one in weights/, or a Hugging Face repo id already in the local Hugging Face cache "
        "(never downloaded); default: weights/all-MiniLM-L6-v2",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="compute dtype")


def threads_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads, got {value!r}")
    return int(value)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads``: CPU threads for the forward pass (see docs/performance.md)."""
    p.add_argument(
        "--threads",
        type=threads_count,
        default=None,
        help="CPU threads for the forward pass (default: NumPy's BLAS default). With several "
        "processes on one machine, give each cores / processes: more threads than cores is slow",
    )
