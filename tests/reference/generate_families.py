"""Generate a tiny random-weight model of every BERT family, and transformers' references for it.

    python tests/reference/generate_families.py      # needs torch==2.13.0 and transformers

Every number written here comes from Hugging Face transformers (and every
vocabulary from the ``tokenizers`` library); minibert is not imported. The
files are committed, so the tests (tests/test_families.py) need no torch.

For each :class:`Spec` below it writes

* ``tests/data/<name>/``: the model as transformers saves it (config.json,
  model.safetensors, tokenizer.json, tokenizer_config.json): a few small
  layers with seeded random weights, scaled so that activations and
  attention patterns are far from trivial, and its own small tokenizer
  trained here on :data:`CORPUS` with the ``tokenizers`` library: WordPiece
  (bert, distilbert, electra), byte-level BPE (roberta) or a
  SentencePiece-style Unigram (xlm-roberta, camembert, albert), handed to the
  family's own transformers tokenizer class, which builds and saves the
  pipeline (normaliser, pre-tokenizer, special-token template) exactly as it
  does for the real models;
* ``tests/reference/families/<name>-{float32,float64}.npz``: transformers'
  token ids, every hidden state and every attention map for :data:`INPUTS`
  (singles and pairs, one right-padded batch, eager attention), at every real
  (non-padding) position, in the layout of ``minibert verify`` (format 1);
* ``tests/reference/families/tokens-<name>.json``: transformers' ids for
  :data:`TOKEN_CASES` (truncation of singles and pairs, the default length).

Determinism: weights come from NumPy's seeded generator. The ``tokenizers``
trainers break ties between equally frequent merges in hash order, which
changes from run to run (WordPiece: a token or two at the vocabulary's
cut-off; Unigram: scores within ~1e-3, rounded here to 0.01; byte-level BPE
is stable). So a vocabulary is trained once: when ``tests/data/<name>/``
already has a tokenizer.json, its vocabulary is reused (``--retrain`` trains
new ones), and a rerun reproduces every number.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from provenance import sha256, size_check, versions  # noqa: E402  (this folder, on the script's path)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OUT = ROOT / "tests" / "reference" / "families"
SEED = 20241107
FORMAT_VERSION = 1  # the reference layout of minibert/teaching/verify.py
MAX_BYTES = 3_000_000  # everything this script writes, together

CORPUS = """
The quick brown fox jumps over the lazy dog.
Hello world! How old are you? I am six years old.
The encoder reads every token of the sentence at once.
Each layer mixes the positions with attention, then a feed-forward network transforms each position.
A layer norm rescales every vector after the residual sum.
Only the second segment of a pair gets token type one in BERT.
RoBERTa counts positions from the padding index plus one.
DistilBERT keeps every second layer of its teacher and drops the token types.
ELECTRA learns to spot replaced tokens; its embeddings are narrower than its layers.
ALBERT shares one layer across the whole depth of the network.
Café, naïve, São Paulo and Zoë are words with accents.
Numbers like 3.14 and 1,000 are split at punctuation.
We eat pizza and we have parties; the party was fun!
Sentences teach the model words, and words teach it sentences.
The cat sat on the mat, and the dog sat on the log.
Tokens become vectors, vectors become meaning.
""".strip().splitlines()

LONG_TEXT = " ".join(CORPUS[2:6])  # longer than every tiny model's limit: truncated

#: (text, text_pair or None), run by transformers as one right-padded batch.
INPUTS: list[tuple[str, str | None]] = [
    ("Hello world!", None),
    ("", None),
    ("Café naïve, São Paulo 🍕", None),
    ("How old are you?", "I am six years old."),
    ("The encoder reads every token.", ""),
    (LONG_TEXT, None),
]

#: Tokenizer-only cases: (text, pair, max_length or None for the tokenizer's own limit).
TOKEN_CASES: list[tuple[str, str | None, int | None]] = [
    *[(t, p, None) for t, p in INPUTS],
    ("A layer norm rescales every vector.", LONG_TEXT, None),
    ("The quick brown fox jumps over the lazy dog.", None, 6),
    ("The quick brown fox jumps over the lazy dog.", "Hello world!", 9),
    ("Hi", "The quick brown fox jumps over the lazy dog, and the cat sat on the mat.", 10),
    ("Zoë's parties: 3.14 pizzas!", "  spaces   and\ttabs ", None),
]


@dataclass(frozen=True)
class Spec:
    """One tiny model: what transformers class saves it, its config, its tokenizer."""

    name: str  # tests/data/<name>
    saved_class: str  # the transformers class whose checkpoint is saved (task heads included)
    config_class: str
    config: dict
    tokenizer: str  # "wordpiece" | "bpe" | "unigram"
    tokenizer_class: str
    specials: tuple[str, ...]  # trained into the vocabulary first, in this order (ids 0, 1, ...)
    model_max_length: int  # the tokenizer's default truncation length
    store_dtype: str = "float32"  # the checkpoint's dtype (float16 / bfloat16 variants)
    dtypes: tuple[str, ...] = ("float32", "float64")  # references; variants of a family: float32 only
    tokenizer_kwargs: dict = field(default_factory=dict)
    note: str = ""


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
CAMEMBERT_SPECIALS = ("<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>", "<mask>")
ALBERT_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")

P = 16  # max_position_embeddings of every tiny model but the RoBERTa family's
SMALL = dict(hidden_size=24, num_attention_heads=3, intermediate_size=40, max_position_embeddings=P)
BERT = dict(SMALL, num_hidden_layers=2, type_vocab_size=2, hidden_act="gelu")
ROBERTA = dict(SMALL, num_hidden_layers=2, max_position_embeddings=P + 2, type_vocab_size=1,
               pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)  # fmt: skip
F32 = ("float32",)
BERT_TOK = dict(
    tokenizer="wordpiece", tokenizer_class="BertTokenizer", specials=BERT_SPECIALS, model_max_length=P
)

SPECS = [
    Spec("tiny-bert-gelu-new", "BertModel", "BertConfig", dict(BERT, hidden_act="gelu_new"), **BERT_TOK,
         note="hidden_act gelu_new: the tanh approximation of GELU"),
    Spec("tiny-bert-mlm", "BertForMaskedLM", "BertConfig", BERT, **BERT_TOK, dtypes=F32,
         note="BertForMaskedLM checkpoint: 'bert.' prefix plus MLM head tensors"),
    Spec("tiny-bert-fp16", "BertModel", "BertConfig", BERT, **BERT_TOK, store_dtype="float16", dtypes=F32,
         note="checkpoint stored in float16; references from transformers on the upcast weights"),
    Spec("tiny-bert-bf16", "BertModel", "BertConfig", BERT, **BERT_TOK, store_dtype="bfloat16", dtypes=F32,
         note="checkpoint stored in bfloat16; references from transformers on the upcast weights"),
    Spec("tiny-roberta", "RobertaForMaskedLM", "RobertaConfig", ROBERTA, "bpe", "RobertaTokenizer",
         ROBERTA_SPECIALS, P, note="byte-level BPE; positions from pad_token_id + 1; 'roberta.' prefix"),
    Spec("tiny-xlm-roberta", "XLMRobertaModel", "XLMRobertaConfig", ROBERTA, "unigram", "XLMRobertaTokenizer",
         ROBERTA_SPECIALS, P, note="SentencePiece-style Unigram; RoBERTa positions"),
    Spec("tiny-camembert", "CamembertModel", "CamembertConfig", ROBERTA, "unigram", "CamembertTokenizer",
         CAMEMBERT_SPECIALS, P, note="SentencePiece-style Unigram with CamemBERT's special tokens"),
    Spec("tiny-distilbert", "DistilBertForMaskedLM", "DistilBertConfig",
         dict(dim=24, n_heads=3, hidden_dim=40, n_layers=2, max_position_embeddings=P,
              sinusoidal_pos_embds=True),
         "wordpiece", "DistilBertTokenizer", BERT_SPECIALS, P,
         note="dim/n_heads/hidden_dim/n_layers; no token types; sinusoidal position table; "
              "'distilbert.' prefix"),
    Spec("tiny-electra", "ElectraForPreTraining", "ElectraConfig", dict(BERT, embedding_size=12),
         "wordpiece", "BertTokenizer", BERT_SPECIALS, P,
         note="discriminator: embedding_size 12 < hidden 24, embeddings_project; 'electra.' prefix"),
    Spec("tiny-electra-generator", "ElectraForMaskedLM", "ElectraConfig",
         dict(BERT, hidden_size=12, intermediate_size=20, embedding_size=24),
         "wordpiece", "BertTokenizer", BERT_SPECIALS, P, dtypes=F32,
         note="generator: embedding_size 24 > hidden 12 (as electra-base-generator), MLM head"),
    Spec("tiny-albert", "AlbertForMaskedLM", "AlbertConfig",
         dict(BERT, num_hidden_layers=3, embedding_size=12, hidden_act="gelu_new"),
         "unigram", "AlbertTokenizer", ALBERT_SPECIALS, P,
         note="one layer shared by 3 steps; embedding_size 12 -> embedding_hidden_mapping_in; "
              "'albert.' prefix"),
    Spec("tiny-albert-groups", "AlbertModel", "AlbertConfig",
         dict(BERT, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2, embedding_size=12,
              hidden_act="gelu_new"),
         "unigram", "AlbertTokenizer", ALBERT_SPECIALS, P, dtypes=F32,
         note="2 groups of 2 layers over 3 steps: group floor(i / 1.5) = 0, 0, 1"),
]  # fmt: skip


# --------------------------------------------------------------------------- tokenizers


def train_wordpiece(specials: tuple[str, ...]) -> dict[str, int]:
    """A WordPiece vocabulary trained on CORPUS (BERT's uncased normaliser), in sorted order."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=160, special_tokens=list(specials)))
    learned = sorted(set(tok.get_vocab()) - set(specials))
    return {t: i for i, t in enumerate([*specials, *learned])}


def train_bpe(specials: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE (vocabulary, merges) trained on CORPUS, as RoBERTa's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=330, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(specials: tuple[str, ...], unk: str, lowercase: bool) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary (piece, log-probability) trained on CORPUS.

    Specials first (score 0), then the pieces by decreasing score; scores
    rounded to 0.01 (see the module docstring).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    if lowercase:  # as ALBERT's tokenizer normalises
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
        )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=170, special_tokens=list(specials), unk_token=unk)
    tok.train_from_iterator(CORPUS, trainer)
    pieces = [(p, round(s, 2)) for p, s in json.loads(tok.to_str())["model"]["vocab"] if p not in specials]
    pieces.sort(key=lambda ps: (-ps[1], ps[0]))
    return [(s, 0.0) for s in specials] + pieces


