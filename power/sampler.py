"""Background sampler: reads a meter in its own thread and streams every sample to CSV.

Each sample carries the host's monotonic clock at receipt (and the driver's estimate of when it
was measured), so it can be lined up with the inference window the runtime marks with the same
clock. Garbage is skipped by the driver (which resynchronises and counts it); timeouts and silence
are survived; a lost port (unplugged, Bluetooth dropped) is reopened every `reconnect_interval_s`
until it comes back. Each CSV row is flushed as it is written, so an interrupt loses nothing.

CSV columns: t_receipt_s, t_s (both host monotonic seconds), power_w, voltage_v, current_a,
device_time_s (empty when the meter has none), resolution_w, repeat (true when the meter had not
refreshed since the previous row: the same reading again), energy_wh (the meter's own energy
counter, empty without one), emulated (true/false on every row).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import check_output_file

from .emulated_ports import emulated_port_info
from .meter import MeterDisconnected, Sample, create_meter

CSV_COLUMNS = ("t_receipt_s", "t_s", "power_w", "voltage_v", "current_a", "device_time_s",
               "resolution_w", "repeat", "energy_wh", "emulated")


@dataclass
class SamplerEvent:
    t: float  # host monotonic seconds
    kind: str  # open | mark | disconnect | reconnect | silent | resumed | error | stop
    detail: str = ""

    def as_dict(self) -> dict:
        return {"t": round(self.t, 6), "kind": self.kind, "detail": self.detail}


@dataclass
class SamplerSummary:
    meter: str
    model: str
    port: str
    emulated: bool
    emulator: Optional[dict]
    samples: int
    garbage_frames: int
    garbage_bytes: int
    timeouts: int
    disconnects: int
    reconnects: int
    started_at: float
    stopped_at: float
    csv_path: Optional[str]
    events: List[SamplerEvent] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def rate_hz(self) -> float:
        span = self.stopped_at - self.started_at
        return self.samples / span if span > 0 else 0.0

    def as_dict(self) -> dict:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "events"}
        data["events"] = [e.as_dict() for e in self.events]
        data["rate_hz"] = round(self.rate_hz, 3)
        return data


def _csv_number(value: Optional[float], digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


class Sampler:
    def __init__(self, meter: str, port: str, *, csv_path: Optional[str] = None,
                 meter_options: Optional[dict] = None, probe_timeout_s: float = 3.0,
                 reconnect_interval_s: float = 0.5, silence_timeout_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 warn: Optional[Callable[[str], None]] = None):
        self.meter = meter
        self.port = port
        self.clock = clock
        self.sleep = sleep
        self.driver = create_meter(meter, port, clock=clock, sleep=sleep, **(meter_options or {}))
        self.csv_path = str(csv_path) if csv_path else None
        self.probe_timeout_s = probe_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        # Silence longer than ~10 expected readings (at least 2 s) is worth a warning.
        self.silence_timeout_s = silence_timeout_s or max(2.0, 10.0 / self.driver.nominal_rate_hz)
        self._warn_callback = warn
        self.warnings: List[str] = []
        self.events: List[SamplerEvent] = []
        self.emulated = False
        self.emulator_info: Optional[dict] = None
        self.disconnects = 0
        self.reconnects = 0
        self.error: Optional[str] = None
        self._samples: List[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._csv = None
        self._silent = False
        self._last_sample_at = 0.0
        self._next_reopen_at = 0.0
        self._started_at = 0.0
        self._identity: Optional[tuple] = None

    # -- public --------------------------------------------------------------------------------
    def start(self) -> "Sampler":
        """Open the meter and wait for its first reading (EdgeError if that fails), then sample.

        Sampling runs in a background thread, or on a virtual clock (emulator.VirtualClock)
        whenever something sleeps on that clock.
        """
        if self.csv_path:  # before the meter opens: a run must not find out at its end
            check_output_file(self.csv_path, "the samples CSV")
        self._identity = self._port_identity()
        self.driver.open()
        first = self.driver.probe(self.probe_timeout_s)
        self._note_emulated()
        self._started_at = self.clock()
        self.events.append(SamplerEvent(self._started_at, "open", self.driver.describe()))
        try:
            self._open_csv()
        except EdgeError:
            self.driver.close()
            raise
        self._store(first)
        if hasattr(self.clock, "run_in_background"):
            self.clock.run_in_background(self._step)
        else:
            self._thread = threading.Thread(target=self._run, name="edge-power-sampler", daemon=True)
            self._thread.start()
        return self

    def mark(self, label: str) -> float:
        t = self.clock()
        self.events.append(SamplerEvent(t, "mark", label))
        return t

    @property
    def connected(self) -> bool:
        return self.driver.is_open and not self._silent

    @property
    def samples(self) -> List[Sample]:
        with self._lock:
            return list(self._samples)

    def stop(self) -> SamplerSummary:
        self._stop.set()
        if hasattr(self.clock, "stop_background"):
            self.clock.stop_background(self._step)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._thread is None or not self._thread.is_alive():  # never two readers on one port
            late = self.driver.drain_samples()
            if late:
                self._store(late)
        stopped_at = self.clock()
        self.events.append(SamplerEvent(stopped_at, "stop"))
        self.driver.close()
        self._close_csv()
        counters = self.driver.counters
        return SamplerSummary(
            meter=self.meter, model=self.driver.model, port=self.port, emulated=self.emulated,
            emulator=self.emulator_info, samples=len(self._samples),
            garbage_frames=counters.garbage_frames, garbage_bytes=counters.garbage_bytes,
            timeouts=counters.timeouts, disconnects=self.disconnects, reconnects=self.reconnects,
            started_at=self._started_at, stopped_at=stopped_at, csv_path=self.csv_path,
            events=list(self.events), warnings=list(self.warnings), error=self.error)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as exc:  # the benchmark must finish whatever happens to the meter
            self.error = f"{type(exc).__name__}: {exc}"
            self.events.append(SamplerEvent(self.clock(), "error", self.error))
            self._warn(f"power sampler stopped: {self.error}; the samples so far are kept")
            self.driver.close()

    def _step(self) -> None:
        if not self.driver.is_open:
            self._try_reopen()
            return
        try:
            samples = self.driver.read_samples()
        except MeterDisconnected as exc:
            self._lost(str(exc))
            return
        now = self.clock()
        if samples:
            self._store(samples)
            if self._silent:
                self._silent = False
                self.events.append(SamplerEvent(now, "resumed"))
        elif not self._silent and now - self._last_sample_at > self.silence_timeout_s:
            self._silent = True
            self.events.append(SamplerEvent(now, "silent"))
            self._warn(f"meter at {self.port} silent for {now - self._last_sample_at:.1f} s; "
                       f"still polling")

    def _lost(self, detail: str) -> None:
        now = self.clock()
        self.disconnects += 1
        self.events.append(SamplerEvent(now, "disconnect", detail))
        self._warn(f"meter lost ({detail}) after {now - self._started_at:.1f} s; "
                   f"{len(self._samples)} samples kept; reopening the port")
        self.driver.close()
        self._next_reopen_at = now

    def _port_identity(self) -> Optional[tuple]:
        """Which emulator serves the port (pid, start time, instance), or None for anything else."""
        info = emulated_port_info(self.port)
        return None if info is None else (info["pid"], info.get("pid_start_time"), info.get("instance"))

    def _try_reopen(self) -> None:
        now = self.clock()
        if now < self._next_reopen_at:
            self.sleep(min(0.05, self._next_reopen_at - now))
            return
        self._next_reopen_at = now + self.reconnect_interval_s
        # A lost pty's number is soon reused (another emulator, someone's terminal): never open
        # a path that now leads to something other than what we first opened.
        if self._port_identity() != self._identity:
            return
        try:
            self.driver.open()
        except EdgeError:
            return
        self.reconnects += 1
        self._note_emulated()
        self._last_sample_at = self.clock()
        self._silent = False
        self.events.append(SamplerEvent(self.clock(), "reconnect", self.driver.describe()))

    def _note_emulated(self) -> None:
        if self.driver.emulated:
            self.emulated = True
            self.emulator_info = self.driver.emulator_info

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        if self._warn_callback is not None:
            self._warn_callback(message)

    # -- storage -------------------------------------------------------------------------------
    def _open_csv(self) -> None:
        if not self.csv_path:
            return
        path = Path(self.csv_path)
        try:
            self._csv = open(path, "w", newline="")
        except OSError as exc:
            raise EdgeError(f"cannot write {path}: {exc.strerror}", "write the samples to another file") from None
        self._csv.write(",".join(CSV_COLUMNS) + "\n")
        self._csv.flush()

    def _close_csv(self) -> None:
        if self._csv is not None:
            self._csv.flush()
            os.fsync(self._csv.fileno())
            self._csv.close()
            self._csv = None

    def _store(self, samples: List[Sample]) -> None:
        emulated = "true" if self.driver.emulated else "false"
        with self._lock:
            self._samples.extend(samples)
            self._last_sample_at = samples[-1].t_receipt
            if self._csv is not None:
                for s in samples:
                    self._csv.write(f"{s.t_receipt:.6f},{s.t:.6f},{s.power_w:.6f},"
                                    f"{_csv_number(s.voltage_v)},{_csv_number(s.current_a)},"
                                    f"{_csv_number(s.device_time_s)},{s.resolution_w:.6g},"
                                    f"{'true' if s.repeat else 'false'},{_csv_number(s.energy_wh)},"
                                    f"{emulated}\n")
                    self._csv.flush()  # per reading: an interrupt loses nothing
