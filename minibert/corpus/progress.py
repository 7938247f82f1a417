"""A one-line progress bar on stderr: texts done, texts/s, ETA.

Silent unless stderr is a terminal (and not ``--quiet``), so logs and pipes
stay clean. The total may be unknown (stdin cannot be counted before it is
read): then the bar shows texts done and the rate, without an ETA. Texts
skipped by a resumed run count as done but not into the rate.
"""

from __future__ import annotations

import math
import sys
import time


class Progress:
    #: Seconds between redraws: a fast run does not spend its time drawing.
    INTERVAL = 0.2

    def __init__(self, total: int | None, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.done = 0
        self.skipped = 0
        self.start = time.perf_counter()
        self._drawn = -math.inf

    def skip(self, n: int) -> None:
        """``n`` texts were already done (by the run being resumed)."""
        self.done += n
        self.skipped += n
        self._draw()

    def update(self, n: int) -> None:
        self.done += n
        self._draw()

    def rate(self) -> float:
        """Texts per second computed by this run."""
        elapsed = time.perf_counter() - self.start
        return (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        if self.total is None:
            return f"{self.done:,} texts  {rate:,.1f} texts/s"
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:,.0f}s" if rate > 0 else "?"
        width = 24
        filled = min(width, int(width * self.done / max(self.total, 1)))
        bar = "#" * filled + "-" * (width - filled)
        return f"[{bar}] {self.done:,}/{self.total:,} texts  {rate:,.1f} texts/s  ETA {eta}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._drawn < self.INTERVAL:
            return
        self._drawn = now
        self.stream.write(f"\r{self.line()} ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
