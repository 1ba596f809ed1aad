"""Every bad input to edge-train is one line on stderr with a hint, a non-zero exit, no traceback.

All of these are refused before TensorFlow does any work, so they are fast.
"""

from __future__ import annotations

import json

import pytest

from edge_slm.common.errors import EdgeError
from edge_slm.train.cli import main

from tests.conftest import error_line


@pytest.fixture
def train_cli(cli_caller):
    return cli_caller(main)


def assert_one_line_error(code, err, *fragments, exit_code=2):
    assert code == exit_code
    line = error_line(err, "edge-train")
    for fragment in fragments:
        assert fragment in line, line


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dev(tmp_path):
    return write(tmp_path / "dev.tsv", "text\tlabel\ngood\tpos\nbad\tneg\n")


@pytest.fixture
def train_file(tmp_path):
    return write(tmp_path / "train.tsv", "text\tlabel\ngreat fun\tpos\ndull\tneg\nlovely\tpos\n")


def run_train(train_cli, tmp_path, train, dev, *extra):
    # A registry model with --random-init resolves offline; the data is checked before any model work.
    return train_cli("tinybert", "--random-init", "--train", train, "--dev", dev, "-o", tmp_path / "out", *extra)


def test_missing_label_column(train_cli, tmp_path, dev):
    train = write(tmp_path / "train.tsv", "text\nfine\nawful\n")
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "--train:", "has no label column", "--label-column")


def test_named_label_column_that_does_not_exist(train_cli, tmp_path, train_file, dev):
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--label-column", "sentiment")
    assert_one_line_error(code, err, "--train:", "no label column named 'sentiment'")


def test_one_class_only(train_cli, tmp_path, dev):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngreat\tpos\nfine\tpos\n")
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "every example", "labelled 'pos'", "at least two classes")


def test_one_class_left_after_the_subset(train_cli, tmp_path, dev):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngreat\tpos\nfine\tpos\nlovely\tpos\nbad\tneg\n")
    # Whatever subset of one the seed picks, it has a single class.
    code, _, err = run_train(train_cli, tmp_path, train, dev, "--max-train-examples", 1)
    assert_one_line_error(code, err, "at least two classes")


def test_unknown_label_in_dev(train_cli, tmp_path, train_file):
    dev = write(tmp_path / "dev.tsv", "text\tlabel\ngood\tpos\nso so\tneutral\n")
    code, _, err = run_train(train_cli, tmp_path, train_file, dev)
    assert_one_line_error(code, err, "--dev:", "dev.tsv:3", "'neutral'", "does not occur in the training data")


def test_dev_label_spelled_differently(train_cli, tmp_path, train_file):
    dev = write(tmp_path / "dev.tsv", "text\tlabel\ngood\tPOS\n")
    code, _, err = run_train(train_cli, tmp_path, train_file, dev)
    assert_one_line_error(code, err, "'POS'", "does not occur")


@pytest.mark.parametrize("empty", ["", "\n\n", "text\tlabel\n"])
def test_empty_train_file(train_cli, tmp_path, dev, empty):
    train = write(tmp_path / "train.tsv", empty)
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "--train:", "holds no text")


def test_empty_dev_file(train_cli, tmp_path, train_file):
    dev = write(tmp_path / "dev.tsv", "")
    code, _, err = run_train(train_cli, tmp_path, train_file, dev)
    assert_one_line_error(code, err, "--dev:", "holds no text")


@pytest.mark.parametrize("label", ["1.5", "true", "null", "[1]", "{\"a\": 1}"])
def test_jsonl_labels_neither_ints_nor_strings(train_cli, tmp_path, dev, label):
    train = write(tmp_path / "train.jsonl",
                  '{"text": "great", "label": 1}\n' + f'{{"text": "odd", "label": {label}}}\n')
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "--train:", "train.jsonl:2", "neither an int nor a string")


def test_real_number_labels_are_refused(train_cli, tmp_path, dev):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngreat\t4.5\nawful\t0.25\nfine\t3\n")
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "train.tsv:2", "'4.5'", "not an integer", "classifiers")


def test_labels_differing_only_in_case(train_cli, tmp_path, dev):
    train = write(tmp_path / "train.tsv", "text\tlabel\ngreat\tpos\nfine\tPos\nbad\tneg\n")
    code, _, err = run_train(train_cli, tmp_path, train, dev)
    assert_one_line_error(code, err, "'Pos' and 'pos' differ only in case")


def test_missing_train_file(train_cli, tmp_path, dev):
    code, _, err = run_train(train_cli, tmp_path, tmp_path / "nope.tsv", dev)
    assert_one_line_error(code, err, "--train: input file not found", "--train")


def test_dev_is_required(train_cli, tmp_path, train_file):
    code, _, err = train_cli("tinybert", "--random-init", "--train", train_file, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "--dev FILE is required")


