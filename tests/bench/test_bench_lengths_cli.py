"""scripts/bench_lengths.py refuses an unusable --out before its half hour of work, in one line."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "bench_lengths.py"


def run_with_out(out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)


def test_out_that_is_a_directory_is_refused_before_any_work(tmp_path):
    proc = run_with_out(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"bench_lengths: error: --out {tmp_path}: is a directory (hint: pass a file path in a writable directory, "
        "e.g. bench-results/lengths.json)"]
    assert "artifacts in" not in proc.stderr  # nothing was converted


def test_out_under_a_file_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    proc = run_with_out(blocker / "lengths.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"bench_lengths: error: --out {blocker / 'lengths.json'}: {blocker} is a file (hint: pass a file path in a "
        "writable directory, e.g. bench-results/lengths.json)"]
