"""Meters through the emulator's real pseudo-terminals, with pyserial as for a real meter.

Covers the energy bar through a real 5 s pty session, measure_workload (the runtime's entry point)
against an `edge-power emulate` process following this process's CPU load, and one test per fault:
unplugged mid-run, garbage, wrong meter type, silent port, absent, permission denied, busy port,
a stall survived, the port coming back, and the emulated label.
"""

import csv
import json
import os
import subprocess
import sys
import threading
import time
import traceback

import pytest

from edge_slm.power.emulated_ports import (emulated_port_info, register_emulated_pty,
                                           running_emulators)
from edge_slm.power.emulator import EmulatedSignal, FaultPlan, PtyEmulator, make_engine
from edge_slm.power.rdtech_um import UM_MODELS, encode_record
from edge_slm.power.sampler import Sampler
from edge_slm.power.session import METER_NAMES, measure_workload
from edge_slm.power.traces import ConstantTrace, LevelTrace
from edge_slm.common.errors import EdgeError

IDLE_W, ACTIVE_W = 2.0, 3.5


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_POWER_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def emulator():
    started = []

    def start(protocol="um25c", trace=None, faults=None, link=None, seed=0):
        engine = make_engine(protocol, EmulatedSignal(trace or ConstantTrace(IDLE_W), seed=seed))
        emu = PtyEmulator(engine, faults=faults, link=link, protocol=protocol).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()
        assert emu.stats.error is None


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_energy_per_inference_within_2_percent_through_a_real_pty_5s_run(emulator, tmp_path):
    level = LevelTrace(IDLE_W)
    emu = emulator(trace=level, seed=7)
    switched = {}

    def workload():  # the emulated device draws ACTIVE_W exactly while "inferring"
        switched["on"] = time.monotonic()
        level.set(ACTIVE_W)
        time.sleep(5.0)
        level.set(IDLE_W)
        switched["off"] = time.monotonic()
        return 250, "stats"

    warnings = []
    result, payload = measure_workload(workload, meter="um25c", port=emu.port, baseline_s=2.0,
                                       samples_csv=str(tmp_path / "samples.csv"), warn=warnings.append)
    truth_j = (ACTIVE_W - IDLE_W) * (switched["off"] - switched["on"]) / 250
    error_j = result["energy_per_inference_mj"] / 1e3 - truth_j
    print(f"5 s pty run: error {error_j / truth_j:+.3%}, uncertainty ±{result['relative_uncertainty']:.2%}")
    assert abs(error_j) <= 0.02 * truth_j
    assert abs(error_j) <= result["uncertainty_mj"] / 1e3
    assert payload == "stats"
    assert result["emulated"] is True and result["source"] == "emulated meter"
    assert result["avg_idle_w"] == pytest.approx(IDLE_W, abs=0.01)
    assert result["avg_active_w"] == pytest.approx(ACTIVE_W, abs=0.01)
    assert 30 <= result["samples_used"] <= 42  # ~7 Hz over 5 s
    assert not result["partial"] and result["garbage_frames"] == 0
    rows = csv_rows(tmp_path / "samples.csv")
    assert len(rows) == result["samples_total"] and {r["emulated"] for r in rows} == {"true"}
    assert warnings == result["warnings"]


