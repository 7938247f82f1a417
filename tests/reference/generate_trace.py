"""Reference intermediates for ``Encoding.trace``, captured from transformers.

Runs the real all-MiniLM-L6-v2 through transformers' ``BertModel`` (eager
attention, eval mode) with forward hooks on the modules that compute each
intermediate, and saves them to ``tests/reference/trace.npz`` for
``tests/test_trace.py``. This script is the only place torch is used for it;
the test reads the committed file and needs no torch.

    python tests/reference/generate_trace.py [--model DIR] [-o OUT.npz]

Hooks (transformers name -> minibert trace name):

    embeddings.word_embeddings        output -> embeddings/word
    embeddings.position_embeddings    output -> embeddings/position
    embeddings.token_type_embeddings  output -> embeddings/token_type
    embeddings.LayerNorm              input  -> embeddings/sum,  output -> embeddings/output
    attention.self.query/key/value    output -> q, k, v  (before the head split, (B, S, H))
    attention.self                    output -> concat (heads merged), probs
    attention.output.dense            output -> attention_output
    attention.output.LayerNorm        input  -> residual_1,  output -> ln_1
    intermediate.dense                output -> ffn_pre  (BertIntermediate applies the
    intermediate                      output -> ffn_act   activation inside itself)
    output.dense                      output -> ffn_output
    output.LayerNorm                  input  -> residual_2,  output -> ln_2

Size: only real (non-padding) token rows are kept, as ``rows`` (N, 2) of
(text, position). To stay well under 1 MB, the per-layer intermediates keep a
fixed subset of feature columns (``cols_H``: every 6th of H, ``cols_I``: every
24th of I); ``embeddings/output``, every ``ln_2`` (= hidden_states[i + 1])
and the attention probabilities are kept whole. No pickle: every array is
numeric or a unicode string (``provenance``, JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from provenance import sha256  # noqa: E402  (this folder, on the script's path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_MODEL = ROOT / "weights" / "all-MiniLM-L6-v2"
DEFAULT_OUT = HERE / "trace.npz"

# Short texts of different lengths, so the batch has padding.
TEXTS = ["The cat sat on the mat.", "Attention is all you need!", "Hello"]
H_STRIDE, I_STRIDE = 6, 24


def main(argv: list[str] | None = None) -> int:
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    cfg = model.config

    captured: dict[str, np.ndarray] = {}

    def out_hook(name, index=None):
        def hook(module, inputs, output):
            value = output if index is None else output[index]
            captured[name] = value.detach().numpy().copy()

        return hook

    def in_hook(name):
        def hook(module, inputs):
            captured[name] = inputs[0].detach().numpy().copy()

        return hook

    emb = model.embeddings
    handles = [
        emb.word_embeddings.register_forward_hook(out_hook("embeddings/word")),
        emb.position_embeddings.register_forward_hook(out_hook("embeddings/position")),
        emb.token_type_embeddings.register_forward_hook(out_hook("embeddings/token_type")),
        emb.LayerNorm.register_forward_pre_hook(in_hook("embeddings/sum")),
        emb.LayerNorm.register_forward_hook(out_hook("embeddings/output")),
    ]
    for i, layer in enumerate(model.encoder.layer):
        p = f"layers/{i}/"
        att = layer.attention
        handles += [
            att.self.query.register_forward_hook(out_hook(p + "q")),
            att.self.key.register_forward_hook(out_hook(p + "k")),
            att.self.value.register_forward_hook(out_hook(p + "v")),
            att.self.register_forward_hook(out_hook(p + "concat", 0)),
            att.self.register_forward_hook(out_hook(p + "probs", 1)),
            att.output.dense.register_forward_hook(out_hook(p + "attention_output")),
            att.output.LayerNorm.register_forward_pre_hook(in_hook(p + "residual_1")),
            att.output.LayerNorm.register_forward_hook(out_hook(p + "ln_1")),
            layer.intermediate.dense.register_forward_hook(out_hook(p + "ffn_pre")),
            layer.intermediate.register_forward_hook(out_hook(p + "ffn_act")),
            layer.output.dense.register_forward_hook(out_hook(p + "ffn_output")),
            layer.output.LayerNorm.register_forward_pre_hook(in_hook(p + "residual_2")),
            layer.output.LayerNorm.register_forward_hook(out_hook(p + "ln_2")),
        ]

    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    for h in handles:
        h.remove()

    mask = batch["attention_mask"].numpy()
    rows = np.argwhere(mask == 1)  # (N, 2): (text, position) of every real token
    b, s = rows[:, 0], rows[:, 1]
    cols_H = np.arange(0, cfg.hidden_size, H_STRIDE)
    cols_I = np.arange(0, cfg.intermediate_size, I_STRIDE)
    whole = {"embeddings/output"} | {f"layers/{i}/ln_2" for i in range(cfg.num_hidden_layers)}

    arrays: dict[str, np.ndarray] = {
        "input_ids": batch["input_ids"].numpy().astype(np.int64),
        "token_type_ids": batch["token_type_ids"].numpy().astype(np.int64),
        "attention_mask": mask.astype(np.int64),
        "rows": rows.astype(np.int64),
        "cols_H": cols_H.astype(np.int64),
        "cols_I": cols_I.astype(np.int64),
    }
    for name, value in sorted(captured.items()):
        value = value.astype(np.float32)
        if name.endswith("/probs"):
            arrays[name] = value  # (B, h, S, S) whole: padded keys must have weight 0
            continue
        if value.ndim == 2:  # position embeddings come out as (1, S, H) or (S, H)
            value = value[None]
        if value.shape[0] == 1 and mask.shape[0] > 1:
            value = np.broadcast_to(value, (mask.shape[0], *value.shape[1:]))
        value = value[b, s]  # (B, S, X) -> (N, X): real tokens only
        if name not in whole:
            value = value[:, cols_I if value.shape[-1] == cfg.intermediate_size else cols_H]
        arrays[name] = np.ascontiguousarray(value)
    # Cross-check the hooks against the model's own hidden_states output.
    for i, hs in enumerate(out.hidden_states):
        key = "embeddings/output" if i == 0 else f"layers/{i - 1}/ln_2"
        np.testing.assert_array_equal(arrays[key], hs.numpy()[b, s], err_msg=key)

    provenance = {
        "generator": "tests/reference/generate_trace.py",
        "model": args.model.name,
        "model_sha256": sha256(args.model / "model.safetensors"),
        "texts": TEXTS,
        "attn_implementation": "eager",
        "dtype": "float32",
        "H_stride": H_STRIDE,
        "I_stride": I_STRIDE,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    arrays["provenance"] = np.array(json.dumps(provenance, sort_keys=True))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1024:.0f} KiB, {len(arrays)} arrays, {len(rows)} token rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
