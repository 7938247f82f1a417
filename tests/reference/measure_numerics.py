"""Measure how far minibert is from transformers, float32 and float64 both ways.

The figures quoted in docs/numerics.md come from this script (it needs the
``[reference]`` extra: torch and transformers; nothing is written):

    python tests/reference/measure_numerics.py [--model DIR]

For each pair (minibert dtype, transformers dtype) it prints the max abs
difference of every hidden state and of the attention probabilities at real
(non-padding) positions, for a padded batch of short texts and for one
512-token text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHORT = [
    "The cat sat on the mat.",
    "Attention is all you need!",
    "Hello",
    "A much longer sentence, with punctuation; and several clauses, to make the sequence longer.",
]


def main(argv: list[str] | None = None) -> int:
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    import minibert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "weights" / "all-MiniLM-L6-v2")
    args = ap.parse_args(argv)
    long_text = " ".join((ROOT / "examples" / "sentences.txt").read_text(encoding="utf-8").split()) * 2
    tok = AutoTokenizer.from_pretrained(args.model)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    for label, texts, kw in (
        ("4 short texts, padded", SHORT, {"padding": True}),
        ("1 text of 512 tokens", [long_text], {"truncation": True, "max_length": 512}),
    ):
        batch = tok(texts, return_tensors="pt", **kw)
        mask = batch["attention_mask"].numpy().astype(bool)
        ref = {}
        for name, tdtype in (("float32", torch.float32), ("float64", torch.float64)):
            model = AutoModel.from_pretrained(args.model, attn_implementation="eager", dtype=tdtype).eval()
            with torch.no_grad():
                out = model(**batch, output_hidden_states=True, output_attentions=True)
            ref[name] = [h.numpy() for h in out.hidden_states], [a.numpy() for a in out.attentions]
        print(f"\n{label} (S = {mask.shape[1]}): max abs difference per hidden state 0..L | attention")
        for ours in ("float32", "float64"):
            enc = minibert.load(args.model, ours).encode(
                texts, max_length=kw.get("max_length"), output_attentions=True
            )
            assert np.array_equal(enc.input_ids, batch["input_ids"].numpy()), "token ids differ"
            for theirs in ("float32", "float64"):
                hs, att = ref[theirs]
                dh = [np.abs(a[mask] - b[mask]).max() for a, b in zip(enc.hidden_states, hs, strict=True)]
                da = max(
                    np.abs(a - b).transpose(0, 2, 1, 3)[mask].max()
                    for a, b in zip(enc.attentions, att, strict=True)
                )
                cells = " ".join(f"{d:.1e}" for d in dh)
                print(f"  minibert {ours} vs transformers {theirs}: {cells} | {da:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
