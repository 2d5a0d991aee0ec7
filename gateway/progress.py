"""A one-line progress display on stderr for long CLI work (silent when not a terminal)."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class Progress:
    """`with Progress("rebuild", "events") as p: p.update(done, total)`."""

    def __init__(self, label: str, unit: str, min_interval: float = 0.2) -> None:
        self.label = label
        self.unit = unit
        self.min_interval = min_interval
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False
        self.enabled = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        """Show `done` of `total`, at most every `min_interval` seconds."""
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.min_interval and done < total):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        pct = 100 * done / total if total else 100.0
        width = 30
        filled = int(width * min(done, total) / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(
            f"\r{self.label} [{bar}] {pct:5.1f}% {done:,}/{total:,} {self.unit} ({rate:,.0f}/s)"
        )
        sys.stderr.flush()
        self._shown = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
