"""Meter protocols without timing: UM record layout, line formats, drivers over in-memory ports."""

import struct

import pytest

from edge_slm.power.emulator import EmulatedSignal, FaultPlan, make_engine
from edge_slm.power.line_protocol import LineFormat
from edge_slm.power.meter import METERS, MeterDriver, Sample, create_meter, register_meter
from edge_slm.power.rdtech_um import (UM_MODELS, UM34C_CHECKSUM_POSITIONS, decode_record,
                                      encode_record)
from edge_slm.power.traces import ConstantTrace
from edge_slm.common.errors import EdgeError
from tests.power.conftest import read_for, virtual_meter


def hand_built_record(model_id: int, volt_raw: int, amp_raw: int) -> bytearray:
    """A record written field by field from the documented offsets, not with encode_record."""
    rec = bytearray(130)
    struct.pack_into(">H", rec, 0, model_id)
    struct.pack_into(">H", rec, 2, volt_raw)
    struct.pack_into(">H", rec, 4, amp_raw)
    struct.pack_into(">I", rec, 6, 2340)  # mW
    struct.pack_into(">H", rec, 10, 31)  # deg C
    struct.pack_into(">H", rec, 12, 88)  # deg F
    struct.pack_into(">H", rec, 14, 3)  # selected group
    struct.pack_into(">II", rec, 16 + 8 * 3, 1234, 5678)  # group 3: mAh, mWh
    struct.pack_into(">H", rec, 96, 60)  # D+ 0.60 V
    struct.pack_into(">H", rec, 98, 270)  # D- 2.70 V
    struct.pack_into(">H", rec, 100, 2)  # QC3.0
    struct.pack_into(">I", rec, 102, 11)
    struct.pack_into(">I", rec, 106, 22)
    struct.pack_into(">I", rec, 112, 33)
    struct.pack_into(">I", rec, 122, 112)  # 11.2 ohm
    struct.pack_into(">H", rec, 128, 0xFFF1)
    return rec


def test_um25c_record_decodes_at_documented_offsets_and_scales():
    um = UM_MODELS["um25c"]
    rec = bytes(hand_built_record(0x09C9, 5123, 4567))
    assert um.is_record(rec)
    r = decode_record(um, rec)
    assert r.voltage_v == pytest.approx(5.123)  # UM25C: 1 mV steps
    assert r.current_a == pytest.approx(0.4567)  # UM25C: 0.1 mA steps
    assert r.power_w == pytest.approx(2.340)
    assert (r.temperature_c, r.temperature_f, r.data_group) == (31, 88, 3)
    assert r.data_groups[3] == (1234, 5678) and r.data_groups[0] == (0, 0)
    assert (r.dplus_v, r.dminus_v) == (pytest.approx(0.60), pytest.approx(2.70))
    assert r.charging_mode == "QC3.0"
    assert (r.threshold_mah, r.threshold_mwh, r.threshold_time_s) == (11, 22, 33)
    assert r.resistance_ohm == pytest.approx(11.2)


def test_um24c_uses_coarser_steps_than_um25c():
    um = UM_MODELS["um24c"]
    rec = bytes(hand_built_record(0x0963, 512, 456))
    r = decode_record(um, rec)
    assert r.voltage_v == pytest.approx(5.12)  # 10 mV steps
    assert r.current_a == pytest.approx(0.456)  # 1 mA steps
    assert not UM_MODELS["um25c"].is_record(rec)  # another model's id


def test_end_marker_is_required_for_um24c_and_um25c():
    rec = hand_built_record(0x09C9, 5000, 4000)
    rec[129] = 0xF2
    assert not UM_MODELS["um25c"].is_record(bytes(rec))


