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


def test_cpu_trace_follows_this_process():
    trace = CpuLoadTrace(idle_w=2.0, active_w=3.5, pid=os.getpid())
    time.sleep(0.2)
    idle = trace.power_w(0.0)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    busy = trace.power_w(0.0)
    cores = os.cpu_count()
    assert idle < 2.0 + 0.3 * 1.5 / cores  # sleeping: hardly any CPU
    assert busy > 2.0 + 0.7 * 1.5 / cores  # one core busy
    with pytest.raises(EdgeError, match="does not exist"):
        CpuLoadTrace(2.0, 3.5, pid=2 ** 22 + 12345)
