"""Screenshots of the page of ``minibert view`` for docs/view.md (``make docs``).

Builds the page of one text on the default model, opens it from a file://
URL in headless Chromium (the system's, driven by Playwright: the
``[browser]`` extra; the same way as the browser tests, tests/browser_helpers.py)
and writes one PNG per view into docs/:

    view-tokens.png    1. tokens and embeddings
    view-head.png      2. the head view (layer 6, head 4: "bank" attends to "interest" and "rates")
    view-model.png     2. the model view
    view-steps.png     3. scores, mask, softmax and the weighted sum of V
    view-ffn.png       3. the feed-forward network, GELU beside the article's ReLU
    view-layers.png    4. norms, cosine to the previous layer, nearest tokens
    view-errata.png    5. the article's errata
    view-wide.png      the page as it opens at 1400 x 900
    view-phone.png     the page at 390 x 844 (a phone): the top, then the neuron view
    view-pair.png      2. the head view of a sentence pair, filtered to sentence B -> sentence A

    python docs/screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TEXT = "The bank raised interest rates again today."
PAIR = "She sat on the river bank."  # sentence B of the pair's page
WIDTH = 1400
HEIGHT = 900
PHONE = (390, 844)
#: (file, CSS selectors whose union is photographed)
SHOTS = [
    ("view-tokens.png", ["#tokens"]),
    ("view-head.png", ["#attention-head"]),
    ("view-model.png", ["#attention-model"]),
    ("view-steps.png", ["#step-scores", "#step-mask", "#step-softmax"]),
    ("view-neuron.png", ["#neuron-view"]),
    ("view-ffn.png", ["#step-ffn"]),
    ("view-layers.png", ["#layers"]),
    ("view-errata.png", ["#errata"]),
]


def union(boxes: list[dict]) -> dict:
    """The smallest rectangle around ``boxes`` (page coordinates), with a margin."""
    x0 = min(b["x"] for b in boxes) - 4
    y0 = min(b["y"] for b in boxes) - 4
    x1 = max(b["x"] + b["width"] for b in boxes) + 4
    y1 = max(b["y"] + b["height"] for b in boxes) + 4
    return {"x": max(0, x0), "y": max(0, y0), "width": x1 - max(0, x0), "height": y1 - max(0, y0)}


def main() -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from browser_helpers import launch, missing, open_page

    if missing():
        print(f"screenshots: {missing()}", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    import minibert

    page_html = minibert.view(minibert.load(), TEXT, layer=6, head=4, token="bank")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        path = Path(tmp) / "bank.html"
        path.write_text(page_html, encoding="utf-8")
        browser = launch(p)
        opened = open_page(browser, path, width=WIDTH, height=HEIGHT)
        page = opened.page
        page.screenshot(path=str(DOCS / "view-wide.png"))
        print("wrote docs/view-wide.png")
        page.add_style_tag(content="header { position: static; }")  # not over every screenshot
        for name, selectors in SHOTS:
            boxes = [page.locator(s).bounding_box() for s in selectors]
            scroll = page.evaluate("() => [window.scrollX, window.scrollY]")
            clip = union([{**b, "x": b["x"] + scroll[0], "y": b["y"] + scroll[1]} for b in boxes])
            page.screenshot(path=str(DOCS / name), clip=clip, full_page=True)
            print(f"wrote docs/{name}")
        phone = open_page(browser, path, width=PHONE[0], height=PHONE[1])
        phone.page.screenshot(path=str(DOCS / "view-phone.png"))
        phone.page.evaluate("document.getElementById('neuron-view').scrollIntoView()")
        phone.page.screenshot(path=str(DOCS / "view-phone-neuron.png"))
        print("wrote docs/view-phone.png, docs/view-phone-neuron.png")
        pair = pair_shot(browser, Path(tmp), minibert)
        browser.close()
        problems = [o for o in (opened, phone, pair) if o.errors or len(o.requests) != 1]
        if problems:
            print(
                f"screenshots: the page logged {problems[0].errors} and asked for {problems[0].requests}",
                file=sys.stderr,
            )
            return 1
    return 0


def pair_shot(browser, tmp: Path, minibert):
    """The head view of TEXT with PAIR under bertviz's filter sentence B -> sentence A: layer 3,
    head 9, whose query "bank" of the river (token 15) gives 0.73 of its attention to A's "bank"."""
    from browser_helpers import open_page, settle

    path = tmp / "pair.html"
    path.write_text(
        minibert.view(minibert.load(), TEXT, pair=PAIR, layer=3, head=9, token=15), encoding="utf-8"
    )
    opened = open_page(browser, path, width=WIDTH, height=HEIGHT)
    page = opened.page
    page.add_style_tag(content="header { position: static; }")
    page.select_option("#filter-head", "BA")
    settle(page)
    page.locator("#attention-head").screenshot(path=str(DOCS / "view-pair.png"))
    print("wrote docs/view-pair.png")
    return opened


if __name__ == "__main__":
    sys.exit(main())
