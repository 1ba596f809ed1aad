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


def test_work_ratios_count_the_graphs_macs_at_own_and_tile_rounded_lengths(tiny_dynamic):
    import importlib.util

    from edge_slm.runtime.engine import load_model

    spec = importlib.util.spec_from_file_location("bench_lengths", SCRIPT)
    bench_lengths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_lengths)
    texts = ["fine", "a gorgeous film"]
    model = load_model(tiny_dynamic)
    own = [len(model.tokenizer.encode_ids(t, model.seq_len)) for t in texts]
    assert model.seq_len == 16 and max(own) <= 8  # so 8-row tiles round both up to 8, 16-row tiles to the longest
    counter = model.mac_counter
    ratios = bench_lengths.work_ratios(tiny_dynamic, texts)
    assert ratios["own_lengths"] == counter.macs(16) / (sum(counter.macs(n) for n in own) / len(own))
    assert ratios["rounded_to_8_rows"] == counter.macs(16) / counter.macs(8)
    assert ratios["rounded_to_16_rows"] == 1.0
    assert ratios["own_lengths"] > ratios["rounded_to_8_rows"] > 1.0
