"""Finding a model offline (minibert.loading.hub): a directory, weights/<name>, the
Hugging Face cache; and reading a sentence-transformers directory's pooling.

Every cache here is built in tmp_path with the layout huggingface_hub writes
(``models--org--name/{refs/main, snapshots/<rev>/, blobs/}``, snapshot files
being symlinks into blobs/), and the network is cut: nothing may connect.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

import minibert
from minibert import MinibertError
from minibert.loading.hub import hf_cache_dir, resolve, sentence_config

TINY = Path(__file__).resolve().parent / "data" / "tiny-bert-gelu-new"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("minibert tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No Hugging Face variables, an empty home, and an empty weights/."""
    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_cache(cache: Path, repo_id: str, model_dir: Path = TINY, revision: str = REVISION,
               ref: bool = True) -> Path:  # fmt: skip
    """A huggingface_hub cache entry for ``repo_id`` holding ``model_dir``'s files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)  # no newline, as huggingface_hub writes it
    return snapshot


def test_a_directory_is_used_as_is(env):
    assert resolve(TINY) == TINY
    shutil.copytree(TINY, env / "here")
    assert resolve("here") == Path("here")


def test_a_short_name_in_weights(env):
    shutil.copytree(TINY, env / "weights" / "tiny")
    assert resolve("tiny") == env / "weights" / "tiny"
    assert minibert.load("tiny").encode(["Hello world!"]).hidden_states[-1].shape[0] == 1


@pytest.mark.parametrize(
    "variable, value, cache",
    [  # huggingface_hub's rule, first match wins
        ("HF_HUB_CACHE", "hubcache", "hubcache"),
        ("HF_HOME", "hfhome", "hfhome/hub"),
        ("XDG_CACHE_HOME", "xdg", "xdg/huggingface/hub"),
        (None, None, "home/.cache/huggingface/hub"),
    ],
)
def test_a_repo_id_from_the_hugging_face_cache(env, monkeypatch, variable, value, cache):
    if variable:
        monkeypatch.setenv(variable, str(env / value))
    assert hf_cache_dir() == env / cache
    snapshot = make_cache(env / cache, "org/tiny-model")
    assert resolve("org/tiny-model") == snapshot
    model = minibert.load("org/tiny-model")
    assert model.path == snapshot
    assert len(model.encode(["Hello world!"]).hidden_states) == 3


def test_refs_main_picks_the_revision(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    make_cache(env / "c", "org/m", revision="a" * 40, ref=False)
    newest = make_cache(env / "c", "org/m", revision="b" * 40)
    assert resolve("org/m") == newest


def test_a_single_snapshot_without_refs(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    only = make_cache(env / "c", "org/m", ref=False)
    assert resolve("org/m") == only


def test_several_snapshots_without_refs_is_an_error(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    make_cache(env / "c", "org/m", revision="a" * 40, ref=False)
    make_cache(env / "c", "org/m", revision="b" * 40, ref=False)
    with pytest.raises(MinibertError, match="no refs/main and 2 snapshots"):
        resolve("org/m")


def test_refs_main_naming_a_missing_snapshot(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    make_cache(env / "c", "org/m")
    (env / "c" / "models--org--m" / "refs" / "main").write_text("f" * 40)
    with pytest.raises(MinibertError, match="refs/main names 'f{40}', which has no snapshot"):
        resolve("org/m")


def test_a_cached_model_with_only_pytorch_model_bin(env, monkeypatch, tmp_path):
    """Older snapshots have only the pickle: resolved, and read without torch."""
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    bin_only = tmp_path / "bin-only"
    shutil.copytree(TINY, bin_only, ignore=shutil.ignore_patterns("model.safetensors"))
    shutil.copy(TINY.parent / "torch" / f"{TINY.name}.bin", bin_only / "pytorch_model.bin")
    snapshot = make_cache(env / "c", "org/m", model_dir=bin_only)
    assert resolve("org/m") == snapshot
    model = minibert.load("org/m")
    assert model.weights.files == (snapshot / "pytorch_model.bin",)
    assert model.weights.format.startswith("PyTorch zip")


def test_a_cached_model_without_weights(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    (no_weights / "tf_model.h5").write_bytes(b"not read")
    make_cache(env / "c", "org/m", model_dir=no_weights)
    with pytest.raises(MinibertError, match="no weights minibert reads.*pytorch_model.bin.*tf_model.h5"):
        resolve("org/m")


def test_not_found_lists_every_place_and_how_to_get_it(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c"))
    with pytest.raises(MinibertError) as e:
        minibert.load("org/absent")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(env / "org" / "absent") in msg  # the directory
    assert str(env / "weights" / "org" / "absent") in msg  # weights/
    assert str(env / "c" / "models--org--absent") in msg  # the cache
    assert "hf download org/absent" in msg


def test_a_path_that_is_not_a_directory(env):
    with pytest.raises(MinibertError, match="model directory not found"):
        minibert.load(env / "nowhere")
    with pytest.raises(MinibertError, match="model directory not found"):
        minibert.load("./nowhere")


# --------------------------------------------------------------------------- sentence-transformers


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


@pytest.mark.parametrize(
    "pooling, expected",
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),  # v2-v4 flags
        ({"pooling_mode_mean_tokens": True}, "mean"),
        ({"pooling_mode_max_tokens": True}, "max"),
        ({"pooling_mode": "mean"}, "mean"),  # sentence-transformers v5+
        ({"pooling_mode": ["cls", "mean"]}, "cls+mean"),  # concatenated: not one of minibert's modes
        ({"pooling_mode_lasttoken": True}, "lasttoken"),
    ],
)
def test_pooling_modes(tmp_path, pooling, expected):
    write(tmp_path / "modules.json", MODULES)
    write(tmp_path / "1_Pooling" / "config.json", {"word_embedding_dimension": 8, **pooling})
    s = sentence_config(tmp_path)
    assert s.pooling == expected and not s.normalize and s.max_seq_length is None


def test_normalize_max_seq_length_and_other_modules(tmp_path):
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    write(tmp_path / "modules.json", [*MODULES, NORMALIZE, dense])
    write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
    write(tmp_path / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": True})
    s = sentence_config(tmp_path)
    assert (s.pooling, s.normalize, s.max_seq_length, s.do_lower_case) == ("mean", True, 128, True)
    assert s.other_modules == ("sentence_transformers.models.Dense",)


def test_pooling_without_modules_json(tmp_path):
    write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode_cls_token": True})
    assert sentence_config(tmp_path).pooling == "cls"


def test_a_plain_model_has_no_sentence_pipeline():
    assert sentence_config(TINY) is None
    assert minibert.load(TINY).sentence is None


@pytest.mark.parametrize(
    "files, match",
    [
        ({"modules.json": {"not": "a list"}}, "expected a JSON list"),
        ({"modules.json": MODULES, "1_Pooling/config.json": {"pooling_mode_mean_tokens": False}},
         "names no pooling mode"),
        ({"modules.json": MODULES, "1_Pooling/config.json": {"pooling_mode": "mean"},
          "sentence_bert_config.json": {"max_seq_length": "long"}}, "max_seq_length must be an integer"),
    ],
)  # fmt: skip
def test_broken_sentence_files_are_named(tmp_path, files, match):
    for name, obj in files.items():
        write(tmp_path / name, obj)
    with pytest.raises(MinibertError, match=match):
        sentence_config(tmp_path)


def test_model_lists_every_file_it_read(real_model):
    """A resumed run hashes these: each one changes the numbers."""
    names = {p.relative_to(real_model.path).as_posix() for p in real_model.files}
    assert names == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
    }  # fmt: skip
    assert all(p.is_file() for p in real_model.files)


def test_a_pooling_folder_listed_but_missing_warns_once_and_loads(tmp_path, capsys):
    """Seen in published models: modules.json lists 1_Pooling, the folder is not there.
    transformers loads such a directory as a plain encoder; so does minibert, saying so once."""
    d = tmp_path / "no-pooling"
    shutil.copytree(TINY, d)
    write(d / "modules.json", [*MODULES, NORMALIZE])
    model = minibert.load(d)
    minibert.load(d)  # a second load in the same process: no second warning
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minibert: warning: ") and "'1_Pooling'" in err[0], err
    assert model.sentence.pooling is None and model.sentence.normalize
    assert model.files == (d / "config.json", d / "model.safetensors", d / "tokenizer.json",
                           d / "tokenizer_config.json", d / "modules.json")  # fmt: skip


@pytest.mark.parametrize("path", ["../elsewhere", "/etc", "1_Pooling/../../x", "..", "a/../.."])
def test_module_paths_stay_inside_the_model_directory(tmp_path, path):
    write(tmp_path / "modules.json", [MODULES[0], {**MODULES[1], "path": path}])
    write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode": "mean"})
    with pytest.raises(MinibertError, match="module 1's path .* is outside the model directory"):
        sentence_config(tmp_path)


def test_a_module_path_in_a_subfolder_is_fine(tmp_path):
    write(tmp_path / "modules.json", [MODULES[0], {**MODULES[1], "path": "modules/pool"}])
    write(tmp_path / "modules" / "pool" / "config.json", {"pooling_mode": "cls"})
    assert sentence_config(tmp_path).pooling == "cls"


BPE = Path(__file__).resolve().parent / "data" / "tiny-bpe-bert"  # case-sensitive byte-level BPE


def test_do_lower_case_is_applied(tmp_path):
    """sentence-transformers lower-cases each text with Python's str.lower() before tokenizing
    (models.Transformer.tokenize): the ids must be those of the lower-cased text."""
    d = tmp_path / "lower"
    shutil.copytree(BPE, d)
    write(d / "modules.json", MODULES)
    write(d / "1_Pooling" / "config.json", {"pooling_mode": "mean"})
    write(d / "sentence_bert_config.json", {"max_seq_length": 32, "do_lower_case": True})
    lower, plain = minibert.load(d), minibert.load(BPE)
    assert lower.sentence.do_lower_case and d / "sentence_bert_config.json" in lower.files
    texts = ["Hello World", "The CAT sat on the Mat.", "ÉCOLE Ærø ÖL", "MiXeD 123 CaSe!"]
    for text in texts:
        want = plain.tokenize([text.lower()]).input_ids
        assert lower.tokenize([text]).input_ids.tolist() == want.tolist(), text
    cased, uncased = (plain.tokenize([t]).input_ids.tolist() for t in ("Hello World", "hello world"))
    assert cased != uncased  # the flag matters for this tokenizer
    # the offsets still point into the text as given (ASCII: lower-casing keeps every position)
    assert lower.tokenize(["Hello World"]).offsets == plain.tokenize(["hello world"]).offsets
