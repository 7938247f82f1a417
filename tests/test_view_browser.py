"""The page of ``minibert view`` in a real browser: headless Chromium (the
system's, driven by Playwright; see tests/browser_helpers.py), one browser for
the session. The page loads from a file:// URL with no console error and no
request but its own; clicking a head in the model view opens it; choosing
another token changes the numbers; and every number the page prints equals
the trace, read here in Python from ``model.encode(..., trace=True)``, to the
printed precision (4 decimals), as do its statistics (recomputed here in
NumPy) and its check errors (explain's, to the 2 printed digits).

Skipped, with the reason, without Playwright or Chromium (.ci/run installs
Chromium; ``make test`` installs Playwright).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import READY, launch, missing, open_page, settle
from conftest import DATA

from minibert import load
from minibert.teaching.explain import explain
from minibert.teaching.view import view

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

ROOT = Path(__file__).resolve().parent.parent
TEXT = "The bank raised interest rates again today."
PER_HEAD = {"q", "k", "v", "context", "scores", "masked_scores", "probs"}
#: The families' own per-head rows: q and k before their rotation, the position bias and its terms.
FAMILY_PER_HEAD = {"q_unrotated", "k_unrotated", "bias", "c2p", "p2c"}
#: Every array the steps, the tokens view and the layers view print (ln_2 is printed as hidden_states[l]).
SHOWN = PER_HEAD | {
    "mask", "concat", "attention_output", "residual_1", "ln_1", "ffn_pre", "ffn_act", "ffn_relu",
    "ffn_output", "ffn_relu_output", "residual_2", "hidden", "embeddings.word", "embeddings.position",
    "embeddings.token_type", "embeddings.sum", "embeddings.output",
}  # fmt: skip
PRINTED = 0.5e-4  # half the last printed digit (the page stores and prints the trace rounded to 4 decimals)

ROWS_JS = """() => [...document.querySelectorAll('.vec')].map(r => ({
    key: r.dataset.key, layer: r.dataset.layer, head: r.dataset.head, token: r.dataset.token,
    start: r.dataset.start, nums: [...r.querySelectorAll('.n')].map(n => n.textContent)}))"""
STATS_JS = """() => [...document.querySelectorAll('.stat')].map(s => ({
    stat: s.dataset.stat, key: s.dataset.key, layer: s.dataset.layer, token: s.dataset.token,
    other: s.dataset.other, head: s.dataset.head, text: s.textContent}))"""
CHECKS_JS = """() => [...document.querySelectorAll('li.check')].map(c => ({
    step: c.dataset.step, what: c.dataset.what, layer: c.dataset.layer ?? null,
    err: c.querySelector('.err').textContent, ok: c.classList.contains('ok')}))"""


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


class Page:
    """A page file and what Python knows of the same text: the traced Encoding."""

    def __init__(self, model, text: str, path: Path, pair: str | None = None, **opened_at):
        self.model, self.text, self.path = model, text, path
        path.write_text(view(model, text, pair=pair, **opened_at), encoding="utf-8")
        self.enc = model.encode([text], None if pair is None else [pair], trace=True)


@pytest.fixture(scope="module")
def bank(real_model, tmp_path_factory) -> Page:
    return Page(
        real_model, TEXT, tmp_path_factory.mktemp("view") / "bank.html", layer=2, head=3, token="bank"
    )


@pytest.fixture
def opened(browser, bank):
    o = open_page(browser, bank.path)
    yield o
    o.page.close()


def _int(v) -> int | None:
    return None if v is None else int(v)


def _relu_ffn(p: Page, layer: int, token: int) -> np.ndarray:
    """The article's FFN output (ReLU for GELU) in float64, from the weights (a gated
    FFN: ReLU(pre) times the same gate)."""
    w = p.model.weights.layers[p.model.weights.layer_map[layer - 1]]
    t = p.enc.trace["layers"][layer - 1]
    a = np.maximum(t["ffn_pre"][0, token].astype(np.float64), 0)
    if "ffn_gate" in t:
        a = a * t["ffn_gate"][0, token]
    return a @ w.ffn.W_2.astype(np.float64) + w.ffn.b_2


def _activated(p: Page, pre: np.ndarray) -> np.ndarray:
    """A gated FFN's act(pre) in float64: GELU with math.erf, or SiLU."""
    pre = pre.astype(np.float64)
    if p.model.config.hidden_act == "silu":
        return pre / (1 + np.exp(-pre))
    return np.array([0.5 * u * (1 + math.erf(u / math.sqrt(2))) for u in pre])