def trained_vocabulary(spec: Spec, retrain: bool) -> dict:
    """The tokenizer class's vocabulary arguments: trained here, or (unless
    ``retrain``) read back from the tokenizer.json trained on an earlier run."""
    saved = DATA / spec.name / "tokenizer.json"
    if saved.is_file() and not retrain:
        model = json.loads(saved.read_text(encoding="utf-8"))["model"]
        if spec.tokenizer == "wordpiece":
            return {"vocab": model["vocab"]}
        if spec.tokenizer == "bpe":
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
            return {"vocab": model["vocab"], "merges": merges}
        return {"vocab": [tuple(piece) for piece in model["vocab"]]}
    if spec.tokenizer == "wordpiece":
        return {"vocab": train_wordpiece(spec.specials)}
    if spec.tokenizer == "bpe":
        vocab, merges = train_bpe(spec.specials)
        return {"vocab": vocab, "merges": merges}
    return {
        "vocab": train_unigram(spec.specials, "<unk>", lowercase=spec.tokenizer_class == "AlbertTokenizer")
    }


def build_tokenizer(spec: Spec, retrain: bool):
    """The family's own transformers tokenizer class over a vocabulary trained with ``tokenizers``."""
    import transformers

    cls = getattr(transformers, spec.tokenizer_class)
    kwargs = dict(spec.tokenizer_kwargs, model_max_length=spec.model_max_length)
    if spec.tokenizer == "wordpiece":
        kwargs["do_lower_case"] = True
    return cls(**trained_vocabulary(spec, retrain), **kwargs)


