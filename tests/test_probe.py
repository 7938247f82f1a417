"""The probe of issue 22: its logistic regression against scikit-learn (an
independent implementation), its gradients by finite differences, CKA against
its definition and invariances, word alignment on tricky CoNLL-U, malformed
input, and the same numbers at any thread count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert.analysis import logreg
from minibert.analysis.conllu import read_conllu
from minibert.analysis.probe import control_labels, macro_f1, type_level_predictions
from minibert.analysis.similarity import cka_matrix, linear_cka, self_similarity
from minibert.analysis.vectors import piece_words, spans_of, word_vectors
from tests.fuzz_helpers import assert_one_line_error, run

ROOT = Path(__file__).resolve().parent.parent
EWT = ROOT / "examples" / "ud-english-ewt"
DEV, TEST = EWT / "en_ewt-ud-dev-first150.conllu", EWT / "en_ewt-ud-test-first150.conllu"


def blobs(n=600, H=12, K=4, seed=0):
    """Overlapping Gaussian classes: a problem where C matters."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    X = rng.standard_normal((K, H))[y] * 0.8 + rng.standard_normal((n, H))
    return X, y


@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
def test_logistic_regression_agrees_with_scikit_learn(C, monkeypatch):
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = blobs()
    Xt, yt = blobs(seed=1)
    ours = logreg.fit(X, y, 4, C)
    ref = sklearn.LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(X, y)
    acc = np.mean(logreg.predict(Xt, ours.W, ours.b) == yt)
    assert abs(acc - ref.score(Xt, yt)) <= 0.005, (acc, ref.score(Xt, yt))
    # the same minimiser: sklearn's coef_ is (K, H); both L-BFGS runs stop on scipy's relative decrease
    # of J (ftol) before a tight gtol, observed max difference 4e-4 at C=1; J is the same to 1e-8
    monkeypatch.setattr(logreg, "GTOL", 1e-10)
    ours = logreg.fit(X, y, 4, C)
    np.testing.assert_allclose(ours.W.T, ref.coef_, atol=1e-3, rtol=0, err_msg=f"C={C}")
    alpha = 1 / (C * len(y))
    J_ours = logreg.objective(ours.W, ours.b, X, y, alpha)[0]
    J_ref = logreg.objective(ref.coef_.T, ref.intercept_, X, y, alpha)[0]
    assert J_ours <= J_ref * (1 + 1e-7), (J_ours, J_ref)  # observed: equal to 1e-8 relative
    # sklearn's probabilities sum-to-one parametrisation leaves b free up to a constant: compare centred
    np.testing.assert_allclose(
        ours.b - ours.b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=3e-3
    )  # observed 1e-3: the bias is the flattest direction of J


def test_probe_on_real_words_agrees_with_scikit_learn(real_model):
    sklearn = pytest.importorskip("sklearn.linear_model")
    sents = read_conllu(DEV)[:60]
    wv = word_vectors(real_model, sents, "mean", [3])
    labels = [t for s in sents for t in s.labels]
    classes = sorted(set(labels))
    y = np.array([classes.index(t) for t in labels])
    mean, std = logreg.standardize(wv.vectors[0])
    X = (wv.vectors[0] - mean) / std
    tr, te = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    ours = logreg.fit(X[tr], y[tr], len(classes), 0.1)
    ref = sklearn.LogisticRegression(C=0.1, max_iter=10_000).fit(X[tr], y[tr])
    acc = np.mean(logreg.predict(X[te], ours.W, ours.b) == y[te])
    assert abs(acc - ref.score(X[te], y[te])) <= 0.005, (acc, ref.score(X[te], y[te]))


