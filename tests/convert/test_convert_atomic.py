"""A killed conversion leaves no partial .tflite: whatever *.tflite exists is complete and verified."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("tensorflow")

from tests.conftest import ChildLines, write_tiny_checkpoint

from edge_slm.runtime.artifact import read_artifact


def run_until(args: list, marker: str, sig: int, timeout: float = 240) -> subprocess.Popen:
    """Start edge-convert, send `sig` as soon as a stderr line contains `marker`.

    Every wait has a deadline, a silent child included (it is killed and the test fails)."""
    child = subprocess.Popen([sys.executable, "-m", "edge_slm.convert.cli", *args], stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True)
    lines = ChildLines(child, child.stderr)
    deadline = time.monotonic() + timeout
    while True:
        line = lines.next(timeout=deadline - time.monotonic())
        if marker in line:
            child.send_signal(sig)
            break
        if not line:
            child.wait(timeout=30)
            pytest.fail(f"conversion ended (exit {child.returncode}) before {marker!r}")
    try:
        child.wait(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=30)
        pytest.fail(f"conversion did not stop within 120 s of signal {sig}")
    return child


@pytest.mark.parametrize("sig, marker", [
    (signal.SIGKILL, "] write t-dynamic.tflite ..."),   # in the middle of writing an artifact
    (signal.SIGTERM, "] quantize int8 ..."),              # during a converter run
])
def test_killed_conversion_leaves_only_complete_artifacts(tmp_path, minilm_dir, sig, marker):
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    out = tmp_path / "out"
    child = run_until([str(checkpoint), "--random-init", "--quant", "fp32,dynamic,int8", "--seq-len", "16",
                       "--validation-samples", "5", "-o", str(out)], marker, sig)
    assert child.returncode == -sig if sig == signal.SIGKILL else child.returncode == 130
    artifacts = sorted(out.glob("*.tflite"))
    assert "t-int8.tflite" not in [a.name for a in artifacts]
    for artifact in artifacts:  # raises if a graph were truncated or its metadata incomplete
        assert read_artifact(artifact, verify=True).metadata["quantization"] in ("fp32", "dynamic")
    if sig == signal.SIGTERM:  # unwound like Ctrl-C: no temporary files either
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_quiet_conversion_prints_nothing_on_stderr(tmp_path, minilm_dir):
    """-q: no stage lines and none of TensorFlow's native start-up noise (oneDNN, CUDA stubs, cuInit)."""
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    child = subprocess.run([sys.executable, "-m", "edge_slm.convert.cli", str(checkpoint), "--random-init",
                            "--quant", "fp32", "--seq-len", "16", "--no-validate", "-q", "-o", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""
    assert "t-fp32.tflite" in child.stdout
