"""edge-convert makes length-aware artifacts by default (one graph, input shape_signature [1, -1]) for
every mode that runs, --fixed-length keeps the fixed graph; validation runs the TF model and the
artifact at each text's own length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint

from edge_slm.convert.api import convert
from edge_slm.runtime.artifact import read_artifact
from edge_slm.runtime.engine import load_model

MODES = ["fp32", "fp16", "dynamic", "int8"]
TEXTS = ["a charming and often affecting journey .", "unflinchingly bleak and desperate", "fine", "x " * 40]


@pytest.fixture(scope="module")
def both_kinds(tmp_path_factory, minilm_dir):
    """{"dynamic" | "fixed": {quant: ConversionResult}} of one tiny BERT checkpoint."""
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny-bert", minilm_dir, "bert")
    out = tmp_path_factory.mktemp("kinds")
    return {kind: {r.quant: r for r in convert(str(checkpoint), MODES, TINY_SEQ_LEN, out / kind, random_init=True,
                                                  validation_samples=30, fixed_length=kind == "fixed")}
            for kind in ("dynamic", "fixed")}


def test_every_mode_is_length_aware_by_default_and_fixed_on_request(both_kinds):
    for kind, results in both_kinds.items():
        for quant, result in results.items():
            meta = read_artifact(result.artifact_path).metadata
            assert meta["sequence"] == {"kind": kind, "max_len": TINY_SEQ_LEN} == result.sequence
            report = json.loads(Path(result.report_path).read_text())
            assert report["sequence"] == meta["sequence"]
            signature = [1, -1] if kind == "dynamic" else [1, TINY_SEQ_LEN]
            assert all(t["shape_signature"] == signature for t in report["graph"]["inputs"]), quant
            model = load_model(result.artifact_path)
            assert model.dynamic is (kind == "dynamic")
            model.logits(TEXTS)  # runs at 9, 6, 3 and 16 tokens (or padded to 16)
            assert model.length == (16 if kind == "fixed" else len(model.tokenizer.encode_ids(TEXTS[-1], 16)))


def test_validation_runs_tf_and_the_artifact_at_each_texts_own_length(both_kinds):
    dynamic, fixed = both_kinds["dynamic"]["fp32"].validation, both_kinds["fixed"]["fp32"].validation
    assert dynamic["lengths"] == "each text's own" and fixed["lengths"] == f"padded to {TINY_SEQ_LEN}"
    assert dynamic["max_abs_logit_diff"] < 1e-5 and fixed["max_abs_logit_diff"] < 1e-5
    assert dynamic["texts"] == fixed["texts"] == 30 and dynamic["token_id_mismatches"] == 0


def test_length_aware_graphs_answer_as_the_fixed_ones_and_are_not_bigger(both_kinds):
    for quant in MODES:
        dynamic, fixed = both_kinds["dynamic"][quant], both_kinds["fixed"][quant]
        assert dynamic.file_bytes <= 1.05 * fixed.file_bytes, quant
        own, padded = load_model(dynamic.artifact_path).logits(TEXTS), load_model(fixed.artifact_path).logits(TEXTS)
        if quant in ("fp32", "fp16"):
            np.testing.assert_allclose(own, padded, atol=1e-4, err_msg=quant)
        assert (own.argmax(1) == padded.argmax(1)).mean() >= 0.75, quant  # quantized: near ties may flip


SHAPE_ARITHMETIC = ("SHAPE", "GATHER", "STRIDED_SLICE", "REDUCE_PROD", "PACK", "CONCATENATION")


def test_length_aware_dense_layers_compute_no_shapes_at_run_time(both_kinds):
    """Keras Dense on [1, L, H] traces to tf.tensordot, whose reshape targets an unknown L makes run-time
    SHAPE/GATHER/REDUCE_PROD/PACK ops that XNNPACK cannot take (MobileBERT fell into 436 delegate
    partitions). The length-aware graph has the fixed one's dense layers, on [1, L, H] as there, and
    no such arithmetic."""
    for quant in ("fp32", "dynamic", "int8"):
        ops = {kind: both_kinds[kind][quant] for kind in ("dynamic", "fixed")}
        counts = {kind: json.loads(Path(r.report_path).read_text())["graph"]["op_counts"] for kind, r in ops.items()}
        assert counts["dynamic"].get("REDUCE_PROD", 0) == 0, (quant, counts["dynamic"])
        assert counts["dynamic"]["FULLY_CONNECTED"] == counts["fixed"]["FULLY_CONNECTED"], quant
        # Nor reshapes around them: a flattened [L, H] dense layer brought two each, which XNNPACK re-plans
        # at every length change (MobileBERT 1,159 ops against 872 now).
        assert counts["dynamic"]["RESHAPE"] - counts["fixed"]["RESHAPE"] <= 1, (quant, counts)
        # What stays is per graph, not per dense layer (14 here): the position ids' range, the mask's reshape.
        extra = {op: counts["dynamic"].get(op, 0) - counts["fixed"].get(op, 0) for op in SHAPE_ARITHMETIC}
        assert sum(extra.values()) <= 6, (quant, extra)


def test_length_aware_dynamic_int8_keeps_the_position_table_float_like_the_fixed_graph(both_kinds):
    """A fixed graph folds its positions into a float constant; the length-aware graph gathers them
    from the table, which the dynamic-range quantizer would store as int8: noise the fixed graph
    has not (8 of 872 SST-2 dev labels differed on the fine-tuned MiniLM)."""
    dynamic, fixed = both_kinds["dynamic"]["dynamic"], both_kinds["fixed"]["dynamic"]
    assert read_artifact(dynamic.artifact_path).metadata["float_position_table"] is True
    assert read_artifact(fixed.artifact_path).metadata["float_position_table"] is False
    dequantize = {kind: json.loads(Path(r.report_path).read_text())["graph"]["op_counts"].get("DEQUANTIZE", 0)
                  for kind, r in (("dynamic", dynamic), ("fixed", fixed))}
    assert dequantize["dynamic"] == dequantize["fixed"], dequantize
    own, padded = load_model(dynamic.artifact_path).logits(TEXTS), load_model(fixed.artifact_path).logits(TEXTS)
    np.testing.assert_allclose(own, padded, atol=1e-3)


def _run_at_lengths(graph: bytes, lengths) -> tuple:
    """(logits at each length, delegate partitions, TILE ops left to the builtin kernels)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=graph, num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    rows = []
    for length in lengths:
        for d in details:
            interpreter.resize_tensor_input(d["index"], [1, length])
        interpreter.allocate_tensors()
        for d in details:
            ids = 1000 + (np.arange(length, dtype=np.int32) * 37) % 5000
            value = (np.ones if "mask" in d["name"] else np.zeros)((1, length), np.int32)
            interpreter.set_tensor(d["index"], ids[None] if d["name"] == "input_ids" else value)
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    return np.concatenate(rows), ops.count("DELEGATE"), ops.count("TILE")


