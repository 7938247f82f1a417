"""``minibert view``: one self-contained HTML page of a real forward pass.

People learn the Transformer from pictures (bertviz's head, model and neuron
views, exBERT, Transformer Explainer); none of them shows every formula of a
real BERT with its actual numbers and a check that those numbers are right.
This page does, for one text: the tokens and embeddings, attention drawn the
bertviz way, each formula of a chosen layer, head and token with its shapes,
its numbers and the float64 recomputation error that :mod:`minibert.teaching.explain`
measures, per-layer plots, and the article's errata where it departs.

The data flows one way::

    text -> explain(pad=0): Model.forward(trace=True), once -> its Walk (the Encoding)
    Walk at layer 1..L -> explain_walk -> each layer's steps and checks
    Encoding + checks -> build_payload (the ONLY reader of both) -> JSON-able dict
    payload -> render -> HTML: minibert/teaching/view_assets/ (template, CSS, JS) + the JSON

The page is one file: no server, no CDN, no third-party script; a
Content-Security-Policy forbids any request. Its arrays are the trace's own,
in the model's dtype: packed once (no array twice), little-endian, as byte
planes (every number's first byte, then every second byte, ...; the
exponent bytes then compress well) deflated and base64-encoded; the browser
inflates them with its built-in DecompressionStream. What the page derives
(the embedding sum, the masked scores, the concatenated heads, both residual
sums, ReLU) it computes with the same float rounding (``Math.fround`` for
float32), so it equals the trace bit for bit; tests/test_view_browser.py
compares every number on the page with the trace read in Python.

The page shows the real tokens only (explain's ``pad=0``): the mask step
shows M = 0 for every key and says what padding would get
(``minibert explain --pad`` shows it at work).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import zlib
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from minibert.encoder import ops
from minibert.errors import MinibertError
from minibert.model import Encoding, Model, position_ids
from minibert.teaching.explain import Check, Explanation, explain, explain_walk

#: Texts longer than this (special tokens included) are refused: the page holds
#: every number of every token (about 190 kB a token on all-MiniLM-L6-v2) and
#: its head view draws S x S lines per head.
MAX_TOKENS = 64
EXTENSIONS = (".html", ".htm")
ASSETS = "view_assets"
#: base64.b85encode's digits that HTML would need escaped, and what the page uses instead.
BASE85_SAFE = str.maketrans("&<>", ".,:")

#: explain's steps (by the number their title starts with) -> the step of the
#: page that shows their checks. A check of any other step is shown under
#: "other checks", never dropped.
PAGE_STEP = {
    "2.": "embeddings",
    "3.1": "qkv",
    "3.2": "scores",
    "3.3": "mask",
    "3.4": "softmax",
    "3.5": "context",
    "3.6": "concat",
    "3.7": "concat",
    "3.8": "residual_1",
    "3.9": "ln_1",
    "3.10": "ffn",
    "3.11": "residual_2",
    "3.12": "ln_2",
}

#: The trace's per-layer arrays the page embeds; the rest it derives exactly
#: (masked_scores, concat, residual_1, residual_2) or has already (ln_2 is
#: hidden_states[i]; mask is one row for every layer).
LAYER_ARRAYS = (
    "q", "k", "v", "scores", "probs", "context", "attention_output",
    "ln_1", "ffn_pre", "ffn_act", "ffn_output",
)  # fmt: skip


class Page(str):
    """The HTML of a view. A str (write it to a file as is); Jupyter displays
    it inline, in an iframe so that its script and styles stay apart from the
    notebook's."""

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self, quote=True)}" '
            'style="width: 100%; height: 900px; border: 1px solid #ccc"></iframe>'
        )


def step_checks(explanation: Explanation) -> list[tuple[str, Check]]:
    """Every check of an explanation with the page step it belongs to (see PAGE_STEP)."""
    return [
        (PAGE_STEP.get(step.title.split(" ", 1)[0], "other"), c)
        for step in explanation.steps
        for c in step.checks
    ]


def _number(x: float) -> float | str:
    """JSON has no NaN or infinity: a check that produced one says so as text."""
    return float(x) if math.isfinite(x) else str(x)


