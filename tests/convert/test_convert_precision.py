"""--int8-float-layers: the named dense layers stay float in the int8 graph, and the metadata says so."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert.api import convert  # noqa: E402
from edge_slm.convert.graph import graph_facts  # noqa: E402
from edge_slm.convert.precision import float_nodes  # noqa: E402
from edge_slm.runtime.artifact import read_artifact  # noqa: E402
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


def test_float_embeddings_keep_the_word_table_float(tmp_path, minilm_dir):
    import numpy as np

    from edge_slm.runtime.engine import load_model

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    results = {}
    for name, flag in (("plain", False), ("float", True)):
        results[name] = {r.quant: r for r in convert(str(checkpoint), ["fp32", "dynamic"], TINY_SEQ_LEN,
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
