"""Every BERT family against transformers: tiny seeded models and their references.

The models (tests/data/tiny-*) and references (tests/reference/families/)
are made by tests/reference/generate_families.py with transformers; these
tests read only those committed files, so they run without torch.

Tolerances are BERT's (tests of the core): float32 <= 1e-4 on hidden states
and <= 1e-5 on attention probabilities, float64 <= 1e-9 on both; token ids
exactly equal. Observed when written: see each test's comment.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from reference_helpers import TOLERANCES, read_reference

import minibert
from minibert import MinibertError
from minibert.encoder.config import Config
from minibert.encoder.ops import sinusoidal_positions
from minibert.loading.weights import from_tensors, read_safetensors

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFS = TESTS / "reference" / "families"

REFERENCES = sorted(REFS.glob("tiny-*-float*.npz"))
TOKEN_REFERENCES = sorted(REFS.glob("tokens-tiny-*.json"))

#: Every family (and variant) the generator makes; a missing file is a failure, not a skip.
EXPECTED = {
    "tiny-bert-gelu-new": ("float32", "float64"),
    "tiny-bert-mlm": ("float32",),
    "tiny-bert-fp16": ("float32",),
    "tiny-bert-bf16": ("float32",),
    "tiny-roberta": ("float32", "float64"),
    "tiny-xlm-roberta": ("float32", "float64"),
    "tiny-camembert": ("float32", "float64"),
    "tiny-distilbert": ("float32", "float64"),
    "tiny-electra": ("float32", "float64"),
    "tiny-electra-generator": ("float32",),
    "tiny-albert": ("float32", "float64"),
    "tiny-albert-groups": ("float32",),
}


def name_and_dtype(path: Path) -> tuple[str, str]:
    name, dtype = path.stem.rsplit("-", 1)
    return name, dtype


_models: dict = {}


def model(name: str, dtype: str = "float32"):
    if (name, dtype) not in _models:
        _models[name, dtype] = minibert.load(DATA / name, dtype)
    return _models[name, dtype]


def test_every_family_has_its_files():
    for name, dtypes in EXPECTED.items():
        assert (DATA / name / "model.safetensors").is_file(), name
        assert (REFS / f"tokens-{name}.json").is_file(), name
        for dtype in dtypes:
            assert (REFS / f"{name}-{dtype}.npz").is_file(), (name, dtype)
    assert {name_and_dtype(p) for p in REFERENCES} == {(n, d) for n, ds in EXPECTED.items() for d in ds}


def test_committed_files_are_small():
    files = [f for d in EXPECTED for f in (DATA / d).iterdir()] + list(REFS.iterdir())
    total = sum(f.stat().st_size for f in files)
    assert total < 3_000_000, f"{total:,} bytes"


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.stem)
def test_matches_transformers(path):
    """Ids, every hidden state and every attention map, at real positions.

    Observed: float32 hidden states <= 1.5e-6, attentions <= 4e-7;
    float64 <= 3e-15 (every family).
    """
    name, dtype = name_and_dtype(path)
    ref = read_reference(path)
    m = model(name, dtype)
    enc = m.encode(ref["texts"], ref["text_pairs"], output_attentions=True)  # default max_length
    mask = ref["attention_mask"].astype(bool)
    assert_array_equal(enc.attention_mask, ref["attention_mask"])
    assert_array_equal(enc.input_ids[mask], ref["input_ids"][mask])
    if ref["provenance"]["has_token_type_ids"]:
        assert_array_equal(enc.token_type_ids[mask], ref["token_type_ids"][mask])
    assert m.max_length == int(ref["max_length"])  # the tokenizer's own model_max_length
    assert len(enc.hidden_states) == ref["provenance"]["num_hidden_states"]
    assert len(enc.attentions) == len(enc.hidden_states) - 1
    tol = TOLERANCES[dtype]
    b, s = ref["positions"].T
    for i, h in enumerate(enc.hidden_states):
        assert h.dtype == np.dtype(dtype)
        expected = ref[f"hidden_states.{i}"]
        got = h[b, s]
        diff = np.abs(got - expected).max()
        assert_allclose(got, expected, rtol=0, atol=tol["hidden_states"],
                        err_msg=f"{name} {dtype} hidden_states[{i}]: max diff {diff:.2e}")  # fmt: skip
    b, q, k = ref["attention_positions"].T
    for i, a in enumerate(enc.attentions):
        expected = ref[f"attentions.{i}"]
        got = a[b, :, q, k]  # (T, h)
        diff = np.abs(got - expected).max()
        assert_allclose(got, expected, rtol=0, atol=tol["attentions"],
                        err_msg=f"{name} {dtype} attentions[{i}]: max diff {diff:.2e}")  # fmt: skip


@pytest.mark.parametrize("path", TOKEN_REFERENCES, ids=lambda p: p.stem)
def test_token_ids_equal_transformers(path):
    """Singles, pairs, truncation (longest_first) and the default length: exactly equal."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    name = path.stem.removeprefix("tokens-")
    m = model(name)
    for case in doc["cases"]:
        batch = m.tokenize([case["text"]], None if case["text_pair"] is None else [case["text_pair"]],
                           case["max_length"])  # fmt: skip
        n = int(batch.attention_mask[0].sum())
        assert batch.input_ids[0, :n].tolist() == case["input_ids"], case
        # Token strings too, except unknown pieces: for those the tokenizers library's
        # Unigram gives the text it could not match ("'"), transformers the vocabulary's "<unk>".
        unk = m.tokenizer.backend.token_to_id(doc["provenance"]["unk_token"])
        known = [t for t, i in zip(batch.tokens[0], case["input_ids"], strict=True) if i != unk]
        assert known == [t for t, i in zip(case["tokens"], case["input_ids"], strict=True) if i != unk], case
        if case["token_type_ids"] is not None:
            assert batch.token_type_ids[0, :n].tolist() == case["token_type_ids"], case
        else:  # transformers does not give this family type ids: the model uses zeros
            assert not batch.token_type_ids.any(), case


