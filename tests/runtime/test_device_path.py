"""The device path stays small: edge-run never imports the host stack."""

from __future__ import annotations

import json
import subprocess
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


# Modules that map native libraries a bare interpreter script does not: OpenSSL's libcrypto
# (hashlib, +3.6 MB RSS) and tempfile's shutil/bz2/lzma (~0.8 MB). make bench holds edge-run's
# peak RSS within 1.10x of that script's; these keep a stray import from eating that margin.
HEAVY_PROBE = """
import json, sys
from edge_slm.runtime.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": [m for m in ("_hashlib", "tempfile") if m in sys.modules]}))
"""


def _heavy_modules(*args):
    proc = subprocess.run([sys.executable, "-c", HEAVY_PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_edge_run_loads_neither_openssl_nor_tempfile_until_it_writes_a_file(tiny_dynamic, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\t1\nbad\t0\n")
    quiet = _heavy_modules("--model", tiny_dynamic, "--input", data, "--bench", "--runs", "3", "--json", "-q")
    assert quiet == {"code": 0, "loaded": []}
    # and the probe sees a deferred import once it happens: -o writes the result atomically
    writing = _heavy_modules("--model", tiny_dynamic, "--bench", "--runs", "3", "-q", "--output", tmp_path / "r.json")
    assert writing == {"code": 0, "loaded": ["tempfile"]}
