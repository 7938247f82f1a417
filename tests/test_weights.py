"""Loading checkpoints: BertModel and BertForMaskedLM names, TF-era LayerNorm
names, float16 and bfloat16 tensors, and every kind of bad model directory
(each a one-line MinibertError naming the problem, and exit 2 from the CLI).

Variants are built in tmp_path from the committed tiny model. float16 files are
written with safetensors.numpy; bfloat16 files are written by hand (NumPy has
no bfloat16), byte by byte from the safetensors layout, so the test does not
share code with minibert's reader.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BERT
from fuzz_helpers import rewrite_safetensors_header
from numpy.testing import assert_allclose, assert_array_equal
from safetensors.numpy import load_file, save_file

import minibert
from minibert import cli
from minibert.loading.weights import LAYER_NAMES, read_safetensors
from minibert.loading.weights import slot as slot_of

TEXTS = ["Hello world!", "How old are you?", "北京欢迎你 🍕"]
HEAD_TENSORS = {  # what BertForMaskedLM / BertForPreTraining add beside the encoder (V=186, H=32)
    "cls.predictions.bias": (186,),
    "cls.predictions.transform.dense.weight": (32, 32),
    "cls.predictions.transform.dense.bias": (32,),
    "cls.predictions.transform.LayerNorm.weight": (32,),
    "cls.predictions.transform.LayerNorm.bias": (32,),
    "cls.predictions.decoder.weight": (186, 32),
    "cls.seq_relationship.weight": (2, 32),
    "cls.seq_relationship.bias": (2,),
}


def copy_tiny(tmp_path: Path, name: str = "model") -> Path:
    dest = tmp_path / name
    shutil.copytree(TINY_BERT, dest)
    return dest


def tiny_tensors() -> dict[str, np.ndarray]:
    return load_file(str(TINY_BERT / "model.safetensors"))


def save(tensors: dict, model_dir: Path) -> None:
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def edit_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns by truncation (keep sign, exponent, 7 mantissa bits)."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype("<u2")


def write_safetensors_by_hand(path: Path, entries: dict[str, tuple[str, tuple, bytes]]) -> None:
    """The safetensors layout: u64 header length, JSON header, concatenated data."""
    header, data, offset = {"__metadata__": {"format": "pt"}}, b"", 0
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def outputs(model_dir: Path, dtype: str = "float32"):
    return minibert.load(model_dir, dtype).encode(TEXTS, output_attentions=True)


def assert_same_outputs(a, b) -> None:
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions, strict=True):
        assert_array_equal(x, y)


# ------------------------------------------------------------------ names


def test_bert_model_names(tiny_model):
    w = tiny_model.weights
    assert w.names["embeddings.word"] == "embeddings.word_embeddings.weight"
    assert w.names["layer.1.attention.W_q"] == "encoder.layer.1.attention.self.query.weight"
    assert w.ignored == ("pooler.dense.bias", "pooler.dense.weight")
    # Linear weights are transposed once at load: (out, in) in the file, (in, out) in Weights
    raw = tiny_tensors()
    assert_array_equal(w.layers[0].ffn.W_1, raw["encoder.layer.0.intermediate.dense.weight"].T)
    assert w.layers[0].ffn.W_1.shape == (32, 64)


def test_masked_lm_checkpoint_loads_and_lists_heads(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"bert." + k: v for k, v in tiny_tensors().items()}
    tensors |= {k: rng.normal(size=s).astype(np.float32) for k, s in HEAD_TENSORS.items()}
    d = copy_tiny(tmp_path)
    save(tensors, d)
    model = minibert.load(d)
    assert set(model.weights.ignored) == set(HEAD_TENSORS) | {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }
    assert model.weights.names["layer.0.attention.W_q"] == "bert.encoder.layer.0.attention.self.query.weight"
    assert_same_outputs(outputs(d), outputs(TINY_BERT))


def test_tf_style_layer_norm_names(tmp_path):
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tiny_tensors().items()
    }
    assert "encoder.layer.0.output.LayerNorm.gamma" in renamed
    d = copy_tiny(tmp_path)
    save(renamed, d)
    assert minibert.load(d).weights.names["layer.0.ln_2.gamma"] == "encoder.layer.0.output.LayerNorm.gamma"
    assert_same_outputs(outputs(d), outputs(TINY_BERT))


# ------------------------------------------------------------------ float16 / bfloat16


def test_float16_checkpoint(tmp_path):
    """float16 tensors are widened exactly; the result equals a float32 model
    whose weights were rounded to float16 and back."""
    half = {k: v.astype(np.float16) for k, v in tiny_tensors().items()}
    d16 = copy_tiny(tmp_path, "f16")
    save(half, d16)
    rounded = copy_tiny(tmp_path, "rounded")
    save({k: v.astype(np.float32) for k, v in half.items()}, rounded)
    m16 = minibert.load(d16)
    assert set(m16.weights.source_dtypes.values()) == {"F16"}
    assert m16.weights.layers[0].attention.W_q.dtype == np.float32
    assert_array_equal(
        m16.weights.layers[0].attention.W_q, half["encoder.layer.0.attention.self.query.weight"].T
    )
    assert_same_outputs(outputs(d16), outputs(rounded))
    for dtype in ("float32", "float64"):  # and in float64 too
        assert_array_equal(
            minibert.load(d16, dtype).weights.embeddings.word, half["embeddings.word_embeddings.weight"]
        )
    # the rounding did happen: observed 2.7e-3 max change of the last hidden state
    diff = np.abs(outputs(d16).hidden_states[-1] - outputs(TINY_BERT).hidden_states[-1]).max()
    assert 1e-5 < diff < 5e-2


def bf16_dir(tmp_path: Path) -> tuple[Path, dict]:
    """The tiny model with every tensor truncated to bfloat16, and the float32
    values those bfloat16 numbers stand for (computed by masking the low bits)."""
    entries, exact = {}, {}
    for k, v in tiny_tensors().items():
        bits = to_bfloat16_bits(v)
        entries[k] = ("BF16", v.shape, bits.tobytes())
        exact[k] = (v.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    d = copy_tiny(tmp_path, "bf16")
    write_safetensors_by_hand(d / "model.safetensors", entries)
    return d, exact


def test_bfloat16_checkpoint(tmp_path):
    d, exact = bf16_dir(tmp_path)
    model = minibert.load(d)
    assert set(model.weights.source_dtypes.values()) == {"BF16"}
    for slot, name in model.weights.names.items():  # "embeddings.ln.gamma", "layer.1.attention.W_q"
        part, _, path = slot.partition(".")
        holder = model.weights.embeddings
        if part == "layer":
            k, _, path = path.partition(".")
            holder = model.weights.layers[int(k)]
        for field in path.split("."):
            holder = getattr(holder, field)
        assert_array_equal(holder, exact[name].T if field.startswith("W_") else exact[name], err_msg=slot)
    rounded = copy_tiny(tmp_path, "rounded")
    save(exact, rounded)
    assert_same_outputs(outputs(d), outputs(rounded))


def test_bfloat16_decoding_of_known_bit_patterns(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x3FC0, 0x4049, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7F7F], "<u2")
    want = [1.0, -2.0, 1.5, 3.140625, 0.0, -0.0, np.inf, -np.inf, 2.0**-133, 3.3895313892515355e38]
    path = tmp_path / "known.safetensors"
    write_safetensors_by_hand(
        path, {"x": ("BF16", (2, 5), bits.tobytes()), "y": ("F32", (1,), b"\0\0\x80\x3f")}
    )
    tensors, dtypes = read_safetensors(path)
    assert dtypes == {"x": "BF16", "y": "F32"}
    assert tensors["x"].dtype == np.float32 and tensors["x"].shape == (2, 5)
    assert_array_equal(tensors["x"].ravel(), np.array(want, np.float32))
    assert np.signbit(tensors["x"].ravel()[5])
    assert_array_equal(tensors["y"], [1.0])


def test_bfloat16_decoding_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file

    d, _ = bf16_dir(tmp_path)
    ours, _ = read_safetensors(d / "model.safetensors")
    theirs = torch_load_file(str(d / "model.safetensors"))
    for name, t in theirs.items():
        assert t.dtype == torch.bfloat16
        assert_array_equal(ours[name], t.float().numpy(), err_msg=name)


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_half_precision_checkpoints_match_transformers(tmp_path, kind):
    """transformers loads the same file upcast to float32; minibert must agree."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if kind == "float16":
        d = copy_tiny(tmp_path, "f16")
        save({k: v.astype(np.float16) for k, v in tiny_tensors().items()}, d)
    else:
        d, _ = bf16_dir(tmp_path)
    ref = transformers.AutoModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    ours = minibert.load(d).encode(TEXTS, output_attentions=True)
    with torch.no_grad():
        out = ref(
            input_ids=torch.from_numpy(ours.input_ids),
            token_type_ids=torch.from_numpy(ours.token_type_ids),
            attention_mask=torch.from_numpy(ours.attention_mask),
            output_hidden_states=True,
            output_attentions=True,
        )
    real = ours.attention_mask.astype(bool)
    # observed: 1.4e-6 (hidden), 4.8e-7 (attention), as for the float32 tiny model
    for i, (a, b) in enumerate(zip(ours.hidden_states, out.hidden_states, strict=True)):
        assert_allclose(a[real], b.numpy()[real], rtol=0, atol=1e-4, err_msg=f"hidden_states[{i}]")
    for i, (a, b) in enumerate(zip(ours.attentions, out.attentions, strict=True)):
        for n, row in enumerate(real):
            k = row.sum()
            assert_allclose(a[n, :, :k, :k], b.numpy()[n, :, :k, :k], rtol=0, atol=1e-5, err_msg=f"attn[{i}]")


