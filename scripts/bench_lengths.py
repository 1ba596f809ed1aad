"""`make bench-lengths`: length-aware artifacts against fixed-length ones, on SST-2 dev.

For each model (the registry's TinyBERT, DistilBERT, MobileBERT with random weights, and the
fine-tuned MiniLM when one is given), converts fp32 and dynamic-int8 artifacts twice: length-aware
(the default) and --fixed-length at 128. Then measures, writing one JSON file:
  - latency: `edge-run --input dev.tsv` (all texts, each at its own length or padded to 128; edge-run
    runs a file's texts grouped by length, 128 at a time), the two dynamic-int8 artifacts in alternating
    fresh processes, same threads; the mean latency per text of each, and the median over rounds of the
    per-round ratio (goal: >= 4x TinyBERT and DistilBERT, >= 3x MobileBERT); the same texts as requests
    in the file's order (`--bench --input`, one re-plan per length change); the same on short
    intent-style texts (goal >= 6x TinyBERT, DistilBERT);
  - answers: the length-aware fp32 artifact against the TF model on every dev text's own tokens
    (the converter's validation on all of dev, goal max |dlogit| <= 1e-4), against the fixed-128
    fp32 artifact (goal <= 1e-4; MobileBERT's padded and unpadded outputs differ: reported), and
    dynamic-int8 label agreement length-aware vs fixed-128 (goal >= 99.5 %);
  - file sizes (goal: length-aware <= 1.05x fixed);
  - the ratio the arithmetic allows: MACs at 128 tokens over their mean at dev's (and the intent texts')
    own lengths, counted from the graph, also with lengths rounded up to 8- and 16-row int8 tiles;
  - where the length-aware time goes (models with a latency goal): in one fresh process, alternating,
    the dev texts in their own order against the same texts sorted by length (the difference is the
    cost of changing length: re-planning the graph; fixed-128 over the sorted order is the dev ratio
    without re-plans), and the length-aware graph at 25 and 12 tokens
    (the dev texts' and the intent texts' mean) against graphs traced at exactly those lengths and
    the fixed-128 graph: fixed-128 over traced is the most that any graph at that length gains on
    this host in this run; over each file's own mix of lengths (dev, the intent texts), the steady
    state at every length it has, weighted by its count: the best case of any runtime that runs each
    text at its own length on this engine (no re-plans, no per-text code), the ceiling of the latency
    bars; and what the runtime's own code adds per
    text (edge-run's predict path against bare interpreter calls on the same tensors, dev in order).
With --xnnpack-kernels avx2 (make bench-lengths-avx2) every timed process runs XNNPACK restricted to
its AVX2 kernels (scripts/xnnpack_isa.py): the artifacts on the int8 engine of an AVX2-only host, where
dynamic int8 runs at about fp32 speed, measured on this host's caches and memory and labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
SEQ_LEN = 128
# SST-2 dev's mean length and the intent texts': graphs traced at exactly these are what any graph
# can do at that length, the ceiling for the length-aware one
TRACED_LENS = (25, 12)
GOALS = {"tinybert": 4.0, "distilbert": 4.0, "mobilebert": 3.0}
SHORT_GOALS = {"tinybert": 6.0, "distilbert": 6.0}
HOST_KERNELS = "host"
KERNEL_LABELS = {
    HOST_KERNELS: "XNNPACK with every kernel this CPU runs",
    "avx2": "XNNPACK restricted to its AVX2 kernels on this CPU (scripts/xnnpack_isa.py): the engine class "
            "of an AVX2-only host, on this host's caches and memory; not an AVX2-only host's figures",
}

# Intent-style requests (assistant commands), written for this benchmark: ~12 tokens each.
INTENT_TEXTS = (
    "set an alarm for seven thirty tomorrow morning please",
    "what is the weather going to be like in paris this weekend",
    "play some relaxing jazz music in the living room",
    "remind me to call my mother when i get home",
    "how long will it take to drive to the airport right now",
    "turn off all the lights in the kitchen and the hallway",
    "add milk, eggs and bread to my shopping list",
    "book a table for four at an italian restaurant tonight",
    "what's the exchange rate from euros to us dollars today",
    "send a message to john saying i will be ten minutes late",
    "cancel my meeting with the design team on friday afternoon",
    "how many calories are there in a medium sized banana",
    "find me a cheap flight from berlin to lisbon next month",
    "set the thermostat to twenty one degrees in the bedroom",
    "what time does the nearest pharmacy close this evening",
    "read me the latest headlines about the football world cup",
    "transfer fifty dollars from checking to my savings account",
    "start a timer for twelve minutes for the pasta",
    "who won the basketball game between boston and miami last night",
    "translate good morning, how are you into spanish",
)


def convert_all(name: str, source: str, work: Path, log) -> dict:
    """{(kind, quant): artifact path}; length-aware fp32 validated on all of dev at own lengths."""
    from edge_slm.convert.api import convert

    paths = {}
    for fixed in (False, True):
        kind = "fixed" if fixed else "dynamic"
        out = work / name / kind
        started = time.perf_counter()
        # Length-aware: validate on every dev text (own lengths) -- the bar on fp32 against TF.
        results = convert(source, ["fp32", "dynamic"], SEQ_LEN, out, random_init=name in GOALS,
                          calibration=str(DEV), validation_samples=0, validate=not fixed, fixed_length=fixed)
        log(f"{name} {kind}: converted in {time.perf_counter() - started:.0f} s")
        for r in results:
            paths[(kind, r.quant)] = Path(r.artifact_path)
            paths[(kind, r.quant, "validation")] = r.validation
    return paths


def where_time_goes(dynamic: Path, fixed: Path, traced: list, rounds: int, threads: int, kernels: str) -> dict:
    """Engine-level loops in a fresh process (see breakdown_main): per-length-change cost, and the
    length-aware graph against graphs traced at exactly TRACED_LENS tokens and the fixed-128 one."""
    proc = subprocess.run([sys.executable, __file__, "--breakdown", json.dumps(
        {"dynamic": str(dynamic), "fixed": str(fixed), "traced": [str(p) for p in traced], "rounds": rounds,
         "threads": threads, "kernels": kernels})], capture_output=True, text=True, timeout=3600, check=True)
    return json.loads(proc.stdout)


def breakdown_main(dynamic: str, fixed: str, traced: list, rounds: int, threads: int, kernels: str) -> dict:
    arch_flags = None
    if kernels != HOST_KERNELS:  # before any interpreter: XNNPACK picks its kernels once
        from xnnpack_isa import restrict

        arch_flags = [f"{flags:#x}" for flags in restrict(kernels)]
    from edge_slm.runtime.data import read_dataset
    from edge_slm.runtime.engine import load_model

    model, fixed_model = load_model(dynamic, threads=threads), load_model(fixed, threads=threads)
    exact = [load_model(path, threads=threads) for path in traced]
    texts = read_dataset(str(DEV)).texts
    tokens = [len(model.tokenizer.encode_ids(t, SEQ_LEN)) for t in texts]
    in_order, by_length = texts, [t for _, t in sorted(zip(tokens, texts), key=lambda pair: pair[0])]

    def ms_per_text(sequence) -> float:
        start = time.perf_counter()
        for text in sequence:
            model.prepare(text)
            model.run_prepared()
        return (time.perf_counter() - start) / len(sequence) * 1e3

    # the runtime's own cost per text: predict_one (edge-run's timed path: tokenize, set, invoke, read,
    # softmax) against a bare loop over the same tensors (resize when the length changes, set, invoke, read)
    tensors_per_text = []
    for text in texts:
        count = model.prepare(text)
        tensors_per_text.append([(slot.index, slot.buffer[:, :count].copy()) for slot in model.slots])
    interpreter = model.interpreter

    def bare_ms_per_text() -> float:
        allocated = model.length
        start = time.perf_counter()
        for tensors in tensors_per_text:
            count = tensors[0][1].shape[1]
            if count != allocated:
                for index, _ in tensors:
                    interpreter.resize_tensor_input(index, [1, count])
                interpreter.allocate_tensors()
                allocated = count
            for index, array in tensors:
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            interpreter.get_tensor(model.output_index)
        elapsed = time.perf_counter() - start
        model.length = allocated  # the model resizes when a request's length differs from this
        return elapsed / len(tensors_per_text) * 1e3

    def predict_ms_per_text() -> float:
        start = time.perf_counter()
        for text in texts:
            model.predict_one(text)
        return (time.perf_counter() - start) / len(texts) * 1e3

    def steady_ms(m, text, runs=200) -> float:
        m.prepare(text)
        m.run_prepared()
        start = time.perf_counter()
        for _ in range(runs):
            m.run_prepared()
        return (time.perf_counter() - start) / runs * 1e3

    # The best any runtime can do that runs each text at its own length with this engine: the steady state
    # at each of a file's lengths (re-planned once, warm, no per-text code), weighted by how many texts have it
    def length_mix(file_texts, lengths) -> dict:
        """{length: (the file's first text of that length, how many texts have it)}"""
        counts = {}
        for text, n in zip(file_texts, lengths):
            text_of_length, count = counts.get(n, (text, 0))
            counts[n] = (text_of_length, count + 1)
        return counts

    mixes = {"dev": length_mix(texts, tokens),
             "short_texts": length_mix(INTENT_TEXTS, [len(model.tokenizer.encode_ids(t, SEQ_LEN))
                                                      for t in INTENT_TEXTS])}
    # a dev text of exactly each traced length: the graphs then run the same tokens (fixed-128 padded)
    at_len = {n: mixes["dev"][n][0] for n in TRACED_LENS}

    def best_case_ms(mix: dict) -> float:
        total = sum(count for _, count in mix.values())
        return sum(steady_ms(model, text, runs=60) * count for text, count in mix.values()) / total

    ms_per_text(in_order[:50])
    figures = {"in_order": [], "by_length": [], "fixed_steady": [], "bare_in_order": [], "predict_in_order": []}
    figures.update({f"{kind}_steady_{n}": [] for n in TRACED_LENS for kind in ("length_aware", "traced")})
    figures.update({f"best_case_{name}": [] for name in mixes})
    for _ in range(rounds):
        figures["in_order"].append(ms_per_text(in_order))
        figures["by_length"].append(ms_per_text(by_length))
        figures["fixed_steady"].append(steady_ms(fixed_model, at_len[TRACED_LENS[0]]))
        figures["bare_in_order"].append(bare_ms_per_text())
        figures["predict_in_order"].append(predict_ms_per_text())
        for n, graph in zip(TRACED_LENS, exact):
            figures[f"length_aware_steady_{n}"].append(steady_ms(model, at_len[n]))
            figures[f"traced_steady_{n}"].append(steady_ms(graph, at_len[n]))
        for name, mix in mixes.items():
            figures[f"best_case_{name}"].append(best_case_ms(mix))
    median = {k: statistics.median(v) for k, v in figures.items()}
    changes = {"in_order": sum(a != b for a, b in zip(tokens, tokens[1:])),
               "by_length": len(set(tokens)) - 1}
    per_change = (median["in_order"] - median["by_length"]) * len(texts) / (changes["in_order"] - changes["by_length"])
    return {"rounds": rounds, "texts": len(texts), "xnnpack_arch_flags_before_after": arch_flags,
            "length_changes": changes,
            "ms_per_text_in_order": median["in_order"], "ms_per_text_by_length": median["by_length"],
            "ms_per_length_change": per_change, "fixed_graph_ms": median["fixed_steady"],
            # dev with (almost) no re-plans: what the bar's ratio would be if a length change cost nothing
            "ratio_by_length": median["fixed_steady"] / median["by_length"],
            # what edge-run's code adds to each text in dev order, over bare interpreter calls
            "runtime_overhead": {"bare_ms_per_text": median["bare_in_order"],
                                 "predict_ms_per_text": median["predict_in_order"],
                                 "ratio": median["predict_in_order"] / median["bare_in_order"],
                                 "us_per_text": (median["predict_in_order"] - median["bare_in_order"]) * 1e3},
            "at_lengths": {n: {"length_aware_ms": median[f"length_aware_steady_{n}"],
                               "traced_graph_ms": median[f"traced_steady_{n}"],
                               # no graph at n tokens gains more than this over fixed-128 here, in this run
                               "ceiling_ratio": median["fixed_steady"] / median[f"traced_steady_{n}"],
                               "length_aware_ratio": median["fixed_steady"] / median[f"length_aware_steady_{n}"]}
                           for n in TRACED_LENS},
            # over each file's own mix of lengths: no runtime that runs every text at its own length on
            # this engine beats fixed-128 by more than this here, in this run (the latency bars' ceiling)
            "own_lengths_best_case": {name: {"texts": sum(count for _, count in mix.values()),
                                             "lengths": len(mix),
                                             "mean_ms": median[f"best_case_{name}"],
                                             "ratio": median["fixed_steady"] / median[f"best_case_{name}"]}
                                      for name, mix in mixes.items()},
            "all_rounds": figures}


def work_ratios(path: Path, texts: list) -> dict:
    """The ratio the arithmetic allows: multiply-accumulates per inference at the longest (128) over their mean at
    the texts' own lengths, counted from the length-aware graph's ops (runtime/work.py), and with each
    length rounded up to whole int8 GEMM tiles of 8 and 16 rows (AMX computes 16 rows per tile, so a
    25-token request does 32 rows' work there). No artifact beats these unless a short request runs
    at a higher MAC rate than a 128-token one."""
    from edge_slm.runtime.engine import load_model

    model = load_model(path, threads=1)
    counter = model.mac_counter
    longest = model.seq_len
    lengths = [len(model.tokenizer.encode_ids(t, longest)) for t in texts]
    full = counter.macs(longest)
    ratios = {}
    for rows, key in ((1, "own_lengths"), (8, "rounded_to_8_rows"), (16, "rounded_to_16_rows")):
        mean = sum(counter.macs(min(longest, -(-n // rows) * rows)) for n in lengths) / len(lengths)
        ratios[key] = full / mean
    return ratios


def logits_of(path: Path, texts: list):
    from edge_slm.runtime.engine import load_model

    return load_model(path, threads=1).logits(texts)


def edge_run(path: Path, data: Path, threads: int, extra=(), kernels: str = HOST_KERNELS) -> dict:
    restricted = [] if kernels == HOST_KERNELS else [str(REPO / "scripts" / "xnnpack_isa.py"), kernels]
    edge = [sys.executable, *restricted, "-m", "edge_slm.runtime.cli"]
    proc = subprocess.run(edge + ["--model", str(path), "--input", str(data), "--threads", str(threads), "--json",
                                  "-q", *extra], capture_output=True, text=True, timeout=3600, check=True)
    return json.loads(proc.stdout)


def latency_rounds(dynamic: Path, fixed: Path, data: Path, threads: int, rounds: int, extra, read, log,
                   kernels: str) -> dict:
    """Alternating fresh processes (which goes first alternates too); per-round ratio fixed / dynamic."""
    per_round = []
    for number in range(rounds):
        order = [("dynamic", dynamic), ("fixed", fixed)]
        if number % 2:
            order.reverse()
        figures = {kind: read(edge_run(path, data, threads, extra, kernels)) for kind, path in order}
        figures["ratio"] = figures["fixed"]["mean_ms"] / figures["dynamic"]["mean_ms"]
        figures["p50_ratio"] = figures["fixed"]["p50_ms"] / figures["dynamic"]["p50_ms"]
        if "cpu_mean_ms" in figures["fixed"]:  # load-independent: CPU time of the (single) inference thread
            figures["cpu_ratio"] = figures["fixed"]["cpu_mean_ms"] / figures["dynamic"]["cpu_mean_ms"]
        figures["load_average_1min"] = os.getloadavg()[0]  # other agents share these cores
        per_round.append(figures)
        log(f"  round {number + 1}: fixed {figures['fixed']['mean_ms']:.3f} ms, length-aware "
            f"{figures['dynamic']['mean_ms']:.3f} ms per text: {figures['ratio']:.2f}x")
    return {"rounds": per_round, "median_ratio": statistics.median(r["ratio"] for r in per_round),
            "median_p50_ratio": statistics.median(r["p50_ratio"] for r in per_round),
            "median_cpu_ratio": (statistics.median(r["cpu_ratio"] for r in per_round)
                                 if all("cpu_ratio" in r for r in per_round) else None),
            "dynamic_mean_ms_median": statistics.median(r["dynamic"]["mean_ms"] for r in per_round),
            "fixed_mean_ms_median": statistics.median(r["fixed"]["mean_ms"] for r in per_round)}


def from_predictions(doc: dict) -> dict:
    s = doc["predictions_summary"]
    return {"mean_ms": s["latency_ms"]["mean"], "p50_ms": s["latency_ms"]["p50"], "texts": s["texts"],
            "cpu_mean_ms": s["cpu_ms"]["mean"],
            "tokens_mean": s["tokens"]["mean"]}


def from_benchmark(doc: dict) -> dict:
    b = doc["benchmark"]
    work = b.get("work") or {}
    return {"mean_ms": b["latency_ms"]["mean"], "p50_ms": b["latency_ms"]["p50"], "runs": b["runs"],
            "tokens_mean": b["sequence"]["tokens"]["mean"], "macs_per_inference": work.get("macs_per_inference"),
            "gops_per_s": work.get("gops_per_s")}


def measure_model(name: str, source: str, work: Path, args, texts: list, intents: Path, log) -> dict:
    import numpy as np

    paths = convert_all(name, source, work, log)
    fp32_dyn, fp32_fix = logits_of(paths[("dynamic", "fp32")], texts), logits_of(paths[("fixed", "fp32")], texts)
    int8_dyn, int8_fix = (logits_of(paths[("dynamic", "dynamic")], texts),
                          logits_of(paths[("fixed", "dynamic")], texts))
    validation = paths[("dynamic", "fp32", "validation")]
    result = {
        "random_weights": name in GOALS,
        "fp32_vs_tf_own_tokens": {k: validation[k] for k in ("texts", "lengths", "max_abs_logit_diff",
                                                              "mean_abs_logit_diff", "label_agreement")},
        "fp32_vs_tf_goal": "max |dlogit| <= 1e-4",
        "fp32_dynamic_vs_fixed128": {"texts": len(texts), "max_abs_logit_diff": float(np.abs(fp32_dyn - fp32_fix).max()),
                                     "mean_abs_logit_diff": float(np.abs(fp32_dyn - fp32_fix).mean()),
                                     "label_agreement": float(np.mean(fp32_dyn.argmax(1) == fp32_fix.argmax(1)))},
        "int8_dynamic_vs_fixed128_label_agreement": float(np.mean(int8_dyn.argmax(1) == int8_fix.argmax(1))),
        "int8_label_goal": ">= 0.995",
        "file_bytes": {f"{kind}-{quant}": paths[(kind, quant)].stat().st_size
                       for kind in ("dynamic", "fixed") for quant in ("fp32", "dynamic")},
    }
    result["file_ratio"] = {quant: result["file_bytes"][f"dynamic-{quant}"] / result["file_bytes"][f"fixed-{quant}"]
                            for quant in ("fp32", "dynamic")}
    result["work_ratio"] = {"dev": work_ratios(paths[("dynamic", "dynamic")], texts),
                            "short_texts": work_ratios(paths[("dynamic", "dynamic")], list(INTENT_TEXTS))}
    log(f"{name}: MACs at 128 over dev's: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in result["work_ratio"]["dev"].items()))
    if name in GOALS:
        log(f"{name}: dev latency, {args.rounds} alternating rounds")
        dev = latency_rounds(paths[("dynamic", "dynamic")], paths[("fixed", "dynamic")], DEV, args.threads,
                             args.rounds, (), from_predictions, log, args.xnnpack_kernels)
        dev["goal"] = f">= {GOALS[name]}x"
        dev["met"] = dev["median_ratio"] >= GOALS[name]
        result["dev_latency"] = dev
        # the same texts as requests arriving one at a time (--bench --input: in the file's order, each at
        # its own length, so nearly every request re-plans): what a server sees, beside the file's figure
        log(f"{name}: dev as requests in the file's order (--bench --input)")
        result["dev_requests_latency"] = latency_rounds(paths[("dynamic", "dynamic")], paths[("fixed", "dynamic")],
                                                        DEV, args.threads, args.rounds, ("--bench",), from_benchmark,
                                                        log, args.xnnpack_kernels)
        if not args.skip_short:
            log(f"{name}: short intent-style texts")
            short = latency_rounds(paths[("dynamic", "dynamic")], paths[("fixed", "dynamic")], intents, args.threads,
                                   args.rounds, ("--bench", "--runs", str(args.short_runs)), from_benchmark, log,
                                   args.xnnpack_kernels)
            if name in SHORT_GOALS:
                short["goal"] = f">= {SHORT_GOALS[name]}x"
                short["met"] = short["median_ratio"] >= SHORT_GOALS[name]
            result["short_texts_latency"] = short
        log(f"{name}: where the length-aware time goes")
        from edge_slm.convert.api import convert

        traced = [Path(convert(name, ["dynamic"], n, work / name / f"traced{n}", random_init=True, validate=False,
                               fixed_length=True)[0].artifact_path) for n in TRACED_LENS]
        result["where_time_goes"] = where_time_goes(paths[("dynamic", "dynamic")], paths[("fixed", "dynamic")],
                                                    traced, args.rounds, args.threads, args.xnnpack_kernels)
        b = result["where_time_goes"]
        log(f"  in order {b['ms_per_text_in_order']:.3f} ms, by length {b['ms_per_text_by_length']:.3f} ms per text: "
            f"{b['ms_per_length_change']:.3f} ms per length change; fixed-128 {b['fixed_graph_ms']:.3f} ms; "
            f"sorted by length {b['ratio_by_length']:.2f}x")
        overhead = b["runtime_overhead"]
        log(f"  edge-run's predict path {overhead['predict_ms_per_text']:.3f} ms per text against bare invokes "
            f"{overhead['bare_ms_per_text']:.3f} ms: {overhead['ratio']:.3f}x ({overhead['us_per_text']:.0f} us per text)")
        for file_name, best in b["own_lengths_best_case"].items():
            log(f"  {file_name}, each text at its own length, warm, without re-plans or per-text code: "
                f"{best['mean_ms']:.3f} ms per text: {best['ratio']:.2f}x (the ceiling of its latency bar here)")
        for n, at in b["at_lengths"].items():
            log(f"  at {n} tokens: length-aware {at['length_aware_ms']:.3f} ms ({at['length_aware_ratio']:.2f}x), "
                f"traced at {n} {at['traced_graph_ms']:.3f} ms (ceiling {at['ceiling_ratio']:.2f}x)")
    return result


def main() -> int:
    if sys.argv[1:2] == ["--breakdown"]:  # the fresh process of where_time_goes
        print(json.dumps(breakdown_main(**json.loads(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tinybert,distilbert,mobilebert")
    parser.add_argument("--minilm", help="fine-tuned MiniLM checkpoint: its dynamic-int8 label agreement")
    parser.add_argument("--out", default="bench-results/lengths.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short-runs", type=int, default=400)
    parser.add_argument("--skip-short", action="store_true")
    parser.add_argument("--xnnpack-kernels", default=HOST_KERNELS, choices=(HOST_KERNELS, "avx2"),
                        help="time with XNNPACK restricted to an older kernel set (scripts/xnnpack_isa.py); "
                             "answers are still computed with the host's kernels")
    args = parser.parse_args()

    from edge_slm.common.documents import host_facts, utc_now
    from edge_slm.common.files import write_json
    from edge_slm.runtime.data import read_dataset

    def log(message):
        print(message, file=sys.stderr, flush=True)

    out = Path(args.out)
    try:  # before the half hour of work, not after it
        out.parent.mkdir(parents=True, exist_ok=True)
        problem = "is a directory" if out.is_dir() else None
    except FileExistsError:
        problem = f"{out.parent} is a file"
    except OSError as e:
        problem = f"cannot create {out.parent}: {e.strerror or e}"
    if problem:
        print(f"bench_lengths: error: --out {out}: {problem} (hint: pass a file path in a writable directory, "
              "e.g. bench-results/lengths.json)", file=sys.stderr)
        return 2
    texts = read_dataset(str(DEV)).texts
    work = Path(tempfile.mkdtemp(prefix="edge-lengths-"))
    log(f"artifacts in {work} (make bench-cache-pressure takes them from there)")
    intents = work / "intents.txt"
    intents.write_text("".join(t + "\n" for t in INTENT_TEXTS), encoding="utf-8")
    document = {"benchmark": "length-aware vs fixed-length artifacts", "created": utc_now(), "host": host_facts(),
                "settings": {"threads": args.threads, "rounds": args.rounds, "seq_len": SEQ_LEN, "data": str(DEV),
                             "short_texts": len(INTENT_TEXTS), "short_runs": args.short_runs,
                             "xnnpack_kernels": KERNEL_LABELS[args.xnnpack_kernels]},
                "models": {}}
    sources = [(name, name) for name in args.models.split(",") if name]
    if args.minilm:
        sources.append(("minilm-sst2", args.minilm))
    for name, source in sources:
        document["models"][name] = measure_model(name, source, work, args, texts, intents, log)
        write_json(out, document)  # after every model: an interrupted run keeps the finished ones
    if not args.minilm:
        document["minilm"] = "not measured: no fine-tuned MiniLM given (--minilm CHECKPOINT)"
        write_json(out, document)
    if args.xnnpack_kernels != HOST_KERNELS:
        print(f"[latencies: {KERNEL_LABELS[args.xnnpack_kernels]}]")
    for name, r in document["models"].items():
        dev = r.get("dev_latency")
        line = (f"{name:12s} fp32 vs TF {r['fp32_vs_tf_own_tokens']['max_abs_logit_diff']:.1e}, vs fixed "
                f"{r['fp32_dynamic_vs_fixed128']['max_abs_logit_diff']:.1e}; int8 labels "
                f"{r['int8_dynamic_vs_fixed128_label_agreement'] * 100:.2f} %; size x{r['file_ratio']['dynamic']:.3f}")
        if dev:
            line += (f"; dev mean {dev['median_ratio']:.2f}x ({'met' if dev['met'] else 'NOT MET'} {dev['goal']}), "
                     f"p50 {dev['median_p50_ratio']:.2f}x; as requests in order "
                     f"{r['dev_requests_latency']['median_ratio']:.2f}x")
        work = r["work_ratio"]["dev"]
        line += f"; dev work {work['own_lengths']:.2f}x ({work['rounded_to_16_rows']:.2f}x in 16-row tiles)"
        if r.get("short_texts_latency"):
            line += f"; short {r['short_texts_latency']['median_ratio']:.2f}x"
        if r.get("where_time_goes"):
            line += "; ceiling " + ", ".join(f"{at['ceiling_ratio']:.2f}x at {n}"
                                            for n, at in r["where_time_goes"]["at_lengths"].items())
            line += f"; dev sorted by length {r['where_time_goes']['ratio_by_length']:.2f}x"
            best_cases = r["where_time_goes"]["own_lengths_best_case"]
            line += "; best case at own lengths " + ", ".join(f"{best['ratio']:.2f}x {file_name}"
                                                              for file_name, best in best_cases.items())
        print(line)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
