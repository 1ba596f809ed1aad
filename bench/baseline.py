"""The TF fp32 baseline: an artifact's source model run by its own framework, timed like edge-run.

This is what a user would deploy without edge-slm: transformers' TF class with the same weights,
fp32, called through `tf.function` (or eagerly), batch 1, each request at the same length as the
artifact's benchmark runs it (the texts' own lengths, or --seq-len / the longest; one trace for all), with
both of TF's thread pools (intra-op and inter-op) sized to the artifact's thread count, as TF sizes
them to the core count by default (measured here: MobileBERT at 2 threads, seq 128, p50 59.9 ms
with both pools at 2, 65.8 ms with one inter-op thread). The model is rebuilt from the artifact's
metadata: the weights file it was converted from, or, for random weights, the same architecture
and seed (so the weights are the same too). The timed step is edge-run's — tokenize with the
artifact's own tokenizer into the input buffers, call, read the logits — through the runtime's own
Benchmark, so both sides are measured by the same code.

Host only (TensorFlow). Run it in a process of its own, as edge-bench does, so that the memory
figures are its own:

    python -m edge_slm.bench.baseline ARTIFACT --threads 2 [--mode tf.function|eager] [--runs N] [--input FILE] --output out.json

Document "edge-slm.tf-baseline", version 1: schema, schema_version, created, tool, host, threads,
framework {tensorflow, transformers, mode, intra_op_threads, inter_op_threads}, model {artifact,
source, architecture, seq_len, random_weights, weights, metadata}, evaluation and energy (as
edge-run's), benchmark (as edge-run's, plus import_ms: importing TF and transformers, and
parameter_bytes: the fp32 weights; init_ms is build + load weights + the first call, which traces
the tf.function), agreement (its logits against the artifact's on the bench texts).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import click
import numpy as np

from edge_slm.common.cli import (CONTEXT_SETTINGS, DEFAULT_IDLE_SECONDS, DEFAULT_RUNS, DEFAULT_WARMUP,
                                 check_loop_settings, check_meter_settings, loop_options, meter_options,
                                 output_options, run_click)
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, accuracy_withheld, new_document
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import write_json
from edge_slm.common.progress import Progress
from edge_slm.convert.architectures import spec_for
from edge_slm.convert.source import read_config
from edge_slm.convert.tf_env import tensorflow
from edge_slm.convert.weights import build_model, make_config
from edge_slm.models.registry import load_registry
from edge_slm.runtime.artifact import read_artifact
from edge_slm.runtime.bench import SAMPLE_TEXTS, energy_around_loop, run_benchmark
from edge_slm.runtime.data import read_dataset
from edge_slm.runtime.backends import resolve_backend
from edge_slm.runtime.engine import SequenceBuffers, load_model
from edge_slm.runtime.metrics import evaluate
from edge_slm.runtime.tokenizer import WordPieceTokenizer
from edge_slm.runtime.work import MacCounter

SCHEMA = "edge-slm.tf-baseline"
SCHEMA_VERSION = 1
MODES = ("tf.function", "eager")
PROG = "edge-baseline"


def source_checkpoint(metadata: dict):
    """(architecture spec, config fields, weights file or None) the artifact was converted from."""
    weights = metadata.get("weights") or {}
    origin = weights.get("origin")
    model_info = metadata.get("model") or {}
    if origin and origin != "random":
        weights_file = Path(origin)
        if not weights_file.is_file():
            raise EdgeError(f"the weights the artifact was converted from ({origin}) are not on this host",
                            "run the baseline where the artifact was converted, or convert it again here")
        fields = read_config(weights_file.parent)
    else:
        weights_file = None
        source = Path(str(metadata.get("source", "")))
        registry = load_registry()
        if source.is_dir():
            fields = read_config(source)
        elif model_info.get("name") in registry:
            fields = dict(registry[model_info["name"]].config)
        else:
            raise EdgeError(f"cannot find the source model {metadata.get('source')!r} of the artifact",
                            "run the baseline where the artifact was converted (its checkpoint folder or "
                            "registry entry is needed)")
    return spec_for(fields.get("model_type")), fields, weights_file


def rebuild_source_model(metadata: dict):
    """(TF model, spec, WeightsReport): the artifact's source model, fp32."""
    spec, fields, weights_file = source_checkpoint(metadata)
    config = make_config(spec, fields, list(metadata["labels"]))
    model_info = metadata.get("model") or {}
    for key, built in (("num_layers", config.num_hidden_layers), ("hidden_size", config.hidden_size)):
        if model_info.get(key) not in (None, built):
            raise EdgeError(f"the source model found has {key} {built}, but the artifact was made with "
                            f"{model_info[key]}", "the checkpoint or registry entry changed since the "
                            "conversion; convert the artifact again")
    seq_len = metadata["tokenizer"]["max_seq_len"]
    seed = (metadata.get("weights") or {}).get("seed") or 0
    model, report = build_model(spec, config, seq_len, weights_file, seed)
    return model, spec, report


