"""`train()`: fine-tune a BERT-family classifier on the host and measure how fast it trains;
`compare()`: the training speed of several architectures on identical data and settings.

MODEL is what edge-convert takes (registry name, checkpoint directory, hub id, or --random-init),
loaded by the converter's own code (source.py, weights.py: safetensors read by hand). Tokenization
is the converter's Hugging Face path (validate.hf_tokenizer + validate.encode, BertTokenizerFast),
the one its validation reference uses; the device tokenizer is id-exact with it.

Output directory (a Hugging Face checkpoint that `edge-convert DIR` takes as is):

    DIR/config.json, tf_model.h5, vocab.txt, tokenizer.json, tokenizer_config.json,
        special_tokens_map.json      the model of the last complete checkpoint
    DIR/train_report.json            speed, evaluations, settings (rewritten at each checkpoint)
    DIR/checkpoint-N/                while training: the same files + optimizer.npz +
                                     trainer_state.json; removed when training completes

A checkpoint is written into a temporary folder and renamed, then its weights are hard-linked
over DIR/tf_model.h5 with one rename; config and tokenizer files never change during a run. So an
interrupted run (Ctrl-C, SIGTERM, SIGKILL) leaves DIR loadable at the last complete checkpoint,
and `resume=True` continues from there with the same data order, optimizer state and schedule.

Determinism: the seed fixes the initialisation (weights.build_model), the training subset, the
order of every epoch and the dropout masks; the same seed in the same environment gives the same
weights bit for bit. After a resume, dropout masks differ from an uninterrupted run (TF's
dropout state is not checkpointable); everything else continues exactly.

Speed: examples/s and tokens/s are steady-state figures, over the training steps after the first
SPEED_WARMUP_STEPS of each session (graph tracing, allocator warm-up); evaluation and
checkpointing are timed separately and excluded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edge_slm.models.registry import load_registry
from edge_slm.runtime.artifact import atomic_write_text
from edge_slm.runtime.errors import EdgeError
from edge_slm.runtime.results import RANDOM_WEIGHTS_ACCURACY, host_facts, memory_mb, prepare_out_dir, utc_now

from .progress import StageLog
from .source import (ModelSource, locate_weights, read_config, read_vocab, resolve_source, tokenizer_metadata,
                     tokenizer_settings)

REPORT_SCHEMA = "edge-slm.train-report"
COMPARE_SCHEMA = "edge-slm.train-compare"
STATE_SCHEMA = "edge-slm.trainer-state"
SCHEMA_VERSION = 1
REPORT_FILE = "train_report.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.npz"
WEIGHTS_FILE = "tf_model.h5"
CHECKPOINT_PREFIX = "checkpoint-"
SPEED_WARMUP_STEPS = 3       # step 1 traces the graph; 2-3 still allocate
EVAL_BATCH_SIZE = 64
DEFAULT_EVAL_EVERY = 200
DEFAULT_COMPARE_STEPS = 30
COMPARE_BATCH_SIZE = 16
COMPARE_SEQ_LEN = 128
# Draws of the seed's random streams: one for the training subset, one per epoch for the order.
_SUBSET_STREAM = 1_000_003
RANDOM_INIT_NOTE = ("random initialisation: training speed does not depend on the weight values, so the "
                    "comparison needs no pretrained checkpoint (and no hub); accuracy is not measured")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class TrainSettings:
    """What decides the trained weights (a resume must match them) plus eval/target choices."""
    epochs: int = 1
    max_steps: Optional[int] = None        # overrides epochs, as in transformers' Trainer
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1              # share of the steps with a linearly rising learning rate
    seq_len: Optional[int] = None          # None: the registry's, else 128 (capped by the model)
    max_train_examples: Optional[int] = None
    seed: int = 0
    eval_every: int = DEFAULT_EVAL_EVERY   # evaluate and checkpoint every N steps, and at the end
    target_accuracy: Optional[float] = None

    # Changing these would change the weights, so a resume refuses to.
    DETERMINING = ("epochs", "max_steps", "batch_size", "learning_rate", "warmup_ratio", "seq_len",
                   "max_train_examples", "seed")

    def check(self) -> None:
        for name, value, least in (("--epochs", self.epochs, 1), ("--max-steps", self.max_steps, 1),
                                   ("--batch-size", self.batch_size, 1), ("--seq-len", self.seq_len, 2),
                                   ("--max-train-examples", self.max_train_examples, 1),
                                   ("--eval-every", self.eval_every, 1), ("--seed", self.seed, 0)):
            if value is None and name in ("--max-steps", "--seq-len", "--max-train-examples"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise EdgeError(f"{name} must be an integer of at least {least}, got {value!r}",
                                f"e.g. {name} {max(least, 2)}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise EdgeError(f"--learning-rate must be within (0, 1), got {self.learning_rate!r}",
                            "e.g. --learning-rate 3e-5")
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            raise EdgeError(f"--warmup-ratio must be within [0, 1), got {self.warmup_ratio!r}",
                            "e.g. --warmup-ratio 0.1")
        if self.target_accuracy is not None and not (0 < self.target_accuracy <= 1):
            raise EdgeError(f"--target-accuracy must be a fraction within (0, 1], got {self.target_accuracy!r}",
                            "e.g. --target-accuracy 0.85")

    def as_dict(self) -> dict:
        return asdict(self)


# ---- the library calls ---------------------------------------------------------------------------

def train(model: str, train_path, dev_path, out_dir, *, epochs: int = 1, max_steps: Optional[int] = None,
          batch_size: int = 32, learning_rate: float = 3e-5, warmup_ratio: float = 0.1,
          seq_len: Optional[int] = None, max_train_examples: Optional[int] = None, seed: int = 0,
          eval_every: int = DEFAULT_EVAL_EVERY, target_accuracy: Optional[float] = None,
          random_init: bool = False, resume: bool = False, text_column=None, label_column=None,
          registry_files: Iterable = (), show_progress: bool = True) -> dict:
    """Fine-tune MODEL on `train_path`, evaluate on `dev_path`, write a checkpoint to `out_dir`.

    Returns the report (also written to out_dir/train_report.json). Raises EdgeError for bad input;
    on KeyboardInterrupt/SystemExit the report says "interrupted" and the exception propagates.
    """
    settings = TrainSettings(epochs, max_steps, batch_size, learning_rate, warmup_ratio, seq_len,
                             max_train_examples, seed, eval_every, target_accuracy)
    settings.check()
    out = prepare_out_dir(out_dir)
    checkpoint = last_checkpoint(out)
    if resume and checkpoint is None:
        raise EdgeError(f"--resume: {out} holds no complete checkpoint to continue from",
                        "start the training without --resume")
    if not resume and (checkpoint is not None or (out / "config.json").exists()):
        raise EdgeError(f"{out} already holds a model{' checkpoint' if checkpoint else ''}",
                        "pass --resume to continue an interrupted run, or another -o directory")
    _remove_stale_temporaries(out)
    train_set = _read_labelled(train_path, "--train", text_column, label_column)
    dev_set = _read_labelled(dev_path, "--dev", text_column, label_column)
    train_set = _subset(train_set, settings.max_train_examples, settings.seed)
    src = resolve_source(model, load_registry(registry_files))
    labels = _label_names(train_set, dev_set, src.labels)
    log = StageLog(enabled=show_progress)
    state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")) if resume else None
    job = _TrainJob(src, settings, labels, train_set, dev_set, out, random_init, log, state, checkpoint)
    return job.run()


def compare(models: Iterable, train_path=None, *, steps: int = DEFAULT_COMPARE_STEPS,
            batch_size: int = COMPARE_BATCH_SIZE, seq_len: int = COMPARE_SEQ_LEN, learning_rate: float = 3e-5,
            seed: int = 0, max_train_examples: Optional[int] = None, text_column=None, label_column=None,
            registry_files: Iterable = (), show_progress: bool = True) -> dict:
    """Training speed of each model, randomly initialised, on the same texts and settings.

    Each model trains `steps` steps in a fresh process of its own (so that its peak RSS is its
    own and nothing of the previous model stays in memory), one after the other. The texts are
    `train_path`'s, or sentences generated from the first model's vocabulary.
    """
    models = list(dict.fromkeys(str(m) for m in models))
    if not models:
        raise EdgeError("--compare needs at least one MODEL", "e.g. edge-train --compare mobilebert distilbert tinybert")
    settings = TrainSettings(max_steps=steps, batch_size=batch_size, learning_rate=learning_rate, seq_len=seq_len,
                             max_train_examples=max_train_examples, seed=seed)
    settings.check()
    registry = load_registry(registry_files)
    sources = [resolve_source(m, registry) for m in models]  # every name is checked before any training
    if train_path is not None:
        dataset = _subset(_read_labelled(train_path, "--train", text_column, label_column),
                          max_train_examples, seed)
        texts, raw_labels, data = dataset.texts, dataset.labels, {"source": str(train_path),
                                                                 "examples": len(dataset.texts)}
    else:
        texts, raw_labels, vocab_origin = _generated_examples(sources[0], steps * batch_size, seq_len)
        data = {"source": f"generated sentences (convert/texts.py) from the {vocab_origin}", "examples": len(texts)}
    labels = sorted(set(raw_labels), key=_label_sort_key(raw_labels))
    if len(labels) < 2:
        raise EdgeError(f"{data['source']}: every example has the label {labels[0]!r}",
                        "a classifier needs at least two classes")

    import multiprocessing

    spawn = multiprocessing.get_context("spawn")  # TF is not fork-safe; each model gets a clean interpreter
    results = []
    for name in models:
        receiver, sender = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_speed_child, args=(sender, name, list(registry_files), settings,
                                                         texts, raw_labels, labels, show_progress))
        child.start()
        sender.close()
        try:
            outcome = receiver.recv()
        except EOFError:  # killed before it could answer (e.g. out of memory)
            child.join()
            outcome = {"crash": f"its training process died (exit code {child.exitcode})"}
        finally:
            child.join()
        if "error" in outcome:
            raise EdgeError(f"{name}: {outcome['error']}", outcome["hint"], outcome.get("exit_code", 2))
        if "crash" in outcome:
            raise RuntimeError(f"{name}: {outcome['crash']}")
        results.append(outcome)

    ranked = sorted((r for r in results if r["speed"]["examples_per_s"]), key=lambda r: -r["speed"]["examples_per_s"])
    return {
        "schema": COMPARE_SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(),
        "tool": _tool_versions(), "host": host_facts(),
        "weights": "random", "weights_note": RANDOM_INIT_NOTE, "accuracy": RANDOM_WEIGHTS_ACCURACY,
        "data": {**data, "labels": labels},
        "settings": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "learning_rate": learning_rate,
                     "seed": seed, "speed_warmup_steps": SPEED_WARMUP_STEPS,
                     "process": "one fresh process per model, run one after the other"},
        "results": results,
        "fastest": ranked[0]["model"] if ranked else None,
    }


def _remove_stale_temporaries(out: Path) -> None:
    """What a killed run (SIGKILL) can leave behind: half-written checkpoints, a staged weights link."""
    for path in out.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    (out / f".{WEIGHTS_FILE}.publishing").unlink(missing_ok=True)


def last_checkpoint(out_dir) -> Optional[Path]:
    """The newest complete checkpoint folder in out_dir (complete = renamed into place), or None."""
    found = []
    for path in Path(out_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


# ---- data ----------------------------------------------------------------------------------------

def _read_labelled(path, option: str, text_column, label_column):
    from edge_slm.runtime.data import read_dataset

    if path is None:
        raise EdgeError(f"{option} FILE is required", f"pass {option} with a TSV/CSV/JSONL file of texts and labels")
    try:
        dataset = read_dataset(path, text_column, label_column, require_labels=True)
    except EdgeError as e:  # the reader's hints name edge-run's --input
        raise EdgeError(f"{option}: {e.message}", e.hint.replace("--input", option)) from None
    _check_label_values(dataset, option)
    return dataset


def _check_label_values(dataset, option: str) -> None:
    """Classes are ints or names; real numbers are regression targets, which this does not train."""
    if all(_DECIMAL.match(label) for label in dataset.labels):
        fractional = next((i for i, label in enumerate(dataset.labels) if not _INT.match(label)), None)
        if fractional is not None:
            raise EdgeError(f"{option}: {dataset.where(fractional)}: label {dataset.labels[fractional]!r} is a "
                            "number but not an integer (a regression target?)",
                            "edge-train trains classifiers: labels must be class ids (0, 1, …) or names")


def _subset(dataset, max_examples: Optional[int], seed: int):
    """A seeded random subset (kept in file order), so that a file sorted by label still gives every class."""
    if max_examples is None or max_examples >= len(dataset.texts):
        return dataset
    from edge_slm.runtime.data import Dataset

    keep = np.sort(np.random.default_rng([seed, _SUBSET_STREAM]).choice(len(dataset.texts), max_examples,
                                                                         replace=False))
    return Dataset(source=dataset.source, texts=[dataset.texts[i] for i in keep],
                   labels=[dataset.labels[i] for i in keep],
                   line_numbers=[dataset.line_numbers[i] for i in keep], format=dataset.format)


def _label_sort_key(labels):
    return (lambda x: int(x)) if all(_INT.match(x) for x in labels) else (lambda x: x)


def _label_names(train_set, dev_set, source_labels: Optional[list]) -> list:
    """The classes, in output order: the checkpoint's own order when it has the same classes, else the
    training labels sorted (numerically for ints)."""
    names = train_set.label_names
    if len(names) < 2:
        raise EdgeError(f"--train: every example of {train_set.source} is labelled {names[0]!r}; a classifier "
                        "needs at least two classes", "check the label column (--label-column), or use more "
                        "examples (--max-train-examples)")
    folded = {}
    for name in names:  # edge-run matches labels case-insensitively
        if name.lower() in folded:
            raise EdgeError(f"--train: labels {folded[name.lower()]!r} and {name!r} differ only in case",
                            "spell each class one way")
        folded[name.lower()] = name
    known = set(names)
    for i, label in enumerate(dev_set.labels):
        if label not in known:
            raise EdgeError(f"--dev: {dev_set.where(i)}: label {label!r} does not occur in the training data "
                            f"(classes: {', '.join(names)})", "dev labels must be training labels, spelled the same")
    if source_labels and set(source_labels) == known:
        return list(source_labels)
    return list(names)


def _generated_examples(src: ModelSource, count: int, seq_len: int) -> tuple:
    from .texts import generated_texts

    vocab, origin = read_vocab(src.directory)
    texts = generated_texts(vocab, count, seq_len)
    return texts, [str(i % 2) for i in range(count)], origin


def _fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    for text, label in zip(dataset.texts, dataset.labels):
        digest.update(f"{label}\t{text}\n".encode("utf-8"))
    return digest.hexdigest()


# ---- the model -----------------------------------------------------------------------------------

def _resolve_seq_len(src: ModelSource, seq_len: Optional[int]) -> int:
    limit = src.config.get("max_position_embeddings", 512)
    limit = limit if isinstance(limit, int) else 512
    if seq_len is None:
        return min(src.default_seq_len, limit)
    if seq_len > limit:
        raise EdgeError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings ({limit})",
                        f"use --seq-len {limit} or less")
    return seq_len


def _check_head(src: ModelSource, labels: list, weights_file: Optional[Path]) -> None:
    """A checkpoint with a trained classifier of another size cannot take our classes."""
    architectures = src.config.get("architectures") or []
    has_head = any("ForSequenceClassification" in str(a) for a in architectures)
    if weights_file is not None and has_head and src.labels and len(src.labels) != len(labels):
        raise EdgeError(f"{src.name} has a {len(src.labels)}-class classifier but the training data has "
                        f"{len(labels)} classes", "fine-tune from its base (pre-trained) checkpoint instead")


def _tokenizer(src: ModelSource, seq_len: int, scratch: Path):
    """(HF fast tokenizer, vocab) from the source's vocab and settings, as the converter builds it."""
    from .validate import hf_tokenizer

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


