"""Conversion stages on stderr with their timings; the timings also go into the reports.

On a terminal the running stage shows a ticking clock; in a log (make, CI) each stage prints a
start line and an end line, so a killed run shows where it was. Writes go to a duplicate of the
stderr descriptor, because the converter redirects descriptor 2 while TF's C++ code runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Optional

TICK_SECONDS = 1.0


class StageLog:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream if stream is not None else (_private_stderr() if enabled else None)
        self.tty = bool(enabled and getattr(self.stream, "isatty", lambda: False)())
        self.timings: list = []  # {"model", "stage", "detail", "seconds"}
        self._lock = threading.Lock()

    def note(self, model: str, message: str) -> None:
        self._write(f"[{model}] {message}\n")

    @contextlib.contextmanager
    def stage(self, model: str, stage: str, detail: str = ""):
        title = f"[{model}] {stage}{' ' + detail if detail else ''}"
        start = time.perf_counter()
        stop = threading.Event()
        ticker = None
        if self.tty:
            ticker = threading.Thread(target=self._tick, args=(title, start, stop), daemon=True)
            ticker.start()
        else:
            self._write(f"{title} ...\n")
        outcome = "failed after "
        try:
            yield
            outcome = ""
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            if ticker:
                ticker.join()
            self.timings.append({"model": model, "stage": stage, "detail": detail, "seconds": round(seconds, 2)})
            end = f"{title} {outcome}{seconds:.1f} s"
            self._write(f"\r{end}\033[K\n" if self.tty else f"{end}\n")

    def seconds(self, model: str, stage: str, detail: Optional[str] = None) -> float:
        return round(sum(t["seconds"] for t in self.timings if t["model"] == model and t["stage"] == stage
                         and (detail is None or t["detail"] == detail)), 2)

    def _tick(self, title: str, start: float, stop: threading.Event) -> None:
        while True:
            self._write(f"\r{title} ... {time.perf_counter() - start:.0f} s\033[K")
            if stop.wait(TICK_SECONDS):
                return

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.stream.write(text)
            self.stream.flush()


def _private_stderr():
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        return sys.stderr
