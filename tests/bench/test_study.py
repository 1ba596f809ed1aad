"""edge-bench runs for real on tiny artifacts: each run a fresh process, rows streamed to
results.jsonl, resume, interrupts, failures reported not fatal, accuracy, the TF baseline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_slm.bench import study
from edge_slm.runtime.artifact import build_metadata, read_artifact, write_artifact
from edge_slm.common.errors import EdgeError
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY
from edge_slm.bench.execute import execute
from edge_slm.bench.plan import StudySettings, plan_runs
from edge_slm.bench.store import RESULTS_FILE, read_rows
from edge_slm.bench.study import run_study
from edge_slm.bench.summary import summarize

FAST = StudySettings(runs=5, warmup=1)
ROW_KEYS = {"schema", "schema_version", "key", "kind", "artifact", "threads", "backend", "mode", "source", "lengths",
            "device", "settings", "host", "started", "finished", "wall_s", "status", "exit_code", "error", "warnings",
            "other_cpu_share", "result"}


def trained_copy(path: Path, tmp_path: Path) -> Path:
    """The same graph with metadata claiming trained weights: exercises the accuracy path only."""
    art = read_artifact(path)
    meta = art.metadata
    fields = {k: meta[k] for k in ("tokenizer", "labels", "inputs", "outputs", "quantization")}
    extra = {k: meta[k] for k in ("model", "tools", "weights")}
    out = tmp_path / "trained-flag.tflite"
    graph = art.read_graph()
    write_artifact(out, graph, build_metadata(graph=graph, random_weights=False, source="test fixture", extra=extra,
                                              **fields), art.vocab, art.labels)
    return out


def test_rows_stream_to_results_jsonl_and_resume_skips_finished_runs(tiny_dynamic, tiny_fp32, tmp_path):
    out = tmp_path / "study"
    run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST, write_report=False)
    rows = read_rows(out / RESULTS_FILE)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["artifact"] for r in rows] == [str(tiny_dynamic.resolve()), str(tiny_fp32.resolve())]
    assert set(rows[0]) == ROW_KEYS  # the shape tests/test_report.py's synthetic rows copy
    doc = rows[0]["result"]
    assert doc["schema"] == "edge-slm.run" and doc["threads"] == 1 and doc["benchmark"]["runs"] == 5
    summary = summarize(rows[0])
    assert summary.label == "tiny-bert dynamic, 1 thr" and summary.latency["p50"] > 0 and summary.peak_rss_mb > 0
    assert summary.accuracy is None and summary.accuracy_text == RANDOM_WEIGHTS_ACCURACY
    assert summary.model_bytes == tiny_dynamic.stat().st_size
    assert all(0 <= r["other_cpu_share"] <= 1 for r in rows)

    with pytest.raises(EdgeError, match="already holds 2 run") as refused:
        run_study([tiny_dynamic], out, threads=[1], settings=FAST, write_report=False)
    assert "--resume" in refused.value.hint

    resumed = run_study([tiny_dynamic, tiny_fp32], out, threads=[1, 2], settings=FAST, resume=True,
                        write_report=False)
    assert resumed.skipped == 2 and [(r["artifact"], r["threads"]) for r in resumed.rows] == [
        (str(tiny_dynamic.resolve()), 2), (str(tiny_fp32.resolve()), 2)]
    assert len(read_rows(out / RESULTS_FILE)) == 4

    with pytest.raises(EdgeError, match="other settings"):
        run_study([tiny_dynamic], out, threads=[1], settings=StudySettings(runs=7, warmup=1), resume=True)


def test_retry_busy_re_measures_runs_that_competed_with_other_processes(tiny_dynamic, tiny_fp32, tmp_path):
    out = tmp_path / "study"
    run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST, write_report=False)
    rows = read_rows(out / RESULTS_FILE)
    rows[0]["other_cpu_share"] = 0.0  # whatever the machine did meanwhile: one quiet run, one busy one
    rows[1]["other_cpu_share"] = 0.5
    (out / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EdgeError, match="--retry-busy"):
        run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST, retry_busy=True)
    resumed = run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST, resume=True, retry_busy=True,
                        write_report=False)
    assert resumed.skipped == 1 and [r["artifact"] for r in resumed.rows] == [str(tiny_fp32.resolve())]
    assert len(read_rows(out / RESULTS_FILE)) == 3  # appended: the new row supersedes the busy one


def test_resume_measures_a_reconverted_artifact_again(tiny_dynamic, tiny_fp32, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(tiny_fp32.read_bytes())
    out = tmp_path / "study"
    run_study([tiny_dynamic, model], out, threads=[1], settings=FAST, write_report=False)
    model.write_bytes(tiny_dynamic.read_bytes())  # another graph under the same name
    resumed = run_study([tiny_dynamic, model], out, threads=[1], settings=FAST, resume=True, write_report=False)
    assert resumed.skipped == 1 and [r["artifact"] for r in resumed.rows] == [str(model.resolve())]
    assert resumed.rows[0]["result"]["model"]["metadata"]["quantization"] == "dynamic"


def test_an_interrupt_keeps_finished_runs_and_resume_runs_the_rest(tiny_dynamic, tiny_fp32, tmp_path, monkeypatch):
    out = tmp_path / "study"
    results = out / RESULTS_FILE
    real_execute = study.execute
    rows_on_disk = []

    def interrupt_the_second_run(run, settings, python=sys.executable):
        rows_on_disk.append(len(read_rows(results)) if results.exists() else 0)
        if len(rows_on_disk) == 2:
            raise KeyboardInterrupt
        return real_execute(run, settings, python=python)

    monkeypatch.setattr(study, "execute", interrupt_the_second_run)
    with pytest.raises(EdgeError) as interrupted:
        run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST)
    assert interrupted.value.exit_code == 130 and "1 finished run(s) kept" in interrupted.value.message
    assert rows_on_disk == [0, 1]  # the first run's row was on disk before the second started
    assert not (out / "report.md").exists()

    monkeypatch.setattr(study, "execute", real_execute)
    resumed = run_study([tiny_dynamic, tiny_fp32], out, threads=[1], settings=FAST, resume=True)
    assert resumed.skipped == 1 and [r["artifact"] for r in resumed.rows] == [str(tiny_fp32.resolve())]
    assert (out / "report.md").is_file()


def test_corrupt_and_truncated_artifacts_are_failed_rows_not_fatal(tiny_dynamic, tmp_path):
    data = bytearray(tiny_dynamic.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the graph: the recorded SHA-256 no longer matches
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(tiny_dynamic.read_bytes()[: len(data) // 2])
    outcome = run_study([tiny_dynamic, corrupt, truncated], tmp_path / "study", threads=[1], settings=FAST)
    by_name = {Path(r["artifact"]).name: r for r in outcome.rows}
    assert by_name[tiny_dynamic.name]["status"] == "ok"
    for name, expected in (("corrupt.tflite", "is damaged"), ("truncated.tflite", "")):
        row = by_name[name]
        assert row["status"] == "failed" and row["result"] is None and expected in row["error"]
        assert row["error"] and "\n" not in row["error"] and "Traceback" not in row["error"]
    md = outcome.report.markdown.read_text()
    failed_section = md.split("## Failed runs")[1].split("##")[0]
    assert "corrupt.tflite]" in failed_section and "truncated.tflite" in failed_section
    assert "is damaged" in failed_section
    assert outcome.report.recommendation["best"]["artifact"] == str(tiny_dynamic.resolve())


def test_a_crashing_or_hanging_run_is_a_failed_row(tiny_dynamic, tmp_path):
    run = plan_runs([tiny_dynamic], [1])[0]
    crash = tmp_path / "crashing-python"
    crash.write_text("#!/bin/sh\necho 'loading the graph' >&2\nkill -SEGV $$\n")
    crash.chmod(0o755)
    row = execute(run, FAST.effective(), python=str(crash))
    assert row["status"] == "failed" and row["exit_code"] == -11
    assert row["error"] == "crashed (SIGSEGV); last output: loading the graph"
    hang = tmp_path / "hanging-python"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    row = execute(run, StudySettings(runs=5, timeout_s=0.5).effective(), python=str(hang))
    assert row["status"] == "failed" and row["error"] == "timed out after 0.5 s and was killed"


def test_accuracy_only_for_trained_weights_on_labelled_data(tiny_dynamic, tmp_path):
    trained = trained_copy(tiny_dynamic, tmp_path)
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na gorgeous film\t1\na dull film\t0\nfine\t1\n")
    outcome = run_study([tiny_dynamic, trained], tmp_path / "study", threads=[1],
                        settings=StudySettings(runs=5, warmup=1, data=str(data)))
    # With --data each artifact runs twice: at the texts' own lengths, and padded to its longest.
    assert [r["lengths"] for r in outcome.rows] == ["own", "max"] * 2
    random_run, _, trained_run, _ = (summarize(r) for r in outcome.rows)
    assert random_run.accuracy is None and random_run.accuracy_text == RANDOM_WEIGHTS_ACCURACY
    evaluation = outcome.rows[2]["result"]["evaluation"]
    assert evaluation["examples"] == 3 and trained_run.accuracy == evaluation["accuracy"]
    assert outcome.rows[2]["result"]["predictions"] is None and outcome.rows[2]["result"]["predictions_dropped"] == 3
    md = outcome.report.markdown.read_text()
    assert f"| {trained_run.accuracy_text} |" in md and re.search(r"\d+\.\d % \(\d/3\)", trained_run.accuracy_text)
    assert "Pareto front" in md  # one run has a real accuracy: the accuracy-vs-latency plot is drawn


def test_tf_baseline_rebuilds_the_source_model_and_the_report_states_the_speedup(tiny_dynamic, tiny_fp32, tmp_path):
    outcome = run_study([tiny_dynamic, tiny_fp32], tmp_path / "study", threads=[1], baseline_modes=["tf.function"],
                        settings=FAST)
    assert [r["kind"] for r in outcome.rows] == ["artifact", "tf-baseline", "artifact"]  # one per source model
    baseline = outcome.rows[1]
    assert baseline["status"] == "ok", baseline["error"]
    doc = baseline["result"]
    assert doc["schema"] == "edge-slm.tf-baseline" and doc["benchmark"]["runs"] == 5
    assert doc["framework"]["mode"] == "tf.function" and doc["framework"]["intra_op_threads"] == 1
    assert doc["model"]["random_weights"] is True and doc["benchmark"]["parameter_bytes"] > 0
    assert doc["agreement"]["mean_cosine"] > 0.99  # same architecture, same seed: the same weights
    md = outcome.report.markdown.read_text()
    stated = re.findall(r"\| (tiny-bert \w+, 1 thr) \| TF fp32 tf\.function \|.*\*\*(\d+\.\d\d)x (faster|slower)\*\*",
                        md)
    assert [name for name, _, _ in stated] == ["tiny-bert dynamic, 1 thr", "tiny-bert fp32, 1 thr"]


def test_the_study_runner_imports_no_tensorflow(tiny_dynamic, tmp_path):
    """The device side: running a study (and writing its report) never imports TF or transformers."""
    script = (
        "import sys\n"
        "from edge_slm.bench.cli import main\n"
        f"code = main([{str(tiny_dynamic)!r}, '-o', {str(tmp_path / 'study')!r}, '--runs', '3', '--threads', '1',"
        " '-q'])\n"
        "heavy = [m for m in ('tensorflow', 'transformers', 'keras', 'tf_keras', 'torch') if m in sys.modules]\n"
        "print(code, heavy)\n")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             timeout=600)
    assert process.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "study" / "report.md").is_file()


def test_plan_orders_each_artifact_next_to_its_baseline(tiny_dynamic, tiny_fp32, tmp_path):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(read_artifact(tiny_dynamic).read_graph())
    warnings = []
    planned = plan_runs([tiny_dynamic, tiny_fp32, plain, tiny_dynamic], [1, 2], ["auto"], ["tf.function"],
                        warn=warnings.append, plain_seq_len=8)
    kinds = [(Path(r.artifact).name, r.kind, r.threads) for r in planned]
    assert kinds == [(tiny_dynamic.name, "artifact", 1), (tiny_dynamic.name, "tf-baseline", 1),
                     (tiny_fp32.name, "artifact", 1), ("plain.tflite", "artifact", 1),
                     (tiny_dynamic.name, "artifact", 2), (tiny_dynamic.name, "tf-baseline", 2),
                     (tiny_fp32.name, "artifact", 2), ("plain.tflite", "artifact", 2)]
    assert [r.takes_text for r in planned if r.kind == "artifact"] == [True, True, False] * 2
    assert warnings == ["no TF baseline for plain.tflite: it has no edge-slm metadata naming its source model"]
    assert len({r.key for r in planned}) == len(planned)
    json.dumps([r.key for r in planned])  # keys are plain strings, stored in results.jsonl


def test_a_plain_graph_that_takes_any_length_runs_at_the_length_given(tiny_dynamic, tiny_artifacts, tmp_path):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(read_artifact(tiny_dynamic).read_graph())  # no metadata: nothing names its longest
    with pytest.raises(EdgeError, match="plain.tflite takes any sequence length") as caught:
        plan_runs([plain], [1])
    assert caught.value.hint == "pass --seq-len N, e.g. --seq-len 128"
    plain_fixed = tmp_path / "plain-fixed.tflite"
    plain_fixed.write_bytes(read_artifact(tiny_artifacts["fixed-fp32"]).read_graph())
    with pytest.raises(EdgeError, match="--seq-len applies only to plain .tflite files whose graph takes any"):
        plan_runs([tiny_dynamic, plain_fixed], [1], plain_seq_len=8)  # it would change no run
    planned = plan_runs([plain, plain_fixed, tiny_dynamic], [1], plain_seq_len=8)
    assert [(Path(r.artifact).name, r.seq_len) for r in planned] == [
        ("plain.tflite", 8), ("plain-fixed.tflite", None), (tiny_dynamic.name, None)]
    assert planned[0].key.endswith("|seq=8") and "8 tokens" in planned[0].describe()
    outcome = run_study([plain], tmp_path / "study", threads=[1], settings=FAST, seq_len=8)
    (row,) = outcome.rows
    assert row["status"] == "ok", row["error"]
    assert row["result"]["benchmark"]["sequence"]["run_length"]["max"] == 8


def test_data_runs_every_artifact_and_baseline_at_own_lengths_and_padded(tiny_dynamic, tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na gorgeous film\t1\na dull , lifeless and overlong film\t0\nfine\t1\n")
    planned = plan_runs([tiny_dynamic], [1], ["auto"], ["tf.function"], with_data=True)
    assert [(r.kind, r.lengths, r.seq_len) for r in planned] == [
        ("artifact", "own", None), ("artifact", "max", 16), ("tf-baseline", "own", None), ("tf-baseline", "max", 16)]
    outcome = run_study([tiny_dynamic], tmp_path / "study", threads=[1], baseline_modes=["tf.function"],
                        settings=StudySettings(runs=6, warmup=1, data=str(data)))
    assert all(row["status"] == "ok" for row in outcome.rows), [row["error"] for row in outcome.rows]
    benches = [row["result"]["benchmark"] for row in outcome.rows]
    own_tokens = [5, 10, 3]  # [CLS] ... [SEP] of the three texts
    for bench, lengths in zip(benches, ("own", "max") * 2):
        if lengths == "own":
            assert bench["sequence"]["lengths"] == "own length"
            assert bench["sequence"]["tokens"]["mean"] == pytest.approx(sum(own_tokens) / 3)
        else:
            assert bench["sequence"]["lengths"] == "padded to 16" and bench["sequence"]["run_length"]["min"] == 16
        assert bench["work"]["macs_per_inference"] > 0  # the baseline's counted on the artifact's graph
    # Same model, same lengths: the baseline did the artifact's work.
    assert benches[2]["work"]["macs_per_inference"] == benches[0]["work"]["macs_per_inference"]
    assert benches[0]["work"]["macs_per_inference"] < benches[1]["work"]["macs_per_inference"]
    md = outcome.report.markdown.read_text()
    section = md.split("## At the data's own lengths and at the longest")[1].split("\n## ")[0]
    assert section.count("x** |") == 2  # the artifact and its TF baseline, each own vs padded
    assert "own (mean 6.0 tokens)" in md and "padded to 16" in md
