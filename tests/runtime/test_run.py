"""`edge-run` end to end on tiny artifacts: predict, evaluate, bench, JSON results."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edge_slm.runtime.artifact import read_artifact, write_artifact, build_metadata
from edge_slm.runtime.cli import run
from edge_slm.runtime.engine import load_model
from edge_slm.common.documents import SCHEMA, SCHEMA_VERSION
from tests.conftest import error_line


def test_predict_text_matches_manual_interpreter(tiny_fp32):
    """The runtime's logits equal a bare interpreter fed the same token ids."""
    from ai_edge_litert.interpreter import Interpreter

    model = load_model(tiny_fp32)
    text = "A gorgeous, witty, seductive movie."
    ours = model.logits([text])[0]
    encoded = model.tokenizer.encode(text, model.seq_len)
    tokens = len(model.tokenizer.encode_ids(text, model.seq_len))
    bare = Interpreter(model_path=str(tiny_fp32))
    for detail in bare.get_input_details():  # the length-aware graph, at the text's own length
        bare.resize_tensor_input(detail["index"], [1, tokens])
    bare.allocate_tensors()
    for detail in bare.get_input_details():
        role = next(r for r in encoded if r in detail["name"])
        bare.set_tensor(detail["index"], encoded[role][:, :tokens])
    bare.invoke()
    expected = bare.get_tensor(bare.get_output_details()[0]["index"])[0]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    p = model.predict_one(text)
    assert p.label in ("negative", "positive") and sum(p.probabilities) == pytest.approx(1.0)
    assert p.probability == max(p.probabilities)


def test_prediction_from_logits_is_a_stable_softmax_and_takes_the_first_of_equal_maxima(tiny_fp32):
    """to_prediction works on plain floats (cheaper than numpy for a few logits): same figures."""
    model = load_model(tiny_fp32)
    raw = np.array([[1000.5, -3.25]], np.float32)  # exp(1000) overflows a naive softmax
    p = model.to_prediction(raw)
    expected = np.exp(raw[0].astype(np.float64) - 1000.5)
    np.testing.assert_allclose(p.probabilities, expected / expected.sum(), rtol=1e-15, atol=0)
    assert (p.index, p.label, p.logits) == (0, model.labels[0], [1000.5, -3.25])
    assert all(type(x) is float for x in p.probabilities + p.logits + [p.probability])  # JSON-ready
    tie = model.to_prediction(np.array([[0.25, 0.25]], np.float32))
    assert (tie.index, tie.probabilities) == (0, [0.5, 0.5])
    assert model.to_prediction(np.array([[-1.0, 2.0]], np.float32)).index == 1


def test_cli_text_prints_label_probability_latency(run_cli, tiny_dynamic):
    code, out, err = run_cli("--model", tiny_dynamic, "--text", "great movie", "--text", "dull")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    label, probability, latency, unit = lines[0].split()[:4]
    assert label in ("negative", "positive") and 0.5 <= float(probability) <= 1 and unit == "ms"


