"""sentence-transformers' own sentence embeddings of all-MiniLM-L6-v2, for test_sentence_transformers.py.

    python tests/reference/generate_sentence.py
    # needs torch==2.13.0, transformers, and sentence-transformers
    # (pip install sentence-transformers --no-deps; it imports scikit-learn)

Writes ``tests/reference/sentence-all-MiniLM-L6-v2.npz``: the texts, the
number of tokens sentence-transformers kept for each (it truncates to
``max_seq_length`` = 256 from sentence_bert_config.json, not 512), and
``SentenceTransformer(dir).encode(texts)``: Transformer -> mean Pooling ->
Normalize, float32, with provenance. minibert is not imported.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "weights" / "all-MiniLM-L6-v2"
OUT = ROOT / "tests" / "reference" / "sentence-all-MiniLM-L6-v2.npz"

LONG = " ".join(
    f"Sentence {n} of a long text, which sentence-transformers cuts at 256 tokens." for n in range(30)
)

TEXTS = [
    "Hello world!",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "Café naïve, São Paulo and Zoë.",
    "北京欢迎你。東京",
    "pizza 🍕 and 🎉!",
    "",
    LONG,  # about 450 tokens: sentence-transformers keeps 256, minibert's default would keep 512
]


def main() -> int:
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    if not (MODEL / "model.safetensors").is_file():
        print(f"error: {MODEL} is missing: run `make weights`", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    model = SentenceTransformer(str(MODEL), device="cpu")
    embeddings = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
    features = model.preprocess(TEXTS)
    kept = features["attention_mask"].sum(1).numpy()
    assert kept.max() == model.max_seq_length == 256, (kept, model.max_seq_length)
    provenance = {
        "generator": str(Path(__file__).relative_to(ROOT)),
        "generator_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "date": datetime.date.today().isoformat(),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (weights/all-MiniLM-L6-v2)",
        "model_sha256": hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest(),
        "pipeline": str(model),
        "max_seq_length": model.max_seq_length,
        "call": f"SentenceTransformer(dir, device='cpu').encode(texts, batch_size={len(TEXTS)})",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
    }
    arrays = {
        "provenance": np.array(json.dumps(provenance, ensure_ascii=False, indent=1)),
        "texts": np.array(json.dumps(TEXTS, ensure_ascii=False)),
        "num_tokens": kept.astype(np.int32),
        "embeddings": embeddings.astype(np.float32),
    }
    tmp = OUT.with_name(OUT.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, OUT)
    size = OUT.stat().st_size
    print(f"wrote {OUT.relative_to(ROOT)}: {embeddings.shape}, tokens kept {kept.tolist()}, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
