"""minibert/corpus/driver.py, and ``minibert extract`` at corpus scale: sharded output
equals a single file, a run killed with SIGKILL resumes to the same bits,
float16 output, bad input through the new paths ends in one line and exit
status 2; extract_to called from Python does what the command does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from blas_helpers import ONE_THREAD
from corpus_helpers import assert_same_output, cli, here, texts

import minibert
from minibert import MinibertError
from minibert.cli import main
from minibert.corpus.driver import Engine, check_output, extract_to
from minibert.corpus.inputs import Item, read_items
from minibert.outputs.output import open_output
from minibert.outputs.shards import MANIFEST, read_manifest
from minibert.outputs.spec import ExtractSpec, OptionError

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def model_dir(small_model_dir, one_blas_thread):
    return small_model_dir


def extract(model_dir, src, out, *args) -> None:
    assert main(["extract", "--model", str(model_dir), str(src), "-o", str(out), "--quiet", *args]) == 0


@pytest.fixture(scope="module")
def small(tmp_path_factory, model_dir):
    """20 texts, extracted once into shards of 8 (3 shards)."""
    d = tmp_path_factory.mktemp("small")
    src = d / "in.txt"
    src.write_text("\n".join(texts(20)) + "\n", encoding="utf-8")
    extract(model_dir, src, d / "out", "--shard-size", "8", "--batch-size", "4")
    return src, d / "out"


def test_shards_equal_a_single_file_and_encode(small, model_dir, tmp_path):
    src, out_dir = small
    manifest = read_manifest(out_dir)
    assert manifest["complete"] and manifest["num_texts"] == 20
    assert [e["count"] for e in manifest["shards"]] == [8, 8, 4]
    single = tmp_path / "one.safetensors"
    extract(model_dir, src, single, "--shard-size", "8", "--batch-size", "4")
    assert_same_output(open_output(out_dir), open_output(single))
    # and the numbers are the model's: text 13 alone, float32 rounding only (~1e-6 observed)
    import minibert

    alone = minibert.load(model_dir).encode([src.read_text().splitlines()[13]])
    out = open_output(out_dir)
    for i in out.layers:
        np.testing.assert_allclose(out.vectors(13, i), alone.hidden_states[i][0], rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    "args",
    [
        ["--word-pool", "mean", "--layers", "-2,-1"],
        ["--long", "window", "--max-length", "6", "--stride", "3", "--layers", "-1"],
        ["--max-length", "5", "--pool", "max", "--combine", "concat"],
    ],
    ids=["word-pool", "long-window", "truncated-pooled"],
)
def test_every_feature_goes_through_shards(model_dir, tmp_path, args):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts(11, seed=4)) + "\n", encoding="utf-8")
    common = ["--shard-size", "4", "--batch-size", "3", *args]
    extract(model_dir, src, tmp_path / "shards", *common)
    extract(model_dir, src, tmp_path / "one.safetensors", *common)
    a, b = open_output(tmp_path / "shards"), open_output(tmp_path / "one.safetensors")
    assert_same_output(a, b)
    assert a.word_level == b.word_level == ("--word-pool" in args)
    for n in range(a.num_texts):
        if a.word_level:
            assert a.words(n) == b.words(n) and len(a.words(n)) == len(a.vectors(n, -1))
    per_text = ["num_tokens", "kept_tokens"] + (["spans", "segments"] if a.word_level else [])
    for name in per_text:
        got = np.concatenate([part.arrays[name] for part in a.parts()])
        np.testing.assert_array_equal(got, b.arrays[name], err_msg=name)
    if "--max-length" in args and "window" not in args:
        assert (b.arrays["kept_tokens"] < b.arrays["num_tokens"]).any()  # some texts were truncated


def test_summary_reads_shards_one_at_a_time(small, tmp_path, capsys, model_dir):
    src, out_dir = small
    single = tmp_path / "one.npz"
    extract(model_dir, src, single, "--shard-size", "8", "--batch-size", "4")
    capsys.readouterr()
    tables = []
    for path in (out_dir, single):
        assert main(["summary", str(path)]) == 0
        tables.append(capsys.readouterr().out.splitlines()[1:])  # line 0 names the path
    assert tables[0] == tables[1] and len(tables[0]) == 1 + len(open_output(out_dir).layers)


@pytest.mark.slow  # a child process, killed mid-run
def test_killed_run_resumes_to_the_same_bits(model_dir, tmp_path):
    n = 80
    lines = texts(n, seed=1)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--model", model_dir, src, "--shard-size", "8", "--batch-size", "4", "--quiet"]
    whole = tmp_path / "whole"
    extract(model_dir, src, whole, *map(str, args[3:]))

    # The run to kill reads the same texts from a pipe that gets only 2.5 chunks: however fast the
    # model, it cannot finish, so the kill lands mid-run (computing chunk 1 or waiting for chunk 2).
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "minibert.cli", "extract", *map(str, args[:2]), "-", *map(str, args[3:])]
    proc = subprocess.Popen([*cmd, "-o", str(out)], env=ONE_THREAD, stdin=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("\n".join(lines[:20]) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / MANIFEST).is_file() and '"shard": 0' in (out / MANIFEST).read_text():
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    killed = read_manifest(out)
    assert not killed["complete"] and [e["shard"] for e in killed["shards"]] in ([0], [0, 1])

    again = here("extract", *args, "-o", out)  # no --resume: refuses, touches nothing
    assert again.returncode == 2 and "not empty" in again.stderr and "--resume" in again.stderr
    assert read_manifest(out) == killed

    resumed = here("extract", *args, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / MANIFEST).read_bytes() == (whole / MANIFEST).read_bytes()  # same shards, same sha256
    a, b = open_output(out), open_output(whole)
    assert a.num_texts == n
    assert_same_output(a, b)
    index = np.concatenate([part.arrays["index"] for part in a.parts()])
    np.testing.assert_array_equal(index, np.arange(n))  # every text exactly once


def test_resume_refuses_other_settings_input_or_corrupt_shards(small, model_dir, tmp_path):
    src, out_dir = small
    base = ["extract", "--model", model_dir, "--shard-size", "8", "--batch-size", "4", "--resume"]
    r = here(*base, src, "-o", out_dir)  # the same run, already complete: nothing to do
    assert r.returncode == 0, r.stderr

    r = here(*base, src, "-o", out_dir, "--pool", "mean")
    assert r.returncode == 2 and "manifest.json: cannot resume with different settings (pool:" in r.stderr
    other = tmp_path / "other.txt"
    lines = src.read_text().splitlines()
    other.write_text("\n".join(lines[:9] + ["changed"] + lines[10:]) + "\n", encoding="utf-8")
    r = here(*base, other, "-o", out_dir)
    assert r.returncode == 2 and "input differs from the run being resumed (texts 8..15" in r.stderr

    spoilt = tmp_path / "spoilt"
    spoilt.mkdir()
    for f in out_dir.iterdir():
        (spoilt / f.name).write_bytes(f.read_bytes())
    data = bytearray((spoilt / "shard-00001.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (spoilt / "shard-00001.safetensors").write_bytes(bytes(data))
    r = here(*base, src, "-o", spoilt)
    assert r.returncode == 2 and f"{spoilt}/shard-00001.safetensors: corrupt" in r.stderr
    for res in (r,):
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_float16_output_is_the_float32_output_rounded(small, model_dir, tmp_path):
    src, out_dir = small
    half = tmp_path / "half"
    extract(model_dir, src, half, "--shard-size", "8", "--batch-size", "4", "--output-dtype", "float16")
    a, b = open_output(half), open_output(out_dir)
    assert a.settings["output_dtype"] == "float16" and a.settings["dtype"] == "float32"
    for n in range(a.num_texts):
        for name in a.names:
            np.testing.assert_array_equal(a.vectors(n, name), b.vectors(n, name).astype(np.float16))
    size = {d: sum(e["bytes"] for e in read_manifest(d)["shards"]) for d in (half, out_dir)}
    assert size[half] < 0.55 * size[out_dir]


@pytest.mark.parametrize(
    "output, args, message",
    [
        ("blocker/out/", [], "blocker/out: cannot create output directory"),
        ("one.npz", ["--resume"], "--resume needs a directory OUTPUT"),
        ("one.npz", ["--engine", "dask"], "--engine dask needs a directory OUTPUT"),
        ("out/", ["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is for --engine dask"),
        ("out/", ["--workers", "2"], "--workers is for --engine dask without --scheduler"),
        ("mine/", [], "mine: output directory is not empty"),
    ],
)
def test_bad_output_is_one_line(model_dir, tmp_path, output, args, message):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "blocker").write_text("a file where a directory should be")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's own file")
    r = here("extract", "--model", model_dir, src, "-o", tmp_path / output, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("one\n", encoding="utf-8")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = here("extract", "--model", model_dir, src, "-o", ro / "out")
    assert r.returncode == 2 and "ro/out: cannot create output directory" in r.stderr


def test_stdin_streams_into_shards(model_dir, tmp_path):
    lines = texts(5, seed=2)
    out = tmp_path / "out"
    r = cli("extract", "--model", model_dir, "-", "-o", out, "--shard-size", "2", "--layers", "-1",
            "--pool", "cls", input="\n".join(lines) + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "wrote 5 texts" in r.stderr and "texts/s" in r.stderr
    o = open_output(out)
    assert o.num_texts == 5 and o.pooled and [e["count"] for e in o.shards] == [2, 2, 1]
    import minibert

    assert o.tokens(4) == minibert.load(model_dir).tokenize([lines[4]]).tokens[0]


def test_truncation_summary_is_the_same_for_shards_and_files(model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts(13, seed=5)) + "\n", encoding="utf-8")
    args = ["extract", "--model", model_dir, src, "--max-length", "6", "--shard-size", "4", "--quiet"]
    lines = {}
    for out in ("one.npz", "shards/"):
        r = here(*args, "-o", tmp_path / out)
        assert r.returncode == 0, r.stderr
        lines[out] = r.stderr
    assert "texts were truncated to 6 tokens (text " in lines["one.npz"]
    assert lines["shards/"] == lines["one.npz"]


def test_extract_to_from_python_equals_the_command(small, model_dir, tmp_path):
    """The library call writes the very bytes the command line does, and says
    which texts it truncated: their token counts from the tokenizer alone."""
    src, out_dir = small
    model = minibert.load(model_dir)
    spec = ExtractSpec.for_model(model, layers="all", pool="none", batch_size=4, shard_size=8)
    summary = extract_to(model, read_items(src), spec, tmp_path / "out", sources=[src])
    assert (tmp_path / "out" / MANIFEST).read_bytes() == (out_dir / MANIFEST).read_bytes()
    for e in read_manifest(out_dir)["shards"]:
        assert (tmp_path / "out" / e["file"]).read_bytes() == (out_dir / e["file"]).read_bytes()
    assert (summary.num_texts, summary.layers, summary.truncated, summary.windowed) == (20, (0, 1, 2), 0, 0)

    lines = src.read_text().splitlines()
    spec6 = ExtractSpec.for_model(model, max_length=6, shard_size=8)
    summary = extract_to(model, (Item(i, t) for i, t in enumerate(lines)), spec6, tmp_path / "six.npz")
    full = [len(model.tokenize([t]).tokens[0]) for t in lines]
    cut = [(i, n, 6) for i, n in enumerate(full) if n > 6]
    assert summary.truncated == len(cut) > 5 and list(summary.first_truncated) == cut[:5]
    assert summary.num_texts == 20 and summary.limit == 6 and summary.rate > 0


def test_engine_options_are_checked_where_they_are_made():
    for kwargs, message in [
        (dict(name="spark"), "engine must be one of local, dask"),
        (dict(scheduler="tcp://h:1"), "scheduler is for engine dask"),
        (dict(name="dask", scheduler="tcp://h:1", workers=2), "workers is for engine dask without scheduler"),
        (dict(name="dask", threads=2), "threads is for the local engine"),
        (dict(threads=0), "threads must be a positive integer or None"),
    ]:
        with pytest.raises(OptionError, match=message):
            Engine(**kwargs)
    assert Engine("dask", workers=2).workers == 2


def test_extract_to_refuses_what_it_cannot_do(small, model_dir, tmp_path):
    src, _ = small
    model = minibert.load(model_dir)
    spec = ExtractSpec.for_model(model, pool="none")
    with pytest.raises(OptionError, match="resume needs a directory OUTPUT"):
        check_output(tmp_path / "o.npz", resume=True)
    with pytest.raises(OptionError, match="engine dask needs a directory OUTPUT"):
        check_output(tmp_path / "o.npz", engine=Engine("dask"))
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"text": "hello"}\n', encoding="utf-8")
    with pytest.raises(MinibertError, match="is the input"):
        extract_to(model, read_items(corpus), spec, corpus, sources=[corpus])
    assert corpus.read_text() == '{"text": "hello"}\n'
    other = ExtractSpec(layers=(0,), num_hidden_layers=2, model=spec.model, dtype="float64")
    with pytest.raises(MinibertError, match="the spec was made for the model at .* float64"):
        extract_to(model, read_items(src), other, tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_threads_are_the_runs_and_given_back(small, model_dir, tmp_path, monkeypatch):
    src, _ = small
    model = minibert.load(model_dir)
    seen = []
    real = minibert.corpus.driver.extract_chunk
    monkeypatch.setattr(
        minibert.corpus.driver, "extract_chunk", lambda m, *a, **k: seen.append(m.threads) or real(m, *a, **k)
    )
    spec = ExtractSpec.for_model(model, pool="none", shard_size=8)
    extract_to(model, read_items(src), spec, tmp_path / "o.safetensors", engine=Engine(threads=1))
    assert seen == [1, 1, 1] and model.threads is None
