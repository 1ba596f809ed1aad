"""The meter driver interface, the registry of meters, and opening serial ports.

A driver turns the bytes of one serial port into `Sample`s. To add a meter (TC66C, Nordic PPK2,
...) write one file: subclass `MeterDriver`, implement `_read_samples` (and `recognises`, so that
a wrong `--meter` gets a useful hint), decorate the class with `@register_meter`, and import the
file in power/__init__.py. Everything else (sampler, attribution, CLI, emulated labelling) works
from the registry, never from the meter's name.

Ports are device paths (/dev/ttyUSB0, /dev/rfcomm0) or pyserial URLs (socket://, rfc2217://,
loop://), all opened through `serial.serial_for_url`. Device paths are opened with an exclusive
lock: two readers on one meter would steal each other's bytes.
"""

from __future__ import annotations

import errno
import re
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional

import serial

from edge_slm.common.errors import EdgeError

from .emulated_ports import emulated_port_info

PYSERIAL_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# How much of the unrecognised input to keep for the "what is this port sending?" diagnosis.
RECENT_BYTES_KEPT = 2048


@dataclass(frozen=True)
class Sample:
    """One reading. Times are the host's monotonic clock (seconds)."""

    t_receipt: float  # when the last byte of this reading had arrived
    t: float  # best estimate of when the meter measured it: receipt minus the frame's transfer time
    power_w: float
    voltage_v: Optional[float] = None
    current_a: Optional[float] = None
    device_time_s: Optional[float] = None
    resolution_w: float = 0.0  # one step of the meter's power reading at this operating point
    # The meter had not refreshed since the previous poll: the same reading again, not a new one.
    repeat: bool = False
    energy_wh: Optional[float] = None  # the meter's own accumulated energy counter, if it has one


class MeterDisconnected(Exception):
    """The port went away (unplugged, Bluetooth dropped, the other side closed)."""


@dataclass
class MeterCounters:
    bytes_received: int = 0
    garbage_frames: int = 0  # runs of bytes (or lines) thrown away between valid frames
    garbage_bytes: int = 0
    timeouts: int = 0  # poll cycles that ended without a valid frame


METERS: Dict[str, type] = {}


def register_meter(cls):
    """Class decorator: make a driver available as `--meter <cls.name>`."""
    if cls.name in METERS:
        raise ValueError(f"meter {cls.name!r} registered twice")
    METERS[cls.name] = cls
    return cls


def meter_names() -> List[str]:
    return sorted(METERS)


def meter_class(name: str) -> type:
    try:
        return METERS[name.lower()]
    except KeyError:
        raise EdgeError(f"unknown meter {name!r}",
                        f"choose one of: {', '.join(meter_names())}") from None


def create_meter(name: str, port: str, **options) -> "MeterDriver":
    return meter_class(name)(port, **options)


def is_pyserial_url(port: str) -> bool:
    return bool(PYSERIAL_URL.match(port))


NETWORK_SCHEMES = ("socket", "rfc2217")
URL_HINT = ("give a device path such as /dev/ttyUSB0 or a pyserial URL "
            "(socket://host:port, rfc2217://host:port, loop://)")


def check_port_url(port: str) -> None:
    """A network URL needs a host and a port in range; pyserial would say so in its own words."""
    scheme = port.partition("://")[0].lower()
    if scheme not in NETWORK_SCHEMES:
        return
    from urllib.parse import urlsplit  # deferred: only network meters need it

    try:
        parts = urlsplit(port)
        number = parts.port
    except ValueError:
        number = None
    if not parts.hostname or number is None or number == 0:
        raise EdgeError(f"cannot open {port}: {scheme}:// needs a host and a port from 1 to 65535", URL_HINT)


def open_serial_port(port: str, baudrate: int, timeout_s: float):
    """Open `port` 8N1; every failure becomes a one-line EdgeError that says what to do."""
    check_port_url(port)
    try:
        ser = serial.serial_for_url(port, baudrate=baudrate, bytesize=serial.EIGHTBITS,
                                    parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                    timeout=timeout_s, write_timeout=2.0, do_not_open=True)
        if not is_pyserial_url(port):
            ser.exclusive = True
        ser.open()
        return ser
    except ValueError as exc:  # unknown URL scheme or bad setting
        raise EdgeError(f"cannot open {port}: {exc}", URL_HINT) from None
    except (serial.SerialException, OSError) as exc:
        raise port_open_error(port, exc) from None


