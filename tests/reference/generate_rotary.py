"""Generate tiny random-weight ModernBERT models and transformers' references for
them (issue 19).

    python tests/reference/generate_rotary.py            # needs torch and transformers
    python tests/reference/generate_rotary.py --real     # also nomic-embed-text-v1.5 (make weights-nomic)

Every number written here comes from Hugging Face transformers (the
vocabulary from the ``tokenizers`` library); minibert is not imported. The
machinery (seeded scaled weights, one right-padded batch of mixed lengths,
eager attention, the ``minibert verify`` layout) is generate_families.py's.

* ``tiny-nomic-bert``: NomicBERT as transformers saves it (``q_proj`` ...,
  ``gate_proj``/``up_proj``), 2 layers, rotary base 1000, SwiGLU, post-LN,
  token types (pairs), a WordPiece vocabulary. transformers saves it under
  nomic's original tensor names (``Wqkv`` = [q; k; v] rows, ``fc12`` = its
  gate_proj, ``fc11`` = up_proj, ``fc2``, ``norm1``/``norm2``, ``emb_ln``);
  ``tiny-nomic-original`` is the same files with nomic's original config.json
  keys (``n_embd``, ``rotary_emb_base`` ...): the same references hold for both.
* ``tiny-modernbert``: 4 layers, global every 3rd (global, local, local,
  global), ``local_attention`` 8 (a token sees 4 positions each way) on
  texts of up to 40 tokens, different rotary bases (global 160000, local
  10000), GeGLU, bias-free. Its tokenizer is a byte-level BPE with its
  special tokens at the end of the vocabulary, as ModernBERT's.

**The float64 reference is patched.** transformers (5.x) computes
ModernBERT's rotary tables (``ModernBertRotaryEmbedding``: ``inv_freq`` built in
float32 at init, ``.float()`` in forward), the rotation of q and k
(``apply_rotary_pos_emb``: ``q.float()``) and the softmax
(``eager_attention_forward``: ``softmax(..., dtype=torch.float32)``) in
float32 even when the model is float64, so its float64 output is off by
about 1e-6 and is not a float64 reference. For the float64 file only,
:func:`float64_patch` replaces those three functions of
``transformers.models.modernbert.modeling_modernbert`` with the same
formulas kept in the input's dtype (inv_freq = 1 / theta^(2i/d) recomputed in
float64 from the config's theta); every other module is transformers' own.
NomicBERT: transformers computes its rotary tables (``NomicBertRotaryEmbedding``)
in float32 too; its float64 reference patches that one function the same way.
The float32 files are transformers unpatched. Written to tests/data/<name>/
and tests/reference/rotary/.

With ``--real``, ``tests/reference/rotary/nomic-embed-text-v1.5-{float32,float64}.npz``:
the real NomicBERT (weights/fetch_nomic.py) on :data:`REAL_TEXTS`, every hidden
state at real tokens, every attention map (float32), and the sentence embeddings
as sentence-transformers makes them (mean pooling, then normalize), computed with
torch from transformers' last hidden state. transformers' ``NomicBertConfig`` does
not read nomic's original config keys (``n_embd`` ...), so the model is built from
a ``NomicBertConfig`` written out from them (:func:`real_config`); the weights are
read under nomic's original names through transformers' own conversion mapping.
The float64 file is patched as above.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import generate_families as fam  # noqa: E402  (this folder)
from generate_families import Spec  # noqa: E402
from provenance import sha256, size_check, versions  # noqa: E402  (this folder)

ROOT = fam.ROOT
OUT = ROOT / "tests" / "reference" / "rotary"
MAX_BYTES = 3_000_000  # the tiny models; --real adds REAL_MAX_BYTES
REAL_MAX_BYTES = 6_000_000
LENGTH = 40  # the tokenizer's model_max_length: the long text is cut there, past the window
REAL = ROOT / "weights" / "nomic-embed-text-v1.5"
#: nomic-embed-text's task prefixes; a query, a document that answers it, one that does not.
REAL_TEXTS = [
    "search_query: What is TSNE?",
    "search_document: t-SNE is a method for visualizing high-dimensional data.",
    "search_document: Add two cups of flour.",
]

#: ModernBERT's specials, after the learned vocabulary (ModernBERT-base: 50280..50284).
MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
SPECS = [
    Spec("tiny-modernbert", "ModernBertModel", "ModernBertConfig",
         dict(hidden_size=24, num_attention_heads=3, intermediate_size=40, num_hidden_layers=4,
              max_position_embeddings=64, global_attn_every_n_layers=3, local_attention=8,
              global_rope_theta=160000.0, local_rope_theta=10000.0, hidden_activation="gelu",
              norm_eps=1e-5),
         "bpe", "PreTrainedTokenizerFast", MODERNBERT_SPECIALS, LENGTH,
         note="layers global, local, local, global; window 8 (+-4) on texts up to 40 tokens; "
              "rotary theta 160000 / 10000; GeGLU; pre-LN with final norm; specials at the vocabulary's end"),
    Spec("tiny-nomic-bert", "NomicBertModel", "NomicBertConfig",
         dict(hidden_size=24, num_attention_heads=3, intermediate_size=40, num_hidden_layers=2,
              max_position_embeddings=64, type_vocab_size=2, hidden_act="silu", layer_norm_eps=1e-12,
              rope_parameters={"rope_theta": 1000.0, "rope_type": "default"}),
         "wordpiece", "BertTokenizer", fam.BERT_SPECIALS, LENGTH,
         note="rotary base 1000, SwiGLU, post-LN, token types; saved under nomic's original tensor names"),
]  # fmt: skip

LONG = " ".join(fam.CORPUS)
INPUTS = [
    ("Hello world!", None),
    ("", None),
    ("How old are you?", "I am six years old."),
    ("The encoder reads every token.", ""),
    (LONG, None),
]
TOKEN_CASES = [*[(t, p, None) for t, p in INPUTS],
               ("The quick brown fox jumps over the lazy dog.", "Hello world!", 9),
               ("Zoë's parties: 3.14 pizzas!", "  spaces   and\ttabs ", None)]  # fmt: skip


def build_tokenizer(spec: Spec, retrain: bool):
    """A byte-level BPE trained on the corpus (or read back from an earlier run),
    the specials appended after it, ``[CLS] A [SEP] (B [SEP])`` as ModernBERT's template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    saved = fam.DATA / spec.name / "tokenizer.json"
    if saved.is_file() and not retrain:
        model = json.loads(saved.read_text(encoding="utf-8"))["model"]
        vocab = {t: i for t, i in model["vocab"].items() if t not in spec.specials}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    else:
        vocab, merges = fam.train_bpe(())
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(spec.specials))  # ids len(vocab) ...: at the end
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_max_length=spec.model_max_length,
    )  # fmt: skip


