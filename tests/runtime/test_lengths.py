"""Length-aware artifacts in the runtime: each request at its own length, resized only when the length
changes; --bench --seq-len and --bench --input; multiply-accumulates counted from the graph."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY_SEQ_LEN, error_line

from edge_slm.runtime import cli
from edge_slm.runtime.artifact import read_artifact, write_artifact
from edge_slm.runtime.engine import load_model
from edge_slm.runtime.work import op_macs, work_summary

SHORT, SHORT_TOO, LONGER = "a fine film", "a dull film", "a charming and often affecting journey ."


def token_count(model, text: str) -> int:
    return len(model.tokenizer.encode_ids(text, model.seq_len))


def test_each_request_runs_at_its_own_length_and_resizes_only_on_a_change(tiny_dynamic):
    model = load_model(tiny_dynamic)
    assert model.dynamic and model.describe()["sequence"] == {"kind": "dynamic", "max_len": TINY_SEQ_LEN}
    lengths = []
    for text in (SHORT, SHORT_TOO, LONGER, LONGER, SHORT):
        tokens = model.prepare(text)
        model.run_prepared()
        lengths.append((tokens, model.length, list(model.interpreter.get_input_details()[0]["shape"])))
    assert [t for t, _, _ in lengths] == [5, 5, 9, 9, 5]
    assert all(t == length and shape == [1, t] for t, length, shape in lengths)
    assert model.resizes == 3  # 1 -> 5, 5 -> 9, 9 -> 5: not for the repeated lengths


def test_own_length_logits_equal_the_padded_logits_for_bert(tiny_fp32):
    """BERT's attention mask makes padding invisible: the same logits padded or not (MobileBERT differs:
    tests/convert/test_lengths.py)."""
    model = load_model(tiny_fp32)
    own = model.logits([SHORT, LONGER])
    model.pad_every_request_to(TINY_SEQ_LEN)
    padded = model.logits([SHORT, LONGER])
    assert model.length == TINY_SEQ_LEN
    np.testing.assert_allclose(own, padded, atol=1e-5)


def test_bench_input_times_the_files_texts_in_order_at_their_own_lengths(tiny_dynamic, tmp_path):
    data = tmp_path / "texts.txt"
    texts = [SHORT, LONGER, SHORT_TOO, "x " * 40]
    data.write_text("".join(t + "\n" for t in texts))
    doc = cli.run(tiny_dynamic, input_path=str(data), bench=True, warmup=2, show_progress=False)
    b = doc["benchmark"]
    model = load_model(tiny_dynamic)
    expected = [token_count(model, t) for t in texts]  # the last is truncated to the longest: 16
    assert b["runs"] == len(texts) and expected == [5, 9, 5, TINY_SEQ_LEN]
    seq = b["sequence"]
    assert seq["lengths"] == "own length" and seq["graph"] == "dynamic" and seq["max_len"] == TINY_SEQ_LEN
    assert seq["tokens"]["mean"] == pytest.approx(np.mean(expected)) and seq["tokens"]["max"] == TINY_SEQ_LEN
    # warm-up (first inference + 2) ends at the third text (5 tokens); then 5 9 5 16: three resizes
    assert seq["run_length"] == seq["tokens"] and seq["resizes"] == 3
    summary = doc["predictions_summary"]
    assert summary["texts"] == 4 and summary["tokens"]["mean"] == pytest.approx(np.mean(expected))
    assert [p["tokens"] for p in doc["predictions"]] == expected


def test_bench_seq_len_times_one_length_and_defaults_to_the_longest(tiny_dynamic):
    at_8 = cli.run(tiny_dynamic, bench=True, runs=5, warmup=1, seq_len=8, show_progress=False)["benchmark"]
    default = cli.run(tiny_dynamic, bench=True, runs=5, warmup=1, show_progress=False)["benchmark"]
    assert at_8["sequence"]["lengths"] == "padded to 8" and at_8["sequence"]["run_length"]["min"] == 8
    assert default["sequence"]["lengths"] == f"padded to {TINY_SEQ_LEN}"
    assert default["sequence"]["run_length"]["max"] == TINY_SEQ_LEN and default["sequence"]["resizes"] == 0
    # Work grows with the length: the counts come from the graph's shapes at each length.
    assert 0 < at_8["work"]["macs_per_inference"] < default["work"]["macs_per_inference"]
    assert default["work"]["gops_per_s"] > 0


def test_macs_are_counted_from_the_graph_not_from_a_formula(tiny_fp32):
    """The tiny BERT (hidden 32, intermediate 64, 2 layers, 2 labels): the count from the graph's ops
    equals the matrix work written out by hand, at every length."""
    hidden, intermediate, layers, labels = 32, 64, 2, 2
    counter = load_model(tiny_fp32).mac_counter
    for n in (2, 7, TINY_SEQ_LEN):
        per_layer = 4 * n * hidden * hidden + 2 * n * hidden * intermediate + 2 * n * n * hidden
        assert counter.macs(n) == layers * per_layer + hidden * hidden + hidden * labels, n


def test_weight_bytes_are_the_stored_matrix_weights_whatever_the_length(tiny_fp32, tiny_fp16, tiny_dynamic):
    """Every inference reads each weight of the matrix ops once, so the bytes do not grow with the
    length; they are what the artifact stores: float32 in fp32, float16 behind a DEQUANTIZE in fp16,
    int8 in dynamic int8 (whose converter leaves tensors under 1,024 values, here the 32 x 2
    classifier, in float32)."""
    hidden, intermediate, layers, labels = 32, 64, 2, 2
    values = layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * hidden + hidden * labels
    fp32, fp16, dynamic = (load_model(path).mac_counter for path in (tiny_fp32, tiny_fp16, tiny_dynamic))
    fp32.macs(TINY_SEQ_LEN)
    fp16.macs(TINY_SEQ_LEN)
    dynamic.macs(3)
    assert fp32.weight_bytes == 4 * values
    assert fp16.weight_bytes == 2 * values
    assert dynamic.weight_bytes == values + 3 * hidden * labels
    at_longest = load_model(tiny_dynamic).mac_counter
    at_longest.macs(TINY_SEQ_LEN)
    assert at_longest.weight_bytes == dynamic.weight_bytes
    summary = work_summary(dynamic, [3, 3, 7, 3], [2.0, 2.0, 4.0, 2.0])
    assert summary["weight_bytes_per_inference"] == dynamic.weight_bytes
    assert summary["weight_gb_per_s"] == pytest.approx(4 * dynamic.weight_bytes / 0.010 / 1e9)


def test_op_macs_of_each_counted_op():
    assert op_macs("FULLY_CONNECTED", [[1, 5, 32], [64, 32]], [1, 5, 64]) == 5 * 64 * 32
    assert op_macs("BATCH_MATMUL", [[1, 2, 5, 16], [1, 2, 16, 5]], [1, 2, 5, 5]) == 50 * 16
    assert op_macs("BATCH_MATMUL", [[1, 2, 16, 5], [1, 2, 16, 7]], [1, 2, 5, 7]) == 70 * 16  # adjoint lhs
    assert op_macs("CONV_2D", [[1, 8, 8, 3], [4, 3, 3, 3]], [1, 8, 8, 4]) == 256 * 27
    assert op_macs("DEPTHWISE_CONV_2D", [[1, 8, 8, 3], [1, 3, 3, 3]], [1, 8, 8, 3]) == 192 * 9
    assert op_macs("ADD", [[1, 5], [1, 5]], [1, 5]) == 0


def test_old_fixed_length_artifacts_without_sequence_metadata_still_run(tiny_fixed, tmp_path):
    """Artifacts made before length-aware graphs have no "sequence" key: read as fixed-length."""
    artifact = read_artifact(tiny_fixed)
    metadata = {k: v for k, v in artifact.metadata.items() if k != "sequence"}
    old = write_artifact(tmp_path / "old.tflite", artifact.read_graph(), metadata, artifact.vocab, artifact.labels)
    model = load_model(old)
    assert not model.dynamic and model.describe()["sequence"] == {"kind": "fixed", "max_len": TINY_SEQ_LEN}
    np.testing.assert_allclose(model.logits([SHORT, LONGER]), load_model(tiny_fixed).logits([SHORT, LONGER]))
    assert model.resizes == 0 and model.length == TINY_SEQ_LEN


def test_metadata_and_graph_must_agree_on_the_kind(tiny_dynamic, tmp_path):
    artifact = read_artifact(tiny_dynamic)
    metadata = dict(artifact.metadata, sequence={"kind": "fixed", "max_len": TINY_SEQ_LEN})
    lying = write_artifact(tmp_path / "lying.tflite", artifact.read_graph(), metadata, artifact.vocab,
                           artifact.labels)
    with pytest.raises(Exception, match="metadata says a fixed-length graph"):
        load_model(lying)


def test_seq_len_errors_are_one_line(tiny_fixed, tiny_dynamic, run_cli):
    code, _, err = run_cli("--model", str(tiny_fixed), "--bench", "--seq-len", "8")
    assert code == 2 and "runs only at 16 tokens" in error_line(err, "edge-run")
    code, _, err = run_cli("--model", str(tiny_dynamic), "--bench", "--seq-len", "99")
    assert code == 2 and "within 2..16" in error_line(err, "edge-run")
    code, _, err = run_cli("--model", str(tiny_dynamic), "--text", "fine", "--seq-len", "8")
    assert code == 2 and "--seq-len sets the length --bench times" in error_line(err, "edge-run")


def _run_capturing_model(monkeypatch, path, **kwargs):
    loaded = []

    def load_and_keep(*args, **load_kwargs):
        loaded.append(load_model(*args, **load_kwargs))
        return loaded[-1]

    monkeypatch.setattr(cli, "load_model", load_and_keep)
    return cli.run(path, show_progress=False, **kwargs), loaded[0]


def test_a_file_runs_grouped_by_length_and_predicts_in_its_own_order(tiny_dynamic, tmp_path, monkeypatch):
    texts = [SHORT, LONGER, SHORT_TOO, LONGER, SHORT]
    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in texts))
    streamed = []
    doc, model = _run_capturing_model(monkeypatch, tiny_dynamic, input_path=str(data), on_prediction=streamed.append)
    # in file order 5 9 5 9 5 would re-plan five times (from the longest); grouped 5 5 5 9 9: twice
    assert model.resizes == 2
    assert [p["text"] for p in doc["predictions"]] == texts and streamed == doc["predictions"]
    assert [p["line"] for p in doc["predictions"]] == [1, 2, 3, 4, 5]
    alone = load_model(tiny_dynamic)
    for row in doc["predictions"]:
        assert row["logits"] == alone.predict_one(row["text"]).logits
        assert row["tokens"] == token_count(alone, row["text"])
        assert row["latency_ms"] > 0 and row["cpu_ms"] >= 0


def test_windows_alternate_ascending_and_descending_so_a_window_starts_where_the_last_ended(
        tiny_dynamic, tmp_path, monkeypatch):
    texts = [LONGER, SHORT, SHORT_TOO, LONGER]  # windows of 2: (9, 5) runs 5 9; (5, 9) runs 9 5
    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in texts))
    monkeypatch.setattr(cli, "LENGTH_GROUP_WINDOW", 2)
    doc, model = _run_capturing_model(monkeypatch, tiny_dynamic, input_path=str(data))
    assert model.resizes == 3  # 16 -> 5 -> 9 (-> 9) -> 5; ascending twice would re-plan 9 -> 5 -> 9: four
    assert [p["text"] for p in doc["predictions"]] == texts


def test_an_interrupt_in_a_window_keeps_its_finished_predictions_in_file_order(tiny_dynamic, tmp_path, monkeypatch):
    from edge_slm.runtime import engine

    texts = [LONGER, SHORT, "a very long and winding film .", SHORT_TOO]  # run order: SHORT, SHORT_TOO, ...
    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in texts))
    real_predict, calls = engine.Model.predict_ids, []

    def interrupted_at_the_third(self, ids):
        calls.append(len(ids))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_predict(self, ids)

    monkeypatch.setattr(engine.Model, "predict_ids", interrupted_at_the_third)
    with pytest.raises(cli.RunInterrupted) as interrupted:
        cli.run(tiny_dynamic, input_path=str(data), show_progress=False)
    doc = interrupted.value.document
    assert calls[:2] == [5, 5] and doc["interrupted"] is True
    assert [(p["text"], p["line"]) for p in doc["predictions"]] == [(SHORT, 2), (SHORT_TOO, 4)]
