"""edge-convert's table: the model card's accuracy belongs to the source model, shown once (no TF)."""

from __future__ import annotations

from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY
from edge_slm.convert.api import ConversionResult
from edge_slm.convert.cli import render_results

CARD = {"accuracy": 0.912, "dataset": "sst2 dev"}


def result(model: str, quant: str, random_weights: bool = False) -> ConversionResult:
    return ConversionResult(model=model, quant=quant, artifact_path=f"{model}-{quant}.tflite",
                            report_path=f"{model}-{quant}.tflite.report.json", seq_len=128, graph_bytes=1000,
                            file_bytes=2_000_000, random_weights=random_weights,
                            validation={"max_abs_logit_diff": 0.01, "label_agreement": 0.97}, timings={},
                            reference_accuracy=CARD)


def test_model_card_accuracy_is_the_source_models_once_not_per_artifact():
    text = render_results([result("tinybert", q) for q in ("fp32", "dynamic", "int8")])
    artifact_rows = [line for line in text.splitlines() if ".tflite" in line]
    assert len(artifact_rows) == 3 and not any("91.2" in line for line in artifact_rows)
    assert text.count("91.2 %") == 1
    assert "source tinybert: accuracy 91.2 % on sst2 dev (model card, fp32)" in text


def test_random_weights_have_no_source_accuracy():
    text = render_results([result("distilbert", "dynamic", random_weights=True), result("tinybert", "dynamic")])
    assert f"source distilbert: accuracy {RANDOM_WEIGHTS_ACCURACY}" in text
    assert text.count("91.2 %") == 1
