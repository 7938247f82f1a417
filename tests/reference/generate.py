"""Generate the reference activations that the tests compare minibert against.

    make reference        # or: python tests/reference/generate.py

Needs the ``[reference]`` extra (torch==2.13.0, transformers). minibert is
imported only for its tolerance table and file-format constants; every number
written here comes from transformers.

It writes, all committed so that ``make test`` needs no torch:

* ``tests/data/tiny-bert/``: a 2-layer, 32-wide BERT with seeded random
  weights (config.json, model.safetensors with ``BertModel`` tensor names,
  tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json).
  Its WordPiece vocabulary is built here from a small built-in corpus. The
  ``tokenizers`` WordPiece trainer is not used for the vocabulary because it
  breaks ties between equally frequent merges in hash order, so two runs give
  two vocabularies; the vocabulary below is a pure function of the corpus.
* ``tests/reference/{model}-{dtype}.npz``: transformers' ids, hidden states
  and attention probabilities (eager attention) for :data:`INPUTS`, for the
  real model (``weights/all-MiniLM-L6-v2``, skipped when absent) and the tiny
  one, each in float32 and float64. Layout: see ``minibert/teaching/verify.py``.
* ``tests/reference/tokens-{model}.json``: transformers' token ids for
  :data:`TOKEN_CASES` (singles, pairs, truncation with small ``max_length``),
  cross-checked against transformers' pure-Python ``BertTokenizerLegacy``.

Every file carries provenance: library versions, the model's sha256, the
texts, the date and this script's sha256.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
from provenance import sha256, versions  # noqa: E402  (this folder, on the script's path)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from minibert.teaching.verify import FORMAT_VERSION, TOLERANCES  # noqa: E402

OUT = ROOT / "tests" / "reference"
TINY = ROOT / "tests" / "data" / "tiny-bert"
REAL = ROOT / "weights" / "all-MiniLM-L6-v2"
SEED = 20240601

# A text of about 700 WordPiece tokens for the real model (truncated to 512).
LONG_TEXT = " ".join(
    f"Paragraph {n}: the encoder reads every token of the sentence at once, and each layer "
    f"mixes information between positions with attention before a feed-forward network "
    f"transforms each position alone; after {n} paragraphs the position embeddings still "
    f"tell the model where each word stands."
    for n in range(1, 13)
)

#: (text, text_pair or None): what the activation references run.
INPUTS: list[tuple[str, str | None]] = [
    ("Hello world!", None),
    ("", None),  # only [CLS] [SEP]
    ("Café naïve Zoë, São Paulo", None),  # accents: stripped by the uncased tokenizer
    ("北京欢迎你。東京", None),  # CJK: one token per ideograph
    ("pizza 🍕 and 🎉!", None),  # emoji: [UNK] in BERT's vocabulary
    (LONG_TEXT, None),  # longer than 512 tokens: truncated to max_position_embeddings
    ("How old are you?", "I am six years old."),
    ("", "Only the second segment."),
]

#: Extra tokenizer-only cases: (text, pair, max_length or None for the model's limit).
TOKEN_CASES: list[tuple[str, str | None, int | None]] = [
    *[(t, p, None) for t, p in INPUTS],
    ("The QUICK brown fox jumps over the lazy dog.", None, None),
    ("   leading and trailing spaces   ", None, None),
    ("tab\tnew\nline", None, None),
    ("numbers 3.14159 and 1,000,000 and e-mail a.b@c.de", None, None),
    ("unbelievably unaffordable antidisestablishmentarianism", None, None),
    ("Ελληνικά и русский текст", None, None),
    ("naïve 🍕", "東京 タワー", None),
    # truncation: longest_first cuts the longer segment first, one token at a time
    ("The first segment is rather long, with many words in it.", "Short one.", 10),
    ("Short one.", "The second segment is rather long, with many words in it.", 10),
    ("Equal length here.", "Equal length there.", 7),
    ("Equal length here.", "Equal length there.", 8),  # odd budget: which segment keeps the extra token
    ("A single text that is too long for the limit.", None, 6),
    ("one two three four five six", "seven eight nine ten eleven twelve", 9),
]

#: The tiny model's corpus: its vocabulary is built from these lines.
TINY_CORPUS = """
Hello world! Hello there, how are you today?
The quick brown fox jumps over the lazy dog.
How old are you? I am six years old, and my sister is ten years old.
The encoder reads every token at once; each layer mixes the positions with attention.
A feed-forward network transforms each position alone, then a layer norm rescales it.
Only the second segment of a pair gets token type one.
The paragraph tells the model where each word stands in the sentence.
Café, naïve, São Paulo and Zoë are words with accents.
北京欢迎你。中国的首都是北京。東京は日本の首都です。
We eat pizza and we have parties; the party was fun!
Numbers like 3.14 and 1,000 are split at punctuation.
Transformers learn from many sentences; the sentences teach the model words.
""".strip().splitlines()

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# --------------------------------------------------------------------------- tiny model


def tiny_vocab(corpus: list[str]) -> list[str]:
    """A WordPiece vocabulary as a pure function of ``corpus``.

    Specials, then every character (and its ``##`` continuation), then every
    word of the corpus, then ``##`` suffixes of 2-4 characters seen at least
    three times, each group sorted, so that words not in the vocabulary split
    into pieces and unseen characters (emoji) become [UNK].
    """
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for line in corpus for w, _ in pre.pre_tokenize_str(norm.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    continuation = sorted({"##" + c for w in words for c in w[1:]})
    whole = sorted(w for w in words if len(w) > 1)
    suffixes = Counter(w[-k:] for w in words for k in (2, 3, 4) if len(w) > k)
    pieces = sorted("##" + s for s, n in suffixes.items() if n >= 3)
    vocab = []
    for token in SPECIALS + chars + continuation + whole + pieces:
        if token not in vocab:
            vocab.append(token)
    return vocab


def tiny_tokenizer(vocab: list[str]):
    """A BERT tokenizer (uncased, accents stripped, CJK split) over ``vocab``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def tiny_state_dict(model, rng: np.random.Generator) -> dict:
    """Seeded random weights, large enough that activations are not tiny.

    Matrices ~ N(0, 0.2^2), embeddings ~ N(0, 0.5^2), biases ~ N(0, 0.1^2),
    LayerNorm gamma ~ 1 + N(0, 0.1^2), beta ~ N(0, 0.1^2): every tensor is
    non-trivial, so a transposed matrix or a swapped bias changes the output.
    Drawn with NumPy in sorted-name order, so they do not depend on
    transformers' init code.
    """
    import torch

    state = {}
    for name, p in sorted(model.state_dict().items()):
        shape = tuple(p.shape)
        if name.endswith("LayerNorm.weight"):
            value = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("LayerNorm.bias") or name.endswith(".bias"):
            value = 0.1 * rng.standard_normal(shape)
        elif "embeddings" in name:
            value = 0.5 * rng.standard_normal(shape)
        else:
            value = 0.2 * rng.standard_normal(shape)
        state[name] = torch.from_numpy(value.astype(np.float32))
    return state


def build_tiny(path: Path) -> None:
    """Write the tiny model directory (deterministic: same bytes every run)."""
    import torch
    from transformers import BertConfig, BertModel

    vocab = tiny_vocab(TINY_CORPUS)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    torch.manual_seed(SEED)
    model = BertModel(config, add_pooling_layer=True).eval()
    state = tiny_state_dict(model, np.random.default_rng(SEED))
    model.load_state_dict(state)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        tiny_tokenizer(vocab).save(str(tmp / "tokenizer.json"))
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        specials = {
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
        tok_cfg = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": 64,
            **specials,
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
        for f in sorted(tmp.iterdir()):
            f.chmod(0o644)
            os.replace(f, path / f.name)
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="np") as f:
        names = list(f.keys())
    assert all(not n.startswith("bert.") for n in names), names
    assert "encoder.layer.0.attention.self.query.weight" in names, names
    print(
        f"wrote {path.relative_to(ROOT)}: vocab {len(vocab)}, {len(names)} tensors, "
        f"{(path / 'model.safetensors').stat().st_size:,} bytes"
    )


# --------------------------------------------------------------------------- references


def stored_positions(n: int) -> list[int]:
    """Sequence positions whose activations are stored for a text of n tokens.

    All of them up to 32 tokens; beyond that the first 4, the last 4 and every
    64th, so a 512-token text costs 15 positions, not 512.
    """
    if n <= 32:
        return list(range(n))
    return sorted(set(range(4)) | set(range(n - 4, n)) | set(range(0, n, 64)))


def tokenize(tok, text: str, pair: str | None, max_length: int):
    enc = tok(text, pair, truncation=True, max_length=max_length)
    ids = list(enc["input_ids"])
    types = list(enc["token_type_ids"])
    return ids, types, tok.convert_ids_to_tokens(ids)


def run_reference(model_dir: Path, name: str, dtype: str, common: dict) -> Path:
    """Run transformers on :data:`INPUTS` and write ``{name}-{dtype}.npz``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    model = model.to(torch_dtype).eval()
    max_length = model.config.max_position_embeddings

    encoded = [tokenize(tok, t, p, max_length) for t, p in INPUTS]
    B, S = len(encoded), max(len(ids) for ids, _, _ in encoded)
    input_ids = np.zeros((B, S), np.int32)
    token_type_ids = np.zeros((B, S), np.int32)
    attention_mask = np.zeros((B, S), np.int32)
    for b, (ids, types, _) in enumerate(encoded):
        input_ids[b, : len(ids)] = ids
        token_type_ids[b, : len(ids)] = types
        attention_mask[b, : len(ids)] = 1

    # Short inputs run as one padded batch (so the reference goes through
    # transformers' padding mask too); long ones alone.
    lengths = attention_mask.sum(1)
    short = [b for b in range(B) if lengths[b] <= 64]
    groups = [short] + [[b] for b in range(B) if lengths[b] > 64]
    positions = [(b, s) for b in range(B) for s in stored_positions(int(lengths[b]))]
    att_positions = [
        (b, q, k)
        for b in range(B)
        for q in stored_positions(int(lengths[b]))
        for k in stored_positions(int(lengths[b]))
    ]
    L = model.config.num_hidden_layers
    hidden = [np.zeros((len(positions), model.config.hidden_size), dtype) for _ in range(L + 1)]
    attn = [np.zeros((len(att_positions), model.config.num_attention_heads), dtype) for _ in range(L)]
    pos_arr, att_arr = np.array(positions), np.array(att_positions)
    with torch.no_grad():
        for group in groups:
            n = int(lengths[group].max())
            out = model(
                input_ids=torch.from_numpy(input_ids[group, :n].astype(np.int64)),
                token_type_ids=torch.from_numpy(token_type_ids[group, :n].astype(np.int64)),
                attention_mask=torch.from_numpy(attention_mask[group, :n].astype(np.int64)),
                output_hidden_states=True,
                output_attentions=True,
            )
            assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
            for j, b in enumerate(group):
                rows = np.flatnonzero(pos_arr[:, 0] == b)
                for i, h in enumerate(out.hidden_states):
                    hidden[i][rows] = h[j].numpy()[pos_arr[rows, 1]]
                rows = np.flatnonzero(att_arr[:, 0] == b)
                for i, a in enumerate(out.attentions):
                    # (h, S, S) -> (T_b, h)
                    attn[i][rows] = a[j].numpy()[:, att_arr[rows, 1], att_arr[rows, 2]].T
    for a in hidden + attn:
        assert a.dtype == np.dtype(dtype) and np.all(np.isfinite(a))

    texts = [t for t, _ in INPUTS]
    pairs = [p for _, p in INPUTS]
    provenance = {
        **common,
        "model": name,
        "model_dir": str(model_dir.relative_to(ROOT)) if model_dir.is_relative_to(ROOT) else str(model_dir),
        "model_sha256": sha256(model_dir / "model.safetensors"),
        "dtype": dtype,
        "attn_implementation": "eager",
        "call": "AutoModel.from_pretrained(dir, attn_implementation='eager')"
        f".to({dtype})(..., output_hidden_states=True, output_attentions=True)",
        "tokenizer_call": "AutoTokenizer.from_pretrained(dir)(text, pair, truncation=True, "
        f"max_length={max_length})",
        "batches": "inputs of at most 64 tokens as one right-padded batch, longer ones alone",
        "stored_positions": "all positions up to 32 tokens; beyond: first 4, last 4, every 64th; "
        "attentions on the grid of stored (query, key) positions",
        "max_length": max_length,
        "texts": texts,
        "text_pairs": pairs,
        "tolerances": TOLERANCES,
    }
    arrays = {
        "format": np.array(FORMAT_VERSION),
        "provenance": np.array(json.dumps(provenance, ensure_ascii=False, indent=1)),
        "texts": np.array(json.dumps(texts, ensure_ascii=False)),
        "text_pairs": np.array(json.dumps(pairs, ensure_ascii=False)),
        "tokens": np.array(json.dumps([t for _, _, t in encoded], ensure_ascii=False)),
        "max_length": np.array(max_length),
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "positions": pos_arr.astype(np.int32),
        "attention_positions": att_arr.astype(np.int32),
        **{f"hidden_states.{i}": h for i, h in enumerate(hidden)},
        **{f"attentions.{i}": a for i, a in enumerate(attn)},
    }
    path = OUT / f"{name}-{dtype}.npz"
    save_npz(path, arrays)
    print(
        f"wrote {path.relative_to(ROOT)}: {len(positions)} hidden rows, {len(att_positions)} attention "
        f"entries, {path.stat().st_size:,} bytes"
    )
    return path


def save_npz(path: Path, arrays: dict) -> None:
    """Compressed .npz, no pickled objects, written atomically."""
    for key, a in arrays.items():
        assert a.dtype != object, key
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    np.load(path, allow_pickle=False).close()


def token_reference(model_dir: Path, name: str, common: dict) -> Path:
    """transformers' ids for :data:`TOKEN_CASES`, cross-checked by the legacy tokenizer."""
    from transformers import AutoTokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    legacy = BertTokenizerLegacy(
        str(model_dir / "vocab.txt"),
        do_lower_case=cfg.get("do_lower_case", True),
        strip_accents=cfg.get("strip_accents"),
        tokenize_chinese_chars=cfg.get("tokenize_chinese_chars", True),
    )
    limit = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    cases, disagree = [], 0
    for text, pair, max_length in TOKEN_CASES:
        n = max_length or limit
        ids, types, tokens = tokenize(tok, text, pair, n)
        old = legacy(text, pair, truncation=True, max_length=n, return_token_type_ids=True)
        case = {
            "text": text,
            "text_pair": pair,
            "max_length": n,
            "input_ids": ids,
            "token_type_ids": types,
            "tokens": tokens,
        }
        if list(old["input_ids"]) != ids or list(old["token_type_ids"]) != types:
            # Known: when both segments exceed half of an odd budget, the legacy tokenizer gives
            # the extra token to the first segment, the Rust one to the second. Recorded, not hidden.
            case["legacy_input_ids"] = list(old["input_ids"])
            disagree += 1
        cases.append(case)
    provenance = {
        **common,
        "model": name,
        "model_sha256": sha256(model_dir / "model.safetensors"),
        "tokenizer_call": "AutoTokenizer.from_pretrained(dir)(text, text_pair, truncation=True, "
        "max_length=...)",
        "cross_check": "BertTokenizerLegacy (pure Python, from vocab.txt): same ids except the cases "
        f"carrying 'legacy_input_ids' ({disagree} of {len(cases)})",
    }
    path = OUT / f"tokens-{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"provenance": provenance, "cases": cases}, ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8",
    )
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(ROOT)}: {len(cases)} cases")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-real", action="store_true", help="only the tiny model")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    assert unicodedata.normalize("NFC", LONG_TEXT) == LONG_TEXT
    common = {
        "generator": "tests/reference/generate.py",
        "generator_sha256": sha256(Path(__file__)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    build_tiny(TINY)
    models = [("tiny-bert", TINY)]
    if args.skip_real:
        pass
    elif (REAL / "model.safetensors").is_file():
        models.insert(0, ("all-MiniLM-L6-v2", REAL))
    else:
        print(f"note: {REAL} absent (run `make weights`); only the tiny model's references are written")
    for name, path in models:
        token_reference(path, name, common)
        for dtype in ("float32", "float64"):
            run_reference(path, name, dtype, common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
