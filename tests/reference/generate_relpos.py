"""Generate tiny random-weight MPNet and DeBERTa-v2/v3 models, transformers' references
for them, and the reference of the real all-mpnet-base-v2 (issue 18).

    python tests/reference/generate_relpos.py            # needs torch and transformers
    python tests/reference/generate_relpos.py --real     # also all-mpnet-base-v2 (make weights-mpnet)

Every number written here comes from Hugging Face transformers (the
vocabularies from the ``tokenizers`` library); minibert is not imported. The
machinery (seeded scaled weights, the family's own tokenizer class, one
right-padded batch, eager attention, the ``minibert verify`` layout) is
generate_families.py's; this script adds the relative-position families with
configs that exercise every branch:

* ``tiny-mpnet``: the T5-style bucket bias; a text of 100 tokens, past the 8
  exact buckets and past distance 91, where every bucket is the last;
* ``tiny-deberta-v3``: v3's settings: ``position_buckets`` 16 (log buckets
  beyond distance 8), ``share_att_key``, ``norm_rel_ebd`` layer_norm,
  ``position_biased_input`` false, no token types, c2p and p2c;
* ``tiny-deberta-v2``: v2's: no buckets, ``max_relative_positions`` 40 (so
  distances are clipped), separate ``pos_key_proj``/``pos_query_proj``, an
  absolute position table, token types (pairs);
* ``tiny-deberta-c2p``: c2p alone (scale sqrt(2d)), buckets 8 up to 24 (float32).

Written to tests/data/<name>/ and tests/reference/relpos/. With ``--real``,
``tests/reference/relpos/all-mpnet-base-v2-{float32,float64}.npz``: every
hidden state (and, float32, every attention map) of :data:`REAL_TEXTS`, and
the sentence embeddings as sentence-transformers makes them (modules.json:
Transformer, mean Pooling, Normalize), computed with torch from transformers'
last hidden state: sentence-transformers is not installed here.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import generate_families as fam  # noqa: E402  (this folder)
import numpy as np
from generate_families import Spec  # noqa: E402
from provenance import sha256, size_check, versions  # noqa: E402  (this folder)

ROOT = fam.ROOT
OUT = ROOT / "tests" / "reference" / "relpos"
MAX_BYTES = 6_500_000
P = 128
LENGTH = 100  # the tokenizers' model_max_length: the long text is cut there

MPNET_SPECIALS = ("<s>", "<pad>", "</s>", "[UNK]", "<mask>")
DEBERTA_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SMALL = dict(hidden_size=24, num_attention_heads=3, intermediate_size=40, num_hidden_layers=2)
DEBERTA = dict(SMALL, max_position_embeddings=P, relative_attention=True, layer_norm_eps=1e-7,
               hidden_act="gelu")  # fmt: skip

SPECS = [
    Spec("tiny-mpnet", "MPNetForMaskedLM", "MPNetConfig",
         dict(SMALL, max_position_embeddings=P + 2, relative_attention_num_buckets=32, layer_norm_eps=1e-5),
         "wordpiece", "MPNetTokenizer", MPNET_SPECIALS, LENGTH,
         note="T5 bucket bias, 32 buckets up to 128; positions from padding index 1; 'mpnet.' prefix"),
    Spec("tiny-deberta-v3", "DebertaV2ForMaskedLM", "DebertaV2Config",
         dict(DEBERTA, position_buckets=16, max_relative_positions=-1, share_att_key=True,
              norm_rel_ebd="layer_norm", pos_att_type="p2c|c2p", position_biased_input=False,
              type_vocab_size=0),
         "unigram", "DebertaV2Tokenizer", DEBERTA_SPECIALS, LENGTH,
         note="v3 settings: log buckets, share_att_key, LayerNorm on rel embeddings, no absolute positions"),
    Spec("tiny-deberta-v2", "DebertaV2Model", "DebertaV2Config",
         dict(DEBERTA, position_buckets=-1, max_relative_positions=40, share_att_key=False,
              pos_att_type=["c2p", "p2c"], position_biased_input=True, type_vocab_size=2),
         "unigram", "DebertaV2Tokenizer", DEBERTA_SPECIALS, LENGTH,
         note="v2 settings: clipped distances (40), pos_key_proj/pos_query_proj, absolute positions, types"),
    Spec("tiny-deberta-c2p", "DebertaV2Model", "DebertaV2Config",
         dict(DEBERTA, position_buckets=8, max_relative_positions=24, share_att_key=False,
              pos_att_type=["c2p"], position_biased_input=True, type_vocab_size=0),
         "unigram", "DebertaV2Tokenizer", DEBERTA_SPECIALS, LENGTH, dtypes=("float32",),
         note="c2p alone (scale sqrt(2d)); buckets 8 up to 24"),
]  # fmt: skip

LONG = " ".join(fam.CORPUS)  # about 200 tokens: cut at LENGTH
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

REAL = ROOT / "weights" / "all-mpnet-base-v2"
REAL_TEXTS = ["A man is playing a guitar.", "The new movie is awesome!", "Relative positions."]


def trained_vocabulary(spec: Spec, retrain: bool) -> dict:
    """As generate_families', but DeBERTa's Unigram knows its unknown token as [UNK]."""
    saved = fam.DATA / spec.name / "tokenizer.json"
    if spec.tokenizer != "unigram" or (saved.is_file() and not retrain):
        return ORIGINAL_VOCABULARY(spec, retrain)
    return {"vocab": fam.train_unigram(spec.specials, "[UNK]", lowercase=False)}


ORIGINAL_VOCABULARY = fam.trained_vocabulary


def bucket_reference(common: dict) -> Path:
    """transformers' own bucket functions over every relative position -2000..2000:
    MPNet's (32, 128) and DeBERTa's log buckets for the real and tiny settings."""
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    rel = torch.arange(-2000, 2001)
    arrays = {"relative_position": rel.numpy(),
              "mpnet": MPNetEncoder.relative_position_bucket(rel).numpy()}  # fmt: skip
    settings = [(256, 512), (16, 128), (8, 24), (256, 1024), (64, 128)]
    for size, most in settings:
        buckets = make_log_bucket_position(rel, size, most)
        arrays[f"deberta_{size}_{most}"] = buckets.to(torch.long).numpy()
    provenance = dict(common, call="MPNetEncoder.relative_position_bucket(rel) (32 buckets, distance 128); "
                      "make_log_bucket_position(rel, bucket_size, max_position).long()")  # fmt: skip
    out = OUT / "buckets.npz"
    np.savez_compressed(out, provenance=np.array(json.dumps(provenance)), **arrays)
    return out


def real_reference(dtype: str, common: dict) -> Path:
    """all-mpnet-base-v2 on REAL_TEXTS: every hidden state, float32 attention maps, sentence embeddings."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REAL)
    model = AutoModel.from_pretrained(REAL, attn_implementation="eager", dtype=torch.float32)
    model = model.to({"float32": torch.float32, "float64": torch.float64}[dtype]).eval()
    enc = tok(REAL_TEXTS, padding=True, truncation=True, max_length=384, return_tensors="pt")
    with torch.no_grad():
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
        model="all-mpnet-base-v2",
        model_sha256=sha256(REAL / "model.safetensors"),
        dtype=dtype,
        call="AutoModel.from_pretrained(dir, attn_implementation='eager')"
        f".to({dtype})(**tok(texts, padding=True, truncation=True, max_length=384))",
        sentence="mean of the last hidden state over attention_mask (clamp 1e-9), then "
        "torch.nn.functional.normalize: sentence-transformers' Pooling(mean) and Normalize, "
        "written out with torch (sentence-transformers is not installed)",
        stored="hidden states at real tokens, in order (text, position); attentions (B, h, S, S)",
    )
    out_path = OUT / f"all-mpnet-base-v2-{dtype}.npz"
    np.savez_compressed(out_path, provenance=np.array(json.dumps(provenance)),
                        texts=np.array(json.dumps(REAL_TEXTS)), input_ids=enc["input_ids"].numpy(),
                        attention_mask=mask.numpy(), sentence=sentence.numpy(), **arrays)  # fmt: skip
    return out_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrain", action="store_true", help="train new vocabularies")
    parser.add_argument("--real", action="store_true", help="also all-mpnet-base-v2 (weights/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    fam.OUT, fam.INPUTS, fam.TOKEN_CASES, fam.trained_vocabulary = (
        OUT,
        INPUTS,
        TOKEN_CASES,
        trained_vocabulary,
    )
    common = {
        "generator": str(Path(__file__).relative_to(ROOT)),
        "generator_sha256": sha256(Path(__file__)),
        "date": datetime.date.today().isoformat(),
        "seed": fam.SEED,
        "versions": versions(),
    }
    written = [bucket_reference(common)]
    for spec in SPECS:
        path = fam.build(spec, args.retrain)
        written += [*path.iterdir(), fam.token_reference(spec, path, common)]
        written += [fam.run_reference(spec, path, dtype, common) for dtype in spec.dtypes]
        print(f"{spec.name:<24} {spec.note}")
    if args.real:
        written += [real_reference(dtype, common) for dtype in ("float32", "float64")]
    return size_check(written, MAX_BYTES)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
