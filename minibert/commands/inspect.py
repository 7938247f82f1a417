"""``minibert inspect``: which weights file was read and its format, config
(and what was assumed for keys it lacks), parameters per part, tensor names
and shapes, tensors the encoder ignores."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from minibert import load
from minibert.commands.common import add_model_args
from minibert.loading.weights import num_parameters


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a model's config, parameters and tensors")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load(args.model, args.dtype)
    print(f"model: {model.path}")
    weights = model.weights
    print(f"weights: {weights.files[0]} ({weights.format})")
    print("config:")
    for key, value in asdict(model.config).items():
        if key != "notes":
            print(f"  {key:<26} {value}")
    for note in model.config.notes:
        print(f"note: {note}")
    layer_map = model.weights.layer_map
    if layer_map != tuple(range(len(layer_map))):  # ALBERT: shared layers
        print("layer sharing: " + ", ".join(f"step {i + 1} runs layer.{k}" for i, k in enumerate(layer_map)))
    counts = num_parameters(model.weights)
    print("parameters:")
    for part, n in counts.items():
        print(f"  {part:<26} {n:>12,}")
    print("tensors (checkpoint name -> slot, checkpoint shape, stored dtype):")
    shapes = model.weights.checkpoint_shapes
    for slot, name in model.weights.names.items():
        print(f"  {name:<58} {slot:<22} {str(shapes[name]):<14} {model.weights.source_dtypes.get(name, '?')}")
    ignored = model.weights.ignored
    print(f"ignored tensors (not part of the encoder): {len(ignored)}")
    for name in ignored:
        print(f"  {name:<58} {str(shapes.get(name, '')):<14} {model.weights.source_dtypes.get(name, '?')}")
    return 0
