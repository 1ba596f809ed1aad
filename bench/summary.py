"""The figures of a results row (summarize), and the recommendation under constraints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, accuracy_withheld
from edge_slm.common.errors import EdgeError

from .plan import ARTIFACT, BASELINE, artifact_metadata, source_identity

LATENCY_STATS = ("p50", "p90", "p99")
BUSY_SHARE = 0.10  # other processes using this share of the CPU during a run make its figures suspect


INT8_QUANTS = ("dynamic", "int8")  # the artifacts whose speed depends on the CPU's int8 instructions


def speed_ratio_text(ratio: float) -> str:
    """A speed ratio (reference time / this time) in words: 1.32 -> "1.32x faster", 0.76 -> "1.32x slower"."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def three_figures(value: Optional[float]) -> str:
    """Three significant figures, trailing zeros kept: 0.0300, 4.10, 12.3, 764 (ms, mJ)."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:#.3g}"


# ---- figures of a row ----------------------------------------------------------------------------

@dataclass
class RunSummary:
    """The figures of one results row, with the caveats that qualify them."""

    key: str
    kind: str
    label: str
    model: str
    quant: str                      # dynamic, fp32, ... ; "TF fp32" for a baseline
    mode: Optional[str]             # baseline: tf.function | eager
    threads: int
    backend: str                    # e.g. "litert 2.3.0", "tensorflow 2.21.0 tf.function"
    status: str
    error: Optional[str]
    artifact: str
    source: Optional[str]           # source identity (artifacts with metadata and baselines)
    random_weights: Optional[bool]  # None: a plain .tflite, nobody knows
    accuracy: Optional[float]       # only for trained weights on labelled data; never for random weights
    accuracy_text: str
    latency: Optional[dict] = None  # p50, p90, p99, mean, std, min, max (ms)
    latencies_ms: list = field(default_factory=list)
    runs: Optional[int] = None
    init_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    import_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    model_bytes: Optional[int] = None  # artifact file; baseline: fp32 parameter bytes
    energy_mj: Optional[float] = None
    energy_uncertainty_mj: Optional[float] = None
    energy_text: str = "not measured (no meter)"
    emulated: Optional[bool] = None
    energy_partial: bool = False
    energy_relative_uncertainty: Optional[float] = None
    energy_needed_window_s: Optional[float] = None  # the meter's advice: a window this long gives +-2 %
    other_cpu_share: Optional[float] = None  # CPU used by other processes during the run, 0..1
    agreement: Optional[dict] = None   # baseline: its logits against the artifact's
    conversion_cosine: Optional[float] = None  # the converter's own check of the artifact against TF
    host: Optional[dict] = None
    warnings: list = field(default_factory=list)
    device: Optional[str] = None    # edge-bench --device: the board it ran on (None: the study's host)
    run_label: str = ""             # the label without the device: the same run on every board
    lengths: Optional[str] = None          # "own" | "max" (with --data), None: the longest
    lengths_text: str = "—"                # e.g. "own (mean 25.1 tokens)", "padded to 128"
    macs_per_inference: Optional[float] = None  # counted from the graph at the lengths it ran
    gops_per_s: Optional[float] = None
    weight_bytes: Optional[int] = None  # read by the matrix ops on every inference
    weight_gb_per_s: Optional[float] = None  # that traffic at the run's speed, if no cache holds the weights

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(row: dict) -> RunSummary:
    result = row.get("result") or {}
    kind = row["kind"]
    if kind == BASELINE:
        model_info = result.get("model") or {}
        meta = model_info.get("metadata") or _metadata_of(row["artifact"]) or {}
        name = (meta.get("model") or {}).get("name") or Path(row["artifact"]).stem
        quant = "TF fp32"
        framework = result.get("framework") or {}
        backend = f"tensorflow {framework.get('tensorflow', '?')} {row['mode']}"
        random_weights = model_info.get("random_weights", meta.get("random_weights"))
        label = f"{name} TF fp32 {row['mode']}, {row['threads']} thr"
    else:
        meta = ((result.get("model") or {}).get("metadata")) or _metadata_of(row["artifact"]) or {}
        name = (meta.get("model") or {}).get("name") or Path(row["artifact"]).stem
        # No metadata: a plain .tflite when it ran; when it failed, nobody knows what it is.
        quant = meta.get("quantization") or ("plain .tflite" if result else "?")
        backend_info = result.get("backend") or {}
        backend = (f"{backend_info['name']} {backend_info['version']}" if backend_info
                   else row["backend"])
        random_weights = meta.get("random_weights") if meta else None
        label = f"{name if meta else Path(row['artifact']).name}{' ' + quant if meta else ''}, {row['threads']} thr"
        if row["backend"] != "auto":
            label += f", {row['backend']}"
    if row.get("lengths"):
        label += ", own lengths" if row["lengths"] == "own" else ", max length"
    accuracy, accuracy_text = _accuracy(result, row, random_weights)
    device = row.get("device")
    # A device's row holds what its probe found (glibc, free disk) besides what the run saw.
    host = {**(row.get("host") or {}), **(result.get("host") or {})} or None
    if host and host.get("emulated"):  # the label goes into every table and plot with the run's timings
        label += " (emulated CPU)"
    summary = RunSummary(
        key=row["key"], kind=kind, label=label, model=name, quant=quant, mode=row.get("mode"), threads=row["threads"],
        backend=backend, status=row["status"], error=row.get("error"), artifact=row["artifact"],
        source=row.get("source") or (source_identity(meta) if meta.get("source") else None),
        random_weights=random_weights, accuracy=accuracy, accuracy_text=accuracy_text,
        agreement=result.get("agreement"), other_cpu_share=row.get("other_cpu_share"),
        conversion_cosine=(meta.get("validation") or {}).get("mean_cosine"),
        host=host,
        warnings=list(row.get("warnings") or []), device=device, run_label=label)
    if device:
        summary.label = f"{label} @ {device}"
    bench = result.get("benchmark")
    if bench:
        summary.latency = dict(bench["latency_ms"])
        summary.latencies_ms = list(bench.get("latencies_ms") or [])
        summary.runs = bench.get("runs")
        summary.init_ms = bench.get("init_ms")
        summary.first_inference_ms = bench.get("first_inference_ms")
        summary.import_ms = bench.get("import_ms")
        summary.peak_rss_mb = (bench.get("memory") or {}).get("peak_rss_mb")
        summary.model_bytes = bench.get("parameter_bytes") if kind == BASELINE else bench.get("model_file_bytes")
        summary.lengths = row.get("lengths")
        sequence = bench.get("sequence")
        if sequence:
            summary.lengths_text = (f"own (mean {sequence['tokens']['mean']:.1f} tokens)"
                                    if sequence["lengths"] == "own length" else sequence["lengths"])
        work = bench.get("work") or {}
        summary.macs_per_inference, summary.gops_per_s = work.get("macs_per_inference"), work.get("gops_per_s")
        summary.weight_bytes, summary.weight_gb_per_s = (work.get("weight_bytes_per_inference"),
                                                         work.get("weight_gb_per_s"))
    _energy(summary, result.get("energy"), row)
    return summary


def _metadata_of(path: str) -> Optional[dict]:
    """A failed run has no result document: name it from the artifact, if it is still readable."""
    return artifact_metadata(path) if Path(path).is_file() else None


def _accuracy(result: dict, row: dict, random_weights: Optional[bool]):
    """(accuracy or None, the text to show). Random weights never yield a number."""
    if accuracy_withheld(random_weights):
        return None, RANDOM_WEIGHTS_ACCURACY
    evaluation = result.get("evaluation")
    if evaluation is None:
        if row["status"] != "ok":
            return None, "not measured (run failed)"
        if not (row.get("settings") or {}).get("data"):
            return None, "not measured (no --data)"
        if random_weights is None and row["kind"] == ARTIFACT:
            return None, "not measured (plain .tflite: no tokenizer)"
        return None, "not measured (the data has no labels)"
    status = evaluation.get("status")
    if status == RANDOM_WEIGHTS_ACCURACY:
        return None, RANDOM_WEIGHTS_ACCURACY
    if status != "ok":
        return None, str(status)
    accuracy = float(evaluation["accuracy"])
    text = f"{accuracy * 100:.1f} % ({evaluation['correct']}/{evaluation['examples']})"
    if evaluation.get("calibrated_on_texts"):  # the artifact was calibrated on some of the --data texts
        text += f" IN-SAMPLE: calibrated on {evaluation['calibrated_on_texts']} of these texts"
    return accuracy, text


def _energy(summary: RunSummary, energy: Optional[dict], row: dict) -> None:
    if energy is None:
        meter = (row.get("settings") or {}).get("meter")
        summary.energy_text = "not measured (run failed)" if meter and row["status"] != "ok" else (
            "not measured (no meter)" if not meter else "not measured")
        return
    summary.emulated = bool(energy.get("emulated"))
    summary.energy_partial = bool(energy.get("partial"))
    summary.energy_relative_uncertainty = energy.get("relative_uncertainty")
    summary.energy_needed_window_s = energy.get("needed_window_s")
    tag = " (emulated)" if summary.emulated else ""
    value = energy.get("energy_per_inference_mj")
    if value is None:
        summary.energy_text = f"not measured{tag}"
        return
    summary.energy_mj = float(value)
    summary.energy_uncertainty_mj = energy.get("uncertainty_mj")
    uncertainty = "" if summary.energy_uncertainty_mj is None else f" ± {three_figures(summary.energy_uncertainty_mj)}"
    summary.energy_text = (f"{three_figures(summary.energy_mj)}{uncertainty} mJ{tag}"
                           + (" PARTIAL (meter lost mid-run)" if summary.energy_partial else ""))


def baseline_for(summary: RunSummary, summaries: list, mode: str = "tf.function") -> Optional[RunSummary]:
    """The successful TF baseline of an artifact's source model at the same thread count and lengths."""
    if summary.kind != ARTIFACT or summary.source is None:
        return None
    for other in summaries:
        if (other.kind == BASELINE and other.status == "ok" and other.source == summary.source
                and other.threads == summary.threads and other.mode == mode and other.device == summary.device
                and other.lengths == summary.lengths):
            return other
    return None


