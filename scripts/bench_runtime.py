"""`make bench`: edge-run against a bare interpreter script on the same model and inputs.

Measures, for --model (default: a TinyBERT-architecture (4 layers, hidden 312) dynamic-int8 artifact,
length-aware as the converter makes it by default, timed at sequence length 128, edge-run --bench's
default; the results name the model from its own metadata), in fresh processes, alternating the two
so drift hits both alike (each ratio is the median of the per-round ratios of a back-to-back pair):
  - edge-run steady-state p50 (tokenize + set inputs + invoke + read) / bare invoke() p50  (goal <= 1.05)
  - tokenize + prepare p50 / edge-run p50                                                (goal <= 3 %)
  - edge-run peak RSS / bare-script peak RSS                                            (goal <= 1.10)
The bare script feeds the very token ids edge-run computes (precomputed, so it holds no
tokenizer), because the ids decide which embedding rows get paged in. Writes a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BARE_SCRIPT = r"""
import sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
model, ids_file, threads, runs, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ids = np.load(ids_file)
interpreter = Interpreter(model_path=model, num_threads=threads)
for d in interpreter.get_input_details():  # a length-aware graph: the ids' length, as edge-run --bench
    if -1 in d["shape_signature"]:
        interpreter.resize_tensor_input(d["index"], [1, ids.shape[1]])
interpreter.allocate_tensors()
inputs = interpreter.get_input_details()
output = interpreter.get_output_details()[0]["index"]
def feed(row):
    for d in inputs:
        if "mask" in d["name"]:
            value = (row != 0).astype(d["dtype"])
        elif "type" in d["name"]:
            value = np.zeros_like(row, dtype=d["dtype"])
        else:
            value = row.astype(d["dtype"])
        interpreter.set_tensor(d["index"], value[None, :])
times = []
for i in range(warmup + runs):
    feed(ids[i % len(ids)])
    start = time.perf_counter_ns()
    interpreter.invoke()
    elapsed = time.perf_counter_ns() - start
    interpreter.get_tensor(output)
    if i >= warmup:
        times.append(elapsed / 1e6)
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
times.sort()
print(f'{{"p50_ms": {times[len(times) // 2]}, "peak_rss_mb": {int(peak) / 1024}}}')
"""


def build_artifact(out_dir: Path) -> Path:
    from edge_slm.convert.api import convert

    results = convert("tinybert", quant_modes=["dynamic"], seq_len=128, out_dir=str(out_dir),
                      random_init=True, validate=False)
    return Path(results[0].artifact_path)


def model_record(model_path: Path) -> dict:
    """The model measured, as its own metadata says (not what the default build would be)."""
    from edge_slm.runtime.artifact import describe_model, read_artifact

    return {"path": str(model_path), "file_bytes": os.path.getsize(model_path),
            **describe_model(read_artifact(model_path).metadata)}


def token_ids(model_path: Path, texts) -> Path:
    import numpy as np

    from edge_slm.runtime.engine import load_model

    model = load_model(model_path)
    rows = [model.tokenizer.encode(text, model.seq_len)["input_ids"][0] for text in texts]
    path = Path(tempfile.mkdtemp()) / "ids.npy"
    np.save(path, np.stack(rows).astype(np.int32))
    return path


def run_bare(model_path, ids_path, threads, runs, warmup) -> dict:
    proc = subprocess.run([sys.executable, "-c", BARE_SCRIPT, str(model_path), str(ids_path), str(threads),
                           str(runs), str(warmup)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_edge(model_path, threads, runs, warmup) -> dict:
    edge_run = Path(sys.executable).parent / "edge-run"
    proc = subprocess.run([str(edge_run), "--model", str(model_path), "--bench", "--runs", str(runs),
                           "--warmup", str(warmup), "--threads", str(threads), "--json", "-q"],
                          capture_output=True, text=True, check=True)
    bench = json.loads(proc.stdout)["benchmark"]
    return {"p50_ms": bench["latency_ms"]["p50"], "prepare_p50_ms": bench["prepare_ms_p50"],
            "peak_rss_mb": bench["memory"]["peak_rss_mb"], "init_ms": bench["init_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="artifact to measure (default: build TinyBERT-arch dynamic-int8, seq 128)")
    parser.add_argument("--out", default="bench-results/runtime.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()

    from edge_slm.runtime.bench import SAMPLE_TEXTS
    from edge_slm.common.documents import host_facts, utc_now
    from edge_slm.common.files import write_json

    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    model_path = Path(args.model) if args.model else build_artifact(work)
    ids_path = token_ids(model_path, SAMPLE_TEXTS)
    bare_runs, edge_runs = [], []
    for round_number in range(args.rounds):
        bare_runs.append(run_bare(model_path, ids_path, args.threads, args.runs, args.warmup))
        edge_runs.append(run_edge(model_path, args.threads, args.runs, args.warmup))
        print(f"round {round_number + 1}: bare {bare_runs[-1]}  edge-run {edge_runs[-1]}", file=sys.stderr)

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    bare_p50, edge_p50 = median(bare_runs, "p50_ms"), median(edge_runs, "p50_ms")
    prepare_p50 = median(edge_runs, "prepare_p50_ms")
    bare_rss, edge_rss = median(bare_runs, "peak_rss_mb"), median(edge_runs, "peak_rss_mb")
    # The machine drifts by several % between rounds; each round's pair ran back to back, so the
    # median of the per-round ratios cancels the drift that a ratio of medians keeps.
    def paired(key_edge, key_bare):
        return statistics.median(e[key_edge] / b[key_bare] for e, b in zip(edge_runs, bare_runs))

    ratios = {
        "p50_edge_run_over_bare_invoke": {"value": paired("p50_ms", "p50_ms"), "goal": "<= 1.05",
                                          "ratio_of_medians": edge_p50 / bare_p50},
        "prepare_share_of_p50": {"value": statistics.median(e["prepare_p50_ms"] / e["p50_ms"] for e in edge_runs),
                                 "goal": "<= 0.03"},
        "peak_rss_edge_run_over_bare": {"value": paired("peak_rss_mb", "peak_rss_mb"), "goal": "<= 1.10",
                                        "ratio_of_medians": edge_rss / bare_rss},
    }
    ratios["p50_edge_run_over_bare_invoke"]["met"] = ratios["p50_edge_run_over_bare_invoke"]["value"] <= 1.05
    ratios["prepare_share_of_p50"]["met"] = ratios["prepare_share_of_p50"]["value"] <= 0.03
    ratios["peak_rss_edge_run_over_bare"]["met"] = ratios["peak_rss_edge_run_over_bare"]["value"] <= 1.10
    document = {
        "benchmark": "edge-run vs bare interpreter", "created": utc_now(), "host": host_facts(),
        "model": model_record(model_path),
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                     "texts": len(SAMPLE_TEXTS)},
        "medians": {"bare_invoke_p50_ms": bare_p50, "edge_run_p50_ms": edge_p50, "prepare_p50_ms": prepare_p50,
                    "bare_peak_rss_mb": bare_rss, "edge_run_peak_rss_mb": edge_rss},
        "ratios": ratios,
        "rounds": {"bare": bare_runs, "edge_run": edge_runs},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, document)
    for name, ratio in ratios.items():
        print(f"{name:34s} {ratio['value']:.4f}  goal {ratio['goal']:8s} {'met' if ratio['met'] else 'NOT MET'}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
