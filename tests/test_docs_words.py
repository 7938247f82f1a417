"""docs/words-and-long-texts.md cannot rot: its examples run as doctests, and
its tables are regenerated here from minibert.features.windows and compared.

To refresh the generated sections after a change:

    PYTHONPATH=. python tests/test_docs_words.py
"""

from __future__ import annotations

import doctest
import re
import sys
from pathlib import Path

import numpy as np

from minibert.features.windows import choose_windows, window_starts

DOC = Path(__file__).resolve().parents[1] / "docs" / "words-and-long-texts.md"
SECTION = re.compile(
    r"<!-- generated: (?P<name>[\w-]+) (?P<args>[^>]*?) -->\n(?P<body>.*?)<!-- /generated -->", re.S
)
SPECIALS = 2  # [CLS] ... [SEP]


def _plan(n: int, window: int, stride: int):
    L = window - SPECIALS
    starts = window_starts(n, L, stride)
    return L, starts, choose_windows(n, starts, min(L, n))


def window_picture(n: int, window: int, stride: int) -> str:
    """One line per window: '#' for the tokens it supplies, '.' for context only."""
    L, starts, chosen = _plan(n, window, stride)
    ticks = [" "] * (n + 3)
    for k in range(0, n, 5):
        ticks[k : k + len(str(k))] = str(k)
    lines = ["token      " + "".join(ticks).rstrip()]
    for w, s in enumerate(starts):
        row = "".join("#" if chosen[j] == w else "." for j in range(s, s + L))
        lines.append(f"window {w:<3} " + " " * s + row)
    return "```text\n" + "\n".join(lines) + "\n```\n"


def window_table(n: int, window: int, stride: int) -> str:
    L, starts, chosen = _plan(n, window, stride)
    rows = ["| window | starts at | reads tokens | supplies tokens | count |", "|---|---|---|---|---|"]
    for w, s in enumerate(starts):
        mine = np.flatnonzero(chosen == w)
        rows.append(f"| {w} | {s} | {s}–{s + L - 1} | {mine[0]}–{mine[-1]} | {len(mine)} |")
    return "\n".join(rows) + "\n"


def window_cost(window: int, strides: str, sizes=(512, 1000, 1500, 5000, 20000)) -> str:
    strides = [int(s) for s in strides.split(",")]
    head = "| tokens N |" + "".join(f" windows (stride {s}) | tokens run | × N |" for s in strides)
    rows = [head, "|---|" + "---|---|---|" * len(strides)]
    for N in sizes:
        cells = [f"{N:,}"]
        for s in strides:
            k = 1 if N <= window else len(window_starts(N - SPECIALS, window - SPECIALS, s))
            run = N if k == 1 else k * window
            cells += [f"{k}", f"{run:,}", f"{run / N:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


RENDER = {"window-picture": window_picture, "window-table": window_table, "window-cost": window_cost}


def render(m: re.Match) -> str:
    kwargs = dict(a.split("=") for a in m["args"].split())
    kwargs = {k: (v if "," in v else int(v)) for k, v in kwargs.items()}
    return RENDER[m["name"]](**kwargs)


def test_generated_sections_match_the_code():
    text = DOC.read_text(encoding="utf-8")
    sections = list(SECTION.finditer(text))
    assert {m["name"] for m in sections} == set(RENDER)
    for m in sections:
        want = render(m)
        assert m["body"] == want, f"{m['name']} is stale; run: python tests/test_docs_words.py\n{want}"


def test_the_window_example_reads_as_the_prose_says():
    # "Every token lies in one or more windows ... every window is full"; each window supplies one run
    for n, window, stride in [(20, 10, 4), (1498, 512, 255), (1000, 130, 1)]:
        L, starts, chosen = _plan(n, window, stride)
        assert starts[-1] + L == n
        assert (np.diff(chosen) >= 0).all() and set(chosen.tolist()) == set(range(len(starts)))
        # at least (L - stride) / 2 context on both sides, except near the text's own ends
        j = np.arange(n)
        context = np.minimum(j - starts[chosen], starts[chosen] + L - 1 - j)
        inner = (j >= (L - stride) // 2) & (j < n - (L - stride) // 2)
        assert (context[inner] >= (L - stride) // 2).all()


def test_examples_run(real_model_dir):
    result = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 10 and result.failed == 0, f"{result.failed} doc examples failed (see stdout)"


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    new = SECTION.sub(lambda m: m[0].replace(m["body"], render(m)), text)
    DOC.write_text(new, encoding="utf-8")
    print(f"{DOC}: {'updated' if new != text else 'already up to date'}", file=sys.stderr)
