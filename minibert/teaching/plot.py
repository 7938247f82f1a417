"""Pictures: attention heatmaps, per-layer geometry and per-head attention
statistics (the ``[plot]`` extra).

matplotlib is imported only here, and only when a figure is built; without it
:func:`require_matplotlib` raises a one-line error saying to install the
``[plot]`` extra. Figures are built with matplotlib's object API
(``matplotlib.figure.Figure``), never ``pyplot``, so nothing global changes.

Per-layer statistics (:func:`layer_statistics`), over the real (non-special)
tokens of a set of texts, for every hidden state i = 0 (embedding output) to L:

- norm: the mean Euclidean norm of a token vector;
- anisotropy: the mean cosine between token vectors drawn at random from two
  different texts (Ethayarajh 2019, "How Contextual are Contextualized Word
  Representations?", section 3.3: a baseline of how similar two unrelated
  words look; 0 for directions spread evenly, 1 for vectors all pointing one
  way). The same random pairs are used at every layer;
- self-similarity to the previous layer (i >= 1): the mean cosine between a
  token's vector at layer i and the same token at layer i - 1. (Not
  Ethayarajh's "self-similarity", which compares one word across contexts.)

Per-head statistics (:func:`head_means`): each attention statistic of an
``extract --attention-stats`` output (:mod:`minibert.features.attention_stats`),
averaged over its texts, per layer and head; :func:`heads_figure` draws
them one grid per statistic, as Clark et al. (2019) chart their per-head
averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.encoder.layers import resolve_layer
from minibert.errors import MinibertError
from minibert.features.attention_stats import STATS
from minibert.features.pooling import cosine
from minibert.model import Model
from minibert.outputs.readers import OutputReader, require_attention
from minibert.teaching.explain import resolve_head

PLOT_HINT = "install the [plot] extra: pip install 'minibert-numpy[plot]' (or: pip install matplotlib)"
FORMATS = (".png", ".svg", ".pdf")
MAX_LABELLED_TOKENS = 64  # beyond this, token labels would overlap: the heatmap has none


def require_matplotlib():
    """matplotlib's Figure class, or a MinibertError that says how to get it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MinibertError(f"plotting needs matplotlib, which is not installed; {PLOT_HINT}") from None
    return Figure


