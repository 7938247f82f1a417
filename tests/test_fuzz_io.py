"""The malformed-input suite for inputs, outputs, shards and the command line
(issue 9): every case ends in exit status 2, one line on stderr naming the
file (and the line or field), no traceback, and the user's files exactly as
they were -- nothing added, nothing changed, nothing lost.

Four categories, each one parametrised list, so the count of cases is the
length of the list: CORPORA (what extract reads), OUTPUTS (where it writes,
and damaged .npz/.safetensors/.jsonl outputs read back), MANIFESTS (damaged
shard directories, read back and resumed), ARGUMENTS (every subcommand's
options). Everything runs in this process on the tiny model, except the
file-size limit, which needs a process of its own.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BERT as TINY
from corpus_helpers import as_if_killed
from fuzz_helpers import (
    assert_one_line_error,
    assert_unchanged,
    fail_fsync,
    fail_mkstemp,
    rewrite_safetensors_header,
    run,
    run_subprocess,
    snapshot,
)

from minibert.outputs.shards import MANIFEST

TEXTS = ["the cat sat", "a dog ran home", "", "blue river", "green tree"]


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_model_dir):
    """One output of each kind, written once: .npz, .safetensors, .jsonl and
    a shard directory (3 shards), and a word-level .jsonl; with attention
    maps (layers 1 and 2 of the tiny model, 4 heads) .npz, .safetensors,
    .jsonl and a shard directory, with attention statistics .npz and .jsonl."""
    d = tmp_path_factory.mktemp("written")
    src = d / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for out, args in (
        ("o.npz", []),
        ("o.safetensors", []),
        ("o.jsonl", []),
        ("words.jsonl", ["--word-pool", "mean"]),
        ("feats", ["--shard-size", "2"]),
        ("maps.npz", ["--attentions"]),
        ("maps.safetensors", ["--attentions"]),
        ("maps.jsonl", ["--attentions"]),
        ("stats.npz", ["--attention-stats"]),
        ("stats.jsonl", ["--attention-stats"]),
        ("mapsdir", ["--attentions", "--shard-size", "2"]),
    ):
        code, _, err = run(
            "extract", "--model", tiny_model_dir, src, "-o", d / out, "--quiet", "--pool", "none", *args
        )
        assert code == 0, err
    return d


def copy_of(written: Path, name: str, tmp_path: Path) -> Path:
    src, dst = written / name, tmp_path / name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


# ----------------------------------------------------------------------------- corpora

#: (file name, bytes, what the message must name besides the file)
CORPORA = [
    ("surrogate.jsonl", b'{"text": "ok"}\n{"text": "\\ud800 lone"}\n', ["line 2", "surrogate"]),
    ("pair-surrogate.jsonl", b'{"text": "a", "text_pair": "\\udfff"}\n', ["line 1", "surrogate"]),
    ("deep.jsonl", b'{"text": "a"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", ["line 2", "deep"]),
    ("huge-int.jsonl", b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", ["line 1"]),
    ("huge-float.jsonl", b'{"text": "a", "x": 1e999}\n', ["line 1", "out of range"]),
    ("nan.jsonl", b'{"text": "a", "x": NaN}\n', ["line 1", "NaN"]),
    ("list.jsonl", b'["text", "a"]\n', ["line 1", "JSON object"]),
    ("number-text.jsonl", b'{"text": 3}\n', ["line 1", '"text"']),
    ("list-pair.jsonl", b'{"text": "a", "text_pair": ["b"]}\n', ["line 1", '"text_pair"']),
    ("broken.jsonl", b'{"text": "a"}\n{"text": \n', ["line 2", "not valid JSON"]),
    ("latin1.txt", "ok\ncaf\xe9\n".encode("latin-1"), ["line 2", "UTF-8"]),
    ("utf16.txt", "hello\n".encode("utf-16"), ["line 1", "UTF-8"]),
    ("encoded-surrogate.txt", b"ok\n\xed\xa0\x80\n", ["line 2", "UTF-8"]),
    ("latin1.jsonl", b'{"text": "caf\xe9"}\n', ["line 1", "UTF-8"]),
]


def _corpus_special(tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    if kind == "missing":
        return tmp_path / "missing.txt", ["not found"]
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir", ["is a directory"]
    loop = tmp_path / "loop.txt"
    loop.symlink_to(tmp_path / "loop2.txt")
    (tmp_path / "loop2.txt").symlink_to(loop)
    return loop, ["symbolic links"]


CORPORA_SPECIAL = ["missing", "directory", "symlink-loop"]


@pytest.mark.parametrize("output", ["o.npz", "feats/"])
@pytest.mark.parametrize("name, content, names", CORPORA, ids=[c[0] for c in CORPORA])
def test_corpus(tmp_path, tiny_model_dir, name, content, names, output):
    src = tmp_path / name
    src.write_bytes(content)
    before = snapshot(tmp_path)
    result = run("extract", "--model", tiny_model_dir, src, "-o", tmp_path / output)
    assert_one_line_error(result, src.name, *names)
    assert_unchanged(before, tmp_path)
    assert not (
        tmp_path / "feats"
    ).exists()  # a sharded run that failed before its first shard leaves nothing


@pytest.mark.parametrize("kind", CORPORA_SPECIAL)
def test_corpus_file_itself(tmp_path, tiny_model_dir, kind):
    src, names = _corpus_special(tmp_path, kind)
    before = snapshot(tmp_path)
    assert_one_line_error(
        run("extract", "--model", tiny_model_dir, src, "-o", tmp_path / "o.npz"), src.name, *names
    )
    assert_unchanged(before, tmp_path)


def _limit_memory(close_stdin: bool = False):
    """For the child: 3 GiB of address space (the old reader filled memory reading /dev/zero), and
    stdin closed (``<&-``) when asked."""

    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        soft = 3 << 30 if hard == resource.RLIM_INFINITY else min(3 << 30, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        if close_stdin:
            os.close(0)

    return limit


#: Inputs with no end or no line break (issue 17), run in a child limited to 3 GiB: kind -> what
#: the one line names. Before, each ended in a MemoryError traceback (or an AttributeError).
ENDLESS = {
    "/dev/zero as INPUT": ["/dev/zero", "a character device"],
    "/dev/zero on stdin": ["<stdin>", "line 1 is longer than 268,435,456 bytes"],
    "a 3 GiB sparse file": ["sparse.txt", "line 1 is longer than 268,435,456 bytes"],
    "a 3 GiB sparse .jsonl": ["sparse.jsonl", "line 1 is longer than 268,435,456 bytes"],
    "stdin closed": ["stdin is closed"],
}


@pytest.mark.parametrize("kind", ENDLESS)
def test_an_endless_input_is_one_line(tmp_path, tiny_model_dir, kind):
    src, stdin = "-", None
    if kind == "/dev/zero as INPUT":
        src = "/dev/zero"
    elif kind.startswith("a 3 GiB"):
        src = tmp_path / ("sparse.jsonl" if kind.endswith(".jsonl") else "sparse.txt")
        with open(src, "wb") as f:
            f.truncate(3 << 30)
    elif kind == "/dev/zero on stdin":
        stdin = open("/dev/zero", "rb")
    before = {} if kind.startswith("a 3 GiB") else snapshot(tmp_path)  # (not hashing 3 GiB)
    try:
        result = run_subprocess(
            "extract", "--model", tiny_model_dir, src, "-o", tmp_path / "o.npz", "--quiet",
            stdin=stdin, preexec_fn=_limit_memory(close_stdin=kind == "stdin closed"),
        )  # fmt: skip
    finally:
        if stdin is not None:
            stdin.close()
    assert_one_line_error(result, *ENDLESS[kind])
    assert not (tmp_path / "o.npz").exists()
    if before:
        assert_unchanged(before, tmp_path)


def test_a_fifo_is_still_an_input(tmp_path, tiny_model_dir):
    """A named pipe (or ``<(...)``) is a legitimate input: only devices are refused."""
    fifo = tmp_path / "texts.txt"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'printf "one\\ntwo\\n" > "$0"', str(fifo)])
    try:
        code, _, err = run_subprocess(
            "extract", "--model", tiny_model_dir, fifo, "-o", tmp_path / "o.npz", "--quiet", "--pool", "mean"
        )
    finally:
        writer.wait(timeout=60)
    assert code == 0, err
    assert np.load(tmp_path / "o.npz")["hidden_states.0"].shape[0] == 2


def test_a_bad_line_after_finished_shards_keeps_them_for_resume(tmp_path, tiny_model_dir):
    """A failure after some shards are listed keeps them: the fixed input resumes."""
    src = tmp_path / "in.jsonl"
    good = [json.dumps({"text": t}) for t in ("one", "two", "three")]
    src.write_text("\n".join(good) + '\n{"text": "\\ud800"}\n', encoding="utf-8")
    out = tmp_path / "feats"
    args = ["extract", "--model", tiny_model_dir, src, "-o", out, "--shard-size", "2", "--quiet"]
    assert_one_line_error(run(*args), "line 4", "surrogate")
    assert json.loads((out / MANIFEST).read_text())["shards"][0]["count"] == 2
    src.write_text("\n".join(good) + '\n{"text": "four"}\n', encoding="utf-8")
    assert run(*args, "--resume")[0] == 0


# ----------------------------------------------------------------------------- outputs: where extract writes


def _same_file(tmp_path, src):
    return src, src, ["the input"], []


def _symlink_to_input(tmp_path, src):
    (tmp_path / "link.jsonl").symlink_to(src)
    return src, tmp_path / "link.jsonl", ["the input"], []


def _hard_link_to_input(tmp_path, src):
    os.link(src, tmp_path / "hard.jsonl")
    return src, tmp_path / "hard.jsonl", ["the input"], []


def _bare_extension(tmp_path, src):
    return src, tmp_path / ".npz", ["no name before .npz"], []


def _unknown_format(tmp_path, src):
    return src, tmp_path / "o.csv", ["unknown output format"], []


def _missing_parent(tmp_path, src):
    return src, tmp_path / "nope" / "o.npz", ["does not exist"], []


def _parent_is_a_file(tmp_path, src):
    (tmp_path / "afile").write_text("the user's file")
    return src, tmp_path / "afile" / "feats", ["cannot create output directory"], []


def _file_for_a_directory(tmp_path, src):
    (tmp_path / "feats").write_text("the user's file")
    return src, tmp_path / "feats", ["exists and is not a directory"], []


def _non_empty_directory(tmp_path, src):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's file")
    return src, tmp_path / "mine", ["not empty", "--resume"], []


def _non_empty_directory_resumed(tmp_path, src):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's file")
    return src, tmp_path / "mine", ["not empty", "no manifest.json"], ["--resume"]


def _model_file(tmp_path, src):
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    return src, model / "model.safetensors", ["a file of the model"], ["--model", model]


def _directory_holding_the_input(tmp_path, src):
    out = tmp_path / "feats"
    assert run("extract", "--model", TINY, src, "-o", out, "--quiet")[0] == 0
    shutil.copy(src, out / "in.jsonl")
    return out / "in.jsonl", out, ["holds the input"], ["--resume"]


def _directory_holding_a_hard_link(tmp_path, src):
    out = tmp_path / "feats"
    assert run("extract", "--model", TINY, src, "-o", out, "--quiet")[0] == 0
    os.link(src, out / "linked.jsonl")
    return src, out, ["holds the input"], ["--resume"]


OUTPUT_PATHS = [
    _same_file,
    _symlink_to_input,
    _hard_link_to_input,
    _bare_extension,
    _unknown_format,
    _missing_parent,
    _parent_is_a_file,
    _file_for_a_directory,
    _non_empty_directory,
    _non_empty_directory_resumed,
    _model_file,
    _directory_holding_the_input,
    _directory_holding_a_hard_link,
]


@pytest.mark.parametrize("make", OUTPUT_PATHS, ids=lambda f: f.__name__.strip("_"))
def test_output_path(tmp_path, make):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello"}\n{"text": "world"}\n', encoding="utf-8")
    src, out, names, extra = make(tmp_path, src)
    before = snapshot(tmp_path)
    assert_one_line_error(run("extract", "--model", TINY, src, "-o", out, *extra), out.name, *names)
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("fail", [fail_fsync, fail_mkstemp], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("output", ["o.npz", "o.safetensors", "o.jsonl", "feats"])
def test_write_errors_keep_the_earlier_file(tmp_path, monkeypatch, fail, output):
    src = tmp_path / "in.txt"
    src.write_text("hello\nworld\n", encoding="utf-8")
    out = tmp_path / output
    if out.suffix:
        out.write_bytes(b"the user's earlier output")
    before = snapshot(tmp_path)
    reason = fail(monkeypatch)
    assert_one_line_error(run("extract", "--model", TINY, src, "-o", out, "--quiet"), out.name, reason)
    monkeypatch.undo()
    assert_unchanged(before, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt"] + [output] * bool(out.suffix))


def test_file_size_limit_is_an_error_not_a_kill(tmp_path):
    """Past ``ulimit -f`` the kernel would kill the process with SIGXFSZ, leaving
    no message; minibert ignores the signal, so the write fails with EFBIG,
    the temporary file is removed and the earlier output stays."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS * 40) + "\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    out.write_bytes(b"the user's earlier output")
    before = snapshot(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    result = run_subprocess("extract", "--model", TINY, src, "-o", out, "--quiet", preexec_fn=limit)
    assert_one_line_error(result, "o.npz", "file too large")
    assert_unchanged(before, tmp_path)


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    from minibert.outputs.shards import ShardedWriter
    from minibert.outputs.spec import ExtractSpec

    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    out = tmp_path / "feats"
    first = ShardedWriter(out, ExtractSpec(layers=(0,), num_hidden_layers=2, model="m"))
    with first:
        before = snapshot(tmp_path)
        result = run("extract", "--model", TINY, src, "-o", out, "--resume", "--quiet")
        assert_one_line_error(result, "feats", "another minibert extract is writing")
        assert_unchanged(before, tmp_path)


# ----------------------------------------------------------------------------- outputs: damaged, read back


def _npz_rewrite(path: Path, edit) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _npz_member_lies(path: Path) -> None:
    """A member whose .npy header declares 8 GB but which holds 16 bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10**9,)
    with zipfile.ZipFile(path, "a") as z, z.open("hidden_states.9.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)


def _npz_zip_bomb(path: Path) -> None:
    """A member of ~64 KB that inflates to 64 MiB of zeros."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
    header["shape"] = (1 << 20, 16)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("hidden_states.0x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            block = bytes(1 << 20)
            for _ in range(64):
                f.write(block)


def _truncate(fraction: float):
    def cut(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return cut


def _npz_pop(name: str):
    return lambda p: _npz_rewrite(p, lambda a: a.pop(name))


def _npz_set(name: str, value):
    return lambda p: _npz_rewrite(p, lambda a: a.__setitem__(name, value))


def _npz_edit(name: str, fn):
    return lambda p: _npz_rewrite(p, lambda a: a.__setitem__(name, fn(a[name])))


def _npy_named_npz(path: Path) -> None:
    path.unlink()
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _st_header(edit):
    """Rewrite a .safetensors header (the data unchanged)."""
    return lambda path: rewrite_safetensors_header(path, edit)


def _st_raw_header(raw: bytes):
    def change(path: Path) -> None:
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])

    return change


def _st_meta(key: str, value):
    def edit(h):
        h["__metadata__"][key] = value

    return _st_header(edit)


def _st_share(name: str, other: str):
    """Point tensor ``name``'s data_offsets at ``other``'s bytes (same dtype and shape)."""

    def edit(h):
        h[name]["data_offsets"] = h[other]["data_offsets"]

    return _st_header(edit)


def _st_tensor(name: str, key: str, value):
    def edit(h):
        h[name][key] = value

    return _st_header(edit)


def _jsonl_lines(edit):
    def change(path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")

    return change


def _jsonl_obj(i: int, edit):
    def lines(ls):
        obj = json.loads(ls[i])
        edit(obj)
        ls[i] = json.dumps(obj)
        return ls

    return _jsonl_lines(lines)


def _set(key, value):
    return lambda o: o.__setitem__(key, value)


def _values(fn):
    return lambda o: o["layers"][0].__setitem__("values", fn(o["layers"][0]["values"]))


#: (output file, how to damage it, what the message must name besides the file)
DAMAGED = [
    ("o.npz", _truncate(0.5), ["not an .npz output"]),
    ("o.npz", _truncate(0.0), ["not an .npz output"]),
    ("o.npz", lambda p: p.write_bytes(b"garbage, not a zip"), ["not a zip archive"]),
    ("o.npz", _npy_named_npz, ["a single .npy array"]),
    ("o.npz", _npz_pop("offsets"), ["'offsets'"]),
    ("o.npz", _npz_pop("tokens"), ["'tokens'"]),
    ("o.npz", _npz_pop("settings"), ["'settings'"]),
    ("o.npz", _npz_pop("hidden_states.1"), ["do not match the layers"]),
    ("o.npz", _npz_set("settings", np.asarray("{not json")), ["'settings'", "not valid JSON"]),
    ("o.npz", _npz_set("settings", np.asarray("[1, 2]")), ["'settings'", "JSON object"]),
    ("o.npz", _npz_set("settings", np.asarray('{"pool": 3}')), ["'pool'"]),
    ("o.npz", _npz_set("settings", np.asarray('{"pool": "none", "x": ' + "9" * 5000 + "}")), ["'settings'"]),
    ("o.npz", _npz_set("settings", np.arange(3)), ["'settings'", "not 0-D strings"]),
    ("o.npz", _npz_set("tokens", np.arange(3)), ["'tokens'", "strings"]),
    ("o.npz", _npz_edit("offsets", lambda o: o[::-1]), ["'offsets'", "not offsets"]),
    ("o.npz", _npz_edit("offsets", lambda o: o.astype(np.float64)), ["'offsets'", "integers"]),
    ("o.npz", _npz_edit("kept_tokens", lambda k: k + 1), ["'kept_tokens'"]),
    ("o.npz", _npz_edit("num_tokens", lambda k: k[:-1]), ["'num_tokens'", "one per text"]),
    ("o.npz", _npz_edit("hidden_states.0", lambda h: np.concatenate([h, h])), ["'hidden_states.0'", "rows"]),
    ("o.npz", _npz_edit("hidden_states.0", lambda h: h[:, 0]), ["'hidden_states.0'", "2-D floats"]),
    ("o.npz", _npz_edit("tokens", lambda t: t[:-1]), ["token strings"]),
    ("o.npz", _npz_set("pickled", np.array([{"a": 1}], dtype=object)), ["pickled.npy", "pickle"]),
    ("o.npz", _npz_member_lies, ["hidden_states.9.npy", "declares"]),
    ("o.npz", _npz_zip_bomb, ["hidden_states.0x.npy", "zip bomb"]),
    ("o.safetensors", _truncate(0.0), ["too short"]),
    ("o.safetensors", lambda p: p.write_bytes(b"\xff" * 64), ["runs past the end"]),
    ("o.safetensors", _truncate(0.9), ["data_offsets"]),
    ("o.safetensors", _st_raw_header(b"{not json}      "), ["header", "not valid JSON"]),
    ("o.safetensors", _st_raw_header(b"[" * 5000 + b"]" * 5000), ["header", "deep"]),
    ("o.safetensors", _st_raw_header(b"\xff\xfe not utf-8 "), ["header", "UTF-8"]),
    ("o.safetensors", _st_raw_header(b'["a list"]      '), ["header", "JSON object"]),
    ("o.safetensors", _st_tensor("hidden_states.0", "dtype", "F8_E4M3"), ["'hidden_states.0'", "F8_E4M3"]),
    ("o.safetensors", _st_tensor("hidden_states.0", "dtype", ["F32"]), ["'hidden_states.0'", "dtype"]),
    ("o.safetensors", _st_tensor("offsets", "shape", [-1]), ["'offsets'", "shape"]),
    ("o.safetensors", _st_tensor("offsets", "shape", "6"), ["'offsets'", "shape"]),
    ("o.safetensors", _st_tensor("offsets", "shape", [7]), ["'offsets'", "needs"]),
    ("o.safetensors", _st_tensor("offsets", "data_offsets", [0, 10**12]), ["'offsets'", "data_offsets"]),
    ("o.safetensors", _st_tensor("offsets", "data_offsets", [8, 4]), ["'offsets'", "data_offsets"]),
    ("o.safetensors", _st_tensor("offsets", "data_offsets", None), ["'offsets'", "data_offsets"]),
    # two arrays on the same bytes (old: read, the other's values under this name): refused as an overlap
    ("o.safetensors", _st_share("num_tokens", "kept_tokens"), ["'num_tokens'", "a gap or an overlap"]),
    ("o.safetensors", _st_header(lambda h: h.pop("kept_tokens")), ["'kept_tokens'"]),
    ("o.safetensors", _st_header(lambda h: h.__setitem__("__metadata__", [1])), ["__metadata__"]),
    ("o.safetensors", _st_header(lambda h: h["__metadata__"].pop("settings")), ["'settings'"]),
    ("o.safetensors", _st_meta("settings", "{not json"), ["'settings'", "not valid JSON"]),
    (
        "o.safetensors",
        _st_meta("settings", '{"pool": "none", "num_hidden_layers": "2"}'),
        ["num_hidden_layers"],
    ),
    ("o.safetensors", _st_meta("tokens", '{"a": 1}'), ["'tokens'", "JSON list"]),
    ("o.safetensors", _st_meta("tokens", '["\\ud800"]'), ["'tokens'", "surrogate"]),
    ("o.safetensors", _st_meta("tokens", "[1, 2]"), ["token strings"]),
    ("o.safetensors", _st_meta("tokens", "[]"), ["token strings"]),
    ("o.jsonl", _jsonl_lines(lambda ls: ls[:1] + ["{broken"] + ls[1:]), ["line 2", "not valid JSON"]),
    ("o.jsonl", _jsonl_lines(lambda ls: ls[:2] + [""] + ls[2:]), ["line 3", "not valid JSON"]),
    ("o.jsonl", _jsonl_lines(lambda ls: ["[1, 2]"] + ls), ["line 1", "JSON object"]),
    ("o.jsonl", _jsonl_lines(lambda ls: ls[1:2] + ls[:1] + ls[2:]), ["line 1", "index is 1, expected 0"]),
    (
        "o.jsonl",
        _jsonl_lines(lambda ls: [ls[0].replace('"tokens"', '"x": ' + "9" * 5000 + ', "tokens"')]),
        ["line 1"],
    ),
    ("o.jsonl", _jsonl_lines(lambda ls: ["[" * 100_000 + "]" * 100_000]), ["line 1", "deep"]),
    ("o.jsonl", _jsonl_obj(1, _set("tokens", "a b")), ["line 2", "'tokens'"]),
    ("o.jsonl", _jsonl_obj(1, _set("tokens", ["\ud800"])), ["line 2", "surrogate"]),
    ("o.jsonl", _jsonl_obj(0, _set("layers", {"index": 0})), ["line 1", "'layers'"]),
    ("o.jsonl", _jsonl_obj(0, _set("layers", [7])), ["line 1", "'layers'"]),
    ("o.jsonl", _jsonl_obj(0, _set("num_tokens", -1)), ["line 1", "num_tokens"]),
    ("o.jsonl", _jsonl_obj(0, _set("num_tokens", "5")), ["line 1", "num_tokens"]),
    ("o.jsonl", _jsonl_obj(0, lambda o: o["layers"].pop()), ["line 2", "differ from the first line"]),
    ("o.jsonl", _jsonl_obj(1, lambda o: o["layers"].pop()), ["line 2", "differ from the first line"]),
    ("o.jsonl", _jsonl_obj(0, lambda o: o["layers"][0].__setitem__("index", [0])), ["line 1", "layer index"]),
    ("o.jsonl", _jsonl_obj(0, _values(lambda v: v[:-1])), ["line 1", "shape"]),
    ("o.jsonl", _jsonl_obj(0, _values(lambda v: [v[0][:-1]] + v[1:])), ["line 1", "rows of equal length"]),
    (
        "o.jsonl",
        _jsonl_obj(0, _values(lambda v: [["x"] * len(v[0])] + v[1:])),
        ["line 1", "not a list of numbers"],
    ),
    (
        "o.jsonl",
        _jsonl_obj(0, _values(lambda v: [[None] + v[0][1:]] + v[1:])),
        ["line 1", "not a list of numbers"],
    ),  # a null was read back as NaN
    ("o.jsonl", _jsonl_obj(1, _values(lambda v: v[0])), ["line 2", "unlike the first line"]),
    ("o.jsonl", _jsonl_obj(1, _values(lambda v: [r + [0.0] for r in v])), ["different widths"]),
    (
        "o.jsonl",
        lambda p: p.write_bytes(p.read_bytes() + b'{"index": 5, "text": "caf\xe9"}\n'),
        ["line 6", "UTF-8"],
    ),
    ("words.jsonl", _jsonl_obj(0, _set("spans", [[0, 1, 2]])), ["line 1", "'spans'"]),
    ("words.jsonl", _jsonl_obj(0, _set("words", [1])), ["line 1", "'words'"]),
    ("words.jsonl", _jsonl_obj(1, lambda o: o.pop("words")), ["line 2", "'words' on some lines"]),
]


def _npz_settings(edit):
    """Edit the settings an .npz output records."""

    def change(settings: np.ndarray) -> np.ndarray:
        s = json.loads(str(settings[()]))
        edit(s)
        return np.asarray(json.dumps(s))

    return _npz_edit("settings", change)


def _st_settings(edit):
    """Edit the settings a .safetensors output records (in its header metadata)."""

    def change(h):
        s = json.loads(h["__metadata__"]["settings"])
        edit(s)
        h["__metadata__"]["settings"] = json.dumps(s)

    return _st_header(change)


def _st_reshape(name: str):
    """A 1-D tensor made 2-D (4 rows): the same bytes, another shape."""

    def change(h):
        h[name]["shape"] = [4, h[name]["shape"][0] // 4]

    return _st_header(change)


def _pop(*keys):
    return lambda s: [s.pop(k) for k in keys]


def _maps(edit):
    """Edit the "attentions" entries of a .jsonl line."""
    return lambda o: edit(o["attentions"])


def _stats(edit):
    return lambda o: edit(o["attention_stats"])


def _every_line(edit):
    def lines(ls):
        return [json.dumps(_edited(json.loads(line), edit)) for line in ls]

    return _jsonl_lines(lines)


def _edited(obj, edit):
    edit(obj)
    return obj


def _npz_relayer(settings_layers: list[int], array_layers: list[int]):
    """An .npz whose settings record ``settings_layers`` while its arrays hold ``array_layers``
    (the feature arrays renamed to match, so the arrays agree among themselves)."""

    def edit(arrays):
        features = [arrays.pop(f"hidden_states.{i}") for i in arrays["layers"]]
        for i, a in zip(array_layers, features, strict=False):
            arrays[f"hidden_states.{i}"] = a
        arrays["layers"] = np.asarray(array_layers, dtype=np.int64)
        s = json.loads(str(arrays["settings"][()]))
        s["layers"] = settings_layers
        arrays["settings"] = np.asarray(json.dumps(s))

    return lambda p: _npz_rewrite(p, edit)


def _jsonl_value(i: int, v):
    """Line 1's first layer: row 0's value i replaced by ``v``."""
    return _jsonl_obj(0, _values(lambda rows: [rows[0][:i] + [v] + rows[0][i + 1 :]] + rows[1:]))


# issue 17: settings that disagree with the arrays, and JSON values of the wrong type
DAMAGED += [
    ("o.npz", _npz_relayer([0, 1], [0, 6]), ["settings 'layers' are [0, 1], the arrays hold [0, 6]"]),
    ("o.npz", _npz_relayer([0, 1, 2], [0, 1, 6]), ["settings 'layers'", "[0, 1, 6]"]),
    ("o.npz", _npz_relayer([0, 1, 6], [0, 1, 6]), ["settings 'layers' [0, 1, 6]", "'num_hidden_layers'"]),
    ("o.npz", _npz_relayer([2, 1, 0], [0, 1, 2]), ["settings 'layers' are [2, 1, 0]"]),
    ("o.npz", _npz_settings(lambda s: s.update(num_hidden_layers=1)), ["'layers'", "'num_hidden_layers'"]),
    ("o.npz", _npz_settings(lambda s: s.update(layers=[-1])), ["settings 'layers' [-1]"]),
    ("o.npz", _npz_settings(lambda s: s.update(combine="mean")), ["settings 'combine' is 'mean'"]),
    ("o.npz", _npz_settings(lambda s: s.update(word_pool="mean")), ["settings 'word_pool' is 'mean'"]),
    (
        "o.npz",
        _npz_settings(lambda s: s.update(output_dtype="float16")),
        ["'hidden_states.0'", "output_dtype"],
    ),
    ("o.npz", _npz_settings(lambda s: s.update(output_dtype="int8")), ["'output_dtype' is 'int8'"]),
    ("o.npz", _npz_edit("hidden_states.2", lambda h: h.astype(np.float64)), ["'hidden_states.2' is float64"]),
    ("o.npz", _npz_settings(lambda s: s.update(pool="mean")), ["'hidden_states.0'", "one per text"]),
    ("o.safetensors", _st_settings(lambda s: s.update(layers=[0, 1])), ["settings 'layers' are [0, 1]"]),
    ("o.safetensors", _st_settings(lambda s: s.update(output_dtype="float64")), ["output_dtype"]),
    ("o.safetensors", _st_settings(lambda s: s.update(combine="concat")), ["settings 'combine'"]),
    ("words.jsonl", _jsonl_obj(0, _set("spans", [[0, True]] + [[0, 1]] * 2)), ["line 1", "'spans'"]),
    ("words.jsonl", _jsonl_obj(0, lambda o: o["spans"][0].__setitem__(1, 1.5)), ["line 1", "'spans'"]),
    ("o.jsonl", _jsonl_value(3, True), ["line 1", "not a list of numbers"]),
    ("o.jsonl", _jsonl_value(0, False), ["line 1", "not a list of numbers"]),
    ("o.jsonl", _jsonl_value(1, "1.5"), ["line 1", "not a list of numbers"]),
    ("o.jsonl", _jsonl_value(1, [1.5]), ["line 1", "not a list of numbers"]),
    ("o.jsonl", _jsonl_obj(1, _set("index", True)), ["line 2", "index is True"]),
]


#: Outputs with attention maps or statistics, damaged: (output file, how, what the message must name)
DAMAGED_ATTENTIONS = [
    ("maps.npz", _npz_pop("attention_offsets"), ["'attention_offsets'"]),
    ("maps.npz", _npz_edit("attention_offsets", lambda o: o[::-1]), ["'attention_offsets'", "not offsets"]),
    (
        "maps.npz",
        _npz_edit("attention_offsets", lambda o: o * 2),
        ["'attention_offsets'", "disagree with 4 heads"],
    ),
    ("maps.npz", _npz_edit("attentions.2", lambda a: a[:-1]), ["'attentions.2'", "holds", "say"]),
    ("maps.npz", _npz_edit("attentions.2", lambda a: a.reshape(4, -1)), ["'attentions.2'", "1-D floats"]),
    ("maps.npz", _npz_edit("attentions.2", lambda a: a.astype(np.int64)), ["'attentions.2'", "1-D floats"]),
    ("maps.npz", _npz_pop("attentions.1"), ["attention maps", "do not match 'attention_layers'"]),
    ("maps.npz", _npz_set("attention_layers", np.array([0, 2])), ["'attention_layers'", "not the selected"]),
    ("maps.npz", _npz_set("attention_layers", np.array([2, 1])), ["'attention_layers'", "not the selected"]),
    ("maps.npz", _npz_pop("attention_layers"), ["'attention_layers'"]),
    (
        "maps.npz",
        _npz_edit("attention_layers", lambda a: a.astype(float)),
        ["'attention_layers'", "integers"],
    ),
    ("maps.npz", _npz_settings(lambda s: s.update(attentions="all")), ["'attentions'", "not maps or stats"]),
    (
        "maps.npz",
        _npz_settings(lambda s: s.update(attentions="stats")),
        ["record attentions 'stats'", "maps"],
    ),
    ("maps.npz", _npz_settings(_pop("attentions", "num_attention_heads")), ["record attentions 'none'"]),
    (
        "maps.npz",
        _npz_settings(_pop("num_attention_heads")),
        ["one of 'attentions' and 'num_attention_heads'"],
    ),
    ("maps.npz", _npz_settings(lambda s: s.update(num_attention_heads=3)), ["disagree with 3 heads"]),
    ("maps.npz", _npz_settings(lambda s: s.update(num_attention_heads="4")), ["'num_attention_heads'"]),
    ("maps.npz", _npz_settings(lambda s: s.update(num_attention_heads=0)), ["'num_attention_heads'"]),
    ("maps.npz", _npz_set("attention_stats.entropy", np.zeros((5, 2, 4))), ["both attention maps and"]),
    ("stats.npz", _npz_pop("attention_stats.to_sep"), ["attention statistics", "are not entropy"]),
    (
        "stats.npz",
        _npz_edit("attention_stats.to_sep", lambda a: np.concatenate([a, a], axis=-1)),
        ["'attention_stats.to_sep'", "(texts, layers, heads)"],
    ),
    ("stats.npz", _npz_edit("attention_stats.to_sep", lambda a: a.astype(np.int64)), ["3-D floats"]),
    ("stats.npz", _npz_set("attention_offsets", np.zeros(6, np.int64)), ["'attention_offsets' in an output"]),
    ("stats.npz", _npz_settings(lambda s: s.update(num_attention_heads=3)), ["(texts, layers, heads)"]),
    ("stats.npz", _npz_settings(lambda s: s.update(attentions="maps")), ["record attentions 'maps'", "stat"]),
    (
        "stats.npz",
        _npz_settings(lambda s: s.update(layers=[0, 2])),
        ["'attention_layers'", "not the selected"],
    ),
    ("maps.safetensors", _st_reshape("attentions.1"), ["'attentions.1'", "1-D floats"]),
    (
        "maps.safetensors",
        _st_tensor("attention_offsets", "dtype", "F64"),
        ["'attention_offsets'", "integers"],
    ),
    ("maps.safetensors", _st_settings(lambda s: s.update(num_attention_heads=None)), ["num_attention_heads"]),
    ("maps.safetensors", _st_header(lambda h: h.pop("attentions.2")), ["do not match 'attention_layers'"]),
    ("maps.safetensors", _st_header(lambda h: h.pop("attention_offsets")), ["'attention_offsets'"]),
    ("maps.jsonl", _jsonl_obj(0, _maps(lambda m: m[0]["values"][0].pop())), ["line 1", "equal lengths"]),
    (
        "maps.jsonl",
        _jsonl_obj(0, _maps(lambda m: [q.pop() for q in m[0]["values"]])),
        ["line 1", "expected (h, "],
    ),
    (
        "maps.jsonl",
        _jsonl_obj(0, _maps(lambda m: m[0].__setitem__("index", "x"))),
        ["line 1", "'x'", "integer"],
    ),
    (
        "maps.jsonl",
        _jsonl_obj(1, lambda o: o.pop("attentions")),
        ["line 2", "no attention, unlike the first"],
    ),
    (
        "maps.jsonl",
        _jsonl_obj(0, lambda o: o.pop("attentions")),
        ["line 2", "'attentions', unlike the first"],
    ),
    (
        "maps.jsonl",
        _jsonl_obj(0, _maps(lambda m: m[0].__setitem__("values", [["a"]]))),
        ["line 1", "not lists of numbers"],
    ),
    ("maps.jsonl", _jsonl_obj(1, _maps(lambda m: m.pop())), ["line 2", "differ from the first line's"]),
    (
        "maps.jsonl",
        _jsonl_obj(1, _maps(lambda m: [e["values"].pop() for e in m])),
        ["line 2", "attention heads"],
    ),
    (
        "maps.jsonl",
        _jsonl_obj(0, _set("attentions", {"index": 1})),
        ["line 1", "'attentions' must be a list"],
    ),
    ("maps.jsonl", _jsonl_obj(0, _set("attention_stats", {})), ["line 1", "both"]),
    ("maps.jsonl", _jsonl_obj(0, _maps(lambda m: m[1].__setitem__("index", 1))), ["line 1", "not distinct"]),
    (
        "maps.jsonl",
        _every_line(_maps(lambda m: [e.__setitem__("index", e["index"] - 1) for e in m])),
        ["'attention_layers' [0, 1] are not the selected encoder layers"],
    ),
    ("stats.jsonl", _jsonl_obj(0, _stats(lambda s: s.pop("to_self"))), ["line 1", "must hold 'layers'"]),
    ("stats.jsonl", _jsonl_obj(0, _stats(lambda s: s["to_self"].pop())), ["line 1", "statistics of shapes"]),
    ("stats.jsonl", _jsonl_obj(0, _stats(lambda s: s.__setitem__("layers", "x"))), ["line 1", "'layers'"]),
    (
        "stats.jsonl",
        _jsonl_obj(0, _stats(lambda s: s.__setitem__("layers", ["a", "b"]))),
        ["line 1", "not distinct integers"],
    ),
    (
        "stats.jsonl",
        _jsonl_obj(0, _stats(lambda s: s.__setitem__("entropy", [["x"] * 4] * 2))),
        ["line 1", "entropy", "not lists of numbers"],
    ),
    ("stats.jsonl", _jsonl_obj(1, lambda o: o.pop("attention_stats")), ["line 2", "no attention, unlike"]),
    # issue 17: dtypes that disagree with the settings, booleans where numbers should be
    ("maps.npz", _npz_edit("attentions.2", lambda a: a.astype(np.float16)), ["'attentions.2' is float16"]),
    ("maps.safetensors", _st_settings(lambda s: s.update(output_dtype="float16")), ["output_dtype"]),
    (
        "stats.npz",
        _npz_edit("attention_stats.to_sep", lambda a: a.astype(np.float64)),
        ["'attention_stats.to_sep' is float64", "output_dtype"],
    ),
    ("maps.jsonl", _jsonl_obj(0, _maps(lambda m: m[0]["values"][0][0].__setitem__(0, True))), ["not lists"]),
    (
        "stats.jsonl",
        _jsonl_obj(0, _stats(lambda s: s["entropy"][0].__setitem__(0, True))),
        ["line 1", "entropy", "not lists of numbers"],
    ),
]


@pytest.mark.parametrize(
    "name, damage, names", DAMAGED_ATTENTIONS, ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGED_ATTENTIONS)]
)
def test_damaged_attention_output(written, tmp_path, name, damage, names):
    check_damaged_output(written, tmp_path, name, damage, names)


@pytest.mark.parametrize("name, damage, names", DAMAGED, ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGED)])
def test_damaged_output(written, tmp_path, name, damage, names):
    check_damaged_output(written, tmp_path, name, damage, names)


