"""Where results may be written and what may be read as a file (common/files.py)."""

from __future__ import annotations

import io
import os

import pytest

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_text, check_output_file, require_file
from edge_slm.runtime import data


def test_an_atomic_write_never_replaces_a_fifo_or_device(tmp_path):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    with pytest.raises(EdgeError, match="not a regular file"):
        atomic_write_text(fifo, "{}\n")
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["results.json"]  # no temporary left either
    with pytest.raises(EdgeError, match="not a regular file"):
        check_output_file("/dev/null", "--output")


def test_an_atomic_write_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old\n")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


@pytest.mark.parametrize("path,message", [("", "--output is empty"), ("missing-dir/r.json", "does not exist"),
                                          (".", "is a directory"), ("x" * 300 + "/r.json", "File name too long"),
                                          ("x" * 300, "File name too long")])
def test_unusable_output_paths_are_refused_before_any_work(path, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgeError, match=message):
        check_output_file(path, "--output")


def test_an_input_that_never_ends_is_refused_not_read_until_memory_runs_out(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(EdgeError, match="not a regular file"):
        data.read_dataset("/dev/zero")  # a device reads without end
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"y\n" * 1000)))  # `yes | edge-run --input -`
    with pytest.raises(EdgeError, match="<stdin> is larger than"):
        data.read_dataset("-")
    big = tmp_path / "big.txt"
    big.write_text("a short text\n" * 100)
    with pytest.raises(EdgeError, match="larger than 0 MiB"):
        data.read_dataset(big)
    small = tmp_path / "small.txt"
    small.write_text("a short text\n" * 10)
    assert len(data.read_dataset(small).texts) == 10


def test_a_model_must_be_a_regular_file_but_texts_may_come_through_a_pipe(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    with pytest.raises(EdgeError, match="not a regular file"):
        require_file(fifo, "model file", "--model", "pass the .tflite file")  # would block forever on open
    assert require_file(fifo, "input file", "--input", "", pipes_ok=True) == fifo
    with pytest.raises(EdgeError, match="--model is empty"):
        require_file("", "model file", "--model", "")
