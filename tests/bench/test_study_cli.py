"""`edge-bench` on the command line: bad input is one line with a hint before any run; a happy path."""

from __future__ import annotations

import json

import pytest

from edge_slm.bench.cli import main

from tests.conftest import error_line


@pytest.fixture
def bench(cli_caller):
    return cli_caller(main)


def test_no_artifacts(bench, tmp_path):
    code, out, err = bench("-o", tmp_path / "study")
    assert code == 2 and "no ARTIFACT given" in error_line(err, "edge-bench")


def test_missing_artifact_and_directory(bench, tmp_path):
    code, _, err = bench(tmp_path / "missing.tflite", "-o", tmp_path / "study")
    assert code == 2 and "artifact not found" in error_line(err, "edge-bench")
    code, _, err = bench(tmp_path, "-o", tmp_path / "study")
    assert code == 2 and "is a directory" in error_line(err, "edge-bench")
    assert not (tmp_path / "study").exists()  # refused before anything was written


@pytest.mark.parametrize("threads", ["1,x", "0", "2,-1", "", "1,,2", "1.5"])
def test_bad_threads_list(bench, tiny_dynamic, tmp_path, threads):
    code, _, err = bench(tiny_dynamic, "-o", tmp_path / "study", "--threads", threads)
    assert code == 2 and "bad --threads list" in error_line(err, "edge-bench")


def test_unwritable_output_directory(bench, tiny_dynamic, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, _, err = bench(tiny_dynamic, "-o", a_file)
    assert code == 2 and "is a file" in error_line(err, "edge-bench")
    code, _, err = bench(tiny_dynamic, "-o", a_file / "study")
    assert code == 2 and "is not writable" in error_line(err, "edge-bench")


def test_missing_output_option(bench, tiny_dynamic):
    code, _, err = bench(tiny_dynamic)
    assert code == 2 and "Missing option '-o'" in error_line(err, "edge-bench")


@pytest.mark.parametrize("args, message", [
    (["--meter", "um25c"], "--meter and --port go together"),
    (["--meter", "nope", "--port", "/dev/null"], "unknown meter 'nope'"),
    (["--meter", "um25c", "--port", "/dev/no-such-port"], "meter port /dev/no-such-port does not exist"),
    (["--backend", "litert,gpu"], "unknown backend 'gpu'"),
    (["--runs", "0"], "--runs must be positive"),
    (["--min-accuracy", "90"], "--min-accuracy 90 is outside 0..1"),
    (["--max-latency-ms", "-5"], "--max-latency-ms must be positive"),
    (["--data", "no-such-data.tsv"], "no-such-data.tsv"),
    (["--data", "/dev/zero"], "/dev/zero is not a regular file"),  # each run reads it again: no pipes either
    (["--threads", "99999999999"], "is not an integer from 1 to 1024"),
    (["--min-seconds", "nan"], "'nan' is not a finite number"),
    (["--timeout", "inf"], "'inf' is not a finite number"),
    (["--meter", "um25c", "--port", "socket://localhost:99999"], "socket:// needs a host and a port"),
    (["--device", "ssh://pi:99999"], "bad --device 'ssh://pi:99999'"),
    (["--device", "@pi"], "bad --device '@pi'"),
    (["--seq-len", "513"], "513 is not in the range 2<=x<=512"),
])
def test_bad_options_are_one_line_before_any_run(bench, tiny_dynamic, tmp_path, args, message):
    code, _, err = bench(tiny_dynamic, "-o", tmp_path / "study", *args)
    assert code == 2 and message in error_line(err, "edge-bench")
    assert not (tmp_path / "study" / "results.jsonl").exists()


def test_happy_path_then_rerun_needs_resume(bench, tiny_dynamic, tmp_path):
    out = tmp_path / "study"
    code, stdout, err = bench(tiny_dynamic, "-o", out, "--runs", "5", "--warmup", "1", "--threads", "1", "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert document["report"] == str(out / "report.md") and (out / "report.md").is_file()
    assert set(document["plots"]) == {"accuracy_latency", "memory", "latency_distribution"}  # no meter: no energy
    assert [r["status"] for r in document["runs"]] == ["ok"]
    assert document["recommendation"]["best"]["artifact"] == str(tiny_dynamic.resolve())
    assert "[1/1] tiny-bert dynamic, 1 thr: p50" in err  # progress on stderr, JSON alone on stdout

    code, _, err = bench(tiny_dynamic, "-o", out, "--runs", "5", "--warmup", "1", "--threads", "1")
    assert code == 2 and "already holds 1 run(s)" in error_line(err, "edge-bench") and "--resume" in err
    code, stdout, err = bench(tiny_dynamic, "-o", out, "--runs", "5", "--warmup", "1", "--threads", "1", "--resume")
    assert code == 0 and "resuming: 1 of 1 runs already finished" in err and "report:" in stdout


def test_a_study_in_which_no_run_finished_is_an_error(bench, tmp_path):
    """A script or CI must not read 'nothing measured' as success."""
    not_a_model = tmp_path / "plain.tflite"
    not_a_model.write_bytes(b"\0\0\0\0TFL3 and then nothing")
    out = tmp_path / "study"
    code, stdout, err = bench(not_a_model, "-o", out, "--runs", "2", "--warmup", "0", "--threads", "1", "-q")
    line = error_line(err, "edge-bench")
    assert code == 2 and "none of the 1 run(s) finished" in line and str(out / "results.jsonl") in line
    assert "no recommendation" in stdout and (out / "report.md").is_file()  # the report still tells why


def test_help_names_both_commands(bench):
    code, out, _ = bench("--help")
    assert code == 0 and "ARTIFACT..." in out and "edge-bench report DIR/results.jsonl" in out
    code, out, _ = bench("report", "--help")
    assert code == 0 and "RESULTS" in out and "--max-latency-ms" in out