def check_damaged_output(written, tmp_path, name, damage, names) -> None:
    """A copy of the written output ``name``, damaged: ``summary`` of it is one
    line naming the file and ``names``, and changes no file."""
    path = copy_of(written, name, tmp_path)
    damage(path)
    before = snapshot(tmp_path)
    assert_one_line_error(run("summary", path), path.name, *names)
    assert_unchanged(before, tmp_path)


# ----------------------------------------------------------------------------- manifests


def _manifest(edit):
    def change(d: Path) -> None:
        m = json.loads((d / MANIFEST).read_text())
        edit(m)
        (d / MANIFEST).write_text(json.dumps(m))

    return change


def _entry(i: int, key: str, value):
    return _manifest(lambda m: m["shards"][i].__setitem__(key, value))


def _raw_manifest(text: str):
    return lambda d: (d / MANIFEST).write_text(text)


def _shard_symlinked_out(d: Path) -> None:
    outside = d.parent / "elsewhere"
    outside.mkdir()
    shard = d / "shard-00001.safetensors"
    shard.rename(outside / shard.name)
    shard.symlink_to(outside / shard.name)


def _patch_tensor(name: str, fn):
    """Change tensor ``name`` of shard 1 in place and record the shard's new
    sha256 in the manifest: a shard that is whole, but not what the manifest says."""

    def change(d: Path) -> None:
        import hashlib

        shard = d / "shard-00001.safetensors"
        data = bytearray(shard.read_bytes())
        (n,) = struct.unpack("<Q", data[:8])
        spec = json.loads(data[8 : 8 + n])[name]
        a, b = (8 + n + o for o in spec["data_offsets"])
        values = np.frombuffer(bytes(data[a:b]), "<i8").copy()
        data[a:b] = fn(values).astype("<i8").tobytes()
        shard.write_bytes(bytes(data))
        _entry(1, "sha256", hashlib.sha256(data).hexdigest())(d)

    return change