def test_um34c_checksum_is_the_xor_of_the_listed_positions():
    um = UM_MODELS["um34c"]
    rec = bytearray(encode_record(um, voltage_v=5.07, current_a=0.812))
    assert rec[:2] == b"\x0d\x4c" and um.is_record(bytes(rec))
    expected = 0
    for position in UM34C_CHECKSUM_POSITIONS:
        expected ^= rec[position]
    assert rec[129] == expected
    covered = bytearray(rec)
    covered[3] ^= 0x01  # voltage low byte: covered by the checksum
    assert not um.is_record(bytes(covered))
    uncovered = bytearray(rec)
    uncovered[2] ^= 0x01  # voltage high byte: libsigrok does not check it either
    assert um.is_record(bytes(uncovered))


@pytest.mark.parametrize("name", sorted(UM_MODELS))
def test_encoder_rounds_to_each_models_steps(name):
    um = UM_MODELS[name]
    r = decode_record(um, encode_record(um, voltage_v=5.0437, current_a=0.41234))
    assert r.model == um.model
    assert r.voltage_v == pytest.approx(round(5.0437 / um.voltage_lsb_v) * um.voltage_lsb_v)
    assert r.current_a == pytest.approx(round(0.41234 / um.current_lsb_a) * um.current_lsb_a)
    assert r.power_w == pytest.approx(round(r.voltage_v * r.current_a, 3))


def test_um_driver_skips_garbage_bursts_and_counts_each():
    driver, port, clock = virtual_meter("um25c", "um25c", faults=FaultPlan(garbage_probability=0.3, seed=5))
    samples = read_for(driver, clock, 20.0)
    assert port.stats.garbage_injected > 10
    assert len(samples) == port.stats.frames_sent  # no valid record lost
    assert driver.counters.garbage_frames == port.stats.garbage_injected
    assert driver.counters.timeouts == 0
    assert all(s.power_w == pytest.approx(2.0, abs=0.1) for s in samples)
    assert driver.emulated  # the in-memory emulator port labels itself


def test_um_driver_recovers_from_dropped_bytes():
    driver, port, clock = virtual_meter("um25c", "um25c",
                                        faults=FaultPlan(drop_byte_probability=0.001, seed=2))
    samples = read_for(driver, clock, 30.0)
    assert port.stats.frames_corrupted > 5
    assert len(samples) == port.stats.frames_sent
    # Each damaged record is thrown away, after a timeout the meter is polled again.
    assert 0 < driver.counters.garbage_frames <= port.stats.frames_corrupted
    assert driver.counters.timeouts == port.stats.frames_corrupted


def test_um_answers_that_come_after_a_timeout_are_all_stored():
    """A meter (or a loaded host) slower than the driver's deadline: late records queue up behind the
    next one; each is stored, none left queued to be lost when the port closes."""
    driver, port, clock = virtual_meter("um25c", "um25c")
    port.latency_jitter_s = 1.5  # some answers come after the driver's 0.77 s deadline
    samples = read_for(driver, clock, 60.0)
    clock.sleep(3.0)  # everything still on its way arrives
    samples += driver.read_samples()  # one more poll cycle takes its own answer and every queued one
    assert driver.counters.timeouts > 5
    assert port.in_waiting == 0  # nothing left queued
    # Every poll answered is stored but perhaps the last one's, later than the deadline.
    assert len(samples) == port.stats.frames_sent >= port.stats.requests - 1


def test_um_sample_time_is_receipt_minus_record_transfer_time():
    driver, port, clock = virtual_meter("um25c", "um25c")
    sample = driver.read_samples()[0]
    assert sample.t_receipt - sample.t == pytest.approx(130 * 10 / 9600)
    assert sample.resolution_w >= 0.001


def test_um_meter_holds_each_reading_for_its_refresh_period_and_the_driver_says_so():
    driver, port, clock = virtual_meter("um25c", "um25c")
    samples = read_for(driver, clock, 20.0)
    new = [s for s in samples if not s.repeat]
    assert UM_MODELS["um25c"].refresh_s == 0.5
    assert 6.5 < len(samples) / 20.0 < 8.0  # polls answered at 9600 baud
    assert len(new) in (40, 41)  # but a new reading only every 0.5 s
    for previous, sample in zip(samples, samples[1:]):
        if sample.repeat:  # the very same reading, counters included
            assert (sample.power_w, sample.voltage_v, sample.current_a, sample.energy_wh) == \
                   (previous.power_w, previous.voltage_v, previous.current_a, previous.energy_wh)
    # Between two new readings: the refresh period, give or take one poll.
    intervals = [b.t - a.t for a, b in zip(new, new[1:])]
    assert all(0.5 - 0.15 < dt < 0.5 + 0.15 for dt in intervals)


