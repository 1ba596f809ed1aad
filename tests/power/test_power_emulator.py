"""The emulator through real pseudo-terminals, and the sampler's faults on the virtual clock.

Whatever depends on timing (the meter unplugged mid-run and coming back, garbage, stalls, a wrong
meter type, silence, a lost port's path reused) runs on the virtual clock (tests/power/conftest.py),
so load on the machine cannot change what is measured. The pty tests below sleep a fraction of a
second at most; the one real-time test, `test_emulate_end_to_end_on_a_real_pty`
(marked e2e_pty), runs `edge-power emulate` as a process, reads it in real time and asserts only
what load cannot change.
"""

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest

from edge_slm.common.errors import EdgeError
from edge_slm.power import sampler as sampler_module
from edge_slm.power.cli import main
from edge_slm.power.emulated_ports import (emulated_port_info, register_emulated_pty,
                                           running_emulators)
from edge_slm.power.emulator import EmulatedSignal, FaultPlan, PtyEmulator, make_engine
from edge_slm.power.rdtech_um import UM_MODELS, encode_record
from edge_slm.power.sampler import Sampler
from edge_slm.power.session import measure_workload
from edge_slm.power.traces import ConstantTrace, LevelTrace
from tests.conftest import ChildLines, stop_child, wait_for
from tests.power.conftest import csv_rows, virtual_port, virtual_sampler

IDLE_W, ACTIVE_W = 2.0, 3.5


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


# ---- on the virtual clock ----------------------------------------------------------------------

def test_meter_unplugged_mid_run_keeps_samples_and_marks_energy_partial(tmp_path):
    level = LevelTrace(IDLE_W)
    port, clock = virtual_port(trace=level, faults=FaultPlan(disconnect_at_s=2.2))

    def workload():
        level.set(ACTIVE_W)
        clock.sleep(3.0)
        level.set(IDLE_W)
        return 300, "benchmark finished"

    warnings = []
    result, payload = measure_workload(workload, meter="um25c", port="virtual-um25c",
                                       meter_options={"opener": port.opener}, clock=clock, baseline_s=1.0,
                                       samples_csv=str(tmp_path / "s.csv"), warn=warnings.append)
    assert payload == "benchmark finished"
    assert result["partial"] is True and 0.1 < result["coverage"] < 0.8
    assert result["disconnects"] == 1 and port.stats.disconnects == 1
    assert any("meter lost" in w for w in warnings)
    assert any("partial" in w for w in warnings)
    assert any("no after-baseline" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert result["energy_per_inference_mj"] == pytest.approx(1.5 * 3.0 / 300 * 1e3, rel=0.1)
    rows = csv_rows(tmp_path / "s.csv")
    assert len(rows) == result["samples_total"] == port.stats.frames_sent > 0
    assert {r["emulated"] for r in rows} == {"true"} and {r["repeat"] for r in rows} == {"true", "false"}


def test_garbage_frames_are_counted_and_no_valid_sample_is_lost():
    sampler, port, clock = virtual_sampler(faults=FaultPlan(garbage_probability=0.3, seed=11))
    sampler.start()
    clock.sleep(20.0)
    summary = sampler.stop()
    assert port.stats.garbage_injected > 20
    assert summary.garbage_frames == port.stats.garbage_injected
    assert summary.samples == port.stats.frames_sent


@pytest.mark.parametrize("protocol,meter,expected,hint", [
    ("line", "um25c", "does not answer like a UM25C", "--meter line"),
    ("um24c", "um25c", "sends UM24C data", "--meter um24c"),
    ("um25c", "line", "is silent", "--meter um25c"),
])
def test_wrong_meter_type_is_a_one_line_error_after_the_probe_timeout(protocol, meter, expected, hint):
    sampler, port, clock = virtual_sampler(meter, protocol, sampler_options={"probe_timeout_s": 1.0})
    with pytest.raises(EdgeError) as info:
        sampler.start()
    assert 1.0 <= clock() < 1.0 + 0.8  # gives up within one poll cycle (0.77 s) of the probe's time
    line = info.value.one_line()
    assert expected in line and hint in info.value.hint and "\n" not in line


def test_silent_port_is_a_one_line_error_naming_what_was_expected():
    sampler, port, clock = virtual_sampler(faults=FaultPlan(stalls=((0.0, float("inf")),)),
                                           sampler_options={"probe_timeout_s": 1.0})
    with pytest.raises(EdgeError) as info:
        sampler.start()
    assert "silent" in info.value.message and "UM25C records" in info.value.message
    assert "0xF0" in info.value.message and port.stats.frames_not_sent_stalled > 0


def test_stall_is_survived_and_reported():
    sampler, port, clock = virtual_sampler(faults=FaultPlan(stalls=((0.8, 2.6),)),
                                           sampler_options={"silence_timeout_s": 2.0})
    sampler.start()
    clock.sleep(6.0)
    summary = sampler.stop()
    kinds = [e.kind for e in summary.events]
    assert "silent" in kinds and "resumed" in kinds[kinds.index("silent"):]
    assert summary.timeouts >= 1 and summary.disconnects == 0
    assert summary.samples == port.stats.frames_sent
    assert sampler.samples[-1].t_receipt > summary.events[kinds.index("resumed")].t + 1.0


def test_port_coming_back_is_reopened_and_every_sample_sent_is_stored(tmp_path):
    sampler, port, clock = virtual_sampler(faults=FaultPlan(disconnect_at_s=1.0, reconnect_after_s=0.6),
                                           sampler_options={"csv_path": str(tmp_path / "s.csv")})
    sampler.start()
    clock.sleep(3.0)
    summary = sampler.stop()
    assert (port.stats.disconnects, port.stats.reconnects) == (1, 1)
    assert (summary.disconnects, summary.reconnects) == (1, 1)
    assert summary.samples == port.stats.frames_sent == len(csv_rows(tmp_path / "s.csv"))
    assert summary.emulated


def test_a_samples_csv_that_cannot_be_written_is_refused_before_the_meter_opens(tmp_path):
    for csv_path, says in ((tmp_path / "missing" / "s.csv", "does not exist"), (tmp_path, "is a directory")):
        sampler, port, clock = virtual_sampler(sampler_options={"csv_path": str(csv_path)})
        with pytest.raises(EdgeError, match=says):
            sampler.start()
        assert not sampler.driver.is_open and port.stats.frames_sent == 0


def test_lost_port_path_now_leading_elsewhere_is_not_opened(monkeypatch):
    """A lost pty's path reused by another emulator (or anything else) is never reopened."""
    serving = {"pid": 111, "pid_start_time": "1", "instance": "first"}
    monkeypatch.setattr(sampler_module, "emulated_port_info", lambda port: dict(serving))
    sampler, port, clock = virtual_sampler(faults=FaultPlan(disconnect_at_s=0.5, reconnect_after_s=0.5))
    sampler.start()
    clock.sleep(0.8)
    serving["instance"] = "another"  # the path now leads to another emulator
    clock.sleep(2.0)
    summary = sampler.stop()
    assert summary.disconnects == 1 and summary.reconnects == 0 and port.stats.reconnects == 0


# ---- real pseudo-terminals ---------------------------------------------------------------------

def test_absent_port_is_a_one_line_error():
    with pytest.raises(EdgeError) as info:
        Sampler("um25c", "/dev/ttyEDGE-absent").start()
    assert info.value.message == "port /dev/ttyEDGE-absent does not exist (meter unplugged or not paired?)"
    assert "edge-power list" in info.value.hint


def run_cli_as_nobody(argv):
    """Run `edge-power argv` in a forked child that dropped root; (exit code, stderr text)."""
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
    # Waited for with a deadline: a child that hangs is killed and the test fails.
    deadline, chunks = time.monotonic() + 60, []
    with os.fdopen(read_end, "rb") as f:
        while True:
            ready, _, _ = select.select([f], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"edge-power {' '.join(argv)} as nobody did not finish in 60 s: killed")
            chunk = os.read(f.fileno(), 4096)
            if not chunk:  # the child has closed its end: it is exiting
                break
            chunks.append(chunk)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), b"".join(chunks).decode()


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
        dead.wait(timeout=60)
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
        wait_for(lambda: sampler.samples, 60, "a sample from the stand-in meter")
        summary = sampler.stop()
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    assert summary.samples > 0 and summary.emulated is False
    assert {r["emulated"] for r in csv_rows(tmp_path / "s.csv")} == {"false"}