def expected(p: Page, key: str, layer: int | None, head: int | None, token: int | None) -> np.ndarray:
    """What a row of the page should hold, read from the trace by its documented names."""
    trace = p.enc.trace
    if key.startswith("embeddings."):
        return trace["embeddings"][key.split(".", 1)[1]][0, token]
    if key == "hidden":
        return p.enc.hidden_states[layer][0, token]
    t = trace["layers"][layer - 1]
    if key == "mask":
        return t["mask"][0, 0, 0]
    if key in PER_HEAD | FAMILY_PER_HEAD:
        return t[key][0, head, token]
    if key in ("cos", "sin"):  # the angle table: one angle per pair, d/2
        return t[key][token, : p.model.config.head_size // 2]
    if key == "ffn_activated":
        return _activated(p, t["ffn_pre"][0, token])
    if key == "ffn_relu":
        return np.maximum(t["ffn_pre"][0, token], 0)
    if key == "ffn_relu_output":
        return _relu_ffn(p, layer, token)
    return t[key][0, token]


def assert_rows_are_the_trace(page, p: Page) -> dict[str, int]:
    """Every printed number of every row equals the trace to the printed
    precision. Returns how many numbers were compared, by array."""
    compared: dict[str, int] = {}
    for row in page.evaluate(ROWS_JS):
        want = expected(p, row["key"], _int(row["layer"]), _int(row["head"]), _int(row["token"]))
        want = np.atleast_1d(np.asarray(want, dtype=np.float64))[_int(row["start"]) or 0 :]
        got = np.array([float(x) for x in row["nums"]])
        assert len(got) <= len(want), row["key"]
        # float32 against float64 for the ReLU counterfactual: observed <= 3e-5 on a value of 193
        tol = (
            PRINTED
            + 1e-9
            + (1e-6 * np.abs(want[: len(got)]) + 1e-5 if row["key"] == "ffn_relu_output" else 0)
        )
        bad = np.flatnonzero(np.abs(got - want[: len(got)]) > tol)
        where = {k: row[k] for k in ("layer", "head", "token", "start") if row[k] is not None}
        assert not bad.size, (
            f"{row['key']} {where} at {bad[:5]}: printed {got[bad[:5]]}, trace {want[bad[:5]]}"
        )
        compared[row["key"]] = compared.get(row["key"], 0) + len(got)
    return compared


def state(page) -> tuple[int, int, int]:
    settle(page)
    return tuple(int(page.input_value(s)) for s in ("#layer", "#head", "#token"))


def test_loads_from_disk_with_no_error_and_no_request(opened, bank):
    page = opened.page
    assert opened.errors == []
    assert opened.requests == [bank.path.resolve().as_uri()]
    assert page.text_content("#summary .text") == TEXT
    L, h = bank.model.num_layers, bank.model.config.num_attention_heads
    assert page.locator("#model-view canvas.thumb").count() == L * h
    assert state(page) == (2, 3, 2)
    assert page.get_attribute("#head-view", "data-heads") == "3"


def test_every_number_shown_is_the_traces(opened, bank):
    compared = assert_rows_are_the_trace(opened.page, bank)
    assert set(compared) == SHOWN
    H, I, S = bank.model.config.hidden_size, bank.model.config.intermediate_size, 10
    # q and k: in the Q, K, V step and the neuron view; v: Q, K, V and the weighted sum
    assert compared["ffn_pre"] == I and compared["q"] == 2 * 32 and compared["v"] == 32 + S * 32
    assert compared["scores"] == S + 1 and compared["k"] == 2 * 32
    assert sum(compared.values()) > 10 * H + 4 * I
    # a strip, the numbers on demand
    row = '.vec[data-key="ffn_pre"]'
    assert opened.page.locator(f"{row} canvas.strip").count() == 1
    assert opened.page.locator(f"{row} .n:visible").count() == 0
    opened.page.click(f"{row} button.all")
    assert opened.page.locator(f"{row} .n:visible").count() == I
    assert opened.page.get_attribute(f"{row} button.all", "aria-expanded") == "true"


def test_clicking_a_head_in_the_model_view_opens_it(opened, bank):
    page = opened.page
    page.click('#model-view canvas[data-layer="4"][data-head="7"]')
    assert state(page) == (4, 7, 2)
    assert page.locator("#step-scores h3").first.text_content().startswith("3.2 ")
    assert page.get_attribute("#head-view", "data-layer") == "4"
    assert page.get_attribute("#head-view", "data-heads") == "7"
    assert "current" in page.get_attribute('#model-view canvas[data-layer="4"][data-head="7"]', "class")
    # the head view draws the chosen token's lines with the opacity of layer 4, head 7's probabilities
    lines = page.eval_on_selector_all(
        "#head-view line.strong",
        "ls => ls.map(l => [+l.dataset.head, +l.dataset.k, +l.getAttribute('stroke-opacity')])",
    )
    P = bank.enc.trace["layers"][3]["probs"][0, 7, 2]
    assert sorted(k for _, k, _ in lines) == list(range(10)) and {j for j, _, _ in lines} == {7}
    for _, k, opacity in lines:
        assert abs(opacity - P[k]) <= PRINTED + 1e-9
    # and labels each key with that weight
    labels = page.eval_on_selector_all(
        "#head-view tspan.p", "ts => ts.map(t => [+t.dataset.k, +t.textContent])"
    )
    assert [k for k, _ in labels] == list(range(10))
    assert all(abs(p - P[k]) <= PRINTED + 1e-9 for k, p in labels)
    # the formula steps follow: layer 4, head 7
    q = page.eval_on_selector('.vec[data-key="q"]', "r => [r.dataset.layer, r.dataset.head, r.dataset.token]")
    assert q == ["4", "7", "2"]
    assert set(assert_rows_are_the_trace(page, bank)) == SHOWN
    assert opened.errors == []


def test_choosing_another_token_changes_the_numbers(opened, bank):
    page = opened.page
    before = page.eval_on_selector(
        '.vec[data-key="q"]', "r => [...r.querySelectorAll('.n')].map(n => n.textContent)"
    )
    page.select_option("#token", "5")
    assert state(page) == (2, 3, 5)
    row = page.eval_on_selector(
        '.vec[data-key="q"]', "r => [r.dataset.token, [...r.querySelectorAll('.n')].map(n => n.textContent)]"
    )
    assert row[0] == "5" and row[1] != before
    assert_rows_are_the_trace(page, bank)
    page.click('table.tokens tr[data-token="7"]')  # a token of the table
    assert state(page) == (2, 3, 7)
    assert page.eval_on_selector('.vec[data-key="ffn_act"]', "r => r.dataset.token") == "7"
    assert_rows_are_the_trace(page, bank)
    page.select_option("#layer", "6")
    settle(page)
    assert_rows_are_the_trace(page, bank)
    assert opened.errors == []


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def expected_stat(p: Page, s: dict) -> float:
    """A statistic the page computes, recomputed here in NumPy from the trace."""
    layer, token = _int(s["layer"]), _int(s["token"])
    hs = [h[0].astype(np.float64) for h in p.enc.hidden_states]
    if s["stat"] == "norm":
        return float(np.linalg.norm(hs[layer][token]))
    if s["stat"] == "cos_prev":
        return _cos(hs[layer][token], hs[layer - 1][token])
    if s["stat"] == "nearest":
        return _cos(hs[layer][token], hs[layer][_int(s["other"])])
    t = p.enc.trace["layers"][layer - 1]
    if s["stat"] in ("mean", "variance"):  # key "input": the layer's input (pre-LN's first norm)
        row = hs[layer - 1][token] if s["key"] == "input" else t[s["key"]][0, token].astype(np.float64)
        return float(row.mean() if s["stat"] == "mean" else row.var())
    if s["stat"] == "sum":
        return float(t["probs"][0, _int(s["head"]), token].astype(np.float64).sum())
    if s["stat"] == "min":
        return float(t["ffn_act"][0, token].min())
    gelu = t["ffn_output"][0, token].astype(np.float64)
    if s["stat"] == "cosine":
        return _cos(gelu, _relu_ffn(p, layer, token))
    assert s["stat"] == "maxdiff", s
    return float(np.abs(gelu - _relu_ffn(p, layer, token)).max())


def test_statistics_are_numpys(opened, bank):
    page = opened.page
    for token in ("2", "8"):
        page.select_option("#token", token)
        settle(page)
        stats = page.evaluate(STATS_JS)
        kinds = {s["stat"] for s in stats}
        assert kinds == {"norm", "cos_prev", "nearest", "mean", "variance", "sum", "min", "cosine", "maxdiff"}
        for s in stats:
            tol = (
                PRINTED + 1e-9 + (2e-5 if s["stat"] in ("cosine", "maxdiff") else 0)
            )  # float32 vs float64 FFN
            assert abs(float(s["text"]) - expected_stat(bank, s)) <= tol, s
        # the nearest tokens shown are the three nearest, nearest first
        hs = [h[0].astype(np.float64) for h in bank.enc.hidden_states]
        t = int(token)
        for i in range(len(hs)):
            shown = [_int(s["other"]) for s in stats if s["stat"] == "nearest" and _int(s["layer"]) == i]
            cos = [(_cos(hs[i][t], hs[i][u]), u) for u in range(10) if u != t]
            assert shown == [u for _, u in sorted(cos, reverse=True)[:3]], i


def test_check_errors_are_explains(opened, bank):
    page = opened.page
    shown = page.evaluate(CHECKS_JS)
    ours = explain(bank.model, TEXT, layer=2, head=3, token=2, pad=0).checks
    assert len(shown) == len(ours) and all(c["ok"] for c in shown)
    for c in ours:
        (dom,) = [s for s in shown if s["what"] == c.what]
        assert dom["layer"] in (None, "2")
        err = float(dom["err"])
        assert abs(err - c.error) <= 0.05 * c.error, (c.what, err, c.error)  # printed with 2 digits


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_errata_links(opened, bank):
    """The steps link to the errata the page carries; the errata name their source in
    the repository (docs/errata.md and a heading that exists there), never by a path of
    the machine that built the page (no file:// link: it leaks, and breaks when shared)."""
    page = opened.page
    targets = page.eval_on_selector_all(".erratum a", "as => as.map(a => a.getAttribute('href'))")
    assert len(targets) >= 6 and all(page.locator(t).count() == 1 for t in set(targets))
    assert {"#errata-gelu", "#errata-post-ln", "#errata-example"} <= set(targets)
    refs = page.eval_on_selector_all(
        "#errata .source .ref", "rs => rs.map(r => [r.dataset.file, r.dataset.anchor])"
    )
    errata = ROOT / "docs" / "errata.md"
    anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", errata.read_text(encoding="utf-8"), re.M)}
    assert refs and all(f == "docs/errata.md" and a in anchors for f, a in refs)
    hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith("#") for h in hrefs), hrefs
    html = bank.path.read_text(encoding="utf-8")
    assert "file:" not in html and str(ROOT) not in html
    assert page.locator("#errata table.article tr.wrong").count() >= 9  # check-article's verdicts


