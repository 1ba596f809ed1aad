"""Line protocol for DIY meters: an Arduino or Pico printing INA219/INA226 readings, one per line.

A format is a short spec string, so the same words work on the command line and in code:

  kv:V=voltage[V],mA=current[mA],mW=power[mW],ms=time[ms]   (the default)
      lines such as `V=5.012 mA=412.5 mW=2067.3 ms=123456`: key=value (or key:value) pairs,
      separated by spaces, commas, semicolons or tabs, in any order; unknown keys are ignored.
  csv:time[ms],voltage[mV],current[mA]
      positional columns separated by commas, semicolons, tabs or spaces; `-` skips a column.

Quantities and units: voltage V|mV|uV, current A|mA|uA, power W|mW|uW, time s|ms|us (the
device's own timestamp, optional: it is stored, while attribution uses the host's clock).
Power is computed as V*I when the line has no power field. A line that does not parse is garbage:
it is counted and skipped, and the next newline resynchronises. The resolution of each reading is
taken from the number of decimals printed, which is what the sketch actually gives us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edge_slm.common.errors import EdgeError

from .meter import MeterDriver, Sample, register_meter

UNITS: Dict[str, Dict[str, float]] = {
    "voltage": {"V": 1.0, "mV": 1e-3, "uV": 1e-6},
    "current": {"A": 1.0, "mA": 1e-3, "uA": 1e-6},
    "power": {"W": 1.0, "mW": 1e-3, "uW": 1e-6},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
}
# Decimals the emulator prints per unit: 1 mV, 0.1 mA, 0.1 mW steps, like an INA219 sketch.
UNIT_DECIMALS = {"V": 3, "mV": 0, "uV": 0, "A": 4, "mA": 1, "uA": 0, "W": 4, "mW": 1, "uW": 0,
                 "s": 3, "ms": 0, "us": 0}
DEFAULT_LINE_FORMAT = "kv:V=voltage[V],mA=current[mA],mW=power[mW],ms=time[ms]"
MAX_LINE_BYTES = 256
FIELD_SPEC = re.compile(r"^(?:(?P<key>[^=\s]+)=)?(?P<quantity>[a-z]+)\[(?P<unit>[a-zA-Z]+)\]$")
SEPARATORS = re.compile(r"[,;\t ]+")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class LineField:
    quantity: str  # voltage | current | power | time, or "-" for a skipped CSV column
    unit: str
    key: Optional[str] = None  # kv style only

    @property
    def scale(self) -> float:
        return UNITS[self.quantity][self.unit] if self.quantity != "-" else 1.0


@dataclass(frozen=True)
class LineFormat:
    style: str  # "kv" or "csv"
    fields: Tuple[LineField, ...]
    spec: str

    @classmethod
    def parse(cls, spec: str) -> "LineFormat":
        style, _, body = spec.partition(":")
        bad = EdgeError(f"bad line format {spec!r}",
                        "write it like kv:V=voltage[V],mA=current[mA] or csv:time[ms],voltage[V],current[A] "
                        "(quantities voltage/current/power/time; units V mV uV, A mA uA, W mW uW, s ms us)")
        if style not in ("kv", "csv") or not body:
            raise bad
        fields = []
        for part in body.split(","):
            part = part.strip()
            if style == "csv" and part == "-":
                fields.append(LineField("-", ""))
                continue
            match = FIELD_SPEC.match(part)
            if not match or match.group("quantity") not in UNITS \
                    or match.group("unit") not in UNITS[match.group("quantity")] \
                    or (style == "kv") != bool(match.group("key")):
                raise bad
            fields.append(LineField(match.group("quantity"), match.group("unit"), match.group("key")))
        quantities = [f.quantity for f in fields if f.quantity != "-"]
        if len(set(quantities)) != len(quantities):
            raise EdgeError(f"bad line format {spec!r}: a quantity appears twice",
                            "list each of voltage, current, power, time at most once")
        if "power" not in quantities and not {"voltage", "current"} <= set(quantities):
            raise EdgeError(f"bad line format {spec!r}: no power",
                            "include power, or both voltage and current")
        return cls(style, tuple(fields), spec)

    def parse_line(self, text: str) -> Optional[Dict[str, Tuple[float, float]]]:
        """{quantity: (SI value, SI resolution)} or None when the line does not fit the format."""
        tokens = [t for t in SEPARATORS.split(text.strip()) if t]
        values: Dict[str, Tuple[float, float]] = {}
        if self.style == "csv":
            if len(tokens) != len(self.fields):
                return None
            pairs = [(f, tok) for f, tok in zip(self.fields, tokens) if f.quantity != "-"]
        else:
            by_key = {f.key: f for f in self.fields}
            pairs = []
            for token in tokens:
                key, sep, value = token.partition("=") if "=" in token else token.partition(":")
                if not sep:
                    return None
                if key in by_key:
                    if any(f is by_key[key] for f, _ in pairs):
                        return None  # a key twice: two lines run together after a lost newline
                    pairs.append((by_key[key], value))
        for f, token in pairs:
            if not NUMBER.match(token):
                return None
            decimals = len(token.split(".")[1]) if "." in token and "e" not in token.lower() else 0
            values[f.quantity] = (float(token) * f.scale, 10.0 ** -decimals * f.scale)
        if "power" not in values and not {"voltage", "current"} <= values.keys():
            return None
        return values

    def format_line(self, values: Dict[str, float]) -> str:
        """One line in this format from SI values (the emulator's side), INA219-like decimals."""
        tokens = []
        for f in self.fields:
            if f.quantity == "-":
                tokens.append("0")
                continue
            number = f"{values[f.quantity] / f.scale:.{UNIT_DECIMALS[f.unit]}f}"
            tokens.append(f"{f.key}={number}" if self.style == "kv" else number)
        return (" " if self.style == "kv" else ",").join(tokens)


@register_meter
class LineMeter(MeterDriver):
    """A meter that prints one reading per line, at its own pace."""

    name = "line"
    model = "line-protocol meter"
    description = ("DIY meter printing one reading per line (Arduino/Pico with INA219/INA226), "
                   "CSV or key=value, configurable columns and units; default 115200 8N1")
    default_baudrate = 115200
    nominal_rate_hz = 10.0
    extra_options = ("line_format",)

    def __init__(self, port: str, *, line_format: str = DEFAULT_LINE_FORMAT, **options):
        super().__init__(port, **options)
        self.format = LineFormat.parse(line_format) if isinstance(line_format, str) else line_format
        self._buffer = bytearray()
        self._synced = False

    @property
    def expects(self) -> str:  # type: ignore[override]
        return f"text lines in the format {self.format.spec}"

    def _on_open(self) -> None:
        self._buffer.clear()
        self._synced = False  # we may have joined in the middle of a line

    def _silent_hint(self) -> str:
        return ("is the sketch running and printing at this baud rate? A polled meter such as "
                "an RDTech UM25C says nothing until asked: try --meter um25c")

    @classmethod
    def recognises(cls, data: bytes) -> bool:
        default = LineFormat.parse(DEFAULT_LINE_FORMAT)
        lines = data.split(b"\n")[1:-1]  # whole lines only
        return any(default.parse_line(line.decode("ascii", "replace")) for line in lines)

    def _read_samples(self) -> List[Sample]:
        chunk = self._read(max(1, self.serial.in_waiting))
        if not chunk:
            return []
        read_at = self.clock()
        self._buffer += chunk
        samples = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:  # no newline in sight: noise, not a line
                    self._discard(bytes(self._buffer))
                    self._buffer.clear()
                    self._synced = True
                break
            line = bytes(self._buffer[:end + 1])
            del self._buffer[:end + 1]
            if not self._synced:
                self._synced = True  # first, possibly partial, line after opening: not garbage
                continue
            # When several lines arrived in one read, the later bytes took time to come in.
            line_end_at = read_at - len(self._buffer) * self.byte_time_s
            sample = self._parse(line, line_end_at)
            if sample is None:
                self._discard(line)
            else:
                self._accepted_frame()
                samples.append(sample)
        return samples

    def _parse(self, line: bytes, line_end_at: float) -> Optional[Sample]:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return None
        values = self.format.parse_line(text)
        if values is None:
            return None
        voltage = values.get("voltage")
        current = values.get("current")
        if "power" in values:
            power, resolution = values["power"]
        else:
            power = voltage[0] * current[0]
            resolution = voltage[0] * current[1] + current[0] * voltage[1]
        device_time = values.get("time")
        return Sample(t_receipt=line_end_at, t=line_end_at - len(line) * self.byte_time_s,
                      power_w=power, voltage_v=voltage[0] if voltage else None,
                      current_a=current[0] if current else None,
                      device_time_s=device_time[0] if device_time else None,
                      resolution_w=resolution)