# --------------------------------------------------------------------------- models


def scaled_state_dict(model, rng: np.random.Generator, keep: tuple[str, ...] = ()) -> dict:
    """Seeded random weights, scaled so activations are not trivially small.

    Linear matrices ~ N(0, 1/fan_in) (so q.k / sqrt(d) is of order 1 and
    attention is far from uniform), embedding tables ~ N(0, 1), biases and
    LayerNorm beta ~ N(0, 0.1^2), gamma ~ 1 + N(0, 0.1^2). Drawn in sorted
    name order with NumPy, independent of transformers' init code. Names in
    ``keep`` keep transformers' value (DistilBERT's sinusoidal table).
    """
    import torch

    state = {}
    for name, p in sorted(model.state_dict().items()):
        shape = tuple(p.shape)
        if name in keep or not p.is_floating_point():
            state[name] = p.clone()
            continue
        if len(shape) == 1 and name.endswith(".weight"):  # every 1-D weight is a LayerNorm gamma
            value = 1 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.1 * rng.standard_normal(shape)
        elif "embeddings." in name and "project" not in name:
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        state[name] = torch.from_numpy(value.astype(np.float32))
    return state


def build_model(spec: Spec, vocab_size: int, pad_token_id: int, path: Path) -> None:
    """Save the spec's model with scaled random weights into ``path``."""
    import torch
    import transformers

    config = getattr(transformers, spec.config_class)(
        vocab_size=vocab_size, **{"pad_token_id": pad_token_id, **spec.config}
    )
    torch.manual_seed(SEED)
    model = getattr(transformers, spec.saved_class)(config).eval()
    keep = (
        tuple(n for n in model.state_dict() if "position_embeddings" in n)
        if spec.config.get("sinusoidal_pos_embds")
        else ()
    )
    rng = np.random.default_rng([SEED, sum(map(ord, spec.name))])
    model.load_state_dict(scaled_state_dict(model, rng, keep))
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec.store_dtype]
    model.to(dtype).save_pretrained(path, safe_serialization=True)


