"""edge-train on tiny configs (2 layers, hidden 32, seq 16, a few dozen examples, a few steps):
the report, determinism, the output converting as is, interrupt safety and resume, --compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

from tests.conftest import write_tiny_checkpoint

from edge_slm.train import checkpoints
from edge_slm.train.checkpoints import last_checkpoint
from edge_slm.train.job import train
from edge_slm.train.settings import REPORT_FILE, SPEED_ONLY_ACCURACY, SPEED_WARMUP_STEPS
from edge_slm.common.errors import EdgeError
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY

SEQ_LEN = 16
POSITIVE = ["a gorgeous witty movie", "great fun", "a charming journey", "wonderful and moving", "brilliant"]
NEGATIVE = ["dull and boring", "a mess", "painfully bad", "tedious plot", "awful dialogue"]
TINY = dict(random_init=True, max_steps=6, batch_size=8, seq_len=SEQ_LEN, eval_every=2, seed=3, show_progress=False)


def sentiment_rows(count: int, offset: int = 0) -> list:
    rows = []
    for i in range(offset, offset + count):
        label = "pos" if i % 3 else "neg"
        words = POSITIVE if label == "pos" else NEGATIVE
        rows.append((f"{words[i % len(words)]} number {i}", label))
    return rows


def write_tsv(path: Path, rows: list) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_tsv(folder / "train.tsv", sentiment_rows(48)), write_tsv(folder / "dev.tsv", sentiment_rows(12, 100))


def tiny_checkpoint(directory: Path, minilm_dir: Path, model_type: str = "bert", **config_fields) -> Path:
    """conftest's tiny config (one layer: tracing the train step dominates a test run) + the real vocab.
    Its own labels (negative/positive) are not the data's."""
    path = write_tiny_checkpoint(directory, minilm_dir, model_type)
    config = json.loads((path / "config.json").read_text())
    config.update({"n_layers" if model_type == "distilbert" else "num_hidden_layers": 1}, **config_fields)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_dir):
    """Without dropout, so that an interrupted and resumed run can be compared with this one bit for bit
    (TF's dropout masks are not checkpointable); the seed test uses dropout."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bert", minilm_dir,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, checkpoint, data):
    out = tmp_path_factory.mktemp("run") / "trained"
    return train(str(checkpoint), *data, out, **TINY), out


def h5_arrays(path: Path) -> dict:
    """{weight name: array} of a tf_model.h5, without the Keras instance scope ("..._classification_1")."""
    import h5py

    arrays = {}

    def keep(name, item):
        if isinstance(item, h5py.Dataset):
            parts = name.split("/")
            arrays["/".join(parts[:1] + parts[2:])] = item[()]

    with h5py.File(path, "r") as f:
        f.visititems(keep)
    assert arrays
    return arrays


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_report_fields_are_present_and_consistent(trained):
    report, out = trained
    assert json.loads((out / REPORT_FILE).read_text()) == report
    # Random init, then 6 steps of training: trained weights (issue 11), so accuracy is a number.
    assert report["status"] == "complete" and report["random_weights"] is False
    assert report["model"]["init"] == "random" and report["model"]["num_layers"] == 1
    progress, settings, speed, time = report["progress"], report["settings"], report["speed"], report["time"]
    assert progress["step"] == settings["total_steps"] == 6 and settings["steps_per_epoch"] == 6
    assert settings["seq_len"] == SEQ_LEN and settings["lr_warmup_steps"] == 0
    assert [e["step"] for e in report["evaluations"]] == [2, 4, 6]
    assert [e["examples_seen"] for e in report["evaluations"]] == [16, 32, 48]
    assert [e["epoch"] for e in report["evaluations"]] == pytest.approx([1 / 3, 2 / 3, 1], abs=1e-4)
    assert report["final"] == report["evaluations"][-1]
    for e in report["evaluations"]:
        assert e["dev_accuracy"] == e["dev_correct"] / 12 and e["dev_examples"] == 12
        assert 0 < e["dev_loss"] < 5 and 0 < e["train_loss"] < 5
    assert report["data"]["labels"] == ["neg", "pos"]
    assert report["data"]["train"]["label_counts"] == {"neg": 16, "pos": 32}
    assert report["data"]["dev"]["label_counts"] == {"neg": 4, "pos": 8}
    # Speed: steady state over the steps after the warm-up, consistent with itself.
    assert speed["timed_steps"] == 6 - SPEED_WARMUP_STEPS
    assert speed["examples_per_s"] == pytest.approx(speed["steps_per_s"] * 8)
    assert 0 < speed["tokens_per_s"] < speed["padded_tokens_per_s"] == pytest.approx(speed["examples_per_s"] * SEQ_LEN)
    assert speed["seconds_per_epoch"] == pytest.approx(6 / speed["steps_per_s"])
    assert speed["peak_rss_mb"] > 100
    parts = time["setup_seconds"] + time["train_seconds"] + time["eval_seconds"] + time["checkpoint_seconds"]
    assert 0 < parts <= time["wall_seconds"] + 0.01
    assert time["examples_seen"] == 48 and list(time["epoch_seconds"]) == ["0"]
    assert 0 < time["epoch_seconds"]["0"] <= time["train_seconds"]
    assert report["time_to_target"] is None
    assert report["host"]["cores_usable"] >= 1 and report["tool"]["tensorflow"]
    # Training is over: no checkpoint folders or temporaries are left, the model is in out/.
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "tf_model.h5", "vocab.txt", "tokenizer.json",
                                                           "tokenizer_config.json", "special_tokens_map.json",
                                                           REPORT_FILE])


def test_trained_weights_get_a_dev_accuracy_whatever_their_init(trained):
    """Random init, trained: the accuracy is real (issue 11 #7); only untrained random weights are n/a."""
    from edge_slm.train.cli import render_train

    text = render_train(trained[0])
    evaluation_lines = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(evaluation_lines) == 3 and all(line.endswith("/12)") and " % (" in line for line in evaluation_lines)
    assert RANDOM_WEIGHTS_ACCURACY not in text


def test_same_seed_gives_identical_weights_and_losses(data, minilm_dir, tmp_path):
    """With dropout on (0.1), so that its masks are covered too."""
    dropout = tiny_checkpoint(tmp_path / "dropout", minilm_dir)
    assert json.loads((dropout / "config.json").read_text()).get("hidden_dropout_prob", 0.1) > 0
    settings = {**TINY, "max_steps": 3, "eval_every": 3}
    first = train(str(dropout), *data, tmp_path / "first", **settings)
    again = train(str(dropout), *data, tmp_path / "again", **settings)
    other = train(str(dropout), *data, tmp_path / "other", **{**settings, "seed": 4})
    losses = [(e["train_loss"], e["dev_loss"]) for e in first["evaluations"]]
    assert [(e["train_loss"], e["dev_loss"]) for e in again["evaluations"]] == losses
    assert same_arrays(h5_arrays(tmp_path / "first" / "tf_model.h5"), h5_arrays(tmp_path / "again" / "tf_model.h5"))
    # The seed matters (so the equality above is not vacuous).
    assert [(e["train_loss"], e["dev_loss"]) for e in other["evaluations"]] != losses
    assert not same_arrays(h5_arrays(tmp_path / "first" / "tf_model.h5"), h5_arrays(tmp_path / "other" / "tf_model.h5"))


def test_output_converts_as_is_and_carries_the_training_labels(trained, checkpoint, data, tmp_path):
    from edge_slm.convert.api import convert
    from edge_slm.convert.source import read_vocab, tokenizer_settings
    from edge_slm.runtime.artifact import read_artifact
    from edge_slm.runtime.engine import load_model

    _, out = trained
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == ["BertForSequenceClassification"]
    assert read_vocab(out)[0] == read_vocab(checkpoint)[0]
    assert tokenizer_settings(out) == tokenizer_settings(checkpoint)

    [result] = convert(str(out), ["dynamic"], seq_len=SEQ_LEN, out_dir=tmp_path, validate=False)
    artifact = read_artifact(result.artifact_path)
    assert artifact.labels == ["neg", "pos"] and artifact.metadata["labels"] == ["neg", "pos"]
    assert artifact.metadata["weights"]["origin"] == str(out / "tf_model.h5")
    assert artifact.metadata["model"]["name"] == out.name
    assert load_model(result.artifact_path).predict_one("a charming journey").label in ("neg", "pos")
    # Trained from random init: the artifact counts as trained too, and edge-run measures its accuracy.
    assert artifact.metadata["random_weights"] is False
    from edge_slm.runtime.cli import run

    evaluation = run(result.artifact_path, input_path=data[1], show_progress=False)["evaluation"]
    assert evaluation["status"] == "ok" and evaluation["examples"] == 12 and evaluation["calibrated_on_texts"] == 0


def test_interrupted_run_keeps_its_last_checkpoint_and_resume_continues_exactly(trained, checkpoint, data, tmp_path,
                                                                                  monkeypatch):
    """Killed just before checkpoint 4 is published: out/ stays the step-2 model; resuming from it ends
    with the weights of the uninterrupted run (`trained`, same settings)."""
    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.weights import build_model, make_config

    reference, reference_out = trained
    out = tmp_path / "out"
    real_fsync = checkpoints.fsync_folder
    calls = []

    def killed_on_second_checkpoint(folder):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the checkpoint-4 folder is written, not yet renamed into place
        real_fsync(folder)

    monkeypatch.setattr(checkpoints, "fsync_folder", killed_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(str(checkpoint), *data, out, **TINY)
    monkeypatch.undo()

    assert last_checkpoint(out).name == "checkpoint-2"
    assert not list(out.glob(".tmp-*"))
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["status"] == "interrupted" and report["progress"]["step"] == 4
    assert report["progress"]["last_checkpoint"] == str(out / "checkpoint-2")
    # out/ itself is the step-2 model, loadable by the converter's loader.
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"] == {"0": "neg", "1": "pos"}
    _, weights = build_model(spec_for("bert"), make_config(spec_for("bert"), saved, None), SEQ_LEN,
                             out / "tf_model.h5", seed=0)
    assert weights.newly_initialized == [] and weights.file_format == "tf-h5"
    assert same_arrays(h5_arrays(out / "tf_model.h5"), h5_arrays(out / "checkpoint-2" / "tf_model.h5"))

    with pytest.raises(EdgeError, match="already holds a model checkpoint"):
        train(str(checkpoint), *data, out, **TINY)
    with pytest.raises(EdgeError, match="--resume: batch_size differs"):
        train(str(checkpoint), *data, out, **{**TINY, "batch_size": 4}, resume=True)
    (out / ".tmp-checkpoint-9-left-by-sigkill").mkdir()

    resumed = train(str(checkpoint), *data, out, **TINY, resume=True)
    assert resumed["status"] == "complete" and resumed["progress"]["resumed_from_step"] == 2
    assert not list(out.glob(".tmp-*")) and last_checkpoint(out) is None
    assert [e["step"] for e in resumed["evaluations"]] == [2, 4, 6]
    assert [e["dev_loss"] for e in resumed["evaluations"]] == [e["dev_loss"] for e in reference["evaluations"]]
    assert same_arrays(h5_arrays(out / "tf_model.h5"), h5_arrays(reference_out / "tf_model.h5"))
    assert resumed["time"]["examples_seen"] == reference["time"]["examples_seen"] == 48
    assert resumed["model"]["initial_weights"] == reference["model"]["initial_weights"]


def test_int_labels_of_many_classes_are_ordered_numerically():
    from edge_slm.train.data import label_names
    from edge_slm.runtime.data import Dataset

    train_set = Dataset("t", texts=["a"] * 4, labels=["10", "2", "1", "2"], line_numbers=[2, 3, 4, 5])
    dev_set = Dataset("d", texts=["a"], labels=["10"], line_numbers=[2])
    assert label_names(train_set, dev_set, None) == ["1", "2", "10"]
    # A checkpoint that already has these classes keeps its own order (its head's rows mean them).
    assert label_names(train_set, dev_set, ["10", "2", "1"]) == ["10", "2", "1"]
    assert label_names(train_set, dev_set, ["negative", "positive"]) == ["1", "2", "10"]


def test_compare_reports_each_architecture_on_the_same_data(tmp_path, minilm_dir, data, capsys):
    from edge_slm.train.cli import main

    bert = tiny_checkpoint(tmp_path / "tiny-bert", minilm_dir, "bert")
    distilbert = tiny_checkpoint(tmp_path / "tiny-distilbert", minilm_dir, "distilbert")
    code = main(["--compare", str(bert), str(distilbert), "--train", str(data[0]), "--steps", "5",
                 "--batch-size", "4", "--seq-len", str(SEQ_LEN), "-o", str(tmp_path / "cmp"), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "cmp" / "train_compare.json").read_text())
    assert report["weights"] == "random" and report["accuracy"] == SPEED_ONLY_ACCURACY
    assert report["data"] == {"source": str(data[0]), "examples": 48, "labels": ["neg", "pos"]}
    assert [r["model_type"] for r in report["results"]] == ["bert", "distilbert"]
    for r in report["results"]:
        assert r["steps"] == 5 and r["seq_len"] == SEQ_LEN and r["parameters"] > 0
        assert r["speed"]["timed_steps"] == 5 - SPEED_WARMUP_STEPS and r["speed"]["examples_per_s"] > 0
        assert r["peak_rss_mb"] > 100
    assert report["fastest"] in (str(bert), str(distilbert))
    assert "tiny-bert" in out and SPEED_ONLY_ACCURACY in out and RANDOM_WEIGHTS_ACCURACY not in out
