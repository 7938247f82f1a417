"""The docs stand alone: every link of README.md and docs/*.md reaches a file of this repository
(and a heading of it, for ``page.md#anchor``), and no page cites a path outside it (the article
this project grew from is summarised in docs/article.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text("utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_reach_the_repository(page):
    text = page.read_text("utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            assert target.startswith("https://"), f"{page.name}: link {target} is not relative nor https"
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link {target} reaches no file"
        assert ROOT in file.parents or file == ROOT, f"{page.name}: link {target} leaves the repository"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: link {target}: no heading #{anchor} in {file.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_a_path_outside_the_repository(page):
    text = page.read_text("utf-8")
    assert "shared/seed" not in text, f"{page.name} cites shared/seed/: point at docs/article.md"


def test_the_article_page_is_linked_from_the_errata():
    assert "](article.md" in (ROOT / "docs" / "errata.md").read_text("utf-8")
