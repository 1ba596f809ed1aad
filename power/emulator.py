"""Meter emulator: a real pseudo-terminal that speaks a meter's real byte protocol.

The emulated device draws power from a `PowerTrace` (traces.py) plus seeded noise; the engine for
the protocol turns that into the bytes the real meter would send (RDTech UM records in answer to
0xF0, or text lines pushed at a fixed rate), and the server writes them to the master side of a pty
at the meter's baud rate, so the host sees realistic timing (a UM record takes 135 ms at 9600
baud). Clients open the pty slave with pyserial, exactly as they open a real meter.

Faults: dropped bytes, bursts of garbage before frames, stalls (the meter goes quiet), and a
disconnect (the pty disappears, like an unplugged adapter), optionally coming back after a delay on
the same path: give `link` and the port is a symlink re-pointed at the new pty, as udev does with
/dev/serial/by-id/. Every pty served is registered (emulated_ports.py) so that whatever is
measured through it is labelled emulated.

`VirtualSerial` runs the same engines and faults on a virtual clock, as an in-memory pyserial-like
port, for faster-than-real-time sessions (long offline checks); it is never registered as a port
and the samples it yields are labelled emulated by the caller.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fcntl
import math
import os
import random
import select
import struct
import termios
import threading
import time
import tty
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import serial

from edge_slm.common.errors import EdgeError

from .emulated_ports import register_emulated_pty, unregister_emulated_pty
from .line_protocol import DEFAULT_LINE_FORMAT, LineFormat
from .meter import port_open_error
from .rdtech_um import POLL_REQUEST, UM_MODELS, UmModel, encode_record
from .traces import PowerTrace

EMULATED_PROTOCOLS = tuple(sorted(UM_MODELS)) + ("line",)
# Unread bytes above this on a push protocol mean nobody is listening: the bytes are gone.
UNREAD_LIMIT_BYTES = 2048


class EmulatedSignal:
    """What the emulated meter measures: the trace plus seeded noise, on a bus voltage."""

    def __init__(self, trace: PowerTrace, *, bus_voltage_v: float = 5.1, noise_w: float = 0.02,
                 voltage_noise_v: float = 0.003, seed: int = 0):
        self.trace = trace
        self.bus_voltage_v = bus_voltage_v
        self.noise_w = noise_w
        self.voltage_noise_v = voltage_noise_v
        self.rng = random.Random(seed)
        self.t_start = 0.0

    def measure(self, now: float) -> Tuple[float, float]:
        """(voltage V, current A) at clock time `now`."""
        watts = self.trace.power_w(now - self.t_start) + self.rng.gauss(0.0, self.noise_w)
        volts = self.bus_voltage_v + self.rng.gauss(0.0, self.voltage_noise_v)
        return volts, max(watts, 0.0) / volts


class UmEngine:
    """RDTech UM: one record in answer to each 0xF0; silent otherwise.

    Like the real meter, it measures anew every `refresh_s` (the model's refresh period unless
    given; 0 measures afresh for every poll, an idealised meter) and answers each poll with the
    latest reading, so the polls between two refreshes get the same record. A reading is the power
    at the moment of its refresh, shown until the next one. Data group 0 (the selected one)
    accumulates each reading over the time it was shown, sent as whole mAh and mWh like the meter's.
    Readings are drawn per refresh, so they do not depend on how often the host polls.
    """

    polled = True

    def __init__(self, um: UmModel, signal: EmulatedSignal, refresh_s: Optional[float] = None):
        self.um = um
        self.signal = signal
        self.refresh_s = um.refresh_s if refresh_s is None else float(refresh_s)
        if not self.refresh_s >= 0.0:
            raise EdgeError(f"refresh period must be 0 or more seconds, got {refresh_s}",
                            f"the {um.model} refreshes every {um.refresh_s:g} s")
        self.default_baudrate = 9600
        refresh = (f"a new reading every {self.refresh_s:g} s" if self.refresh_s
                   else "a new reading on every poll")
        self.describe = f"{um.model} (answers 0x{POLL_REQUEST:02X} with 130-byte records, {refresh})"
        self._charge_mah = 0.0
        self._energy_mwh = 0.0
        self._reading: Optional[Tuple[float, float, float]] = None  # (time, volts, amps) shown
        self._record = b""
        self._next_refresh = 0.0

    def start(self, now: float) -> None:
        self.signal.t_start = now
        self._next_refresh = now

    def on_bytes(self, data: bytes, now: float) -> List[Tuple[float, bytes]]:
        return [(now, self._answer(now)) for byte in data if byte == POLL_REQUEST]

    def due_frames(self, now: float) -> List[Tuple[float, bytes]]:
        return []

    def next_due(self) -> Optional[float]:
        return None

    def skip_until(self, now: float) -> None:
        pass  # the meter went on measuring while unplugged: the next poll catches up

    def _answer(self, now: float) -> bytes:
        if not self.refresh_s:
            self._refresh(now)
        while self.refresh_s and self._next_refresh <= now:
            self._refresh(self._next_refresh)
            self._next_refresh += self.refresh_s
        return self._record

    def _refresh(self, at: float) -> None:
        if self._reading is not None:  # the reading shown until now goes into the counters
            shown_at, volts, amps = self._reading
            hours = (at - shown_at) / 3600.0
            self._charge_mah += amps * 1000.0 * hours
            self._energy_mwh += volts * amps * 1000.0 * hours
        volts, amps = self.signal.measure(at)
        self._reading = (at, volts, amps)
        self._record = encode_record(self.um, voltage_v=volts, current_a=amps,
                                     group_mah=int(self._charge_mah), group_mwh=int(self._energy_mwh))


class LineEngine:
    """DIY line meter: prints one reading per line at `rate_hz`, whatever the host says."""

    polled = False

    def __init__(self, line_format: LineFormat, signal: EmulatedSignal, rate_hz: float = 20.0):
        self.format = line_format
        self.signal = signal
        self.period_s = 1.0 / rate_hz
        self.default_baudrate = 115200
        self.describe = f"line protocol, {rate_hz:g} lines/s, format {line_format.spec}"
        self._next: Optional[float] = None

    def start(self, now: float) -> None:
        self.signal.t_start = now
        self._next = now + self.period_s

    def on_bytes(self, data: bytes, now: float) -> List[Tuple[float, bytes]]:
        return []

    def due_frames(self, now: float) -> List[Tuple[float, bytes]]:
        frames = []
        while self._next is not None and self._next <= now:
            frames.append((self._next, self._line(self._next)))
            self._next += self.period_s
        return frames

    def next_due(self) -> Optional[float]:
        return self._next

    def skip_until(self, now: float) -> None:
        while self._next is not None and self._next <= now:
            self._next += self.period_s

    def _line(self, at: float) -> bytes:
        volts, amps = self.signal.measure(at)
        values = {"voltage": volts, "current": amps, "power": volts * amps,
                  "time": at - self.signal.t_start}
        return (self.format.format_line(values) + "\r\n").encode("ascii")


def make_engine(protocol: str, signal: EmulatedSignal, *, line_format: str = DEFAULT_LINE_FORMAT,
                line_rate_hz: float = 20.0, refresh_s: Optional[float] = None):
    """The engine for `protocol`; `refresh_s` (UM meters only) overrides the model's refresh period."""
    if refresh_s is not None and protocol not in UM_MODELS:
        raise EdgeError(f"a refresh period applies to the UM meters, not {protocol!r}",
                        "a line meter sends a new reading with every line (see --line-rate)")
    factories = {name: (lambda um=um: UmEngine(um, signal, refresh_s)) for name, um in UM_MODELS.items()}
    factories["line"] = lambda: LineEngine(LineFormat.parse(line_format), signal, line_rate_hz)
    if protocol not in factories:
        raise EdgeError(f"cannot emulate {protocol!r}", f"choose one of: {', '.join(EMULATED_PROTOCOLS)}")
    return factories[protocol]()


