"""A small progress bar on stderr for long work (compressing a model layer by layer).

On a terminal the bar redraws one line in place; elsewhere (a log file, CI) it prints a line at
every tenth of the work and at the end, so logs stay short. Messages meant to be kept go
through `logging` instead; the bar only shows how far the work is.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24
# Off a terminal, a line every this share of the work.
LOG_EVERY = 0.1


class ProgressBar:
    """``bar = ProgressBar(total, "compress")``; ``bar.step(label)`` after each item; ``bar.close()``
    (or use it as a context manager). ``enabled=False`` draws nothing."""

    def __init__(self, total: int, title: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total must be an int >= 0, got {total!r}")
        self.total = total
        self.title = title
        self.enabled = enabled and total > 0
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = time.perf_counter()
        self._logged = -1
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def step(self, label: str = "") -> None:
        """One more item done; ``label`` names it (a layer name, say)."""
        self.done = min(self.done + 1, self.total)
        if not self.enabled:
            return
        if self._interactive:
            self.stream.write("\r" + self.line(label) + "\x1b[K")
            self.stream.flush()
            return
        tenth = int(self.done / self.total / LOG_EVERY)
        if tenth != self._logged or self.done == self.total:
            self._logged = tenth
            self.stream.write(self.line(label) + "\n")
            self.stream.flush()

    def line(self, label: str = "") -> str:
        """The bar as text: title, bar, count, seconds so far, label."""
        filled = WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (WIDTH - filled)
        seconds = time.perf_counter() - self.start
        return f"{self.title} [{bar}] {self.done}/{self.total} {seconds:.1f}s {label}".rstrip()

    def close(self) -> None:
        if self.enabled and self._interactive:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
