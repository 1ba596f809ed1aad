"""Random init as the PyTorch classes do it: MobileBERT's 24 NoNorm layers stay trainable from scratch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert.architectures import spec_for  # noqa: E402
from edge_slm.convert.weights import build_model, make_config  # noqa: E402
from edge_slm.models.registry import load_registry, lookup  # noqa: E402


def test_random_mobilebert_has_every_dense_kernel_from_its_config_and_a_bounded_residual_stream():
    import tensorflow as tf

    entry = lookup("mobilebert", load_registry())
    spec = spec_for(entry.model_type)
    config = make_config(spec, entry.config, ["negative", "positive"])
    assert config.num_hidden_layers == 24 and config.normalization_type == "no_norm"
    model, report = build_model(spec, config, 8, None, seed=0)
    assert report.origin == "random"
    dense = [layer for layer in model.submodules if isinstance(layer, tf.keras.layers.Dense) and layer.built]
    assert len(dense) > 300  # every block's attention, bottlenecks, FFNs; the pooler; the classifier
    for layer in dense:  # glorot_uniform would give e.g. 0.054 for a 512 x 128 kernel
        assert np.std(layer.kernel.numpy()) == pytest.approx(config.initializer_range, rel=0.15), layer.name
    ids = np.array([[101, 2023, 3185, 2001, 2307, 1012, 102, 0]], np.int32)
    hidden = model.mobilebert({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32),
                               "token_type_ids": np.zeros_like(ids)}, training=False).last_hidden_state
    # glorot's init grew the stream ~1.6x per layer: max |h| 8,600 after 24 layers; this keeps it ~0.1
    assert float(np.abs(hidden.numpy()).max()) < 1.0
