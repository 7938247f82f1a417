"""minibert's sentence embedding of all-MiniLM-L6-v2 equals sentence-transformers' ``encode``.

The reference (tests/reference/sentence-all-MiniLM-L6-v2.npz) was made by
sentence-transformers itself (tests/reference/generate_sentence.py). The
model directory says how to pool (1_Pooling/config.json: mean), that a
Normalize module follows (modules.json), and that texts are cut at 256
tokens (sentence_bert_config.json); minibert reads all three
(``Model.sentence``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

REFERENCE = Path(__file__).resolve().parent / "reference" / "sentence-all-MiniLM-L6-v2.npz"


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(REFERENCE, allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    ref["texts"] = json.loads(str(ref["texts"]))
    ref["provenance"] = json.loads(str(ref["provenance"]))
    return ref


def sentence_embeddings(model, texts: list[str], max_length: int | None) -> tuple[np.ndarray, list[int]]:
    """The model's own pipeline, written out: last layer, mean over real tokens, L2 norm.

    (minibert.features.pooling.pool does the same mean; this test keeps its own so it
    checks the pooling config reading and the truncation, not a helper.)
    """
    sentence = model.sentence
    assert sentence.pooling == "mean" and sentence.normalize
    vectors, kept = [], []
    for text in texts:  # one at a time: a batch would pad every text to the long one
        enc = model.encode([text], max_length=max_length)
        h = enc.hidden_states[-1][0]  # (S, H): one text, no padding
        mean = h.mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
        kept.append(h.shape[0])
    return np.stack(vectors), kept


def test_the_model_directory_describes_its_pipeline(real_model):
    s = real_model.sentence
    assert (s.pooling, s.normalize, s.max_seq_length, s.do_lower_case, s.other_modules) == (
        "mean", True, 256, False, ())  # fmt: skip


def test_equals_sentence_transformers_encode(real_model, reference):
    """Observed: max abs difference 2.4e-7 (float32), cosine 1 - 1e-7."""
    texts = reference["texts"]
    got, kept = sentence_embeddings(real_model, texts, real_model.sentence.max_seq_length)
    assert kept == reference["num_tokens"].tolist()  # 256 for the long text, as sentence-transformers
    assert_allclose(got, reference["embeddings"], rtol=0, atol=1e-5)


def test_without_the_256_limit_the_long_text_differs(real_model, reference):
    """The limit matters: minibert's default (512, the position table) keeps more of the long text."""
    long = int(np.argmax(reference["num_tokens"]))
    got, kept = sentence_embeddings(real_model, [reference["texts"][long]], None)
    assert kept[0] > 256
    assert np.abs(got[0] - reference["embeddings"][long]).max() > 1e-3


def test_extract_pool_auto_equals_sentence_transformers(real_model_dir, reference, tmp_path):
    """The CLI path: ``--pool auto`` reads the model's own pooling, its
    256-token limit and its Normalize module (no ``--normalize`` needed)."""
    from minibert import open_output
    from minibert.cli import main

    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in reference["texts"]), encoding="utf-8")
    out = tmp_path / "sentences.npz"
    args = ["extract", "--model", str(real_model_dir), str(src), "-o", str(out), "--layers", "-1"]
    assert main([*args, "--pool", "auto", "--quiet"]) == 0
    o = open_output(out)
    assert o.settings["pool"] == "mean" and o.settings["max_length"] == 256 and o.settings["normalize"]
    got = np.stack([o.vectors(n, -1) for n in range(o.num_texts)])
    # sentence-transformers' own encode: 2.4e-7 observed
    assert_allclose(got, reference["embeddings"], rtol=0, atol=1e-5)


def test_normalize_needs_a_pool(real_model_dir, tmp_path):
    from minibert.cli import main

    src = tmp_path / "t.txt"
    src.write_text("x\n", encoding="utf-8")
    args = ["extract", "--model", str(real_model_dir), str(src), "-o", str(tmp_path / "o.npz")]
    assert main([*args, "--pool", "none", "--normalize"]) == 2


TINY = Path(__file__).resolve().parent / "data" / "tiny-bert"


@pytest.mark.parametrize("modules", ["Pooling", "Pooling + Normalize"])
def test_pool_auto_follows_the_normalize_module(tmp_path, modules):
    """Without a Normalize module ``--pool auto`` gives the plain mean; with one, the mean / its
    L2 norm -- recomputed here in float64 from the model's last hidden state."""
    import shutil

    import minibert
    from minibert import open_output
    from minibert.cli import main

    d = tmp_path / "model"
    shutil.copytree(TINY, d)
    listed = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if "Normalize" in modules:
        listed.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (d / "modules.json").write_text(json.dumps(listed))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    texts = ["Hello world!", "How old are you?"]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    assert main(["extract", "--model", str(d), str(src), "-o", str(out), "--layers", "-1", "--quiet"]) == 0
    o = open_output(out)
    model = minibert.load(d, "float64")
    for n, text in enumerate(texts):
        mean = model.encode([text]).hidden_states[-1][0].mean(axis=0)
        want = mean / np.linalg.norm(mean) if "Normalize" in modules else mean
        assert_allclose(o.vectors(n, -1), want, rtol=0, atol=1e-6)  # float32 vs float64: observed 2e-7
    assert o.settings["normalize"] == ("Normalize" in modules)
