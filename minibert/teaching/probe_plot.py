"""Figures of ``minibert probe`` and ``minibert similarity`` (the ``[plot]`` extra;
matplotlib imported only when a figure is built, as in :mod:`minibert.teaching.plot`)."""

from __future__ import annotations

import numpy as np

from minibert.teaching.plot import require_matplotlib


def probe_figure(record: dict):
    """Accuracy, control accuracy and selectivity per layer, the baselines,
    and the scalar mix's weights."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    rows = record["layers"]
    x = [r["layer"] for r in rows]
    for key, label, style in (
        ("accuracy", "probe accuracy", "o-"),
        ("control_accuracy", "control task accuracy", "s--"),
        ("selectivity", "selectivity", "^-"),
    ):
        left.plot(x, [r[key] for r in rows], style, label=label)
    for name, value in record["baselines"].items():
        left.axhline(value, color="grey", lw=0.8, ls=":")
        left.text(x[0], value, f" {name.replace('_', '-')} baseline", va="bottom", fontsize=7, color="grey")
    left.set(
        xlabel="layer (0 = embeddings)",
        ylabel="fraction of test words",
        xticks=x,
        title=f"{record['task']}: linear probe per layer",
    )
    left.legend(fontsize=8, loc="center right")
    mix = record.get("scalar_mix")
    if mix:
        right.bar(x, mix["weights"], color="tab:purple")
        right.axvline(mix["center_of_gravity"], color="k", ls="--", lw=1)
        right.set(
            xlabel="layer",
            ylabel="weight s_l",
            xticks=x,
            title=f"scalar mix (centre {mix['center_of_gravity']:.2f}, acc {mix['accuracy']:.3f})",
        )
    else:
        right.set_axis_off()
    return fig


def similarity_figure(record: dict):
    """The CKA heatmap and Ethayarajh's three measures per layer."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    cka, layers = np.array(record["cka"]), record["layers"]
    im = left.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(layers)):
            left.text(
                j,
                i,
                f"{cka[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cka[i, j] < 0.6 else "black",
            )
    left.set(
        xticks=range(len(layers)),
        xticklabels=layers,
        yticks=range(len(layers)),
        yticklabels=layers,
        xlabel="layer",
        ylabel="layer",
        title="linear CKA between layers",
    )
    fig.colorbar(im, ax=left, shrink=0.8)
    for key, style in (("anisotropy", "o-"), ("self_similarity", "s-"), ("intra_sentence", "^-")):
        right.plot(layers, record[key], style, label=key.replace("_", "-"))
    right.set(
        xlabel="layer (0 = embeddings)",
        ylabel="mean cosine",
        xticks=layers,
        title="Ethayarajh (2019) per layer",
    )
    right.legend(fontsize=8)
    return fig
