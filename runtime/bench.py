"""Latency and memory benchmark of a loaded Model, as a device runs it.

One timed iteration is what an application pays per request: tokenize into the input buffers,
set inputs, invoke, read logits. A plain .tflite (no vocabulary) gets random inputs of the right
dtype and shape once, as TFLite's benchmark_model does, and times set + invoke + read.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

import numpy as np

from edge_slm.common.cli import DEFAULT_RUNS, DEFAULT_WARMUP, warn
from edge_slm.common.documents import memory_mb
from edge_slm.common.progress import Progress

from .work import work_summary

# Used when --bench gets no texts: movie-review sentences of typical SST-2 length.
SAMPLE_TEXTS = (
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish , and the script assumes "
    "that not only would subtlety be lost on the target audience , but that it 's also too "
    "stupid to realize that they 've already seen this exact same movie a hundred times",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the "
    "production 's austere locales .",
    "a sometimes tedious film .",
    "there is a freedom to watching stunts that are this crude , this fast-paced and this insane .",
    "the film is strictly routine .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious "
    "look at young women .",
    "this is a film well worth seeing , talking and singing heads and all .",
    "what really surprises about wisegirls is its low-key quality and genuine tenderness .",
    "it 's slow -- very , very slow .",
)


class Runnable(Protocol):
    """What the timed loop drives: the device's Model, and edge-bench's TF baseline model."""

    tokenizer: Optional[object]  # None: a plain .tflite, fed random inputs
    init_seconds: float
    file_bytes: Optional[int]    # the model file's size; None for a model that lives only in memory
    run_length: int              # the sequence length the prepared request runs at
    sequence: object             # engine.SequenceBuffers: how long each request runs
    mac_counter: Optional[object]  # work.MacCounter of the graph, None: not counted
    resizes: int                 # input resizes so far (a length-aware graph, when the length changes)
    resize_seconds: float

    def prepare(self, text: str) -> int: ...

    def run_prepared(self) -> np.ndarray: ...

    def fill_random(self, rng: np.random.Generator) -> None: ...


class Benchmark:
    def __init__(self, model: Runnable, texts=None, seed: int = 0):
        self.model = model
        self.uses_text = model.tokenizer is not None
        self.texts = list(texts or SAMPLE_TEXTS) if self.uses_text else []
        self.first_inference_ms = None
        self.run_lengths: list = []
        self.warmup_runs = 0
        self._cursor = 0
        if not self.uses_text:
            model.fill_random(np.random.default_rng(seed))

    def _next_text(self) -> str:
        text = self.texts[self._cursor % len(self.texts)]
        self._cursor += 1
        return text

    def warm(self, warmup: int = DEFAULT_WARMUP) -> None:
        """First inference (timed on its own: caches, allocation, XNNPACK packing) and warm-up."""
        start = time.perf_counter()
        self._step()
        self.first_inference_ms = (time.perf_counter() - start) * 1e3
        for _ in range(warmup):
            self._step()
        self.warmup_runs = warmup
        self._cursor = 0  # the timed loop takes the texts in order from the first

    def _step(self) -> None:
        if self.uses_text:
            self.model.prepare(self._next_text())
        self.model.run_prepared()

    def measure(self, runs: Optional[int] = None, min_seconds: Optional[float] = None,
                progress: Optional[Progress] = None) -> dict:
        """Timed loop: at least `runs` iterations and at least `min_seconds`."""
        if runs is None and min_seconds is None:
            runs = DEFAULT_RUNS
        runs = runs or 1
        min_seconds = min_seconds or 0.0
        model = self.model
        prepare_ns = []
        total_ns = []
        tokens = []
        lengths = []
        resizes_before, resize_seconds_before = model.resizes, model.resize_seconds
        memory_before = memory_mb()
        clock = time.perf_counter_ns
        # The window on this machine's monotonic clock: a meter read by another machine (edge-bench
        # --meter-on workstation) maps it onto its own clock.
        window_start = time.monotonic()
        loop_start = clock()
        deadline = loop_start + int(min_seconds * 1e9)
        while len(total_ns) < runs or clock() < deadline:
            t0 = clock()
            if self.uses_text:
                tokens.append(model.prepare(self._next_text()))
            t1 = clock()
            model.run_prepared()
            t2 = clock()
            prepare_ns.append(t1 - t0)
            total_ns.append(t2 - t0)
            lengths.append(model.run_length)
            if progress is not None:
                progress.update()
        wall_s = (clock() - loop_start) / 1e9
        window_end = time.monotonic()
        self.run_lengths = lengths
        memory_after = memory_mb()
        latencies_ms = [ns / 1e6 for ns in total_ns]
        stats = latency_stats(latencies_ms)
        prepare_p50 = percentile(sorted(ns / 1e6 for ns in prepare_ns), 50)
        return {
            "inputs": "text" if self.uses_text else "random",
            "distinct_texts": len(self.texts) if self.uses_text else None,
            "runs": len(total_ns),
            "warmup_runs": self.warmup_runs,
            "wall_seconds": wall_s,
            "window_monotonic_s": [round(window_start, 6), round(window_end, 6)],
            "throughput_per_s": len(total_ns) / wall_s if wall_s > 0 else None,
            "latency_ms": stats,
            "prepare_ms_p50": prepare_p50,
            "prepare_share_of_p50": prepare_p50 / stats["p50"] if stats["p50"] else None,
            "first_inference_ms": self.first_inference_ms,
            "init_ms": model.init_seconds * 1e3,
            "memory": {
                "rss_before_loop_mb": memory_before["rss_mb"],
                "rss_after_loop_mb": memory_after["rss_mb"],
                "rss_growth_mb": round(memory_after["rss_mb"] - memory_before["rss_mb"], 2),
                "peak_rss_mb": memory_after["peak_rss_mb"],
            },
            "model_file_bytes": model.file_bytes,
            "sequence": {**sequence_summary(model.sequence, tokens or lengths, lengths),
                         "resizes": model.resizes - resizes_before,
                         "resize_ms_total": round((model.resize_seconds - resize_seconds_before) * 1e3, 3)},
            "latencies_ms": [round(x, 4) for x in latencies_ms],
        }


def sequence_summary(buffers, tokens: list, lengths: list) -> dict:
    """How long the timed requests were: real tokens, and the length each ran at (its own, or
    padded to --seq-len / a fixed-length graph's length)."""
    policy = "own length" if buffers.pad_to is None else f"padded to {buffers.pad_to}"
    return {"graph": "dynamic" if buffers.dynamic else "fixed", "max_len": buffers.max_len, "lengths": policy,
            "tokens": distribution(tokens), "run_length": distribution(lengths)}


def distribution(values: list) -> dict:
    ordered = sorted(values)
    return {"mean": sum(ordered) / len(ordered), "p50": percentile(ordered, 50), "p90": percentile(ordered, 90),
            "min": ordered[0], "max": ordered[-1]}


def percentile(sorted_values: list, q: float) -> float:
    """Linear interpolation, as numpy.percentile's default (which costs ~1.3 MB RSS to import)."""
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_stats(latencies_ms: list) -> dict:
    ordered = sorted(latencies_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    variance = sum((x - mean) ** 2 for x in ordered) / (n - 1) if n > 1 else 0.0
    return {
        "p50": percentile(ordered, 50), "p90": percentile(ordered, 90), "p99": percentile(ordered, 99),
        "mean": mean, "std": variance ** 0.5, "min": ordered[0], "max": ordered[-1],
    }


def run_benchmark(model: Runnable, texts=None, warmup: int = DEFAULT_WARMUP, runs: Optional[int] = None,
                  min_seconds: Optional[float] = None, progress: Optional[Progress] = None,
                  around_loop: Optional[Callable] = None):
    """Warm up, then time the loop; returns (stats, energy or None).

    `around_loop(loop)` wraps only the timed loop (energy metering): it calls loop(), which
    returns (runs, stats), and itself returns (energy, stats).
    """
    bench = Benchmark(model, texts)
    bench.warm(warmup)

    def loop():
        stats = bench.measure(runs=runs, min_seconds=min_seconds, progress=progress)
        return stats["runs"], stats

    if around_loop is None:
        stats, energy = loop()[1], None
    else:
        energy, stats = around_loop(loop)
    # After the loop and outside the metered window: counting runs the graph once per length.
    counter = model.mac_counter
    stats["work"] = work_summary(counter, bench.run_lengths, stats["latencies_ms"]) if counter else None
    return stats, energy


def energy_around_loop(meter: str, port: str, baseline_seconds: float, samples_csv: Optional[str] = None) -> Callable:
    """The `around_loop` of run_benchmark that meters the timed loop's energy."""
    # Deferred: pyserial and the sampler stay off the benchmark path of runs without a meter.
    from edge_slm.power.session import measure_workload

    def around(loop):
        return measure_workload(loop, meter=meter, port=port, baseline_s=baseline_seconds,
                                samples_csv=samples_csv, warn=warn)

    return around
