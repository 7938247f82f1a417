"""MPNet and DeBERTa-v2/v3 (issue 18): relative positions against transformers.

The tiny models (tests/data/tiny-mpnet, tiny-deberta-*) and their references
(tests/reference/relpos/) are made by tests/reference/generate_relpos.py with
transformers 5.25; these tests read only those files. Tolerances are the
issue's: float32 <= 1e-5 on hidden states and attentions, float64 <= 1e-12,
on both paths (``impl`` "fast" and "plain"); observed values beside each test.

Attention-map convention: minibert returns 0 at padding queries and keys
for every family. transformers gives MPNet's padding queries a softmax over
the real keys (its mask is on keys only) and DeBERTa's a uniform 1/S (its
mask is query x key, filled with the float minimum); both agree with minibert
at every real query, which is where the references are compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import variant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from reference_helpers import assert_matches_reference, read_reference
from test_fast import check_batch_fast_equals_plain

import minibert
from minibert import MinibertError
from minibert.encoder import ops
from minibert.encoder.config import Config

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFS = TESTS / "reference" / "relpos"
REAL = TESTS.parent / "weights" / "all-mpnet-base-v2"
EXPECTED = {
    "tiny-mpnet": ("float32", "float64"),
    "tiny-deberta-v3": ("float32", "float64"),
    "tiny-deberta-v2": ("float32", "float64"),
    "tiny-deberta-c2p": ("float32",),
}
REFERENCES = [REFS / f"{name}-{dtype}.npz" for name, dtypes in EXPECTED.items() for dtype in dtypes]


_models: dict = {}


def model(name: str, dtype: str = "float32", impl: str = "fast"):
    if (name, dtype, impl) not in _models:
        m = minibert.load(name if Path(name).is_absolute() else DATA / name, dtype)
        m.impl = impl
        _models[name, dtype, impl] = m
    return _models[name, dtype, impl]


def test_every_reference_is_there_and_small():
    for path in REFERENCES:
        assert path.is_file(), path
    total = sum(f.stat().st_size for f in REFS.iterdir())
    total += sum(f.stat().st_size for name in EXPECTED for f in (DATA / name).iterdir())
    assert total < 6_500_000, f"{total:,} bytes"


@pytest.mark.parametrize("impl", ["fast", "plain"])
@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.stem)
def test_matches_transformers(path, impl):
    """Ids, every hidden state and every attention map at real positions, both paths.

    The batch mixes lengths (padding), pairs, an empty text and a text of 100
    tokens: past MPNet's 8 exact buckets and distance 91 (the last bucket),
    past DeBERTa's exact buckets (v3: 8, c2p: 4) and its clipping (v2: 40).
    Observed: float32 <= 1.5e-6 (hidden states), <= 3e-7 (attentions);
    float64 <= 2e-15.
    """
    name, dtype = path.stem.rsplit("-", 1)
    ref = read_reference(path)
    m = model(name, dtype, impl)
    enc = m.encode(ref["texts"], ref["text_pairs"], max_length=int(ref["max_length"]), output_attentions=True)
    assert enc.input_ids.shape[1] == 100  # the long text: every bucket branch
    assert_matches_reference(enc, ref, dtype, f"{name} {dtype} {impl}")


# --------------------------------------------------------------------------- the bucket functions


def test_bucket_functions_equal_transformers_at_every_distance():
    """Every relative position -2000..2000: MPNet's buckets (32, 128) and DeBERTa's
    log buckets for the real (256, 512) and tiny settings, exactly transformers'
    integers (float32 log, truncation, ceil, distance 0)."""
    ref = read_reference(REFS / "buckets.npz")
    rel = ref["relative_position"]
    assert_array_equal(ops.relative_position_bucket(rel), ref["mpnet"])
    assert ops.relative_position_bucket(np.array(0)) == 0  # log 0 discarded by the where
    for key in ref:
        if key.startswith("deberta_"):
            size, most = map(int, key.split("_")[1:])
            assert_array_equal(ops.log_bucket_position(rel, size, most), ref[key], err_msg=key)


def test_mpnet_uses_32_buckets_whatever_the_config_says():
    """A table of 40 rows: rows 32..39 are never read (transformers calls the bucket
    function with 32), so changing them changes nothing."""
    m = model("tiny-mpnet")
    table = m.weights.relative.table
    bigger = np.concatenate([table, np.full((8, table.shape[1]), 1e3, table.dtype)])
    assert minibert.encoder.forward.relative_positions(m.config, m.weights, 200, np.float32).bias.shape == (
        1,
        3,
        200,
        200,
    )
    assert ops.relative_position_bias(200, bigger).max() == ops.relative_position_bias(200, table).max()


def test_deberta_scale_is_a_float32_root():
    """transformers' sqrt(d x factor) is a float32 product and root: float64 passes use it too."""
    assert ops.disentangled_scale(64, 3) == np.float32(np.sqrt(np.float32(192)))
    assert ops.disentangled_scale(64, 3) != np.sqrt(192.0)  # the exact root differs by 5.7e-8 relatively