@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-xlm-roberta", "tiny-distilbert", "tiny-albert"])
def test_a_text_does_not_depend_on_its_batch(name):
    """RoBERTa's positions skip padding: each text alone gives its rows of the batch.
    Observed: <= 2e-6 in float32."""
    m = model(name)
    texts = ["Hello world!", "The encoder reads every token of the sentence at once.", ""]
    batch = m.encode(texts)
    for b, text in enumerate(texts):
        alone = m.encode([text])
        n = alone.input_ids.shape[1]
        for i, (h_alone, h_batch) in enumerate(zip(alone.hidden_states, batch.hidden_states, strict=True)):
            assert_allclose(h_alone[0], h_batch[b, :n], rtol=0, atol=1e-5, err_msg=f"{name} {text!r} [{i}]")


# --------------------------------------------------------------------------- per family


def test_roberta_positions_start_after_padding_index():
    m = model("tiny-roberta")
    batch = m.tokenize(["Hello world!", ""])
    pos = minibert.model.position_ids(m.config, batch.input_ids, batch.attention_mask)
    pad = m.config.pad_token_id
    n = batch.attention_mask.sum(1)
    assert pos[0, : n[0]].tolist() == list(range(pad + 1, pad + 1 + n[0]))
    assert pos[1].tolist() == [pad + 1, pad + 2] + [pad] * (batch.input_ids.shape[1] - 2)
    assert m.max_length == m.config.max_position_embeddings - 2


def test_roberta_longest_input_uses_the_last_position_row():
    m = model("tiny-roberta")
    enc = m.encode(["word " * 100])
    assert enc.input_ids.shape[1] == m.max_length
    pos = minibert.model.position_ids(m.config, enc.input_ids, enc.attention_mask)
    assert pos.max() == m.config.max_position_embeddings - 1
    with pytest.raises(MinibertError, match="max_length"):
        m.encode(["word"], max_length=m.max_length + 1)


def test_distilbert_config_names_and_no_token_types():
    m = model("tiny-distilbert")
    raw = json.loads((DATA / "tiny-distilbert" / "config.json").read_text())
    assert "hidden_size" not in raw and "dim" in raw  # the file really uses DistilBERT's names
    c = m.config
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.num_hidden_layers) == (
        raw["dim"], raw["n_heads"], raw["hidden_dim"], raw["n_layers"])  # fmt: skip
    assert c.hidden_act == raw["activation"] and c.layer_norm_eps == 1e-12 and c.type_vocab_size == 0
    assert m.weights.embeddings.token_type is None
    assert all(n.startswith("distilbert.") for n in m.weights.names.values())
    assert any(n.startswith("vocab_") for n in m.weights.ignored)


