"""`edge-run`: predict, evaluate and benchmark a .tflite on the device.

The command is thin: `run()` does the work and returns the result document (schema in
results.py); the command renders it as text, JSON or JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import click

from edge_slm.common.cli import (CONTEXT_SETTINGS, DEFAULT_IDLE_SECONDS, DEFAULT_WARMUP, check_loop_settings,
                                 check_meter_settings, loop_options, meter_options, output_options,
                                 refuse_unused_options, run_click, warn)
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, describe_caches, describe_emulator, new_document
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import check_output_file, write_json
from edge_slm.common.progress import Progress

from .backends import BACKEND_CHOICES, DEFAULT_DELEGATE, DELEGATES
from .bench import distribution, energy_around_loop, run_benchmark
from .data import read_dataset
from .engine import Model, load_model
from .metrics import evaluate


def run(model_path, *, texts=(), input_path=None, text_column=None, label_column=None, input_format=None,
        bench=False, runs=None, min_seconds=None, warmup=DEFAULT_WARMUP, threads=None, backend="auto",
        delegate=DEFAULT_DELEGATE, meter=None, port=None, baseline_seconds=DEFAULT_IDLE_SECONDS, samples_csv=None,
        show_progress=True, on_prediction=None, seq_len=None) -> dict:
    """Everything `edge-run` does, as a library call. Raises EdgeError on bad input, and RunInterrupted
    (carrying what was finished) on Ctrl-C or SIGTERM.

    Predictions run each text at its own length (a length-aware artifact; a fixed-length one pads).
    The benchmark times `seq_len` tokens per request when given; else the texts' own lengths when
    the texts are the user's (--text, --input: one pass over them unless --runs/--min-seconds), and
    the artifact's longest sequence for the built-in sample texts or random inputs."""
    _check_options(texts, input_path, bench, runs, min_seconds, warmup, threads, meter, port, baseline_seconds)
    if seq_len is not None and not bench:
        raise EdgeError("--seq-len sets the length --bench times", "add --bench, e.g. --bench --seq-len 32")
    _check_dependent_options(bench, input_path, meter, runs, min_seconds, text_column, label_column, input_format,
                             samples_csv)
    if seq_len is not None and seq_len < 2:
        raise EdgeError(f"--seq-len must be 2 or more ([CLS] and [SEP]), got {seq_len}", "e.g. --seq-len 32")
    if samples_csv is not None:
        check_output_file(samples_csv, "--samples-csv")  # before the run: samples are written as they come
    dataset = read_dataset(input_path, text_column, label_column, input_format) if input_path else None
    model = load_model(model_path, backend=backend, threads=threads, delegate=delegate)
    doc = new_document()
    doc["backend"] = model.backend.describe()
    doc["threads"] = threads
    doc["model"] = model.describe()
    try:
        _run_into(doc, model, texts, dataset, bench, runs, min_seconds, warmup, meter, port, baseline_seconds,
                  samples_csv, show_progress, on_prediction, seq_len)
    except KeyboardInterrupt:
        raise RunInterrupted(dict(doc, interrupted=True)) from None
    return doc


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; `document` holds the predictions made so far."""

    def __init__(self, document: dict):
        super().__init__()
        self.document = document


def _run_into(doc, model, texts, dataset, bench, runs, min_seconds, warmup, meter, port, baseline_seconds,
              samples_csv, show_progress, on_prediction, seq_len) -> None:
    if texts or dataset:
        model.require_tokenizer()
        all_texts = list(texts) + (dataset.texts if dataset else [])
        doc["predictions"] = []  # filled as predictions are made: an interrupt keeps them
        _predict(model, all_texts, dataset, show_progress, on_prediction, doc["predictions"], doc["host"]["emulated"])
        doc["predictions_summary"] = _predictions_summary(doc["predictions"])
        if dataset is not None and dataset.labels is not None:
            doc["evaluation"] = evaluate(model, dataset, doc["predictions"][len(texts):])
            if doc["evaluation"].get("calibrated_on_texts"):
                warn(f"accuracy {calibration_note(doc['evaluation'])}")

    if bench:
        bench_texts = (list(texts) + (dataset.texts if dataset else [])) if model.tokenizer else None
        if model.dynamic and not model.metadata and seq_len is None:
            raise EdgeError(f"{model.artifact.path} takes any sequence length and, without edge-slm metadata, "
                            "does not say its longest", "pass --seq-len N, e.g. --seq-len 128")
        model.pad_every_request_to(seq_len or (None if bench_texts else model.seq_len))
        if dataset is not None and bench_texts and runs is None and min_seconds is None:
            runs = len(bench_texts)  # the file's texts, each once, in order
        progress = Progress("bench", total=runs, seconds=min_seconds, enabled=None if show_progress else False)
        around = energy_around_loop(meter, port, baseline_seconds, samples_csv) if meter else None
        with progress:
            doc["benchmark"], doc["energy"] = run_benchmark(
                model, bench_texts, warmup=warmup, runs=runs, min_seconds=min_seconds,
                progress=progress, around_loop=around)
        # Timings of an emulated CPU say nothing about a device's speed: labelled beside the figures.
        doc["benchmark"]["emulated"] = doc["host"]["emulated"]


def _check_options(texts, input_path, bench, runs, min_seconds, warmup, threads, meter, port,
                   baseline_seconds) -> None:
    for text in texts:
        if not text.strip():
            raise EdgeError("--text is empty", "pass the sentence to classify, e.g. --text \"great movie\"")
    if not texts and not input_path and not bench:
        raise EdgeError("nothing to do", "pass --text, --input FILE or --bench")
    check_loop_settings(runs, min_seconds, warmup, threads)
    check_meter_settings(meter, port, baseline_seconds)
    if meter and not bench:
        raise EdgeError("--meter measures energy during --bench", "add --bench")


def _check_dependent_options(bench, input_path, meter, runs, min_seconds, text_column, label_column, input_format,
                             samples_csv) -> None:
    refuse_unused_options(((runs is not None and not bench, "--runs", "--bench"),
                           (min_seconds is not None and not bench, "--min-seconds", "--bench"),
                           (text_column is not None and not input_path, "--text-column", "--input"),
                           (label_column is not None and not input_path, "--label-column", "--input"),
                           (input_format is not None and not input_path, "--input-format", "--input"),
                           (samples_csv is not None and not meter, "--samples-csv", "--meter")))


def _predictions_summary(predictions: list) -> dict:
    """Latency per text and the texts' token counts: what serving these texts costs."""
    latencies = [p["latency_ms"] for p in predictions]
    return {"texts": len(predictions), "latency_ms": distribution(latencies),
            "cpu_ms": distribution([p["cpu_ms"] for p in predictions]),
            "tokens": distribution([p["tokens"] for p in predictions])}