def _manifest_symlinked_out(d: Path) -> None:
    """manifest.json a link to a copy of itself outside the directory: intact, but not in it."""
    outside = d.parent / "elsewhere.json"
    (d / MANIFEST).rename(outside)
    (d / MANIFEST).symlink_to(outside)


def _manifest_replaced(make):
    def change(d: Path) -> None:
        (d / MANIFEST).unlink()
        make(d / MANIFEST)

    return change


#: (how to damage the shard directory, what the message must name besides manifest.json or the shard)
MANIFESTS = [
    (lambda d: (d / MANIFEST).unlink(), [MANIFEST, "not found"]),
    (_raw_manifest("{not json"), [MANIFEST, "not valid JSON"]),
    (_raw_manifest("[" * 100_000 + "]" * 100_000), [MANIFEST, "deep"]),
    (_raw_manifest('{"format": "minibert-shards", "version": ' + "1" * 5000 + "}"), [MANIFEST]),
    (_raw_manifest('["minibert-shards"]'), [MANIFEST, "JSON object"]),
    (_raw_manifest('{"format": "minibert-shards", "version": NaN}'), [MANIFEST, "NaN"]),
    (_manifest(lambda m: m.__setitem__("format", "other")), [MANIFEST, "format"]),
    (_manifest(lambda m: m.__setitem__("version", 99)), [MANIFEST, "version 99"]),
    (_manifest(lambda m: m.pop("shards")), [MANIFEST, "'shards'"]),
    (_manifest(lambda m: m.__setitem__("shards", {"0": 1})), [MANIFEST, "'shards'", "not a list"]),
    (_manifest(lambda m: m.__setitem__("complete", "yes")), [MANIFEST, "'complete'"]),
    (_manifest(lambda m: m.__setitem__("num_texts", "5")), [MANIFEST, "'num_texts'"]),
    (_manifest(lambda m: m.__setitem__("num_texts", 6)), [MANIFEST, "'num_texts' is 6"]),
    (_manifest(lambda m: m.__setitem__("settings", [1])), [MANIFEST, "settings"]),
    (_manifest(lambda m: m["settings"].__setitem__("layers", "all")), [MANIFEST, "'layers'"]),
    (_manifest(lambda m: m["settings"].__setitem__("pool", None)), [MANIFEST, "'pool'"]),
    (_manifest(lambda m: m["settings"].__setitem__("shard_size", 0)), [MANIFEST, "'shard_size'"]),
    (_manifest(lambda m: m["shards"].__setitem__(1, "shard-00001.safetensors")), [MANIFEST, "shards[1]"]),
    (_entry(1, "count", "2"), [MANIFEST, "shards[1].count"]),
    (_entry(1, "count", True), [MANIFEST, "shards[1].count"]),
    (_entry(1, "bytes", -5), [MANIFEST, "shards[1].bytes"]),
    (_entry(1, "sha256", None), [MANIFEST, "shards[1].sha256"]),
    (_entry(1, "file", "../escape.safetensors"), [MANIFEST, "shards[1].file", "../escape"]),
    (_entry(1, "file", "/etc/passwd"), [MANIFEST, "shards[1].file", "/etc/passwd"]),
    (_entry(1, "file", "shard-00002.safetensors"), [MANIFEST, "shards[1].file"]),
    (_entry(1, "first", 3), [MANIFEST, "shards[1]", "not chunk 1"]),
    (_entry(1, "count", 3), [MANIFEST, "shards[1]", "not chunk 1"]),
    (_manifest(lambda m: m["shards"].reverse()), [MANIFEST, "shards[1]", "comes after"]),
    (_manifest(lambda m: m["shards"].pop(1)), [MANIFEST, "shards are missing"]),
    (lambda d: (d / "shard-00001.safetensors").unlink(), ["shard-00001.safetensors", "missing"]),
    (lambda d: _truncate(0.5)(d / "shard-00001.safetensors"), ["shard-00001.safetensors", "corrupt"]),
    (_entry(1, "sha256", "0" * 64), ["shard-00001.safetensors", "corrupt"]),
    (_shard_symlinked_out, ["shard-00001.safetensors", "outside"]),
    # issue 17: a manifest that is not a regular file of the directory; settings beyond the model
    (_manifest_symlinked_out, [MANIFEST, "elsewhere.json", "outside"]),
    (_manifest_replaced(lambda p: p.mkdir()), [MANIFEST, "not a regular file"]),
    (_manifest_replaced(os.mkfifo), [MANIFEST, "not a regular file"]),
    (_manifest(lambda m: m["settings"].__setitem__("layers", [0, 9])), [MANIFEST, "'layers' [0, 9]"]),
    (_patch_tensor("index", lambda i: i + 1), ["shard-00001.safetensors", "'index'"]),
    (_patch_tensor("offsets", lambda o: o[::-1]), ["shard-00001.safetensors", "'offsets'"]),
]