@pytest.mark.parametrize("family", ["tiny-distilbert", "tiny-electra", "tiny-bert"])
def test_tiny_models(browser, tmp_path, family):
    """No token-type table, an embedding projection, float64: drawn without error, numbers the trace's."""
    model = load(DATA / family, "float64" if family == "tiny-bert" else "float32")
    p = Page(model, "the cat sat", tmp_path / "tiny.html")
    o = open_page(browser, p.path)
    try:
        compared = assert_rows_are_the_trace(o.page, p)
        assert ("embeddings.token_type" in compared) == (family != "tiny-distilbert")
        assert ("embeddings.projection" in compared) == (family == "tiny-electra")
        assert o.errors == [] and len(o.requests) == 1
    finally:
        o.page.close()


def test_jupyter_iframe_draws(browser, tiny_model):
    """What Jupyter displays (Page._repr_html_): the page in an iframe, drawn."""
    page = browser.new_page()
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.set_content(view(tiny_model, "the cat sat")._repr_html_())
        frame = page.frame_locator("iframe")
        frame.locator(READY).wait_for(state="attached", timeout=30_000)
        assert frame.locator(".vec").count() > 20
        assert errors == [] and [r for r in requests if not r.startswith(("about:", "data:"))] == []
    finally:
        page.close()