class TFRunner:
    """A TF model behind the interface the runtime's Benchmark drives (prepare / run_prepared)."""

    def __init__(self, model, spec, mode: str, tokenizer, seq_len: int, labels: list, random_weights: bool,
                 init_seconds: float):
        tf = tensorflow()
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.labels = labels
        self.random_weights = random_weights
        self.init_seconds = init_seconds
        self.file_bytes = None  # a model in memory has no file
        self.sequence = SequenceBuffers({name: np.zeros((1, seq_len), np.int32) for name in spec.inputs}, dynamic=True)
        self.resizes, self.resize_seconds = 0, 0.0  # TF takes any length as it comes
        self.mac_counter = None
        current = self.sequence.current
        if mode == "tf.function":
            signature = [tf.TensorSpec([1, None], tf.int32, name=name) for name in spec.inputs]
            call = tf.function(lambda *inputs: model(dict(zip(spec.inputs, inputs)), training=False).logits,
                               input_signature=signature)
            self._call = lambda: call(*[current(name) for name in spec.inputs])
        else:
            self._call = lambda: model({name: current(name) for name in spec.inputs}, training=False).logits

    @property
    def run_length(self) -> int:
        return self.sequence.length

    def prepare(self, text: str) -> int:
        return self.sequence.prepare_ids(self.tokenizer, self.tokenizer.encode_ids(text, self.sequence.width))

    def run_prepared(self) -> np.ndarray:
        return self._call().numpy()


def measure_baseline(artifact_path, *, threads: int, mode: str = "tf.function", runs: Optional[int] = None,
                     min_seconds: Optional[float] = None, warmup: int = DEFAULT_WARMUP, input_path: Optional[str] = None,
                     meter: Optional[str] = None, port: Optional[str] = None, baseline_seconds: float = DEFAULT_IDLE_SECONDS,
                     show_progress: bool = True, seq_len: Optional[int] = None) -> dict:
    """Rebuild, time and (with labelled data and trained weights) evaluate the source model."""
    if mode not in MODES:
        raise EdgeError(f"unknown baseline mode {mode!r}", f"one of {', '.join(MODES)}")
    check_loop_settings(runs, min_seconds, warmup, threads)
    check_meter_settings(meter, port, baseline_seconds)
    artifact = read_artifact(Path(artifact_path))
    if not artifact.has_metadata:
        raise EdgeError(f"{artifact_path} is a plain .tflite: it does not say which model it was made from",
                        "baselines need an artifact made by edge-convert")
    dataset = None
    if input_path:
        dataset = read_dataset(input_path)

    start = time.perf_counter()
    tf = tensorflow(threads)  # both thread pools sized before TF's first op fixes them
    import transformers  # deferred: loaded by tensorflow() above; here for its version
    import_ms = (time.perf_counter() - start) * 1e3

    meta = artifact.metadata
    start = time.perf_counter()
    model, spec, weights = rebuild_source_model(meta)
    tokenizer = WordPieceTokenizer.from_metadata(artifact.vocab_text, meta["tokenizer"])
    runner = TFRunner(model, spec, mode, tokenizer, meta["tokenizer"]["max_seq_len"], list(artifact.labels),
                      weights.random_weights, init_seconds=0.0)
    runner.prepare("")
    runner.run_prepared()  # tf.function traces on its first call: part of init, as allocation is for TFLite
    runner.init_seconds = time.perf_counter() - start

    doc = new_document()
    doc.update(schema=SCHEMA, schema_version=SCHEMA_VERSION, tool={**doc["tool"], "name": PROG},
               backend={"name": "tensorflow", "version": tf.__version__}, threads=threads)
    doc["framework"] = {"tensorflow": tf.__version__, "transformers": transformers.__version__, "mode": mode,
                        "intra_op_threads": threads, "inter_op_threads": threads}
    doc["model"] = {"artifact": str(artifact.path), "source": meta["source"], "architecture": spec.tf_class,
                    "seq_len": runner.seq_len, "random_weights": weights.random_weights,
                    "weights": weights.as_dict(), "metadata": meta}

    if dataset is not None and dataset.labels is not None and accuracy_withheld(weights.random_weights):
        # Agreement with labels from random weights is noise: not worth a pass over the data.
        doc["evaluation"] = {"status": RANDOM_WEIGHTS_ACCURACY, "examples": len(dataset.texts),
                             "predicted_counts": None}
    elif dataset is not None and dataset.labels is not None:
        predictions = []
        for text in dataset.texts:
            runner.prepare(text)
            predictions.append({"index": int(np.argmax(runner.run_prepared().reshape(-1)))})
        doc["evaluation"] = evaluate(runner, dataset, predictions)

    bench_texts = dataset.texts if dataset is not None else None
    runner.sequence.pad_every_request_to(seq_len or (None if bench_texts else runner.seq_len))  # as edge-run
    # The work is the artifact graph's (same model, same matrix products): counted on it.
    if (meta.get("sequence") or {}).get("kind") == "dynamic" or runner.sequence.pad_to == runner.seq_len:
        runner.mac_counter = MacCounter(artifact.path, resolve_backend("auto").interpreter_class,
                                        {i["name"]: i["role"] for i in meta["inputs"]},
                                        (meta.get("sequence") or {}).get("kind") == "dynamic",
                                        weight_itemsize=4)  # TF runs the weights in float32
    progress = Progress("bench", total=runs if runs or min_seconds else DEFAULT_RUNS, seconds=min_seconds,
                        enabled=None if show_progress else False)
    around = energy_around_loop(meter, port, baseline_seconds, None) if meter else None
    with progress:
        bench, doc["energy"] = run_benchmark(runner, bench_texts, warmup=warmup, runs=runs,
                                             min_seconds=min_seconds, progress=progress, around_loop=around)
    bench["import_ms"] = import_ms
    bench["parameter_bytes"] = int(sum(int(np.prod(w.shape)) * w.dtype.size for w in model.weights))
    bench["model_file_bytes"] = None
    doc["benchmark"] = bench
    doc["agreement"] = _agreement(runner, artifact.path, threads, bench_texts)
    return doc