def test_measure_workload_with_cpu_following_emulator_and_busy_loop(tmp_path):
    assert {"um24c", "um25c", "um34c", "line"} <= set(METER_NAMES)
    emulator_process = subprocess.Popen(
        [sys.executable, "-m", "edge_slm.power.cli", "emulate", "--protocol", "um25c", "--trace", "cpu",
         "--follow-pid", str(os.getpid()), "--idle-w", str(IDLE_W), "--active-w", str(ACTIVE_W), "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = emulator_process.stdout.readline().strip().removeprefix("port: ")

        def busy_loop():
            wall, cpu = time.monotonic(), time.process_time()
            runs, end = 0, wall + 2.0
            while time.monotonic() < end:
                sum(range(2000))
                runs += 1
            share = (time.process_time() - cpu) / (time.monotonic() - wall) / os.cpu_count()
            return runs, {"runs": runs, "cpu_share": share}

        result, payload = measure_workload(busy_loop, meter="um25c", port=port, baseline_s=1.0,
                                           samples_csv=str(tmp_path / "s.csv"), warn=lambda m: None)
    finally:
        emulator_process.terminate()
        _, stderr = emulator_process.communicate(timeout=10)
    assert emulator_process.returncode == 130 and "EMULATED" in stderr  # stopped by SIGTERM
    json.dumps(result)
    assert result["emulated"] is True and result["emulator"]["protocol"] == "um25c"
    assert payload["runs"] == result["inferences"] > 0
    # The emulated device draws what this process's CPU share implies (however busy the machine).
    expected_excess_w = (ACTIVE_W - IDLE_W) * payload["cpu_share"]
    assert result["avg_active_w"] - result["avg_idle_w"] == pytest.approx(expected_excess_w, rel=0.3)
    assert result["energy_per_inference_mj"] > 0 and result["inferences_per_joule"] > 0
    assert result["uncertainty_mj"] > 0 and result["window_s"] == pytest.approx(2.0, abs=0.1)
    assert not result["partial"]
    assert {r["emulated"] for r in csv_rows(tmp_path / "s.csv")} == {"true"}


def test_meter_unplugged_mid_run_keeps_samples_and_marks_energy_partial(emulator, tmp_path):
    level = LevelTrace(IDLE_W)
    emu = emulator(trace=level, faults=FaultPlan(disconnect_at_s=2.2))

    def workload():
        level.set(ACTIVE_W)
        time.sleep(3.0)
        level.set(IDLE_W)
        return 300, "benchmark finished"

    warnings = []
    result, payload = measure_workload(workload, meter="um25c", port=emu.port, baseline_s=1.0,
                                       samples_csv=str(tmp_path / "s.csv"), warn=warnings.append)
    assert payload == "benchmark finished"
    assert result["partial"] is True and 0.1 < result["coverage"] < 0.8
    assert result["disconnects"] == 1 and emu.stats.disconnects == 1
    assert any("meter lost" in w for w in warnings)
    assert any("partial" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert result["energy_per_inference_mj"] == pytest.approx(1.5 * 3.0 / 300 * 1e3, rel=0.1)
    rows = csv_rows(tmp_path / "s.csv")
    assert len(rows) == result["samples_total"] == emu.stats.frames_sent > 0


def test_garbage_frames_are_counted_and_no_valid_sample_is_lost(emulator):
    emu = emulator(faults=FaultPlan(garbage_probability=0.3, seed=11))
    sampler = Sampler("um25c", emu.port).start()
    time.sleep(2.5)
    summary = sampler.stop()
    assert emu.stats.garbage_injected > 0
    assert summary.garbage_frames == emu.stats.garbage_injected
    assert summary.samples == emu.stats.frames_sent


@pytest.mark.parametrize("protocol,meter,expected,hint", [
    ("line", "um25c", "does not answer like a UM25C", "--meter line"),
    ("um24c", "um25c", "sends UM24C data", "--meter um24c"),
    ("um25c", "line", "is silent", "--meter um25c"),
])
def test_wrong_meter_type_is_a_one_line_error_after_a_short_timeout(emulator, protocol, meter,
                                                                     expected, hint):
    emu = emulator(protocol=protocol)
    started = time.monotonic()
    with pytest.raises(EdgeError) as info:
        Sampler(meter, emu.port, probe_timeout_s=1.0).start()
    assert time.monotonic() - started < 2.5
    line = info.value.one_line()
    assert expected in line and hint in info.value.hint and "\n" not in line


def test_silent_port_is_a_one_line_error_naming_what_was_expected(emulator):
    emu = emulator(faults=FaultPlan(stalls=((0.0, float("inf")),)))
    with pytest.raises(EdgeError) as info:
        Sampler("um25c", emu.port, probe_timeout_s=1.0).start()
    assert "silent" in info.value.message and "UM25C records" in info.value.message
    assert "0xF0" in info.value.message


def test_absent_port_is_a_one_line_error():
    with pytest.raises(EdgeError) as info:
        Sampler("um25c", "/dev/ttyEDGE-absent").start()
    assert info.value.message == "port /dev/ttyEDGE-absent does not exist (meter unplugged or not paired?)"
    assert "edge-power list" in info.value.hint


def run_cli_as_nobody(argv):
    """Run `edge-power argv` in a forked child that dropped root; (exit code, stderr text)."""
    from edge_slm.power.cli import main
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec, so the root-only interpreter path does not matter
        code = 99
        try:
            sys.stderr = os.fdopen(write_end, "w")  # pytest may have replaced the real stderr
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = main(argv)
            sys.stderr.flush()
        except BaseException:
            traceback.print_exc()  # into the pipe: the test shows why
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        stderr = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), stderr


def test_permission_denied_port_is_a_one_line_error(emulator):
    emu = emulator()
    if os.geteuid() != 0:
        os.chmod(emu.pty_path, 0)
        with pytest.raises(EdgeError) as info:
            Sampler("um25c", emu.port).start()
        assert info.value.message.startswith("permission denied")
        return
    # root ignores file modes: open the root-only (0600) pty as user nobody instead.
    assert os.stat(emu.pty_path).st_mode & 0o077 == 0
    code, stderr = run_cli_as_nobody(["record", "--port", emu.pty_path, "--duration", "1",
                                      "-o", "/tmp/never-written.csv"])
    assert code == 2
    assert stderr.startswith(f"edge-power: error: permission denied opening {emu.pty_path} (hint:")
    assert stderr.count("\n") == 1


def test_busy_port_is_a_one_line_error(emulator):
    emu = emulator()
    first = Sampler("um25c", emu.port).start()
    try:
        with pytest.raises(EdgeError) as info:
            Sampler("um25c", emu.port).start()
        assert info.value.message == f"port {emu.port} is busy: another program has it open"
    finally:
        first.stop()


def test_stall_is_survived_and_reported(emulator):
    emu = emulator(faults=FaultPlan(stalls=((0.8, 1.6),)))
    sampler = Sampler("um25c", emu.port, silence_timeout_s=1.0).start()
    time.sleep(3.2)
    summary = sampler.stop()
    kinds = [e.kind for e in summary.events]
    assert "silent" in kinds and "resumed" in kinds[kinds.index("silent"):]
    assert summary.timeouts >= 1 and summary.disconnects == 0
    assert summary.samples == emu.stats.frames_sent
    assert sampler.samples[-1].t_receipt > sampler.events[kinds.index("resumed")].t - 0.5


def test_port_coming_back_is_reopened_and_every_sample_sent_is_stored(emulator, tmp_path):
    link = str(tmp_path / "tty-um25c")
    emu = emulator(link=link, faults=FaultPlan(disconnect_at_s=1.0, reconnect_after_s=0.6))
    sampler = Sampler("um25c", link, csv_path=str(tmp_path / "s.csv")).start()
    time.sleep(3.0)
    summary = sampler.stop()
    assert (emu.stats.disconnects, emu.stats.reconnects) == (1, 1)
    assert (summary.disconnects, summary.reconnects) == (1, 1)
    assert summary.samples == emu.stats.frames_sent == len(csv_rows(tmp_path / "s.csv"))
    assert summary.emulated


def test_lost_port_path_now_leading_elsewhere_is_not_opened(emulator, tmp_path):
    link = str(tmp_path / "tty-um25c")
    first = emulator(link=link, faults=FaultPlan(disconnect_at_s=0.5))  # gone for good
    sampler = Sampler("um25c", link).start()
    time.sleep(1.0)
    other = emulator(link=str(tmp_path / "other"))
    os.symlink(other.pty_path, link)  # the old path now leads to another meter
    time.sleep(1.5)
    summary = sampler.stop()
    assert first.stats.disconnects == 1 and summary.disconnects == 1
    assert summary.reconnects == 0 and other.stats.requests == 0


def test_emulated_label_needs_a_live_registered_emulator(emulator, tmp_path):
    emu = emulator(link=str(tmp_path / "link"))
    assert emulated_port_info(emu.pty_path)["pid"] == os.getpid()
    assert emulated_port_info(emu.port)["protocol"] == "um25c"  # through the symlink
    assert [e["pty"] for e in running_emulators()] == [emu.pty_path]
    pty_path = emu.pty_path
    emu.stop()
    assert emulated_port_info(pty_path) is None and running_emulators() == []
    # An entry whose pid has died (and may be reused) does not count.
    master, slave = os.openpty()
    try:
        bare = os.ttyname(slave)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        register_emulated_pty(bare, protocol="um25c")
        entry = tmp_path / "state" / "emulators" / (bare.strip("/").replace("/", "_") + ".json")
        data = json.loads(entry.read_text())
        entry.write_text(json.dumps(dict(data, pid=dead.pid)))
        assert emulated_port_info(bare) is None
        entry.write_text(json.dumps(dict(data, pid_start_time="1")))  # our pid, another start
        assert emulated_port_info(bare) is None
    finally:
        os.close(master)
        os.close(slave)


def test_a_meter_on_an_unregistered_port_is_never_labelled_emulated(tmp_path):
    """A stand-in for a real UM25C: the right bytes on a pty that no emulator registered."""
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def answer_polls():
        while not stop.is_set():
            try:
                request = os.read(master, 16)
            except OSError:
                return
            for _ in range(request.count(b"\xf0")):
                os.write(master, encode_record(UM_MODELS["um25c"], voltage_v=5.0, current_a=0.4))

    threading.Thread(target=answer_polls, daemon=True).start()
    try:
        sampler = Sampler("um25c", os.ttyname(slave), csv_path=str(tmp_path / "s.csv")).start()
        time.sleep(0.5)
        summary = sampler.stop()
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    assert summary.samples > 0 and summary.emulated is False
    assert {r["emulated"] for r in csv_rows(tmp_path / "s.csv")} == {"false"}