def _quiet_tensorflow():
    """TF, imported with its native start-up lines (absl, oneDNN, cuInit) kept off the terminal."""
    from .tf_env import captured_native_stderr, tensorflow

    with captured_native_stderr():
        tf = tensorflow()
        tf.constant(0)  # the device probe (cuInit) happens at the first op
    return tf


def _tool_versions() -> dict:
    """Versions from the installed packages' metadata: compare's parent process never imports TF."""
    from importlib.metadata import PackageNotFoundError, version

    from edge_slm.runtime.results import edge_slm_version

    versions = {"edge_slm": edge_slm_version()}
    for package in ("tensorflow", "tf-keras", "transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


class _Trainer:
    """A model, its optimizer and a compiled train step over pre-tokenized arrays."""

    def __init__(self, model, spec, encoded: dict, label_ids: np.ndarray, settings: TrainSettings,
                 total_steps: int, seq_len: int):
        from transformers import create_optimizer

        from .tf_env import tensorflow

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
        with np.load(path) as saved:
            arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        variables = self.optimizer.variables
        if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise EdgeError(f"{path} does not fit this model's optimizer",
                            "the checkpoint belongs to another model; train into a new -o directory")
        for variable, array in zip(variables, arrays):
            variable.assign(array)


def _speed(sessions: list, seq_len: int) -> dict:
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


def _encode(tokenizer, texts: list, seq_len: int) -> tuple:
    """(arrays, share of texts truncated to seq_len)."""
    from .validate import encode

    encoded = encode(tokenizer, texts, seq_len)
    full = encoded["attention_mask"][:, -1] == 1  # the last position is only used when a text did not fit
    return encoded, float(full.mean()) if len(texts) else 0.0


def _release(model) -> None:
    from .tf_env import tensorflow

    del model
    tensorflow().keras.backend.clear_session()


# ---- one training run ------------------------------------------------------------------------------

class _TrainJob:
    def __init__(self, src: ModelSource, settings: TrainSettings, labels: list, train_set, dev_set, out: Path,
                 random_init: bool, log: StageLog, state: Optional[dict], checkpoint: Optional[Path]):
        self.src, self.settings, self.labels, self.out, self.log = src, settings, labels, out, log
        self.train_set, self.dev_set = train_set, dev_set
        self.random_init, self.state, self.resumed_from = random_init, state, checkpoint
        self.name = src.name
        self.started = time.perf_counter()
        self.trainer: Optional[_Trainer] = None
        self.sessions: Optional[list] = None  # set when the training loop starts

    def run(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="edge-train-") as scratch:
            self.scratch = Path(scratch)
            try:
                self._prepare()
                self._train()
            except BaseException as e:
                if self.sessions is not None:  # the report says how far it got
                    self._write_report("interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed")
                raise
            finally:
                if self.trainer is not None:
                    _release(self.trainer.model)
        report = self._write_report("complete")
        for old in self.out.glob(f"{CHECKPOINT_PREFIX}*"):  # the model is in out/; resuming is over
            shutil.rmtree(old, ignore_errors=True)
        return report

    # ---- set-up ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        s, src = self.settings, self.src
        weights_file = locate_weights(src, self.random_init, self.log)
        if weights_file is None and not self.random_init and src.kind != "local":
            raise EdgeError(f"{src.hf_id} has no weights file", "pass --random-init or a local checkpoint")
        self.seq_len = _resolve_seq_len(src, s.seq_len)
        _check_head(src, self.labels, weights_file)
        self.fingerprint = {"source": src.description, "init": "random" if self.random_init else "pretrained",
                            "labels": self.labels, "train_sha256": _fingerprint(self.train_set),
                            "dev_sha256": _fingerprint(self.dev_set), "seq_len": self.seq_len,
                            **{k: getattr(s, k) for k in TrainSettings.DETERMINING if k != "seq_len"}}
        if self.state is not None:
            changed = [k for k, v in self.fingerprint.items() if self.state["fingerprint"].get(k) != v]
            if changed:
                k = changed[0]
                raise EdgeError(f"--resume: {k} differs from the interrupted run's ({self.state['fingerprint'].get(k)!r} "
                                f"then, {self.fingerprint[k]!r} now)",
                                "resume with the same MODEL, data and settings, or train into another -o directory")
            weights_file = self.resumed_from / WEIGHTS_FILE

        _quiet_tensorflow()
        with self.log.stage(self.name, "tokenize", f"{len(self.train_set.texts)} + {len(self.dev_set.texts)} texts, "
                                                   f"seq {self.seq_len}"):
            self.tokenizer, self.vocab = _tokenizer(src, self.seq_len, self.scratch)
            by_name = {name: i for i, name in enumerate(self.labels)}
            self.train_arrays, self.train_truncated = _encode(self.tokenizer, self.train_set.texts, self.seq_len)
            self.train_ids = np.array([by_name[x] for x in self.train_set.labels], np.int32)
            self.dev_arrays, self.dev_truncated = _encode(self.tokenizer, self.dev_set.texts, self.seq_len)
            self.dev_ids = np.array([by_name[x] for x in self.dev_set.labels], np.int32)

        from .weights import build_model, make_config

        spec = src.spec
        fields = read_config(self.resumed_from) if self.state is not None else src.config
        config = make_config(spec, fields, self.labels)
        config.name_or_path = self.out.resolve().name  # the converter names artifacts after this model
        steps_per_epoch = -(-len(self.train_ids) // s.batch_size)
        total = s.max_steps if s.max_steps is not None else s.epochs * steps_per_epoch
        what = "random weights" if weights_file is None else weights_file.name
        with self.log.stage(self.name, "load", what):
            model, weights = build_model(spec, config, self.seq_len, weights_file, s.seed)
            self.trainer = _Trainer(model, spec, self.train_arrays, self.train_ids, s, total, self.seq_len)
        # What the run started from; a resumed run loads the checkpoint's weights, not those.
        self.initial_weights = self.state["initial_weights"] if self.state is not None else weights.as_dict()
        if self.state is not None:
            self.trainer.restore_optimizer(self.resumed_from / OPTIMIZER_FILE)
            self.log.note(self.name, f"resuming at step {self.state['step']}/{total} from {self.resumed_from}")
        elif weights_file is None:
            self.log.note(self.name, f"random initialisation: dev accuracy is reported as {RANDOM_WEIGHTS_ACCURACY}")
        self.tokenizer_dir = self.scratch / "tokenizer"
        self.tokenizer.save_pretrained(str(self.tokenizer_dir))
        if self.state is not None:  # a kill between a checkpoint's rename and its publication
            self._publish(self.resumed_from)

    # ---- the loop ---------------------------------------------------------------------------
    def _train(self) -> None:
        from edge_slm.runtime.progress import Progress

        t, s = self.trainer, self.settings
        state = self.state or {}
        self.step = state.get("step", 0)
        self.evaluations = list(state.get("evaluations", []))
        self.totals = dict(state.get("totals", {"setup_seconds": 0.0, "train_seconds": 0.0, "eval_seconds": 0.0,
                                                "checkpoint_seconds": 0.0, "examples_seen": 0}))
        self.totals["setup_seconds"] += time.perf_counter() - self.started
        self.epoch_seconds = {int(k): v for k, v in state.get("epoch_seconds", {}).items()}
        self.sessions = list(state.get("sessions", [])) + [{"start_step": self.step, "steps": []}]
        self.prior_wall = state.get("wall_seconds", 0.0)
        losses_since_eval = []
        progress = Progress(f"[{self.name}] train", total=t.total_steps, enabled=None if self.log.enabled else False)
        progress.count = self.step
        with progress:
            while self.step < t.total_steps:
                loss, seconds, examples, tokens = t.run_step(self.step)
                if not np.isfinite(loss):
                    raise EdgeError(f"the training loss became {loss} at step {self.step + 1}",
                                    "lower --learning-rate")
                epoch = self.step // t.steps_per_epoch
                self.step += 1
                self.sessions[-1]["steps"].append([seconds, examples, tokens])
                self.totals["train_seconds"] += seconds
                self.totals["examples_seen"] += examples
                self.epoch_seconds[epoch] = self.epoch_seconds.get(epoch, 0.0) + seconds
                losses_since_eval.append(loss)
                progress.label = f"[{self.name}] train loss {loss:.3f}"
                progress.update()
                if self.step % s.eval_every == 0 or self.step == t.total_steps:
                    progress.close()  # end the bar's line before the evaluation's
                    self._evaluate(float(np.mean(losses_since_eval)))
                    losses_since_eval = []
                    self._checkpoint()

    def _evaluate(self, train_loss: float) -> None:
        start = time.perf_counter()
        result = self.trainer.evaluate(self.dev_arrays, self.dev_ids)
        self.totals["eval_seconds"] += time.perf_counter() - start
        accuracy = result["correct"] / result["examples"]
        entry = {"step": self.step, "epoch": round(self.step / self.trainer.steps_per_epoch, 4),
                 "examples_seen": self.totals["examples_seen"], "train_loss": train_loss, "dev_loss": result["loss"],
                 "dev_accuracy": RANDOM_WEIGHTS_ACCURACY if self.random_start else accuracy,
                 "dev_correct": None if self.random_start else result["correct"], "dev_examples": result["examples"],
                 "train_seconds": round(self.totals["train_seconds"], 3), "wall_seconds": round(self._wall(), 3)}
        self.evaluations.append(entry)
        shown = RANDOM_WEIGHTS_ACCURACY if self.random_start else f"{accuracy * 100:.2f} %"
        self.log.note(self.name, f"step {self.step}/{self.trainer.total_steps}: train loss {train_loss:.4f}, "
                                 f"dev loss {result['loss']:.4f}, dev accuracy {shown}")

    @property
    def random_start(self) -> bool:
        return self.fingerprint["init"] == "random"

    def _wall(self) -> float:
        """Seconds since the run started: set-up, training, evaluations and checkpoints, over all sessions."""
        return self.prior_wall + time.perf_counter() - self.started

    def _checkpoint(self) -> None:
        """checkpoint-N written in a temporary folder and renamed; then its weights replace out/'s."""
        start = time.perf_counter()
        final = self.out / f"{CHECKPOINT_PREFIX}{self.step}"
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.out))
        try:
            self.trainer.model.save_pretrained(str(tmp))  # config.json + tf_model.h5
            for item in self.tokenizer_dir.iterdir():
                shutil.copyfile(item, tmp / item.name)
            np.savez(tmp / OPTIMIZER_FILE, *self.trainer.optimizer_state())
            state = {"schema": STATE_SCHEMA, "schema_version": SCHEMA_VERSION, "step": self.step,
                     "fingerprint": self.fingerprint, "initial_weights": self.initial_weights,
                     "evaluations": self.evaluations, "totals": self.totals, "epoch_seconds": self.epoch_seconds,
                     "sessions": self.sessions, "wall_seconds": self._wall()}
            (tmp / STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
            _fsync_folder(tmp)
            if final.exists():  # only after a crash between this rename and the old folder's removal
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._publish(final)
        for old in self.out.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self.totals["checkpoint_seconds"] += time.perf_counter() - start
        self._write_report("running")

    def _publish(self, checkpoint: Path) -> None:
        """Make out/ the checkpoint's model. Config and tokenizer files are the same at every checkpoint of a
        run, so out/ is consistent at every moment; the weights change with one rename."""
        for item in checkpoint.iterdir():
            if item.name not in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE):
                atomic_write_text(self.out / item.name, item.read_text(encoding="utf-8"))
        staged = self.out / f".{WEIGHTS_FILE}.publishing"
        staged.unlink(missing_ok=True)
        try:
            os.link(checkpoint / WEIGHTS_FILE, staged)  # no second copy of the weights on disk
        except OSError:
            shutil.copyfile(checkpoint / WEIGHTS_FILE, staged)
        os.replace(staged, self.out / WEIGHTS_FILE)

    # ---- the report -------------------------------------------------------------------------
    def _write_report(self, status: str) -> dict:
        report = self._report(status)
        atomic_write_text(self.out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        return report

    def _report(self, status: str) -> dict:
        t, s, src = self.trainer, self.settings, self.src
        config = t.model.config
        speed = _speed(self.sessions, self.seq_len)
        steady_epoch = t.steps_per_epoch / speed["steps_per_s"] if speed["steps_per_s"] else None
        completed_epochs = self.step // t.steps_per_epoch
        final = self.evaluations[-1] if self.evaluations else None
        checkpoint = last_checkpoint(self.out)
        return {
            "schema": REPORT_SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(), "status": status,
            "tool": _tool_versions(), "host": host_facts(),
            "model": {"source": src.description, "name": self.name, "model_type": src.spec.model_type,
                      "architecture": src.spec.tf_class, "init": self.fingerprint["init"],
                      "parameters": int(t.model.count_params()), "num_layers": config.num_hidden_layers,
                      "hidden_size": config.hidden_size, "initial_weights": self.initial_weights},
            "data": {"train": {"path": self.train_set.source, "examples": len(self.train_ids),
                               "label_counts": _counts(self.train_set.labels, self.labels),
                               "truncated_fraction": self.train_truncated},
                     "dev": {"path": self.dev_set.source, "examples": len(self.dev_ids),
                             "label_counts": _counts(self.dev_set.labels, self.labels),
                             "truncated_fraction": self.dev_truncated},
                     "labels": self.labels, "seq_len": self.seq_len,
                     "tokenizer": "converter's Hugging Face BertTokenizerFast (validate.hf_tokenizer)"},
            "settings": {**s.as_dict(), "seq_len": self.seq_len, "total_steps": t.total_steps,
                         "steps_per_epoch": t.steps_per_epoch, "lr_warmup_steps": t.warmup_steps,
                         "lr_schedule": "linear warm-up to learning_rate, then linear decay to 0 (Adam)",
                         "eval_batch_size": EVAL_BATCH_SIZE},
            "progress": {"step": self.step, "total_steps": t.total_steps, "epochs_completed": completed_epochs,
                         "resumed_from_step": self.state["step"] if self.state else None,
                         "last_checkpoint": str(checkpoint) if status != "complete" and checkpoint else None},
            "speed": {**speed, "seconds_per_epoch": steady_epoch, "peak_rss_mb": memory_mb()["peak_rss_mb"],
                      "rss_note": "peak resident set size of the training process"},
            "time": {"wall_seconds": round(self._wall(), 3),
                     **{k: round(v, 3) if isinstance(v, float) else v for k, v in self.totals.items()},
                     "epoch_seconds": {str(e): round(v, 3) for e, v in sorted(self.epoch_seconds.items())
                                       if e < completed_epochs}},
            "evaluations": self.evaluations,
            "final": final,
            "time_to_target": self._time_to_target(),
            "output": {"directory": str(self.out), "convert": f"edge-convert {self.out}"},
            "random_weights": self.random_start,
        }

    def _time_to_target(self) -> Optional[dict]:
        target = self.settings.target_accuracy
        if target is None:
            return None
        if self.random_start:
            return {"target_accuracy": target, "reached": RANDOM_WEIGHTS_ACCURACY}
        hit = next((e for e in self.evaluations if e["dev_accuracy"] >= target), None)
        if hit is None:
            return {"target_accuracy": target, "reached": False}
        return {"target_accuracy": target, "reached": True, "step": hit["step"], "epoch": hit["epoch"],
                "train_seconds": hit["train_seconds"], "wall_seconds": hit["wall_seconds"],
                "note": f"first evaluation at or above the target (evaluations every {self.settings.eval_every} steps)"}


def _counts(raw_labels: list, labels: list) -> dict:
    counts = {name: 0 for name in labels}
    for label in raw_labels:
        counts[label] += 1
    return counts


def _fsync_folder(folder: Path) -> None:
    """Data on disk before the rename that publishes it (a power cut must not leave an empty file)."""
    for item in folder.iterdir():
        with open(item, "rb") as f:
            os.fsync(f.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---- compare: one model per process -----------------------------------------------------------------

def _speed_child(connection, name: str, registry_files: list, settings: TrainSettings, texts: list,
                 raw_labels: list, labels: list, show_progress: bool) -> None:
    try:
        connection.send(_speed_run(name, registry_files, settings, texts, raw_labels, labels, show_progress))
    except EdgeError as e:
        connection.send({"error": e.message, "hint": e.hint, "exit_code": e.exit_code})
    except KeyboardInterrupt:
        connection.send({"error": "interrupted", "hint": "run the comparison again", "exit_code": 130})
    except Exception as e:  # a bug: the parent raises it, the traceback is on this process's stderr
        import traceback

        traceback.print_exc()
        connection.send({"crash": f"{type(e).__name__}: {e}"})
    finally:
        connection.close()


def _speed_run(name: str, registry_files: list, settings: TrainSettings, texts: list, raw_labels: list,
               labels: list, show_progress: bool) -> dict:
    from edge_slm.runtime.progress import Progress

    from .weights import build_model, make_config

    log = StageLog(enabled=show_progress)
    _quiet_tensorflow()
    src = resolve_source(name, load_registry(registry_files))
    locate_weights(src, random_init=True, log=log)
    seq_len = _resolve_seq_len(src, settings.seq_len)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-train-compare-") as scratch:
        tokenizer, _ = _tokenizer(src, seq_len, Path(scratch))
    encoded, truncated = _encode(tokenizer, texts, seq_len)
    by_name = {label: i for i, label in enumerate(labels)}
    ids = np.array([by_name[x] for x in raw_labels], np.int32)
    spec = src.spec
    with log.stage(src.name, "load", "random weights"):
        model, _ = build_model(spec, make_config(spec, src.config, labels), seq_len, None, settings.seed)
        trainer = _Trainer(model, spec, encoded, ids, settings, settings.max_steps, seq_len)
    steps, losses = [], []
    progress = Progress(f"[{src.name}] train", total=settings.max_steps, enabled=None if show_progress else False)
    with progress:
        for step in range(settings.max_steps):
            loss, seconds, examples, tokens = trainer.run_step(step)
            steps.append([seconds, examples, tokens])
            losses.append(loss)
            progress.update()
    speed = _speed([{"steps": steps}], seq_len)
    log.note(src.name, f"{_rate(speed['examples_per_s'])} examples/s, {_rate(speed['tokens_per_s'])} tokens/s")
    config = model.config
    result = {"model": name, "source": src.description, "model_type": spec.model_type, "architecture": spec.tf_class,
              "parameters": int(model.count_params()), "num_layers": config.num_hidden_layers,
              "hidden_size": config.hidden_size, "seq_len": seq_len, "steps": len(steps),
              "speed": speed, "peak_rss_mb": memory_mb()["peak_rss_mb"], "truncated_fraction": truncated,
              "wall_seconds": round(time.perf_counter() - started, 3),
              "first_step_seconds": round(steps[0][0], 3), "final_train_loss": losses[-1]}
    _release(model)
    return result


def _rate(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"
