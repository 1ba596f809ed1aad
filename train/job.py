"""`train()`: fine-tune a BERT-family classifier on the host and measure how fast it trains
(compare.py: the training speed of several architectures on identical data and settings).

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

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, accuracy_withheld, host_facts, memory_mb, utc_now
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_text, prepare_out_dir
from edge_slm.common.progress import Progress
from edge_slm.common.stages import StageLog
from edge_slm.convert.source import ModelSource, locate_weights, read_config, resolve_source
from edge_slm.convert.tf_env import tensorflow
from edge_slm.convert.weights import build_model, make_config
from edge_slm.models.registry import load_registry

from .checkpoints import last_checkpoint, publish_checkpoint, remove_stale_temporaries, write_checkpoint
from .data import data_fingerprint, label_counts, label_names, read_labelled, subset
from .model import (Trainer, build_tokenizer, check_head, encode_texts, release_model,
                    resolve_seq_len, tool_versions, training_speed)
from .settings import (CHECKPOINT_PREFIX, DEFAULT_EVAL_EVERY, EVAL_BATCH_SIZE, OPTIMIZER_FILE, REPORT_FILE,
                       REPORT_SCHEMA, SCHEMA_VERSION, STATE_FILE, STATE_SCHEMA, WEIGHTS_FILE, TrainSettings)


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
        if (out / "config.json").exists():
            raise EdgeError(f"--resume: the training in {out} already finished (its model is there)",
                            "train into another -o directory to train again")
        raise EdgeError(f"--resume: {out} holds no complete checkpoint to continue from",
                        "start the training without --resume")
    if not resume and (checkpoint is not None or (out / "config.json").exists()):
        raise EdgeError(f"{out} already holds a model{' checkpoint' if checkpoint else ''}",
                        "pass --resume to continue an interrupted run, or another -o directory")
    remove_stale_temporaries(out)
    train_set = read_labelled(train_path, "--train", text_column, label_column)
    dev_set = read_labelled(dev_path, "--dev", text_column, label_column)
    train_set = subset(train_set, settings.max_train_examples, settings.seed)
    src = resolve_source(model, load_registry(registry_files))
    labels = label_names(train_set, dev_set, src.labels)
    log = StageLog(enabled=show_progress)
    state = read_state(checkpoint) if resume else None
    job = TrainJob(src, settings, labels, train_set, dev_set, out, random_init, log, state, checkpoint)
    return job.run()


def read_state(checkpoint: Path) -> dict:
    """The checkpoint's trainer state, or one line saying it is damaged."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(state, dict) and isinstance(state.get("fingerprint"), dict)
                and isinstance(state.get("step"), int) and isinstance(state.get("initial_weights"), dict)):
            raise ValueError("not a trainer state")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgeError(f"--resume: {path} is damaged ({e.__class__.__name__})",
                        f"remove {checkpoint} to resume from the checkpoint before it, or train into a new -o "
                        "directory") from None
    return state


