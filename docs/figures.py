"""The tutorial's pictures, drawn from the real model's numbers (``make docs``; needs the
``[plot]`` extra and the weights of all-MiniLM-L6-v2).

    python docs/figures.py            # writes docs/fig-*.png

- fig-encoder-block.png   the post-LN encoder layer and its two residual paths (a diagram)
- fig-gelu-relu.png       GELU against ReLU on the FFN pre-activations of a real sentence
- fig-softmax.png         one row of attention scores before and after the softmax
- fig-layernorm.png       one token's residual sum before and after LayerNorm

The numbers come from ``model.encode(..., trace=True)``: the trace's flat names
(``trace["layers"][i]["ffn_pre"]``, ...) that the tutorial pages use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

TEXT = "The bank raised interest rates again today."
LAYER, HEAD, TOKEN = 2, 3, "bank"  # layer as in hidden_states: 1 = the first encoder layer


def _box(ax, x, y, text, color, w=2.6, h=0.62):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=color, ec="0.3"))
    ax.text(x, y, text, ha="center", va="center", fontsize=10)


def _arrow(ax, a, b, color="0.25"):
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3))


def encoder_block(path: Path) -> None:
    """The post-LN layer: x -> x1 = LN(x + MultiHead(x)) -> LN(x1 + FFN(x1)), residuals drawn."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 6.4))
    ax.set_xlim(-2.6, 3.4)
    ax.set_ylim(-0.6, 9.2)
    ax.axis("off")
    steps = [
        (0.0, "x = hidden_states[i - 1]   (B, S, H)", "#eeeeee"),
        (1.3, "MultiHead(x)   (page 3)", "#cfe2f3"),
        (2.6, "x + MultiHead(x)", "#ffffff"),
        (3.8, "x₁ = LayerNorm(·)   (page 5)", "#d9ead3"),
        (5.1, "FFN(x₁) = GELU(x₁W₁ + b₁)W₂ + b₂", "#fce5cd"),
        (6.4, "x₁ + FFN(x₁)", "#ffffff"),
        (7.6, "LayerNorm(·) = hidden_states[i]", "#d9ead3"),
    ]
    for y, text, color in steps:
        _box(ax, 0, y, text, color, w=3.9)
    for (y0, _, _), (y1, _, _) in zip(steps, steps[1:], strict=False):
        _arrow(ax, (0, y0 + 0.33), (0, y1 - 0.33))
    for start, end, label in ((0.0, 2.6, "residual: x"), (3.8, 6.4, "residual: x₁")):
        ax.plot([1.95, 2.7, 2.7], [start, start, end], color="#cc4125", lw=1.6)
        _arrow(ax, (2.7, end), (1.97, end), color="#cc4125")
        ax.text(2.8, (start + end) / 2, label, color="#cc4125", rotation=90, va="center", fontsize=9)
    ax.text(0, 8.55, "post-LN: the LayerNorm comes after each residual sum", ha="center", fontsize=10)
    ax.text(-2.55, 9.0, "one encoder layer of BERT (page 6)", fontsize=11, weight="bold")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def gelu_relu(path: Path, trace) -> None:
    """Every FFN pre-activation of one layer for the sentence, through GELU and through ReLU."""
    import matplotlib.pyplot as plt
    from scipy.special import erf

    pre = trace["layers"][LAYER - 1]["ffn_pre"][0].astype(np.float64).ravel()
    act = trace["layers"][LAYER - 1]["ffn_act"][0].astype(np.float64).ravel()
    lo, hi = np.percentile(pre, [0.2, 99.8])  # a few outliers reach +20: zoom where the curves differ
    x = np.linspace(lo, hi, 400)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8), width_ratios=[1.2, 1])
    a1.plot(x, np.maximum(x, 0), color="#cc4125", lw=1.5, label="ReLU(x) (the article)")
    a1.plot(x, 0.5 * x * (1 + erf(x / np.sqrt(2))), color="#3d85c6", lw=1.5, label="GELU(x) (BERT)")
    a1.scatter(pre[::7], act[::7], s=3, color="#0b5394", alpha=0.35, label="the model's GELU outputs")
    a1.set_xlabel("pre-activation xW₁ + b₁")
    a1.set_ylabel("activation")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8, loc="upper left")
    a1.set_xlim(lo, hi)
    a1.set_ylim(-0.4, max(hi, 0.5))
    a1.set_title(f"layer {LAYER}: {pre.size:,} pre-activations ({lo:.1f} to {hi:.1f} shown)", fontsize=10)
    a2.hist(pre, bins=120, color="0.55")
    neg = np.mean(pre < 0)
    a2.axvline(0, color="#cc4125", lw=1)
    a2.set_xlabel("pre-activation")
    a2.set_ylabel("count")
    a2.set_title(
        f"{neg:.0%} are negative: ReLU sets them to 0,\nGELU keeps a small negative value", fontsize=10
    )
    a2.grid(alpha=0.3)
    fig.suptitle(f'FFN of "{TEXT}"', fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def softmax_row(path: Path, trace, tokens: list[str]) -> None:
    """The scaled scores of one query against every key, then the probabilities."""
    import matplotlib.pyplot as plt

    q = tokens.index(TOKEN)
    scores = trace["layers"][LAYER - 1]["scores"][0, HEAD, q].astype(np.float64)
    probs = trace["layers"][LAYER - 1]["probs"][0, HEAD, q].astype(np.float64)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8.4, 5.2), sharex=True)
    pos = np.arange(len(tokens))
    a1.bar(pos, scores, color=np.where(scores >= 0, "#3d85c6", "#cc4125"))
    a1.axhline(0, color="0.3", lw=0.8)
    a1.set_ylabel("score q·k / √d")
    a1.set_title(
        f'layer {LAYER}, head {HEAD}, query "{TOKEN}": before the softmax (any real number)', fontsize=10
    )
    a2.bar(pos, probs, color="#6aa84f")
    for p, v in zip(pos, probs, strict=True):
        a2.text(p, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    a2.set_ylabel("probability")
    a2.set_ylim(0, max(probs) * 1.2)
    a2.set_title(f"after: exp(score) / Σ exp, all ≥ 0, summing to {probs.sum():.4f}", fontsize=10)
    a2.set_xticks(pos, tokens, rotation=30)
    for a in (a1, a2):
        a.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def layer_norm(path: Path, trace, tokens: list[str]) -> None:
    """One token's x + MultiHead(x) (H numbers) and LayerNorm of it, with mean and spread."""
    import matplotlib.pyplot as plt

    t = tokens.index(TOKEN)
    before = trace["layers"][LAYER - 1]["residual_1"][0, t].astype(np.float64)
    after = trace["layers"][LAYER - 1]["ln_1"][0, t].astype(np.float64)
    z = (before - before.mean()) / before.std()
    fig, axes = plt.subplots(3, 1, figsize=(8.4, 6.4), sharex=True)
    rows = (
        (before, "x + MultiHead(x)", "#999999"),
        (z, "(x − μ) / √(σ² + ε): mean 0, variance 1", "#3d85c6"),
        (after, "γ ⊙ that + β = LayerNorm output", "#6aa84f"),
    )
    for ax, (v, label, color) in zip(axes, rows, strict=True):
        ax.bar(np.arange(v.size), v, width=1.0, color=color)
        ax.axhline(v.mean(), color="#cc4125", lw=1)
        ax.set_title(
            f"{label}   (mean {v.mean():+.3f}, std {v.std():.3f}, max |·| {np.abs(v).max():.2f})", fontsize=9
        )
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel(f'the {before.size} features of token "{TOKEN}" (layer {LAYER}, first LayerNorm)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import minibert

    model = minibert.load()
    enc = model.encode([TEXT], trace=True)
    tokens = enc.tokens[0]
    encoder_block(DOCS / "fig-encoder-block.png")
    gelu_relu(DOCS / "fig-gelu-relu.png", enc.trace)
    softmax_row(DOCS / "fig-softmax.png", enc.trace, tokens)
    layer_norm(DOCS / "fig-layernorm.png", enc.trace, tokens)
    for name in ("encoder-block", "gelu-relu", "softmax", "layernorm"):
        print(f"wrote docs/fig-{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
