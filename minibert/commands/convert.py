"""``minibert convert DIR -o OUT_DIR``: the model with safetensors weights and no pickle left."""

from __future__ import annotations

import argparse
import sys

from minibert.errors import printable
from minibert.loading.convert import convert


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="write a copy of a model with its weights as model.safetensors (no pickle)",
        description="Reads the model's weights (pytorch_model.bin, zip or legacy, read without torch and "
        "without running the pickle; or shards; or model.safetensors) and writes OUT_DIR: "
        "model.safetensors with every tensor in its stored dtype, checked bit for bit, plus every other "
        "file of the model except pickles. OUT_DIR must not exist yet; it appears whole or not at all.",
    )
    p.add_argument("model", metavar="DIR", help="a model directory, a name in weights/, or a cached repo id")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="the new model directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    done = convert(args.model, args.output)
    for path, source in done.written:
        print(printable(f"minibert: wrote {path} from {source}"), file=sys.stderr)
    print(printable(f"minibert: copied {len(done.copied)} other files to {args.output}"), file=sys.stderr)
    if done.skipped:
        names = printable(", ".join(p.name for p in done.skipped))
        print(f"minibert: not copied (pickles, which would run code when loaded): {names}", file=sys.stderr)
    return 0
