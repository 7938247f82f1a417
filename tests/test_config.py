"""config.json -> Config: what is accepted, what is assumed, and the bounds that keep
an absurd config from reaching NumPy (the malformed files themselves are in
test_model_dir_fuzz.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA, TINY_BERT
from fuzz_helpers import run

import minibert
from minibert.encoder.config import MAX_LAYER_STEPS, MAX_SIZE, Config
from minibert.loading.weights import _check_finite

BASE = json.loads((TINY_BERT / "config.json").read_text())


def test_every_committed_config_still_loads():
    for path in sorted(DATA.glob("*/config.json")):
        Config.from_json(path)


def test_a_config_without_model_type_is_bert_and_says_so(tmp_path):
    """Older BERT checkpoints (bert-base-uncased's first config.json) have no model_type."""
    cfg = Config.from_dict({k: v for k, v in BASE.items() if k != "model_type"})
    assert cfg.family == "bert" and cfg.model_type == "bert"
    assert cfg.notes == ("config.json has no model_type: read as BERT (as transformers' BertConfig does)",)
    assert Config.from_dict(BASE).notes == ()
    assert cfg == Config.from_dict(BASE)  # the note is not part of the config's value
    d = tmp_path / "old-bert"
    shutil.copytree(TINY_BERT, d)
    (d / "config.json").write_text(json.dumps({k: v for k, v in BASE.items() if k != "model_type"}))
    code, out, _ = run("inspect", "--model", d)
    assert code == 0 and "note: config.json has no model_type: read as BERT" in out
    code, out, _ = run("inspect", "--model", TINY_BERT)
    assert code == 0 and "note:" not in out


@pytest.mark.parametrize(
    "key, ok, bad",
    [
        ("vocab_size", MAX_SIZE, MAX_SIZE + 1),
        ("num_hidden_layers", MAX_LAYER_STEPS, MAX_LAYER_STEPS + 1),
        ("layer_norm_eps", 1, 0),  # an integer eps is a number
        ("pad_token_id", BASE["vocab_size"] - 1, BASE["vocab_size"]),
    ],
)
def test_bounds(key, ok, bad):
    assert getattr(Config.from_dict(BASE | {key: ok}), key) == ok
    with pytest.raises(minibert.MinibertError, match=key):
        Config.from_dict(BASE | {key: bad})


def test_albert_layer_steps_count_inner_layers():
    """ALBERT reuses its stored layers, so the file cannot bound its depth: the config cap does."""
    albert = json.loads((DATA / "tiny-albert-groups" / "config.json").read_text())
    with pytest.raises(minibert.MinibertError, match="layer steps"):
        Config.from_dict(albert | {"num_hidden_layers": MAX_LAYER_STEPS // 2 + 1, "inner_group_num": 2})


def test_a_huge_value_is_shown_short():
    with pytest.raises(minibert.MinibertError) as e:
        Config.from_dict(BASE | {"vocab_size": 10**4000})
    assert len(str(e.value)) < 200 and "..." in str(e.value)


def test_finite_check_passes_huge_finite_float64():
    """1e308 values sum to inf in float64, yet every element is finite: accepted (the blockwise look)."""
    big = np.full((4, 3), 1e308)
    _check_finite(big, "t", TINY_BERT)
    big[2, 1] = np.nan
    with pytest.raises(minibert.MinibertError, match=r"'t' holds nan at index \(2, 1\)"):
        _check_finite(big, "t", TINY_BERT)
    with pytest.raises(minibert.MinibertError, match=r"holds -inf at index \(0,\)"):
        _check_finite(np.array([-np.inf, 1, 2], np.float16), "t", TINY_BERT)