def test_gradient_by_finite_differences():
    X, y = blobs(n=50, H=5, K=3)
    rng = np.random.default_rng(2)
    W, b, alpha = rng.standard_normal((5, 3)), rng.standard_normal(3), 0.3
    _, gW, gb, _ = logreg.objective(W, b, X, y, alpha)
    eps = 1e-6
    for idx in np.ndindex(W.shape):
        d = np.zeros_like(W)
        d[idx] = eps
        num = (logreg.objective(W + d, b, X, y, alpha)[0] - logreg.objective(W - d, b, X, y, alpha)[0]) / (
            2 * eps
        )
        assert abs(num - gW[idx]) < 1e-7, idx
    for k in range(3):
        d = np.zeros(3)
        d[k] = eps
        num = (logreg.objective(W, b + d, X, y, alpha)[0] - logreg.objective(W, b - d, X, y, alpha)[0]) / (
            2 * eps
        )
        assert abs(num - gb[k]) < 1e-7, k


def test_scalar_mix_gradient_by_finite_differences():
    rng = np.random.default_rng(3)
    Xs = rng.standard_normal((3, 40, 4))
    y = rng.integers(0, 3, 40)
    a, gamma, W, b, alpha = (
        rng.standard_normal(3),
        1.3,
        rng.standard_normal((4, 3)),
        rng.standard_normal(3),
        0.2,
    )

    def J(a, gamma, W, b):
        return logreg.mix_objective(a, gamma, W, b, Xs, y, alpha)[0]

    _, ga, gg, gW, gb = logreg.mix_objective(a, gamma, W, b, Xs, y, alpha)
    eps = 1e-6
    for k in range(3):
        d = np.zeros(3)
        d[k] = eps
        assert abs((J(a + d, gamma, W, b) - J(a - d, gamma, W, b)) / (2 * eps) - ga[k]) < 1e-7
    assert abs((J(a, gamma + eps, W, b) - J(a, gamma - eps, W, b)) / (2 * eps) - gg) < 1e-7
    d = np.zeros_like(W)
    d[2, 1] = eps
    assert abs((J(a, gamma, W + d, b) - J(a, gamma, W - d, b)) / (2 * eps) - gW[2, 1]) < 1e-7


