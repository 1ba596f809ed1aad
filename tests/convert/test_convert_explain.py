"""--explain: the per-op error report ranks where a quantized graph loses its accuracy.

A deliberately damaged layer (random int8 weights in one dense layer of a dynamic-range graph) must
be ranked first, whichever of the two layers is damaged; and edge-convert --explain prints the
ranking and puts it in the report JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert.cli import main  # noqa: E402
from edge_slm.convert.explain import explain, layer_of  # noqa: E402
from edge_slm.runtime.artifact import read_artifact  # noqa: E402
from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint  # noqa: E402


def graph_of(path) -> bytes:
    return read_artifact(path).read_graph()


def damage_dense(graph: bytes, scope: str) -> bytes:
    """The graph with the int8 weights of the FULLY_CONNECTED op whose output is in `scope` replaced by noise."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(graph)
    subgraph = model.subgraphs[0]
    code = schema.BuiltinOperator.FULLY_CONNECTED
    damaged = 0
    for op in subgraph.operators:
        opcode = model.operatorCodes[op.opcodeIndex]
        output = subgraph.tensors[op.outputs[0]].name.decode()
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == code and scope in output.split(";")[0]:
            weights = subgraph.tensors[op.inputs[1]]
            assert weights.type == schema.TensorType.INT8
            buffer = model.buffers[weights.buffer]
            noise = np.random.default_rng(0).integers(-127, 128, len(buffer.data), dtype=np.int8)
            buffer.data = noise.view(np.uint8)
            damaged += 1
    assert damaged == 1, f"{damaged} dense ops in {scope}"
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def samples(count: int = 6) -> list:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        length = int(rng.integers(4, TINY_SEQ_LEN))
        ids = np.zeros((1, TINY_SEQ_LEN), np.int32)
        ids[0, :length] = rng.integers(1000, 30000, length)
        mask = (ids > 0).astype(np.int32)
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


@pytest.mark.parametrize("layer", [0, 1])
def test_a_damaged_layer_is_ranked_first(tiny_fp32, tiny_dynamic, layer):
    damaged = damage_dense(graph_of(tiny_dynamic), f"layer_._{layer}/intermediate/dense")
    report = explain(graph_of(tiny_fp32), damaged, samples())
    assert report["layers"][0]["layer"] == f"layer {layer}"
    assert report["layers"][0]["share"] > 0.5
    top = report["top_ops"][0]
    assert top["op"] == "FULLY_CONNECTED" and f"layer_._{layer}/intermediate/dense" in top["tensor"]


def test_shares_sum_to_one(tiny_fp32, tiny_dynamic):
    report = explain(graph_of(tiny_fp32), graph_of(tiny_dynamic), samples())
    assert report["tensors_compared"] > 20 and report["texts"] == 6
    assert sum(layer["share"] for layer in report["layers"]) == pytest.approx(1, abs=1e-3)


def test_layer_names_come_from_the_scope():
    assert layer_of("tf_bert_for_sequence_classification/bert/encoder/layer_._3/output/dense/Tensordot;x") == "layer 3"
    assert layer_of("tf_bert_for_sequence_classification/bert/embeddings/Gather") == "embeddings"
    assert layer_of("tf_bert_for_sequence_classification/classifier/MatMul") == "classifier"


def test_cli_explain_prints_the_ranking_and_writes_it_to_the_report(tmp_path, minilm_dir, cli_caller):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    code, out, err = cli_caller(main)(str(checkpoint), "--random-init", "--quant", "dynamic,int8", "--seq-len",
                                      str(TINY_SEQ_LEN), "--explain", "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    for mode in ("dynamic", "int8"):
        assert f"tiny-bert {mode}: logits off by" in out
        report = json.loads((tmp_path / "out" / f"tiny-bert-{mode}.tflite.report.json").read_text())
        explanation = report["explain"]
        assert explanation["texts"] > 0 and explanation["layers"] and explanation["top_ops"]
        assert {op["layer"] for op in explanation["top_ops"]} <= {"layer 0", "layer 1", "embeddings", "pooler",
                                                                  "classifier", "other"}
