"""Every bad input to edge-convert is one line on stderr with a hint, a non-zero exit, no traceback.

These fail before TensorFlow does any work, so they are fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from edge_slm.convert.cli import main

from tests.conftest import error_line


@pytest.fixture
def convert_cli(cli_caller):
    return cli_caller(main)


def assert_one_line_error(code, err, *fragments, exit_code=2):
    assert code == exit_code
    line = error_line(err, "edge-convert", after_progress=True)
    for fragment in fragments:
        assert fragment in line


@pytest.fixture
def tiny_dir(tmp_path):
    """A checkpoint folder with a tiny BERT config and a minimal vocab (enough for these checks)."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 100}))
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"]) + "\n")
    return directory


def test_unknown_name(convert_cli, tmp_path):
    code, _, err = convert_cli("mobilbert", "-o", tmp_path)
    assert_one_line_error(code, err, "unknown model 'mobilbert'", "did you mean 'mobilebert'")


def test_missing_directory(convert_cli, tmp_path):
    code, _, err = convert_cli(tmp_path / "no-such-checkpoint", "-o", tmp_path)
    assert_one_line_error(code, err, "checkpoint directory not found")


def test_directory_without_config(convert_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = convert_cli(tmp_path / "empty", "-o", tmp_path)
    assert_one_line_error(code, err, "has no config.json")


@pytest.mark.parametrize("fields,message", [
    ({"hidden_size": 30, "num_attention_heads": 7}, "hidden_size 30 does not split into 7 attention heads"),
    ({"hidden_size": -8}, "hidden_size must be a positive integer, got -8"),
    ({"hidden_size": "big"}, "hidden_size must be a positive integer, got 'big'"),
    ({"num_hidden_layers": True}, "num_hidden_layers must be a positive integer, got True"),
    ({"max_position_embeddings": 1}, "max_position_embeddings 1 leaves no room"),
])
def test_config_values_transformers_would_refuse_with_a_traceback(convert_cli, tiny_dir, tmp_path, fields, message):
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, **fields}))
    code, _, err = convert_cli(tiny_dir, "--random-init", "-q", "-o", tmp_path / "out")
    assert_one_line_error(code, err, message, "config.json")
    assert not (tmp_path / "out").exists()  # refused before the output folder is made


def test_a_default_length_past_the_positions_is_said(convert_cli, tiny_dir, tmp_path):
    # 64 positions against the default 128: the length is the model's, and the log says so. The
    # vocab check right after stops the (otherwise long) conversion.
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, "vocab_size": 3}))
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", tmp_path / "out")
    assert "sequence length 64, the model's max_position_embeddings (the default 128 is longer)" in err
    assert_one_line_error(code, err, "the vocabulary has 6 tokens but the model embeds only 3")


def test_directory_without_weights(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "has no weights", "--random-init")