def test_scalar_mix_by_row_blocks_equals_the_per_layer_formula():
    # mix_objective sums its terms over blocks of MIX_ROWS words with dJ/dc_l = <X_l, (P - Y) W^T / n>;
    # the reference is the per-layer form, T_l = X_l^T (P - Y) / n, dJ/dW = gamma sum_l s_l T_l + alpha W,
    # dJ/ds_l = gamma <T_l, W>, on all n words at once, in float64
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    L, n, H, K = 3, 2 * logreg.MIX_ROWS + 77, 6, 4
    Xs = rng.standard_normal((L, n, H))
    y = rng.integers(0, K, n)
    a, gamma, W, b, alpha = (
        rng.standard_normal(L),
        1.3,
        rng.standard_normal((H, K)),
        rng.standard_normal(K),
        0.02,
    )
    s = np.exp(a) / np.exp(a).sum()
    Z = gamma * sum(s_l * X_l for s_l, X_l in zip(s, Xs, strict=True)) @ W + b
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    J = -np.mean(np.log(P[np.arange(n), y])) + 0.5 * alpha * (np.sum(W * W) + gamma**2)
    P[np.arange(n), y] -= 1
    T = [X_l.T @ P / n for X_l in Xs]
    gs = gamma * np.array([np.sum(T_l * W) for T_l in T])
    want = (
        J,
        s * (gs - s @ gs),
        s @ gs / gamma + alpha * gamma,
        gamma * sum(s_l * T_l for s_l, T_l in zip(s, T, strict=True)) + alpha * W,
        P.sum(0) / n,
    )
    got = logreg.mix_objective(a, gamma, W, b, Xs, y, alpha)
    for name, g, w in zip(("J", "da", "dgamma", "dW", "db"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=name)  # observed 2e-15
    with ThreadPoolExecutor(2) as pool:  # blocks run by two threads: the same bits
        threaded = logreg.mix_objective(a, gamma, W, b, Xs, y, alpha, pool.map)
    for g, t in zip(got, threaded, strict=True):
        np.testing.assert_array_equal(g, t)


def test_macro_f1_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    gold, pred = rng.integers(0, 6, 300), rng.integers(0, 5, 300)
    pred[:100] = gold[:100]
    assert macro_f1(gold, pred) == pytest.approx(metrics.f1_score(gold, pred, average="macro"), abs=1e-12)


def test_baselines_and_control_task():
    words, labels = ["a", "b", "a", "a", "c"], ["X", "Y", "Y", "X", "Y"]
    assert type_level_predictions(words, labels, ["a", "b", "zz"]) == ["X", "Y", "Y"]
    ctl = control_labels(["the", "cat", "the"], ["N"] * 3 + ["D"], seed=5)
    assert set(ctl) == {"the", "cat"} and ctl == control_labels(["cat", "the"], ["D", "N", "N", "N"], seed=5)


# ---------------------------------------------------------------- CKA


def cka_by_definition(X, Y):
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T, H = I - 11^T/n (float64 loops of
    Gretton's definition, not the feature-space formula the code uses)."""
    n = len(X)
    Hc = np.eye(n) - np.ones((n, n)) / n

    def hsic(K, L):
        return np.trace(K @ Hc @ L @ Hc) / (n - 1) ** 2

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_cka_against_its_definition_and_invariances():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 8))
    Y = X @ rng.standard_normal((8, 6)) + 0.5 * rng.standard_normal((50, 6))
    assert linear_cka(X, Y) == pytest.approx(cka_by_definition(X, Y), rel=1e-12)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert linear_cka(X @ Q, Y) == pytest.approx(linear_cka(X, Y), rel=1e-12)
    assert linear_cka(3.7 * X, Y) == pytest.approx(linear_cka(X, Y), rel=1e-12)
    assert linear_cka(X, X) == pytest.approx(1.0, rel=1e-12)
    # not invariant to any invertible map: stretching one direction changes it
    assert abs(linear_cka(X * np.r_[10.0, np.ones(7)], X) - 1) > 0.01
    M = cka_matrix([X, Y, X @ Q])
    np.testing.assert_allclose(np.diag(M), 1.0, rtol=1e-12)
    np.testing.assert_allclose(M, M.T)


def test_blocked_cka_equals_its_definition_past_one_block():
    # cross_products sums the centred X^T Y over row blocks of BLOCK words: 700 words are 3 blocks,
    # the last one short; two models of different widths as in --against
    from minibert.analysis.logreg import BLOCK

    rng = np.random.default_rng(8)
    n = 2 * BLOCK + 188
    A = [rng.standard_normal((n, 6)).astype(np.float32) + 5 for _ in range(3)]  # offset: centring matters
    A[1] += 2 * A[0]
    B = [A[2][:, :4] @ rng.standard_normal((4, 9)).astype(np.float32), rng.standard_normal((n, 9))]
    want = [[cka_by_definition(X.astype(np.float64), Y.astype(np.float64)) for Y in A + B] for X in A]
    # atol: on the small entries (CKA 0.006) the n x n definition is itself 1.6e-14 away from its own
    # transpose; observed max difference 1.4e-14
    np.testing.assert_allclose(cka_matrix(A), np.array(want)[:, :3], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cka_matrix(A, B), np.array(want)[:, 3:], rtol=1e-12, atol=1e-13)


def test_cka_memory_is_bounded_by_the_layers(monkeypatch):
    # the centring and the products hold one block of each layer in float64, never a float64 copy of a
    # layer (n x H x 8 bytes; the code before made one per layer: 3 x 10 MB here) nor n x n
    import tracemalloc

    rng = np.random.default_rng(9)
    layers = [rng.standard_normal((20_000, 64)).astype(np.float32) for _ in range(3)]
    tracemalloc.start()
    cka_matrix(layers)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000 * 64 * 8 / 4, peak  # observed 1.2 MB (41 MB before)


