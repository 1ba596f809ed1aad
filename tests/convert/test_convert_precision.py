"""--int8-float-layers: the named dense layers stay float in the int8 graph, and the metadata says so."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert.api import convert  # noqa: E402
from edge_slm.convert.graph import graph_facts  # noqa: E402
from edge_slm.convert.precision import float_nodes  # noqa: E402
from edge_slm.runtime.artifact import read_artifact  # noqa: E402
from edge_slm.runtime.engine import load_model  # noqa: E402
from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint  # noqa: E402


def test_feed_forward_output_layers_stay_float_and_are_recorded(tmp_path, minilm_dir, tiny_fp32):
    fp32_graph = read_artifact(tiny_fp32).read_graph()
    kept = float_nodes(fp32_graph, ["ffn-output"])
    assert len(kept) == 2 and all("/output/dense/" in name and "attention" not in name for name in kept)

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    plain, mixed = (convert(str(checkpoint), ["int8"], TINY_SEQ_LEN, tmp_path / name, random_init=True,
                            validate=False, int8_float_layers=groups)[0]
                    for name, groups in (("plain", ()), ("mixed", ("ffn-output",))))
    for result, groups, count in ((plain, [], 0), (mixed, ["ffn-output"], 2)):
        artifact = read_artifact(result.artifact_path)
        assert artifact.metadata["float_layers"] == {"groups": groups, "dense_ops_kept_float": count}
        float_types = graph_facts(artifact.read_graph())["float_op_types"]
        assert ("FULLY_CONNECTED" in float_types) == bool(count)


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