def _header_bottom(page) -> float:
    return page.evaluate("document.getElementById('top').getBoundingClientRect().bottom")


def test_phone_no_overflow_every_section_reachable(browser, bank):
    """At 390 x 844 (a phone) the page is no wider than the screen (the head view, the model view
    and the tables scroll inside their own box), the header is one bar of controls, and every
    link of its menu brings its section's heading into view below the header."""
    o = open_page(browser, bank.path, 390, 844)
    page = o.page
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("innerWidth")
        assert _header_bottom(page) <= 130  # was 269: a third of the screen
        for box in ("#head-view", "#model-view"):
            inner = page.evaluate(f"document.querySelector('{box}').closest('.scroll').clientWidth")
            assert inner <= 390
        sections = page.eval_on_selector_all("nav a", "as => as.map(a => a.getAttribute('href'))")
        assert len(sections) == 5
        for target in sections:
            if not page.is_visible(f'nav a[href="{target}"]'):
                page.click("#menu summary")
            page.click(f'nav a[href="{target}"]')
            page.wait_for_timeout(100)
            top = page.evaluate(f"document.querySelector('{target} h2').getBoundingClientRect().top")
            assert _header_bottom(page) <= top < 844, (target, top)
        # the controls work at this size too
        page.select_option("#token", "5")
        assert state(page) == (2, 3, 5)
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("innerWidth")
        assert o.errors == []
    finally:
        page.close()


