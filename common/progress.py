"""A small stderr progress bar: only on a tty, only once a job has run a couple of seconds."""

from __future__ import annotations

import sys
import time
from typing import Optional

SHOW_AFTER_SECONDS = 2.0
REDRAW_SECONDS = 0.1


class Progress:
    def __init__(self, label: str, total: Optional[int] = None, seconds: Optional[float] = None,
                 enabled: Optional[bool] = None, stream=None):
        """Progress counts items toward `total` and/or time toward `seconds`, whichever ends later."""
        self.stream = stream or sys.stderr
        self.label = label
        self.total = total
        self.seconds = seconds
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.count = 0
        self._last_draw = 0.0
        self._drawn = False

    def update(self, count: int = 1) -> None:
        self.count += count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < SHOW_AFTER_SECONDS or now - self._last_draw < REDRAW_SECONDS:
            return
        self._last_draw = now
        self._draw(now - self.start)

    def _fraction(self, elapsed: float) -> Optional[float]:
        parts = []
        if self.total:
            parts.append(self.count / self.total)
        if self.seconds:
            parts.append(elapsed / self.seconds)
        return min(1.0, min(parts)) if parts else None

    def _draw(self, elapsed: float) -> None:
        fraction = self._fraction(elapsed)
        counter = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        if fraction is None:
            line = f"\r{self.label} {counter} {elapsed:.1f}s"
        else:
            filled = int(fraction * 30)
            line = f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {counter} {elapsed:.1f}s"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
