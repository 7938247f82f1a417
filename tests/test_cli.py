"""The ``minibert`` command: extract's numbers equal the library's, in input
order; bad input ends in one line and exit status 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from fuzz_helpers import run

from minibert.cli import main
from minibert.outputs.output import open_output

TEXTS = [
    "A short one.",
    "A much longer text that will be padded less than the others in its batch, surely.",
    "",
    "Pairs come from jsonl.",
    "Ünïcödé and 日本語.",
]


def run_cli(*args: str) -> SimpleNamespace:
    """``minibert ARGS`` in this process (a child process costs a second of imports
    per call; test_extract_jsonl_pairs_and_stdin runs the real command once)."""
    code, out, err = run(*args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".jsonl"])
def test_extract_equals_encoding_each_text_alone(real_model, real_model_dir, corpus, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    # batch size 2 with length sorting: texts are batched with others and reordered
    assert main(["extract", "--model", str(real_model_dir), str(corpus), "-o", str(out),
                 "--pool", "none", "--batch-size", "2", "--quiet"]) == 0  # fmt: skip
    o = open_output(out)
    assert o.num_texts == len(TEXTS)
    assert o.layers == list(range(7))
    for n, text in enumerate(TEXTS):
        alone = real_model.encode([text])
        assert o.tokens(n) == alone.tokens[0]
        for i in range(7):
            # batched with padding vs alone: float32 rounding only, ~1e-6 observed
            np.testing.assert_allclose(
                o.vectors(n, i), alone.hidden_states[i][0], rtol=0, atol=2e-5, err_msg=f"text {n} layer {i}"
            )


def test_extract_pool_and_combine(real_model, real_model_dir, corpus, tmp_path):
    out = tmp_path / "pooled.npz"
    args = ["extract", "--model", str(real_model_dir), str(corpus), "-o", str(out), "--quiet"]
    assert main([*args, "--layers", "-4,-3,-2,-1", "--pool", "mean", "--combine", "sum"]) == 0
    o = open_output(out)
    assert o.layers == [3, 4, 5, 6]
    for n, text in enumerate(TEXTS):
        hs = real_model.encode([text]).hidden_states
        want = sum(hs[i][0].astype(np.float64) for i in (3, 4, 5, 6)).mean(axis=0)
        np.testing.assert_allclose(o.vectors(n, "combined"), want, rtol=0, atol=1e-4, err_msg=f"text {n}")

    out2 = tmp_path / "cls.npz"
    assert main([*args[:-1], "-o", str(out2), "--quiet", "--layers", "0:2", "--pool", "cls",
                 "--combine", "concat"]) == 0  # fmt: skip
    o2 = open_output(out2)
    assert o2.arrays["combined"].shape == (len(TEXTS), 2 * 384)


def test_extract_jsonl_pairs_and_stdin(real_model, real_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "Who wrote it?", "text_pair": "She did."}) + "\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    assert main(["extract", "--model", str(real_model_dir), str(src), "-o", str(out), "--pool", "none"]) == 0
    want = real_model.encode(["Who wrote it?"], ["She did."])
    o = open_output(out)
    assert o.tokens(0) == want.tokens[0] and "[SEP]" in o.tokens(0)[:-1]
    np.testing.assert_allclose(o.vectors(0, 6), want.hidden_states[6][0], atol=1e-6)

    out2 = tmp_path / "stdin.npz"
    cmd = [
        sys.executable,
        "-m",
        "minibert.cli",
        "extract",
        "--model",
        str(real_model_dir),
        "-",
        "-o",
        str(out2),
    ]
    r = subprocess.run(
        [*cmd, "--pool", "none"], input="from stdin\n", capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    stdin_out = open_output(out2)
    alone = real_model.encode(["from stdin"])
    assert stdin_out.tokens(0) == alone.tokens[0]
    np.testing.assert_allclose(stdin_out.vectors(0, 6), alone.hidden_states[6][0], atol=1e-6)


def test_truncation_is_reported(real_model_dir, tmp_path):
    src = tmp_path / "long.txt"
    src.write_text("word " * 50 + "\nshort\n", encoding="utf-8")
    r = run_cli(
        "extract", "--model", real_model_dir, src, "-o", tmp_path / "o.npz", "--max-length", "16", "--quiet"
    )
    assert r.returncode == 0, r.stderr
    assert "1 of 2 texts were truncated to 16 tokens" in r.stderr
    assert len(open_output(tmp_path / "o.npz").tokens(0)) == 16


def test_empty_input_gives_empty_valid_output(real_model_dir, tmp_path):
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    out = tmp_path / "o.safetensors"
    r = run_cli("extract", "--model", real_model_dir, src, "-o", out)
    assert r.returncode == 0, r.stderr
    o = open_output(out)
    assert o.num_texts == 0 and o.layers == list(range(7))


def _broken_model(src, tmp_path, edit):
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    edit(dst)
    return dst


def _truncate(d):
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"hidden_size": 384}'), "missing required field"),
        (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.txt")], "no tokenizer"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors not found"),
        (_truncate, "not a valid safetensors file"),
    ],
)
def test_bad_model_is_one_line(real_model_dir, tmp_path, corpus, edit, message):
    model = _broken_model(real_model_dir, tmp_path, edit)
    r = run_cli("extract", "--model", model, corpus, "-o", tmp_path / "o.npz")
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "9"], "index 9 is out of range"),
        (["-o", "/nonexistent-dir/o.npz"], "output directory /nonexistent-dir does not exist"),
        (["-o", "OUT.csv"], "unknown output format"),
        (["--max-length", "100000"], "exceeds the model's limit 512"),
    ],
)
def test_bad_arguments_are_one_line(real_model_dir, corpus, tmp_path, args, message):
    base = ["extract", "--model", real_model_dir, corpus]
    if "-o" not in args:
        base += ["-o", tmp_path / "o.npz"]
    r = run_cli(*base, *[a.replace("OUT", str(tmp_path / "o")) for a in args])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_non_utf8_input_names_the_line(real_model_dir, tmp_path):
    src = tmp_path / "latin1.txt"
    src.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    r = run_cli("extract", "--model", real_model_dir, src, "-o", tmp_path / "o.npz")
    assert r.returncode == 2
    assert "line 2 is not valid UTF-8" in r.stderr


def test_missing_default_model_says_how_to_fetch(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(tmp_path / "no-weights-here"))
    r = run_cli("inspect")
    assert r.returncode == 2
    assert "default model not found" in r.stderr and "make weights" in r.stderr


def test_inspect_lists_ignored_head_tensors(real_model_dir):
    r = run_cli("inspect", "--model", real_model_dir)
    assert r.returncode == 0, r.stderr
    assert "ignored tensors (not part of the encoder): 2" in r.stdout
    assert "pooler.dense.weight" in r.stdout
    assert "22,565,376" in r.stdout  # 22.7M minus the 147,840 pooler parameters the encoder ignores


def test_summary_describes_every_layer(real_model_dir, corpus, tmp_path):
    out = tmp_path / "o.npz"
    assert main(["extract", "--model", str(real_model_dir), str(corpus), "-o", str(out), "--quiet"]) == 0
    r = run_cli("summary", out)
    assert r.returncode == 0, r.stderr
    assert "embeddings" in r.stdout and "output of encoder layer 6 (last)" in r.stdout