def test_keyboard(opened, bank):
    """Every control is reachable and works from the keyboard: the token table (arrows, Enter), the
    head view's queries and keys (Enter, arrows), the model view's thumbnails (arrows, Enter)."""
    page = opened.page
    clickable = page.evaluate(
        """() => [...document.querySelectorAll(`table.tokens tr[data-token], #head-view text.tok,
            #model-view canvas.thumb, table.keys th.key`)].filter(e => e.tabIndex !== 0).length"""
    )
    assert clickable == 0
    page.focus('table.tokens tr[data-token="2"]')
    page.keyboard.press("ArrowDown")
    assert state(page) == (2, 3, 3)
    assert page.evaluate("document.activeElement.dataset.token") == "3"  # the focus follows
    page.focus('table.tokens tr[data-token="6"]')
    page.keyboard.press("Enter")
    assert state(page) == (2, 3, 6)
    page.focus('#head-view text[data-side="k"][data-token="4"]')
    page.keyboard.press(" ")
    settle(page)
    assert page.input_value("#key") == "4"
    assert page.eval_on_selector('#neuron-view .vec[data-key="k"]', "r => r.dataset.token") == "4"
    page.focus('#model-view canvas[data-layer="1"][data-head="0"]')
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("[document.activeElement.dataset.layer, document.activeElement.dataset.head]") == [
        "2",
        "1",
    ]
    page.keyboard.press("Enter")
    assert state(page) == (2, 1, 6)
    page.focus('.vec[data-key="ffn_pre"] button.all')
    page.keyboard.press("Enter")
    assert page.locator('.vec[data-key="ffn_pre"] .n:visible').count() == bank.model.config.intermediate_size
    assert_rows_are_the_trace(page, bank)
    assert opened.errors == []


