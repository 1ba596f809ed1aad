"""Power traces that drive the emulator: constant, steps, file, CPU load."""

import os
import time

import pytest

from edge_slm.power.traces import CpuLoadTrace, parse_trace
from edge_slm.common.errors import EdgeError


def test_constant_and_steps():
    assert parse_trace("constant:2.5").power_w(100.0) == 2.5
    steps = parse_trace("steps:0=2.0,5=3.5,10=2.0")
    assert [steps.power_w(t) for t in (0.0, 4.999, 5.0, 9.9, 10.0, 1e6)] == [2.0, 2.0, 3.5, 3.5, 2.0, 2.0]


def test_file_trace_interpolates_and_holds_the_ends(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("t_s,power_w\n0,2.0\n10,3.0\n# comment\n20,3.0\n")
    trace = parse_trace(f"file:{path}")
    assert trace.power_w(-1) == 2.0 and trace.power_w(5) == pytest.approx(2.5)
    assert trace.power_w(15) == 3.0 and trace.power_w(99) == 3.0


@pytest.mark.parametrize("spec", ["sine:2", "steps:0=2,x=3", "constant:abc", "file:/nonexistent.csv", "cpu:9"])
def test_bad_trace_specs_are_one_line_errors(spec):
    with pytest.raises(EdgeError) as info:
        parse_trace(spec)
    assert "\n" not in info.value.one_line() and info.value.hint


def test_bad_row_in_trace_file(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("0,2.0\n1,two\n")
    with pytest.raises(EdgeError, match="bad row"):
        parse_trace(f"file:{path}")


def test_cpu_trace_turns_a_cpu_share_into_power():
    """On counters the test sets: another process loading the machine cannot move these figures."""
    busy, now = [0.0], [100.0]
    trace = CpuLoadTrace(idle_w=2.0, active_w=3.5, busy_seconds=lambda: busy[0], clock=lambda: now[0])
    cores = os.cpu_count() or 1
    now[0] += 0.5  # half a second asleep
    assert trace.power_w(0.0) == pytest.approx(2.0)
    busy[0] += 0.5  # then one core busy for half a second
    now[0] += 0.5
    assert trace.power_w(0.0) == pytest.approx(2.0 + 1.5 / cores)
    busy[0] += 0.01 * cores  # shorter than MIN_INTERVAL_S: the last figure holds, no jumpy reading
    now[0] += 0.01
    assert trace.power_w(0.0) == pytest.approx(2.0 + 1.5 / cores)
    busy[0] += 1.0 * cores  # every core busy
    now[0] += 1.0
    assert trace.power_w(0.0) == pytest.approx(3.5)


def test_cpu_trace_reads_this_process_from_proc():
    """Only what load cannot change: CPU time this process spent shows up, power stays in range."""
    trace = CpuLoadTrace(idle_w=2.0, active_w=3.5, pid=os.getpid())
    spent = time.process_time()
    while time.process_time() - spent < 0.1:  # 0.1 s of CPU time, however long that takes
        pass
    # Some share of the CPU, whatever it was (it depends on what else runs), and never more than all.
    assert 2.0 < trace.power_w(0.0) <= 3.5
    with pytest.raises(EdgeError, match="does not exist"):
        CpuLoadTrace(2.0, 3.5, pid=2 ** 22 + 12345)
