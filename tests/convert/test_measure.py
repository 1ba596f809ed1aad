"""`measure minilm` (convert/measure.py) with its conversion stubbed: which texts calibrate and which
evaluate, and the mark on a figure measured on calibration texts. The real run is a benchmark."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from edge_slm.convert import measure  # noqa: E402
from edge_slm.convert.api import ConversionResult  # noqa: E402
from edge_slm.runtime.artifact import build_metadata, read_artifact, write_artifact  # noqa: E402
from edge_slm.runtime.data import text_fingerprint  # noqa: E402

DEV = ["a gorgeous , witty movie .", "dull and boring .", "great fun .", "a mess ."]


@pytest.fixture
def sst2(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("text\tlabel\n" + "".join(f"train text {i}\t{i % 2}\n" for i in range(10)))
    (folder / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{(i + 1) % 2}\n" for i, t in enumerate(DEV)))
    return folder


def calibrated_artifact(source, out, texts) -> str:
    """The tiny artifact with trained-weights metadata that records calibration on `texts`."""
    art = read_artifact(source)
    meta = art.metadata
    calibration = {"source": "somewhere.tsv", "count": len(texts), "rows": [0, len(texts)],
                   "fingerprints": [text_fingerprint(t) for t in texts]}
    meta = build_metadata(graph=art.read_graph(), tokenizer=meta["tokenizer"], labels=["negative", "positive"],
                          inputs=meta["inputs"], outputs=meta["outputs"], quantization="int8", random_weights=False,
                          source="test", extra={"calibration": calibration, "tools": meta["tools"]})
    write_artifact(out, art.read_graph(), meta, art.vocab, ["negative", "positive"])
    return str(out)


def run_measure(sst2, tmp_path, monkeypatch, artifact):
    calls = []

    def fake_convert(source, modes, seq_len, out_dir, **options):
        calls.append(options)
        return [ConversionResult(model="m", quant="int8", artifact_path=artifact, report_path="r.json", seq_len=16,
                                 graph_bytes=1, file_bytes=1, random_weights=False, validation=None, timings={},
                                 texts={"calibration": {"source": options["calibration"], "count": 2, "rows": [0, 2]},
                                        "calibration_overlaps_validation": 0})]

    monkeypatch.setattr(measure, "convert", fake_convert)
    monkeypatch.setattr(measure, "latency_rounds", lambda artifacts, data: None)  # edge-run timing: make bench-convert
    figures = measure.measure_minilm(sst2, tmp_path / "work", checkpoint=tmp_path / "checkpoint")
    return calls[0], figures["results"][0]


def test_minilm_calibrates_on_train_and_evaluates_on_dev(sst2, tmp_path, monkeypatch, tiny_dynamic, capsys):
    artifact = calibrated_artifact(tiny_dynamic, tmp_path / "clean.tflite", ["train text 0", "train text 1"])
    options, figure = run_measure(sst2, tmp_path, monkeypatch, artifact)
    assert options["calibration"] == str(sst2 / "train.tsv") and options["data"] == str(sst2 / "dev.tsv")
    assert options["validation_samples"] == 0
    assert figure["calibration_overlaps_evaluation"] is False and figure["calibrated_on_dev_texts"] == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if "SST-2 dev accuracy" in line)
    assert f"calibrated on 2 texts of {sst2 / 'train.tsv'}" in line
    assert "warning" not in line


def test_a_figure_measured_on_calibration_texts_is_marked(sst2, tmp_path, monkeypatch, tiny_dynamic, capsys):
    artifact = calibrated_artifact(tiny_dynamic, tmp_path / "in-sample.tflite", DEV[:2])
    _, figure = run_measure(sst2, tmp_path, monkeypatch, artifact)
    assert figure["calibration_overlaps_evaluation"] is True and figure["calibrated_on_dev_texts"] == 2
    assert ("** warning: calibrated on 2 of the evaluation texts: this accuracy is partly in-sample"
            in capsys.readouterr().err)


def test_head_sensitivity_reads_the_pooler_of_a_length_aware_artifact_at_each_texts_length(tiny_fp32):
    """`make bench-convert` fed [1, 128] buffers to the length-aware graph (ValueError: dimension mismatch)."""
    import numpy as np

    rng = np.random.default_rng(0)
    texts = ["fine", "a charming and often affecting journey .", "unflinchingly bleak"]
    hidden = 32  # the tiny checkpoint's pooler width
    figures = measure.head_sensitivity(str(tiny_fp32), texts, [0, 1, 0], rng.normal(size=(20, hidden)),
                                       np.eye(2)[rng.integers(0, 2, 20)], rng.normal(size=(3, hidden)))
    assert set(figures) == {str(s) for s in measure.RIDGE_STRENGTHS}
    assert all(0.0 <= f["agreement"] <= 1.0 for f in figures.values())