def test_distilbert_sinusoidal_table_is_computed_when_missing():
    """config sinusoidal_pos_embds: transformers stores the sin/cos table in the
    checkpoint; without it minibert computes the same one.
    Observed: table within 6e-8 (float32 rounding); hidden states within 1.5e-6."""
    path = DATA / "tiny-distilbert"
    config = Config.from_json(path / "config.json")
    assert config.sinusoidal_pos_embds
    tensors, dtypes = read_safetensors(path / "model.safetensors")
    stored = tensors.pop("distilbert.embeddings.position_embeddings.weight")
    table = sinusoidal_positions(config.max_position_embeddings, config.hidden_size)
    assert_allclose(table, stored, rtol=0, atol=1e-7)
    weights = from_tensors(tensors, config, "float32")
    m = minibert.Model(config, weights, model("tiny-distilbert").tokenizer, path, "float32")
    ref = read_reference(REFS / "tiny-distilbert-float32.npz")
    enc = m.encode(ref["texts"], ref["text_pairs"])
    b, s = ref["positions"].T
    for i, h in enumerate(enc.hidden_states):
        assert_allclose(h[b, s], ref[f"hidden_states.{i}"], rtol=0, atol=1e-4, err_msg=f"[{i}]")


def test_electra_projects_embeddings_to_hidden_size():
    for name, (E, H) in {"tiny-electra": (12, 24), "tiny-electra-generator": (24, 12)}.items():
        w = model(name).weights
        assert w.embeddings.word.shape[1] == E
        assert w.embeddings.W_proj.shape == (E, H)  # (in, out), transposed at load
        assert w.names["embeddings.W_proj"] == "electra.embeddings_project.weight"
    assert any(n.startswith("discriminator_predictions.") for n in model("tiny-electra").weights.ignored)
    assert any(n.startswith("generator_") for n in model("tiny-electra-generator").weights.ignored)


def test_electra_without_projection_when_embedding_size_is_hidden_size():
    """ElectraModel has no embeddings_project when E = H: none is needed, none is made up."""
    path = DATA / "tiny-electra-generator"
    raw = json.loads((path / "config.json").read_text())
    config = Config.from_dict(raw | {"embedding_size": raw["hidden_size"]})
    tensors, _ = read_safetensors(path / "model.safetensors")
    H = raw["hidden_size"]
    tensors = {k: v for k, v in tensors.items() if "embeddings_project" not in k}
    for k in list(tensors):
        if k.startswith("electra.embeddings.") and tensors[k].shape[-1] == raw["embedding_size"]:
            tensors[k] = tensors[k][..., :H]
    w = from_tensors(tensors, config)
    assert w.embeddings.W_proj is None


def test_projection_missing_is_an_error():
    path = DATA / "tiny-electra"
    config = Config.from_json(path / "config.json")
    tensors, _ = read_safetensors(path / "model.safetensors")
    del tensors["electra.embeddings_project.weight"]
    with pytest.raises(MinibertError, match=r"missing tensor 'embeddings_project.weight'.*\(24, 12\)"):
        from_tensors(tensors, config)


def test_albert_shares_one_layer():
    m = model("tiny-albert")
    assert m.config.num_hidden_layers == 3 and m.config.hidden_act == "gelu_new"
    assert len(m.weights.layers) == 1
    assert m.weights.layer_map == (0, 0, 0)
    assert m.weights.names["embeddings.W_proj"] == "albert.encoder.embedding_hidden_mapping_in.weight"
    enc = m.encode(["Hello world!"])
    assert len(enc.hidden_states) == 4  # num_hidden_layers + 1, as transformers gives


def test_albert_groups_follow_transformers_rule():
    """Step i of L runs group floor(i / (L / G)); each group its inner layers in turn."""
    m = model("tiny-albert-groups")
    c = m.config
    assert (c.num_hidden_layers, c.num_hidden_groups, c.inner_group_num) == (3, 2, 2)
    assert len(m.weights.layers) == 4
    assert m.weights.layer_map == (0, 1, 0, 1, 2, 3)
    assert (
        m.weights.names["layer.3.attention.W_q"]
        == "encoder.albert_layer_groups.1.albert_layers.1.attention.query.weight"
    )


