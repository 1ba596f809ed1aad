"""Every bad input is one line on stderr with a hint, a non-zero exit, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import error_line


def assert_one_line_error(code, out, err, *fragments):
    assert code != 0
    line = error_line(err, "edge-run")
    for fragment in fragments:
        assert fragment in line


def test_missing_model_file(run_cli, tmp_path):
    assert_one_line_error(*run_cli("--model", tmp_path / "nope.tflite", "--bench"), "not found")


def test_model_is_a_directory(run_cli, tmp_path):
    assert_one_line_error(*run_cli("--model", tmp_path, "--bench"), "is a directory")


def test_truncated_model(run_cli, tiny_dynamic, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_dynamic.read_bytes()[:-100])
    assert_one_line_error(*run_cli("--model", cut, "--text", "hi"), "truncated")


def test_corrupted_model(run_cli, tiny_dynamic, tmp_path):
    data = bytearray(tiny_dynamic.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data))
    assert_one_line_error(*run_cli("--model", bad, "--text", "hi"), "damaged")


def test_not_a_tflite_file(run_cli, tmp_path):
    fake = tmp_path / "model.tflite"
    fake.write_text('{"this": "is json"}')
    assert_one_line_error(*run_cli("--model", fake, "--bench"), "not a TFLite model")


def test_empty_text(run_cli, tiny_dynamic):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--text", "   "), "--text is empty")


def test_non_utf8_input(run_cli, tiny_dynamic, tmp_path):
    latin1 = tmp_path / "in.txt"
    latin1.write_bytes("ok\nna\xefve caf\xe9\n".encode("latin-1"))
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--input", latin1), "in.txt:2 is not UTF-8")


def test_bad_row_names_file_and_line(run_cli, tiny_dynamic, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\t1\nbad\n")
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--input", data), "d.tsv:3")


def test_unknown_backend(run_cli, tiny_dynamic):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--bench", "--backend", "onnx"), "onnx")


def test_uninstalled_backend(run_cli, tiny_dynamic):
    pytest.importorskip("ai_edge_litert")
    if __import__("importlib").util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite-runtime is installed in this environment")
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--bench", "--backend", "tflite-runtime"),
                          "not installed", "pip install")


def test_text_on_plain_tflite(run_cli, tiny_dynamic, tmp_path):
    from edge_slm.runtime.artifact import read_artifact

    plain = tmp_path / "plain.tflite"
    plain.write_bytes(read_artifact(tiny_dynamic).read_graph())
    assert_one_line_error(*run_cli("--model", plain, "--text", "hi"), "no vocabulary")


def test_missing_input_file(run_cli, tiny_dynamic, tmp_path):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--input", tmp_path / "none.tsv"), "not found")


def test_unwritable_output(run_cli, tiny_dynamic, tmp_path):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--text", "x", "--output", tmp_path / "no" / "r.json"),
                          "does not exist")


@pytest.mark.parametrize("target,message", [("", "--output is empty"), ("fifo", "is not a regular file"),
                                            ("/dev/null", "is not a regular file")])
def test_output_that_is_not_a_file_path_is_refused_before_the_run(run_cli, tiny_dynamic, tmp_path, target, message):
    """As root, renaming a result over /dev/null would have replaced the device."""
    if target == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    assert_one_line_error(*run_cli("--model", tiny_dynamic, "--text", "x", "--output", target), message)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_model_path_that_is_a_pipe_is_refused_not_waited_on(run_cli, tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    assert_one_line_error(*run_cli("--model", fifo, "--text", "x"), "is not a regular file")


@pytest.mark.parametrize("flags,message", [(["--bench", "--min-seconds", "nan"], "'nan' is not a finite number"),
                                           (["--bench", "--threads", "99999999999"], "--threads must be 1 to 1024")])
def test_numbers_the_interpreter_cannot_take(run_cli, tiny_dynamic, flags, message):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, *flags), message)


@pytest.mark.parametrize("flags,message", [(["--text", "x", "--runs", "5"], "--runs applies only with --bench"),
                                           (["--text", "x", "--text-column", "1"], "--text-column applies only with --input"),
                                           (["--bench", "--samples-csv", "s.csv"], "--samples-csv applies only with --meter")])
def test_an_option_that_would_be_ignored_is_an_error(run_cli, tiny_dynamic, flags, message):
    assert_one_line_error(*run_cli("--model", tiny_dynamic, *flags), message)


@pytest.mark.parametrize("target,message", [("/dev/full", "--samples-csv /dev/full is not a regular file"),
                                            ("nodir/s.csv", "--samples-csv: directory nodir does not exist")])
def test_a_samples_csv_that_cannot_take_the_samples_is_refused_before_the_run(run_cli, tiny_dynamic, target,
                                                                               message):
    # before the meter's port is opened or any inference made: no run wasted on a path
    flags = ["--bench", "--meter", "um25c", "--port", "/dev/ttyEDGE-absent", "--samples-csv", target]
    assert_one_line_error(*run_cli("--model", tiny_dynamic, *flags), message)


def test_a_tsv_text_longer_than_csv_default_field_limit_is_read(run_cli, tiny_dynamic, tmp_path):
    long_row = tmp_path / "long.tsv"
    long_row.write_text("text\tlabel\n" + "word " * 40_000 + "\t1\n")  # 200 KB in one field
    code, _, err = run_cli("--model", tiny_dynamic, "--input", long_row, "--json")
    assert code == 0, err


def test_nothing_to_do(run_cli, tiny_dynamic):
    assert_one_line_error(*run_cli("--model", tiny_dynamic), "nothing to do")


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed entry point, as a user types it."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from edge_slm.runtime.cli import main; "
                           "sys.exit(main())", "--model", str(tmp_path / "x.tflite"), "--bench"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