# A file's texts run grouped by length, a window at a time: a length-aware graph re-plans whenever a
# request's length differs from the previous one's (README: 0.06-0.4 ms, up to 13 % of a request), so
# each window runs in order of length and pays that once per distinct length, not once per text (as
# sentence-transformers' encode() sorts its inputs by length). Predictions still come out in the input's
# order, a window at a time: 128 texts bound the wait for the first ones and keep most of the gain
# (TinyBERT over SST-2 dev: 278 length changes instead of 841; the whole file sorted, 51).
LENGTH_GROUP_WINDOW = 128


def _predict(model: Model, texts, dataset, show_progress, on_prediction, predictions: list, emulated: bool) -> None:
    """Predicts every text, appending rows to `predictions` in the texts' order (on Ctrl-C, every
    finished one: a window's rows are appended when it ends or is interrupted)."""
    progress = Progress("predict", total=len(texts), enabled=None if show_progress else False)
    first_dataset_row = len(texts) - (len(dataset.texts) if dataset else 0)
    with progress:
        for number, start in enumerate(range(0, len(texts), LENGTH_GROUP_WINDOW)):
            window = range(start, min(start + LENGTH_GROUP_WINDOW, len(texts)))
            encoded = {}  # position -> (ids, seconds, CPU seconds): tokenizing is part of each text's latency
            for i in window:
                began, cpu_began = time.perf_counter(), time.thread_time()
                encoded[i] = (model.tokenize(texts[i]), time.perf_counter() - began, time.thread_time() - cpu_began)
            rows = {}
            try:
                # alternately ascending and descending: a window starts at the length the previous one ended at
                for i in sorted(window, key=lambda position: len(encoded[position][0]), reverse=bool(number % 2)):
                    ids, seconds, cpu_seconds = encoded[i]
                    began, cpu_began = time.perf_counter(), time.thread_time()
                    p = model.predict_ids(ids)
                    seconds += time.perf_counter() - began
                    cpu_seconds += time.thread_time() - cpu_began
                    rows[i] = _prediction_row(texts[i], p, seconds, cpu_seconds, emulated, dataset,
                                              i - first_dataset_row)
                    progress.update()
            finally:
                for i in sorted(rows):
                    predictions.append(rows[i])
                    if on_prediction is not None:
                        on_prediction(rows[i])