@pytest.mark.parametrize("refresh_s,readings", [(0.2, (100, 101)), (1.0, (20, 21))])
def test_refresh_period_is_configurable(refresh_s, readings):
    driver, port, clock = virtual_meter("um25c", "um25c", engine_options={"refresh_s": refresh_s})
    assert sum(not s.repeat for s in read_for(driver, clock, 20.0)) in readings


def test_refresh_zero_is_an_idealised_meter_with_a_new_reading_for_every_poll():
    driver, port, clock = virtual_meter("um25c", "um25c", engine_options={"refresh_s": 0})
    samples = read_for(driver, clock, 10.0)
    # Two new readings equal in every field by chance count as one: rare at UM25C resolution.
    assert len(samples) > 65 and sum(s.repeat for s in samples) <= 2


@pytest.mark.parametrize("protocol,refresh_s,message", [
    ("um25c", -0.5, "refresh period must be 0 or more seconds"),
    ("line", 0.5, "a refresh period applies to the UM meters"),
])
def test_bad_refresh_period_is_a_one_line_error(protocol, refresh_s, message):
    with pytest.raises(EdgeError) as info:
        make_engine(protocol, EmulatedSignal(ConstantTrace(2.0)), refresh_s=refresh_s)
    assert message in info.value.message and info.value.hint


