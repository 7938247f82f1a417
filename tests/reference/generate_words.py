"""Reference word vectors and long-text windows, computed with transformers.

Needs torch and transformers (the ``[reference]`` extra); minibert is not
imported, so nothing here depends on the code under test. Run from the
repository root:

    python tests/reference/generate_words.py [--model weights/all-MiniLM-L6-v2]

It writes, all committed so ``make test`` needs no torch:

  tests/data/tiny-bpe-bert/      a 2-layer random BERT (seeded) whose tokenizer is
                                 byte-level BPE with RoBERTa's <s> ... </s>, where the
                                 space before a word belongs to the word and type ids
                                 cannot tell a pair's segments apart
  tests/reference/words.npz      word vectors by the rules first / last / mean, from
                                 transformers' hidden states and its tokenizer's
                                 word_ids / sequence_ids, pooled by a plain loop
  tests/reference/windows.npz    a ~1,500-token text cut into windows as
                                 docs/words-and-long-texts.md says; for every token the
                                 window Devlin's max-context rule picks (run_squad.py's
                                 _check_is_max_context, written out again here) and, at a
                                 subset of positions, that window's hidden states

npz keys are ``<case>__<name>``; strings are stored as unicode arrays, never
pickled. ``provenance`` holds versions, seeds and the real model's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers import models as tok_models
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
TINY_BPE = ROOT / "tests" / "data" / "tiny-bpe-bert"
OUT = ROOT / "tests" / "reference"
SEED = 6
HOWS = ("first", "last", "mean")

BPE_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers split words into pieces, and models read the pieces.",
    "Hello world! A word may be one piece, two pieces or many.",
    "Long documents are cut into overlapping windows, and every window is read on its own.",
    "Each token takes its vector from the window where it sees the most context.",
]

# Word cases. Hand-checked expectations live in tests/test_words.py.
WORD_CASES = {
    "real_single": (
        "real",
        ["The tokenizer split unaffable hyperparameterization ☃ 🙂 北京大学 playing.", "ok"],
        None,
    ),
    "real_pair": (
        "real",
        ["Who split it?", "Short."],
        ["The tokenizer did.", "A longer second segment pads it."],
    ),
    "bpe_single": ("bpe", ["Hello world, tokenizers split words! 北京 x", "Long documents"], None),
    "bpe_pair": ("bpe", ["Hello world", "Windows"], ["A pair here.", "read the pieces"]),
}
WORD_LAYERS = {"real": [0, 3, 6], "bpe": [0, 1, 2]}

# Long-text cases: (model, window, stride, target content tokens, positions stored besides the switches)
WINDOW_CASES = {"real": ("real", 512, 200, 1500, 16), "bpe": ("bpe", 128, 50, 1500, 100)}
LONG_WORDS = (
    "the a of and to in is was for on that with as by at from it this be are an or which "
    "model token tokens window windows context vector vectors layer layers attention word words "
    "piece pieces subword embedding embeddings document documents sentence paragraph reader "
    "unaffable hyperparameterization tokenizer overlapping stitched transformer encoder numerical "
    "North river mountain city library garden winter summer morning evening quickly slowly "
    "carefully because although however therefore meanwhile Paris Tokyo Nairobi 1999 2024 42"
).split()


def build_tiny_bpe(path: Path) -> None:
    """Train a byte-level BPE tokenizer on a few sentences and save a seeded
    random 2-layer BERT that uses it."""
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(BPE_CORPUS * 3, trainer)
    # RoBERTa's template: <s> A </s></s> B </s>, type ids all 0, offsets keep the leading space.
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=False
    )
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
        + "\n"
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=tok.token_to_id("<pad>"),
        hidden_act="gelu",
    )
    torch.manual_seed(SEED)
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():  # weights large enough that tokens differ visibly
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embeddings" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / np.sqrt(p.shape[1]))
    model.save_pretrained(path, safe_serialization=True)
    (path / "README.md").write_text(
        "A 2-layer, 32-wide random BERT (torch seed 6) with a byte-level BPE tokenizer "
        "(RoBERTa-style <s> ... </s>, 320 tokens) trained on five sentences. Made by "
        "tests/reference/generate_words.py for the word-pooling and window tests; its numbers "
        "mean nothing.\n"
    )


def load(kind: str, real_dir: Path):
    if kind == "real":
        tok = AutoTokenizer.from_pretrained(real_dir)
        model = AutoModel.from_pretrained(real_dir, attn_implementation="eager")
    else:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_BPE / "tokenizer.json"), pad_token="<pad>")
        model = BertModel.from_pretrained(TINY_BPE, attn_implementation="eager")
    return tok, model.eval().float()


def hidden_states(model, ids, types, mask) -> np.ndarray:
    """(L+1, B, S, H) float32."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(ids),
            token_type_ids=torch.as_tensor(types),
            attention_mask=torch.as_tensor(mask),
            output_hidden_states=True,
        )
    return np.stack([h.numpy() for h in out.hidden_states])


