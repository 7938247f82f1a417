"""``minibert plot``: PNGs are written, non-empty, with the right panels;
the per-layer statistics equal a brute-force recomputation; a missing
matplotlib gives a one-line error naming the [plot] extra."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from minibert import cli
from minibert.errors import MinibertError

TEXTS = [
    "The cat sat on the mat.",
    "Interest rates rose again this quarter.",
    "We walked along the river bank.",
    "Bees carry pollen from flower to flower.",
    "The train was delayed by forty minutes.",
    "A lighthouse guided the boats home.",
]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def heatmaps(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_attention_figure_panels():
    pytest.importorskip("matplotlib")
    from minibert.teaching.plot import attention_figure

    rng = np.random.default_rng(0)
    tokens = ["[CLS]", "a", "b", "c", "[SEP]"]
    probs = rng.random((12, 5, 5))
    probs /= probs.sum(-1, keepdims=True)
    grid = attention_figure(tokens, probs, layer=2)
    assert len(heatmaps(grid)) == 12
    assert [ax.get_title() for ax in heatmaps(grid)] == [f"head {j}" for j in range(12)]
    one = attention_figure(tokens, probs, layer=2, head=7)
    (ax,) = heatmaps(one)
    assert ax.get_title() == "head 7"
    np.testing.assert_array_equal(ax.images[0].get_array(), probs[7])
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens


def test_plot_attention_cli(real_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    grid, one = tmp_path / "grid.png", tmp_path / "one.png"
    base = ["plot", "attention", "--model", str(real_model_dir), "The bank raised interest rates."]
    assert cli.main([*base, "--layer", "2", "-o", str(grid)]) == 0
    assert cli.main([*base, "--layer", "-1", "--head", "3", "-o", str(one)]) == 0
    assert grid.stat().st_size > 20_000 and one.stat().st_size > 5_000
    (gw, gh), (ow, oh) = png_size(grid), png_size(one)
    assert gw > ow and gh > oh, "the grid of 12 heads should be larger than one head"
    assert "wrote" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*.tmp*"))


def test_layer_statistics_brute_force(real_model):
    """Norm and self-similarity exactly; anisotropy against the mean over all
    cross-text pairs (the random sample estimates it: observed gap 9e-4 with
    20000 pairs; tolerance 0.02)."""
    from minibert.teaching.plot import layer_statistics

    stats = layer_statistics(real_model, TEXTS, num_pairs=20000, seed=1)
    enc = real_model.encode(TEXTS)
    L = real_model.config.num_hidden_layers
    assert stats.norm.shape == stats.anisotropy.shape == (L + 1,)
    assert stats.self_similarity.shape == (L,)
    vecs, owner = [[] for _ in range(L + 1)], []
    for b, word_ids in enumerate(enc.word_ids):
        for s, w in enumerate(word_ids):
            if w is None:
                continue
            owner.append(b)
            for i in range(L + 1):
                vecs[i].append(enc.hidden_states[i][b, s].astype(np.float64))
    assert stats.tokens == len(owner)
    owner = np.array(owner)
    cross = owner[:, None] != owner[None, :]
    for i in range(L + 1):
        V = np.array(vecs[i])
        assert stats.norm[i] == pytest.approx(np.mean([np.linalg.norm(v) for v in V]), rel=1e-6)
        U = V / np.linalg.norm(V, axis=1, keepdims=True)
        exact = (U @ U.T)[cross].mean()
        assert stats.anisotropy[i] == pytest.approx(exact, abs=0.02), i
        if i:
            P = np.array(vecs[i - 1])
            cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(V, P, strict=True)]
            assert stats.self_similarity[i - 1] == pytest.approx(np.mean(cos), rel=1e-9)


def test_plot_layers_cli(real_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from minibert import load
    from minibert.teaching.plot import layer_statistics, layers_figure

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "layers.png"
    assert cli.main(["plot", "layers", "--model", str(real_model_dir), str(src), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    w, h = png_size(out)
    assert w > 2 * h, "three panels side by side"
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["i", "norm", "anisotropy"]
    fig = layers_figure(layer_statistics(load(real_model_dir), TEXTS, num_pairs=500))
    assert len(fig.axes) == 3
    assert [len(ax.lines[0].get_xdata()) for ax in fig.axes] == [7, 7, 6]


def test_plot_errors(real_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src = tmp_path / "one.txt"
    src.write_text("only one text\n", encoding="utf-8")
    cases = [
        (["plot", "layers", str(src), "-o", str(tmp_path / "x.png")], "at least two non-empty texts"),
        (["plot", "attention", "hi", "-o", str(tmp_path / "x.jpg")], "unknown figure format"),
        (["plot", "attention", "hi", "-o", str(tmp_path / "no" / "x.png")], "does not exist"),
        (
            ["plot", "attention", "hi", "--layer", "9", "-o", str(tmp_path / "x.png")],
            "--layer 9 is out of range",
        ),
    ]
    for argv, message in cases:
        assert cli.main([*argv[:2], "--model", str(real_model_dir), *argv[2:]]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.glob("*.png"))


def test_missing_matplotlib(monkeypatch, capsys, tmp_path):
    from minibert.teaching.plot import require_matplotlib

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MinibertError, match=r"install the \[plot\] extra"):
        require_matplotlib()
    assert cli.main(["plot", "attention", "hi", "-o", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[plot] extra" in err[0]


def test_minibert_imports_no_matplotlib():
    """matplotlib stays out of everything but minibert.teaching.plot."""
    import subprocess

    code = (
        "import sys, minibert, minibert.cli, minibert.teaching.explain, minibert.teaching.article; "
        "from minibert.commands import plot; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_attention_figure_long_text_has_no_labels():
    pytest.importorskip("matplotlib")
    from minibert.teaching.plot import MAX_LABELLED_TOKENS, attention_figure

    S = MAX_LABELLED_TOKENS + 1
    probs = np.full((2, S, S), 1.0 / S)
    fig = attention_figure([f"t{i}" for i in range(S)], probs, layer=1)
    assert len(heatmaps(fig)) == 2
    assert all(len(ax.get_xticks()) == 0 for ax in heatmaps(fig))
    assert max(fig.get_size_inches()) <= 16


def test_layer_statistics_albert_groups(tiny_model_dir):
    """One statistic per hidden state, also when a model has more encoder
    steps than num_hidden_layers (ALBERT with inner groups)."""
    import minibert
    from minibert.teaching.plot import layer_statistics

    model = minibert.load(tiny_model_dir.parent / "tiny-albert-groups")
    steps = len(model.weights.layer_map)
    stats = layer_statistics(model, TEXTS[:3], num_pairs=200)
    assert stats.norm.shape == (steps + 1,) and stats.self_similarity.shape == (steps,)
    assert len(model.encode(TEXTS[:1]).hidden_states) == steps + 1


@pytest.fixture(scope="module")
def stats_outputs(tmp_path_factory, tiny_model_dir):
    """TEXTS with --attention-stats: shards of 2 texts, and one .npz file."""
    d = tmp_path_factory.mktemp("heads")
    src = d / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for out in ("shards", "one.npz"):
        argv = ["extract", "--model", str(tiny_model_dir), str(src), "-o", str(d / out), "--attention-stats"]
        assert cli.main([*argv, "--quiet", "--shard-size", "2", "--batch-size", "3"]) == 0
    return d


def test_head_means_are_the_means_over_the_texts(stats_outputs, tiny_model):
    from reference_helpers import loops

    from minibert import open_output
    from minibert.features.attention_stats import STATS, token_kinds
    from minibert.teaching.plot import head_means

    want = {s: np.zeros((2, 4)) for s in STATS}  # tiny-bert: layers 1, 2; 4 heads
    for text in TEXTS:  # each text alone, each statistic by loops: an independent mean
        enc = tiny_model.encode([text], output_attentions=True)
        kinds = token_kinds(enc.sequence_ids[0], enc.offsets[0], enc.texts[0])
        for row, a in enumerate(enc.attentions):
            for s, v in loops(a[0].astype(np.float64), *kinds).items():
                want[s][row] += v / len(TEXTS)
    for name in ("shards", "one.npz"):
        stats = head_means(open_output(stats_outputs / name))
        assert stats.layers == (1, 2) and stats.texts == len(TEXTS) and stats.model == "tiny-bert"
        for s in STATS:  # float32 statistics of batched texts, averaged in float64 (observed < 1e-7)
            np.testing.assert_allclose(stats.means[s], want[s], rtol=1e-5, atol=1e-6, err_msg=f"{name} {s}")


def test_heads_figure_panels(stats_outputs):
    pytest.importorskip("matplotlib")
    from minibert import open_output
    from minibert.features.attention_stats import STATS
    from minibert.teaching.plot import HEAD_TITLES, head_means, heads_figure

    stats = head_means(open_output(stats_outputs / "one.npz"))
    fig = heads_figure(stats)
    panels = heatmaps(fig)
    assert [ax.get_title() for ax in panels] == [HEAD_TITLES[s][0] for s in STATS]
    for ax, s in zip(panels, STATS, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), stats.means[s])
        assert len(ax.texts) == 2 * 4  # one number per layer and head
        assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]


def test_plot_heads_cli(stats_outputs, tiny_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "heads.png"
    assert cli.main(["plot", "heads", str(stats_outputs / "shards"), "-o", str(png)]) == 0
    assert capsys.readouterr().out == f"wrote {png} (means over 6 texts, layers 1, 2)\n"
    assert png_size(png)[0] > 300
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS[:2]) + "\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    for out, args in (
        ("maps.npz", ["--attentions"]),
        ("plain.npz", []),
        ("none.safetensors", ["--attention-stats"]),
    ):
        source = empty if out.startswith("none") else src
        assert (
            cli.main(
                [
                    "extract",
                    "--model",
                    str(tiny_model_dir),
                    str(source),
                    "-o",
                    str(tmp_path / out),
                    "--quiet",
                    *args,
                ]
            )
            == 0
        )
    capsys.readouterr()
    for out, message in (
        (
            "maps.npz",
            "has attention maps, not attention statistics (written with --attentions, not --attention-stats)",
        ),
        ("plain.npz", "has no attention statistics (it was not written with --attention-stats)"),
        ("none.safetensors", "holds no text with attention statistics to average"),
    ):
        assert cli.main(["plot", "heads", str(tmp_path / out), "-o", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.png").exists()