def _agreement(runner: TFRunner, artifact_path: Path, threads: int, texts) -> dict:
    """Logits of this model and of the artifact on the bench texts: evidence both are the same model.
    Measured after the benchmark, so the interpreter does not count in the baseline's memory."""
    texts = list(texts or SAMPLE_TEXTS)[:32]
    device = load_model(artifact_path, threads=threads)
    runner.sequence.pad_every_request_to(None if device.dynamic else device.seq_len)  # as the artifact runs them
    ours, theirs = [], []
    for text in texts:
        runner.prepare(text)
        ours.append(runner.run_prepared().reshape(-1).astype(np.float64))
        theirs.append(device.logits([text])[0].astype(np.float64))
    ours, theirs = np.stack(ours), np.stack(theirs)
    cosine = np.sum(ours * theirs, axis=1) / np.maximum(np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1),
                                                        1e-30)
    return {"texts": len(texts), "max_abs_logit_diff": float(np.abs(ours - theirs).max()),
            "mean_cosine": float(cosine.mean()),
            "label_agreement": float(np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1)))}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("artifact")
@click.option("--threads", type=int, required=True, help="TF intra-op threads (the artifact's thread count).")
@click.option("--mode", type=click.Choice(MODES), default="tf.function", show_default=True)
@loop_options
@click.option("--input", "input_path", help="Texts (and labels) to evaluate and to feed the benchmark.")
@click.option("--seq-len", type=click.IntRange(min=2), help="Time requests of this many tokens [default: the "
                                                            "texts' own lengths with --input, else the longest].")
@meter_options
@click.option("-o", "--output", "output_path", help="Write the result document to this FILE (atomically).")
@output_options
def command(artifact, threads, mode, runs, min_seconds, warmup, input_path, seq_len, meter, port, baseline_seconds,
            output_path, as_json, quiet):
    """Time an artifact's source model in TensorFlow fp32 (the baseline edge-bench compares with)."""
    doc = measure_baseline(artifact, threads=threads, mode=mode, runs=runs, min_seconds=min_seconds, warmup=warmup,
                           input_path=input_path, meter=meter, port=port, baseline_seconds=baseline_seconds,
                           show_progress=not quiet, seq_len=seq_len)
    if output_path:
        write_json(output_path, doc)
    if as_json or not output_path:
        click.echo(json.dumps(doc, indent=2, default=str))


def main(argv: Optional[list] = None) -> int:
    return run_click(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