class OneRecordPort:
    """A serial port whose meter answers the first poll with the given bytes."""

    def __init__(self, record: bytes):
        self.pending = b""
        self.record = record

    def write(self, data: bytes) -> int:
        self.pending, self.record = self.pending + self.record, b""
        return len(data)

    def read(self, size: int = 1) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def reset_input_buffer(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_um_energy_counter_is_the_selected_data_groups_and_counts_what_was_shown():
    rec = bytes(hand_built_record(0x09C9, 5000, 4000))  # group 3 selected: 1234 mAh, 5678 mWh
    assert UM_MODELS["um25c"].is_record(rec)
    recorded = create_meter("um25c", "answers-one-record", opener=lambda *a: OneRecordPort(rec))
    recorded.open()
    assert recorded.read_samples()[0].energy_wh == pytest.approx(5.678)
    driver, port, clock = virtual_meter("um25c", "um25c", watts=2.0)
    samples = read_for(driver, clock, 60.0)
    counts = [s.energy_wh for s in samples]
    assert counts == sorted(counts) and set(counts) <= {k / 1000 for k in range(100)}  # whole mWh
    shown_j = sum(a.power_w * 0.5 for a in samples if not a.repeat)  # each reading shown 0.5 s
    assert counts[-1] * 3600 == pytest.approx(shown_j, abs=2 * 3.6)  # 1 mWh = 3.6 J steps
    assert driver.energy_counter_step_wh == 0.001


@pytest.mark.parametrize("spec,line,expected", [
    ("kv:V=voltage[V],mA=current[mA],mW=power[mW],ms=time[ms]", "V=5.012 mA=412.5 mW=2067.3 ms=1500",
     {"voltage": 5.012, "current": 0.4125, "power": 2.0673, "time": 1.5}),
    ("kv:V=voltage[V],mA=current[mA],mW=power[mW],ms=time[ms]", "mW:2067.3, V:5.0",
     {"voltage": 5.0, "power": 2.0673}),
    ("csv:time[ms],voltage[mV],current[mA]", "1500;5012;412.5", {"time": 1.5, "voltage": 5.012, "current": 0.4125}),
    ("csv:-,power[W]", "17,2.25\r", {"power": 2.25}),
])
def test_line_formats_parse_units(spec, line, expected):
    values = LineFormat.parse(spec).parse_line(line)
    assert {k: v for k, (v, _) in values.items()} == pytest.approx(expected)


@pytest.mark.parametrize("line", ["hello world", "V=5.0 mA=400 V=5.0 mA=400", "1,2", "V=5.0",
                                  "V=5.0V mA=400", ""])
def test_line_format_rejects_lines_that_do_not_fit(line):
    fmt = LineFormat.parse("kv:V=voltage[V],mA=current[mA]") if "=" in line or not line \
        else LineFormat.parse("csv:voltage[V],current[A],power[W]")
    assert fmt.parse_line(line) is None


@pytest.mark.parametrize("spec", ["xml:V=voltage[V]", "csv:volts[V]", "csv:voltage[kV],current[A]",
                                  "kv:voltage[V]", "csv:time[ms]", "csv:voltage[V],voltage[mV],current[A]"])
def test_bad_line_format_is_a_one_line_error(spec):
    with pytest.raises(EdgeError) as info:
        LineFormat.parse(spec)
    assert "\n" not in info.value.one_line() and info.value.hint


def test_line_resolution_comes_from_printed_decimals():
    values = LineFormat.parse("csv:voltage[V],current[mA]").parse_line("5.01,412.5")
    assert values["voltage"] == (pytest.approx(5.01), pytest.approx(0.01))
    assert values["current"] == (pytest.approx(0.4125), pytest.approx(0.0001))


def test_line_driver_reads_every_line_after_the_first_and_counts_garbage():
    driver, port, clock = virtual_meter("line", "line", faults=FaultPlan(garbage_probability=0.2, seed=4))
    samples = read_for(driver, clock, 10.0)
    # The first line after opening may have been joined half way: it is skipped, not counted.
    assert len(samples) == port.stats.frames_sent - 1
    assert driver.counters.garbage_frames == port.stats.garbage_injected > 10
    assert [s.device_time_s for s in samples[:2]] == pytest.approx([0.10, 0.15])
    assert all(s.power_w == pytest.approx(2.0, abs=0.1) for s in samples)


def test_line_driver_computes_power_from_voltage_and_current():
    fmt = "csv:voltage[V],current[A]"
    driver, port, clock = virtual_meter("line", "line", driver_options={"line_format": fmt},
                                        engine_options={"line_format": fmt})
    samples = read_for(driver, clock, 1.0)
    assert samples and all(s.power_w == pytest.approx(s.voltage_v * s.current_a) for s in samples)


def test_registry_offers_the_meters_and_rejects_unknown_names():
    assert {"um24c", "um25c", "um34c", "line"} <= set(METERS)
    for cls in METERS.values():
        assert cls.description and cls.model and cls.nominal_rate_hz > 0
    with pytest.raises(EdgeError) as info:
        create_meter("um99x", "/dev/null")
    assert "um25c" in info.value.hint


def test_a_new_meter_is_one_small_class_and_pyserial_urls_work():
    @register_meter
    class LoopbackMeter(MeterDriver):
        name, model, description = "test-loopback", "loopback", "reads back what it writes"
        expects, nominal_rate_hz = "P=<watts> lines", 10.0

        def _read_samples(self):
            self._write(b"P=1.25\n")
            line = self.serial.readline()
            now = self.clock()
            return [Sample(t_receipt=now, t=now, power_w=float(line[2:]))] if line else []

    try:
        meter = create_meter("test-loopback", "loop://")
        meter.open()
        assert meter.probe(1.0)[0].power_w == 1.25
        assert not meter.emulated  # loop:// is not an emulator's port
        meter.close()
    finally:
        del METERS["test-loopback"]


def test_bad_pyserial_url_is_a_one_line_error():
    with pytest.raises(EdgeError) as info:
        create_meter("um25c", "nosuch://x").open()
    assert "nosuch://x" in info.value.one_line()