@pytest.mark.parametrize("damage, names", MANIFESTS, ids=[f"manifest-{i}" for i in range(len(MANIFESTS))])
def test_damaged_shard_directory(written, tmp_path, damage, names):
    check_damaged_shard_directory(written / "feats", tmp_path, damage, names)


def check_damaged_shard_directory(directory: Path, tmp_path, damage, names) -> None:
    """A copy of shard directory ``directory``, damaged: ``summary`` of it is one
    line naming ``names``, and changes no file."""
    d = copy_of(directory.parent, directory.name, tmp_path)
    damage(d)
    before = snapshot(tmp_path)
    assert_one_line_error(run("summary", d), *names)
    assert_unchanged(before, tmp_path)


#: A resumed run trusts the directory no more than a reader: every damage but the
#: last two (a shard whose recorded sha256 was forged to match new content: a
#: resume checks size and sha256, the reader checks the content too).
RESUMED = MANIFESTS[:-2]


@pytest.mark.parametrize("damage, names", RESUMED, ids=[f"resume-{i}" for i in range(len(RESUMED))])
def test_resume_of_a_damaged_shard_directory(written, tmp_path, damage, names):
    d = copy_of(written, "feats", tmp_path)
    damage(d)
    before = snapshot(tmp_path)
    src = written / "in.txt"
    result = run("extract", "--model", TINY, src, "-o", d, "--quiet", "--pool", "none", "--shard-size", "2",
                 "--resume")  # fmt: skip
    assert_one_line_error(result, names[0])
    assert_unchanged(before, tmp_path)