def test_self_similarity_formula():
    rng = np.random.default_rng(7)
    U = rng.standard_normal((12, 4))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    forms = np.array(["a"] * 6 + ["b"] * 5 + ["c"])
    by_loops = []
    for f in ("a", "b"):
        V = U[forms == f]
        by_loops.append(np.mean([V[i] @ V[j] for i in range(len(V)) for j in range(len(V)) if i != j]))
    assert self_similarity(U, forms) == pytest.approx(np.mean(by_loops), rel=1e-12)


# ---------------------------------------------------------------- word alignment


def conllu(rows: list[tuple]) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows) + "\n"


def word(i, form, upos):
    return (i, form, "_", upos, "_", "_", 0, "root:x", "_", "_")


def test_alignment_on_tricky_conllu(tmp_path, real_model):
    text = "# text = I don't like Zürich's unaffablenesses!\n" + conllu(
        [
            word(1, "I", "PRON"),
            ("2-3", "don't", *["_"] * 8),
            word(2, "do", "AUX"),
            word(3, "n't", "PART"),
            word(4, "like", "VERB"),
            ("4.1", "liked", *["_"] * 8),
            word(5, "Zürich", "PROPN"),
            word(6, "'s", "PART"),
            word(7, "unaffablenesses", "NOUN"),
            word(8, "!", "PUNCT"),
        ]
    )
    path = tmp_path / "tricky.conllu"
    path.write_text(text, encoding="utf-8")
    [s] = read_conllu(path)
    assert s.words == ["I", "do", "n't", "like", "Zürich", "'s", "unaffablenesses", "!"]
    assert s.labels[2] == "PART" and read_conllu(path, "deprel")[0].labels[0] == "root"
    joined, spans = spans_of(s.words)
    b = real_model.tokenize([joined])
    owners = piece_words(b.offsets[0], b.sequence_ids[0], spans)
    pieces = {}
    for tok, w in zip(b.tokens[0], owners, strict=True):
        if w is not None:
            pieces.setdefault(w, []).append(tok)
    assert pieces[2] == ["n", "'", "t"] and pieces[4] == ["zurich"] and len(pieces[6]) >= 3, pieces
    wv = word_vectors(real_model, [s], "mean", [0, 6])
    enc = real_model.encode([joined])
    # the mean of each word's pieces, by hand from the hidden states
    for w in pieces:
        cols = [t for t, o in enumerate(owners) if o == w]
        for k, layer in enumerate((0, 6)):
            np.testing.assert_allclose(wv.vectors[k, w], enc.hidden_states[layer][0, cols].mean(0), atol=1e-6)


def test_long_sentence_is_windowed_not_cut(tmp_path, tiny_model):
    rows = [word(i + 1, f"w{i}x", "X" if i % 2 else "Y") for i in range(tiny_model.max_length + 40)]
    path = tmp_path / "long.conllu"
    path.write_text(conllu(rows), encoding="utf-8")
    wv = word_vectors(tiny_model, read_conllu(path), "first", None)
    assert wv.windowed == 1 and wv.vectors.shape[1] == len(rows) and wv.keep.all()


# ---------------------------------------------------------------- malformed input


@pytest.fixture
def small(tmp_path):
    """A 25-sentence slice of the shipped EWT slice (fast)."""
    parts = DEV.read_text(encoding="utf-8").split("\n\n")
    tr, te = tmp_path / "tr.conllu", tmp_path / "te.conllu"
    tr.write_text("\n\n".join(parts[:25]) + "\n\n", encoding="utf-8")
    te.write_text("\n\n".join(parts[25:40]) + "\n\n", encoding="utf-8")
    return tr, te


