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