#: Shard directories with attention maps, damaged.
DAMAGED_ATTENTION_SHARDS = [
    (_manifest(lambda m: m["settings"].__setitem__("attentions", "yes")), [MANIFEST, "'attentions'"]),
    (_manifest(lambda m: m["settings"].pop("num_attention_heads")), [MANIFEST, "'num_attention_heads'"]),
    (
        _manifest(lambda m: m["settings"].__setitem__("num_attention_heads", 0)),
        [MANIFEST, "num_attention_heads"],
    ),
    (
        _manifest(lambda m: m["settings"].__setitem__("attentions", "stats")),
        ["shard-00000", "other settings"],
    ),
    (_patch_tensor("attention_offsets", lambda o: o * 2), ["shard-00001.safetensors", "'attention_offsets'"]),
    (_patch_tensor("attention_layers", lambda o: o[::-1]), ["shard-00001.safetensors", "'attention_layers'"]),
]


@pytest.mark.parametrize(
    "damage, names",
    DAMAGED_ATTENTION_SHARDS,
    ids=[f"attention-shards-{i}" for i in range(len(DAMAGED_ATTENTION_SHARDS))],
)
def test_damaged_attention_shard_directory(written, tmp_path, damage, names):
    check_damaged_shard_directory(written / "mapsdir", tmp_path, damage, names)


