"""--int8-float-layers: the named dense layers keep float outputs in the int8 graph, and the metadata says so."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert.api import convert  # noqa: E402
from edge_slm.convert.graph import graph_facts  # noqa: E402
from edge_slm.convert.precision import float_nodes  # noqa: E402
from edge_slm.runtime.artifact import read_artifact  # noqa: E402
from edge_slm.runtime.engine import load_model  # noqa: E402
from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint  # noqa: E402


def test_feed_forward_output_layers_keep_float_outputs_and_are_recorded(tmp_path, minilm_dir, tiny_fp32):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    fp32_graph = read_artifact(tiny_fp32).read_graph()
    kept = float_nodes(fp32_graph, ["ffn-output"])
    assert len(kept) == 2 and all("/output/dense/" in name and "attention" not in name for name in kept)

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    static, default = (convert(str(checkpoint), ["int8"], TINY_SEQ_LEN, tmp_path / name, random_init=True,
                               validate=False, **groups)[0]
                       for name, groups in (("static", {"int8_float_layers": ()}), ("default", {})))
    kept_as = "float outputs; int8 weights (a scale per output channel), the input quantized per token at run time"
    for result, groups, count in ((static, [], 0), (default, ["ffn-output"], 2)):
        artifact = read_artifact(result.artifact_path)
        assert artifact.metadata["float_layers"] == {"groups": groups, "dense_ops_kept_float": count,
                                                     "kept_as": kept_as if count else None}
        model = flatbuffer_utils.convert_bytearray_to_object(artifact.read_graph())
        subgraph = model.subgraphs[0]
        dense = [op for op in subgraph.operators if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                 model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED]
        float_out = [op for op in dense if subgraph.tensors[op.outputs[0]].type == schema.TensorType.FLOAT32]
        assert len(float_out) == count
        for op in float_out:  # int8 weights by output channel, dynamic-range kernel, no requantized output
            weights = subgraph.tensors[op.inputs[1]]
            assert weights.type == schema.TensorType.INT8 and len(weights.quantization.scale) == weights.shape[0]
            assert op.builtinOptions.asymmetricQuantizeInputs
            readers = [o for o in subgraph.operators if op.outputs[0] in list(o.inputs)]
            assert readers and all(subgraph.tensors[o.outputs[0]].type == schema.TensorType.FLOAT32 for o in readers)
        assert all(subgraph.tensors[op.inputs[1]].type == schema.TensorType.INT8 for op in dense)
    texts = ["a charming and often affecting journey .", "unflinchingly bleak and desperate"]
    assert np.all(np.isfinite(load_model(default.artifact_path).logits(texts)))


def _with_outlier_channel(graph: bytes, scope: str, factor: float) -> bytes:
    """`graph` with output channel 0 of the float dense op in `scope` scaled by `factor`: an outlier
    channel like those BERT-family models carry in the residual stream."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(graph)
    subgraph = model.subgraphs[0]
    planted = 0
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        output = subgraph.tensors[op.outputs[0]].name.decode().split(";")[0] + "/"
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED and scope in output:
            weights = subgraph.tensors[op.inputs[1]]
            values = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.float32).reshape(
                [int(d) for d in weights.shape]).copy()
            values[0] *= factor
            model.buffers[weights.buffer].data = values.reshape(-1).view(np.uint8)
            planted += 1
    assert planted == 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_rows(graph: bytes, name_end: str, inputs: list) -> np.ndarray:
    """The values of the tensor whose name ends with `name_end`, one row per token, over `inputs`."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # preserve_all_tensors is "for debugging": this is a check
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=graph, experimental_preserve_all_tensors=True)
    indices = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    tensor = next(d["index"] for d in interpreter.get_tensor_details() if d["name"].split(";")[0].endswith(name_end))
    rows = []
    for sample in inputs:
        for name, index in indices.items():
            interpreter.resize_tensor_input(index, sample[name].shape)
        interpreter.allocate_tensors()
        for name, index in indices.items():
            interpreter.set_tensor(index, sample[name])
        interpreter.invoke()
        value = interpreter.get_tensor(tensor)
        rows.append(value.reshape(-1, value.shape[-1]).copy())
    return np.concatenate(rows)


def test_an_outlier_channel_no_longer_zeroes_the_others(tiny_fp32):
    """A static int8 output has one scale for every channel: a planted outlier channel in layer 0's
    feed-forward output drowns the others' values in its step. The default's float output keeps them."""
    from edge_slm.convert.graph import (MASK_MAGNITUDE_FOR_INTEGER_MODES, QUANT_MODES, calibrate_int8, graph_facts,
                                        quantize_calibrated, soften_attention_mask)
    from edge_slm.convert.precision import dynamic_range_dense, float_output_nodes
    from tests.convert.test_convert_explain import samples

    graph = soften_attention_mask(_with_outlier_channel(read_artifact(tiny_fp32).read_graph(),
                                                        "layer_._0/output/dense/", 3000.0),
                                  MASK_MAGNITUDE_FOR_INTEGER_MODES)
    order = [t["name"] for t in graph_facts(graph)["inputs"]]
    calibrated = calibrate_int8(graph, lambda: iter([[s[name] for name in order] for s in samples(12)]))
    int8 = QUANT_MODES["int8"]
    static = quantize_calibrated(calibrated, int8)
    kept = float_nodes(graph, ["ffn-output"])
    default, converted = dynamic_range_dense(quantize_calibrated(calibrated, int8, float_output_nodes(graph, kept)))
    assert converted == len(kept) == 2

    # What the feed-forward output adds to the residual stream, read at the add (float in both graphs):
    # the add minus its other input, so the int8 error of the attention block before it cancels out.
    def feed_forward_rows(g):
        return (_tensor_rows(g, "layer_._0/output/add", samples())
                - _tensor_rows(g, "layer_._0/attention/output/LayerNorm/batchnorm/add_1", samples()))

    reference = feed_forward_rows(graph)
    small = np.median(np.abs(reference[:, 1:]))
    assert np.abs(reference[:, 0]).max() > 1000 * small  # the outlier is there
    errors = {name: float(np.median(np.abs(feed_forward_rows(g) - reference)[:, 1:]))
              for name, g in (("static", static), ("default", default))}
    assert errors["static"] > 0.5 * small, errors  # the outlier's step zeroes the other channels
    assert errors["default"] < 0.05 * small, errors


def test_an_unknown_group_is_a_one_line_error(tmp_path):
    from edge_slm.common.errors import EdgeError

    with pytest.raises(EdgeError, match="unknown --int8-float-layers group 'attention'"):
        convert("tinybert", ["int8"], out_dir=tmp_path, int8_float_layers=["attention"])


def test_float_embeddings_keep_the_tables_float(tmp_path, minilm_dir):
    import numpy as np

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    results = {}
    for name, flag in (("plain", False), ("float", True)):
        results[name] = {r.quant: r for r in convert(str(checkpoint), ["fp32", "dynamic", "int8"], TINY_SEQ_LEN,
                                                     tmp_path / name, random_init=True, validate=False,
                                                     float_embeddings=flag)}
    plain, float_ = read_artifact(results["plain"]["dynamic"].artifact_path), \
        read_artifact(results["float"]["dynamic"].artifact_path)
    assert plain.metadata["float_embeddings"] is False and float_.metadata["float_embeddings"] is True
    grown = len(float_.read_graph()) - len(plain.read_graph())
    assert abs(grown - 30522 * 32 * 3) < 0.05 * 30522 * 32 * 3   # int8 -> float32 word table (hidden 32)
    assert graph_facts(float_.read_graph())["op_count"] == graph_facts(plain.read_graph())["op_count"] - 1
    texts = ["a charming and often affecting journey .", "unflinchingly bleak and desperate", "x " * 10]
    logits = load_model(results["float"]["dynamic"].artifact_path).logits(texts)
    assert logits.shape == (3, 2) and np.all(np.isfinite(logits))
    # int8 looks the embeddings up in float; the word table is int8 by column, or float32 with the flag
    plain, float_ = read_artifact(results["plain"]["int8"].artifact_path), \
        read_artifact(results["float"]["int8"].artifact_path)
    assert plain.metadata["float_embeddings"] is False and float_.metadata["float_embeddings"] is True
    assert plain.metadata["word_table"] == "int8, a scale per column" and float_.metadata["word_table"] == "float32"
    grown = len(float_.read_graph()) - len(plain.read_graph())
    assert abs(grown - 30522 * 32 * 3) < 0.05 * 30522 * 32 * 3
    logits = load_model(results["float"]["int8"].artifact_path).logits(texts)
    assert logits.shape == (3, 2) and np.all(np.isfinite(logits))


@pytest.mark.parametrize("quant", ["dynamic", "int8"])
def test_the_word_table_has_a_scale_per_column(tmp_path, minilm_dir, quant):
    """Both quantized modes store the word table in int8 with one scale per embedding dimension: each
    value within half its column's step of the float table, looked up in int8 then dequantized."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    from edge_slm.convert.explain import graph_ops

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    results = {r.quant: r for r in convert(str(checkpoint), ["fp32", quant], TINY_SEQ_LEN, tmp_path / "out",
                                           random_init=True, validate=False)}

    def word_table(path):
        graph = read_artifact(path).read_graph()
        model = flatbuffer_utils.convert_bytearray_to_object(graph)
        subgraph = model.subgraphs[0]
        ops, names = graph_ops(graph)
        [gather] = [op for op in ops if op.kind == "GATHER" and names[op.inputs[1]] == "input_ids"]
        table = subgraph.tensors[gather.inputs[0]]
        data = bytes(model.buffers[table.buffer].data)
        readers = [op.kind for op in ops if gather.outputs[0] in op.inputs]
        return table, data, readers

    float_table, float_data, _ = word_table(results["fp32"].artifact_path)
    values = np.frombuffer(float_data, np.float32).reshape(30522, 32)
    table, data, readers = word_table(results[quant].artifact_path)
    scales = np.array(table.quantization.scale, np.float32)
    assert len(scales) == 32 and table.quantization.quantizedDimension == 1 and readers == ["DEQUANTIZE"]
    np.testing.assert_allclose(scales, np.abs(values).max(axis=0) / 127, rtol=1e-6)
    dequantized = np.frombuffer(data, np.int8).reshape(30522, 32) * scales
    assert np.all(np.abs(dequantized - values) <= scales / 2 + 1e-7)
    logits = load_model(results[quant].artifact_path).logits(["a charming and often affecting journey ."])
    reference = load_model(results["fp32"].artifact_path).logits(["a charming and often affecting journey ."])
    assert np.all(np.isfinite(logits)) and np.abs(logits - reference).max() < 0.1
