"""--int8-float-layers auto: the dense group whose float version lowers the error most stays float.

The choice is checked against a deliberately damaged group (noise in its int8 weights wherever it is
"quantized"), whichever group is damaged; then end to end on a tiny checkpoint, where the record must
name the measured best group and the graph must hold exactly its dense ops in float.
"""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from edge_slm.common.errors import EdgeError  # noqa: E402
from edge_slm.convert.api import convert  # noqa: E402
from edge_slm.convert.graph import graph_facts  # noqa: E402
from edge_slm.convert.precision import choose_float_group, dense_groups  # noqa: E402
from edge_slm.runtime.artifact import read_artifact  # noqa: E402
from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint  # noqa: E402
from tests.convert.test_convert_explain import damage_dense, graph_of, samples  # noqa: E402


def test_dense_groups_gather_each_place_in_the_block_across_layers(tiny_fp32):
    groups = dense_groups(graph_of(tiny_fp32))
    layered = {label: nodes for label, (nodes, _) in groups.items() if label.startswith("layer_._*/")}
    assert set(layered) == {f"layer_._*/{place}" for place in (
        "attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense",
        "intermediate/dense", "output/dense")}
    assert all(len(nodes) == 2 for nodes in layered.values())  # the tiny model's two layers
    hidden, intermediate = 32, 64  # write_tiny_checkpoint's bert config
    assert groups["layer_._*/intermediate/dense"][1] == 2 * hidden * intermediate
    assert groups["layer_._*/attention/self/query"][1] == 2 * hidden * hidden


@pytest.mark.parametrize("damaged", ["intermediate/dense", "attention/self/value"])
def test_the_damaged_group_is_the_one_kept_float(tiny_fp32, tiny_dynamic, damaged):
    reference, quantized = graph_of(tiny_fp32), graph_of(tiny_dynamic)

    def quantize(float_nodes):
        graph = quantized  # the dynamic graph stands in for int8: every group "quantized" ...
        for layer in (0, 1):  # ... and the damaged one ruined wherever it is not kept float
            scope = f"layer_._{layer}/{damaged}"
            if not any(scope in name for name in float_nodes):
                graph = damage_dense(graph, scope)
        return graph

    kept, record = choose_float_group(reference, quantize, samples())
    assert record["chosen"] == f"layer_._*/{damaged}"
    assert sorted(kept) == sorted(dense_groups(reference)[record["chosen"]][0])
    noises = [c["relative_noise"] for c in record["candidates"]]
    assert noises == sorted(noises) and noises[0] < record["all_int8_relative_noise"] / 3


def test_auto_records_the_measured_choice_and_keeps_its_ops_float(tmp_path, minilm_dir):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    result = convert(str(checkpoint), ["int8"], TINY_SEQ_LEN, tmp_path / "auto", random_init=True, validate=False,
                     int8_float_layers=["auto"])[0]
    record = read_artifact(result.artifact_path).metadata["float_layers"]
    selection = record["selection"]
    assert len(selection["candidates"]) == 8  # 6 per block + pooler + output layer
    best = min(selection["candidates"], key=lambda c: c["relative_noise"])
    if best["relative_noise"] < selection["all_int8_relative_noise"]:
        assert selection["chosen"] == best["group"] and record["groups"] == [best["group"]]
        assert record["dense_ops_kept_float"] == best["dense_ops"]
    else:
        assert selection["chosen"] is None and record["dense_ops_kept_float"] == 0
    float_types = graph_facts(read_artifact(result.artifact_path).read_graph())["float_op_types"]
    assert ("FULLY_CONNECTED" in float_types) == bool(record["dense_ops_kept_float"])


def test_auto_takes_no_other_group(tmp_path):
    with pytest.raises(EdgeError, match="auto chooses the group itself"):
        convert("tinybert", ["int8"], out_dir=tmp_path, int8_float_layers=["auto", "ffn-output"])


def test_auto_compares_on_texts_neither_calibrated_nor_validated_on(tmp_path, minilm_dir):
    from edge_slm.convert.precision import SELECTION_TEXTS

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    result = convert(str(checkpoint), ["int8"], TINY_SEQ_LEN, tmp_path / "auto", random_init=True,
                     validation_samples=20, calibration_samples=10, int8_float_layers=["auto"])[0]
    metadata = read_artifact(result.artifact_path).metadata
    selection = metadata["float_layers"]["selection"]["texts"]
    assert metadata["texts"]["validation"]["rows"] == [0, 20] and metadata["calibration"]["rows"] == [20, 30]
    assert selection == {"source": "generated", "count": SELECTION_TEXTS, "rows": [30, 30 + SELECTION_TEXTS],
                         "held_out": True}