@pytest.mark.parametrize("option, value, fragment", [
    ("--batch-size", 0, "--batch-size must be an integer of at least 1"),
    ("--epochs", 0, "--epochs must be"),
    ("--max-steps", -3, "--max-steps must be"),
    ("--seq-len", 1, "--seq-len must be an integer of at least 2"),
    ("--learning-rate", 0, "--learning-rate must be within"),
    ("--warmup-ratio", 1.0, "--warmup-ratio must be within"),
    ("--eval-every", 0, "--eval-every must be"),
    ("--target-accuracy", 86, "--target-accuracy must be a fraction"),
])
def test_bad_settings(train_cli, tmp_path, train_file, dev, option, value, fragment):
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, option, value)
    assert_one_line_error(code, err, fragment)


def test_seq_len_beyond_the_models_positions(train_cli, tmp_path, train_file, dev):
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--seq-len", 1024)
    assert_one_line_error(code, err, "exceeds the model's max_position_embeddings (512)")


def test_unknown_model(train_cli, tmp_path, train_file, dev):
    code, _, err = train_cli("tinybertt", "--train", train_file, "--dev", dev, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "unknown model 'tinybertt'", "did you mean 'tinybert'")


def test_existing_model_is_not_overwritten(train_cli, tmp_path, train_file, dev):
    (tmp_path / "out").mkdir()
    write(tmp_path / "out" / "config.json", json.dumps({"model_type": "bert"}))
    code, _, err = run_train(train_cli, tmp_path, train_file, dev)
    assert_one_line_error(code, err, "already holds a model", "--resume")


def test_resume_without_a_checkpoint(train_cli, tmp_path, train_file, dev):
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--resume")
    assert_one_line_error(code, err, "holds no complete checkpoint")
    write(tmp_path / "out" / "config.json", json.dumps({"model_type": "bert"}))  # a finished training's model
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--resume")
    assert_one_line_error(code, err, "already finished")


@pytest.mark.parametrize("state", ["{bad", "[]", json.dumps({"step": 3})])
def test_resume_from_a_damaged_trainer_state(train_cli, tmp_path, train_file, dev, state):
    write(tmp_path / "out" / "checkpoint-3" / "trainer_state.json", state)
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--resume")
    assert_one_line_error(code, err, "trainer_state.json is damaged", "checkpoint-3")


def test_resume_from_a_damaged_optimizer_file(tmp_path):
    from edge_slm.train.model import Trainer  # imports TensorFlow; the check itself needs no model

    damaged = write(tmp_path / "checkpoint-3" / "optimizer.npz", "not a zip")
    with pytest.raises(EdgeError, match="optimizer.npz is damaged"):
        Trainer.restore_optimizer(None, damaged)


def test_seed_beyond_numpy_range(train_cli, tmp_path, train_file, dev):
    code, _, err = run_train(train_cli, tmp_path, train_file, dev, "--seed", str(2**32))
    assert_one_line_error(code, err, "Invalid value for '--seed'")


def test_output_directory_is_a_file(train_cli, tmp_path, train_file, dev):
    write(tmp_path / "out", "")
    code, _, err = run_train(train_cli, tmp_path, train_file, dev)
    assert_one_line_error(code, err, "is a file")


def test_command_line_shape(train_cli, tmp_path, train_file, dev):
    code, _, err = train_cli("--train", train_file, "--dev", dev, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "no MODEL given")
    code, _, err = train_cli("tinybert", "distilbert", "--train", train_file, "--dev", dev, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "one MODEL", "--compare")
    code, _, err = train_cli("tinybert", "--train", train_file, "--dev", dev)
    assert_one_line_error(code, err, "no output directory", "-o DIR")
    code, _, err = train_cli("--compare", "tinybert", "--dev", dev)
    assert_one_line_error(code, err, "--dev does not apply to --compare")
    code, _, err = train_cli("--compare", "tinybert", "mobilbert")
    assert_one_line_error(code, err, "unknown model 'mobilbert'")
    code, _, err = train_cli("--compare")
    assert_one_line_error(code, err, "at least one MODEL")
    code, _, err = train_cli("tinybert", "--epochs", "many")
    assert_one_line_error(code, err, "'many' is not a valid integer")


class _Child:
    """A speed child after its answer: one that exits, or one stuck in TF's teardown until killed."""

    def __init__(self, stuck: bool):
        self.stuck, self.killed, self.waits = stuck, False, []

    def join(self, timeout=None):
        assert timeout is not None, "an unbounded wait on a child"
        self.waits.append(timeout)

    def is_alive(self):
        return self.stuck and not self.killed

    def kill(self):
        self.killed = True


def test_a_child_that_does_not_exit_is_killed_after_a_bounded_wait():
    from edge_slm.train.compare import reap_child

    stuck, done = _Child(stuck=True), _Child(stuck=False)
    reap_child(stuck, grace_seconds=0.5)
    reap_child(done, grace_seconds=0.5)
    assert stuck.killed and stuck.waits == [0.5, 0.5]
    assert not done.killed and done.waits == [0.5]