def build(spec: Spec, retrain: bool) -> Path:
    """Write tests/data/<name>/ (tokenizer, config, weights), replacing what was there."""
    path = DATA / spec.name
    tok = build_tokenizer(spec, retrain)
    tmp = Path(tempfile.mkdtemp(dir=DATA, prefix=f".{spec.name}."))
    try:
        tok.save_pretrained(tmp)
        build_model(spec, len(tok), tok.pad_token_id, tmp)
    except BaseException:
        shutil.rmtree(tmp)
        raise
    tmp.chmod(0o755)
    for f in tmp.iterdir():
        f.chmod(0o644)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- references


def uses_token_types(path: Path) -> bool:
    """Whether the model has more than one token type (BERT, ELECTRA, ALBERT).

    transformers 5 (up to at least 5.24) no longer returns ALBERT's
    token_type_ids by default (huggingface/transformers#48128), so its model
    would see zeros for a pair's second segment although its tokenizer's
    template says 1 and ALBERT was trained with them; transformers 4 gave
    them. Type ids are therefore asked for explicitly
    (``return_token_type_ids=True``) for every model with several types.
    RoBERTa (one type) and DistilBERT (none) get none and use zeros.
    """
    return json.loads((path / "config.json").read_text()).get("type_vocab_size", 0) > 1


def tokenize(tok, text: str, pair: str | None, max_length: int | None, types: bool) -> dict:
    """transformers' ids for one input; type ids when ``types``.

    Called as a batch of one: transformers 5 drops an empty ``text_pair``
    when called with one text (``tok(text, "")`` gives the single text's ids)
    but keeps it in a batch (``tok([text], [""])`` gives ``... [SEP] [SEP]``,
    as the tokenizers library does). minibert tokenizes batches.
    """
    kwargs = {"truncation": True, "return_token_type_ids": types}
    if max_length is not None:
        kwargs["max_length"] = max_length
    enc = tok([text], None if pair is None else [pair], **kwargs)
    ids = list(enc["input_ids"][0])
    return {
        "input_ids": ids,
        "token_type_ids": list(enc["token_type_ids"][0]) if "token_type_ids" in enc else None,
        "tokens": tok.convert_ids_to_tokens(ids),
    }


