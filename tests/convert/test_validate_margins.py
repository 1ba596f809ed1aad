"""Margin-aware label agreement: a near-tie flip within the measured quantization noise is not a failure,
a flip across a clear margin is, and a broken artifact excuses nothing."""

from __future__ import annotations

import numpy as np
import pytest

from edge_slm.convert.validate import margin_aware


def logits(rows):
    return np.array(rows, dtype=np.float32)


def test_a_near_tie_flip_is_excused_and_a_clear_flip_is_not():
    reference = logits([[4.0, -4.0, 0.0]] * 8 + [[1.00, 0.98, -3.0], [3.0, 0.0, -3.0]])
    device = reference + 0.05 * np.array([1, -1, 0], np.float32)   # noise 0.05 on every text
    device[8] = [0.96, 1.02, -3.0]     # reference margin 0.02 < 2 x noise: a near tie
    device[9] = [0.0, 3.0, -3.0]       # reference margin 3.0: a real disagreement
    result = margin_aware(reference, device)
    assert result["flips"] == 2 and result["excused_flips"] == 1
    assert result["margin_aware_agreement"] == 0.9
    assert abs(result["quantization_noise"] - 0.05) < 1e-6


def test_a_broken_artifact_excuses_nothing():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(50, 5)).astype(np.float32)
    device = rng.normal(size=(50, 5)).astype(np.float32)       # unrelated logits: noise as large as the spread
    result = margin_aware(reference, device)
    assert result["excused_flips"] == 0 and result["flips"] > 30
    assert result["margin_aware_agreement"] == 1 - result["flips"] / 50


def test_agreeing_logits_agree():
    reference = logits([[1.0, 0.0], [0.0, 1.0]])
    assert margin_aware(reference, reference.copy())["margin_aware_agreement"] == 1.0


def test_an_edge_train_checkpoint_is_validated_on_its_recorded_held_out_texts(tmp_path, minilm_dir):
    """Without --calibration or --data, the files train_report.json names: dev to validate, train to
    calibrate; --data takes over validation."""
    import json

    pytest.importorskip("tensorflow")
    from edge_slm.convert.api import convert
    from edge_slm.runtime.artifact import read_artifact
    from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir)
    files = {}
    for split, words in (("train", "fine good"), ("dev", "poor bad"), ("other", "plain text")):
        files[split] = tmp_path / f"{split}.tsv"
        files[split].write_text("sentence\tlabel\n" + "".join(f"{words} {i}\t{i % 2}\n" for i in range(12)))
    (checkpoint / "train_report.json").write_text(json.dumps(
        {"data": {"train": {"path": str(files["train"])}, "dev": {"path": str(files["dev"])}}}))
    results = convert(str(checkpoint), ["fp32", "int8"], TINY_SEQ_LEN, tmp_path / "a", random_init=True,
                      calibration_samples=5)
    for result in results:
        meta = read_artifact(result.artifact_path).metadata
        assert meta["validation"]["texts_source"] == str(files["dev"]) and meta["validation"]["texts"] == 12
    calibration = read_artifact(results[1].artifact_path).metadata["calibration"]
    assert {k: calibration[k] for k in ("source", "count", "rows")} == {"source": str(files["train"]), "count": 5,
                                                                       "rows": [0, 5]}
    [result] = convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "b", random_init=True,
                       data=str(files["other"]))
    assert read_artifact(result.artifact_path).metadata["validation"]["texts_source"] == str(files["other"])