def own_vs_max(summaries: list) -> list:
    """Pairs of runs (an artifact, or a baseline) measured at the data's own lengths and padded to
    the longest: what serving each request at its own length saves."""
    pairs = []
    for own in summaries:
        if own.lengths != "own" or own.status != "ok":
            continue
        stem = own.key.rsplit("|len=", 1)[0]
        padded = next((s for s in summaries if s.lengths == "max" and s.status == "ok"
                       and s.key.rsplit("|len=", 1)[0] == stem), None)
        if padded is not None:
            pairs.append({"own": own, "max": padded, "speedup": padded.latency["mean"] / own.latency["mean"]})
    return pairs


# ---- the recommendation --------------------------------------------------------------------------

@dataclass(frozen=True)
class Constraints:
    max_latency_ms: Optional[float] = None
    max_memory_mb: Optional[float] = None
    max_energy_mj: Optional[float] = None
    min_accuracy: Optional[float] = None  # a fraction, 0..1
    latency_stat: str = "p50"             # which latency figure max_latency_ms bounds

    def check(self) -> None:
        for name, value in (("--max-latency-ms", self.max_latency_ms), ("--max-memory-mb", self.max_memory_mb),
                            ("--max-energy-mj", self.max_energy_mj)):
            if value is not None and value <= 0:
                raise EdgeError(f"{name} must be positive, got {value:g}", f"e.g. {name} 50")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise EdgeError(f"--min-accuracy must be within 0..1, got {self.min_accuracy:g}",
                            "a fraction (0.88) or a percentage (88%)")
        if self.latency_stat not in LATENCY_STATS:
            raise EdgeError(f"unknown latency statistic {self.latency_stat!r}", f"one of {', '.join(LATENCY_STATS)}")

    def describe(self) -> list:
        texts = []
        if self.max_latency_ms is not None:
            texts.append(f"{self.latency_stat} latency <= {self.max_latency_ms:g} ms")
        if self.max_memory_mb is not None:
            texts.append(f"peak RSS <= {self.max_memory_mb:g} MB")
        if self.max_energy_mj is not None:
            texts.append(f"energy <= {self.max_energy_mj:g} mJ/inference")
        if self.min_accuracy is not None:
            texts.append(f"accuracy >= {self.min_accuracy * 100:g} %")
        return texts