# --------------------------------------------------------------------------- bad configs and checkpoints


def _config(name: str, **changes) -> dict:
    raw = json.loads((DATA / name / "config.json").read_text())
    return raw | changes


@pytest.mark.parametrize(
    "name, changes, key",
    [
        ("tiny-deberta-v3", {"pos_att_type": "p2c|p2p"}, "pos_att_type 'p2p'"),
        ("tiny-deberta-v3", {"pos_att_type": 3}, "pos_att_type"),
        ("tiny-deberta-v3", {"norm_rel_ebd": "batch_norm"}, "norm_rel_ebd"),
        ("tiny-deberta-v3", {"position_buckets": 300, "max_relative_positions": 128}, "position_buckets"),
        ("tiny-deberta-v3", {"conv_kernel_size": 3}, "conv_kernel_size"),
        ("tiny-deberta-v3", {"share_att_key": "yes"}, "share_att_key"),
        ("tiny-deberta-v3", {"embedding_size": 12}, "embedding_size"),
        ("tiny-deberta-v3", {"attention_head_size": 4}, "attention_head_size"),
        ("tiny-mpnet", {"relative_attention_num_buckets": 16}, "relative_attention_num_buckets"),
        ("tiny-mpnet", {"pad_token_id": 0}, "pad_token_id"),
    ],
)
def test_a_config_minibert_does_not_implement_is_one_line_naming_the_key(name, changes, key):
    with pytest.raises(MinibertError) as err:
        Config.from_dict(_config(name, **changes))
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, tensor",
    [("tiny-mpnet", "encoder.relative_attention_bias.weight"),
     ("tiny-deberta-v3", "encoder.rel_embeddings.weight"), ("tiny-deberta-v3", "encoder.LayerNorm.weight"),
     ("tiny-deberta-v2", "encoder.layer.1.attention.self.pos_key_proj.weight")],
)  # fmt: skip
def test_a_missing_tensor_is_named(name, tensor):
    from minibert.loading.weights import from_tensors, read_safetensors

    tensors, _ = read_safetensors(DATA / name / "model.safetensors")
    prefix = {"tiny-mpnet": "mpnet.", "tiny-deberta-v3": "deberta.", "tiny-deberta-v2": ""}[name]
    del tensors[prefix + tensor]
    with pytest.raises(MinibertError, match=f"missing tensor '{tensor}'"):
        from_tensors(tensors, Config.from_json(DATA / name / "config.json"))


def test_deberta_reads_only_the_projections_its_config_uses():
    v3, v2 = model("tiny-deberta-v3").weights, model("tiny-deberta-v2").weights
    assert v3.layers[0].attention.W_pk is None and v3.relative.ln is not None  # share_att_key, norm_rel_ebd
    assert v3.embeddings.position is None and v3.embeddings.token_type is None  # position_biased_input false
    assert v2.layers[0].attention.W_pk is not None and v2.layers[0].attention.W_pq is not None
    assert v2.relative.ln is None and v2.embeddings.position is not None
    c2p = model("tiny-deberta-c2p").weights.layers[0].attention
    assert c2p.W_pk is not None and c2p.W_pq is None


