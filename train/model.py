"""The model side of training: tokenizer, a compiled train step over pre-tokenized arrays, speed."""

from __future__ import annotations

import statistics
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import numpy as np

from edge_slm.common.documents import edge_slm_version
from edge_slm.common.errors import EdgeError
from edge_slm.convert.source import ModelSource, read_vocab, tokenizer_metadata, tokenizer_settings
from edge_slm.convert.tf_env import tensorflow
from edge_slm.convert.validate import encode, hf_tokenizer

from .settings import EVAL_BATCH_SIZE, SPEED_WARMUP_STEPS, TrainSettings


def resolve_seq_len(src: ModelSource, seq_len: Optional[int]) -> int:
    limit = src.config.get("max_position_embeddings", 512)
    limit = limit if isinstance(limit, int) else 512
    if seq_len is None:
        return min(src.default_seq_len, limit)
    if seq_len > limit:
        raise EdgeError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings ({limit})",
                        f"use --seq-len {limit} or less")
    return seq_len


def check_head(src: ModelSource, labels: list, weights_file: Optional[Path]) -> None:
    """A checkpoint with a trained classifier of another size cannot take our classes."""
    architectures = src.config.get("architectures") or []
    has_head = any("ForSequenceClassification" in str(a) for a in architectures)
    if weights_file is not None and has_head and src.labels and len(src.labels) != len(labels):
        raise EdgeError(f"{src.name} has a {len(src.labels)}-class classifier but the training data has "
                        f"{len(labels)} classes", "fine-tune from its base (pre-trained) checkpoint instead")


def build_tokenizer(src: ModelSource, seq_len: int, scratch: Path):
    """(HF fast tokenizer, vocab) from the source's vocab and settings, as the converter builds it."""
    vocab, _ = read_vocab(src.directory)
    settings = tokenizer_settings(src.directory)
    tokenizer_metadata(settings, vocab, seq_len)  # refuses a vocab without the special tokens
    size = src.config.get("vocab_size")
    if isinstance(size, int) and len(vocab) > size:
        raise EdgeError(f"the vocabulary has {len(vocab)} tokens but the model embeds only {size}",
                        "the vocab and config.json belong to different models")
    vocab_path = scratch / "vocab.txt"
    vocab_path.write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    return hf_tokenizer(str(vocab_path), settings), vocab


def tool_versions() -> dict:
    """Versions from the installed packages' metadata: compare's parent process never imports TF."""
    versions = {"edge_slm": edge_slm_version()}
    for package in ("tensorflow", "tf-keras", "transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


class Trainer:
    """A model, its optimizer and a compiled train step over pre-tokenized arrays."""

    def __init__(self, model, spec, encoded: dict, label_ids: np.ndarray, settings: TrainSettings,
                 total_steps: int, seq_len: int):
        from transformers import create_optimizer  # deferred: transformers loads TF

        tf = self.tf = tensorflow()
        self.model, self.spec, self.settings, self.seq_len = model, spec, settings, seq_len
        self.encoded, self.label_ids = encoded, label_ids
        self.examples = len(label_ids)
        self.steps_per_epoch = -(-self.examples // settings.batch_size)
        self.total_steps = total_steps
        # Linear warm-up, then linear decay to 0 at the last step (transformers' TF schedule).
        self.warmup_steps = min(int(settings.warmup_ratio * total_steps), total_steps - 1)
        self.optimizer, _ = create_optimizer(settings.learning_rate, num_train_steps=total_steps,
                                             num_warmup_steps=self.warmup_steps)
        self.optimizer.build(model.trainable_variables)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        signature = [tf.TensorSpec([None, seq_len], tf.int32, name=n) for n in spec.inputs]
        names = spec.inputs

        @tf.function(input_signature=signature + [tf.TensorSpec([None], tf.int32, name="labels")])
        def step(*args):
            with tf.GradientTape() as tape:
                logits = model(dict(zip(names, args[:-1])), training=True).logits
                loss = loss_fn(args[-1], logits)
            gradients = tape.gradient(loss, model.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        @tf.function(input_signature=signature)
        def logits(*args):
            return model(dict(zip(names, args)), training=False).logits

        self._step, self._logits = step, logits

    def batch_indices(self, step: int) -> np.ndarray:
        """Indices of global step `step` (0-based): epoch e's order is a permutation seeded by (seed, e)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.settings.seed, epoch]).permutation(self.examples)
        size = self.settings.batch_size
        return order[position * size:(position + 1) * size]

    def run_step(self, step: int) -> tuple:
        """(loss, seconds, examples, real tokens) of one optimizer step."""
        index = self.batch_indices(step)
        feeds = [self.encoded[name][index] for name in self.spec.inputs] + [self.label_ids[index]]
        start = time.perf_counter()
        loss = float(self._step(*feeds))
        seconds = time.perf_counter() - start
        return loss, seconds, len(index), int(self.encoded["attention_mask"][index].sum())

    def evaluate(self, encoded: dict, label_ids: np.ndarray) -> dict:
        rows = []
        for start in range(0, len(label_ids), EVAL_BATCH_SIZE):
            rows.append(self._logits(*[encoded[n][start:start + EVAL_BATCH_SIZE] for n in self.spec.inputs]).numpy())
        logits = np.concatenate(rows).astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(len(label_ids)), label_ids].mean())
        correct = int((logits.argmax(axis=1) == label_ids).sum())
        return {"loss": loss, "correct": correct, "examples": len(label_ids)}

    def optimizer_state(self) -> list:
        return [v.numpy() for v in self.optimizer.variables]

    def restore_optimizer(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise EdgeError(f"{path} is damaged ({e.__class__.__name__})",
                            f"remove {path.parent} to resume from the checkpoint before it, or train into a new "
                            "-o directory") from None
        variables = self.optimizer.variables
        if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise EdgeError(f"{path} does not fit this model's optimizer",
                            "the checkpoint belongs to another model; train into a new -o directory")
        for variable, array in zip(variables, arrays):
            variable.assign(array)


def training_speed(sessions: list, seq_len: int) -> dict:
    """Steady-state training speed over every session's steps after its first SPEED_WARMUP_STEPS."""
    timed = [record for session in sessions for record in session["steps"][SPEED_WARMUP_STEPS:]]
    if not timed:
        return {"examples_per_s": None, "tokens_per_s": None, "padded_tokens_per_s": None, "steps_per_s": None,
                "step_ms_median": None, "timed_steps": 0, "warmup_steps_excluded": SPEED_WARMUP_STEPS,
                "note": f"too few steps: the first {SPEED_WARMUP_STEPS} of a run are warm-up"}
    seconds = sum(r[0] for r in timed)
    examples = sum(r[1] for r in timed)
    return {"examples_per_s": examples / seconds, "tokens_per_s": sum(r[2] for r in timed) / seconds,
            "padded_tokens_per_s": examples * seq_len / seconds, "steps_per_s": len(timed) / seconds,
            "step_ms_median": statistics.median(r[0] for r in timed) * 1e3, "timed_steps": len(timed),
            "warmup_steps_excluded": SPEED_WARMUP_STEPS,
            "tokens_note": "tokens_per_s counts real tokens (attention mask 1); padded counts batch x seq_len"}


def encode_texts(tokenizer, texts: list, seq_len: int) -> tuple:
    """(arrays, share of texts truncated to seq_len)."""
    encoded = encode(tokenizer, texts, seq_len)
    full = encoded["attention_mask"][:, -1] == 1  # the last position is only used when a text did not fit
    return encoded, float(full.mean()) if len(texts) else 0.0


def release_model(model) -> None:
    del model
    tensorflow().keras.backend.clear_session()