class TrainJob:
    def __init__(self, src: ModelSource, settings: TrainSettings, labels: list, train_set, dev_set, out: Path,
                 random_init: bool, log: StageLog, state: Optional[dict], checkpoint: Optional[Path]):
        self.src, self.settings, self.labels, self.out, self.log = src, settings, labels, out, log
        self.train_set, self.dev_set = train_set, dev_set
        self.random_init, self.state, self.resumed_from = random_init, state, checkpoint
        self.name = src.name
        self.started = time.perf_counter()
        self.trainer: Optional[Trainer] = None
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
                    release_model(self.trainer.model)
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
        self.seq_len = resolve_seq_len(src, s.seq_len)
        check_head(src, self.labels, weights_file)
        self.fingerprint = {"source": src.description, "init": "random" if self.random_init else "pretrained",
                            "labels": self.labels, "train_sha256": data_fingerprint(self.train_set),
                            "dev_sha256": data_fingerprint(self.dev_set), "seq_len": self.seq_len,
                            **{k: getattr(s, k) for k in TrainSettings.DETERMINING if k != "seq_len"}}
        if self.state is not None:
            changed = [k for k, v in self.fingerprint.items() if self.state["fingerprint"].get(k) != v]
            if changed:
                k = changed[0]
                raise EdgeError(f"--resume: {k} differs from the interrupted run's ({self.state['fingerprint'].get(k)!r} "
                                f"then, {self.fingerprint[k]!r} now)",
                                "resume with the same MODEL, data and settings, or train into another -o directory")
            weights_file = self.resumed_from / WEIGHTS_FILE

        tensorflow()  # imported quietly, before the first stage line
        with self.log.stage(self.name, "tokenize", f"{len(self.train_set.texts)} + {len(self.dev_set.texts)} texts, "
                                                   f"seq {self.seq_len}"):
            self.tokenizer, self.vocab = build_tokenizer(src, self.seq_len, self.scratch)
            by_name = {name: i for i, name in enumerate(self.labels)}
            self.train_arrays, self.train_truncated = encode_texts(self.tokenizer, self.train_set.texts, self.seq_len)
            self.train_ids = np.array([by_name[x] for x in self.train_set.labels], np.int32)
            self.dev_arrays, self.dev_truncated = encode_texts(self.tokenizer, self.dev_set.texts, self.seq_len)
            self.dev_ids = np.array([by_name[x] for x in self.dev_set.labels], np.int32)

        spec = src.spec
        fields = read_config(self.resumed_from) if self.state is not None else src.config
        config = make_config(spec, fields, self.labels)
        config.name_or_path = self.out.resolve().name  # the converter names artifacts after this model
        steps_per_epoch = -(-len(self.train_ids) // s.batch_size)
        total = s.max_steps if s.max_steps is not None else s.epochs * steps_per_epoch
        what = "random weights" if weights_file is None else weights_file.name
        with self.log.stage(self.name, "load", what):
            model, weights = build_model(spec, config, self.seq_len, weights_file, s.seed)
            self.trainer = Trainer(model, spec, self.train_arrays, self.train_ids, s, total, self.seq_len)
        # What the run started from; a resumed run loads the checkpoint's weights, not those.
        self.initial_weights = self.state["initial_weights"] if self.state is not None else weights.as_dict()
        if self.state is not None:
            self.trainer.restore_optimizer(self.resumed_from / OPTIMIZER_FILE)
            self.log.note(self.name, f"resuming at step {self.state['step']}/{total} from {self.resumed_from}")
        self.tokenizer_dir = self.scratch / "tokenizer"
        self.tokenizer.save_pretrained(str(self.tokenizer_dir))
        if self.state is not None:  # a kill between a checkpoint's rename and its publication
            publish_checkpoint(self.resumed_from, self.out)

    # ---- the loop ---------------------------------------------------------------------------
    def _train(self) -> None:
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
        withheld = self.accuracy_withheld
        entry = {"step": self.step, "epoch": round(self.step / self.trainer.steps_per_epoch, 4),
                 "examples_seen": self.totals["examples_seen"], "train_loss": train_loss, "dev_loss": result["loss"],
                 "dev_accuracy": RANDOM_WEIGHTS_ACCURACY if withheld else accuracy,
                 "dev_correct": None if withheld else result["correct"], "dev_examples": result["examples"],
                 "train_seconds": round(self.totals["train_seconds"], 3), "wall_seconds": round(self._wall(), 3)}
        self.evaluations.append(entry)
        shown = RANDOM_WEIGHTS_ACCURACY if withheld else f"{accuracy * 100:.2f} %"
        self.log.note(self.name, f"step {self.step}/{self.trainer.total_steps}: train loss {train_loss:.4f}, "
                                 f"dev loss {result['loss']:.4f}, dev accuracy {shown}")

    @property
    def accuracy_withheld(self) -> bool:
        """Random init is withheld only until the first step: trained weights get their number."""
        return accuracy_withheld(self.fingerprint["init"] == "random", self.step)

    def _wall(self) -> float:
        """Seconds since the run started: set-up, training, evaluations and checkpoints, over all sessions."""
        return self.prior_wall + time.perf_counter() - self.started

    def _checkpoint(self) -> None:
        start = time.perf_counter()
        state = {"schema": STATE_SCHEMA, "schema_version": SCHEMA_VERSION, "step": self.step,
                 "fingerprint": self.fingerprint, "initial_weights": self.initial_weights,
                 "evaluations": self.evaluations, "totals": self.totals, "epoch_seconds": self.epoch_seconds,
                 "sessions": self.sessions, "wall_seconds": self._wall()}
        write_checkpoint(self.out, self.step, self.trainer.model, self.tokenizer_dir,
                         self.trainer.optimizer_state(), state)
        self.totals["checkpoint_seconds"] += time.perf_counter() - start
        self._write_report("running")

    # ---- the report -------------------------------------------------------------------------
    def _write_report(self, status: str) -> dict:
        report = self._report(status)
        atomic_write_text(self.out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        return report

    def _report(self, status: str) -> dict:
        t, s, src = self.trainer, self.settings, self.src
        config = t.model.config
        speed = training_speed(self.sessions, self.seq_len)
        steady_epoch = t.steps_per_epoch / speed["steps_per_s"] if speed["steps_per_s"] else None
        completed_epochs = self.step // t.steps_per_epoch
        final = self.evaluations[-1] if self.evaluations else None
        checkpoint = last_checkpoint(self.out)
        return {
            "schema": REPORT_SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(), "status": status,
            "tool": tool_versions(), "host": host_facts(),
            "model": {"source": src.description, "name": self.name, "model_type": src.spec.model_type,
                      "architecture": src.spec.tf_class, "init": self.fingerprint["init"],
                      "parameters": int(t.model.count_params()), "num_layers": config.num_hidden_layers,
                      "hidden_size": config.hidden_size, "initial_weights": self.initial_weights},
            "data": {"train": {"path": self.train_set.source, "examples": len(self.train_ids),
                               "label_counts": label_counts(self.train_set.labels, self.labels),
                               "truncated_fraction": self.train_truncated},
                     "dev": {"path": self.dev_set.source, "examples": len(self.dev_ids),
                             "label_counts": label_counts(self.dev_set.labels, self.labels),
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
            "random_weights": self.accuracy_withheld,  # the output's weights: trained after one step
        }

    def _time_to_target(self) -> Optional[dict]:
        target = self.settings.target_accuracy
        if target is None:
            return None
        if self.accuracy_withheld:
            return {"target_accuracy": target, "reached": RANDOM_WEIGHTS_ACCURACY}
        # A run resumed from an older edge-train may hold RANDOM_WEIGHTS_ACCURACY entries.
        hit = next((e for e in self.evaluations if isinstance(e["dev_accuracy"], float)
                    and e["dev_accuracy"] >= target), None)
        if hit is None:
            return {"target_accuracy": target, "reached": False}
        return {"target_accuracy": target, "reached": True, "step": hit["step"], "epoch": hit["epoch"],
                "train_seconds": hit["train_seconds"], "wall_seconds": hit["wall_seconds"],
                "note": f"first evaluation at or above the target (evaluations every {self.settings.eval_every} steps)"}
