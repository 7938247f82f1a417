"""Every way a model directory can be bad, tried as a hostile user would (issue 9).

Each case breaks a copy of the tiny model in one way, then runs ``minibert
inspect`` and ``minibert extract`` on it in this process
(:mod:`fuzz_helpers`). Every case must end with exit status 2, one line
``minibert: error: ...`` that names the file and the field or tensor, no
traceback, no output file, and the model directory and the corpus exactly as
they were. Cases are grouped by the file they break (:data:`CASES`); the
count per group is the suite's measure (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BERT
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, run_subprocess, snapshot
from safetensors.numpy import load_file, save_file

from minibert.files import MAX_CONFIG, MAX_FILE

ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
Q0 = "encoder.layer.0.attention.self.query.weight"
WORD = "embeddings.word_embeddings.weight"
NESTED = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" + "0" * 5000  # more digits than Python's int() reads from text


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")


def config(**changes):
    """Rewrite config.json with ``changes`` (a value of ... deletes the key; raw JSON text via RAW)."""

    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        text_values = {k: v.text for k, v in changes.items() if isinstance(v, Raw)}
        for key, value in changes.items():
            if value is ...:
                cfg.pop(key)
            elif not isinstance(value, Raw):
                cfg[key] = value
        text = json.dumps(cfg)
        for key, raw in text_values.items():
            text = text[:-1] + f', "{key}": {raw}}}'
        (d / "config.json").write_text(text)

    return edit


class Raw:
    """A value written into the JSON text as it is (NaN, Infinity, a 5000-digit number)."""

    def __init__(self, text: str):
        self.text = text


def replace_file(name: str, content: str | bytes):
    def edit(d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            path.unlink()
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))

    return edit


def symlink_loop(name: str):
    def edit(d: Path) -> None:
        (d / name).unlink(missing_ok=True)
        (d / name).symlink_to(name)

    return edit


def remove(*names: str):
    def edit(d: Path) -> None:
        for name in names:
            (d / name).unlink()

    return edit


def vocab_txt_only(cfg: dict | None = None, vocab: str | None = None):
    """The WordPiece tokenizer built from vocab.txt (+ tokenizer_config.json), no tokenizer.json."""

    def edit(d: Path) -> None:
        (d / "tokenizer.json").unlink()
        if cfg is not None:
            write_json(d / "tokenizer_config.json", cfg)
        if vocab is not None:
            (d / "vocab.txt").write_text(vocab, encoding="utf-8")

    return edit


def tokenizer_json(edit_json):
    def edit(d: Path) -> None:
        tok = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        edit_json(tok)
        (d / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")

    return edit


def tensors(edit_tensors):
    """Rewrite model.safetensors with edited tensors (written by the safetensors library)."""

    def edit(d: Path) -> None:
        t = load_file(str(d / "model.safetensors"))
        edit_tensors(t)
        save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})

    return edit


def header(edit_header):
    """Rewrite model.safetensors' JSON header by hand, keeping the data."""

    def edit(d: Path) -> None:
        raw = (d / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        h = json.loads(raw[8 : 8 + n])
        blob = edit_header(h)
        blob = (blob if isinstance(blob, str) else json.dumps(h)).encode()
        blob += b" " * (-len(blob) % 8)
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])

    return edit


def set_dtype(name: str, dtype: str):
    def edit_header(h):
        h[name]["dtype"] = dtype

    return header(edit_header)


def bad_value(name: str, value: float, as_dtype=np.float32):
    def edit_tensors(t):
        a = t[name].astype(as_dtype)
        a.flat[5] = value
        t[name] = a

    return tensors(edit_tensors)


