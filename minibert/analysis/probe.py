"""``minibert probe``: which layer knows a task, by a linear probe per layer.

For every layer l = 0 (embeddings) .. L, on the word vectors of a training
and a test set (:mod:`minibert.analysis.vectors`, features standardised on
the training set):

- a linear probe (:mod:`minibert.analysis.logreg`), its C chosen by k-fold
  cross-validation on the training set (Liu et al. 2019); accuracy and
  macro-F1 on the test set;
- a control task (Hewitt & Liang 2019): every word type gets a random label
  drawn from the task's training label distribution (seeded), the same for
  all its occurrences; the same probe (the C chosen for the task) learns it.
  Selectivity = accuracy - control accuracy: how much of the accuracy needs
  the layer to know the task, not just to tell word types apart;
- a scalar mix (Tenney et al. 2019) over all the layers: softmax weights s_l
  and a scale gamma, learned with the probe; centre of gravity sum_l l s_l.

Beside them, two baselines that need no model: the majority label, and each
word form's most frequent training label (unknown forms: the majority label).
Test labels never seen in training are counted as errors (no probe can
predict them) and reported.
"""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from minibert.analysis import logreg
from minibert.analysis.conllu import Sentence, read_sentences, source_name
from minibert.analysis.vectors import word_vectors
from minibert.errors import MinibertError
from minibert.model import Model, load

#: The C grid (scikit-learn's C: larger is a weaker penalty), the folds and the seed by default.
CS = (0.001, 0.01, 0.1)
FOLDS = 3
SEED = 0


def majority_baseline(train: list[str], test: list[str]) -> float:
    """Accuracy of always answering the most frequent training label."""
    top = Counter(train).most_common(1)[0][0]
    return float(np.mean([t == top for t in test]))


def type_level_predictions(train_words, train_labels, test_words) -> list[str]:
    """Each test word's form's most frequent training label (ties: the label
    more frequent overall, then the first by name); unknown forms: the majority label."""
    overall = Counter(train_labels)
    by_form: dict[str, Counter] = {}
    for w, t in zip(train_words, train_labels, strict=True):
        by_form.setdefault(w, Counter())[t] += 1
    top = min(overall, key=lambda t: (-overall[t], t))
    best = {w: min(c, key=lambda t: (-c[t], -overall[t], t)) for w, c in by_form.items()}
    return [best.get(w, top) for w in test_words]


def control_labels(forms: list[str], train_labels: list[str], seed: int) -> dict[str, str]:
    """Hewitt & Liang's control task: each word type (sorted, so the draw does
    not depend on file order) gets a label drawn from the training labels'
    distribution with a seeded generator."""
    counts = Counter(train_labels)
    labels = sorted(counts)
    p = np.array([counts[t] for t in labels], dtype=np.float64)
    types = sorted(set(forms))
    draw = np.random.default_rng(seed).choice(len(labels), size=len(types), p=p / p.sum())
    return {w: labels[k] for w, k in zip(types, draw.tolist(), strict=True)}


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the labels in gold or predicted (scikit-learn's
    ``f1_score(average="macro")``); a label never predicted and never gold is not counted."""
    labels = np.union1d(gold, pred)
    scores = []
    for k in labels:
        tp = np.sum((pred == k) & (gold == k))
        denom = np.sum(pred == k) + np.sum(gold == k)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def _encode(labels: list[str], classes: list[str]) -> np.ndarray:
    """Labels -> indices into ``classes``; an unseen label -> -1 (never predicted)."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(t, -1) for t in labels], dtype=np.int64)


def _flat(sentences: list[Sentence], keep: np.ndarray, field: str) -> list:
    values = [v for s in sentences for v in getattr(s, field)]
    return [v for v, k in zip(values, keep.tolist(), strict=True) if k]