def _errno_of(exc: BaseException) -> Optional[int]:
    if isinstance(getattr(exc, "errno", None), int):
        return exc.errno
    found = re.search(r"\[Errno (\d+)\]", str(exc))
    return int(found.group(1)) if found else None


def port_open_error(port: str, exc: BaseException) -> EdgeError:
    code = _errno_of(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return EdgeError(f"port {port} does not exist (meter unplugged or not paired?)",
                         "`edge-power list` shows the serial ports and running emulators")
    if code in (errno.EACCES, errno.EPERM):
        return EdgeError(f"permission denied opening {port}",
                         "add your user to the group that owns the port (usually `dialout`: "
                         "sudo usermod -aG dialout $USER, then log in again)")
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return EdgeError(f"port {port} is busy: another program has it open",
                         "close the other reader (another edge-power, screen, minicom, ModemManager)")
    if code == errno.ECONNREFUSED:
        return EdgeError(f"nothing is listening at {port}", "start the serial server first")
    return EdgeError(f"cannot open {port}: {' '.join(str(exc).split())}",
                     "check the port name; `edge-power list` shows the serial ports")


class MeterDriver:
    """Base class of all meters: port lifecycle, counters, probing, and the error messages.

    Subclasses set the class attributes and implement `_read_samples` (one poll cycle, or
    whatever has arrived within about `read_timeout_s`) and `recognises`.
    """

    name: ClassVar[str]  # registry key: --meter <name>
    model: ClassVar[str]  # what people call it, for messages: "UM25C"
    description: ClassVar[str]
    expects: ClassVar[str]  # what a healthy port sends, for error messages
    default_baudrate: ClassVar[int] = 9600
    nominal_rate_hz: ClassVar[float]  # typical readings per second, for advice before any data
    read_timeout_s: ClassVar[float] = 0.1
    # Keyword options this driver takes beyond the common ones (the CLI checks against these).
    extra_options: ClassVar[tuple] = ()
    # One step of the meter's accumulated energy counter (Sample.energy_wh), None without one.
    energy_counter_step_wh: ClassVar[Optional[float]] = None

    def __init__(self, port: str, *, baudrate: Optional[int] = None,
                 timestamp_uncertainty_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 opener: Callable = open_serial_port):
        self.port = port
        self.baudrate = int(baudrate or self.default_baudrate)
        self.clock = clock
        self.sleep = sleep
        self._opener = opener
        self.serial = None
        self.counters = MeterCounters()
        self.emulated = False
        self.emulator_info: Optional[dict] = None
        self._recent_discarded = bytearray()
        self._in_garbage = False
        self._timestamp_uncertainty_s = timestamp_uncertainty_s

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.serial is not None

    def open(self) -> None:
        """Open the port (EdgeError if impossible) and find out whether an emulator serves it."""
        self.close()
        self.serial = self._opener(self.port, self.baudrate, self.read_timeout_s)
        try:
            self.serial.reset_input_buffer()  # bytes from before we listened are not ours
        except (serial.SerialException, OSError):
            pass
        # An emulator's in-memory port says so itself; a pty is looked up in the registry.
        info = getattr(self.serial, "emulator_info", None) or emulated_port_info(self.port)
        self.emulator_info = info
        self.emulated = info is not None
        self._in_garbage = False
        self._on_open()

    def close(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except (serial.SerialException, OSError):
                pass
            self.serial = None

    def _on_open(self) -> None:
        """Reset the subclass's parsing state after (re)opening."""

    # -- reading -------------------------------------------------------------------------------
    def read_samples(self) -> List[Sample]:
        """Zero or more new samples; raises MeterDisconnected when the port is lost."""
        if self.serial is None:
            raise MeterDisconnected(f"{self.port} is not open")
        try:
            return self._read_samples()
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise MeterDisconnected(f"{self.port}: {' '.join(str(exc).split())}") from None

    def _read_samples(self) -> List[Sample]:
        raise NotImplementedError

    def drain_samples(self) -> List[Sample]:
        """Samples already on their way (answers to polls sent), read without asking for more:
        the last thing before the port is closed, so that every reading the meter sent is kept."""
        if self.serial is None:
            return []
        try:
            return self._drain_samples()
        except (serial.SerialException, OSError):
            self.close()
            return []

    def _drain_samples(self) -> List[Sample]:
        return []  # a meter that pushes its readings has nothing owed

    def _read(self, size: int) -> bytes:
        data = self.serial.read(size)
        self.counters.bytes_received += len(data)
        return data

    def _write(self, data: bytes) -> None:
        self.serial.write(data)

    def _discard(self, data: bytes) -> None:
        """Throw bytes away as garbage; a contiguous run counts as one garbage frame."""
        if not data:
            return
        if not self._in_garbage:
            self.counters.garbage_frames += 1
            self._in_garbage = True
        self.counters.garbage_bytes += len(data)
        self._recent_discarded += data
        del self._recent_discarded[:-RECENT_BYTES_KEPT]

    def _accepted_frame(self) -> None:
        self._in_garbage = False

    # -- timing --------------------------------------------------------------------------------
    @property
    def byte_time_s(self) -> float:
        return 10.0 / self.baudrate  # 8N1: start + 8 data + stop bits

    @property
    def timestamp_uncertainty_s(self) -> float:
        """How far a sample's time estimate may be from when the meter really measured."""
        if self._timestamp_uncertainty_s is not None:
            return self._timestamp_uncertainty_s
        return 0.005 + 4 * self.byte_time_s  # host scheduling + a few byte times

    # -- probing and diagnosis -----------------------------------------------------------------
    @classmethod
    def recognises(cls, data: bytes) -> bool:
        """Whether `data` (raw bytes from a port) look like this meter's output."""
        return False

    def probe(self, timeout_s: float) -> List[Sample]:
        """Read until the first valid sample; one-line EdgeError if none comes in `timeout_s`."""
        deadline = self.clock() + timeout_s
        while True:
            try:
                samples = self.read_samples()
            except MeterDisconnected as exc:
                raise EdgeError(f"lost {self.port} while waiting for the first {self.model} reading "
                                f"({exc})", "check the cable or Bluetooth link and try again") from None
            if samples:
                return samples
            if self.clock() >= deadline:
                break
        self.close()
        raise self._no_reading_error(timeout_s)

    def _no_reading_error(self, timeout_s: float) -> EdgeError:
        if self.counters.bytes_received == 0:
            return EdgeError(f"{self.port} is silent: no data in {timeout_s:.1f} s; "
                             f"expected {self.expects}",
                             self._silent_hint())
        seen = bytes(self._recent_discarded)
        others = [cls for name, cls in sorted(METERS.items())
                  if cls is not type(self) and cls.recognises(seen)]
        what = describe_bytes(seen)
        if others:
            other = others[0]
            return EdgeError(f"{self.port} does not answer like a {self.model}: it sends {other.model} "
                             f"data ({what}); expected {self.expects}",
                             f"use --meter {other.name}")
        return EdgeError(f"{self.port} does not answer like a {self.model}: "
                         f"{self.counters.bytes_received} bytes in {timeout_s:.1f} s, none of them "
                         f"{self.expects} ({what})",
                         f"check --meter (one of: {', '.join(meter_names())}) and the baud rate "
                         f"({self.baudrate})")

    def _silent_hint(self) -> str:
        return ("is the meter on, connected or paired, and is this its port? "
                "`edge-power list` shows the serial ports")

    def describe(self) -> str:
        return f"{self.model} at {self.port}" + (" (emulated)" if self.emulated else "")


def describe_bytes(data: bytes) -> str:
    """A few words on what unrecognised input looks like, for error messages."""
    if not data:
        return "nothing"
    printable = sum(1 for b in data if 32 <= b < 127 or b in (9, 10, 13))
    if printable / len(data) > 0.9:
        first = data.decode("ascii", "replace").strip().splitlines()
        sample = first[0][:40] if first else ""
        return f"text such as {sample!r}"
    return f"binary, starting {data[:8].hex(' ')}"