def test_hover_shows_a_tokens_lines(opened):
    page = opened.page
    page.hover('#head-view text[data-side="q"][data-token="5"]', position={"x": 4, "y": 8})
    assert set(page.eval_on_selector_all("#head-view line.strong", "ls => ls.map(l => l.dataset.q)")) == {"5"}
    page.hover('#head-view text[data-side="k"][data-token="7"]', position={"x": 4, "y": 8})  # on a glyph
    lines = page.eval_on_selector_all(
        "#head-view line.strong", "ls => ls.map(l => [l.dataset.q, l.dataset.k])"
    )
    assert {k for _, k in lines} == {"7"} and len(lines) == 10  # every query's line to key 7
    page.mouse.move(1, 1)
    assert set(page.eval_on_selector_all("#head-view line.strong", "ls => ls.map(l => l.dataset.q)")) == {"2"}
    assert state(page) == (2, 3, 2)  # hovering chooses nothing


def test_neuron_view(opened, bank):
    """q and k of the chosen query and key (the trace's, checked by the rows), their products summing
    to q.k: divided by sqrt(d) it is the score, to the rounding of the printed q and k."""
    page = opened.page
    page.click('table.keys th.key[data-key-token="5"]')
    settle(page)
    assert page.input_value("#key") == "5"
    rows = page.eval_on_selector_all(
        "#neuron-view .vec", "rs => rs.map(r => [r.dataset.key, r.dataset.token, r.dataset.start ?? null])"
    )
    assert rows == [["q", "2", None], ["k", "5", None], ["scores", "2", "5"], ["probs", "2", "5"]]
    t = bank.enc.trace["layers"][1]
    q, k = t["q"][0, 3, 2].astype(np.float64), t["k"][0, 3, 5].astype(np.float64)
    total = float(page.text_content("#neuron-view .dvec span:last-child").split("=")[1])
    # each printed q, k is within 0.5e-4 of the trace: their products' sum within this of q.k
    bound = 0.5e-4 * (np.abs(q).sum() + np.abs(k).sum()) + 32 * 0.25e-8 + PRINTED
    assert abs(total - q @ k) <= bound
    assert abs(q @ k / np.sqrt(32) - t["scores"][0, 3, 2, 5]) <= 1e-5
    assert page.locator("#neuron-view canvas.strip").count() == 3
    assert_rows_are_the_trace(page, bank)
    assert opened.errors == []


def test_softmax_step_shows_exp_and_the_denominator(opened, bank):
    page = opened.page
    P = bank.enc.trace["layers"][1]["probs"][0, 3, 2].astype(np.float64)
    s = bank.enc.trace["layers"][1]["scores"][0, 3, 2].astype(np.float64)
    e = np.exp(s - s.max())
    shown = page.eval_on_selector_all("#step-softmax tr.derived td", "ts => ts.map(t => +t.textContent)")
    np.testing.assert_allclose(shown, e, atol=2e-4)  # from the printed scores: exp(x +- 0.5e-4)
    text = page.text_content("#step-softmax")
    denominator = float(re.search(r"denominator Σ exp\(x − m\) = ([0-9.]+)", text)[1])
    assert abs(denominator - e.sum()) <= 1e-3 and abs(e / e.sum() - P).max() < 1e-6


PAIR = ("The cat sat on the mat.", "It was tired.")
FILTERS = {"all": "AB", "AA": "A", "AB": "A", "BA": "B", "BB": "B"}  # -> the sentences a query may be in


def _thumb_rows(page, layer: int, head: int, S: int) -> list[bool]:
    """For each query q, whether the model view's thumbnail draws any line from it: the
    largest alpha of the canvas pixels where its lines start (x = 6, rows around y(q))."""
    return page.evaluate(
        """([l, j, S]) => {
            const c = document.querySelector(`#model-view canvas[data-layer="${l}"][data-head="${j}"]`);
            const data = c.getContext("2d").getImageData(6, 0, 1, c.height).data;
            const y = (s) => 4 + ((c.height - 8) * (s + 0.5)) / S;
            return [...Array(S).keys()].map((q) => {
                const rows = [Math.floor(y(q)) - 1, Math.floor(y(q)), Math.floor(y(q)) + 1];
                return Math.max(...rows.map((r) => data[4 * r + 3])) > 0;
            });
        }""",
        [layer, head, S],
    )