def test_input_tsv_with_random_weights_shows_no_accuracy_number(run_cli, tiny_dynamic, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\t1\nbad\t0\nfine\t1\n")
    code, out, err = run_cli("--model", tiny_dynamic, "--input", data, "-q")
    assert code == 0, err
    assert "n/a (random weights)" in out
    assert "%" not in out


def _with_trained_flag(path, tmp_path, labels=("negative", "positive"), extra=None):
    """Same graph, metadata claiming trained weights: exercises the accuracy path only."""
    art = read_artifact(path)
    meta = dict(art.metadata, random_weights=False, labels=list(labels), source="test fixture")
    meta = build_metadata(graph=art.read_graph(), tokenizer=meta["tokenizer"], labels=meta["labels"],
                          inputs=meta["inputs"], outputs=meta["outputs"], quantization=meta["quantization"],
                          random_weights=False, source="test fixture", extra={"tools": meta["tools"], **(extra or {})})
    out = tmp_path / "trained-flag.tflite"
    write_artifact(out, art.read_graph(), meta, art.vocab, list(labels))
    return out


def test_evaluation_reports_metrics_consistent_with_predictions(tiny_dynamic, tmp_path):
    model_path = _with_trained_flag(tiny_dynamic, tmp_path)
    data = tmp_path / "d.jsonl"
    rows = [("good", "positive"), ("bad", "negative"), ("fine film", 1), ("boring", 0), ("ok", "negative")]
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    doc = run(model_path, input_path=str(data), show_progress=False)
    ev = doc["evaluation"]
    truth = [1, 0, 1, 0, 0]
    predicted = [p["index"] for p in doc["predictions"]]
    assert ev["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(predicted)))
    assert sum(map(sum, ev["confusion_matrix"])) == 5
    assert [p["line"] for p in doc["predictions"]] == [1, 2, 3, 4, 5]


def test_many_class_string_labels(tiny_dynamic, tmp_path):
    """Labels come from the model; a 2-label model rejects a third class by file:line."""
    from edge_slm.common.errors import EdgeError

    model_path = _with_trained_flag(tiny_dynamic, tmp_path)
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\tpositive\nmeh\tneutral\n")
    with pytest.raises(EdgeError, match=r"d.tsv:3.*neutral"):
        run(model_path, input_path=str(data), show_progress=False)


def test_jsonl_predictions_stream_one_line_each(run_cli, tiny_dynamic, tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("one\ntwo\nthree\n")
    code, out, err = run_cli("--model", tiny_dynamic, "--input", data, "--jsonl", "-q")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["one", "two", "three"] and all("probability" in r for r in rows)


def test_bench_json_schema_and_output_file(run_cli, tiny_dynamic, tmp_path):
    out_file = tmp_path / "results.json"
    code, out, err = run_cli("--model", tiny_dynamic, "--bench", "--runs", "20", "--warmup", "2",
                             "--threads", "1", "--json", "--output", out_file, "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc == json.loads(out_file.read_text())
    assert doc["schema"] == SCHEMA and doc["schema_version"] == SCHEMA_VERSION
    assert doc["backend"]["name"] == "litert" and doc["backend"]["version"]
    assert doc["threads"] == 1
    for key in ("cpu_model", "cores_logical", "os", "python"):
        assert doc["host"][key]
    b = doc["benchmark"]
    assert b["runs"] == 20 and b["inputs"] == "text" and len(b["latencies_ms"]) == 20
    lat = b["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert b["init_ms"] > 0 and b["first_inference_ms"] > 0 and b["throughput_per_s"] > 0
    assert b["memory"]["peak_rss_mb"] >= b["memory"]["rss_after_loop_mb"] > 0
    assert b["model_file_bytes"] == tiny_dynamic.stat().st_size
    assert doc["model"]["metadata"]["quantization"] == "dynamic"
    assert doc["energy"] is None


def test_bench_min_seconds_keeps_running(tiny_dynamic):
    doc = run(tiny_dynamic, bench=True, runs=1, min_seconds=0.3, warmup=0, show_progress=False)
    assert doc["benchmark"]["wall_seconds"] >= 0.3 and doc["benchmark"]["runs"] > 1


def test_plain_tflite_bench_uses_random_inputs(run_cli, tiny_dynamic, tmp_path):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(read_artifact(tiny_dynamic).read_graph())
    code, _, err = run_cli("--model", plain, "--bench", "--runs", "5", "--json", "-q")
    assert code == 2 and "pass --seq-len N" in error_line(err, "edge-run")  # length-aware: no known longest
    code, out, err = run_cli("--model", plain, "--bench", "--runs", "5", "--json", "-q", "--seq-len", "16")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["benchmark"]["inputs"] == "random" and doc["model"]["metadata"] is None
    assert doc["benchmark"]["sequence"]["run_length"]["max"] == 16
    # nothing names its longest, so the graph decides: past the length it was converted at (16) it runs,
    # past its 64 positions it fails with one line (not edge-run's own 128-token buffers)
    code, out, err = run_cli("--model", plain, "--bench", "--runs", "3", "--json", "-q", "--seq-len", "40")
    assert code == 0, err
    assert json.loads(out)["benchmark"]["sequence"]["run_length"]["max"] == 40
    code, _, err = run_cli("--model", plain, "--bench", "--runs", "3", "-q", "--seq-len", "200")
    assert code != 0 and "200" in error_line(err, "edge-run") and "128" not in error_line(err, "edge-run")
    code, _, err = run_cli("--model", plain, "--bench", "--runs", "3", "-q", "--seq-len", "100000")
    assert code == 2 and "past 512" in error_line(err, "edge-run")  # refused, not an arena of tens of GB


def test_progress_bar_only_on_a_tty(tmp_path):
    import io

    from edge_slm.common import progress as progress_module

    stream = io.StringIO()
    bar = progress_module.Progress("bench", total=10, stream=stream)
    assert bar.enabled is False  # StringIO is not a tty
    forced = progress_module.Progress("bench", total=10, stream=stream, enabled=True)
    forced.start -= progress_module.SHOW_AFTER_SECONDS + 1
    forced.update(5)
    forced.close()
    assert "[###############..............." in stream.getvalue() and "5/10" in stream.getvalue()


def test_an_interrupt_writes_the_finished_predictions(tiny_dynamic, tmp_path, monkeypatch, run_cli):
    from edge_slm.runtime import engine

    data = tmp_path / "texts.txt"
    data.write_text("one\ntwo\nthree\nfour\n")
    real_predict, calls = engine.Model.predict_ids, []

    def interrupted_at_the_third(self, ids):
        calls.append(ids)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C or SIGTERM (run_click) raises
        return real_predict(self, ids)

    monkeypatch.setattr(engine.Model, "predict_ids", interrupted_at_the_third)
    code, _, err = run_cli("--model", tiny_dynamic, "--input", data, "-o", tmp_path / "r.json", "-q")
    assert code == 130 and err.strip() == "edge-run: interrupted"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["interrupted"] is True and [p["text"] for p in doc["predictions"]] == ["one", "two"]


def test_every_delegate_runs_and_is_recorded(tiny_dynamic, tiny_fp32):
    texts = ["a gorgeous , witty , seductive movie .", "the film is strictly routine ."]
    docs = {d: run(tiny_dynamic, texts=texts, delegate=d, show_progress=False) for d in ("xnnpack", "none", "reference")}
    assert [doc["backend"]["delegate"] for doc in docs.values()] == ["xnnpack", "none", "reference"]
    labels = {d: [p["label"] for p in doc["predictions"]] for d, doc in docs.items()}
    assert labels["xnnpack"] == labels["none"] == labels["reference"]
    # float graphs: the kernels do the same arithmetic up to rounding
    fp32 = [np.array([p["logits"] for p in run(tiny_fp32, texts=texts, delegate=d, show_progress=False)["predictions"]])
            for d in ("xnnpack", "reference")]
    np.testing.assert_allclose(fp32[0], fp32[1], rtol=0, atol=1e-5)


def test_a_backend_without_the_kernels_asked_for_is_one_line(run_cli, tiny_fp32, monkeypatch):
    import edge_slm.runtime.engine as engine

    real = engine.resolve_backend
    monkeypatch.setattr(engine, "resolve_backend",
                        lambda name: dataclasses.replace(real(name), op_resolver_type=None))
    code, out, err = run_cli("--model", tiny_fp32, "--text", "x", "--delegate", "reference")
    assert code != 0
    assert "cannot run with --delegate reference (its interpreter has no OpResolverType.BUILTIN_REF)" in \
        error_line(err, "edge-run")
    assert run_cli("--model", tiny_fp32, "--text", "x", "--delegate", "xnnpack")[0] == 0


def test_accuracy_on_texts_the_artifact_was_calibrated_on_is_marked_in_sample(run_cli, tiny_dynamic, tmp_path):
    from edge_slm.runtime.data import text_fingerprint

    calibration = {"source": "cal.tsv", "count": 2, "rows": [0, 2],
                   "fingerprints": [text_fingerprint("Good"), text_fingerprint("a  fine film")]}
    model_path = _with_trained_flag(tiny_dynamic, tmp_path, extra={"calibration": calibration})
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\t1\nbad\t0\nA fine FILM\t1\nboring\t0\n")
    code, out, err = run_cli("--model", model_path, "--input", data, "-q", "--json")
    assert code == 0, err
    assert json.loads(out)["evaluation"]["calibrated_on_texts"] == 2
    assert "warning: accuracy in-sample: the artifact was calibrated on 2 of these 4 texts" in err
    code, out, _ = run_cli("--model", model_path, "--input", data, "-q")
    assert "[in-sample: the artifact was calibrated on 2 of these 4 texts]" in out.splitlines()[0]