def test_an_spm_only_checkpoint_is_one_line_saying_what_to_run(tmp_path):
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).write_bytes((DATA / "tiny-deberta-v3" / f).read_bytes())
    (tmp_path / "spm.model").write_bytes(b"\x0a\x00")
    with pytest.raises(MinibertError) as err:
        minibert.load(tmp_path)
    message = str(err.value)
    assert "spm.model" in message and "tokenizer.json" in message and "\n" not in message


# --------------------------------------------------------------------------- the real all-mpnet-base-v2

needs_real = pytest.mark.skipif(
    not (REAL / "model.safetensors").is_file(), reason="all-mpnet-base-v2 not fetched (make weights-mpnet)"
)


@needs_real
@pytest.mark.parametrize("impl", ["fast", "plain"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_mpnet_base_v2_matches_transformers(dtype, impl):
    """Every layer, and sentence-transformers' embedding (mean pooling + normalize,
    computed with torch from transformers' output; see generate_relpos.py).
    Observed float32: hidden states <= 5e-6 (layer 6, values up to 10.6), attentions
    <= 4e-7, sentence <= 1e-7; float64 <= 6e-15."""
    ref = read_reference(REFS / f"all-mpnet-base-v2-{dtype}.npz")
    m = model(str(REAL), dtype, impl)
    enc = m.encode(ref["texts"], output_attentions=dtype == "float32")
    real = ref["attention_mask"].astype(bool)
    assert_array_equal(enc.input_ids, ref["input_ids"])
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for i, h in enumerate(enc.hidden_states):
        got, expected = h[real], ref[f"hidden_states.{i}"]
        assert_allclose(got, expected, rtol=0, atol=tol, err_msg=f"[{i}] {np.abs(got - expected).max():.1e}")
    for i, a in enumerate(enc.attentions or ()):
        for b in range(len(real)):
            n = int(real[b].sum())
            assert_allclose(a[b, :, :n, :n], ref[f"attentions.{i}"][b, :, :n, :n], rtol=0, atol=tol)
    assert m.sentence.pooling == "mean" and m.sentence.normalize
    mean = (enc.hidden_states[-1] * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    sentence = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert_allclose(sentence, ref["sentence"], rtol=0, atol=tol)


# --------------------------------------------------------------------------- the commands


@pytest.mark.parametrize("name", ["tiny-mpnet", "tiny-deberta-v3", "tiny-deberta-v2"])
def test_the_commands_work_for_each_family(name, tmp_path, capsys):
    """inspect, verify, extract (with --attentions), view; words and encode_long."""
    from minibert.cli import main

    path = str(DATA / name)
    assert main(["inspect", "--model", path]) == 0
    assert name.split("-")[1] in capsys.readouterr().out.lower()
    assert main(["verify", "--model", path, "--reference", str(REFS / f"{name}-float32.npz")]) == 0
    assert "OK" in capsys.readouterr().out
    texts = tmp_path / "t.txt"
    texts.write_text("Hello world!\nThe quick brown fox jumps over the lazy dog.\n")
    out = tmp_path / "o.npz"
    assert main(["extract", str(texts), "-o", str(out), "--layers", "all", "--attentions", "--quiet"]
                + ["--model", path]) == 0  # fmt: skip
    assert main(["view", "--model", path, "Hello world!", "-o", str(tmp_path / "v.html")]) == 0
    assert "<html" in (tmp_path / "v.html").read_text()[:2000].lower()
    m = model(name)
    enc = m.encode(["Hello world!", "The quick brown fox jumps over the lazy dog."])
    w = minibert.words(enc)
    assert len(w.words) == 2 and np.isfinite(w.vectors).all()
    long = minibert.encode_long(m, ["word " * 300], window=32, stride=16)
    assert long.hidden_states[-1].shape[1] > 32 and np.isfinite(long.hidden_states[-1]).all()


# --------------------------------------------------------------------------- the fast schedule


def relpos_batch(m, lengths, seed: int, holes: bool):
    """A right-padded batch of random ids (never a special id) with the given lengths;
    with ``holes``, some texts get a masked token inside (a hand-made mask: the fast
    path's gather at the real positions, relative distances counting the hole)."""
    rng = np.random.default_rng(seed)
    B, S = len(lengths), max(lengths)
    ids = np.full((B, S), m.config.pad_token_id, np.int64)
    mask = np.zeros((B, S), np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(5, m.config.vocab_size, n)
        mask[b, :n] = 1
        if holes and n > 2 and rng.random() < 0.5:
            mask[b, rng.integers(1, n - 1)] = 0
    types = (rng.integers(0, 2, (B, S)) * mask).astype(np.int64)
    if m.config.type_vocab_size == 0:
        types = np.zeros_like(types)
    tokens = [[f"t{i}" for i in row[:n]] for row, n in zip(ids, lengths, strict=True)]
    return minibert.Batch(ids, types, mask, tokens, [[None] * n for n in lengths], list(lengths))


# Observed over 4 x 2 x 12 examples: fast vs plain float32 <= 1e-6 relative, float64 <= 3e-15.
# Before issue 18's schedule work, DeBERTa ran the formulas on the default path (nothing to compare);
# with the scale left at sqrt(d) (the fused layout's default) this fails at 2e-1.
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["tiny-mpnet", "tiny-deberta-v3", "tiny-deberta-v2", "tiny-deberta-c2p"])
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.one_of(st.integers(1, 126), st.integers(1, 12)), min_size=1, max_size=9),
    seed=st.integers(0, 2**16),
    holes=st.booleans(),
)
def test_random_batch_compositions_fast_equals_plain_at_1_and_2_threads(name, dtype, lengths, seed, holes):
    """MPNet and DeBERTa (v3, v2, c2p only) on the fast schedule: any mix of lengths
    1-126 (past every exact bucket range and DeBERTa-v2's clipping; several work
    units when the batch passes 512 tokens), token types, masked tokens inside a
    text: fast == plain to rounding, hidden states and attention maps, 0 at
    padding; 1 and 2 threads give the same bits (float32 and float64)."""
    pytest.importorskip("threadpoolctl")
    m = model(name, dtype, "fast")
    batch = relpos_batch(m, lengths, seed, holes)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    one = check_batch_fast_equals_plain(m, batch, 1, rtol)
    two = variant(m, "fast", 2).forward(batch, output_attentions=True)
    for i, (a, b) in enumerate(zip(one.hidden_states, two.hidden_states, strict=True)):
        assert_array_equal(b, a, err_msg=f"{name} hidden_states[{i}], lengths {lengths}, 2 threads vs 1")
    for i, (a, b) in enumerate(zip(one.attentions, two.attentions, strict=True)):
        assert_array_equal(b, a, err_msg=f"{name} attentions[{i}], lengths {lengths}, 2 threads vs 1")


def test_deberta_fast_schedule_scale_and_projections():
    """The fused layout of a DeBERTa model divides W_q by its float32 scale
    sqrt(d (1 + #terms)), not by sqrt(d); the projected relative embeddings are
    made once per Weights (cached) and p2c's pos_q carries the same 1/s."""
    from minibert.encoder import fast
    from minibert.encoder.forward import relative_positions

    m = model("tiny-deberta-v3", "float64")
    rel = relative_positions(m.config, m.weights, 10, np.float64)
    assert rel.scale == np.sqrt(np.float32(m.config.head_size) * np.float32(3))
    W_qkv, b_qkv = fast.fused_qkv(m.weights, rel.scale)[0]
    a = m.weights.layers[0].attention
    H = m.config.hidden_size
    assert_allclose(W_qkv[:, :H], a.W_q / np.float64(rel.scale), rtol=1e-15, atol=0)
    assert_array_equal(W_qkv[:, H:], np.concatenate([a.W_k, a.W_v], axis=1))
    table = fast.positions(m.weights, rel)
    assert fast.positions(m.weights, rel) is table
    pos_q, pos_k = ops._position_projections(a, rel, m.config.num_attention_heads)
    assert_allclose(table[0][0], np.swapaxes(pos_q, -1, -2) / np.float64(rel.scale), rtol=1e-14, atol=0)
    assert_allclose(table[0][1], np.swapaxes(pos_k, -1, -2), rtol=0, atol=0)