def test_unsupported_architecture(convert_cli, tiny_dir, tmp_path):
    (tiny_dir / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", tmp_path)
    assert_one_line_error(code, err, "unsupported architecture model_type='gpt2'", "bert, distilbert")


@pytest.mark.parametrize("value", ["0", "-5", "1"])
def test_seq_len_too_small(convert_cli, tiny_dir, tmp_path, value):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--seq-len", value, "-o", tmp_path)
    assert_one_line_error(code, err, "--seq-len must be an integer of at least 2")


def test_seq_len_beyond_the_position_embeddings(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--seq-len", "65", "-o", tmp_path)
    assert_one_line_error(code, err, "exceeds the model's max_position_embeddings (64)")


def test_output_directory_is_a_file(convert_cli, tiny_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", blocker)
    assert_one_line_error(code, err, "is a file")


def test_output_directory_cannot_be_created(convert_cli, tiny_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", blocker / "sub")
    assert_one_line_error(code, err, "is not writable")


@pytest.fixture
def locked_dir(tmp_path):
    """A directory nobody may write into: mode 0555, and for root (who ignores modes) immutable."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() != 0:
        yield locked
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(locked)], capture_output=True,
                                                        timeout=60).returncode != 0:
        pytest.skip("root, and chattr +i is not available here to lock a directory")
    try:
        yield locked
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True, timeout=60)


def test_output_directory_read_only(convert_cli, tiny_dir, locked_dir):
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", locked_dir)
    assert_one_line_error(code, err, "is not writable")


@pytest.mark.parametrize("content", ["", "\n\n   \n", "text\tlabel\n"])
def test_calibration_file_without_text(convert_cli, tiny_dir, tmp_path, content):
    empty = tmp_path / "calibration.tsv"
    empty.write_text(content)
    code, _, err = convert_cli(tiny_dir, "--random-init", "--quant", "int8", "--calibration", empty,
                               "-o", tmp_path)
    assert_one_line_error(code, err, "--calibration:", "holds no text")


def test_calibration_file_missing(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--calibration", tmp_path / "nope.txt", "-o", tmp_path)
    assert_one_line_error(code, err, "--calibration: input file not found", "--calibration")


def test_unknown_quant_mode(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--quant", "dynamic,int4", "-o", tmp_path)
    assert_one_line_error(code, err, "unknown quantization mode 'int4'", "fp32, fp16, dynamic, int8, int16x8")


def test_unknown_compat_target(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--compat", "tflite-runtime-2.10", "-o", tmp_path)
    assert_one_line_error(code, err, "--compat")


def test_bad_sample_counts(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--calibration-samples", "0", "-o", tmp_path)
    assert_one_line_error(code, err, "--calibration-samples must be at least 1")
    code, _, err = convert_cli(tiny_dir, "--random-init", "--validation-samples", "0", "-o", tmp_path)
    assert_one_line_error(code, err, "--validation-samples must be positive")


def test_min_agreement_out_of_range(convert_cli, tiny_dir, tmp_path):
    code, _, err = convert_cli(tiny_dir, "--random-init", "--min-agreement", "99", "-o", tmp_path)
    assert_one_line_error(code, err, "--min-agreement must be within [0, 1]")


def test_vocab_larger_than_the_embedding(convert_cli, tiny_dir, tmp_path):
    (tiny_dir / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 3}))
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", tmp_path)
    assert_one_line_error(code, err, "the vocabulary has 6 tokens but the model embeds only 3")


def test_vocab_without_special_tokens(convert_cli, tiny_dir, tmp_path):
    (tiny_dir / "vocab.txt").write_text("hello\nworld\n")
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", tmp_path)
    assert_one_line_error(code, err, "lacks the special tokens")


def test_non_wordpiece_tokenizer(convert_cli, tiny_dir, tmp_path):
    (tiny_dir / "vocab.txt").unlink()
    (tiny_dir / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}}))
    code, _, err = convert_cli(tiny_dir, "--random-init", "-o", tmp_path)
    assert_one_line_error(code, err, "BPE tokenizer")


def test_pytorch_bin_without_torch(convert_cli, tiny_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from edge_slm.convert import weights

    monkeypatch.setattr(weights, "torch_installed", lambda: False)  # make install puts torch in .venv
    (tiny_dir / "pytorch_model.bin").write_bytes(b"not read")
    code, _, err = convert_cli(tiny_dir, "-o", tmp_path)
    assert_one_line_error(code, err, "needs PyTorch, which is not installed", "model.safetensors")


def test_hub_id_offline_is_one_line(convert_cli, tmp_path, monkeypatch):
    from edge_slm.convert import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(hub, "_cached_snapshot", lambda hf_id, with_weights: None)
    code, _, err = convert_cli("someone/some-bert-sst2", "-o", tmp_path)
    assert_one_line_error(code, err, "hub is unreachable", "local checkpoint directory", "--random-init")


def test_registry_model_offline_without_fallback(convert_cli, tmp_path, monkeypatch):
    from edge_slm.convert import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(hub, "_cached_snapshot", lambda hf_id, with_weights: None)
    code, _, err = convert_cli("tinybert", "-o", tmp_path)
    assert_one_line_error(code, err, "hub is unreachable, so Vishnou/TinyBERT_SST2 cannot be downloaded")


def test_no_model_given(convert_cli):
    code, _, err = convert_cli()
    assert_one_line_error(code, err, "no MODEL given")


def test_list_shows_the_registry(convert_cli):
    code, out, _ = convert_cli("--list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed["tinybert"]["hf_id"] == "Vishnou/TinyBERT_SST2"
    assert listed["mobilebert"]["reference"]["accuracy"] == 0.904


def test_calibration_file_too_small_for_disjoint_validation(convert_cli, tiny_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"hello {i}\n" for i in range(5)))
    code, _, err = convert_cli(tiny_dir, "--random-init", "--quant", "int8", "--calibration", texts,
                               "--validation-samples", "5", "-o", tmp_path)
    assert_one_line_error(code, err, "has 5 texts: too few for 5 validation texts and 50 calibration texts",
                          "--data FILE")