def test_albert_extra_group_is_an_error():
    path = DATA / "tiny-albert"
    config = Config.from_json(path / "config.json")
    tensors, _ = read_safetensors(path / "model.safetensors")
    extra = {
        k.replace("groups.0.", "groups.1."): v for k, v in tensors.items() if "albert_layer_groups.0." in k
    }
    with pytest.raises(MinibertError, match=r"layer\(s\) \[\(1, 0\)\].*num_hidden_groups=1"):
        from_tensors(tensors | extra, config)


def test_mlm_checkpoint_prefix_and_heads():
    w = model("tiny-bert-mlm").weights
    assert all(n.startswith("bert.") for n in w.names.values())
    assert w.ignored and all(n.startswith("cls.") for n in w.ignored)


@pytest.mark.parametrize("name, stored", [("tiny-bert-fp16", "F16"), ("tiny-bert-bf16", "BF16")])
def test_half_precision_checkpoints_are_upcast_exactly(name, stored):
    m64 = model(name, "float64")
    assert set(m64.weights.source_dtypes.values()) == {stored}
    tensors, _ = read_safetensors(DATA / name / "model.safetensors")
    word = tensors["embeddings.word_embeddings.weight"]
    assert word.dtype == (np.float16 if stored == "F16" else np.float32)
    # float64 of the stored value, bit for bit: the upcast loses nothing
    assert_array_equal(m64.weights.embeddings.word, word.astype(np.float64))


def test_gelu_new_is_not_gelu():
    """The gelu_new model differs from what exact GELU would give, by far more
    than the tolerance: the float64 comparison above really tests tanh-GELU."""
    m = model("tiny-bert-gelu-new", "float64")
    assert m.config.hidden_act == "gelu_new"
    exact = minibert.Model(
        Config.from_dict({**m.config.__dict__, "hidden_act": "gelu"}),
        m.weights,
        m.tokenizer,
        m.path,
        "float64",
    )
    a = m.encode(["Hello world!"]).hidden_states[-1]
    b = exact.encode(["Hello world!"]).hidden_states[-1]
    assert np.abs(a - b).max() > 1e-4


# --------------------------------------------------------------------------- config


def test_unsupported_model_type_lists_the_supported_ones():
    with pytest.raises(MinibertError) as e:
        Config.from_dict({"model_type": "gpt2"}, "x/config.json")
    msg = str(e.value)
    for t in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "albert"):
        assert t in msg
    assert "gpt2" in msg and "x/config.json" in msg


BASE = dict(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=16, max_position_embeddings=8)  # fmt: skip


@pytest.mark.parametrize("model_type", ["bert", "roberta", "electra", "albert"])
def test_relative_positions_are_not_supported(model_type):
    with pytest.raises(MinibertError, match="position_embedding_type 'relative_key' is not supported"):
        Config.from_dict(BASE | {"model_type": model_type, "position_embedding_type": "relative_key"})


def test_family_defaults():
    assert Config.from_dict(BASE | {"model_type": "roberta"}).pad_token_id == 1
    albert = Config.from_dict(BASE | {"model_type": "albert"})
    assert albert.hidden_act == "gelu_new" and albert.embedding_size == 128
    assert Config.from_dict(BASE).embedding_size == 8  # BERT: E = H


def test_distilbert_contradicting_names_is_an_error():
    raw = {"model_type": "distilbert", "dim": 8, "hidden_size": 16, "n_heads": 2, "hidden_dim": 16,
           "n_layers": 1, "vocab_size": 10, "max_position_embeddings": 8}  # fmt: skip
    with pytest.raises(MinibertError, match="dim=8 contradicts hidden_size=16"):
        Config.from_dict(raw)


def test_roberta_needs_room_for_its_positions():
    with pytest.raises(MinibertError, match="pad_token_id"):
        Config.from_dict(BASE | {"model_type": "roberta", "pad_token_id": 7})


def test_empty_batch_has_one_hidden_state_per_step():
    m = model("tiny-albert-groups")
    assert len(m.encode([]).hidden_states) == len(m.weights.layer_map) + 1 == 7


def test_token_type_beyond_the_table_is_an_error():
    m = model("tiny-electra")
    batch = m.tokenize(["Hello world!"])
    bad = replace(batch, token_type_ids=batch.token_type_ids + 2)
    with pytest.raises(MinibertError, match="token_type_ids reach 2, the model has 2 type"):
        m.forward(bad)
