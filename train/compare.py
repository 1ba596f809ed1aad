"""`compare()`: the training speed of several architectures, randomly initialised, on identical data
and settings, each in a fresh process of its own."""

from __future__ import annotations

import multiprocessing
import tempfile
import time
import traceback
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edge_slm.common.documents import host_facts, memory_mb, utc_now
from edge_slm.common.errors import EXIT_INTERRUPTED, EdgeError
from edge_slm.common.progress import Progress
from edge_slm.common.stages import StageLog
from edge_slm.convert.source import locate_weights, resolve_source
from edge_slm.convert.tf_env import tensorflow
from edge_slm.convert.weights import build_model, make_config
from edge_slm.models.registry import load_registry

from .data import generated_examples, label_sort_key, read_labelled, subset
from .model import (Trainer, build_tokenizer, encode_texts, release_model, resolve_seq_len,
                    tool_versions, training_speed)
from .settings import (CHILD_EXIT_GRACE_SECONDS, COMPARE_BATCH_SIZE, COMPARE_SCHEMA, COMPARE_SEQ_LEN,
                       DEFAULT_COMPARE_STEPS, RANDOM_INIT_NOTE, SCHEMA_VERSION, SPEED_ONLY_ACCURACY,
                       SPEED_WARMUP_STEPS, TrainSettings)


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
        dataset = subset(read_labelled(train_path, "--train", text_column, label_column),
                          max_train_examples, seed)
        texts, raw_labels, data = dataset.texts, dataset.labels, {"source": str(train_path),
                                                                 "examples": len(dataset.texts)}
    else:
        texts, raw_labels, vocab_origin = generated_examples(sources[0], steps * batch_size, seq_len)
        data = {"source": f"generated sentences (convert/texts.py) from the {vocab_origin}", "examples": len(texts)}
    labels = sorted(set(raw_labels), key=label_sort_key(raw_labels))
    if len(labels) < 2:
        raise EdgeError(f"{data['source']}: every example has the label {labels[0]!r}",
                        "a classifier needs at least two classes")

    spawn = multiprocessing.get_context("spawn")  # TF is not fork-safe; each model gets a clean interpreter
    results = []
    for name in models:
        receiver, sender = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_speed_child, args=(sender, name, list(registry_files), settings,
                                                         texts, raw_labels, labels, show_progress))
        child.start()
        sender.close()
        outcome = None
        try:
            outcome = receiver.recv()
        except EOFError:  # killed before it could answer (e.g. out of memory)
            pass
        finally:
            reap_child(child)
        if outcome is None:
            outcome = {"crash": f"its training process died (exit code {child.exitcode})"}
        if "error" in outcome:
            raise EdgeError(f"{name}: {outcome['error']}", outcome["hint"], outcome.get("exit_code", 2))
        if "crash" in outcome:
            raise RuntimeError(f"{name}: {outcome['crash']}")
        results.append(outcome)

    ranked = sorted((r for r in results if r["speed"]["examples_per_s"]), key=lambda r: -r["speed"]["examples_per_s"])
    return {
        "schema": COMPARE_SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(),
        "tool": tool_versions(), "host": host_facts(),
        "weights": "random", "weights_note": RANDOM_INIT_NOTE, "accuracy": SPEED_ONLY_ACCURACY,
        "data": {**data, "labels": labels},
        "settings": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "learning_rate": learning_rate,
                     "seed": seed, "speed_warmup_steps": SPEED_WARMUP_STEPS,
                     "process": "one fresh process per model, run one after the other"},
        "results": results,
        "fastest": ranked[0]["model"] if ranked else None,
    }


def reap_child(child, grace_seconds: float = CHILD_EXIT_GRACE_SECONDS) -> None:
    """Wait for a child that has answered (or died) to exit; one stuck in TF's teardown is killed."""
    child.join(grace_seconds)
    if child.is_alive():
        child.kill()
        child.join(grace_seconds)


def _speed_child(connection, name: str, registry_files: list, settings: TrainSettings, texts: list,
                 raw_labels: list, labels: list, show_progress: bool) -> None:
    try:
        connection.send(_speed_run(name, registry_files, settings, texts, raw_labels, labels, show_progress))
    except EdgeError as e:
        connection.send({"error": e.message, "hint": e.hint, "exit_code": e.exit_code})
    except KeyboardInterrupt:
        connection.send({"error": "interrupted", "hint": "run the comparison again", "exit_code": EXIT_INTERRUPTED})
    except Exception as e:  # a bug: the parent raises it, the traceback is on this process's stderr
        traceback.print_exc()
        connection.send({"crash": f"{type(e).__name__}: {e}"})
    finally:
        connection.close()


def _speed_run(name: str, registry_files: list, settings: TrainSettings, texts: list, raw_labels: list,
               labels: list, show_progress: bool) -> dict:
    log = StageLog(enabled=show_progress)
    tensorflow()  # imported quietly, before the first stage line
    src = resolve_source(name, load_registry(registry_files))
    locate_weights(src, random_init=True, log=log)
    seq_len = resolve_seq_len(src, settings.seq_len)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-train-compare-") as scratch:
        tokenizer, _ = build_tokenizer(src, seq_len, Path(scratch))
    encoded, truncated = encode_texts(tokenizer, texts, seq_len)
    by_name = {label: i for i, label in enumerate(labels)}
    ids = np.array([by_name[x] for x in raw_labels], np.int32)
    spec = src.spec
    with log.stage(src.name, "load", "random weights"):
        model, _ = build_model(spec, make_config(spec, src.config, labels), seq_len, None, settings.seed)
        trainer = Trainer(model, spec, encoded, ids, settings, settings.max_steps, seq_len)
    steps, losses = [], []
    progress = Progress(f"[{src.name}] train", total=settings.max_steps, enabled=None if show_progress else False)
    with progress:
        for step in range(settings.max_steps):
            loss, seconds, examples, tokens = trainer.run_step(step)
            steps.append([seconds, examples, tokens])
            losses.append(loss)
            progress.update()
    speed = training_speed([{"steps": steps}], seq_len)
    log.note(src.name, f"{_rate(speed['examples_per_s'])} examples/s, {_rate(speed['tokens_per_s'])} tokens/s")
    config = model.config
    result = {"model": name, "source": src.description, "model_type": spec.model_type, "architecture": spec.tf_class,
              "parameters": int(model.count_params()), "num_layers": config.num_hidden_layers,
              "hidden_size": config.hidden_size, "seq_len": seq_len, "steps": len(steps),
              "speed": speed, "peak_rss_mb": memory_mb()["peak_rss_mb"], "truncated_fraction": truncated,
              "wall_seconds": round(time.perf_counter() - started, 3),
              "first_step_seconds": round(steps[0][0], 3), "final_train_loss": losses[-1]}
    release_model(model)
    return result


def _rate(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"
