"""edge-power command line: list, watch, record (and its interrupt), one-line errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edge_slm.power.cli import main
from edge_slm.power.emulator import EmulatedSignal, PtyEmulator, make_engine
from edge_slm.power.traces import ConstantTrace


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_POWER_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def um25c():
    emu = PtyEmulator(make_engine("um25c", EmulatedSignal(ConstantTrace(2.5), seed=2)),
                      protocol="um25c").start()
    yield emu
    emu.stop()


def test_list_shows_running_emulators(um25c, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("serial ports:")
    assert f"  {um25c.pty_path}  um25c  pid {os.getpid()}  EMULATED" in out


def test_watch_labels_every_reading_emulated(um25c, capsys):
    assert main(["watch", "--meter", "um25c", "--port", um25c.port, "--count", "3"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()  # readings only; the status line goes to stderr
    assert captured.err.strip().endswith("EMULATED") and len(lines) == 3
    for line in lines:
        volts, _, amps, _, watts, _, label = line.split()
        assert label == "EMULATED" and float(watts) == pytest.approx(2.5, abs=0.1)


def test_record_writes_labelled_csv_and_summary(um25c, tmp_path, capsys):
    out, summary = tmp_path / "samples.csv", tmp_path / "summary.json"
    assert main(["record", "--port", um25c.port, "--duration", "0.6", "-o", str(out),
                 "--summary-json", str(summary)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("recorded ") and printed.rstrip().endswith("EMULATED")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    data = json.loads(summary.read_text())
    assert data["emulated"] is True and data["source"] == "emulated meter"
    assert data["samples"] == len(rows) >= 1  # the first reading comes before recording starts
    assert {r["emulated"] for r in rows} == {"true"} and rows[0]["repeat"] == "false"
    assert float(rows[0]["energy_wh"]) >= 0.0  # the UM25C's own energy counter
    assert data["mean_power_w"] == pytest.approx(2.5, abs=0.05)


@pytest.mark.parametrize("argv,message", [
    (["record", "--port", "/dev/ttyEDGE-absent", "--duration", "1", "-o", "x.csv"],
     "edge-power: error: port /dev/ttyEDGE-absent does not exist"),
    (["watch", "--meter", "um25c", "--port", "/dev/null", "--line-format", "csv:power[W]"],
     "edge-power: error: --line-format applies to --meter line"),
    (["emulate", "--trace", "sine:3"], "edge-power: error: unknown trace 'sine:3'"),
    (["emulate", "--refresh-s", "-1"], "edge-power: error: refresh period must be 0 or more seconds"),
    (["emulate", "--protocol", "line", "--refresh-s", "0.5"],
     "edge-power: error: a refresh period applies to the UM meters, not 'line'"),
    # checked before a port is opened or a sample recorded, so none is lost to a bad path later
    (["record", "--port", "/dev/ttyEDGE-absent", "--duration", "1", "-o", "x.csv",
      "--summary-json", "nodir/s.json"], "edge-power: error: --summary-json: directory nodir does not exist"),
    (["record", "--port", "/dev/ttyEDGE-absent", "--duration", "1", "-o", ""],
     "edge-power: error: --output is empty"),
    (["record", "--port", "/dev/ttyEDGE-absent", "--duration", "1", "-o", "/dev/null"],
     "edge-power: error: --output /dev/null is not a regular file"),
    (["record", "--port", "socket://localhost:99999", "--duration", "1", "-o", "x.csv"],
     "edge-power: error: cannot open socket://localhost:99999: socket:// needs a host and a port"),
    (["record", "--port", "socket://localhost", "--duration", "1", "-o", "x.csv"],
     "edge-power: error: cannot open socket://localhost: socket:// needs a host and a port"),
    (["record", "--port", "loop://", "--duration", "nan", "-o", "x.csv"],
     "edge-power: error: Invalid value for '--duration'"),
    (["watch", "--port", "loop://", "--probe-timeout", "inf"], "edge-power: error: Invalid value for '--probe-timeout'"),
    (["watch", "--port", "loop://", "--probe-timeout", "-1"], "edge-power: error: --probe-timeout must be positive"),
    (["watch", "--port", "loop://", "--count", "-1"], "edge-power: error: Invalid value for '--count'"),
    (["watch", "--port", "loop://", "--baud", "99999999999999"], "edge-power: error: Invalid value for '--baud'"),
    (["emulate", "--duration", "0"], "edge-power: error: --duration must be positive"),
    (["emulate", "--trace", "constant:-5"], "edge-power: error: bad trace 'constant:-5'"),
    (["emulate", "--trace", "file:/dev/zero"], "edge-power: error: /dev/zero is not a regular file"),
    (["emulate", "--protocol", "line", "--line-rate", "0"], "edge-power: error: --line-rate must be positive"),
    # options the trace or protocol would ignore
    (["emulate", "--follow-pid", "1"], "edge-power: error: --follow-pid applies only with --trace cpu"),
    (["emulate", "--trace", "steps:0=2", "--active-w", "4"], "edge-power: error: --active-w applies only with "
                                                            "--trace cpu"),
    (["emulate", "--trace", "constant:2", "--idle-w", "1"], "edge-power: error: --idle-w applies only with "
                                                           "--trace cpu or a bare --trace constant"),
    (["emulate", "--line-rate", "5"], "edge-power: error: --line-rate applies only with --protocol line"),
    (["emulate", "--line-format", "csv:power[W]"], "edge-power: error: --line-format applies only with "
                                                   "--protocol line"),
    (["emulate", "--reconnect-after", "2"], "edge-power: error: --reconnect-after applies only with --disconnect-at"),
    (["emulate", "--trace", "cpu", "--follow-pid", "0"], "edge-power: error: Invalid value for '--follow-pid'"),
    (["emulate", "--drop-bytes", "2"], "edge-power: error: --drop-bytes is a probability"),
    (["emulate", "--stall", "1:-5"], "edge-power: error: bad --stall '1:-5'"),
    (["emulate", "--link", "nodir/tty"], "edge-power: error: --link: directory nodir does not exist"),
    (["emulate", "--stats-out", "nodir/s.json"], "edge-power: error: --stats-out: directory nodir does not exist"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, capfd):
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "(hint: " in err


def default_sigint():
    # A test run started from a background shell job inherits SIGINT ignored; Ctrl-C is the point here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_record_loses_nothing(um25c, tmp_path, stop_signal):
    out = tmp_path / "samples.csv"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "edge_slm.power.cli", "record", "--port", um25c.port,
         "--duration", "60", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.05)  # about half a second: rows reach the file while recording
    rows_before_interrupt = out.read_text().count("\n") - 1
    assert rows_before_interrupt >= 3
    recorder.send_signal(stop_signal)
    try:
        stdout, stderr = recorder.communicate(timeout=10)
    finally:
        recorder.kill()
    assert recorder.returncode == 130, stderr  # the convention: interrupted, after flushing everything
    assert "(interrupted)" in stdout
    recorded = int(stdout.split()[1])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == recorded >= rows_before_interrupt
    assert all(row["power_w"] and row["emulated"] == "true" for row in rows)