def build(spec: Spec, retrain: bool) -> Path:
    """tests/data/<name>/ with the tokenizer above and fam.build_model's weights."""
    path = fam.DATA / spec.name
    tok = build_tokenizer(spec, retrain)
    tmp = Path(tempfile.mkdtemp(dir=fam.DATA, prefix=f".{spec.name}."))
    tok.save_pretrained(tmp)
    config = dict(spec.config, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                  bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)  # fmt: skip
    fam.build_model(Spec(**{**spec.__dict__, "config": config}), len(tok), tok.pad_token_id, tmp)
    tmp.chmod(0o755)
    for f in tmp.iterdir():
        f.chmod(0o644)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def nomic_original(path: Path) -> Path:
    """tests/data/tiny-nomic-original: ``path``'s files with nomic's original
    config.json keys (``n_embd``, ``rotary_emb_base`` ... as nomic-embed-text ships
    them). The weights are copied as they are: transformers 5.25's save_pretrained
    already writes nomic's original tensor names (``emb_ln``, ``encoder.layers.{i}.attn.Wqkv``,
    ``mlp.fc11``/``fc12``/``fc2``, ``norm1``/``norm2``; its conversion mapping reversed)."""
    out = fam.DATA / "tiny-nomic-original"
    tmp = Path(tempfile.mkdtemp(dir=fam.DATA, prefix=".tiny-nomic-original."))
    for f in path.iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp / f.name)
    c = json.loads((path / "config.json").read_text())
    original = {
        "model_type": "nomic_bert", "architectures": ["NomicBertModel"], "n_embd": c["hidden_size"],
        "n_head": c["num_attention_heads"], "n_layer": c["num_hidden_layers"],
        "n_inner": c["intermediate_size"],
        "n_positions": c["max_position_embeddings"], "layer_norm_epsilon": c["layer_norm_eps"],
        "vocab_size": c["vocab_size"], "type_vocab_size": c["type_vocab_size"],
        "pad_token_id": c["pad_token_id"],
        "activation_function": "swiglu", "rotary_emb_base": c["rope_parameters"]["rope_theta"],
        "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_scaling_factor": None,
        "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "prenorm": False,
        "causal": False,
    }  # fmt: skip
    (tmp / "config.json").write_text(json.dumps(original, indent=2) + "\n")
    tmp.chmod(0o755)
    for f in tmp.iterdir():
        f.chmod(0o644)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