def _copy_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    return model


def _edit_json(name: str, key: str, value):
    def edit(model: Path) -> None:
        obj = json.loads((model / name).read_text())
        obj[key] = value
        (model / name).write_text(json.dumps(obj))

    return edit


#: A model file edited between a killed run and its resume: each changes the numbers.
MODEL_EDITS = [
    ("config.json", _edit_json("config.json", "layer_norm_eps", 1e-5)),
    ("tokenizer.json", _edit_json("tokenizer.json", "truncation", None)),
    ("tokenizer_config.json", _edit_json("tokenizer_config.json", "do_lower_case", False)),
    (
        "model.safetensors",
        lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()),
    ),
]


@pytest.mark.parametrize("name, edit", MODEL_EDITS[:3], ids=[e[0] for e in MODEL_EDITS[:3]])
def test_resume_refuses_a_changed_model_file(tmp_path, name, edit):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model, out = _copy_model(tmp_path), tmp_path / "feats"
    args = ["extract", "--model", model, src, "-o", out, "--shard-size", "2", "--quiet"]
    assert run(*args)[0] == 0
    manifest = as_if_killed(out, keep=1)
    assert sorted(manifest["settings"]["model_files"]) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    )
    edit(model)
    before = snapshot(tmp_path)
    assert_one_line_error(run(*args, "--resume"), MANIFEST, f"the model's {name} changed")
    assert_unchanged(before, tmp_path)


