"""The device path stays small: edge-run never imports the host stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HOST_STACK = ("tensorflow", "transformers", "tf_keras", "keras", "torch", "pandas", "jax")

PROBE = """
import json, sys
from edge_slm.runtime.cli import main
code = main(sys.argv[1:])
loaded = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(HOST)))
print(json.dumps({"code": code, "host_modules": loaded}))
"""


def run_probe(python, *args):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-c", PROBE.replace("HOST", repr(json.dumps(HOST_STACK))), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


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