def word_references(tok, model, texts, pairs, layers) -> dict:
    """Pool each word's tokens by a plain loop over transformers' word_ids and
    sequence_ids: group tokens by (segment, word), no contiguity assumed."""
    enc = tok(texts, pairs, padding=True, return_tensors="np", return_offsets_mapping=True)
    types = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))
    hs = hidden_states(model, enc["input_ids"], types, enc["attention_mask"])[layers]  # (L, B, S, H)
    out = {how: [] for how in HOWS}
    text_of_word, segments, pieces, spans = [], [], [], []
    for b in range(len(texts)):
        groups: dict[tuple[int, int], list[int]] = {}
        for t, (w, s) in enumerate(zip(enc.word_ids(b), enc.sequence_ids(b), strict=True)):
            if w is not None:
                groups.setdefault((s, w), []).append(t)
        for (s, _), positions in groups.items():
            vecs = hs[:, b, positions].astype(np.float64)  # (L, n_pieces, H)
            out["first"].append(vecs[:, 0])
            out["last"].append(vecs[:, -1])
            out["mean"].append(vecs.mean(axis=1))
            text_of_word.append(b)
            segments.append(s)
            pieces.append(len(positions))
            offsets = enc["offset_mapping"][b]
            spans.append((offsets[positions[0], 0], offsets[positions[-1], 1]))
    ref = {how: np.stack(v, axis=1).astype(np.float32) for how, v in out.items()}  # (L, W, H)
    ref.update(
        texts=np.array(texts),
        layers=np.array(layers),
        text_of_word=np.array(text_of_word),
        segments=np.array(segments),
        pieces=np.array(pieces),
        raw_spans=np.array(spans, dtype=np.int64),
        input_ids=enc["input_ids"],
    )
    if pairs is not None:
        ref["pairs"] = np.array(pairs)
    return ref


def long_text(tok, n_tokens: int, seed: int) -> str:
    """A deterministic text of about n_tokens content tokens (whole words)."""
    rng = np.random.default_rng(seed)
    sentences = []
    while True:
        words = list(rng.choice(LONG_WORDS, size=int(rng.integers(6, 15))))
        sentences.append(" ".join(words).capitalize() + ".")
        text = " ".join(sentences)
        if len(tok(text, add_special_tokens=False)["input_ids"]) >= n_tokens:
            return text


def max_context_window(spans: list[tuple[int, int]], position: int) -> int:
    """google-research/bert run_squad.py ``_check_is_max_context``: the span
    (start, length) where ``position`` has the most context on both sides."""
    best_score, best = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, i
    return best


def window_reference(tok, model, window: int, stride: int, n_tokens: int, extra: int, seed: int) -> dict:
    text = long_text(tok, n_tokens, seed)
    full = tok(text)["input_ids"]
    content = tok(text, add_special_tokens=False)["input_ids"]
    p = full.index(content[0])
    prefix, suffix = full[:p], full[p + len(content) :]
    assert prefix + content + suffix == full, "special-token template is not prefix + text + suffix"
    N, n, p, q = len(full), len(content), len(prefix), len(suffix)
    L = window - p - q
    starts, s = [], 0  # every `stride`, the last window flush with the end
    while s + L < n:
        starts.append(s)
        s += stride
    starts.append(n - L)
    spans = [(s, L) for s in starts]
    chosen = [0] * p + [max_context_window(spans, j) for j in range(n)] + [len(starts) - 1] * q
    column = list(range(p)) + [p + j - starts[chosen[p + j]] for j in range(n)]
    column += [p + L + i for i in range(q)]
    ids = np.array([prefix + content[s : s + L] + suffix for s in starts])  # (k, window)
    hs = hidden_states(model, ids, np.zeros_like(ids), np.ones_like(ids))  # (L+1, k, window, H)
    chosen = np.array(chosen)
    switches = np.flatnonzero(np.diff(chosen)) + 1
    rng = np.random.default_rng(seed)
    positions = np.unique(
        np.concatenate([[0, 1, N - 2, N - 1], switches - 1, switches, rng.choice(N, extra, replace=False)])
    )
    return {
        "text": np.array(text),
        "window": np.array(window),
        "stride": np.array(stride),
        "input_ids": np.array(full, dtype=np.int32),
        "starts": np.array(starts),
        "chosen": chosen,
        "positions": positions,
        "hidden": hs[:, chosen[positions], np.array(column)[positions]],  # (L+1, P, H)
    }


def provenance(real_dir: Path) -> str:
    sha = hashlib.sha256((real_dir / "model.safetensors").read_bytes()).hexdigest()
    return json.dumps(
        {
            "generator": "tests/reference/generate_words.py",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "real_model": real_dir.name,
            "real_model_sha256": sha,
            "attn_implementation": "eager",
            "seed": SEED,
        },
        sort_keys=True,
    )


def save(path: Path, cases: dict[str, dict], prov: str) -> None:
    arrays = {f"{case}__{k}": v for case, ref in cases.items() for k, v in ref.items()}
    np.savez_compressed(path, provenance=np.array(prov), **arrays)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "weights" / "all-MiniLM-L6-v2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    build_tiny_bpe(TINY_BPE)
    loaded = {kind: load(kind, args.model) for kind in ("real", "bpe")}
    prov = provenance(args.model)

    words = {}
    for case, (kind, texts, pairs) in WORD_CASES.items():
        words[case] = word_references(*loaded[kind], texts, pairs, WORD_LAYERS[kind])
    save(OUT / "words.npz", words, prov)

    windows = {}
    for case, (kind, window, stride, n_tokens, extra) in WINDOW_CASES.items():
        windows[case] = window_reference(*loaded[kind], window, stride, n_tokens, extra, SEED)
    save(OUT / "windows.npz", windows, prov)


if __name__ == "__main__":
    main()