@pytest.mark.parametrize(
    "body, names",
    [
        ("1\tHi\t_\tINTJ\t_\t_\n\n", ["line 1", "10 tab-separated columns"]),
        ("1\tHi\t_\t_\t_\t_\t0\troot\t_\t_\n\n", ["line 1", "column 4 (UPOS)"]),
        ("2\tHi\t_\tINTJ\t_\t_\t0\troot\t_\t_\n\n", ["line 1", "column 1 (ID)"]),
        ("", ["empty"]),
        ("# only a comment\n\n", ["no sentences"]),
    ],
)
def test_malformed_conllu_is_one_line(tmp_path, small, body, names):
    bad = tmp_path / "bad.conllu"
    bad.write_text(body, encoding="utf-8")
    assert_one_line_error(
        run("probe", bad, "--test", small[1], "--model", "tests/data/tiny-bert"), bad, *names
    )


def test_bad_task_and_jsonl(tmp_path, small):
    assert_one_line_error(
        run("probe", small[0], "--test", small[1], "--task", "colour", "--model", "tests/data/tiny-bert"),
        "colour",
    )
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"tokens": ["a", "b"], "labels": ["X"]}\n', encoding="utf-8")
    assert_one_line_error(run("probe", bad, "--test", bad, "--model", "tests/data/tiny-bert"), bad, "line 1")
    bad.write_text('{"tokens": ["a", "b"]}\n', encoding="utf-8")
    assert_one_line_error(run("probe", bad, "--test", bad, "--model", "tests/data/tiny-bert"), "labels")


def test_unseen_test_labels_are_reported_not_fatal(tmp_path, tiny_model_dir):
    tr, te = tmp_path / "tr.jsonl", tmp_path / "te.jsonl"
    tr.write_text(
        "".join(
            json.dumps({"tokens": ["the", "cat", "sat"] * 3, "labels": ["D", "N", "V"] * 3}) + "\n"
            for _ in range(8)
        ),
        encoding="utf-8",
    )
    te.write_text(
        json.dumps({"tokens": ["the", "dog", "ran"], "labels": ["D", "N", "ADV"]}) + "\n", encoding="utf-8"
    )
    out = tmp_path / "out.json"
    code, stdout, err = run(
        "probe", tr, "--test", te, "--model", tiny_model_dir, "--json", out, "--no-mix", "--folds", "2"
    )
    assert code == 0, err
    assert "line 1" in err and "'ADV'" in err and str(te) in err
    record = json.loads(out.read_text())
    assert record["protocol"]["unseen_test_labels"] == {"ADV": 1}
    assert all(r["accuracy"] <= 2 / 3 for r in record["layers"])


# ---------------------------------------------------------------- end to end, reproducible


@pytest.mark.real
def test_probe_end_to_end_and_same_at_any_thread_count(small, real_model, tmp_path):
    from threadpoolctl import threadpool_limits

    runs = []
    for blas, threads in ((1, 1), (2, 2)):
        with threadpool_limits(blas):
            runs.append(
                minibert.probe(
                    *map(str, small),
                    "upos",
                    real_model,
                    layers=[0, 3, 6],
                    threads=threads,
                    folds=2,
                    Cs=(0.01, 0.1),
                )  # fmt: skip
            )
    a, b = runs
    for ra, rb in zip(a["layers"], b["layers"], strict=True):
        for key in ("accuracy", "macro_f1", "control_accuracy", "selectivity", "C", "cv_accuracy"):
            assert ra[key] == rb[key], key
    assert a["scalar_mix"] == b["scalar_mix"]
    assert set(a) >= {"task", "layers", "baselines", "scalar_mix", "protocol"}
    assert [r["layer"] for r in a["layers"]] == [0, 3, 6]
    w = a["scalar_mix"]["weights"]
    assert sum(w) == pytest.approx(1) and a["scalar_mix"]["center_of_gravity"] == pytest.approx(
        np.dot([0, 3, 6], w)
    )
    best = max(r["accuracy"] for r in a["layers"])
    assert best > a["baselines"]["majority"] + 0.3, a  # a probe of a real model beats always-NOUN by far
    for r in a["layers"]:
        assert r["selectivity"] == pytest.approx(r["accuracy"] - r["control_accuracy"])