def test_resume_accepts_the_same_model_bytes(tmp_path):
    """Rewriting a model file with the same bytes is not a change."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model, out = _copy_model(tmp_path), tmp_path / "feats"
    args = ["extract", "--model", model, src, "-o", out, "--shard-size", "2", "--quiet"]
    assert run(*args)[0] == 0
    MODEL_EDITS[3][1](model)
    assert run(*args, "--resume")[0] == 0


# ----------------------------------------------------------------------------- arguments

EXTRACT = ["extract", "--model", str(TINY), "{src}", "-o", "{out}"]

#: (argv with {src}/{out} placeholders, what the message must name)
ARGUMENTS = [
    (["frobnicate"], ["invalid choice"]),
    (["extract", "{src}"], ["-o/--output", "required"]),
    ([*EXTRACT, "--pool", "nope"], ["--pool", "invalid choice"]),
    ([*EXTRACT, "--batch-size", "0"], ["--batch-size"]),
    ([*EXTRACT, "--batch-size", "ten"], ["--batch-size", "'ten'"]),
    ([*EXTRACT, "--shard-size", "9" * 30], ["--shard-size"]),
    ([*EXTRACT, "--shard-size", "9" * 5000], ["--shard-size"]),
    ([*EXTRACT, "--threads", "0"], ["--threads"]),
    ([*EXTRACT, "--threads", "1000000"], ["--threads"]),
    ([*EXTRACT, "--max-length", "0"], ["--max-length"]),
    ([*EXTRACT, "--max-length", "100000"], ["--max-length", "exceeds"]),
    ([*EXTRACT, "--stride", "-2", "--long", "window"], ["--stride"]),
    ([*EXTRACT, "--stride", "4"], ["--stride", "--long window"]),
    ([*EXTRACT, "--layers", "99"], ["--layers", "out of range"]),
    ([*EXTRACT, "--layers", "::0"], ["--layers"]),
    ([*EXTRACT, "--layers", "1\n2"], ["--layers", "1\\n2"]),
    ([*EXTRACT, "--layers", "9" * 5000], ["--layers"]),
    ([*EXTRACT, "--normalize", "--pool", "none"], ["--normalize"]),
    ([*EXTRACT, "--word-pool", "mean", "--pool", "mean"], ["--word-pool"]),
    ([*EXTRACT, "--resume"], ["--resume", "directory"]),
    ([*EXTRACT, "--engine", "dask"], ["--engine dask", "directory"]),
    ([*EXTRACT, "--scheduler", "tcp://127.0.0.1:1"], ["--scheduler"]),
    ([*EXTRACT, "--workers", "2"], ["--workers"]),
    ([*EXTRACT, "--attentions", "--attention-stats"], ["--attention-stats", "not allowed with"]),
    ([*EXTRACT, "--attentions", "--long", "window"], ["--attentions/--attention-stats", "--long window"]),
    ([*EXTRACT, "--attention-stats", "--layers", "0"], ["--attentions/--attention-stats", "--layers 0"]),
    ([*EXTRACT, "--attentions=yes"], ["--attentions", "ignored explicit argument"]),
    (["explain", "--model", str(TINY), "hello", "--pad", "-1"], ["--pad"]),
    (["explain", "--model", str(TINY), "he\udcffllo"], ["TEXT", "UTF-8", "0xff"]),
    (["explain", "--model", str(TINY), "hello", "--layer", "99"], ["--layer 99"]),
    (["explain", "--model", str(TINY), "hello", "--head", "99"], ["--head 99"]),
    (["explain", "--model", str(TINY), "hello", "--token", "99"], ["--token 99"]),
    (["explain", "--model", str(TINY), "hello", "--token", "nope"], ["--token 'nope'"]),
    (["explain", "--model", str(TINY), "hello", "--layer", "9" * 5000], ["--layer"]),
    (["plot", "layers", "--model", str(TINY), "{src}", "-o", "{png}", "--pairs", "-1"], ["--pairs"]),
    (["plot", "layers", "--model", str(TINY), "{src}", "-o", "{png}", "--pairs", "0"], ["--pairs"]),
    (["plot", "layers", "--model", str(TINY), "{src}", "-o", "{png}", "--pairs", "10000000"], ["--pairs"]),
    (["plot", "layers", "--model", str(TINY), "{src}", "-o", "{png}", "--seed", "-1"], ["--seed"]),
    (["plot", "layers", "--model", str(TINY), "{src}", "-o", "{src}"], ["unknown figure format"]),
    (["plot", "attention", "--model", str(TINY), "a\udc80", "-o", "{png}"], ["TEXT", "UTF-8"]),
    (["plot", "attention", "--model", str(TINY), "hi", "-o", "{out}"], ["unknown figure format"]),
    (["plot", "attention", "--model", str(TINY), "hi", "-o", "{png}", "--head", "-1"], ["--head -1"]),
    (["plot", "bars"], ["invalid choice"]),
    (["plot", "heads", "{src}", "-o", "{png}"], ["in.txt", "unknown output format"]),
    (["plot", "heads", "{dir}", "-o", "{png}"], [MANIFEST, "not found"]),
    (["plot", "heads", "{out}", "-o", "{png}"], ["o.npz", "not found"]),
    (["plot", "heads", "{out}", "-o", "{src}"], ["unknown figure format"]),
    (["plot", "heads", "{out}"], ["-o/--output", "required"]),
    (["summary", "{src}"], ["unknown output format"]),
    (["summary", "{dir}"], [MANIFEST, "not found"]),
    (["summary", "{out}"], ["not found"]),
    (["verify", "--model", str(TINY), "--reference", "{src}"], ["not an .npz reference file"]),
    (["verify", "--model", str(TINY)], ["--reference", "required"]),
    (["check-article", "--extra"], ["unrecognized arguments"]),
]


@pytest.mark.parametrize("argv, names", ARGUMENTS, ids=[f"args-{i}" for i in range(len(ARGUMENTS))])
def test_argument(tmp_path, argv, names):
    src = tmp_path / "in.txt"
    src.write_text("hello world\nthe cat sat\n", encoding="utf-8")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "notes.txt").write_text("the user's file")
    paths = {
        "{src}": src,
        "{out}": tmp_path / "o.npz",
        "{png}": tmp_path / "p.png",
        "{dir}": tmp_path / "adir",
    }
    before = snapshot(tmp_path)
    assert_one_line_error(run(*[str(paths.get(a, a)) for a in argv]), *names)
    assert_unchanged(before, tmp_path)


def test_an_option_refused_at_the_first_batch_leaves_nothing_behind(tmp_path):
    """--stride longer than the window is found when the first long text is
    windowed, after the shard directory was made: the failed run removes it,
    so the corrected command is not refused for a non-empty directory."""
    src = tmp_path / "in.txt"
    src.write_text("word " * 200 + "\nshort\n", encoding="utf-8")
    out = tmp_path / "feats"
    args = ["extract", "--model", TINY, src, "-o", out, "--long", "window", "--quiet"]
    assert_one_line_error(run(*args, "--stride", "1000"), "stride 1000")
    assert not out.exists()
    assert run(*args, "--stride", "16")[0] == 0