@contextlib.contextmanager
def float64_patch():
    """ModernBERT's rotary tables, rotation and softmax kept in the input's dtype
    (see the module docstring): the same formulas as transformers', no float32 cast."""
    import torch
    from transformers.models.modernbert import modeling_modernbert as mb

    def rotary_forward(self, x, position_ids, layer_type):
        theta = self.config.rope_parameters[layer_type]["rope_theta"]
        d = self.config.hidden_size // self.config.num_attention_heads
        inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=x.dtype) / d))
        freqs = position_ids[..., None].to(x.dtype) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def apply_rotary(q, k, cos, sin, unsqueeze_dim=1):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return q * cos + mb.rotate_half(q) * sin, k * cos + mb.rotate_half(k) * sin

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        w = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.nn.functional.softmax(w, dim=-1)
        return torch.matmul(w, value).transpose(1, 2).contiguous(), w

    def nomic_rotary_forward(self, x, position_ids):
        theta = self.config.rope_parameters["rope_theta"]
        d = self.config.hidden_size // self.config.num_attention_heads
        inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=x.dtype) / d))
        freqs = position_ids[..., None].to(x.dtype) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    from transformers.models.nomic_bert import modeling_nomic_bert as nb

    saved = (mb.ModernBertRotaryEmbedding.forward, mb.apply_rotary_pos_emb, mb.eager_attention_forward,
             nb.NomicBertRotaryEmbedding.forward)  # fmt: skip
    patched = (rotary_forward, apply_rotary, eager, nomic_rotary_forward)
    (mb.ModernBertRotaryEmbedding.forward, mb.apply_rotary_pos_emb, mb.eager_attention_forward,
     nb.NomicBertRotaryEmbedding.forward) = patched  # fmt: skip
    try:
        yield
    finally:
        (mb.ModernBertRotaryEmbedding.forward, mb.apply_rotary_pos_emb, mb.eager_attention_forward,
         nb.NomicBertRotaryEmbedding.forward) = saved  # fmt: skip


PATCH_NOTE = (
    "float64: transformers' ModernBertRotaryEmbedding.forward, apply_rotary_pos_emb and "
    "eager_attention_forward, and NomicBertRotaryEmbedding.forward, patched to keep float64 "
    "(unpatched they compute in float32); see generate_rotary.py"
)


def real_config():
    """transformers' NomicBertConfig from the real model's config.json (nomic's original keys)."""
    from transformers import NomicBertConfig

    c = json.loads((REAL / "config.json").read_text())
    assert (c["rotary_emb_fraction"], c["rotary_emb_interleaved"]) == (1.0, False)
    assert c["activation_function"] == "swiglu"
    assert not (c["qkv_proj_bias"] or c["mlp_fc1_bias"] or c["mlp_fc2_bias"] or c["prenorm"])
    return NomicBertConfig(
        vocab_size=c["vocab_size"], hidden_size=c["n_embd"], num_hidden_layers=c["n_layer"],
        num_attention_heads=c["n_head"], intermediate_size=c["n_inner"], hidden_act="silu",
        max_position_embeddings=c["n_positions"], type_vocab_size=c["type_vocab_size"],
        layer_norm_eps=c["layer_norm_epsilon"], pad_token_id=c["pad_token_id"],
        rope_parameters={"rope_theta": c["rotary_emb_base"], "rope_type": "default"},
    )  # fmt: skip


