"""``minibert similarity``: linear CKA between layers (and between two models),
anisotropy, self-similarity and intra-sentence similarity per layer (docs/probing.md)."""

from __future__ import annotations

import argparse

from minibert.analysis.similarity import similarity
from minibert.commands.common import add_model_args, int_in
from minibert.commands.probe import report
from minibert.files import check_target
from minibert.model import load


def add_parser(sub) -> None:
    p = sub.add_parser("similarity", help="CKA between layers and how contextual each layer's words are")
    p.add_argument(
        "data", metavar="DATA", help="CoNLL-U, .jsonl (tokens), or a .txt file, one sentence a line"
    )
    add_model_args(p)
    p.add_argument("--against", default=None, metavar="MODEL", help="also CKA against every layer of MODEL")
    p.add_argument("--word-pool", default="mean", choices=("mean", "first", "last"))
    p.add_argument("--layers", default=None, help="layers (default all: 0 = embeddings)")
    p.add_argument("--seed", type=int_in(0, what="a seed"), default=0, help="anisotropy's random pairs")
    p.add_argument("--json", default=None, metavar="OUT.json")
    p.add_argument("--figure", default=None, metavar="OUT.png", help="CKA heatmap and the per-layer cosines")
    p.set_defaults(func=run)


def table(record: dict) -> str:
    layers = record["layers"]
    lines = [f"{'layer':>5} {'anisotropy':>10} {'self-sim':>9} {'intra-sent':>10}   CKA with layers {layers}"]
    for k, l in enumerate(layers):
        cka = " ".join(f"{v:.3f}" for v in record["cka"][k])
        lines.append(
            f"{l:>5} {record['anisotropy'][k]:10.4f} {record['self_similarity'][k]:9.4f} "
            f"{record['intra_sentence'][k]:10.4f}   {cka}"
        )
    if "against" in record:
        lines.append(f"CKA against {record['against']['model']} (rows: this model's layers):")
        lines += ["  " + " ".join(f"{v:.3f}" for v in row) for row in record["against"]["cka"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out = None if args.json is None else check_target(args.json, [(args.data, "the input")])
    fig_path = None
    if args.figure is not None:
        from minibert.teaching.plot import check_figure_path, require_matplotlib

        require_matplotlib()
        fig_path = check_figure_path(args.figure)
    model = load(args.model, args.dtype)
    record = similarity(args.data, model, args.word_pool, args.layers, args.seed, args.against)
    from minibert.teaching.probe_plot import similarity_figure

    return report(record, table(record), out, fig_path, similarity_figure)