# ------------------------------------------------------------------ bad input


def _rewrite_header(d: Path, edit) -> None:
    """Apply ``edit`` to the model's parsed safetensors header (same data)."""
    rewrite_safetensors_header(d / "model.safetensors", edit)


def _retensor(d: Path, edit) -> None:
    tensors = tiny_tensors()
    edit(tensors)
    save(tensors, d)


def _shift_offsets(header):
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    header[names[3]]["data_offsets"][1] += 4  # tensor 3 claims 4 more bytes than its shape needs
    header[names[4]]["data_offsets"][0] += 4


def _beyond_end(header):
    """Self-consistent (shape matches offsets) but the data runs past the end of the file."""
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    assert header[last]["dtype"] == "F32"
    header[last]["shape"] = [int(np.prod(header[last]["shape"])) + 1024]
    header[last]["data_offsets"][1] += 4 * 1024


Q0 = "encoder.layer.0.attention.self.query.weight"
BAD_MODELS = {
    "missing safetensors": (lambda d: (d / "model.safetensors").unlink(), ["model.safetensors not found"]),
    "truncated safetensors": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:50_000]),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "safetensors of 5 bytes": (
        lambda d: (d / "model.safetensors").write_bytes(b"\x10\0\0\0\0"),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "header offsets not matching shapes": (
        lambda d: _rewrite_header(d, _shift_offsets),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "header offsets beyond the end": (
        lambda d: _rewrite_header(d, _beyond_end),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "tensor of the wrong shape": (
        lambda d: _retensor(d, lambda t: t.update({Q0: t[Q0][:, :16].copy()})),
        [Q0, "(32, 16)", "(32, 32)"],
    ),
    "missing tensor": (
        lambda d: _retensor(d, lambda t: t.pop("encoder.layer.1.output.dense.bias")),
        ["missing tensor", "encoder.layer.1.output.dense.bias", "(32,)"],
    ),
    "integer tensor": (
        lambda d: _retensor(d, lambda t: t.update({Q0: t[Q0].astype(np.int32)})),
        [Q0, "int32", "floating point"],
    ),
    "a tensor twice (bert. prefix and not)": (
        lambda d: _retensor(d, lambda t: t.update({"bert." + Q0: t[Q0]})),
        [Q0, "bert." + Q0, "same parameter"],
    ),
    "config vocab_size contradicts weights": (
        lambda d: edit_config(d, vocab_size=200),
        ["embeddings.word_embeddings.weight", "(186, 32)", "(200, 32)"],
    ),
    "config.json not JSON": (
        lambda d: (d / "config.json").write_text('{"hidden_size": 32,'),
        ["config.json", "not valid JSON"],
    ),
    "config.json missing": (lambda d: (d / "config.json").unlink(), ["config.json not found"]),
    "config missing a field": (
        lambda d: edit_config(d, num_attention_heads=None),
        ["config.json", "missing required field 'num_attention_heads'"],
    ),
    "hidden_size not divisible by heads": (
        lambda d: edit_config(d, num_attention_heads=5),
        ["config.json", "hidden_size 32 is not divisible by num_attention_heads 5"],
    ),
    "unknown hidden_act": (
        lambda d: edit_config(d, hidden_act="swishy"),
        ["config.json", "hidden_act 'swishy' is not supported", "gelu"],
    ),
    "no tokenizer": (
        lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.txt")],
        ["no tokenizer", "tokenizer.json", "vocab.txt"],
    ),
    "config has more layers than the weights": (
        lambda d: edit_config(d, num_hidden_layers=3),
        ["missing tensor", "encoder.layer.2."],
    ),
    "config has fewer layers than the weights": (
        lambda d: edit_config(d, num_hidden_layers=1),
        ["encoder layer(s) [1]", "num_hidden_layers=1"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_is_a_one_line_error(tmp_path, case, capsys):
    make_bad, fragments = BAD_MODELS[case]
    d = copy_tiny(tmp_path)
    make_bad(d)
    with pytest.raises(minibert.MinibertError) as err:
        minibert.load(d)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # and the CLI: exit status 2, one line on stderr, no traceback
    assert cli.main(["inspect", "--model", str(d)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("minibert: error: ") and captured.err.count("\n") == 1
    assert fragments[0] in captured.err


# ------------------------------------------------------------------ the record layout


def test_one_record_grouped_as_the_formulas(tiny_model):
    """Each layer is attention, ln_1, ffn, ln_2, every slot named as ops names it,
    each array the checkpoint's (transposed for Linear weights)."""
    raw = tiny_tensors()
    layer = tiny_model.weights.layers[1]
    for slot, name in LAYER_NAMES.items():
        value = slot_of(layer, slot)
        stored = raw[name.format(i=1)]
        assert_array_equal(
            value, stored.T if slot.rsplit(".", 1)[1].startswith("W_") else stored, err_msg=slot
        )
    assert tiny_model.weights.embeddings.ln.gamma is slot_of(tiny_model.weights.embeddings, "ln.gamma")


def test_the_records_hold_the_checkpoint_arrays_only(tiny_model):
    """The attention record is the formulas' alone: W_q, W_k, W_v unscaled, no
    fused layout (that is the fast schedule's, :func:`minibert.encoder.fast.fused_qkv`)."""
    raw = tiny_tensors()
    a = tiny_model.weights.layers[0].attention
    assert [f.name for f in fields(a)] == [
        "W_q",
        "b_q",
        "W_k",
        "b_k",
        "W_v",
        "b_v",
        "W_o",
        "b_o",
        "head_size",
        "W_pk",  # DeBERTa's separate position projections (None elsewhere)
        "b_pk",
        "W_pq",
        "b_pq",
    ]
    assert a.W_pk is None and a.W_pq is None
    for name, stored in (("W_q", "query"), ("W_k", "key"), ("W_v", "value")):
        assert_array_equal(getattr(a, name), raw[f"encoder.layer.0.attention.self.{stored}.weight"].T)