def run_reference(spec: Spec, path: Path, dtype: str, common: dict) -> Path:
    """transformers on INPUTS as one padded batch -> <name>-<dtype>.npz (every real position)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model = model.to({"float32": torch.float32, "float64": torch.float64}[dtype]).eval()
    encoded = [tokenize(tok, t, p, None, uses_token_types(path)) for t, p in INPUTS]
    B, S = len(encoded), max(len(e["input_ids"]) for e in encoded)
    has_types = encoded[0]["token_type_ids"] is not None
    input_ids = np.full((B, S), tok.pad_token_id, np.int64)
    token_type_ids = np.zeros((B, S), np.int64)
    attention_mask = np.zeros((B, S), np.int64)
    for b, e in enumerate(encoded):
        n = len(e["input_ids"])
        input_ids[b, :n] = e["input_ids"]
        token_type_ids[b, :n] = e["token_type_ids"] if has_types else 0
        attention_mask[b, :n] = 1
    inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if has_types:
        inputs["token_type_ids"] = torch.from_numpy(token_type_ids)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    lengths = attention_mask.sum(1)
    positions = np.array([(b, s) for b in range(B) for s in range(lengths[b])], np.int32)
    att_positions = np.array(
        [(b, q, k) for b in range(B) for q in range(lengths[b]) for k in range(lengths[b])], np.int32
    )
    hidden = [h.numpy()[positions[:, 0], positions[:, 1]] for h in out.hidden_states]  # (N, H)
    attn = [  # (B, h, S, S) -> (T, h)
        a.numpy()[att_positions[:, 0], :, att_positions[:, 1], att_positions[:, 2]] for a in out.attentions
    ]
    for a in hidden + attn:
        assert a.dtype == np.dtype(dtype) and np.all(np.isfinite(a))
    texts, pairs = [t for t, _ in INPUTS], [p for _, p in INPUTS]
    provenance = {
        **common,
        "model": spec.name,
        "note": spec.note,
        "saved_class": spec.saved_class,
        "loaded_as": type(model).__name__,
        "checkpoint_dtype": spec.store_dtype,
        "model_sha256": sha256(path / "model.safetensors"),
        "dtype": dtype,
        "call": "AutoModel.from_pretrained(dir, attn_implementation='eager', dtype=torch.float32)"
        f".to({dtype})(input_ids, attention_mask[, token_type_ids], output_hidden_states=True, "
        "output_attentions=True)",
        "tokenizer_call": "AutoTokenizer.from_pretrained(dir)([text], [pair] or None, truncation=True, "
        f"return_token_type_ids={has_types})",
        "max_length": tok.model_max_length,
        "has_token_type_ids": has_types,
        "padding": f"right-padded with the tokenizer's pad id {tok.pad_token_id}; one batch",
        "stored_positions": "every real position; attentions on every real (query, key) pair",
        "num_hidden_states": len(out.hidden_states),
        "texts": texts,
        "text_pairs": pairs,
    }
    arrays = {
        "format": np.array(FORMAT_VERSION),
        "provenance": np.array(json.dumps(provenance, ensure_ascii=False, indent=1)),
        "texts": np.array(json.dumps(texts, ensure_ascii=False)),
        "text_pairs": np.array(json.dumps(pairs, ensure_ascii=False)),
        "tokens": np.array(json.dumps([e["tokens"] for e in encoded], ensure_ascii=False)),
        "max_length": np.array(tok.model_max_length),
        "input_ids": input_ids.astype(np.int32),
        "token_type_ids": token_type_ids.astype(np.int32),
        "attention_mask": attention_mask.astype(np.int32),
        "positions": positions,
        "attention_positions": att_positions,
        **{f"hidden_states.{i}": h for i, h in enumerate(hidden)},
        **{f"attentions.{i}": a for i, a in enumerate(attn)},
    }
    out_path = OUT / f"{spec.name}-{dtype}.npz"
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out_path)
    return out_path


def token_reference(spec: Spec, path: Path, common: dict) -> Path:
    """transformers' ids for TOKEN_CASES -> tokens-<name>.json."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    cases = []
    for text, pair, max_length in TOKEN_CASES:
        case = {"text": text, "text_pair": pair, "max_length": max_length}
        cases.append(case | tokenize(tok, text, pair, max_length, uses_token_types(path)))
    doc = {
        "provenance": {
            **common,
            "model": spec.name,
            "tokenizer_class": type(tok).__name__,
            "tokenizer_call": "AutoTokenizer.from_pretrained(dir)([text], [text_pair] or None, "
            f"truncation=True, return_token_type_ids={uses_token_types(path)}[, max_length=max_length])",
            "model_max_length": tok.model_max_length,
            "pad_token_id": tok.pad_token_id,
            "unk_token": tok.unk_token,
        },
        "cases": cases,
    }
    out_path = OUT / f"tokens-{spec.name}.json"
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrain", action="store_true", help="train new vocabularies")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    common = {
        "generator": str(Path(__file__).relative_to(ROOT)),
        "generator_sha256": sha256(Path(__file__)),
        "date": datetime.date.today().isoformat(),
        "seed": SEED,
        "versions": versions(),
    }
    written = []
    for spec in SPECS:
        path = build(spec, args.retrain)
        written += [*path.iterdir(), token_reference(spec, path, common)]
        written += [run_reference(spec, path, dtype, common) for dtype in spec.dtypes]
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{spec.name:<24} {size:>8,} bytes of model   {spec.note}")
    return size_check(written, MAX_BYTES)


if __name__ == "__main__":
    sys.exit(main())