def _probe_layers(Xtr, Xte, layers, y, yc, gold, gold_c, K, Cs, folds, seed, pmap) -> list[dict]:
    """Every layer's row: the k folds of every layer's CV for C, then every
    layer's probe and control probe at its C, each unit run by ``pmap`` (the
    units are independent, so the bits do not depend on who runs them)."""
    fold = logreg.folds_of(len(y), folds, seed)
    units = [(i, j) for i in range(len(layers)) for j in range(folds)]
    scores = list(pmap(lambda u: logreg.fold_scores(Xtr[u[0]], y, K, Cs, fold, u[1]), units))
    cvs = [sum(scores[i * folds : (i + 1) * folds]) / folds for i in range(len(layers))]
    Cbest = [float(Cs[int(np.argmax(cv))]) for cv in cvs]  # ties: the first in the grid

    def fit(u):
        i, labels = u
        return logreg.fit(Xtr[i], labels, K, Cbest[i])

    fits = list(pmap(fit, [(i, labels) for i in range(len(layers)) for labels in (y, yc)]))
    rows = []
    for i, l in enumerate(layers):
        task, ctrl = fits[2 * i], fits[2 * i + 1]
        pred = logreg.predict(Xte[i], task.W, task.b)
        acc = float(np.mean(pred == gold))
        cacc = float(np.mean(logreg.predict(Xte[i], ctrl.W, ctrl.b) == gold_c))
        rows.append(
            {
                "layer": int(l),
                "accuracy": acc,
                "macro_f1": macro_f1(gold, pred),
                "control_accuracy": cacc,
                "selectivity": acc - cacc,
                "C": Cbest[i],
                "cv_accuracy": [float(v) for v in cvs[i]],
                "iterations": task.iterations,
                "converged": task.converged and ctrl.converged,
            }
        )
    return rows


def _standardize_in_place(vectors: np.ndarray, stats) -> np.ndarray:
    """(x - mean) / std per layer, written over ``vectors`` (L', N, H) (no
    second copy of every layer's vectors), in their dtype."""
    for v, (m, s) in zip(vectors, stats, strict=True):
        v -= m.astype(v.dtype)
        v /= s.astype(v.dtype)
    return vectors


def _read(path, task, what) -> list[Sentence]:
    """A path's labelled sentences, or a list of already read ones (e.g. a slice of a file's)."""
    if isinstance(path, (str, Path)):
        return read_sentences(path, task)
    if isinstance(path, list) and path and all(isinstance(s, Sentence) and s.labels for s in path):
        return path
    raise MinibertError(
        f"{what} must be a path to a CoNLL-U or .jsonl file or a non-empty list of labelled "
        f"Sentence (minibert.analysis.conllu), got {type(path).__name__}"
    )


def probe(
    train,
    test,
    task: str = "upos",
    model: Model | str | Path | None = None,
    word_pool: str = "mean",
    layers=None,
    seed: int = SEED,
    folds: int = FOLDS,
    Cs=CS,
    mix: bool = True,
    threads: int = 1,
    warn=None,
) -> dict:
    """The probes of every layer of ``model`` on ``task``: the record
    ``minibert probe --json`` writes (see docs/probing.md)."""
    import time

    t0 = time.perf_counter()
    model = model if isinstance(model, Model) else load(model)
    Cs = _check_protocol(folds, Cs)
    tr, te = _read(train, task, "train"), _read(test, task, "test")
    wtr, wte = word_vectors(model, tr, word_pool, layers), word_vectors(model, te, word_pool, layers)
    t_vectors = time.perf_counter() - t0
    ytr_s, yte_s = _flat(tr, wtr.keep, "labels"), _flat(te, wte.keep, "labels")
    ftr, fte = _flat(tr, wtr.keep, "words"), _flat(te, wte.keep, "words")
    classes = sorted(set(ytr_s))
    if len(classes) < 2:
        raise MinibertError(
            f"{source_name(train)}: the training set has {len(classes)} label(s); a probe needs 2 or more"
        )
    y, gold = _encode(ytr_s, classes), _encode(yte_s, classes)
    unseen = _unseen(te, wte.keep, classes, source_name(test), warn)
    ctl = control_labels(ftr + fte, ytr_s, seed)
    yc, gold_c = _encode([ctl[w] for w in ftr], classes), _encode([ctl[w] for w in fte], classes)
    stats = [logreg.standardize(v) for v in wtr.vectors]
    Xtr, Xte = _standardize_in_place(wtr.vectors, stats), _standardize_in_place(wte.vectors, stats)
    K = len(classes)
    with _threads(threads) as pmap:
        rows = _probe_layers(Xtr, Xte, wtr.layers, y, yc, gold, gold_c, K, Cs, folds, seed, pmap)
        mixed = _mix(Xtr, Xte, y, gold, K, rows, wtr.layers, pmap) if mix else None
    record = {
        "task": task,
        "model": str(model.path),
        "word_pool": word_pool,
        "labels": classes,
        "layers": rows,
        "baselines": {
            "majority": majority_baseline(ytr_s, yte_s),
            "type_level": float(
                np.mean(np.array(type_level_predictions(ftr, ytr_s, fte)) == np.array(yte_s))
            ),
        },
    }
    if mixed is not None:
        record["scalar_mix"] = mixed
    record["protocol"] = {
        "train": source_name(train),
        "test": source_name(test),
        "seed": seed,
        "folds": folds,
        "C_grid": Cs,
        "C_convention": "scikit-learn: C * sum of cross-entropies + 1/2 ||W||^2 (bias not penalised)",
        "standardised_on": "train",
        "gtol": logreg.GTOL,
        "dtype": str(model.dtype),
        "train_sentences": len(tr),
        "test_sentences": len(te),
        "train_words": int(len(y)),
        "test_words": int(len(gold)),
        "windowed_sentences": wtr.windowed + wte.windowed,
        "truncated_sentences": 0,
        "words_without_pieces": wtr.dropped + wte.dropped,
        "unseen_test_labels": unseen,
        "control_seed": seed,
        "seconds": {"vectors": round(t_vectors, 2), "total": round(time.perf_counter() - t0, 2)},
    }
    return record


