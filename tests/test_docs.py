"""The docs cannot rot: every ```python block of docs/*.md runs, in order, in
one namespace per page; every quoted function equals its current source; every
shown output equals what the code prints (numbers to 1e-3). See docs/build.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from minibert.errors import MinibertError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_spec = importlib.util.spec_from_file_location("docs_build", DOCS / "build.py")
build = importlib.util.module_from_spec(_spec)
sys.modules["docs_build"] = build  # dataclasses look their module up there
_spec.loader.exec_module(build)

PAGES = build.pages()
TUTORIAL_FUNCTIONS = {
    "embed", "softmax", "additive_mask", "scaled_dot_product_attention", "split_heads", "merge_heads",
    "multi_head_attention", "gelu", "feed_forward", "layer_norm", "encoder_layer",
}  # fmt: skip


def test_pages_exist():
    names = {p.name for p in PAGES}
    for required in (
        "README.md",
        "errata.md",
        "layers.md",
        "numerics.md",
        "01-embeddings.md",
        "07-encoder.md",
    ):
        assert required in names, required
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


def test_every_formula_is_quoted_from_source():
    quoted = {
        b.ref.split("::")[1]
        for page in PAGES
        for b in build.parse(page.read_text(encoding="utf-8"))
        if b.marker == "source" and b.ref.startswith("minibert/encoder/ops.py::")
    }
    assert TUTORIAL_FUNCTIONS <= quoted, TUTORIAL_FUNCTIONS - quoted


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_quotes_are_current(page):
    for b in build.parse(page.read_text(encoding="utf-8")):
        if b.marker == "source":
            assert b.body == build.quote(b.ref), (
                f"{page.name}:{b.line}: the quote of {b.ref} is stale; run `make docs`"
            )


RUNNABLE = [p for p in PAGES if any(b.runnable for b in build.parse(p.read_text(encoding="utf-8")))]


def test_the_tutorial_has_code_to_run():
    assert len(RUNNABLE) >= 7, [p.name for p in RUNNABLE]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_page_runs_and_outputs_match(page):
    text = page.read_text(encoding="utf-8")
    blocks = build.parse(text)
    try:
        outputs = build.run(text, str(page.relative_to(ROOT)))
    except MinibertError as e:
        if "default model not found" in str(e):
            pytest.skip(f"real model weights absent: {e}")
        raise
    for i, b in enumerate(blocks):
        if b.marker == "output":
            actual = build.expected_output(blocks, outputs, i)
            assert build.same_output(b.body, actual), (
                f"{page.name}:{b.line}: shown output differs from what the code prints "
                f"(run `make docs`):\n--- shown\n{b.body}--- printed\n{actual}"
            )


def test_stale_quote_and_output_are_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- source: minibert/encoder/ops.py::relu -->\n```python\ndef relu(x):\n    return x\n```\n\n"
        "```python\nprint(2 + 2)\n```\n\n<!-- output -->\n```text\n5\n```\n",
        encoding="utf-8",
    )
    problems = build.stale(page)
    assert len(problems) == 2, problems
    assert "quoted source of minibert/encoder/ops.py::relu is stale" in problems[0]
    assert "shown output differs" in problems[1]
    assert build.refresh(page)
    assert build.stale(page) == []
    assert "def relu(x: np.ndarray) -> np.ndarray:" in page.read_text(encoding="utf-8")


def test_same_output_tolerance():
    assert build.same_output("max = 1.2e-06\n", "max = 1.3e-06\n")
    assert build.same_output("[-0.   0.5]\n", "[ 0.   0.5]\n")  # sign of zero, NumPy padding
    assert build.same_output("0.3904\n", "0.3906\n")
    assert not build.same_output("0.3904\n", "0.3950\n")
    assert not build.same_output("layer 1: 0.5\n", "layer 2: 0.5\n")
    assert not build.same_output("ok\n", "ko\n")
    assert not build.same_output("1 2\n", "1 2 3\n")


def test_quote_errors():
    with pytest.raises(LookupError, match="no 'nope'"):
        build.quote("minibert/encoder/ops.py::nope")
    with pytest.raises(LookupError, match="existing path"):
        build.quote("minibert/missing.py::x")


def test_figures_are_small():
    figures = [("attention.png", 200_000), ("layers.png", 200_000), ("heads.png", 300_000)]
    figures += [(f"fig-{n}.png", 150_000) for n in ("encoder-block", "gelu-relu", "softmax", "layernorm")]
    figures += [("probing-similarity.png", 150_000), ("probing-upos.png", 150_000)]
    for name, most in figures:
        path = DOCS / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert 10_000 < path.stat().st_size < most, name  # heads.png: 8 grids of 72 printed numbers