def check_figure_path(path: str | Path) -> Path:
    """A .png/.svg/.pdf path where a file can be written (:func:`minibert.files.check_target`)."""
    from minibert.files import check_target

    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise MinibertError(f"{path}: unknown figure format {path.suffix!r} (use {', '.join(FORMATS)})")
    return check_target(path)


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` atomically (:func:`minibert.files.write_atomic`: a
    temporary file in the same directory, then rename; an OSError is one line)."""
    from minibert.files import write_atomic

    path = check_figure_path(path)
    write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower(), dpi=dpi))
    return path


# ---------------------------------------------------------------- attention


def attention_figure(tokens: list[str], probs: np.ndarray, layer: int, head: int | None = None):
    """Heatmap(s) of attention probabilities P (rows: queries, columns: keys).

    tokens: the S token strings; probs: (h, S, S) for one text and one layer.
    ``head`` None draws the grid of all h heads, else that head alone. Texts
    longer than MAX_LABELLED_TOKENS are drawn without token labels.
    """
    Figure = require_matplotlib()
    h, S, _ = probs.shape
    heads = list(range(h)) if head is None else [head]
    ncols = min(len(heads), math.ceil(math.sqrt(len(heads) * 4 / 3)))
    nrows = math.ceil(len(heads) / ncols)
    # inches per panel, capped so a 512-token text still gives a drawable figure
    cell = min(0.22 * S + 1.2, 5.0) if head is None else min(0.4 * S + 2, 14.0)
    fig = Figure(figsize=(max(cell * ncols + 1, 5), max(cell * nrows + 0.6, 4)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    small = 8 if head is not None else max(4, 9 - S // 6)
    image = None
    for n, ax in enumerate(axes.flat):
        if n >= len(heads):
            ax.set_axis_off()
            continue
        j = heads[n]
        image = ax.imshow(probs[j], vmin=0.0, vmax=1.0, cmap="viridis", aspect="equal")
        ax.set_title(f"head {j}", fontsize=small + 1)
        labelled = S <= MAX_LABELLED_TOKENS
        ax.set_xticks(range(S) if labelled else [])
        ax.set_yticks(range(S) if labelled else [])
        show_x = head is not None or n // ncols == nrows - 1 or n + ncols >= len(heads)
        show_y = head is not None or n % ncols == 0
        if labelled:
            ax.set_xticklabels(tokens if show_x else [], rotation=90, fontsize=small)
            ax.set_yticklabels(tokens if show_y else [], fontsize=small)
        ax.tick_params(length=0)
    if head is not None:
        axes[0, 0].set_xlabel("key")
        axes[0, 0].set_ylabel("query")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention probability")
    what = f"head {head}" if head is not None else f"all {h} heads"
    fig.suptitle(f"Attention probabilities, encoder layer {layer}, {what} (rows sum to 1)")
    return fig


def attention(model: Model, text: str, layer: int, head: int | None = None, *, prefix: str = ""):
    """Encode ``text`` and draw layer ``layer`` (1..L, or -1 for the last):
    one ``head`` (0..h-1), or all of them. ``prefix`` goes before the
    argument names in messages (the command line passes ``"--"``)."""
    N = resolve_layer(layer, model.num_layers + 1, f"{prefix}layer", first=1)
    if head is not None:
        head = resolve_head(head, model.config.num_attention_heads, f"{prefix}head")
    enc = model.encode([text], output_attentions=True)
    tokens = enc.tokens[0]
    return attention_figure(tokens, enc.attentions[N - 1][0], N, head)


# ---------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerStats:
    """Per hidden state 0..L: ``norm``, ``anisotropy`` (L+1 values each);
    ``self_similarity`` (L values, layers 1..L). ``tokens``: real tokens used;
    ``pairs``: random cross-text pairs behind ``anisotropy``."""

    norm: np.ndarray
    anisotropy: np.ndarray
    self_similarity: np.ndarray
    texts: int
    tokens: int
    pairs: int
    model: str


def layer_statistics(
    model: Model, texts: list[str], num_pairs: int = 5000, seed: int = 0, batch_size: int = 16
) -> LayerStats:
    """Norm, anisotropy and self-similarity per layer over ``texts``' real
    tokens ([CLS], [SEP] and padding left out). Needs at least two texts."""
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise MinibertError("layer statistics need at least two non-empty texts (anisotropy compares texts)")
    per_layer: list[list[np.ndarray]] = [[] for _ in range(model.num_layers + 1)]
    owner: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        enc = model.encode(texts[start : start + batch_size])
        for b, word_ids in enumerate(enc.word_ids):
            keep = np.array(
                [w is not None for w in word_ids] + [False] * (enc.input_ids.shape[1] - len(word_ids))
            )
            for i, hs in enumerate(enc.hidden_states):
                per_layer[i].append(hs[b][keep])
            owner.append(np.full(int(keep.sum()), start + b))
    vectors = [np.concatenate(v) for v in per_layer]  # L+1 arrays (N, H)
    text_of = np.concatenate(owner)
    n = len(text_of)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, size=4 * num_pairs)
    b = rng.integers(0, n, size=4 * num_pairs)
    different = text_of[a] != text_of[b]
    a, b = a[different][:num_pairs], b[different][:num_pairs]
    norm = np.array([np.linalg.norm(v.astype(np.float64), axis=-1).mean() for v in vectors])
    aniso = np.array([np.mean(cosine(v[a], v[b])) for v in vectors])
    selfsim = np.array([np.mean(cosine(vectors[i], vectors[i - 1])) for i in range(1, len(vectors))])
    return LayerStats(norm, aniso, selfsim, len(texts), n, len(a), model.path.name)


def layers_figure(stats: LayerStats):
    """Three panels, one point per layer: mean norm, anisotropy, self-similarity."""
    Figure = require_matplotlib()
    L = len(stats.self_similarity)
    x = np.arange(L + 1)
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        (x, stats.norm, "mean token-vector norm", "norm"),
        (x, stats.anisotropy, "anisotropy: mean cosine,\nrandom tokens of different texts", "cosine"),
        (
            x[1:],
            stats.self_similarity,
            "self-similarity: cosine to the\nsame token in the previous layer",
            "cosine",
        ),
    )
    for ax, (xs, ys, title, ylabel) in zip(axes, panels, strict=True):
        ax.plot(xs, ys, marker="o")
        for xi, yi in zip(xs, ys, strict=True):
            ax.annotate(
                f"{yi:.2f}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
            )
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x)
        ax.set_xlabel("hidden_states index (0 = embeddings)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.margins(y=0.18)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{stats.model}: {stats.tokens} tokens of {stats.texts} texts, {stats.pairs} random pairs",
        fontsize=10,
    )
    return fig


def layers_table(stats: LayerStats) -> str:
    """The numbers behind :func:`layers_figure`, as text."""
    lines = ["  i  norm      anisotropy  self-similarity (to i-1)"]
    for i in range(len(stats.norm)):
        ss = "-" if i == 0 else f"{stats.self_similarity[i - 1]:.4f}"
        lines.append(f"{i:>3}  {stats.norm[i]:8.4f}  {stats.anisotropy[i]:10.4f}  {ss:>10}")
    return "\n".join(lines)


# ---------------------------------------------------------------- heads

#: Panel titles of :func:`heads_figure`, and how each statistic's values are printed.
HEAD_TITLES = {
    "entropy": ("entropy (nats)", "{:.2f}"),
    "to_cls": ("attention to [CLS]", "{:.2f}"),
    "to_sep": ("attention to [SEP]", "{:.2f}"),
    "to_punct": ("attention to punctuation", "{:.2f}"),
    "to_prev": ("attention to the previous token", "{:.2f}"),
    "to_next": ("attention to the next token", "{:.2f}"),
    "to_self": ("attention to itself", "{:.2f}"),
    "distance": ("mean attention distance (tokens)", "{:.1f}"),
}


@dataclass(frozen=True)
class HeadStats:
    """Each attention statistic averaged over an output's texts:
    ``means[name]`` (L', h), rows the encoder ``layers``, columns the heads;
    ``texts`` the texts averaged (each weighs the same, whatever its
    length; a text without tokens, whose statistics are NaN, is left out)."""

    means: dict[str, np.ndarray]
    layers: tuple[int, ...]
    texts: int
    model: str


def head_means(out: OutputReader) -> HeadStats:
    """The per-layer, per-head means of an ``--attention-stats`` output,
    read one part (a file, or one shard) at a time."""
    require_attention(out.attention, "stats")
    sums = {s: 0.0 for s in STATS}
    texts = 0
    for part in out.parts():
        require_attention(part.attention, "stats")
        for s in STATS:
            sums[s] = sums[s] + np.nansum(np.asarray(part.arrays[f"attention_stats.{s}"], np.float64), axis=0)
        entropy = np.asarray(part.arrays["attention_stats.entropy"])  # (N, L', h)
        texts += int(np.isfinite(entropy).all(axis=(1, 2)).sum())
    if texts == 0:
        raise MinibertError("this output holds no text with attention statistics to average")
    means = {s: sums[s] / texts for s in STATS}  # (L', h) each
    model = Path(out.settings["model"]).name if out.settings.get("model") else ""
    return HeadStats(means, tuple(out.attention_layers), texts, model)


def heads_figure(stats: HeadStats):
    """One heatmap per statistic (4 x 2 panels): encoder layers down, heads
    across, each cell the corpus mean, printed in it."""
    Figure = require_matplotlib()
    L, h = stats.means["entropy"].shape
    fig = Figure(figsize=(2 * min(0.36 * h + 1.0, 7.0), 4 * min(0.27 * L + 0.9, 5.0)), layout="constrained")
    axes = fig.subplots(4, 2, squeeze=False)
    small = 6 if h > 8 else 7
    for ax, name in zip(axes.flat, STATS, strict=True):
        title, fmt = HEAD_TITLES[name]
        values = stats.means[name]
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        top = np.nanmax(values) if np.isfinite(values).any() else 0.0
        for (r, c), v in np.ndenumerate(values):
            colour = "black" if v > 0.6 * top else "white"
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=small, color=colour)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(h))
        ax.set_xticklabels(range(h), fontsize=7)
        ax.set_yticks(range(L))
        ax.set_yticklabels(stats.layers, fontsize=7)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.9)
    name = f"{stats.model}: " if stats.model else ""
    fig.suptitle(
        f"{name}attention statistics per layer and head, means over {stats.texts} texts", fontsize=10
    )
    return fig
