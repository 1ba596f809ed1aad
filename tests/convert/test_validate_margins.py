"""Margin-aware label agreement: a near-tie flip within the measured quantization noise is not a failure,
a flip across a clear margin is, and a broken artifact excuses nothing."""

from __future__ import annotations

import numpy as np

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