def real_reference(dtype: str, common: dict) -> Path:
    """nomic-embed-text-v1.5 on REAL_TEXTS: every hidden state, float32 attention maps and
    sentence embeddings."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, NomicBertModel

    tok = AutoTokenizer.from_pretrained(REAL)
    model, info = NomicBertModel.from_pretrained(REAL, config=real_config(), attn_implementation="eager",
                                                 dtype=torch.float32, output_loading_info=True)  # fmt: skip
    assert not any(info.values()), info  # every tensor read, none left out
    model = model.to({"float32": torch.float32, "float64": torch.float64}[dtype]).eval()
    enc = tok(REAL_TEXTS, padding=True, return_tensors="pt")
    patch = float64_patch() if dtype == "float64" else contextlib.nullcontext()
    with torch.no_grad(), patch:
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    mask = enc["attention_mask"]
    m = mask[:, :, None].to(out.last_hidden_state.dtype)
    mean = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling
    sentence = torch.nn.functional.normalize(mean, p=2, dim=1)  # its Normalize
    real = mask.numpy().astype(bool)
    arrays = {f"hidden_states.{i}": h.numpy()[real] for i, h in enumerate(out.hidden_states)}
    if dtype == "float32":
        arrays |= {f"attentions.{i}": a.numpy() for i, a in enumerate(out.attentions)}
    provenance = dict(
        common,
        model="nomic-embed-text-v1.5",
        model_sha256=sha256(REAL / "model.safetensors"),
        dtype=dtype,
        call="NomicBertModel.from_pretrained(dir, config=real_config(), attn_implementation='eager')"
        f".to({dtype})(**tok(texts, padding=True))",
        sentence="mean of the last hidden state over attention_mask (clamp 1e-9), then "
        "torch.nn.functional.normalize: sentence-transformers' Pooling(mean) and Normalize, "
        "written out with torch (sentence-transformers is not installed)",
        stored="hidden states at real tokens, in order (text, position); attentions (B, h, S, S)",
    )
    if dtype == "float64":
        provenance["patch"] = PATCH_NOTE
    out_path = OUT / f"nomic-embed-text-v1.5-{dtype}.npz"
    np.savez_compressed(out_path, provenance=np.array(json.dumps(provenance)),
                        texts=np.array(json.dumps(REAL_TEXTS)), input_ids=enc["input_ids"].numpy(),
                        token_type_ids=enc["token_type_ids"].numpy(), attention_mask=mask.numpy(),
                        sentence=sentence.numpy(), **arrays)  # fmt: skip
    return out_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrain", action="store_true", help="train a new vocabulary")
    parser.add_argument("--real", action="store_true", help="also nomic-embed-text-v1.5 (weights/)")
    parser.add_argument("--real-only", action="store_true", help="only nomic-embed-text-v1.5")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    fam.OUT, fam.INPUTS, fam.TOKEN_CASES = OUT, INPUTS, TOKEN_CASES
    common = {
        "generator": str(Path(__file__).relative_to(ROOT)),
        "generator_sha256": sha256(Path(__file__)),
        "date": datetime.date.today().isoformat(),
        "seed": fam.SEED,
        "versions": versions(),
    }
    written = []
    for spec in [] if args.real_only else SPECS:
        path = build(spec, args.retrain) if spec.tokenizer == "bpe" else fam.build(spec, args.retrain)
        written += [*path.iterdir(), fam.token_reference(spec, path, common)]
        written.append(fam.run_reference(spec, path, "float32", common))
        with float64_patch():
            written.append(fam.run_reference(spec, path, "float64", dict(common, patch=PATCH_NOTE)))
        if spec.name == "tiny-nomic-bert":
            written += [*nomic_original(path).iterdir()]
        print(f"{spec.name:<24} {spec.note}")
    if real := args.real or args.real_only:
        written += [real_reference(dtype, common) for dtype in ("float32", "float64")]
    return size_check(written, (0 if args.real_only else MAX_BYTES) + (REAL_MAX_BYTES if real else 0))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
