"""``minibert probe``: a linear probe per layer, with baselines, a control task
and a scalar mix (docs/probing.md)."""

from __future__ import annotations

import argparse
import json

from minibert.analysis.probe import CS, FOLDS, SEED, print_warning, probe
from minibert.commands.common import add_model_args, int_in, positive_int
from minibert.errors import MinibertError
from minibert.files import check_target, write_atomic
from minibert.model import load


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="which layer knows a task: a linear probe per layer (CoNLL-U or .jsonl)")
    p.add_argument(
        "train", metavar="TRAIN", help="training sentences: CoNLL-U, or .jsonl with tokens + labels"
    )
    p.add_argument("--test", required=True, metavar="TEST", help="test sentences, same format")
    p.add_argument(
        "--task",
        default="upos",
        help="the CoNLL-U column to predict: upos, xpos, deprel (before ':'), any column name "
        "or number 2-10; ignored for .jsonl (its labels)",
    )
    add_model_args(p)
    p.add_argument(
        "--word-pool",
        default="mean",
        choices=("mean", "first", "last"),
        help="a word's vector from its pieces",
    )
    p.add_argument("--layers", default=None, help="layers to probe (default all: 0 = embeddings)")
    p.add_argument("--seed", type=int_in(0, what="a seed"), default=SEED, help="folds and control task")
    p.add_argument("--folds", type=int_in(2, 100, "a number of folds"), default=FOLDS)
    p.add_argument("--C", dest="Cs", default=",".join(map(str, CS)), help="the C grid, comma-separated")
    p.add_argument("--no-mix", action="store_true", help="skip the scalar mix")
    p.add_argument("--threads", type=positive_int, default=1, help="layers probed at once")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write every number and the protocol")
    p.add_argument("--figure", default=None, metavar="OUT.png", help="accuracy, selectivity, mix weights")
    p.set_defaults(func=run)


def parse_grid(text: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",")]
    except ValueError:
        raise MinibertError(f"--C: expected comma-separated numbers, got {text[:40]!r}") from None


def table(record: dict) -> str:
    """The terminal table: one row per layer, the baselines and the mix."""
    lines = [
        f"task {record['task']}: {record['protocol']['train_words']} training words, "
        f"{record['protocol']['test_words']} test words, {len(record['labels'])} labels",
        f"{'layer':>5} {'accuracy':>9} {'macro-F1':>9} {'control':>8} {'selectivity':>11} {'C':>7}",
    ]
    for r in record["layers"]:
        lines.append(
            f"{r['layer']:>5} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} {r['control_accuracy']:8.4f} "
            f"{r['selectivity']:11.4f} {r['C']:7g}"
        )
    b = record["baselines"]
    lines.append(f"baselines: majority {b['majority']:.4f}, type-level {b['type_level']:.4f}")
    mix = record.get("scalar_mix")
    if mix:
        weights = " ".join(f"{w:.3f}" for w in mix["weights"])
        lines.append(
            f"scalar mix: accuracy {mix['accuracy']:.4f}, weights {weights}, "
            f"centre of gravity {mix['center_of_gravity']:.2f}"
        )
    return "\n".join(lines)


def write_json(path, record: dict) -> None:
    data = (json.dumps(record, indent=1) + "\n").encode("utf-8")
    write_atomic(path, lambda f: f.write(data))


def report(record: dict, text: str, out, fig_path, figure) -> int:
    """Print a probe's or similarity's table, write its JSON to ``out`` and its
    ``figure(record)`` to ``fig_path`` (each when not None): both commands end here."""
    print(text)
    if out is not None:
        write_json(out, record)
    if fig_path is not None:
        from minibert.teaching.plot import save

        save(figure(record), fig_path)
    return 0


def run(args: argparse.Namespace) -> int:
    Cs = parse_grid(args.Cs)
    sources = [(args.train, "the training set"), (args.test, "the test set")]
    out = None if args.json is None else check_target(args.json, sources)
    fig_path = None
    if args.figure is not None:
        from minibert.teaching.plot import check_figure_path, require_matplotlib

        require_matplotlib()
        fig_path = check_figure_path(args.figure)
    model = load(args.model, args.dtype)
    record = probe(
        args.train,
        args.test,
        args.task,
        model,
        args.word_pool,
        args.layers,
        args.seed,
        args.folds,
        Cs,
        not args.no_mix,
        args.threads,
        warn=print_warning,
    )
    from minibert.teaching.probe_plot import probe_figure

    return report(record, table(record), out, fig_path, probe_figure)