def _prediction_row(text: str, p, seconds: float, cpu_seconds: float, emulated: bool, dataset, row: int) -> dict:
    out = {"text": text, "label": p.label, "index": p.index, "probability": p.probability,
           "probabilities": p.probabilities, "logits": p.logits, "latency_ms": seconds * 1e3, "emulated": emulated,
           # this thread's CPU time: the work itself, without waits for a shared CPU (1 thread)
           "cpu_ms": cpu_seconds * 1e3, "tokens": p.tokens}
    if dataset is not None and row >= 0:
        out["line"] = dataset.line_numbers[row]
        if dataset.labels is not None:
            out["true_label"] = dataset.labels[row]
    return out


# ---- rendering ---------------------------------------------------------------------------------
def render_text(doc: dict) -> str:
    lines = []
    meta = doc["model"]["metadata"] or {}
    random_weights = meta.get("random_weights")
    tag = _emulated_tag(doc)
    if doc["predictions"] is not None and doc["evaluation"] is None:
        for p in doc["predictions"]:
            lines.append(f"{p['label']:<12} {p['probability']:.4f}  {p['latency_ms']:7.2f} ms{tag}  {_clip(p['text'])}")
    if doc["evaluation"] is not None:
        lines.extend(_render_evaluation(doc["evaluation"]))
    summary = doc.get("predictions_summary")
    if summary and doc["evaluation"] is not None:  # else each prediction's line shows its latency
        lat, tok = summary["latency_ms"], summary["tokens"]
        lines.append(f"latency    mean {lat['mean']:.3f} ms per text (p50 {lat['p50']:.3f}) over {summary['texts']} "
                     f"texts of {_lengths_text(tok)} tokens, {doc['model']['sequence']['kind']}-length graph")
    if doc["benchmark"] is not None:
        lines.extend(_render_benchmark(doc, random_weights))
    if doc["energy"] is not None:
        lines.extend(_render_energy(doc["energy"]))
    return "\n".join(lines)


def _emulated_tag(doc: dict) -> str:
    return " (emulated)" if doc["host"].get("emulated") else ""


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def calibration_note(evaluation: dict) -> str:
    return (f"in-sample: the artifact was calibrated on {evaluation['calibrated_on_texts']} of these "
            f"{evaluation['examples']} texts")


def _render_evaluation(ev: dict) -> list:
    if ev["status"] == RANDOM_WEIGHTS_ACCURACY:
        counts = ", ".join(f"{k}: {v}" for k, v in ev["predicted_counts"].items())
        return [f"accuracy   {RANDOM_WEIGHTS_ACCURACY} over {ev['examples']} examples", f"predicted  {counts}"]
    lines = [f"accuracy   {ev['accuracy'] * 100:.2f} % ({ev['correct']}/{ev['examples']})"
             + ("" if ev["status"] == "ok" else f"  [{ev['status']}]")
             + (f"  [{calibration_note(ev)}]" if ev.get("calibrated_on_texts") else ""),
             f"macro-F1   {ev['macro_f1'] * 100:.2f} %",
             "per class  " + "  ".join(f"{k}: {v['correct']}/{v['support']} (F1 {v['f1'] * 100:.1f} %)"
                                       for k, v in ev["per_class"].items()),
             "confusion  rows = true, columns = predicted: " + " ".join(ev["labels"])]
    width = max(len(x) for x in ev["labels"])
    for name, row in zip(ev["labels"], ev["confusion_matrix"]):
        lines.append(f"  {name:>{width}} " + " ".join(f"{c:>{max(5, width)}}" for c in row))
    return lines


