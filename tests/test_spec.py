"""minibert/outputs/spec.py: one ExtractSpec per run -- every field checked, every rule
between fields in one place, the recorded settings in a fixed form, and
``pool="auto"`` resolved from the model directory."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import minibert
from minibert import MinibertError
from minibert.outputs.spec import ExtractSpec, OptionError, PoolingNote, resolve_pool


def spec(**kw) -> ExtractSpec:
    return ExtractSpec(**({"layers": (0, 2), "num_hidden_layers": 2} | kw))


BAD = [
    (dict(layers=[]), "layers [] selects no layer"),
    (dict(layers=[0, "1"]), "must be an integer"),
    (dict(layers=[3]), "out of range"),
    (dict(layers=[0, 0]), "names a layer twice"),
    (dict(num_hidden_layers=-1), "num_hidden_layers must be a count"),
    (dict(num_hidden_layers=True), "num_hidden_layers must be a count"),
    (dict(pool="avg"), "pool must be one of none, cls, mean, max, got 'avg'"),
    (dict(combine=None), "combine must be one of none, sum, mean, concat"),
    (dict(word_pool="median"), "word_pool must be one of none, first, last, mean, first_last"),
    (dict(long="split"), "long must be one of truncate, window"),
    (dict(dtype="float16"), "dtype must be one of float32, float64"),
    (dict(output_dtype="int8"), "output_dtype must be one of float16, float32, float64"),
    (dict(max_length=0), "max_length must be a positive integer or None"),
    (dict(max_length=2.0), "max_length must be a positive integer or None"),
    (dict(long="window", stride=-1), "stride must be a positive integer or None"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(batch_size=True), "batch_size must be a positive integer"),
    (dict(shard_size=None), "shard_size must be a positive integer"),
    (dict(normalize="yes"), "normalize must be true or false"),
    (dict(model=Path("m")), "model must be a path (a string)"),
    (dict(model_files={"config.json": 3}), "model_files must map file names to sha256 strings"),
    (dict(stride=4), "stride applies to long window only"),
    (
        dict(word_pool="mean", pool="cls"),
        "word_pool gives one vector per word: it cannot be combined with pool cls",
    ),
    (dict(normalize=True), "normalize L2-normalises pooled vectors: give pool cls, mean or max"),
    (dict(attentions="all"), "attentions must be one of none, maps, stats, got 'all'"),
    (dict(attentions=True), "attentions must be one of none, maps, stats, got True"),
    (dict(attentions="maps"), "num_attention_heads must be given with attentions"),
    (
        dict(attentions="maps", num_attention_heads=0),
        "num_attention_heads must be a positive integer or None",
    ),
    (dict(num_attention_heads=4), "num_attention_heads is recorded only with attentions"),
    (
        dict(attentions="stats", num_attention_heads=4, layers=[0]),
        "attentions: layers 0 selects no encoder layer; hidden_states[0] is the embedding output",
    ),
    (
        dict(attentions="maps", num_attention_heads=4, long="window"),
        "attentions need each text whole, and long window reads long texts in windows",
    ),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_specs_name_the_field(kwargs, message):
    with pytest.raises(MinibertError) as e:
        spec(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_caller_names_the_fields_its_own_way():
    """The command line shows --stride where the library says stride; a value
    holding braces is shown as it is, never read as a template."""
    with pytest.raises(OptionError) as e:
        spec(word_pool="mean", pool="mean")
    assert e.value.named(lambda f: "--" + f.replace("_", "-")) == (
        "--word-pool gives one vector per word: it cannot be combined with --pool mean"
    )
    with pytest.raises(OptionError) as e:
        spec(pool="{stride}")
    assert str(e.value) == "pool must be one of none, cls, mean, max, got '{stride}'"
    assert e.value.named(str.upper) == "POOL must be one of none, cls, mean, max, got '{stride}'"
    back = pickle.loads(pickle.dumps(e.value))  # raised on a Dask worker, it travels pickled
    assert isinstance(back, OptionError) and str(back) == str(e.value)


def test_the_recorded_settings_have_a_fixed_form():
    """Keys in this order, JSON types: every manifest and .safetensors header
    ever written holds them byte for byte (docs/corpus.md shows one)."""
    s = spec(
        layers=[-1, 0],
        long="window",
        stride=8,
        max_length=16,
        output_dtype="float16",
        model="/m",
        model_files={"config.json": "ab", "model.safetensors": "cd"},
    )
    assert s.layers == (2, 0)
    assert s.to_settings() == {
        "layers": [2, 0],
        "pool": "none",
        "word_pool": "none",
        "combine": "none",
        "dtype": "float32",
        "output_dtype": "float16",
        "model": "/m",
        "minibert": minibert.__version__,
        "num_hidden_layers": 2,
        "max_length": 16,
        "long": "window",
        "stride": 8,
        "normalize": False,
        "batch_size": 32,
        "shard_size": 1000,
        "model_files": {"config.json": "ab", "model.safetensors": "cd"},
    }
    assert list(s.to_settings()) == [  # dicts compare without order: the order is checked here
        "layers", "pool", "word_pool", "combine", "dtype", "output_dtype", "model", "minibert",
        "num_hidden_layers", "max_length", "long", "stride", "normalize", "batch_size", "shard_size",
        "model_files",
    ]  # fmt: skip
    assert s.to_json().startswith('{"layers": [2, 0], "pool": "none", "word_pool": "none"')
    assert spec().output_dtype == "float32" and spec() == spec(output_dtype="float32")
    numpy_ints = spec(layers=np.array([0, 1]), num_hidden_layers=np.int64(2), batch_size=np.int64(4))
    assert numpy_ints.to_json() == spec(layers=[0, 1], batch_size=4).to_json()  # plain ints: JSON writes them


def test_settings_read_back_to_the_same_spec():
    s = spec(pool="mean", normalize=True, combine="concat", model="/m", model_files={"a": "b"})
    assert ExtractSpec.from_settings(s.to_settings(), "out.npz") == s
    assert s.differences(s.to_settings()) == []
    other = s.to_settings() | {"pool": "max", "minibert": "0.0.1"}
    assert s.differences(other) == ["minibert", "pool"]
    with pytest.raises(MinibertError, match=r"out.npz: settings have no 'stride'"):
        ExtractSpec.from_settings({k: v for k, v in s.to_settings().items() if k != "stride"}, "out.npz")
    with pytest.raises(MinibertError, match=r"out.npz: settings 'batch_size' must be a positive integer"):
        ExtractSpec.from_settings(s.to_settings() | {"batch_size": "32"}, "out.npz")
    with pytest.raises(MinibertError, match=r"out.npz: settings layers \[9\]: index 9 is out of range"):
        ExtractSpec.from_settings(s.to_settings() | {"layers": [9]}, "out.npz")


def test_attentions_are_recorded_only_when_asked_for():
    """Two keys at the end, only with attentions: a run without them records
    what it recorded before they existed, so its old shard directories resume."""
    plain = spec(model="/m")
    assert "attentions" not in plain.to_settings() and plain.attention_layers == ()
    maps = spec(layers=[-1, 0, 1], attentions="maps", num_attention_heads=4)
    assert maps.attention_layers == (2, 1)  # the selected layers but 0, in their order
    assert list(maps.to_settings())[-3:] == ["model_files", "attentions", "num_attention_heads"]
    assert (maps.to_settings()["attentions"], maps.to_settings()["num_attention_heads"]) == ("maps", 4)
    assert ExtractSpec.from_settings(maps.to_settings(), "o.npz") == maps
    assert ExtractSpec.from_settings(plain.to_settings(), "o.npz") == plain  # the keys may be absent
    assert plain.differences(maps.to_settings() | {"layers": [0, 2], "model": "/m"}) == [
        "attentions",
        "num_attention_heads",
    ]
    with pytest.raises(MinibertError, match=r"o.npz: settings 'attentions' must be one of none, maps, stats"):
        ExtractSpec.from_settings(maps.to_settings() | {"attentions": "all"}, "o.npz")
    with pytest.raises(MinibertError, match=r"o.npz: settings 'num_attention_heads' must be given with"):
        ExtractSpec.from_settings({k: v for k, v in maps.to_settings().items() if k != "num_attention_heads"},
                                  "o.npz")  # fmt: skip


def test_for_model_records_the_model(tiny_model, tiny_model_dir):
    s = ExtractSpec.for_model(tiny_model, layers="-1", max_length=8)
    assert (s.layers, s.num_hidden_layers, s.dtype, s.pool) == ((2,), 2, "float32", "none")
    assert s.model == str(Path(tiny_model_dir).absolute())
    files = dict(s.model_files)
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    for name, digest in files.items():
        assert digest == hashlib.sha256((Path(tiny_model_dir) / name).read_bytes()).hexdigest(), name
    with pytest.raises(OptionError, match=r"max_length 65 exceeds the model's limit 64"):
        ExtractSpec.for_model(tiny_model, max_length=65)
    s = ExtractSpec.for_model(tiny_model, attentions="stats")
    assert (s.attentions, s.num_attention_heads, s.attention_layers) == ("stats", 4, (1, 2))


def _model(pooling=None, normalize=False, max_seq_length=None, other=()):
    sentence = SimpleNamespace(
        pooling=pooling, normalize=normalize, max_seq_length=max_seq_length, other_modules=other
    )
    return SimpleNamespace(path="/models/m", sentence=sentence if pooling else None, max_length=512)


def test_auto_pool_is_what_the_model_directory_says():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note unless the model runs more modules
        assert resolve_pool(_model(), "auto") == (auto := resolve_pool(_model(), "none"))
        assert (auto.pool, auto.max_length, auto.normalize) == ("none", None, False)
        st = _model("mean", normalize=True, max_seq_length=256)
        assert resolve_pool(st, "auto") == type(auto)("mean", 256, True)
        assert resolve_pool(st, "auto", word_pool="first").pool == "none"  # word vectors are not pooled
        assert resolve_pool(st, "cls") == type(auto)("cls", None, False)  # asked for: as asked
        assert resolve_pool(_model("max", max_seq_length=4096), "auto").max_length == 512  # the model's limit
    with pytest.warns(PoolingNote, match="/models/m also runs Dense after pooling"):
        assert resolve_pool(_model("cls", other=("Dense",)), "auto").pool == "cls"
    with pytest.raises(OptionError) as e:
        resolve_pool(_model("lasttoken"), "auto")
    assert e.value.named(lambda f: "--" + f) == (
        "/models/m: the model pools with 'lasttoken', which minibert does not implement; "
        "give --pool none, cls, mean or max"
    )
