"""`edge-run`: predict, evaluate and benchmark a .tflite on the device.

The command is thin: `run()` does the work and returns the result document (schema in
results.py); the command renders it as text, JSON or JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from typing import Optional

import click

from .bench import DEFAULT_WARMUP, run_benchmark
from .engine import Model, load_model
from .errors import EdgeError
from .progress import Progress
from .results import RANDOM_WEIGHTS_ACCURACY, new_document, write_json
from .backends import BACKEND_CHOICES


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def run(model_path, *, texts=(), input_path=None, text_column=None, label_column=None, input_format=None,
        bench=False, runs=None, min_seconds=None, warmup=DEFAULT_WARMUP, threads=None, backend="auto",
        meter=None, port=None, baseline_seconds=3.0, samples_csv=None, show_progress=True,
        on_prediction=None) -> dict:
    """Everything `edge-run` does, as a library call. Raises EdgeError on bad input."""
    _check_options(texts, input_path, bench, runs, min_seconds, threads, meter, port)
    if input_path:
        from .data import read_dataset  # only with --input: keeps csv & co. off the bench path
    dataset = read_dataset(input_path, text_column, label_column, input_format) if input_path else None
    model = load_model(model_path, backend=backend, threads=threads)
    doc = new_document()
    doc["backend"] = model.backend.describe()
    doc["threads"] = threads
    doc["model"] = model.describe()

    if texts or dataset:
        model.require_tokenizer()
        all_texts = list(texts) + (dataset.texts if dataset else [])
        doc["predictions"] = _predict(model, all_texts, dataset, show_progress, on_prediction)
        if dataset is not None and dataset.labels is not None:
            doc["evaluation"] = _evaluate(model, dataset, doc["predictions"][len(texts):])

    if bench:
        bench_texts = (list(texts) + (dataset.texts if dataset else [])) if model.tokenizer else None
        progress = Progress("bench", total=runs, seconds=min_seconds, enabled=None if show_progress else False)
        around = _energy_wrapper(meter, port, baseline_seconds, samples_csv) if meter else None
        with progress:
            doc["benchmark"], doc["energy"] = run_benchmark(
                model, bench_texts, warmup=warmup, runs=runs, min_seconds=min_seconds,
                progress=progress, around_loop=around)
    return doc


def _check_options(texts, input_path, bench, runs, min_seconds, threads, meter, port) -> None:
    for text in texts:
        if not text.strip():
            raise EdgeError("--text is empty", "pass the sentence to classify, e.g. --text \"great movie\"")
    if not texts and not input_path and not bench:
        raise EdgeError("nothing to do", "pass --text, --input FILE or --bench")
    if runs is not None and runs <= 0:
        raise EdgeError(f"--runs must be positive, got {runs}", "e.g. --runs 200")
    if min_seconds is not None and min_seconds <= 0:
        raise EdgeError(f"--min-seconds must be positive, got {min_seconds}", "e.g. --min-seconds 10")
    if threads is not None and threads <= 0:
        raise EdgeError(f"--threads must be positive, got {threads}", "e.g. --threads 2")
    if (meter is None) != (port is None):
        raise EdgeError("--meter and --port go together", "e.g. --meter um25c --port /dev/rfcomm0")
    if meter and not bench:
        raise EdgeError("--meter measures energy during --bench", "add --bench")


def _predict(model: Model, texts, dataset, show_progress, on_prediction) -> list:
    predictions = []
    progress = Progress("predict", total=len(texts), enabled=None if show_progress else False)
    first_dataset_row = len(texts) - (len(dataset.texts) if dataset else 0)
    with progress:
        for i, text in enumerate(texts):
            start = time.perf_counter()
            p = model.predict_one(text)
            row = {"text": text, "label": p.label, "index": p.index, "probability": p.probability,
                   "probabilities": p.probabilities, "latency_ms": (time.perf_counter() - start) * 1e3}
            if dataset is not None and i >= first_dataset_row:
                j = i - first_dataset_row
                row["line"] = dataset.line_numbers[j]
                if dataset.labels is not None:
                    row["true_label"] = dataset.labels[j]
            predictions.append(row)
            if on_prediction is not None:
                on_prediction(row)
            progress.update()
    return predictions


def _evaluate(model: Model, dataset, predictions) -> dict:
    from .data import label_ids
    from .metrics import classification_report

    true_ids = label_ids(dataset, model.labels)
    predicted = [p["index"] for p in predictions]
    report = classification_report(true_ids, predicted, model.labels)
    if model.random_weights:
        # Agreement with labels from random weights is noise; never present it as accuracy.
        return {"status": RANDOM_WEIGHTS_ACCURACY, "examples": report["examples"],
                "predicted_counts": {k: v["predicted"] for k, v in report["per_class"].items()}}
    report["status"] = "ok" if model.random_weights is False else "unknown weights (plain .tflite)"
    return report


def _energy_wrapper(meter, port, baseline_seconds, samples_csv):
    from edge_slm.power.session import measure_workload

    def around(loop):
        return measure_workload(loop, meter=meter, port=port, baseline_s=baseline_seconds,
                                samples_csv=samples_csv, warn=warn)

    return around


# ---- rendering ---------------------------------------------------------------------------------
def render_text(doc: dict) -> str:
    lines = []
    meta = doc["model"]["metadata"] or {}
    random_weights = meta.get("random_weights")
    if doc["predictions"] is not None and doc["evaluation"] is None:
        for p in doc["predictions"]:
            lines.append(f"{p['label']:<12} {p['probability']:.4f}  {p['latency_ms']:7.2f} ms  {_clip(p['text'])}")
    if doc["evaluation"] is not None:
        lines.extend(_render_evaluation(doc["evaluation"]))
    if doc["benchmark"] is not None:
        lines.extend(_render_benchmark(doc, random_weights))
    if doc["energy"] is not None:
        lines.extend(_render_energy(doc["energy"]))
    return "\n".join(lines)


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_evaluation(ev: dict) -> list:
    if ev["status"] == RANDOM_WEIGHTS_ACCURACY:
        counts = ", ".join(f"{k}: {v}" for k, v in ev["predicted_counts"].items())
        return [f"accuracy   {RANDOM_WEIGHTS_ACCURACY} over {ev['examples']} examples", f"predicted  {counts}"]
    lines = [f"accuracy   {ev['accuracy'] * 100:.2f} % ({ev['correct']}/{ev['examples']})"
             + ("" if ev["status"] == "ok" else f"  [{ev['status']}]"),
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
    lines = [
        f"model      {doc['model']['path']} ({doc['model']['file_bytes'] / 1e6:.1f} MB, {describe})",
        f"backend    {doc['backend']['name']} {doc['backend']['version']}, threads {doc['threads'] or 'default'}",
        f"inputs     {b['inputs']}" + (f" ({b['distinct_texts']} distinct texts)" if b["distinct_texts"] else ""),
        f"init       {b['init_ms']:.1f} ms (read + verify + load + allocate), first inference {b['first_inference_ms']:.2f} ms",
        f"latency    p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  mean {lat['mean']:.3f}  "
        f"std {lat['std']:.3f}  min {lat['min']:.3f}  max {lat['max']:.3f} ms",
        f"throughput {b['throughput_per_s']:.1f} inferences/s over {b['runs']} runs ({b['warmup_runs']} warm-up)",
    ]
    if b["inputs"] == "text":
        lines.append(f"prepare    {b['prepare_ms_p50']:.3f} ms p50 tokenize+fill ({b['prepare_share_of_p50'] * 100:.1f} % of p50)")
    m = b["memory"]
    lines.append(f"memory     peak RSS {m['peak_rss_mb']:.1f} MB, RSS growth over the loop {m['rss_growth_mb']:+.2f} MB")
    return lines


def _render_energy(e: dict) -> list:
    tag = " (emulated)" if e.get("emulated") else ""
    lines = []
    if e.get("energy_per_inference_mj") is not None:
        per_joule = e.get("inferences_per_joule")
        # None when the measured energy is within noise of zero
        per_joule_text = f"{per_joule:.1f} inferences/J" if per_joule is not None else "inferences/J n/a (energy ≤ 0 within noise)"
        lines.append(f"energy     {e['energy_per_inference_mj']:.3f} ± {e['uncertainty_mj']:.3f} mJ/inference{tag}, "
                     f"{per_joule_text}")
        lines.append(f"power      idle {e['avg_idle_w']:.3f} W, active {e['avg_active_w']:.3f} W{tag}, "
                     f"{e['samples_used']} samples over {e['window_s']:.1f} s")
    else:
        lines.append(f"energy     not measured{tag}")
    if e.get("partial"):
        lines.append("energy     PARTIAL: the meter stopped during the run")
    return lines


# ---- command -----------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_path", required=True, help="The .tflite (edge-slm artifact or plain).")
@click.option("--text", "texts", multiple=True, help="Text to classify (repeatable).")
@click.option("--input", "input_path", help="Texts to classify: plain lines, TSV, CSV or JSONL; '-' = stdin.")
@click.option("--text-column", help="Text column name or 0-based index (default: auto).")
@click.option("--label-column", help="Label column name or index (default: auto).")
@click.option("--input-format", type=click.Choice(["plain", "tsv", "csv", "jsonl"]), help="Override detection.")
@click.option("--bench", is_flag=True, help="Benchmark latency and memory.")
@click.option("--runs", type=int, help="Timed runs (default 100 unless --min-seconds).")
@click.option("--min-seconds", type=float, help="Keep running at least this long.")
@click.option("--warmup", type=click.IntRange(min=0), default=DEFAULT_WARMUP, show_default=True, help="Warm-up runs.")
@click.option("--threads", type=int, help="Interpreter threads (default: the runtime's).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.option("--meter", help="Power meter type for energy per inference (see edge-power list).")
@click.option("--port", help="Meter port: a device path or a pyserial URL (socket://, rfc2217://).")
@click.option("--baseline-seconds", type=float, default=3.0, show_default=True, help="Idle baseline before and after.")
@click.option("--samples-csv", help="Stream raw meter samples to this CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON line per prediction as it is made.")
@click.option("--output", "-o", "output_path", help="Also write the result document here (atomically).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(model_path, texts, input_path, text_column, label_column, input_format, bench, runs, min_seconds,
            warmup, threads, backend, meter, port, baseline_seconds, samples_csv, as_json, as_jsonl,
            output_path, quiet):
    """Run a BERT-family .tflite: predict, evaluate accuracy, benchmark latency, memory and energy."""
    if as_json and as_jsonl:
        raise EdgeError("--json and --jsonl exclude each other", "pick one")
    on_prediction = (lambda row: click.echo(json.dumps(row, ensure_ascii=False))) if as_jsonl else None
    doc = run(model_path, texts=texts, input_path=input_path, text_column=text_column, label_column=label_column,
              input_format=input_format, bench=bench, runs=runs, min_seconds=min_seconds, warmup=warmup,
              threads=threads, backend=backend, meter=meter, port=port, baseline_seconds=baseline_seconds,
              samples_csv=samples_csv, show_progress=not quiet, on_prediction=on_prediction)
    if output_path:
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


@contextlib.contextmanager
def on_sigterm(handler):
    """`handler` answers SIGTERM while the block runs, so a `kill` unwinds (finally blocks and
    temporary files are cleaned) instead of ending the process on the spot."""
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_click(cmd, argv=None, prog_name=None) -> int:
    """Run a click command; every failure a user can cause is one line on stderr, no traceback."""
    try:
        cmd.main(args=argv, prog_name=prog_name, standalone_mode=False)
        return 0
    except EdgeError as e:
        click.echo(f"{prog_name}: error: {e.one_line()}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: interrupted", err=True)
        return 130
    except click.UsageError as e:
        click.echo(f"{prog_name}: error: {' '.join(e.format_message().split())} (hint: {prog_name} --help)", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"{prog_name}: error: {' '.join(e.format_message().split())}", err=True)
        return e.exit_code
    except BrokenPipeError:  # `edge-run ... | head` closes stdout early: not an error
        return 0
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        return 130