def _render_benchmark(doc: dict, random_weights) -> list:
    b = doc["benchmark"]
    lat = b["latency_ms"]
    meta = doc["model"]["metadata"] or {}
    weights = {True: "random weights", False: "trained weights"}.get(random_weights, "plain .tflite")
    describe = f"{meta.get('quantization', '?')}, {weights}" if meta else weights
    tag = _emulated_tag(doc)
    lines = [
        f"model      {doc['model']['path']} ({doc['model']['file_bytes'] / 1e6:.1f} MB, {describe})",
        f"backend    {doc['backend']['name']} {doc['backend']['version']}, "
        f"delegate {doc['backend'].get('delegate') or 'n/a'}, threads {doc['threads'] or 'default'}",
    ]
    if tag:
        lines.append(f"cpu        EMULATED by {describe_emulator(doc['host'])}: the timings below are not a device's speed")
    lines += [
        f"inputs     {b['inputs']}" + (f" ({b['distinct_texts']} distinct texts)" if b["distinct_texts"] else ""),
        f"init       {b['init_ms']:.1f} ms{tag} (read + verify + load + allocate), first inference "
        f"{b['first_inference_ms']:.2f} ms{tag}",
        f"latency    p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  mean {lat['mean']:.3f}  "
        f"std {lat['std']:.3f}  min {lat['min']:.3f}  max {lat['max']:.3f} ms{tag}",
        f"throughput {b['throughput_per_s']:.1f} inferences/s{tag} over {b['runs']} runs ({b['warmup_runs']} warm-up)",
    ]
    if b["inputs"] == "text":
        lines.append(f"prepare    {b['prepare_ms_p50']:.3f} ms{tag} p50 tokenize+fill "
                     f"({b['prepare_share_of_p50'] * 100:.1f} % of p50)")
    m = b["memory"]
    lines.append(f"memory     peak RSS {m['peak_rss_mb']:.1f} MB, RSS growth over the loop {m['rss_growth_mb']:+.2f} MB")
    seq = b["sequence"]
    lines.append(f"lengths    {seq['graph']}-length graph (max {seq['max_len']}), {seq['lengths']}: "
                 f"{_lengths_text(seq['tokens'])} tokens"
                 + (f"; {seq['resizes']} resizes, {seq['resize_ms_total']:.1f} ms in all" if seq["resizes"] else ""))
    work = b.get("work") or {}
    if work.get("macs_per_inference") is not None:
        lines.append(f"work       {work['macs_per_inference'] / 1e6:.1f} M multiply-accumulates per inference "
                     f"(mean), {work['gops_per_s']:.1f} GOP/s achieved")
    if work.get("weight_bytes_per_inference") is not None:
        sizes = describe_caches(doc["host"].get("cpu_caches"))
        lines.append(f"weights    {work['weight_bytes_per_inference'] / 1e6:.1f} MB read per inference by the matrix "
                     f"ops: {work['weight_gb_per_s']:.2f} GB/s from memory unless they stay in cache"
                     + (f" ({sizes})" if sizes else ""))
    return lines


def _lengths_text(d: dict) -> str:
    return f"mean {d['mean']:.1f}, p50 {d['p50']:g}, p90 {d['p90']:g}, max {d['max']:g}"


def _render_energy(e: dict) -> list:
    tag = " (emulated)" if e.get("emulated") else ""
    lines = []
    if e.get("energy_per_inference_mj") is not None:
        per_joule = e.get("inferences_per_joule")
        # None when the measured energy is within noise of zero
        per_joule_text = f"{per_joule:.1f} inferences/J" if per_joule is not None else "inferences/J n/a (energy ≤ 0 within noise)"
        lines.append(f"energy     {e['energy_per_inference_mj']:.3f} ± {e['uncertainty_mj']:.3f} mJ/inference{tag}, "
                     f"{per_joule_text}")
        before, after = ("not measured" if e.get(key) is None else f"{e[key]:.3f} W"
                         for key in ("idle_before_w", "idle_after_w"))
        lines.append(f"power      active {e['avg_active_w']:.3f} W, idle {before} before the loop "
                     f"and {after} after{tag}; {e['readings_used']} independent meter readings "
                     f"({e['samples_used']} polls) over {e['window_s']:.1f} s")
        if e.get("window_long_enough") is False:  # MLPerf Power's practice: say when a run is too short
            needed = (f"the {e['needed_window_s']:.1f} s needed" if e.get("needed_window_s")
                      else "what is needed")
            lines.append(f"energy     window {e['window_s']:.1f} s is shorter than {needed} for "
                         f"±{e['target_relative_uncertainty']:.0%} (this run: ±{e['relative_uncertainty']:.1%})")
        if e.get("counter_energy_per_inference_mj") is not None:
            verdict = "agrees" if e["counter_agrees"] else "DISAGREES beyond the combined uncertainty"
            lines.append(f"energy     {e['counter_energy_per_inference_mj']:.3f} ± {e['counter_uncertainty_mj']:.3f} "
                         f"mJ/inference from the meter's own energy counter{tag}: {verdict}")
    else:
        lines.append(f"energy     not measured{tag}")
    if e.get("partial"):
        lines.append("energy     PARTIAL: the meter stopped during the run")
    return lines