@pytest.mark.real
def test_similarity_cli(small, real_model_dir, tmp_path):
    out = tmp_path / "s.json"
    code, stdout, err = run("similarity", small[0], "--json", out, "--layers", "0,3,6")
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert rec["layers"] == [0, 3, 6] and len(rec["cka"]) == 3
    np.testing.assert_allclose(np.diag(rec["cka"]), 1, rtol=1e-9)
    for key in ("anisotropy", "self_similarity", "intra_sentence"):
        assert len(rec[key]) == 3 and all(-1 <= v <= 1 for v in rec[key])
    # the output is never written over an input
    assert_one_line_error(run("similarity", small[0], "--json", small[0]), small[0])


@pytest.mark.parametrize("task", ["11", "0", "1", "99"])
def test_task_column_number_out_of_range_is_one_line(small, task):
    # CoNLL-U has 10 columns; column 1 is ID, a word's position, which is no label
    message = assert_one_line_error(
        run("probe", small[0], "--test", small[1], "--task", task, "--model", "tests/data/tiny-bert"), task
    )
    assert "2-10" in message


def test_dtype_float64_runs_in_float64_throughout(small, tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    plain_dot = logreg.dot

    def recording_dot(a, b):
        seen.append((a.dtype, b.dtype))
        return plain_dot(a, b)

    monkeypatch.setattr(logreg, "dot", recording_dot)
    records = {}
    for dtype in ("float32", "float64"):
        seen.clear()
        out = tmp_path / f"{dtype}.json"
        code, _, err = run(
            "probe", small[0], "--test", small[1], "--model", tiny_model_dir, "--dtype", dtype,
            "--json", out, "--folds", "2", "--C", "0.1,1", "--layers", "0,2",
        )  # fmt: skip
        assert code == 0, err
        records[dtype] = json.loads(out.read_text())
        assert records[dtype]["protocol"]["dtype"] == dtype
        # every product of the CV, the probes, the control task and the scalar mix
        assert len(seen) > 50 and set(seen) == {(np.dtype(dtype), np.dtype(dtype))}, set(seen)
    # the same probe at two precisions: close, not identical
    a, b = records["float32"]["layers"], records["float64"]["layers"]
    assert [r["accuracy"] for r in a] == pytest.approx([r["accuracy"] for r in b], abs=0.02)


@pytest.mark.real
def test_similarity_against_itself_and_another_model(small, real_model, tiny_model, tmp_path):
    few = read_conllu(small[0], None)[:10]
    rec = minibert.similarity(few, real_model, layers=[0, 3, 6], against=real_model)
    against = np.array(rec["against"]["cka"])
    assert rec["against"]["layers"] == list(range(7)) and against.shape == (3, 7)
    # a model against itself: its own layers' CKA, so 1 where the layers are the same
    np.testing.assert_allclose(against[:, [0, 3, 6]], rec["cka"], rtol=1e-12)
    np.testing.assert_allclose(against[[0, 1, 2], [0, 3, 6]], 1, rtol=1e-9)
    assert np.all(np.delete(against, [0, 3, 6], axis=1) < 0.999)
    # against another model (the tiny BERT, another tokenizer and hidden size): CKA by its definition
    out = tmp_path / "against.json"
    code, _, err = run(
        "similarity", small[0], "--layers", "0,6", "--against", "tests/data/tiny-bert", "--json", out
    )
    assert code == 0, err
    got = np.array(json.loads(out.read_text())["against"]["cka"])
    assert got.shape == (2, tiny_model.num_layers + 1)
    sents = read_conllu(small[0], None)
    ours = word_vectors(real_model, sents, "mean", [0, 6]).vectors.astype(np.float64)
    theirs = word_vectors(tiny_model, sents, "mean", None).vectors.astype(np.float64)
    assert ours.shape[1] == theirs.shape[1] > 256  # past one BLOCK of the products' inner dimension
    want = [[cka_by_definition(X, Y) for Y in theirs] for X in ours]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all((got > 0) & (got < 1))