def _pack(arrays: dict[str, np.ndarray], dtype: np.dtype) -> dict:
    """The arrays, each once, as little-endian ``dtype`` numbers in byte
    planes (byte 0 of every number, then byte 1, ...), deflated, as base-85
    text: ``blob`` (``blob_bytes`` long once decoded), ``itemsize``, and the
    index ``arrays``: {name: {offset (in numbers), shape}}.

    Base 85 (RFC 1924's digits with ``.,:`` for ``&<>``, so the text needs no
    escaping in HTML) costs 5 characters per 4 bytes, where base64 costs 5.33.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    index, parts, offset = {}, [], 0
    for name, a in arrays.items():
        index[name] = {"offset": offset, "shape": list(a.shape)}
        parts.append(np.asarray(a, dtype=dtype).ravel())
        offset += a.size
    planes = np.concatenate(parts).view(np.uint8).reshape(-1, dtype.itemsize).T  # (itemsize, n)
    packed = zlib.compress(planes.tobytes(), 9)
    text = base64.b85encode(packed, pad=True).decode("ascii").translate(BASE85_SAFE)
    return {"arrays": index, "itemsize": dtype.itemsize, "blob": text, "blob_bytes": len(packed)}


def build_payload(model: Model, enc: Encoding, explanations: list[Explanation], initial: dict) -> dict:
    """Everything the page shows, as a JSON-able dict, from the traced
    Encoding of one text and explain's walk of each layer 1..L.

    The ONLY function that reads the trace (by the dict-style keys of
    :class:`minibert.encoder.trace.Trace`) and explain's checks, so a change of
    either is made here alone.
    """
    cfg = model.config
    emb, layers = enc.trace["embeddings"], enc.trace["layers"]
    # DeBERTa-v3 adds no absolute position (positions enter its attention): the page shows zeros
    position = emb["position"] if emb["position"] is not None else np.zeros_like(emb["word"])
    arrays = {"embeddings.word": emb["word"][0], "embeddings.position": position[0]}
    if emb["token_type"] is not None:  # DistilBERT has no token-type table
        arrays["embeddings.token_type"] = emb["token_type"][0]
    if "projection" in emb:  # ELECTRA, ALBERT: hidden_states[0] is the projection of this
        arrays["embeddings.output"] = emb["output"][0]
    arrays["hidden"] = np.stack([hs[0] for hs in enc.hidden_states])  # L+1 x (S, H) -> (L+1, S, H)
    for key in LAYER_ARRAYS:
        arrays[key] = np.stack([t[key][0] for t in layers])  # L x (...) -> (L, ...)
    arrays["mask"] = layers[0]["mask"][0, 0, 0]  # (1, 1, 1, S) -> (S,), the same M in every layer
    # The article's FFN: ReLU instead of GELU on the same pre-activations, with the layer's own W_2, b_2.
    relu = []
    for k, t in zip(model.weights.layer_map, layers, strict=True):
        w = model.weights.layers[k]
        relu.append(ops.linear(ops.relu(t["ffn_pre"][0]), w.ffn.W_2, w.ffn.b_2))  # (S, I) -> (S, H)
    arrays["ffn_relu_output"] = np.stack(relu)

    def as_dict(step: str, c: Check) -> dict:
        return {"step": step, "what": c.what, "error": _number(c.error), "tol": c.tol, "ok": c.ok}

    per_layer = [step_checks(e) for e in explanations]

    return {
        "model": model.path.name,
        "dtype": str(model.dtype),
        "config": {
            "L": len(layers),
            "H": cfg.hidden_size,
            "h": cfg.num_attention_heads,
            "d": cfg.head_size,
            "I": cfg.intermediate_size,
            "E": int(emb["word"].shape[-1]),
            "act": cfg.hidden_act,
            "eps": cfg.layer_norm_eps,
        },
        "text": enc.texts[0],
        "tokens": enc.tokens[0],
        "ids": enc.input_ids[0].tolist(),
        "types": enc.token_type_ids[0].tolist(),
        "positions": position_ids(cfg, enc.input_ids, enc.attention_mask)[0].tolist(),
        "initial": initial,
        # every layer's explain repeats the embedding checks: they are taken from layer 1's
        "checks": {
            "embeddings": [as_dict(s, c) for s, c in per_layer[0] if s == "embeddings"],
            "layers": [[as_dict(s, c) for s, c in found if s != "embeddings"] for found in per_layer],
        },
        **_pack(arrays, model.dtype),
    }


def _article_items() -> list[dict]:
    """The article's worked example (section 4.3), every number recomputed by
    :func:`minibert.teaching.article.check_article`, for the page's errata."""
    from minibert.teaching.article import check_article, format_value

    return [
        {"quantity": i.quantity, "article": format_value(i.article), "correct": format_value(i.correct),
         "agree": i.agree, "note": i.note}
        for i in check_article()
    ]  # fmt: skip


