"""The tflite-runtime backend for real, in a device-like virtualenv: numpy<2 + tflite-runtime 2.14.

`make test` points EDGE_SLM_TFLITE_RUNTIME_PYTHON at that venv's python (see the Makefile).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from edge_slm.runtime.engine import load_model

PYTHON = os.environ.get("EDGE_SLM_TFLITE_RUNTIME_PYTHON")
pytestmark = pytest.mark.skipif(not PYTHON, reason="EDGE_SLM_TFLITE_RUNTIME_PYTHON is unset (make test sets it)")

RUN = "import sys; from edge_slm.runtime.cli import main; sys.exit(main(sys.argv[1:]))"


def edge_run(*args):
    return subprocess.run([PYTHON, "-c", RUN, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_environment_is_numpy1_with_tflite_runtime_and_no_tensorflow():
    probe = ("import json, importlib.util, numpy, tflite_runtime; print(json.dumps({'numpy': numpy.__version__, "
             "'tflite_runtime': tflite_runtime.__version__, 'tf': importlib.util.find_spec('tensorflow') is not None}))")
    facts = json.loads(subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True,
                                      timeout=120).stdout)
    assert facts["numpy"].startswith("1.") and facts["tflite_runtime"].startswith("2.14") and not facts["tf"]


def test_fp32_model_runs_on_tflite_runtime_and_matches_litert(tiny_fp32):
    text = "an utterly charming and hilarious film"
    proc = edge_run("--model", tiny_fp32, "--backend", "tflite-runtime", "--text", text, "--bench", "--runs", "5",
                    "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backend"] == {"name": "tflite-runtime", "version": "2.14.0", "delegate": "xnnpack"}
    theirs = np.array(doc["predictions"][0]["probabilities"])
    ours = np.array(load_model(tiny_fp32).predict_one(text).probabilities)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_per_channel_dynamic_model_gets_a_one_line_upgrade_hint(tiny_dynamic):
    proc = edge_run("--model", tiny_dynamic, "--backend", "tflite-runtime", "--text", "hi")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("edge-run: error: the graph needs FULLY_CONNECTED version")
    assert "tflite-runtime 2.14.0" in proc.stderr and "ai-edge-litert" in proc.stderr and "Traceback" not in proc.stderr