@dataclass
class FaultPlan:
    drop_byte_probability: float = 0.0  # each byte of a frame is lost with this probability
    garbage_probability: float = 0.0  # each frame is preceded by a burst of garbage
    stalls: Tuple[Tuple[float, float], ...] = ()  # (start s, duration s) since start: meter silent
    disconnect_at_s: Optional[float] = None  # the port disappears (unplugged)
    reconnect_after_s: Optional[float] = None  # ... and comes back this much later
    seed: int = 0


@dataclass
class EmulatorStats:
    requests: int = 0  # poll requests received
    frames_sent: int = 0  # intact frames written
    frames_corrupted: int = 0  # frames written with bytes dropped
    garbage_injected: int = 0  # bursts of garbage written
    frames_not_sent_stalled: int = 0  # requests ignored / lines skipped during stalls
    frames_unread: int = 0  # push protocols: frames flushed because nobody read them
    disconnects: int = 0
    reconnects: int = 0
    error: Optional[str] = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class FaultInjector:
    def __init__(self, plan: FaultPlan, stats: EmulatorStats, line_oriented: bool):
        self.plan = plan
        self.stats = stats
        self.line_oriented = line_oriented
        self.rng = random.Random(plan.seed * 7919 + 1)

    def _garbage(self) -> bytes:
        burst = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 32)))
        if self.line_oriented:  # noise on a text link: non-ASCII bytes, then the line ends
            return bytes(0x80 | b for b in burst) + b"\n"
        return burst

    def corrupt(self, frame: bytes) -> Tuple[bytes, bool]:
        """(bytes to write, whether the frame itself is intact)."""
        out = b""
        if self.plan.garbage_probability and self.rng.random() < self.plan.garbage_probability:
            out += self._garbage()
            self.stats.garbage_injected += 1
        intact = True
        if self.plan.drop_byte_probability:
            kept = bytes(b for b in frame if self.rng.random() >= self.plan.drop_byte_probability)
            intact = len(kept) == len(frame)
            frame = kept
        return out + frame, intact

    def stalled(self, t_rel: float) -> bool:
        return any(start <= t_rel < start + duration for start, duration in self.plan.stalls)