def sharded(edit_index=None, edit_files=None):
    """model.safetensors split into two shards with an index; then the edits."""

    def edit(d: Path) -> None:
        t = load_file(str(d / "model.safetensors"))
        (d / "model.safetensors").unlink()
        names = sorted(t)
        halves = {
            "model-1.safetensors": names[: len(names) // 2],
            "model-2.safetensors": names[len(names) // 2 :],
        }
        for shard, keys in halves.items():
            save_file({k: t[k] for k in keys}, str(d / shard))
        index = {"metadata": {}, "weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
        if edit_index:
            edit_index(index)
        write_json(d / "model.safetensors.index.json", index)
        if edit_files:
            edit_files(d)

    return edit


def sentence(modules=ST_MODULES, pooling=None, st=None, raw: dict | None = None):
    """A sentence-transformers layout: modules.json, 1_Pooling/config.json, sentence_bert_config.json."""

    def edit(d: Path) -> None:
        write_json(d / "modules.json", modules)
        write_json(
            d / "1_Pooling" / "config.json",
            {"pooling_mode_mean_tokens": True} if pooling is None else pooling,
        )
        if st is not None:
            write_json(d / "sentence_bert_config.json", st)
        for name, text in (raw or {}).items():
            write_json(d / name, text)

    return edit


def torch_bin(content: bytes | None = None, truncate: int | None = None, family: str = "tiny-bert"):
    def edit(d: Path) -> None:
        (d / "model.safetensors").unlink()
        data = (TINY_BERT.parent / "torch" / f"{family}.bin").read_bytes() if content is None else content
        (d / "pytorch_model.bin").write_bytes(data[:truncate] if truncate else data)

    return edit


def special(name: str, make):
    """``name`` replaced by what ``make(path)`` creates (a FIFO, a symlink to a device, a sparse file)."""

    def edit(d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            path.unlink()
        make(path)

    return edit


def sparse(size: int):
    """A file of ``size`` zero bytes that takes no disk (a hole)."""

    def make(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)

    return make


def device(dev: str):
    return lambda path: path.symlink_to(dev)


def then(*edits):
    def edit(d: Path) -> None:
        for e in edits:
            e(d)

    return edit


def legacy_truncated(d: Path) -> None:
    (d / "model.safetensors").unlink()
    data = (TINY_BERT.parent / "torch" / "tiny-bert.legacy.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) - 1000])


#: group -> case -> (how to break the directory, names the one line must contain)
CASES = {
    "config.json": {
        "deeply nested JSON": (replace_file("config.json", NESTED), ["config.json", "nested too deeply"]),
        "an integer of 5000 digits": (config(vocab_size=Raw(HUGE_INT)), ["config.json", "not usable JSON"]),
        "vocab_size 10**300": (config(vocab_size=10**300), ["config.json", "vocab_size", "positive integer"]),
        "layer_norm_eps Infinity": (config(layer_norm_eps=Raw("Infinity")), ["config.json", "Infinity"]),
        "layer_norm_eps NaN": (config(layer_norm_eps=Raw("NaN")), ["config.json", "NaN"]),
        "layer_norm_eps 1e999": (config(layer_norm_eps=Raw("1e999")), ["config.json", "out of range"]),
        "layer_norm_eps -1": (
            config(layer_norm_eps=-1),
            ["config.json", "layer_norm_eps", "finite positive"],
        ),
        "layer_norm_eps an integer beyond float64": (
            config(layer_norm_eps=10**400),
            ["config.json", "layer_norm_eps"],
        ),
        "layer_norm_eps a string": (config(layer_norm_eps="1e-12"), ["config.json", "layer_norm_eps"]),
        "model_type a list": (config(model_type=["bert"]), ["config.json", "model_type must be a string"]),
        "model_type unknown": (
            config(model_type="gpt2"),
            ["config.json", "model_type 'gpt2' is not supported"],
        ),
        "hidden_act a list": (config(hidden_act=["gelu"]), ["config.json", "hidden_act must be a string"]),
        "hidden_act an object": (config(hidden_act={"name": "gelu"}), ["config.json", "hidden_act"]),
        "position_embedding_type a number": (
            config(position_embedding_type=1),
            ["config.json", "position_embedding_type"],
        ),
        "num_hidden_layers 10**9": (config(num_hidden_layers=10**9), ["config.json", "layer steps"]),
        "num_hidden_layers 1000 (the file has 2)": (
            config(num_hidden_layers=1000),
            ["missing tensor", "encoder.layer.2."],
        ),
        "hidden_size 10**9": (
            config(hidden_size=10**9, num_attention_heads=1),
            [WORD, "config.json expects"],
        ),
        "num_attention_heads 0": (config(num_attention_heads=0), ["config.json", "num_attention_heads"]),
        "num_hidden_layers true": (config(num_hidden_layers=True), ["config.json", "num_hidden_layers"]),
        "intermediate_size 2.5": (config(intermediate_size=2.5), ["config.json", "intermediate_size"]),
        "pad_token_id beyond the vocabulary": (
            config(pad_token_id=10**6),
            ["config.json", "pad_token_id", "186"],
        ),
        "sinusoidal_pos_embds a string": (
            config(sinusoidal_pos_embds="yes"),
            ["config.json", "sinusoidal_pos_embds"],
        ),
        "a required field missing": (config(hidden_size=...), ["config.json", "hidden_size"]),
        "a list, not an object": (
            replace_file("config.json", "[1, 2]"),
            ["config.json", "expected a JSON object"],
        ),
        "not UTF-8": (replace_file("config.json", b'{"x": "\xff"}'), ["config.json", "not UTF-8"]),
        "a lone surrogate": (config(note=Raw('"\\ud800"')), ["config.json", "lone surrogate"]),
        "not JSON": (replace_file("config.json", "{"), ["config.json", "not valid JSON"]),
        "empty": (replace_file("config.json", ""), ["config.json", "not valid JSON"]),
        "a directory": (
            lambda d: [(d / "config.json").unlink(), (d / "config.json").mkdir()],
            ["config.json", "is a directory"],
        ),
        "a symlink loop": (symlink_loop("config.json"), ["config.json", "too many levels of symbolic links"]),
        "a dangling symlink": (
            lambda d: [(d / "config.json").unlink(), (d / "config.json").symlink_to("gone.json")],
            ["config.json", "no such file"],
        ),
        "missing": (remove("config.json"), ["config.json not found"]),
    },
    "tokenizer": {
        "tokenizer.json deeply nested": (
            replace_file("tokenizer.json", NESTED),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json nested in a field": (
            tokenizer_json(lambda t: t.update(normalizer=json.loads("[" * 200 + "]" * 200))),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json a huge id": (
            replace_file(
                "tokenizer.json",
                (TINY_BERT / "tokenizer.json")
                .read_text()
                .replace('"[PAD]": 0', f'"[PAD]": {HUGE_INT[:60]}', 1),
            ),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json a lone surrogate": (
            replace_file(
                "tokenizer.json",
                (TINY_BERT / "tokenizer.json").read_text().replace('"[PAD]": 0', '"\\ud800": 0', 1),
            ),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json a list": (
            replace_file("tokenizer.json", "[1]"),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json not JSON": (
            replace_file("tokenizer.json", "{"),
            ["tokenizer.json", "cannot load tokenizer"],
        ),
        "tokenizer.json not UTF-8": (
            replace_file("tokenizer.json", b"\xff\xfe"),
            ["tokenizer.json", "not UTF-8"],
        ),
        "tokenizer.json a symlink loop": (
            symlink_loop("tokenizer.json"),
            ["tokenizer.json", "too many levels"],
        ),
        "tokenizer.json ids beyond vocab_size": (
            tokenizer_json(
                lambda t: t["added_tokens"].append(
                    {
                        "id": 500,
                        "content": "[X]",
                        "single_word": False,
                        "lstrip": False,
                        "rstrip": False,
                        "normalized": False,
                        "special": True,
                    }
                )
            ),
            ["tokenizer.json", "'[X]' has id 186", "vocab_size 186"],
        ),
        "tokenizer.json WordPiece without its unknown token": (
            tokenizer_json(lambda t: t["model"].update(unk_token="[NOPE]")),
            ["tokenizer.json", "no unknown token '[NOPE]'"],
        ),
        "tokenizer_config.json a list": (
            replace_file("tokenizer_config.json", "[]"),
            ["tokenizer_config.json", "expected a JSON object"],
        ),
        "tokenizer_config.json deeply nested": (
            replace_file("tokenizer_config.json", NESTED),
            ["tokenizer_config.json", "nested too deeply"],
        ),
        "tokenizer_config.json a huge integer": (
            replace_file("tokenizer_config.json", '{"model_max_length": ' + HUGE_INT + "}"),
            ["tokenizer_config.json", "not usable JSON"],
        ),
        "tokenizer_config.json pad_token a list": (
            lambda d: write_json(d / "tokenizer_config.json", {"pad_token": ["[PAD]"]}),
            ["tokenizer_config.json", "pad_token must be a string"],
        ),
        "vocab.txt without [UNK]": (
            vocab_txt_only(vocab="[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n"),
            ["vocab.txt", "no unknown token '[UNK]'"],
        ),
        "vocab.txt longer than vocab_size": (
            vocab_txt_only(
                vocab=(TINY_BERT / "vocab.txt").read_text() + "".join(f"w{i}\n" for i in range(50))
            ),
            ["vocab.txt", "beyond config.json's vocab_size 186"],
        ),
        "vocab.txt not UTF-8": (
            lambda d: [(d / "tokenizer.json").unlink(), (d / "vocab.txt").write_bytes(b"[UNK]\n\xff\n")],
            ["vocab.txt", "not UTF-8"],
        ),
        "tokenizer_config do_lower_case a list (vocab.txt)": (
            vocab_txt_only(cfg={"do_lower_case": [True]}),
            ["tokenizer_config.json", "do_lower_case must be true or false"],
        ),
        "tokenizer_config unk_token a number (vocab.txt)": (
            vocab_txt_only(cfg={"unk_token": 3}),
            ["tokenizer_config.json", "unk_token must be a string"],
        ),
        "tokenizer_config strip_accents a string (vocab.txt)": (
            vocab_txt_only(cfg={"strip_accents": "no"}),
            ["tokenizer_config.json", "strip_accents"],
        ),
        "no tokenizer at all": (
            remove("tokenizer.json", "vocab.txt"),
            ["no tokenizer", "tokenizer.json", "vocab.txt"],
        ),
    },
    "weights": {
        "no weights file": (
            remove("model.safetensors"),
            ["model.safetensors not found", "pytorch_model.bin"],
        ),
        "safetensors of 5 bytes": (
            replace_file("model.safetensors", b"\x10\0\0\0\0"),
            ["model.safetensors", "not a valid safetensors file"],
        ),
        "safetensors header longer than the file": (
            replace_file("model.safetensors", struct.pack("<Q", 10**12) + b"{}"),
            ["model.safetensors", "header of"],
        ),
        "safetensors header not JSON": (
            header(lambda h: "{not json"),
            ["model.safetensors", "not valid JSON"],
        ),
        "safetensors header deeply nested": (
            header(lambda h: NESTED),
            ["model.safetensors", "nested too deeply"],
        ),
        "safetensors header a list": (
            header(lambda h: "[1]"),
            ["model.safetensors", "expected a JSON object"],
        ),
        "safetensors header a huge integer": (
            header(lambda h: json.dumps(h)[:-1] + ', "x": ' + HUGE_INT + "}"),
            ["model.safetensors", "not usable JSON"],
        ),
        "safetensors an entry that is a list": (
            header(lambda h: h.update({Q0: [1]})),
            ["model.safetensors", Q0],
        ),
        "safetensors dtype F8 (no such dtype)": (set_dtype(Q0, "F8"), ["model.safetensors", Q0, "'F8'"]),
        "safetensors dtype F8_E4M3 on a used tensor": (
            lambda d: write_fp8(d),
            ["model.safetensors", Q0, "F8_E4M3", "expected floating point"],
        ),
        "safetensors dtype a number": (set_dtype(Q0, 7), ["model.safetensors", Q0, "dtype"]),
        "safetensors shape negative": (
            header(lambda h: h[Q0].update(shape=[-32, -32])),
            ["model.safetensors", Q0, "shape"],
        ),
        "safetensors shape of 10**30": (
            header(lambda h: h[Q0].update(shape=[10**30])),
            ["model.safetensors", Q0, "needs"],
        ),
        "safetensors offsets strings": (
            header(lambda h: h[Q0].update(data_offsets=["0", "4"])),
            ["model.safetensors", Q0],
        ),
        "safetensors offsets overlapping": (
            header(lambda h: shift_first_two(h)),
            ["model.safetensors", "gap or an overlap"],
        ),
        "safetensors truncated": (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:50_000]),
            ["model.safetensors", "truncated"],
        ),
        "a NaN weight": (bad_value(Q0, np.nan), ["model.safetensors", Q0, "nan at index (0, 5)"]),
        "an infinite weight": (bad_value(WORD, np.inf), ["model.safetensors", WORD, "inf at index (0, 5)"]),
        "a -inf float16 weight": (bad_value(WORD, -np.inf, np.float16), ["model.safetensors", WORD, "-inf"]),
        "a float64 weight beyond float32": (
            bad_value(Q0, 1e300, np.float64),
            ["model.safetensors", Q0, "inf"],
        ),
        "an integer weight": (
            tensors(lambda t: t.update({Q0: t[Q0].astype(np.int32)})),
            ["model.safetensors", Q0, "int32", "floating point"],
        ),
        "a wrong shape": (
            tensors(lambda t: t.update({Q0: t[Q0][:, :16].copy()})),
            [Q0, "(32, 16)", "(32, 32)"],
        ),
        "a missing tensor": (tensors(lambda t: t.pop(Q0)), ["missing tensor", Q0]),
        "model.safetensors a symlink loop": (
            symlink_loop("model.safetensors"),
            ["model.safetensors", "too many levels"],
        ),
        "model.safetensors a directory": (
            lambda d: [(d / "model.safetensors").unlink(), (d / "model.safetensors").mkdir()],
            ["model.safetensors", "is a directory"],
        ),
        "pytorch_model.bin random bytes": (
            torch_bin(b"\x00" * 100),
            ["pytorch_model.bin", "not a PyTorch checkpoint"],
        ),
        "pytorch_model.bin a truncated zip": (
            torch_bin(truncate=60_000),
            ["pytorch_model.bin", "not a valid zip archive"],
        ),
        "pytorch_model.bin a truncated legacy file": (
            legacy_truncated,
            ["pytorch_model.bin", "past the end of the file"],
        ),
        "pytorch_model.bin of another model": (
            torch_bin(family="tiny-bert-gelu-new"),
            ["pytorch_model.bin", WORD, "config.json expects"],
        ),
        "index not JSON": (
            sharded(edit_files=lambda d: (d / "model.safetensors.index.json").write_text("{")),
            ["model.safetensors.index.json", "not valid JSON"],
        ),
        "index weight_map a list": (
            sharded(lambda i: i.update(weight_map=[])),
            ["model.safetensors.index.json", "weight_map"],
        ),
        "index shard path ../": (
            sharded(lambda i: i["weight_map"].update({Q0: "../model-1.safetensors"})),
            ["model.safetensors.index.json", "outside the model directory"],
        ),
        "index shard path absolute": (
            sharded(lambda i: i["weight_map"].update({Q0: "/etc/passwd.safetensors"})),
            ["model.safetensors.index.json", "outside the model directory"],
        ),
        "index shard path a number": (
            sharded(lambda i: i["weight_map"].update({Q0: 7})),
            ["model.safetensors.index.json", "must be a string"],
        ),
        "index shard missing": (
            sharded(edit_files=lambda d: (d / "model-2.safetensors").unlink()),
            ["model-2.safetensors", "no such file"],
        ),
        "index names a tensor its shard lacks": (
            sharded(lambda i: i["weight_map"].update({"extra.weight": "model-1.safetensors"})),
            ["model.safetensors.index.json", "'extra.weight'", "does not hold it"],
        ),
        "index a tensor in two shards": (
            sharded(edit_files=lambda d: duplicate_into_shard(d)),
            ["model.safetensors.index.json", "in two shards"],
        ),
        "index shard of the other kind": (
            sharded(lambda i: i["weight_map"].update({Q0: "pytorch_model-1.bin"})),
            ["model.safetensors.index.json", "not a .safetensors file"],
        ),
    },
    "sentence-transformers": {
        "modules.json deeply nested": (
            sentence(raw={"modules.json": NESTED}),
            ["modules.json", "nested too deeply"],
        ),
        "modules.json a huge integer": (
            sentence(raw={"modules.json": "[" + HUGE_INT + "]"}),
            ["modules.json", "not usable JSON"],
        ),
        "modules.json an object": (sentence(modules={"0": "x"}), ["modules.json", "expected a JSON list"]),
        "modules.json a module that is a string": (
            sentence(modules=["Pooling"]),
            ["modules.json", "module 0 is a str"],
        ),
        "modules.json path an int": (
            sentence(modules=[ST_MODULES[0], {**ST_MODULES[1], "path": 1}]),
            ["modules.json", "module 1's path", "int"],
        ),
        "modules.json path ../": (
            sentence(modules=[ST_MODULES[0], {**ST_MODULES[1], "path": "../elsewhere"}]),
            ["modules.json", "outside the model directory"],
        ),
        "modules.json path absolute": (
            sentence(modules=[ST_MODULES[0], {**ST_MODULES[1], "path": "/etc"}]),
            ["modules.json", "outside the model directory"],
        ),
        "modules.json type a list": (
            sentence(modules=[ST_MODULES[0], {**ST_MODULES[1], "type": ["Pooling"]}]),
            ["modules.json", "type must be a string"],
        ),
        "modules.json a lone surrogate": (
            sentence(raw={"modules.json": '["\\udfff"]'}),
            ["modules.json", "lone surrogate"],
        ),
        "pooling_mode an int": (
            sentence(pooling={"pooling_mode": 1}),
            ["1_Pooling/config.json", "pooling_mode must be"],
        ),
        "pooling_mode a list of ints": (
            sentence(pooling={"pooling_mode": [1]}),
            ["1_Pooling/config.json", "pooling_mode"],
        ),
        "a pooling flag that is a string": (
            sentence(pooling={"pooling_mode_mean_tokens": "yes"}),
            ["1_Pooling/config.json", "pooling_mode_mean_tokens"],
        ),
        "1_Pooling/config.json a list": (
            sentence(pooling=[1]),
            ["1_Pooling/config.json", "expected a JSON object"],
        ),
        "1_Pooling/config.json no mode": (
            sentence(pooling={"pooling_mode_mean_tokens": False}),
            ["1_Pooling/config.json", "no pooling mode"],
        ),
        "sentence_bert_config.json a list": (
            sentence(st=[256]),
            ["sentence_bert_config.json", "expected a JSON object"],
        ),
        "sentence_bert_config.json not JSON": (
            sentence(raw={"sentence_bert_config.json": "{"}),
            ["sentence_bert_config.json", "not valid JSON"],
        ),
        "max_seq_length a string": (
            sentence(st={"max_seq_length": "long"}),
            ["sentence_bert_config.json", "max_seq_length"],
        ),
        "max_seq_length 1": (
            sentence(st={"max_seq_length": 1}),
            ["sentence_bert_config.json", "max_seq_length"],
        ),
        "do_lower_case a string": (
            sentence(st={"do_lower_case": "yes"}),
            ["sentence_bert_config.json", "do_lower_case"],
        ),
    },
    # Special files (issue 17): none is opened, so a FIFO cannot block and a device cannot feed
    # minibert without end; a file read whole is capped (1 MiB configs, 64 MiB tokenizer files).
    "special files": {
        **{
            f"{name} a FIFO": (then(*before, special(name, os.mkfifo)), [name, "a FIFO, not a regular file"])
            for name, before in (
                ("config.json", ()),
                ("tokenizer.json", ()),
                ("tokenizer_config.json", ()),
                ("vocab.txt", (remove("tokenizer.json"),)),
                ("model.safetensors", ()),
                ("pytorch_model.bin", (remove("model.safetensors"),)),
                ("model.safetensors.index.json", (sharded(),)),
                ("model-2.safetensors", (sharded(),)),
                ("modules.json", (sentence(),)),
                ("1_Pooling/config.json", (sentence(),)),
                ("sentence_bert_config.json", (sentence(),)),
            )
        },
        **{
            f"{name} a link to {dev}": (special(name, device(dev)), [name, "a character device"])
            for name in ("config.json", "tokenizer.json", "model.safetensors")
            for dev in ("/dev/zero", "/dev/urandom")
        },
        "pytorch_model.bin a link to /dev/zero": (
            then(remove("model.safetensors"), special("pytorch_model.bin", device("/dev/zero"))),
            ["pytorch_model.bin", "a character device"],
        ),
        "1_Pooling/config.json a link to /dev/zero": (
            then(sentence(), special("1_Pooling/config.json", device("/dev/zero"))),
            ["1_Pooling/config.json", "a character device"],
        ),
        "config.json one byte over 1 MiB": (
            special("config.json", sparse(MAX_CONFIG + 1)),
            ["config.json", f"{MAX_CONFIG + 1:,} bytes", f"{MAX_CONFIG:,}"],
        ),
        "tokenizer_config.json one byte over 1 MiB": (
            special("tokenizer_config.json", sparse(MAX_CONFIG + 1)),
            ["tokenizer_config.json", f"{MAX_CONFIG + 1:,} bytes"],
        ),
        "modules.json one byte over 1 MiB": (
            then(sentence(), special("modules.json", sparse(MAX_CONFIG + 1))),
            ["modules.json", f"{MAX_CONFIG + 1:,} bytes"],
        ),
        "tokenizer.json one byte over 64 MiB": (
            special("tokenizer.json", sparse(MAX_FILE + 1)),
            ["tokenizer.json", f"{MAX_FILE + 1:,} bytes", f"{MAX_FILE:,}"],
        ),
        "vocab.txt one byte over 64 MiB": (
            then(remove("tokenizer.json"), special("vocab.txt", sparse(MAX_FILE + 1))),
            ["vocab.txt", f"{MAX_FILE + 1:,} bytes"],
        ),
        "model.safetensors.index.json one byte over 64 MiB": (
            then(sharded(), special("model.safetensors.index.json", sparse(MAX_FILE + 1))),
            ["model.safetensors.index.json", f"{MAX_FILE + 1:,} bytes"],
        ),
    },
    "directory": {
        "a file, not a directory": ("file", ["not a model directory"]),
        "a symlink loop": ("loop", ["too many levels of symbolic links"]),
        "a dangling symlink": ("dangling", ["does not exist"]),
        "config.json permission denied": ("deny config.json", ["config.json", "permission denied"]),
        "tokenizer.json permission denied": ("deny tokenizer.json", ["tokenizer.json", "permission denied"]),
        "model.safetensors permission denied": (
            "deny model.safetensors",
            ["model.safetensors", "permission denied"],
        ),
        "the directory permission denied": ("deny directory", ["permission denied"]),
    },
}


def write_fp8(d: Path) -> None:
    """The query weight stored as float8 (1 byte per element, as safetensors allows): read as bytes."""
    raw = (d / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8 : 8 + n])
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    data, out, offset = raw[8 + n :], b"", 0
    for k in names:
        start, end = h[k]["data_offsets"]
        chunk = data[start:end] if k != Q0 else data[start:end][: (end - start) // 4]
        h[k].update(data_offsets=[offset, offset + len(chunk)], **({"dtype": "F8_E4M3"} if k == Q0 else {}))
        out += chunk
        offset += len(chunk)
    blob = json.dumps(h).encode()
    blob += b" " * (-len(blob) % 8)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + out)


def shift_first_two(h: dict) -> None:
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    h[names[1]]["data_offsets"] = [x - 4 for x in h[names[1]]["data_offsets"]]


def duplicate_into_shard(d: Path) -> None:
    first, second = load_file(str(d / "model-1.safetensors")), load_file(str(d / "model-2.safetensors"))
    name = next(iter(first))
    save_file(second | {name: first[name]}, str(d / "model-2.safetensors"))


def deny(monkeypatch, target: Path) -> None:
    """Reading ``target`` (or anything under it, or stat'ing it) raises PermissionError, as chmod 000 would
    for a user other than root (the tests run as root, where chmod does not stop reads)."""
    import builtins

    target = str(target)

    def denied(path) -> bool:
        p = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        return isinstance(p, str) and (p == target or p.startswith(target + os.sep))

    def error(path):
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    real_open, real_read_bytes, real_stat, real_os_open = builtins.open, Path.read_bytes, os.stat, os.open

    def fake_open(file, *args, **kwargs):
        if denied(file):
            raise error(file)
        return real_open(file, *args, **kwargs)

    def fake_os_open(file, *args, **kwargs):
        if denied(file):
            raise error(file)
        return real_os_open(file, *args, **kwargs)

    def fake_read_bytes(self):
        if denied(self):
            raise error(self)
        return real_read_bytes(self)

    def fake_stat(path, *args, **kwargs):
        if os.fspath(path) == target and stat.S_ISDIR(real_stat(target).st_mode):
            raise error(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(Path, "read_bytes", fake_read_bytes)
    monkeypatch.setattr(os, "stat", fake_stat)


def make_directory_case(kind: str, model: Path) -> tuple[Path, Path | None]:
    """The directory cases: (what ``--model`` names, set up in tmp_path; what to make unreadable)."""
    if kind == "file":
        (model.parent / "a-file").write_text("x")
        return model.parent / "a-file", None
    if kind in ("loop", "dangling"):
        (model.parent / kind).symlink_to("loop" if kind == "loop" else "nowhere")
        return model.parent / kind, None
    if kind == "deny directory":
        return model, model
    return model, model / kind.split(" ", 1)[1]


ALL = [(group, case) for group, cases in CASES.items() for case in cases]


class Hang(BaseException):
    """Raised by :func:`deadline` (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail with :class:`Hang` when the block runs longer than ``seconds`` (SIGALRM interrupts a
    blocking open or read of a FIFO in the main thread)."""

    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s: blocked on a FIFO?")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("group, case", ALL, ids=[f"{g}: {c}" for g, c in ALL])
def test_bad_model_directory(tmp_path, monkeypatch, group, case):
    make, names = CASES[group][case]
    model = tmp_path / "model"
    shutil.copytree(TINY_BERT, model)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello world!\nHow old are you?\n", encoding="utf-8")
    target, unreadable = model, None
    if group == "directory":
        target, unreadable = make_directory_case(make, model)
    else:
        make(model)
    before = snapshot(tmp_path)
    if unreadable is not None:
        deny(monkeypatch, unreadable)
    out = tmp_path / "out.npz"
    with deadline(60):  # a FIFO read by mistake blocks: fail, never hang the suite
        assert_one_line_error(run("inspect", "--model", target), *names)
        assert_one_line_error(run("extract", "--model", target, corpus, "-o", out, "--quiet"), *names)
    monkeypatch.undo()  # the snapshot reads files: with the real open again
    assert not out.exists()
    assert_unchanged(before, tmp_path)


AS_ROOT = (
    "root reads a chmod-000 file anyway (the 'permission denied' cases above make the read raise instead)"
)


@pytest.mark.skipif(os.geteuid() == 0, reason=AS_ROOT)
def test_a_real_unreadable_config(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY_BERT, model)
    (model / "config.json").chmod(0)
    assert_one_line_error(run("inspect", "--model", model), "config.json", "permission denied")


#: The model files a 3 GiB sparse file stands in for (issue 17: a MemoryError traceback or a hang before).
SPARSE = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "model.safetensors",
          "pytorch_model.bin", "modules.json"]  # fmt: skip


def _limit_memory() -> None:
    """In the child: 3 GiB of address space, so reading a 3 GiB file whole fails fast (a
    MemoryError traceback) instead of filling the shared machine's memory."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = 3 << 30 if hard == resource.RLIM_INFINITY else min(3 << 30, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name", SPARSE)
def test_a_3_gib_sparse_model_file_is_one_line(tmp_path, name):
    model = tmp_path / "model"
    shutil.copytree(TINY_BERT, model)
    if name == "vocab.txt":
        remove("tokenizer.json")(model)
    elif name == "pytorch_model.bin":
        remove("model.safetensors")(model)
    elif name == "modules.json":
        sentence()(model)
    special(name, sparse(3 << 30))(model)
    result = run_subprocess("inspect", "--model", model, preexec_fn=_limit_memory)
    message = assert_one_line_error(result, name)
    # a file read whole names its size; a checkpoint's header of zeros is refused as a header
    assert "3,221,225,472 bytes" in message or "not" in message, message
    assert (model / name).stat().st_size == 3 << 30
