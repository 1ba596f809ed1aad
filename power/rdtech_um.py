"""RDTech UM24C / UM25C / UM34C USB power meters (Bluetooth SPP /dev/rfcomm* or USB-serial, 9600 8N1).

Sources for the protocol, checked against each other:
  * sigrok wiki, "RDTech UM series": https://sigrok.org/wiki/RDTech_UM_series
    (the meter never speaks unasked; "UM25C displays and sends 1mV / 0.1mA live resolution,
    UM24C/UM34C are 10mV / 1mA").
  * libsigrok src/hardware/rdtech-um/protocol.c and protocol.h (sigrokproject/libsigrok):
    UM_CMD_POLL 0xf0, UM_POLL_LEN 130, UM_POLL_PERIOD_MS 100, model ids 0x0963 / 0x09c9 /
    0x0d4c, V at offset 2 (x0.01 V, UM25C x0.001 V), I at offset 4 (x0.001 A, UM25C x0.0001 A),
    D+/D- at 96/98 (x0.01 V), temperature at 10 (deg C), poll_csum_fff1 (UM24C, UM25C: last two
    bytes are 0xFFF1) and poll_csum_um34c (UM34C: the last byte is the XOR of the bytes at a fixed
    list of positions; byte 128 is not checked).
  * kolinger/rd-usb interfaces/um.py and davatorium/um25c-client src/um25c.c for the fields
    libsigrok does not read: power (u32 at 6, 1 mW), data groups, charging mode, resistance.

The request is the single byte 0xF0; the answer is one 130-byte big-endian record:

  offset size field                                   unit
  0      2    model id: 0x0963 UM24C, 0x09C9 UM25C, 0x0D4C UM34C
  2      2    bus voltage                             UM24C/UM34C 10 mV; UM25C 1 mV
  4      2    bus current                             UM24C/UM34C 1 mA;  UM25C 0.1 mA
  6      4    power                                   1 mW (all models)
  10     2    temperature                             deg C
  12     2    temperature                             deg F
  14     2    selected data group                     0..9
  16     80   10 data groups: charge u32, energy u32   mAh, mWh
  96     2    USB D+ voltage                          10 mV
  98     2    USB D- voltage                          10 mV
  100    2    charging mode                           0 unknown, 1 QC2.0, 2 QC3.0, 3 APP2.4A, ...
  102    4    threshold-recorded charge               mAh
  106    4    threshold-recorded energy               mWh
  110    2    threshold-recording current threshold   (raw; not used here)
  112    4    threshold-recording time                s
  116    2    threshold recording active              0/1
  118    2    screen timeout                          min
  120    2    backlight                               0..5
  122    4    load resistance                         0.1 ohm
  126    2    current screen
  128    2    UM24C/UM25C: 0xFFF1 end marker; UM34C: byte 129 is the checksum above

Refresh: the meter updates its reading about twice a second (the UM25C's specification gives a
2 Hz refresh; rd-usb's maintainer found UM meters polled faster than every 500 ms answer with
duplicate measurements, kolinger/rd-usb issue #54). Each poll answers with the latest reading, so
polling at ~7 Hz returns each reading 3-4 times; the driver marks a record identical to the
previous one as a repeat (`Sample.repeat`), and attribution counts only the new readings.

Energy counter: the selected data group (offset 14) accumulates charge and energy in 1 mAh / 1 mWh
steps (the UM25C's specification: "energy accumulation 0-99999 mWh"); the driver reports that
group's energy as `Sample.energy_wh`, a second, coarser energy reading for long runs.

Other one-byte commands (0xF1 next screen, 0xF4 clear group, 0xA0+n select group, ...) are never
sent by this driver: measuring must not change the meter's state. The power reading is the
meter's own power field (1 mW steps); voltage and current are kept in the samples as well.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, ClassVar, List, Optional, Tuple

from .meter import MeterDriver, Sample, register_meter

POLL_REQUEST = 0xF0
RECORD_LENGTH = 130
END_MARKER = 0xFFF1
POWER_LSB_W = 0.001
# libsigrok's poll_csum_um34c: positions XOR-ed into the UM34C's last byte.
UM34C_CHECKSUM_POSITIONS = (1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67,
                            69, 73, 79, 83, 89, 97, 99, 109, 111, 113, 119, 121, 127)
CHARGING_MODES = {0: "unknown", 1: "QC2.0", 2: "QC3.0", 3: "APP2.4A", 4: "APP2.1A", 5: "APP1.0A",
                  6: "APP0.5A", 7: "DCP1.5A", 8: "SAMSUNG"}
# libsigrok polls no faster than every 100 ms (UM_POLL_PERIOD_MS); at 9600 baud the 130-byte
# answer itself takes 135 ms, so a UM meter gives about 7 readings per second.
POLL_INTERVAL_S = 0.1
# How often a UM meter refreshes its reading (see above); the emulator holds readings this long.
REFRESH_S = 0.5
ENERGY_COUNTER_STEP_WH = 0.001


def _end_marker_ok(record: bytes) -> bool:
    return struct.unpack_from(">H", record, RECORD_LENGTH - 2)[0] == END_MARKER


def _um34c_checksum(record: bytes) -> int:
    checksum = 0
    for position in UM34C_CHECKSUM_POSITIONS:
        checksum ^= record[position]
    return checksum


def _um34c_checksum_ok(record: bytes) -> bool:
    return _um34c_checksum(record) == record[RECORD_LENGTH - 1]


def _seal_end_marker(body: bytearray) -> None:
    struct.pack_into(">H", body, RECORD_LENGTH - 2, END_MARKER)


def _seal_um34c(body: bytearray) -> None:
    body[RECORD_LENGTH - 2] = 0xFF
    body[RECORD_LENGTH - 1] = _um34c_checksum(body)


@dataclass(frozen=True)
class UmModel:
    model: str
    model_id: int
    voltage_lsb_v: float
    current_lsb_a: float
    check: Callable[[bytes], bool]
    seal: Callable[[bytearray], None]  # writes the end marker or checksum (for the emulator)
    refresh_s: float = REFRESH_S  # the meter measures anew this often; polls in between repeat

    @property
    def header(self) -> bytes:
        return struct.pack(">H", self.model_id)

    def is_record(self, record: bytes) -> bool:
        return (len(record) == RECORD_LENGTH and record[:2] == self.header and self.check(record))


UM_MODELS = {
    "um24c": UmModel("UM24C", 0x0963, 0.01, 0.001, _end_marker_ok, _seal_end_marker),
    "um25c": UmModel("UM25C", 0x09C9, 0.001, 0.0001, _end_marker_ok, _seal_end_marker),
    "um34c": UmModel("UM34C", 0x0D4C, 0.01, 0.001, _um34c_checksum_ok, _seal_um34c),
}


@dataclass(frozen=True)
class UmRecord:
    model: str
    voltage_v: float
    current_a: float
    power_w: float
    temperature_c: int
    temperature_f: int
    data_group: int
    data_groups: Tuple[Tuple[int, int], ...]  # (mAh, mWh) for groups 0..9
    dplus_v: float
    dminus_v: float
    charging_mode: str
    threshold_mah: int
    threshold_mwh: int
    threshold_time_s: int
    resistance_ohm: float


def decode_record(um: UmModel, record: bytes) -> UmRecord:
    """Decode one record already checked with `um.is_record`."""
    volt_raw, amp_raw, power_mw, temp_c, temp_f, group = struct.unpack_from(">HHIHHH", record, 2)
    groups = tuple(struct.unpack_from(">II", record, 16 + 8 * g) for g in range(10))
    dplus, dminus, mode, thr_mah, thr_mwh = struct.unpack_from(">HHHII", record, 96)
    (thr_time,) = struct.unpack_from(">I", record, 112)
    (resistance,) = struct.unpack_from(">I", record, 122)
    return UmRecord(
        model=um.model, voltage_v=volt_raw * um.voltage_lsb_v, current_a=amp_raw * um.current_lsb_a,
        power_w=power_mw * POWER_LSB_W, temperature_c=temp_c, temperature_f=temp_f, data_group=group,
        data_groups=groups, dplus_v=dplus * 0.01, dminus_v=dminus * 0.01,
        charging_mode=CHARGING_MODES.get(mode, f"code {mode}"), threshold_mah=thr_mah,
        threshold_mwh=thr_mwh, threshold_time_s=thr_time, resistance_ohm=resistance * 0.1)


def encode_record(um: UmModel, *, voltage_v: float, current_a: float, temperature_c: int = 25,
                  data_group: int = 0, group_mah: int = 0, group_mwh: int = 0) -> bytes:
    """Build the record a meter in this state sends (used by the emulator).

    Voltage and current are rounded to the model's steps and the power field is computed from the
    rounded values, as a meter computes what it displays.
    """
    volt_raw = min(0xFFFF, max(0, round(voltage_v / um.voltage_lsb_v)))
    amp_raw = min(0xFFFF, max(0, round(current_a / um.current_lsb_a)))
    volts, amps = volt_raw * um.voltage_lsb_v, amp_raw * um.current_lsb_a
    power_mw = round(volts * amps / POWER_LSB_W)
    resistance = min(0xFFFFFFFF, round(volts / amps / 0.1)) if amps > 0 else 99999
    body = bytearray(RECORD_LENGTH)
    struct.pack_into(">HHHIHHH", body, 0, um.model_id, volt_raw, amp_raw, power_mw, temperature_c,
                     round(temperature_c * 9 / 5 + 32), data_group)
    struct.pack_into(">II", body, 16 + 8 * data_group, group_mah, group_mwh)
    struct.pack_into(">I", body, 122, resistance)
    struct.pack_into(">H", body, 120, 5)  # backlight
    um.seal(body)
    return bytes(body)


class RdtechUmMeter(MeterDriver):
    """Polled meter: send 0xF0, read one 130-byte record, resynchronise on anything else."""

    um: ClassVar[UmModel]
    default_baudrate = 9600
    nominal_rate_hz = 7.0  # polls answered per second (about 2 of them new readings)
    energy_counter_step_wh = ENERGY_COUNTER_STEP_WH
    extra_options = ("poll_interval_s",)

    def __init__(self, port: str, *, poll_interval_s: float = POLL_INTERVAL_S, **options):
        super().__init__(port, **options)
        self.poll_interval_s = poll_interval_s
        self._buffer = bytearray()
        self._next_poll_at = 0.0
        self._last_record: Optional[bytes] = None
        self._awaiting: List[float] = []  # when the polls whose answer has not come yet were sent

    @property
    def expects(self) -> str:  # type: ignore[override]
        return (f"{self.um.model} records ({RECORD_LENGTH} bytes starting {self.um.header.hex(' ')}) "
                f"in answer to 0x{POLL_REQUEST:02X}")

    @property
    def frame_time_s(self) -> float:
        return RECORD_LENGTH * self.byte_time_s

    def _on_open(self) -> None:
        self._buffer.clear()
        self._next_poll_at = 0.0
        self._last_record = None
        self._awaiting.clear()

    def _silent_hint(self) -> str:
        return ("is the meter on, and is this its port? For Bluetooth: pair it and bind it with "
                "`rfcomm bind 0 <MAC>` (PIN 1234); `edge-power list` shows the serial ports")

    @classmethod
    def recognises(cls, data: bytes) -> bool:
        start = data.find(cls.um.header)
        while 0 <= start <= len(data) - RECORD_LENGTH:
            if cls.um.is_record(data[start:start + RECORD_LENGTH]):
                return True
            start = data.find(cls.um.header, start + 1)
        return False

    def _read_samples(self) -> List[Sample]:
        now = self.clock()
        if now < self._next_poll_at:
            self.sleep(self._next_poll_at - now)
        request_at = self.clock()
        self._write(bytes([POLL_REQUEST]))
        # An answer later than two deadlines is not coming (ignored request, damaged record).
        self._awaiting = [t for t in self._awaiting if t > request_at - 2 * self.answer_timeout_s]
        self._awaiting.append(request_at)
        self._next_poll_at = request_at + self.poll_interval_s
        samples = self._collect(request_at + self.answer_timeout_s)
        if not samples:
            self.counters.timeouts += 1
        return samples

    @property
    def answer_timeout_s(self) -> float:
        """Twice the record's transfer time plus slack for a Bluetooth link, then poll again."""
        return 2 * self.frame_time_s + 0.5

    def _drain_samples(self) -> List[Sample]:
        return self._collect(self.clock() + self.answer_timeout_s) if self._awaiting else []

    def _collect(self, deadline: float) -> List[Sample]:
        """Records until every poll sent has had its answer, or until `deadline`.

        An answer that came after an earlier deadline (a slow meter, a loaded host) arrives before
        the next poll's: both are taken, so none stays queued to be lost when the port closes. At
        the deadline the answers still missing count as lost (a damaged record, a dropped request).
        """
        samples: List[Sample] = []
        while True:
            record = self._take_record()
            if record is not None:
                samples.append(self._sample(record, self.clock()))
                del self._awaiting[:1]
                if not self._awaiting:
                    # Answers given up on earlier may have come in meanwhile: take them too.
                    self._buffer += self._read(self.serial.in_waiting)
                    while (record := self._take_record()) is not None:
                        samples.append(self._sample(record, self.clock()))
                    return samples
                continue
            if self.clock() >= deadline:
                if samples:
                    self._awaiting.clear()
                return samples
            wanted = RECORD_LENGTH - len(self._buffer) if self._buffer[:2] == self.um.header else 2
            self._buffer += self._read(max(1, wanted))

    def _take_record(self) -> Optional[bytes]:
        """Pop the first valid record off the buffer, discarding anything before it as garbage."""
        header = self.um.header
        while True:
            start = self._buffer.find(header)
            if start < 0:
                # Keep a last byte that may be the first half of a header.
                keep = 1 if self._buffer[-1:] == header[:1] else 0
                self._discard(bytes(self._buffer[:len(self._buffer) - keep]))
                del self._buffer[:len(self._buffer) - keep]
                return None
            if start:
                self._discard(bytes(self._buffer[:start]))
                del self._buffer[:start]
            if len(self._buffer) < RECORD_LENGTH:
                return None
            candidate = bytes(self._buffer[:RECORD_LENGTH])
            if self.um.check(candidate):
                del self._buffer[:RECORD_LENGTH]
                self._accepted_frame()
                return candidate
            # A header by chance inside garbage or a damaged record: skip one byte, look again.
            self._discard(candidate[:1])
            del self._buffer[:1]

    def _sample(self, record: bytes, received_at: float) -> Sample:
        decoded = decode_record(self.um, record)
        # Every field the same (counters and temperature included): the meter had not refreshed.
        # Two new readings equal by chance merge into one, which only understates the rate.
        repeat = record == self._last_record
        self._last_record = record
        # Resolution: the power field's 1 mW step, or the V and I steps at this operating point.
        resolution = max(POWER_LSB_W, decoded.voltage_v * self.um.current_lsb_a
                         + decoded.current_a * self.um.voltage_lsb_v)
        return Sample(t_receipt=received_at, t=received_at - self.frame_time_s,
                      power_w=decoded.power_w, voltage_v=decoded.voltage_v,
                      current_a=decoded.current_a, resolution_w=resolution, repeat=repeat,
                      energy_wh=decoded.data_groups[decoded.data_group % 10][1] / 1000.0)  # mWh


@register_meter
class UM24C(RdtechUmMeter):
    name = "um24c"
    model = "UM24C"
    description = "RDTech UM24C USB meter (10 mV / 1 mA), Bluetooth SPP or USB-serial, 9600 8N1"
    um = UM_MODELS["um24c"]


@register_meter
class UM25C(RdtechUmMeter):
    name = "um25c"
    model = "UM25C"
    description = "RDTech UM25C USB meter (1 mV / 0.1 mA), Bluetooth SPP or USB-serial, 9600 8N1"
    um = UM_MODELS["um25c"]


@register_meter
class UM34C(RdtechUmMeter):
    name = "um34c"
    model = "UM34C"
    description = "RDTech UM34C USB meter (10 mV / 1 mA), Bluetooth SPP or USB-serial, 9600 8N1"
    um = UM_MODELS["um34c"]