def parse_accuracy(text: Optional[str]) -> Optional[float]:
    """'0.88' or '88%' -> 0.88; a bare number above 1 is ambiguous and refused."""
    if text is None:
        return None
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise EdgeError(f"bad --min-accuracy {text!r}", "a fraction (0.88) or a percentage (88%)") from None
    if not 0 <= value <= 1:
        raise EdgeError(f"--min-accuracy {text} is outside 0..1", "a fraction (0.88) or a percentage (88%)")
    return value


def _checks(s: RunSummary, c: Constraints) -> list:
    """[(constraint, met, the figure it was judged on)] for one candidate."""
    checks = []
    if c.max_latency_ms is not None:
        value = s.latency[c.latency_stat]
        checks.append((f"{c.latency_stat} latency <= {c.max_latency_ms:g} ms", value <= c.max_latency_ms,
                       f"{c.latency_stat} {three_figures(value)} ms"))
    if c.max_memory_mb is not None:
        checks.append((f"peak RSS <= {c.max_memory_mb:g} MB", s.peak_rss_mb <= c.max_memory_mb,
                       f"peak RSS {s.peak_rss_mb:.1f} MB"))
    if c.max_energy_mj is not None:
        met = s.energy_mj is not None and s.energy_mj <= c.max_energy_mj
        checks.append((f"energy <= {c.max_energy_mj:g} mJ/inference", met, f"energy {s.energy_text}"))
    if c.min_accuracy is not None:
        met = s.accuracy is not None and s.accuracy >= c.min_accuracy
        checks.append((f"accuracy >= {c.min_accuracy * 100:g} %", met, f"accuracy {s.accuracy_text}"))
    return checks