def test_sentence_pair_filters(browser, real_model, tmp_path):
    """A pair's page (view(text, pair=...)): both segments in the summary, and bertviz's filter in the
    head view and the model view. Under A->B only A's queries have lines, each to B's keys alone, with
    the model's own probabilities; hovering a key shows only the filtered queries' lines; the model
    view's thumbnails draw a query's lines exactly when one of its allowed keys has a preview level."""
    p = Page(real_model, PAIR[0], tmp_path / "pair.html", pair=PAIR[1], layer=3, head=2, token=2)
    o = open_page(browser, p.path)
    page = o.page
    try:
        S = len(p.enc.tokens[0])
        b = p.enc.sequence_ids[0].index(1)
        sentence = ["A" if s < b else "B" for s in range(S)]
        assert page.text_content("#summary .text.pair") == PAIR[1]
        assert page.input_value("#filter-head") == page.input_value("#filter-model") == "all"
        assert set(assert_rows_are_the_trace(page, p)) == SHOWN  # the pair's numbers, not the text's alone
        P = p.enc.trace["layers"][2]["probs"][0, 2].astype(np.float64)  # (S, S) of layer 3, head 2
        preview = np.floor(np.stack([t["probs"][0] for t in p.enc.trace["layers"]]) * 15 + 0.5)
        for name, select in [("AB", "#filter-head"), ("BA", "#filter-model"), ("BB", "#filter-head"),
                             ("AA", "#filter-model"), ("all", "#filter-head")]:  # fmt: skip
            page.select_option(select, name)
            settle(page)
            assert page.input_value("#filter-head") == page.input_value("#filter-model") == name
            keys = "AB" if name == "all" else name[1]
            for query in (2, b + 1):  # a query of A, then one of B
                page.select_option("#token", str(query))
                settle(page)
                lines = page.eval_on_selector_all(
                    "#head-view line.strong",
                    "ls => ls.map(l => [+l.dataset.q, +l.dataset.k, +l.getAttribute('stroke-opacity')])",
                )
                if sentence[query] not in FILTERS[name]:
                    assert lines == [], (name, query)
                    continue
                assert sorted(k for _, k, _ in lines) == [k for k in range(S) if sentence[k] in keys]
                for q, k, opacity in lines:
                    assert q == query and abs(opacity - P[query, k]) <= PRINTED + 1e-9
            out = page.eval_on_selector_all(
                "#head-view text.tok.out", "ts => ts.map(t => [t.dataset.side, +t.dataset.token])"
            )
            dimmed = set() if name == "all" else {("q", s) for s in range(S) if sentence[s] != name[0]}
            dimmed |= set() if name == "all" else {("k", s) for s in range(S) if sentence[s] != name[1]}
            assert set(map(tuple, out)) == dimmed
            # hovering a key of B: every drawn line ends there and starts at a query the filter allows
            page.hover(f'#head-view text[data-side="k"][data-token="{b}"]', position={"x": 4, "y": 8})
            lines = page.eval_on_selector_all(
                "#head-view line.strong", "ls => ls.map(l => [+l.dataset.q, +l.dataset.k])"
            )
            allowed = [q for q in range(S) if sentence[q] in FILTERS[name]] if "B" in keys else []
            assert sorted(q for q, _ in lines) == allowed and {k for _, k in lines} <= {b}, name
            page.mouse.move(1, 1)
            for layer, head in ((1, 0), (5, 7)):
                drawn = _thumb_rows(page, layer, head, S)
                want = [
                    sentence[q] in FILTERS[name]
                    and any(preview[layer - 1, head, q, k] > 0 for k in range(S) if sentence[k] in keys)
                    for q in range(S)
                ]
                assert drawn == want, (name, layer, head)
        assert o.errors == []
    finally:
        page.close()


def test_a_single_texts_page_has_no_pair_filter(opened):
    assert opened.page.locator(".pair-filter").count() == 0
    assert opened.page.locator("#head-view text.tok.out").count() == 0