def _check_protocol(folds, Cs) -> list[float]:
    """``folds`` an integer of at least 2 and ``Cs`` positive numbers (returned as floats)."""
    if not isinstance(folds, int) or folds < 2:
        raise MinibertError(f"folds must be an integer of at least 2, got {folds!r}")
    Cs = [float(c) for c in Cs]
    if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
        raise MinibertError(f"Cs must be positive numbers, got {Cs!r}")
    return Cs


def _unseen(te, keep, classes, path, warn) -> dict[str, int]:
    """Test labels never seen in training, with their counts; the first is reported by ``warn``."""
    known, counts, first = set(classes), Counter(), None
    words = [(s, i) for s in te for i in range(len(s.words))]
    for (s, i), k in zip(words, keep.tolist(), strict=True):
        if k and s.labels[i] not in known:
            counts[s.labels[i]] += 1
            first = first or (s.lines[i], s.labels[i])
    if counts and warn is not None:
        warn(
            f"{path}: line {first[0]}: label {first[1]!r} never occurs in training: "
            f"{sum(counts.values())} test words of {len(counts)} unseen label(s) count as errors"
        )
    return dict(sorted(counts.items()))


@contextmanager
def _threads(threads: int):
    """A map over ``threads`` threads, each with a one-thread BLAS (with
    threadpoolctl; every product is blocked, so the bits are the same
    whichever thread runs a unit); the plain map on one thread or without threadpoolctl."""
    try:
        from minibert.encoder.threads import blas_limit

        limit = blas_limit(1) if threads > 1 else None
    except ImportError:
        limit = None
    if limit is None:
        yield map
        return
    with limit, ThreadPoolExecutor(threads) as pool:
        yield pool.map


def _mix(Xtr, Xte, y, gold, K, rows, layers, pmap) -> dict:
    """The scalar mix at the C of the layer with the best cross-validated accuracy."""
    best = max(rows, key=lambda r: max(r["cv_accuracy"]))
    m = logreg.fit_mix(Xtr, y, K, best["C"], pmap)
    pred = logreg.predict(logreg.mix(Xte, m.weights, m.gamma), m.W, m.b)
    w = [float(v) for v in m.weights]
    return {
        "weights": w,
        "scale": m.gamma,
        "center_of_gravity": float(np.dot(layers, w)),
        "accuracy": float(np.mean(pred == gold)),
        "macro_f1": macro_f1(gold, pred),
        "C": m.C,
        "iterations": m.iterations,
        "converged": m.converged,
    }


def print_warning(message: str) -> None:
    print(f"minibert: warning: {message}", file=sys.stderr)