def recommend(summaries: list, constraints: Constraints = Constraints()) -> dict:
    """The best artifact run that meets every constraint, and why; or which constraint nothing meets.

    Ranking among those that meet them: highest accuracy when every one has a measured accuracy
    (ties: lower latency), else lowest latency (accuracy unknown, e.g. random weights). TF
    baselines are references, not candidates: they do not run on the device."""
    c = constraints
    stat = c.latency_stat
    candidates = [s for s in summaries if s.kind == ARTIFACT and s.status == "ok" and s.latency]
    result = {"constraints": c.describe(), "latency_stat": stat, "candidates": len(candidates),
              "best": None, "unmet": [], "verdicts": []}
    if not candidates:
        result.update(status="none", reason="no artifact run finished successfully, so there is nothing to recommend.")
        return result
    verdicts = []
    for s in candidates:
        checks = _checks(s, c)
        verdicts.append({"label": s.label, "artifact": s.artifact, "meets_all": all(ok for _, ok, _ in checks),
                         "failed": [f"{name} ({figure})" for name, ok, figure in checks if not ok]})
    result["verdicts"] = verdicts
    feasible = [s for s, v in zip(candidates, verdicts) if v["meets_all"]]
    if not feasible:
        names = [name for name, _, _ in _checks(candidates[0], c)]
        unmet = [name for i, name in enumerate(names) if not any(_checks(s, c)[i][1] for s in candidates)]
        result["unmet"] = unmet
        if unmet:
            why = "; ".join(f"nothing meets {name}: {_closest(candidates, name, c)}" for name in unmet) + "."
        else:
            closest = min(zip(candidates, verdicts), key=lambda sv: (len(sv[1]["failed"]), sv[0].latency[stat]))
            why = (f"each constraint is met by some artifact, but none meets all together; closest: "
                   f"{closest[0].label}, which fails {', '.join(closest[1]['failed'])}.")
        result.update(status="none", reason=why)
        return result
    measured = all(s.accuracy is not None for s in feasible)
    if measured:
        best = min(feasible, key=lambda s: (-s.accuracy, s.latency[stat]))
        rule, tail = f"the highest accuracy ({best.accuracy_text})", ""
    else:
        best = min(feasible, key=lambda s: s.latency[stat])
        unknown = sorted({s.accuracy_text for s in feasible if s.accuracy is None})
        rule = f"the lowest {stat} latency"
        tail = f" Accuracy is not known for every candidate ({'; '.join(unknown)}), so latency decides."
    scope = (f"of the {len(feasible)} of {len(candidates)} artifact runs that meet {' and '.join(c.describe())}"
             if c.describe() else f"of the {len(candidates)} artifact runs (no constraints given)")
    figures = [f"{stat} {three_figures(best.latency[stat])} ms", f"peak RSS {best.peak_rss_mb:.1f} MB",
               f"{best.model_bytes / 1e6:.1f} MB file" if best.model_bytes else None,
               f"energy {best.energy_text}" if best.energy_mj is not None else None,
               f"accuracy {best.accuracy_text}"]
    result.update(status="ok", best={"label": best.label, "artifact": best.artifact, "threads": best.threads,
                                     "backend": best.backend, "quant": best.quant, "host": best.host},
                  reason=f"{best.label} has {rule} {scope}: " + ", ".join(f for f in figures if f) + "." + tail)
    return result


def _closest(candidates: list, name: str, c: Constraints) -> str:
    """The candidate nearest to a constraint nobody meets, with its figure."""
    if name.startswith(c.latency_stat):
        best = min(candidates, key=lambda s: s.latency[c.latency_stat])
        return f"the fastest is {best.label} at {three_figures(best.latency[c.latency_stat])} ms"
    if name.startswith("peak RSS"):
        best = min(candidates, key=lambda s: s.peak_rss_mb)
        return f"the leanest is {best.label} at {best.peak_rss_mb:.1f} MB"
    if name.startswith("energy"):
        measured = [s for s in candidates if s.energy_mj is not None]
        if not measured:
            return "energy was not measured (run the study with --meter)"
        best = min(measured, key=lambda s: s.energy_mj)
        return f"the most frugal is {best.label} at {best.energy_text}"
    measured = [s for s in candidates if s.accuracy is not None]
    if not measured:
        texts = sorted({s.accuracy_text for s in candidates})
        return f"no artifact has a measured accuracy ({'; '.join(texts)})"
    best = max(measured, key=lambda s: s.accuracy)
    return f"the most accurate is {best.label} at {best.accuracy_text}"