def _pending_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class PtyEmulator:
    """Serve one emulated meter on a pseudo-terminal from a background thread."""

    def __init__(self, engine, *, faults: Optional[FaultPlan] = None, baudrate: Optional[int] = None,
                 link: Optional[str] = None, protocol: str = "emulated",
                 clock: Callable[[], float] = time.monotonic):
        if link and os.path.lexists(link) and not os.path.islink(link):
            raise EdgeError(f"--link {link} exists and is not a symlink", "choose a new path for the link")
        self.engine = engine
        self.faults = faults or FaultPlan()
        self.baudrate = baudrate or engine.default_baudrate
        self.link = link
        self.protocol = protocol
        self.clock = clock
        self.stats = EmulatorStats()
        self.instance = uuid.uuid4().hex
        self.pty_path: Optional[str] = None
        self._injector = FaultInjector(self.faults, self.stats, line_oriented=not engine.polled)
        self._master: Optional[int] = None
        self._slave: Optional[int] = None  # kept open: without a reader the master sees EIO
        self._line_free_at = 0.0
        self._t_start = 0.0
        self._disconnect_done = False
        self._reconnect_at: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    @property
    def port(self) -> str:
        return self.link or self.pty_path or ""

    @property
    def byte_time_s(self) -> float:
        return 10.0 / self.baudrate

    def start(self) -> "PtyEmulator":
        self._open_pty()
        self._t_start = self.clock()
        self.engine.start(self._t_start)
        self._thread = threading.Thread(target=self._run, name=f"edge-power-emulator-{self.protocol}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> EmulatorStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            self._close_pty(remove_link=True)
        return self.stats

    def __enter__(self) -> "PtyEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the pty -------------------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass through untouched
        self._master, self._slave = master, slave
        self.pty_path = os.ttyname(slave)
        register_emulated_pty(self.pty_path, protocol=self.protocol, link=self.link,
                              instance=self.instance)
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            os.symlink(self.pty_path, tmp)
            os.replace(tmp, self.link)  # atomic: a reader sees the old or the new pty, never none

    def _close_pty(self, remove_link: bool) -> None:
        if self._master is None:
            return
        unregister_emulated_pty(self.pty_path)
        if self.link and remove_link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = None

    # -- the serving loop ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_once()
        except Exception as exc:  # keep the reason: tests and the CLI report it
            self.stats.error = f"{type(exc).__name__}: {exc}"

    def _serve_once(self) -> None:
        now = self.clock()
        if self._master is None:  # unplugged
            if self._reconnect_at is not None and now >= self._reconnect_at:
                with self._lock:
                    self._open_pty()
                self.engine.skip_until(now)  # a meter that was unplugged sent nothing meanwhile
                self._reconnect_at = None
                self.stats.reconnects += 1
            else:
                time.sleep(0.01)
            return
        if self._disconnect_due(now) and not self.engine.polled:
            self._disconnect_when_drained()
            return
        next_due = self.engine.next_due()
        wait = 0.02 if next_due is None else min(0.02, max(0.0, next_due - now))
        readable, _, _ = select.select([self._master], [], [], wait)
        frames: List[Tuple[float, bytes]] = []
        now = self.clock()
        stalled = self._injector.stalled(now - self._t_start)
        if readable:
            try:
                data = os.read(self._master, 4096)
            except OSError:
                data = b""
            requests = data.count(bytes([POLL_REQUEST])) if self.engine.polled else 0
            self.stats.requests += requests
            if requests and self._disconnect_due(now):
                # Unplug on a request, once the host has read every frame sent so far (a host
                # that timed out may poll again before it read the late answer).
                self._disconnect_when_drained()
                return
            if stalled:
                self.stats.frames_not_sent_stalled += requests
            else:
                frames += self.engine.on_bytes(data, now)
        if stalled:
            self.stats.frames_not_sent_stalled += len(self.engine.due_frames(now))
        else:
            frames += self.engine.due_frames(now)
        for measured_at, frame in frames:
            self._send(measured_at, frame)

    def _disconnect_due(self, now: float) -> bool:
        plan = self.faults
        return (plan.disconnect_at_s is not None and not self._disconnect_done
                and now - self._t_start >= plan.disconnect_at_s)

    def _disconnect_when_drained(self) -> None:
        deadline = self.clock() + 1.0
        while _pending_bytes(self._slave) and self.clock() < deadline:
            time.sleep(0.005)
        self._disconnect()

    def _disconnect(self) -> None:
        with self._lock:
            self._close_pty(remove_link=True)
        self._disconnect_done = True
        self.stats.disconnects += 1
        if self.faults.reconnect_after_s is not None:
            self._reconnect_at = self.clock() + self.faults.reconnect_after_s

    def _send(self, measured_at: float, frame: bytes) -> None:
        data, intact = self._injector.corrupt(frame)
        if not self.engine.polled and _pending_bytes(self._slave) > UNREAD_LIMIT_BYTES:
            # Nobody is reading: a real UART's bytes would be gone; so are these.
            pending = _pending_bytes(self._slave)
            termios.tcflush(self._slave, termios.TCIFLUSH)
            self.stats.frames_unread += max(1, round(pending / max(1, len(frame))))
        # Pace at the baud rate: the last byte cannot arrive before the line has carried them all.
        start = max(measured_at, self._line_free_at)
        done = start + len(data) * self.byte_time_s
        delay = done - self.clock()
        if delay > 0:
            time.sleep(delay)
        # Counted before the bytes go out: a reader must never hold a frame the stats lack yet
        # (counting after the write lost that race under load). A failed write takes it back.
        counter = "frames_sent" if intact else "frames_corrupted"
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(self._master, view)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        time.sleep(0.001)
                        continue
                    raise
                view = view[written:]
        except OSError:
            setattr(self.stats, counter, getattr(self.stats, counter) - 1)
            raise
        self._line_free_at = max(done, self.clock())


class VirtualClock:
    """A clock that only moves when told: `clock()` reads it, `clock.sleep(s)` advances it.

    What would run in a background thread on a real clock (a Sampler) registers a step function
    with `run_in_background`; whoever sleeps on the clock then runs the steps until the time has
    passed, as a thread would have run meanwhile. A step that sleeps itself just advances the clock.
    """

    def __init__(self, start: float = 0.0):
        self.now = start
        self._background: List[Callable[[], None]] = []
        self._stepping = False

    def __call__(self) -> float:
        return self.now

    def run_in_background(self, step: Callable[[], None]) -> None:
        self._background.append(step)

    def stop_background(self, step: Callable[[], None]) -> None:
        if step in self._background:
            self._background.remove(step)

    def sleep(self, seconds: float) -> None:
        end = self.now + max(0.0, seconds)
        if self._background and not self._stepping:
            self._stepping = True
            try:
                while self.now < end and self._background:
                    before = self.now
                    for step in list(self._background):
                        step()
                    if self.now == before:  # a step that waited for nothing: let a little time pass
                        self.now = min(end, self.now + 0.01)
            finally:
                self._stepping = False
        self.now = max(self.now, end)


class VirtualSerial:
    """An in-memory serial port whose far end is an emulator engine, on a `VirtualClock`.

    Implements the part of pyserial's API the drivers use (read, write, in_waiting,
    reset_input_buffer, close); give `port.opener` as the driver's opener. Each byte arrives at
    its time on the wire at `baudrate`, after a seeded 0..`latency_jitter_s` response delay
    standing in for the meter's and the host's scheduling. Faults, as on the pty: dropped bytes,
    garbage bursts, stalls, and the port unplugged (reads and writes fail, opening finds no port)
    and plugged back in.
    """

    def __init__(self, engine, clock: VirtualClock, *, baudrate: Optional[int] = None,
                 faults: Optional[FaultPlan] = None, timeout: float = 0.1,
                 latency_jitter_s: float = 0.003, seed: int = 0):
        self.engine = engine
        self.clock = clock
        self.baudrate = baudrate or engine.default_baudrate
        self.timeout = timeout
        self.latency_jitter_s = latency_jitter_s
        self.stats = EmulatorStats()
        self.faults = faults or FaultPlan()
        self._injector = FaultInjector(self.faults, self.stats, line_oriented=not engine.polled)
        self._rng = random.Random(seed)
        self._t_start = clock()
        self._disconnect_done = False
        self._unplugged_until: Optional[float] = None  # math.inf: gone for good
        self._arrivals: collections.deque = collections.deque()  # (arrival time, byte, outcome)
        self._line_free_at = clock()
        self.is_open = True
        # Read by MeterDriver.open: whatever is measured through this port is labelled emulated.
        self.emulator_info = {"virtual": True, "protocol": engine.describe, "pid": os.getpid()}
        engine.start(clock())

    def _schedule(self, measured_at: float, frame: bytes) -> None:
        data, intact = self._injector.corrupt(frame)
        start = max(measured_at + self._rng.uniform(0.0, self.latency_jitter_s), self._line_free_at)
        byte_time = 10.0 / self.baudrate
        last = len(data) - 1
        for k, byte in enumerate(data):
            # The frame counts as sent when its last byte reaches the host.
            outcome = ("frames_sent" if intact else "frames_corrupted") if k == last else None
            self._arrivals.append((start + (k + 1) * byte_time, byte, outcome))
        self._line_free_at = start + len(data) * byte_time

    def opener(self, port: str, baudrate: int, timeout_s: float) -> "VirtualSerial":
        """Open this port, as meter.open_serial_port opens a real one; absent while unplugged."""
        now = self.clock()
        if self._unplugged_until is not None:
            if now < self._unplugged_until:
                raise port_open_error(port, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
            self._unplugged_until = None
            self.stats.reconnects += 1
            self.engine.skip_until(now)  # a meter that was unplugged sent nothing meanwhile
        self.is_open = True
        return self

    def _check_plugged(self) -> None:
        now = self.clock()
        plan = self.faults
        if (plan.disconnect_at_s is not None and not self._disconnect_done
                and now - self._t_start >= plan.disconnect_at_s):
            self._disconnect_done = True
            self.stats.disconnects += 1
            self._arrivals.clear()  # bytes on the way are lost with the port
            self._unplugged_until = (math.inf if plan.reconnect_after_s is None
                                     else now + plan.reconnect_after_s)
        if self._unplugged_until is not None:
            raise serial.SerialException("device reports readiness to read but returned no data "
                                         "(device disconnected?)")

    def _stalled(self) -> bool:
        return self._injector.stalled(self.clock() - self._t_start)

    def _pump(self) -> None:
        frames = self.engine.due_frames(self.clock())
        if self._stalled():
            self.stats.frames_not_sent_stalled += len(frames)
            return
        for measured_at, frame in frames:
            self._schedule(measured_at, frame)

    def write(self, data: bytes) -> int:
        self._check_plugged()
        now = self.clock()
        requests = data.count(bytes([POLL_REQUEST])) if self.engine.polled else 0
        self.stats.requests += requests
        if self._stalled():
            self.stats.frames_not_sent_stalled += requests
            return len(data)
        for measured_at, frame in self.engine.on_bytes(bytes(data), now):
            self._schedule(measured_at, frame)
        return len(data)

    @property
    def in_waiting(self) -> int:
        self._check_plugged()
        self._pump()
        now = self.clock()
        return sum(1 for arrival in self._arrivals if arrival[0] <= now)

    def read(self, size: int = 1) -> bytes:
        self._check_plugged()
        deadline = self.clock() + self.timeout
        out = bytearray()
        while True:
            self._pump()
            while self._arrivals and self._arrivals[0][0] <= self.clock() and len(out) < size:
                out.append(self._take())
            if len(out) >= size:
                return bytes(out)
            upcoming = [t for t in (self._arrivals[0][0] if self._arrivals else None,
                                    self.engine.next_due()) if t is not None]
            step_to = min(upcoming) if upcoming else math.inf
            if step_to > deadline:
                self.clock.now = max(self.clock.now, deadline)
                return bytes(out)
            self.clock.now = max(self.clock.now, step_to)

    def _take(self) -> int:
        _, byte, outcome = self._arrivals.popleft()
        if outcome:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        return byte

    def reset_input_buffer(self) -> None:
        now = self.clock()
        while self._arrivals and self._arrivals[0][0] <= now:
            self._take()

    def close(self) -> None:
        self.is_open = False