def test_strips_of_a_card_line_up(opened):
    """In every card the colour strips start and end at the same x, whatever the label or the last
    column ("384 numbers", "1536 numbers", "Σ = ..."): the FFN card's rows under the plot (ReLU
    instead) and the neuron view's q ⊙ k ended 8 and 13 px off the rows above them."""
    page = opened.page
    for layer in ("6", "1"):
        page.select_option("#layer", layer)
        settle(page)
        cards = page.evaluate(
            """() => [...document.querySelectorAll('article.step, #neuron-view, #embeddings')].map(c => [
                c.id, [...c.querySelectorAll('canvas.strip')].filter(s => !s.closest('.wrow'))
                    .map(s => { const r = s.getBoundingClientRect(); return [r.left, r.right]; })])"""
        )
        ffn = dict(cards)["step-ffn"]
        assert len(ffn) == 5, ffn  # pre, GELU, ReLU, FFN with GELU, FFN with ReLU
        for name, edges in cards:
            if len(edges) < 2:
                continue
            lefts, rights = {round(a) for a, _ in edges}, {round(b) for _, b in edges}
            assert max(lefts) - min(lefts) <= 1 and max(rights) - min(rights) <= 1, (name, edges)


#: What each family's page prints beyond BERT's (trace names), in the layers opened below.
FAMILY_SHOWN = {
    "tiny-modernbert": {"q_unrotated", "k_unrotated", "cos", "sin", "attention_input", "ffn_gate",
                        "ffn_activated"},
    "tiny-nomic-bert": {"q_unrotated", "k_unrotated", "cos", "sin", "ffn_gate", "ffn_activated"},
    "tiny-mpnet": {"bias", "masked_scores"},
    "tiny-deberta-v3": {"c2p", "p2c", "bias", "masked_scores"},
}  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILY_SHOWN))
def test_family_pages(browser, tmp_path, family):
    """ModernBERT, NomicBERT, MPNet, DeBERTa-v3, every layer: drawn without error, every
    printed number and statistic the trace's (the family's own steps too: the rotation
    and its angle table, the window, the gate, the pre-LN norms, the final norm; the
    bias, c2p and p2c), every check explain's and passing; on a local layer the query's
    probabilities are 0 outside its window, and the page says which keys it sees."""
    model = load(DATA / family)
    text, pair = "How old are you?", "I am six years old."
    p = Page(model, text, tmp_path / "family.html", pair=pair, layer=1, head=1, token=9)
    o = open_page(browser, p.path)
    try:
        compared: set[str] = set()
        for layer in range(1, model.num_layers + 1):
            o.page.select_option("#layer", str(layer))
            settle(o.page)
            compared |= set(assert_rows_are_the_trace(o.page, p))
            for s in o.page.evaluate(STATS_JS):
                tol = PRINTED + 1e-9 + (2e-5 if s["stat"] in ("cosine", "maxdiff") else 0)
                assert abs(float(s["text"]) - expected_stat(p, s)) <= tol, s
            shown = o.page.evaluate(CHECKS_JS)
            ours = explain(model, text, layer=layer, head=1, token=9, pad=0, pair=pair).checks
            assert len(shown) == len(ours) and all(c["ok"] for c in shown)
            assert not o.page.locator("#steps h3", has_text="Other checks").count()
            if model.config.layer_types and model.config.layer_types[layer - 1] == "sliding_attention":
                w = model.config.local_attention // 2
                note = o.page.text_content("#step-mask .note")
                assert f"sees keys {9 - w}..{9 + w}." in note
                P = p.enc.trace["layers"][layer - 1]["probs"][0, 1, 9]
                assert np.all(P[np.abs(np.arange(len(P)) - 9) > w] == 0)
        assert FAMILY_SHOWN[family] <= compared, FAMILY_SHOWN[family] - compared
        if family == "tiny-modernbert":  # the last layer's output is after the final norm
            assert o.page.locator("#step-ln_2 h3", has_text="final LayerNorm").count() == 1
        assert o.errors == [] and len(o.requests) == 1
    finally:
        o.page.close()