@pytest.mark.e2e_pty
def test_emulate_end_to_end_on_a_real_pty(tmp_path):
    """`edge-power emulate` as a process, read through its real pty in real time with garbage and the
    port unplugged and back: asserts only what load on the machine cannot change (the unplug comes
    2 s after the emulator is up, the sampler starts as soon as it names its port)."""
    stats = tmp_path / "emulator.json"
    emulator_process = subprocess.Popen(
        [sys.executable, "-m", "edge_slm.power.cli", "emulate", "--protocol", "um25c", "--trace",
         "steps:0=2.0,1=3.5", "--garbage", "0.1", "--seed", "4", "--disconnect-at", "2", "--reconnect-after",
         "0.5", "--link", str(tmp_path / "tty-um25c"), "--stats-out", str(stats)],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "emulator.log", "w"), text=True)
    try:
        port = ChildLines(emulator_process, emulator_process.stdout).next(timeout=60).strip()
        sampler = Sampler("um25c", port.removeprefix("port: "), csv_path=str(tmp_path / "s.csv")).start()
        # however slow the machine: through the unplug, the port back, and a sample read after it
        wait_for(lambda: sampler.reconnects, 60, "the sampler to reopen the port after the unplug")
        read_before = len(sampler.samples)
        wait_for(lambda: len(sampler.samples) > read_before, 60, "a sample after the reconnect")
        summary = sampler.stop()
    finally:
        emulator_code = stop_child(emulator_process)
    assert emulator_code == 130 and "EMULATED" in (tmp_path / "emulator.log").read_text()
    sent, rows = json.loads(stats.read_text()), csv_rows(tmp_path / "s.csv")
    assert sent["frames_sent"] == summary.samples == len(rows) > 0
    assert sent["garbage_injected"] == summary.garbage_frames
    assert summary.disconnects == sent["disconnects"] == 1
    assert summary.reconnects <= sent["reconnects"] <= 1
    assert summary.emulated and {r["emulated"] for r in rows} == {"true"}
    assert {r["repeat"] for r in rows} <= {"true", "false"} and all(r["energy_wh"] for r in rows)
