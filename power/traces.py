"""Programmable power traces that drive the emulator: what the emulated device draws over time.

`power_w(t)` takes seconds since the emulator started. Specs for the command line:
  constant:2.0                  2.0 W throughout
  steps:0=2.0,5=3.5,10=2.0      piecewise constant: from t=0 s 2.0 W, from 5 s 3.5 W, ...
  file:trace.csv                rows `t_s,power_w` (a header row is allowed), linear in between,
                                the last value held after the end
  cpu                           idle_w + (active_w - idle_w) * CPU utilisation of the machine
                                (0..1 over all cores), or of one process with --follow-pid
"""

from __future__ import annotations

import bisect
import csv
import os
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import require_file


class PowerTrace:
    def power_w(self, t: float) -> float:
        raise NotImplementedError

    describe = "trace"


class ConstantTrace(PowerTrace):
    def __init__(self, watts: float):
        self.watts = float(watts)
        self.describe = f"constant {self.watts:g} W"

    def power_w(self, t: float) -> float:
        return self.watts


class StepTrace(PowerTrace):
    def __init__(self, steps: Sequence[Tuple[float, float]]):
        if not steps:
            raise EdgeError("a step trace needs at least one step", "e.g. steps:0=2.0,5=3.5,10=2.0")
        self.steps = sorted((float(t), float(w)) for t, w in steps)
        self._times = [t for t, _ in self.steps]
        self.describe = "steps " + ", ".join(f"{w:g} W from {t:g} s" for t, w in self.steps)

    def power_w(self, t: float) -> float:
        index = bisect.bisect_right(self._times, t) - 1
        return self.steps[max(index, 0)][1]


class FileTrace(PowerTrace):
    def __init__(self, path: str):
        points: List[Tuple[float, float]] = []
        try:
            with open(path, newline="") as f:
                for row in csv.reader(f):
                    if not row or row[0].lstrip().startswith("#"):
                        continue
                    try:
                        points.append((float(row[0]), float(row[1])))
                    except (ValueError, IndexError):
                        if points:  # only the first row may be a header
                            raise EdgeError(f"bad row in trace file {path}: {row}",
                                            "each row is t_s,power_w") from None
        except OSError as exc:
            raise EdgeError(f"cannot read trace file {path}: {exc.strerror}",
                            "give a CSV file of t_s,power_w rows") from None
        if not points:
            raise EdgeError(f"trace file {path} has no rows", "each row is t_s,power_w")
        points.sort()
        self._times = [t for t, _ in points]
        self._watts = [w for _, w in points]
        self.describe = f"file {path} ({len(points)} points)"

    def power_w(self, t: float) -> float:
        index = bisect.bisect_right(self._times, t)
        if index == 0:
            return self._watts[0]
        if index == len(self._times):
            return self._watts[-1]
        t0, t1 = self._times[index - 1], self._times[index]
        w0, w1 = self._watts[index - 1], self._watts[index]
        return w0 + (w1 - w0) * (t - t0) / (t1 - t0)


class LevelTrace(PowerTrace):
    """A level that code sets while the emulator runs (tests switch it at the inference window)."""

    def __init__(self, watts: float):
        self._watts = float(watts)
        self.describe = "level set by the caller"

    def set(self, watts: float) -> None:
        self._watts = float(watts)  # one float store: atomic under the GIL

    def power_w(self, t: float) -> float:
        return self._watts