def test_length_aware_graphs_end_an_xnnpack_partition_every_few_layers_with_the_same_answers(both_kinds):
    """XNNPACK re-plans a partition's memory on every length change, in time growing with the square of
    its size (MobileBERT: one 1,150-op partition); a copy of the hidden states between layers ends a
    partition. Here with one layer per partition: same logits at every length, one more partition."""
    from edge_slm.convert.graph import split_delegate_partitions

    dynamic = both_kinds["dynamic"]["fp32"]
    graph = read_artifact(dynamic.artifact_path).read_graph()
    split, boundaries = split_delegate_partitions(graph, ops_per_partition=1)
    assert boundaries == 1  # the tiny model's 2 layers
    lengths = (3, 17, TINY_SEQ_LEN, 9)
    whole, whole_partitions, _ = _run_at_lengths(graph, lengths)
    parts, partitions, tiles = _run_at_lengths(split, lengths)
    np.testing.assert_array_equal(parts, whole)
    assert tiles == 1 and partitions == whole_partitions + 1, (partitions, whole_partitions)
    # Graphs this small stay whole at the default size; the fixed graph never re-plans and is never split.
    assert split_delegate_partitions(graph)[1] == 0
    for kind in ("dynamic", "fixed"):
        assert read_artifact(both_kinds[kind]["fp32"].artifact_path).metadata["partition_ends"] == 0
