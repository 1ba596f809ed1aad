"""Validation and calibration texts: disjoint slices of one pool (no TensorFlow: fast)."""

from __future__ import annotations

import pytest

from edge_slm.common.errors import EdgeError
from edge_slm.convert.texts import Texts, calibration_overlap, split_pool

POOL = Texts([f"text {i}" for i in range(200)], "pool.tsv")


def test_validation_first_then_calibration_never_the_same_text():
    validation, calibration = split_pool(POOL, 100, 50)
    assert validation.texts == POOL.texts[:100] and calibration.texts == POOL.texts[100:150]
    assert validation.describe() == {"source": "pool.tsv", "count": 100, "rows": [0, 100]}
    assert calibration.describe() == {"source": "pool.tsv", "count": 50, "rows": [100, 150]}
    assert calibration_overlap(validation, calibration) == 0


def test_all_texts_for_validation_leaves_the_calibration_its_own():
    validation, calibration = split_pool(POOL, 0, 50)
    assert validation.describe()["rows"] == [0, 150] and calibration.describe()["rows"] == [150, 200]
    assert split_pool(POOL, 0, 0)[0].describe()["count"] == 200


def test_a_pool_too_small_for_both_is_an_error():
    with pytest.raises(EdgeError, match="too few for 200 validation texts and 50 calibration texts"):
        split_pool(POOL, 200, 50)


def test_overlap_ignores_case_and_spacing():
    assert calibration_overlap(Texts(["A  film .", "other"], "v"), Texts(["a film .", "x"], "c")) == 1
    assert calibration_overlap(Texts(["a"], "v"), None) == 0
