"""The artifact format: graph + appended zip, verified by SHA-256, written atomically."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import zipfile

import pytest

from edge_slm.runtime import artifact as fmt
from edge_slm.runtime.artifact import read_artifact, write_artifact
from edge_slm.common.errors import EdgeError
from tests.conftest import REPO


def test_round_trip_keeps_graph_metadata_vocab_labels(tiny_fp32, tmp_path, vocab):
    original = read_artifact(tiny_fp32)
    copy = tmp_path / "copy.tflite"
    write_artifact(copy, original.read_graph(), original.metadata, original.vocab, original.labels)
    again = read_artifact(copy)
    assert again.read_graph() == original.read_graph()
    assert again.metadata == original.metadata
    assert again.vocab == vocab
    assert again.labels == ["negative", "positive"]
    assert again.metadata["graph"]["sha256"] == fmt.sha256_hex(again.read_graph())


def test_associated_files_are_listed_by_zip_tools(tiny_fp32):
    with zipfile.ZipFile(tiny_fp32) as zf:
        assert zf.namelist() == ["metadata.json", "vocab.txt", "labels.txt"]
        meta = json.loads(zf.read("metadata.json"))
    assert meta["format"] == "edge-slm-artifact" and meta["format_version"] == 1
    for key in ("tokenizer", "labels", "inputs", "quantization", "random_weights", "source", "tools"):
        assert key in meta
    assert {i["role"] for i in meta["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
    if shutil.which("unzip"):
        listing = subprocess.run(["unzip", "-l", str(tiny_fp32)], capture_output=True, text=True,
                                 timeout=60).stdout
        assert "metadata.json" in listing and "vocab.txt" in listing and "labels.txt" in listing


def test_interpreter_loads_the_artifact_file_as_is(tiny_fp32):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tiny_fp32))
    interpreter.allocate_tensors()
    assert len(interpreter.get_input_details()) == 3


def test_every_corrupted_graph_byte_is_refused(tiny_fp32, tmp_path):
    """The probe that motivated the hash: damaged graphs often still load and run."""
    data = tiny_fp32.read_bytes()
    graph_len = read_artifact(tiny_fp32).metadata["graph"]["bytes"]
    rng = random.Random(7)
    for trial in range(30):
        damaged = bytearray(data)
        position = rng.randrange(8, graph_len)
        damaged[position] ^= 1 << rng.randrange(8)
        path = tmp_path / f"damaged{trial}.tflite"
        path.write_bytes(bytes(damaged))
        with pytest.raises(EdgeError, match="damaged"):
            read_artifact(path)


def test_truncated_artifact_is_refused(tiny_fp32, tmp_path):
    from edge_slm.runtime.engine import load_model

    data = tiny_fp32.read_bytes()
    graph_len = read_artifact(tiny_fp32).metadata["graph"]["bytes"]
    for cut in (len(data) - 10, graph_len + 60):  # inside the zip: the reader sees its remains
        path = tmp_path / "cut.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(EdgeError, match="truncated"):
            read_artifact(path)
    # Cut inside the graph: no metadata is left to check, and the interpreter refuses it.
    path.write_bytes(data[:graph_len // 2])
    with pytest.raises(EdgeError, match="cannot parse the graph"):
        load_model(path)


def test_plain_tflite_reads_without_metadata(tiny_fp32, tmp_path):
    graph = read_artifact(tiny_fp32).read_graph()
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(graph)
    art = read_artifact(plain)
    assert art.metadata is None and art.read_graph() == graph and art.vocab == []


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"hello world, not a model\n", "not a TFLite")])
def test_non_tflite_files_are_refused(tmp_path, content, message):
    path = tmp_path / "x.tflite"
    path.write_bytes(content)
    with pytest.raises(EdgeError, match=message):
        read_artifact(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(EdgeError, match="not found"):
        read_artifact(tmp_path / "nope.tflite")
    with pytest.raises(EdgeError, match="directory"):
        read_artifact(tmp_path)


def test_metadata_from_a_newer_format_is_refused(tiny_fp32, tmp_path):
    art = read_artifact(tiny_fp32)
    meta = dict(art.metadata, format_version=fmt.FORMAT_VERSION + 1)
    with pytest.raises(EdgeError, match="format_version"):
        fmt.check_metadata(meta)
    with pytest.raises(EdgeError, match="lacks"):
        fmt.check_metadata({k: v for k, v in art.metadata.items() if k != "labels"})
    with pytest.raises(EdgeError, match="input roles"):
        fmt.check_metadata(dict(art.metadata, inputs=[{"name": "x", "role": "pixels"}]))


@pytest.mark.parametrize("damage,message", [
    ({"graph": None}, "graph has the wrong type"), ({"inputs": "input_ids"}, "inputs has the wrong type"),
    ({"inputs": [1, 2]}, "inputs has the wrong type"), ({"sequence": "dynamic"}, "sequence has the wrong type"),
    ({"tokenizer": {"max_seq_len": 1}}, "max_seq_len of 2 or more"),
    ({"tokenizer": {"max_seq_len": True}}, "max_seq_len of 2 or more"),
])
def test_hand_edited_metadata_of_the_wrong_shape_is_one_error(tiny_fp32, damage, message):
    art = read_artifact(tiny_fp32)
    with pytest.raises(EdgeError, match=message):
        fmt.check_metadata(dict(art.metadata, **damage))


def test_writer_refuses_a_hash_that_does_not_match(tiny_fp32, tmp_path):
    art = read_artifact(tiny_fp32)
    meta = json.loads(json.dumps(art.metadata))
    meta["graph"]["sha256"] = "0" * 64
    with pytest.raises(EdgeError, match="sha256"):
        write_artifact(tmp_path / "x.tflite", art.read_graph(), meta, art.vocab, art.labels)


def test_interrupted_write_leaves_no_partial_file(tiny_fp32, tmp_path, monkeypatch):
    art = read_artifact(tiny_fp32)
    target = tmp_path / "out.tflite"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(target, art.read_graph(), art.metadata, art.vocab, art.labels)
    assert os.listdir(tmp_path) == []


def test_bench_runtime_names_the_model_it_measured_from_its_metadata(tiny_fp32):
    """scripts/bench_runtime.py --model X: the result names X (fp32, seq 16, 2 layers), not the default build."""
    import importlib.util

    from edge_slm.runtime.artifact import describe_model

    spec = importlib.util.spec_from_file_location("bench_runtime", REPO / "scripts" / "bench_runtime.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = script.model_record(tiny_fp32)
    assert record["quantization"] == "fp32" and record["seq_len"] == 16
    assert record["architecture"] == "TFBertForSequenceClassification 2L-32" and record["weights"] == "random init"
    assert record["file_bytes"] == tiny_fp32.stat().st_size
    assert describe_model(None)["architecture"].startswith("unknown (plain .tflite")