# ---- command -----------------------------------------------------------------------------------
@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_path", required=True, help="The .tflite (edge-slm artifact or plain).")
@click.option("--text", "texts", multiple=True, help="Text to classify (repeatable).")
@click.option("--input", "input_path", help="Texts to classify: plain lines, TSV, CSV or JSONL; '-' = stdin.")
@click.option("--text-column", help="Text column name or 0-based index (default: auto).")
@click.option("--label-column", help="Label column name or index (default: auto).")
@click.option("--input-format", type=click.Choice(["plain", "tsv", "csv", "jsonl"]), help="Override detection.")
@click.option("--bench", is_flag=True, help="Benchmark latency and memory.")
@click.option("--seq-len", type=int, help="--bench: time requests of this many tokens [default: the texts' own "
                                          "lengths with --text/--input, else the artifact's longest].")
@loop_options
@click.option("--threads", type=int, help="Interpreter threads (default: the runtime's).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.option("--delegate", type=click.Choice(tuple(DELEGATES)), default=DEFAULT_DELEGATE, show_default=True,
              help="Kernels: xnnpack (the interpreter's default), none (its optimized built-in kernels), reference "
                   "(its reference kernels: slower, the same answers on x86 and ARM; try it first when a board "
                   "disagrees with the workstation).")
@meter_options
@click.option("--samples-csv", help="Stream raw meter samples to this CSV.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON line per prediction as it is made.")
@click.option("-o", "--output", "output_path", help="Also write the result document to this FILE (atomically).")
@output_options
def command(model_path, texts, input_path, text_column, label_column, input_format, bench, seq_len, runs, min_seconds,
            warmup, threads, backend, delegate, meter, port, baseline_seconds, samples_csv, as_json, as_jsonl,
            output_path, quiet):
    """Run a BERT-family .tflite: predict, evaluate accuracy, benchmark latency, memory and energy."""
    if as_json and as_jsonl:
        raise EdgeError("--json and --jsonl exclude each other", "pick one")
    if output_path is not None:
        check_output_file(output_path, "--output")  # before the run, not after it
    on_prediction = (lambda row: click.echo(json.dumps(row, ensure_ascii=False))) if as_jsonl else None
    try:
        doc = run(model_path, texts=texts, input_path=input_path, text_column=text_column,
                  label_column=label_column, input_format=input_format, bench=bench, runs=runs,
                  min_seconds=min_seconds, warmup=warmup, threads=threads, backend=backend, delegate=delegate,
                  meter=meter, port=port, baseline_seconds=baseline_seconds, samples_csv=samples_csv,
                  show_progress=not quiet, on_prediction=on_prediction, seq_len=seq_len)
    except RunInterrupted as interrupted:
        if output_path is not None:  # what was finished is kept, marked "interrupted": true
            write_json(output_path, interrupted.document)
        raise
    if output_path is not None:
        write_json(output_path, doc)
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    elif not as_jsonl:
        click.echo(render_text(doc))
    elif doc["evaluation"] is not None or doc["benchmark"] is not None:
        # JSON lines keep stdout machine-readable; the summary goes to stderr.
        click.echo(render_text({**doc, "predictions": None}), err=True)


def main(argv: Optional[list] = None, prog_name: str = "edge-run") -> int:
    return run_click(command, argv, prog_name)


if __name__ == "__main__":
    sys.exit(main())
