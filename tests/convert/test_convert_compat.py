"""CI proof of --compat tflite-runtime-2.14: each architecture's compat artifacts (length-aware, the
default) load and run in a numpy<2 + tflite-runtime 2.14 virtualenv, resized to each text's own
length, giving the logits ai-edge-litert gives on the host.

The virtualenv's python comes from EDGE_SLM_TFLITE_RUNTIME_PYTHON (the Makefile sets it); the
child needs only tflite_runtime and numpy, the token ids are computed here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint

from edge_slm.runtime.artifact import read_artifact

TFLITE_RUNTIME_PYTHON = os.environ.get("EDGE_SLM_TFLITE_RUNTIME_PYTHON")
pytestmark = pytest.mark.skipif(
    not TFLITE_RUNTIME_PYTHON,
    reason="EDGE_SLM_TFLITE_RUNTIME_PYTHON is unset: point it at the python of a numpy<2 + "
           "tflite-runtime==2.14.* virtualenv (make test does)")

TEXTS = ["a charming and often affecting journey .", "unflinchingly bleak and desperate"]  # 9 and 6 tokens
MODES = ["fp32", "fp16", "dynamic", "int8"]

CHILD = r"""
import json, sys
import numpy as np
import tflite_runtime
from tflite_runtime.interpreter import Interpreter

outputs = {}
for job in json.load(sys.stdin):
    interpreter = Interpreter(model_path=job["path"])
    interpreter.allocate_tensors()
    rows = []
    for inputs in job["inputs"]:
        details = interpreter.get_input_details()
        length = len(inputs[details[0]["name"]][0])
        if details[0]["shape"][-1] != length:  # a length-aware graph: resized to this text's length
            for detail in details:
                interpreter.resize_tensor_input(detail["index"], [1, length])
            interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.asarray(inputs[detail["name"]], dtype=np.int32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1).tolist())
    outputs[job["path"]] = rows
json.dump({"tflite_runtime": tflite_runtime.__version__, "numpy": np.__version__, "logits": outputs}, sys.stdout)
"""


@pytest.fixture(scope="module")
def compat_artifacts(tmp_path_factory, minilm_dir) -> list:
    from edge_slm.convert.api import convert

    out = tmp_path_factory.mktemp("compat")
    paths = []
    # One layer per XNNPACK partition (default: ~200 ops each, so 2-layer graphs stay whole): the
    # copies that end partitions in big graphs (graph.split_delegate_partitions) must run in 2.14 too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edge_slm.convert.graph.OPS_PER_PARTITION", 1)
        for model_type in ("bert", "distilbert", "mobilebert"):
            checkpoint = write_tiny_checkpoint(out / f"tiny-{model_type}", minilm_dir, model_type)
            paths += [r.artifact_path for r in convert(str(checkpoint), MODES, TINY_SEQ_LEN, out / "artifacts",
                                                       random_init=True, compat="tflite-runtime-2.14",
                                                       validation_samples=20)]
    return paths


def test_compat_artifacts_run_in_tflite_runtime_2_14(compat_artifacts):
    from edge_slm.runtime.engine import load_model

    jobs, expected = [], {}
    for path in compat_artifacts:
        model = load_model(path)  # ai-edge-litert, the host's runtime
        inputs, rows = [], []
        for text in TEXTS:
            model.prepare(text)
            names = {d["index"]: d["name"] for d in model.interpreter.get_input_details()}
            inputs.append({names[slot.index]: slot.buffer[:, :model.run_length].tolist() for slot in model.slots})
            rows.append(model.run_prepared().reshape(-1))
        jobs.append({"path": path, "inputs": inputs})
        expected[path] = np.array(rows)
    child = subprocess.run([TFLITE_RUNTIME_PYTHON, "-c", CHILD], input=json.dumps(jobs), capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["tflite_runtime"].startswith("2.14") and result["numpy"].startswith("1.")
    assert len(result["logits"]) == 3 * len(MODES)
    assert all(read_artifact(path).metadata["sequence"]["kind"] == "dynamic" for path in compat_artifacts)
    ends = {Path(path).name: read_artifact(path).metadata["partition_ends"] for path in compat_artifacts}
    assert all(count >= 1 for count in ends.values()), ends
    assert {len(job["inputs"][0]["input_ids"][0]) for job in jobs} == {9}  # each text ran at its own length
    for path, rows in result["logits"].items():
        got = np.array(rows)
        scale = max(1e-3, float(np.abs(expected[path]).max()))
        # Same graph, two runtimes: float kernels agree closely, quantized kernels within a step.
        tolerance = 1e-5 if "-fp" in Path(path).name else 0.05 * scale
        np.testing.assert_allclose(got, expected[path], atol=tolerance, err_msg=path)
