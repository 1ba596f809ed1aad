"""`edge-run --bench --meter ... --port ...`: energy per inference through the meter emulator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_slm.runtime.cli import render_text, run
from tests.conftest import host_stack_probe as run_probe


@pytest.fixture
def emulated_um25c():
    """A UM25C emulator on a real pty whose power follows this test process's CPU load."""
    process = subprocess.Popen([sys.executable, "-m", "edge_slm.power.cli", "emulate", "--protocol", "um25c",
                                "--trace", "cpu", "--follow-pid", str(os.getpid()), "--seed", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = process.stdout.readline().strip().removeprefix("port: ")
    yield port
    process.terminate()
    process.communicate(timeout=10)


def test_bench_with_meter_adds_emulated_energy(tiny_dynamic, emulated_um25c, tmp_path):
    samples = tmp_path / "samples.csv"
    doc = run(tiny_dynamic, bench=True, min_seconds=1.5, meter="um25c", port=emulated_um25c,
              baseline_seconds=0.5, samples_csv=str(samples), show_progress=False)
    energy = doc["energy"]
    assert energy["emulated"] is True and energy["meter"] == "um25c"
    assert energy["inferences"] == doc["benchmark"]["runs"]
    assert energy["samples_used"] > 0 and energy["window_s"] >= 1.5
    assert isinstance(energy["energy_per_inference_mj"], float) and energy["uncertainty_mj"] > 0
    text = render_text(doc)
    assert "mJ/inference (emulated)" in text
    rows = samples.read_text().splitlines()
    assert rows[0].endswith("emulated") and len(rows) > 5 and all(r.endswith("true") for r in rows[1:])


def test_meter_path_imports_no_host_stack(tiny_dynamic, emulated_um25c):
    proc, probe = run_probe(sys.executable, "--model", tiny_dynamic, "--bench", "--min-seconds", "0.5", "-q",
                            "--meter", "um25c", "--port", emulated_um25c, "--baseline-seconds", "0.3")
    assert probe["code"] == 0, proc.stderr
    assert probe["host_modules"] == []


def test_absent_port_is_one_line(run_cli, tiny_dynamic, tmp_path):
    code, out, err = run_cli("--model", tiny_dynamic, "--bench", "--meter", "um25c", "--port", tmp_path / "rfcomm9")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "hint:" in err and "Traceback" not in err


def test_meter_needs_bench(run_cli, tiny_dynamic):
    code, out, err = run_cli("--model", tiny_dynamic, "--text", "x", "--meter", "um25c", "--port", "loop://")
    assert code == 2 and "--meter measures energy during --bench" in err