class CpuLoadTrace(PowerTrace):
    """Power that follows CPU load, read from /proc (psutil when there is no /proc)."""

    # Shorter intervals than this give jumpy figures: /proc counts in 10 ms ticks.
    MIN_INTERVAL_S = 0.05

    def __init__(self, idle_w: float, active_w: float, pid: Optional[int] = None,
                 busy_seconds: Optional[Callable[[], float]] = None, target: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic):
        """Follows the machine's load, process `pid`'s, or `busy_seconds()` (CPU-seconds used so far by
        whatever the caller measures, e.g. a process tree), described as `target`. `clock` times a
        process's share (tests give their own, with `busy_seconds`, so load cannot move the figures)."""
        self.idle_w, self.active_w, self.pid = float(idle_w), float(active_w), pid
        self._clock = clock
        if busy_seconds is None and pid:
            busy_seconds = lambda: self._process_cpu_seconds(pid)  # noqa: E731
        self._busy_seconds = busy_seconds
        self._cores = os.cpu_count() or 1
        self._lock = threading.Lock()
        self._last = self._read_counters()
        self._utilisation = 0.0
        target = target or (f"process {pid}" if pid else "this machine")
        self.describe = f"CPU load of {target}: {self.idle_w:g} W idle .. {self.active_w:g} W all cores busy"

    def _read_counters(self) -> Tuple[float, float]:
        """(busy CPU-seconds, elapsed seconds x cores) so far."""
        if self._busy_seconds is not None:
            return self._busy_seconds(), self._clock() * self._cores
        return self._machine_cpu_seconds()

    @staticmethod
    def _process_cpu_seconds(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except FileNotFoundError:
            if os.path.isdir("/proc"):
                raise EdgeError(f"process {pid} does not exist", "give the pid of a running process") from None
        try:
            import psutil  # optional: only where there is no /proc
            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
        except ImportError:
            raise EdgeError("following CPU load needs /proc or psutil", "pip install psutil") from None
        except Exception as exc:
            raise EdgeError(f"cannot read CPU time of process {pid}: {exc}", "check the pid") from None

    @staticmethod
    def _machine_cpu_seconds() -> Tuple[float, float]:
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            total = sum(ticks[:8])  # guest time is already inside user time
            hz = os.sysconf("SC_CLK_TCK")
            return (total - idle) / hz, total / hz
        except FileNotFoundError:
            pass
        try:
            import psutil  # deferred: optional fallback where /proc/stat is missing
            times = psutil.cpu_times()
            total = sum(times)
            return total - times.idle, total
        except ImportError:
            raise EdgeError("following CPU load needs /proc or psutil", "pip install psutil") from None

    def utilisation(self) -> float:
        with self._lock:
            busy, elapsed = self._read_counters()
            if elapsed - self._last[1] >= self.MIN_INTERVAL_S * self._cores:  # both in core-seconds
                delta = elapsed - self._last[1]
                self._utilisation = min(1.0, max(0.0, (busy - self._last[0]) / delta))
                self._last = (busy, elapsed)
            return self._utilisation

    def power_w(self, t: float) -> float:
        return self.idle_w + (self.active_w - self.idle_w) * self.utilisation()


def _non_negative(value: float) -> float:
    """A trace's powers and times are finite and not negative; anything else is a ValueError."""
    if not 0 <= value < float("inf"):  # nan fails too
        raise ValueError(value)
    return value


def parse_trace(spec: str, *, idle_w: float = 2.0, active_w: float = 3.5,
                follow_pid: Optional[int] = None) -> PowerTrace:
    kind, _, arg = spec.partition(":")
    try:
        if kind == "constant":
            return ConstantTrace(_non_negative(float(arg) if arg else idle_w))
        if kind == "steps":
            steps = []
            for item in arg.split(","):
                t, _, w = item.partition("=")
                steps.append((_non_negative(float(t)), _non_negative(float(w))))
            return StepTrace(steps)
    except ValueError:
        raise EdgeError(f"bad trace {spec!r}",
                        "e.g. constant:2.0, steps:0=2.0,5=3.5,10=2.0, file:trace.csv or cpu") from None
    if kind == "file" and arg:
        require_file(arg, "trace", "--trace file:", "pass a CSV of time,watts rows")
        return FileTrace(arg)
    if kind == "cpu" and not arg:
        return CpuLoadTrace(idle_w, active_w, pid=follow_pid)
    raise EdgeError(f"unknown trace {spec!r}",
                    "use constant:W, steps:T=W,T=W,..., file:PATH.csv or cpu (with --follow-pid PID)")