def _errata_link() -> str | None:
    """docs/errata.md of this source checkout as a file:// URL, when there is
    one (an installed package has no docs/): the page's own errata panel
    summarises it either way."""
    errata = Path(__file__).resolve().parents[2] / "docs" / "errata.md"
    return errata.as_uri() if errata.is_file() else None


def render(payload: dict) -> Page:
    """The page: the template with the CSS, the script and the payload as JSON
    put in. ``<``, ``>`` and ``&`` in the JSON are escaped (valid JSON), so no
    text of the user's can close the script element."""
    assets = resources.files("minibert.teaching") / ASSETS
    template = (assets / "page.html").read_text(encoding="utf-8")
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = html.escape(f"minibert view: {payload['text']}"[:200])
    values = {
        "{{TITLE}}": title,
        "/*{{CSS}}*/": (assets / "view.css").read_text(encoding="utf-8"),
        "/*{{JS}}*/": (assets / "view.js").read_text(encoding="utf-8"),
        "{{DATA}}": data,
    }
    # one pass over the template: what is put in (the user's text too) is never searched for marks
    page = re.sub("|".join(map(re.escape, values)), lambda m: values[m[0]], template)
    return Page(page)


def view(
    model: Model,
    text: str,
    layer: int = 1,
    head: int = 0,
    token: int | str | None = None,
    *,
    prefix: str = "",
) -> Page:
    """The page of ``text`` through ``model``, opened at encoder layer
    ``layer`` (1..L, or negative from the end), head ``head`` (0..h-1) and
    token ``token`` (an index into the text's tokens or a token string;
    default the first token after [CLS]); the page lets the reader choose
    others. ``prefix`` goes before argument names in messages (the command
    line passes ``"--"``). Returns the HTML (:class:`Page`: a str, shown
    inline by Jupyter).
    """
    if not isinstance(text, str):
        raise MinibertError(f"the text to view must be a string, got {type(text).__name__}")
    if not text.strip():
        raise MinibertError("the text to view is empty")
    n = model.tokenize([text]).num_tokens[0]
    if n > MAX_TOKENS:
        raise MinibertError(
            f"the text has {n} tokens; a page shows every number of every token, at most {MAX_TOKENS} "
            "(shorten the text)"
        )
    # one traced forward pass; explain's steps of every layer read it
    first = explain(model, text, layer, head, token, pad=0, prefix=prefix).walk
    layers = range(1, model.num_layers + 1)
    walks = [explain_walk(replace(first, layer=i)) for i in layers]
    initial = {"layer": first.layer, "head": first.head, "token": first.T}
    payload = build_payload(model, first.enc, walks, initial)
    payload["article"] = _article_items()
    payload["errata"] = _errata_link()
    return render(payload)


def check_page_path(path: str | Path) -> Path:
    """An .html (or .htm) path, not a directory, where a file can be written
    (:func:`minibert.files.check_target`)."""
    from minibert.files import check_target

    path = Path(path)
    if path.suffix.lower() not in EXTENSIONS:
        raise MinibertError(f"{path}: the page is HTML: give a file name ending in .html")
    if os.path.isdir(path):
        raise MinibertError(f"{path}: is a directory; give a file name ending in .html")
    return check_target(path)
