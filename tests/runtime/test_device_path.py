"""The device path stays small: edge-run never imports the host stack."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import host_stack_probe as run_probe

def test_edge_run_predict_and_bench_import_no_host_stack(tiny_dynamic, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\t1\nbad\t0\n")
    proc, probe = run_probe(sys.executable, "--model", tiny_dynamic, "--text", "fine", "--input", data,
                            "--bench", "--runs", "3", "-q", "--output", tmp_path / "r.json")
    assert probe["code"] == 0, proc.stderr
    assert probe["host_modules"] == []


def test_the_probe_would_notice_tensorflow(tiny_dynamic):
    """Guard against a probe that cannot fail: the TF backend does import tensorflow."""
    pytest.importorskip("tensorflow")
    proc, probe = run_probe(sys.executable, "--model", tiny_dynamic, "--bench", "--runs", "1", "-q",
                            "--backend", "tensorflow")
    assert probe["code"] == 0, proc.stderr
    assert "tensorflow" in probe["host_modules"]
