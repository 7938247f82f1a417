"""Headless Chromium for the page of ``minibert view``: the browser tests and
the docs screenshots (docs/screenshots.py) open pages the same way.

The browser is the system's Chromium (Debian's ``chromium`` package, which
.ci/run installs), driven by Playwright for Python (the ``[browser]`` extra),
never a browser Playwright downloads. ``MINIBERT_CHROMIUM`` names another
executable.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: No GPU, no sandbox (CI runs as root), and none of Chromium's own background requests.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY = "body[data-ready]"  # set by view.js once everything is drawn
IDLE = "body:not([data-busy])"  # view.js sets data-busy while a change is being drawn


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return os.environ.get("MINIBERT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why the browser cannot run here (to skip with), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[browser]' (make test installs it)"
    if chromium() is None:
        return "Chromium is not installed: apt-get install chromium (.ci/run installs it)"
    return None


def launch(playwright):
    """A headless Chromium of the system, started by ``playwright``."""
    return playwright.chromium.launch(executable_path=chromium(), args=ARGS, headless=True)


@dataclass
class Opened:
    """A page opened in the browser, with everything it said and asked for."""

    page: object
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL requested, the page's own included


def open_page(browser, path: Path, width: int = 1200, height: int = 900) -> Opened:
    """Open the HTML file ``path`` from a file:// URL and wait until it is drawn."""
    page = browser.new_page(viewport={"width": width, "height": height})
    opened = Opened(page)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: opened.errors.append(str(e)))
    page.on("request", lambda r: opened.requests.append(r.url))
    page.goto(Path(path).resolve().as_uri())
    page.wait_for_selector(READY, state="attached", timeout=30_000)
    return opened


def settle(page) -> None:
    """Wait until the page has drawn every change asked of it (a new layer is
    decoded first, so a click redraws asynchronously)."""
    page.wait_for_selector(IDLE, state="attached", timeout=30_000)
