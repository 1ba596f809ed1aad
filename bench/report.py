"""The study report: Markdown and PNG plots from a results.jsonl (`edge-bench report FILE`).

write_report() reads the rows (the last row of each run wins), summarizes them (study.summarize),
and writes report.md plus four plots beside it:
  accuracy_latency.png      accuracy vs p50 latency with the artifacts' Pareto front; when no run
                            has a measured accuracy (random weights, no --data) a p50/p90/p99
                            latency chart that says why accuracy is absent, never fake points
  energy.png                energy per inference with its uncertainty ("EMULATED" in the title
                            and beside every emulated figure); absent when no run had a meter
  memory.png                peak RSS and model size per run
  latency_distribution.png  the distribution of every run's timed latencies
Every caveat (random weights, emulated meter, backend, host-only TF baselines, failed runs) is
written beside the numbers it qualifies. matplotlib is imported only here, lazily, with the Agg
backend (pip install 'edge-slm[report]'); without it the Markdown is still written, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edge_slm.common.documents import (NO_INT8_DOT_PRODUCT, RANDOM_WEIGHTS_ACCURACY, describe_caches,
                                      describe_emulator, lacks_int8_dot_product, utc_now)
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_text, prepare_out_dir

from .plan import ARTIFACT, BASELINE
from .plots import PLOT_FILES, render_plots
from .store import latest_rows, read_rows
from .summary import (BUSY_SHARE, INT8_QUANTS, Constraints, baseline_for, own_vs_max, recommend, speed_ratio_text,
                      summarize, three_figures)

REPORT_FILE = "report.md"


@dataclass
class ReportFiles:
    markdown: Path
    plots: dict                                   # name -> Path of each PNG written
    recommendation: dict
    summaries: list
    notes: list = field(default_factory=list)     # e.g. why plots are missing
    per_device: dict = field(default_factory=dict)  # edge-bench --device: device -> its recommendation


def write_report(results_path, out_dir=None, constraints: Optional[Constraints] = None,
                 warn: Callable[[str], None] = lambda message: None) -> ReportFiles:
    results_path = Path(results_path)
    constraints = constraints or Constraints()
    constraints.check()
    rows = latest_rows(read_rows(results_path, warn=warn))
    if not rows:
        raise EdgeError(f"{results_path} holds no runs", "run edge-bench ARTIFACT... -o DIR first")
    out = prepare_out_dir(out_dir if out_dir is not None else results_path.parent)
    summaries = _ordered(_distinct_labels([summarize(row) for row in rows]))
    recommendation = recommend(summaries, constraints)
    per_device = {device: recommend([s for s in summaries if s.device == device], constraints)
                  for device in devices_of(summaries)}
    notes = []
    try:
        plots = render_plots(summaries, out)
    except ModuleNotFoundError as e:
        if e.name != "matplotlib" and not str(e.name).startswith("matplotlib"):
            raise
        plots = {}
        notes.append("plots were not drawn: matplotlib is not installed (pip install 'edge-slm[report]', "
                     "then `edge-bench report` again)")
        warn(notes[-1])
    for name, file_name in PLOT_FILES.items():
        if name not in plots:  # a plot of an earlier report that this one does not have (e.g. no meter now)
            (out / file_name).unlink(missing_ok=True)
    markdown = render_markdown(summaries, rows, recommendation, plots, results_path, out, notes, per_device)
    path = out / REPORT_FILE
    atomic_write_text(path, markdown)
    return ReportFiles(path, plots, recommendation, summaries, notes, per_device)


def _distinct_labels(summaries: list) -> list:
    """Two runs with one label (copies of a model in two files) get their file names added."""
    counts = {}
    for s in summaries:
        counts[s.label] = counts.get(s.label, 0) + 1
    for s in summaries:
        if counts[s.label] > 1 and s.kind == ARTIFACT:
            s.label = f"{s.label} [{Path(s.artifact).name}]"
    return summaries


def _ordered(summaries: list) -> list:
    """By model, artifacts before their baselines, then threads: related runs side by side."""
    models = list(dict.fromkeys(s.model for s in summaries))
    return sorted(summaries, key=lambda s: (models.index(s.model), s.kind == BASELINE, s.quant, s.mode or "",
                                            s.threads, s.label))


# ---- Markdown ------------------------------------------------------------------------------------

def _mb(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.1f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(summaries: list, rows: list, recommendation: dict, plots: dict, results_path: Path,
                    out: Path, notes: list, per_device: Optional[dict] = None) -> str:
    failed = [s for s in summaries if s.status != "ok"]
    artifacts = [s for s in summaries if s.kind == ARTIFACT]
    baselines = [s for s in summaries if s.kind == BASELINE]
    started = min(row["started"] for row in rows)
    finished = max(row["finished"] for row in rows)
    lines = [
        "# edge-bench report",
        "",
        f"Results `{results_path}`: {len(summaries)} runs ({len(artifacts)} artifact, {len(baselines)} TF baseline"
        f"{f', {len(failed)} failed' if failed else ''}), measured {started} – {finished}. "
        f"Report written {utc_now()}; regenerate it with `edge-bench report {results_path}`.",
        "",
    ]
    if per_device:  # a study on boards: one section per board, then the boards side by side
        lines += _devices_section(summaries, list(per_device))
        lines += _caveats_section(summaries, rows)
        lines += _per_device_sections(summaries, list(per_device))
        lines += _baseline_section(summaries)
        lines += _cross_device_section(summaries, per_device, recommendation["constraints"])
    else:
        lines += _host_section(summaries, rows)
        lines += _caveats_section(summaries, rows)
        lines += _results_section(summaries)
        lines += _lengths_section(summaries)
        lines += _quantization_section(summaries)
        lines += _baseline_section(summaries)
        lines += _recommendation_section(recommendation)
    lines += _figures_section(summaries, plots, out, notes)
    if failed:
        lines += ["## Failed runs", "", "| run | artifact | error |", "|---|---|---|"]
        lines += [f"| {_cell(s.label)} | `{_cell(s.artifact)}` | {_cell(s.error)} |" for s in failed]
        lines.append("")
    lines += _method_section(rows)
    return "\n".join(lines) + "\n"


def _host_section(summaries: list, rows: list) -> list:
    hosts = []
    for s in summaries:
        if s.host and s.host not in hosts:
            hosts.append(s.host)
    lines = ["## Host", ""]
    if not hosts:
        return lines + ["Unknown (no run recorded host facts).", ""]
    host = hosts[0]
    memory = f"{host['memory_total_mb'] / 1024:.1f} GB" if host.get("memory_total_mb") else "unknown"
    lines += [
        "| | |", "|---|---|",
        f"| CPU | {_cell(host.get('cpu_model'))} ({host.get('machine')}; {host.get('cores_logical')} logical cores, "
        f"{host.get('cores_usable')} usable)"
        + (f"; **emulated** by {_cell(describe_emulator(host))}" if host.get("emulated") else "") + " |",
        f"| memory | {memory} |",
        f"| OS | {_cell(host.get('os'))} |",
        f"| board | {_cell(host.get('board') or 'not a board that names itself (/proc/device-tree/model absent)')} |",
        f"| Python | {host.get('python')} ({host.get('python_implementation')}) |",
        f"| int8 instructions | {_int8_instructions(host)} |",
    ]
    runtimes = sorted({s.backend for s in summaries if s.kind == ARTIFACT and s.status == "ok"})
    tf = sorted({s.backend for s in summaries if s.kind == BASELINE and s.status == "ok"})
    if runtimes:
        lines.append(f"| artifacts ran on | {', '.join(runtimes)} |")
    if tf:
        lines.append(f"| TF baselines ran on | {', '.join(tf)} (host only) |")
    threads = sorted({s.threads for s in summaries})
    lines += [f"| threads | {', '.join(map(str, threads))} |", ""]
    if len(hosts) > 1:
        lines += [f"**Caution: the runs come from {len(hosts)} different hosts** (e.g. "
                  f"{'; '.join(_cell(h.get('cpu_model')) for h in hosts[:3])}); figures from different hosts "
                  "are not comparable.", ""]
    return lines


def _int8_instructions(host: dict) -> str:
    features = host.get("cpu_features")
    if not features or features.get("int8_flags") is None:
        return "not recorded"
    flags = ", ".join(features["int8_flags"]) or "none of those int8 speed depends on"
    return flags + ("" if features["int8_dot_product"] else f" — **{NO_INT8_DOT_PRODUCT}**")


def _int8_mark(quant: str, host: Optional[dict]) -> str:
    """Beside an int8 or dynamic-int8 figure measured on a CPU without an int8 dot-product path."""
    return f" ({NO_INT8_DOT_PRODUCT})" if quant in INT8_QUANTS and lacks_int8_dot_product(host) else ""


def backend_ratios(summaries: list) -> list:
    """The measured p50 ratio of each pair of backends that ran one artifact at one thread count."""
    runs = {}
    for s in summaries:
        if s.kind == ARTIFACT and s.status == "ok" and s.latency:
            runs.setdefault((s.artifact, s.threads), []).append(s)
    found = []
    for (artifact, threads), same in runs.items():
        fastest = min(same, key=lambda s: s.latency["p50"])
        for other in same:
            if other is not fastest:
                ratio = fastest.latency["p50"] / other.latency["p50"]
                found.append(f"{other.backend} {speed_ratio_text(ratio)} than {fastest.backend} on "
                             f"{Path(artifact).name} at {threads} thread{'s' if threads != 1 else ''} "
                             f"(p50 {three_figures(other.latency['p50'])} vs "
                             f"{three_figures(fastest.latency['p50'])} ms)")
    return found


def quantization_ratios(summaries: list) -> list:
    """Each int8/dynamic artifact against the fp32 artifact of its source model, same threads and
    backend: whether the integer mode is the fast one is measured on this host, not assumed."""
    runs = [s for s in summaries if s.kind == ARTIFACT and s.status == "ok" and s.latency and s.source]
    found = []
    for s in runs:
        if s.quant not in INT8_QUANTS:
            continue
        fp32 = next((o for o in runs if o.quant == "fp32" and o.source == s.source and o.threads == s.threads
                     and o.backend == s.backend), None)
        if fp32 is not None:
            found.append(f"{s.model} {s.quant}: {speed_ratio_text(fp32.latency['p50'] / s.latency['p50'])} than "
                         f"fp32 at {s.threads} thread{'s' if s.threads != 1 else ''} (p50 "
                         f"{three_figures(s.latency['p50'])} vs {three_figures(fp32.latency['p50'])} ms)"
                         + _int8_mark(s.quant, s.host))
    return found


def _caveats_section(summaries: list, rows: list) -> list:
    items = []
    random = sorted({s.model for s in summaries if s.random_weights})
    if random:
        one = len(random) == 1
        items.append(f"**Random weights**: {', '.join(random)} {'has' if one else 'have'} random weights "
                     "(converted with --random-init, or offline with --random-init-if-offline), so accuracy is "
                     f"**{RANDOM_WEIGHTS_ACCURACY}** for {'it' if one else 'them'}, in every table and plot. "
                     "Latency, memory and energy depend on the architecture and the quantization, not on the "
                     "weights' values, so those figures stand.")
    emulators = sorted({describe_emulator(s.host) for s in summaries if s.host and s.host.get("emulated")})
    if emulators:
        items.append(f"**Emulated CPU** ({'; '.join(emulators)}): every latency, throughput, init and energy figure "
                     "of these runs was measured under emulation, which translates each instruction of the "
                     "emulated CPU; it is not that device's speed. Only the answers (labels, logits, accuracy) "
                     "carry over to a board.")
    emulated = [s for s in summaries if s.emulated]
    if emulated:
        items.append("**Emulated meter**: every energy figure marked *(emulated)* was measured through "
                     "`edge-power emulate`, a pseudo-terminal speaking the real meter protocol whose power follows "
                     "CPU load. It exercises the measurement path end to end; it is not a device's power draw.")
    real = [s for s in summaries if s.emulated is False]
    if real:
        meters = sorted({row["settings"].get("meter") for row in rows if row["settings"].get("meter")})
        items.append(f"Energy figures without *(emulated)* come from a real meter ({', '.join(meters)}).")
    partial = [s.label for s in summaries if s.energy_partial]
    if partial:
        items.append(f"**Partial energy**: the meter was lost during {', '.join(partial)}; those figures cover "
                     "only part of the run.")
    backends = sorted({s.backend for s in summaries if s.kind == ARTIFACT and s.status == "ok"})
    if backends:
        ratios = backend_ratios(summaries)
        items.append(f"**Backend**: artifact figures are for {', '.join(backends)} (XNNPACK on CPU). Another "
                     "runtime on the same graph gives other figures"
                     + (f"; measured in this study: {'; '.join(ratios)}." if ratios else
                        " (this study ran one backend per artifact: `--backend litert,tflite-runtime` measures "
                        "both)."))
    slow_int8 = [s.label for s in summaries if s.status == "ok" and _int8_mark(s.quant, s.host)]
    if slow_int8:
        items.append(f"**No int8 dot-product path**: the CPU of {', '.join(slow_int8)} has none of avx512_vnni, "
                     "avx_vnni, amx_int8 (x86) or asimddp (ARM), so int8 matrix products run on wider multiplies "
                     "and int8/dynamic artifacts may be no faster than fp32 there; on a CPU with one of them the "
                     "same artifact can be several times faster. Those figures say so beside them.")
    if any(s.kind == BASELINE for s in summaries):
        items.append("**TF baselines** are the artifacts' source models in TensorFlow fp32 with transformers, run "
                     "on this host (the device path has only the TFLite interpreter); their peak RSS includes "
                     "TensorFlow and transformers themselves, which is what deploying them costs.")
    plain = sorted({s.model for s in summaries if s.kind == ARTIFACT and s.quant == "plain .tflite"})
    if plain:
        items.append(f"**Plain .tflite** ({', '.join(plain)}): no edge-slm metadata, so random inputs, no "
                     "accuracy, no TF baseline, and nothing is known about its weights.")
    busy = [s for s in summaries if s.status == "ok" and (s.other_cpu_share or 0) >= BUSY_SHARE]
    if busy:
        shares = [s.other_cpu_share * 100 for s in busy]
        items.append(f"**Busy host**: other processes used {min(shares):.0f}–{max(shares):.0f} % of the machine's "
                     "CPU "
                     f"during {len(busy)} run(s) ({', '.join(s.label for s in busy)}; column *other CPU*). Their "
                     "latency and energy are inflated, most for multi-threaded runs that need every core; "
                     "re-measure them when the host is idle: the same command with `--resume --retry-busy`.")
    failed = [s for s in summaries if s.status != "ok"]
    if failed:
        items.append(f"**{len(failed)} run(s) failed** and are listed under *Failed runs*; they are in no "
                     "table, plot or recommendation.")
    uncertain = [s for s in summaries if s.energy_relative_uncertainty is not None]
    if uncertain:
        low = min(s.energy_relative_uncertainty for s in uncertain) * 100
        high = max(s.energy_relative_uncertainty for s in uncertain) * 100
        needed = max((s.energy_needed_window_s or 0) for s in uncertain)
        tag = " (emulated meter)" if any(s.emulated for s in uncertain) else ""
        items.append(f"**Energy uncertainty**{tag} is ±{low:.1f}–{high:.1f} % per run (stated beside each figure); "
                     + (f"for ±2 % the meter needs timed windows of up to {needed:.0f} s (`--min-seconds`)."
                        if needed else "within the meter's ±2 % target."))
    other = sorted({w for s in summaries for w in s.warnings if not w.startswith("inference window")})
    for warning in other[:5]:
        items.append(f"Run warning: {_cell(warning)}")
    items.append("Timings are from a fresh process per run on a host whose other load is not controlled; "
                 "compare runs of one study, measured close in time, rather than figures across studies.")
    return ["## Caveats", ""] + [f"- {item}" for item in items] + [""]


def _results_section(summaries: list) -> list:
    lines = ["## Results", "",
             "Latency is per inference (tokenize + set inputs + invoke + read logits), batch 1, in ms.", "",
             "| run | backend | weights | accuracy | lengths | p50 ms | p90 ms | p99 ms | init ms | peak RSS MB "
             "| model MB | MACs / inference | GOP/s | weights MB / inference (GB/s) | energy / inference | other CPU |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in summaries:
        if s.status != "ok":
            continue
        weights = {True: "random", False: "trained", None: "unknown"}[s.random_weights]
        size = "—" if s.model_bytes is None else f"{s.model_bytes / 1e6:.1f}" + (" (fp32 params)"
                                                                               if s.kind == BASELINE else "")
        lat = s.latency
        lines.append(f"| {_cell(s.label + _int8_mark(s.quant, s.host))} | {_cell(s.backend)} | {weights} | "
                     f"{_cell(s.accuracy_text)} | {_cell(s.lengths_text)} | "
                     + " | ".join(three_figures(v) for v in (lat["p50"], lat["p90"], lat["p99"], s.init_ms)) + " | "
                     f"{_mb(s.peak_rss_mb)} | {size} | {_macs(s.macs_per_inference)} | {three_figures(s.gops_per_s)} | "
                     f"{_weights(s.weight_bytes, s.weight_gb_per_s)} | "
                     f"{_cell(s.energy_text)} | {_share(s.other_cpu_share)} |")
    return lines + ["", "weights = the bytes the matrix ops read on every inference, whatever its length; GB/s = "
                    "that traffic at the run's speed, which a CPU must stream from memory once the weights do not "
                    f"fit its caches{_caches_text(summaries)}. Short requests do little arithmetic per weight byte, "
                    "so there memory bandwidth, not GOP/s, can set the speed.",
                    "init = read + verify + load + allocate for an artifact; build + load weights + first "
                    "(tracing) call for a TF baseline (importing TensorFlow and transformers is extra, see the "
                    "baseline table). "
                    "other CPU = the share of the machine's CPU that other processes used during the run.", ""]


def _lengths_section(summaries: list) -> list:
    pairs = own_vs_max(summaries)
    if not pairs:
        return []
    intro = ("Each run with `--data` twice: every text at its own number of tokens (a length-aware artifact "
             "resizes its inputs per request; a fixed-length one cannot, and pads anyway) and padded to the "
             "artifact's longest sequence, as every request of a fixed-length artifact is. Mean latency per "
             "inference; MACs counted from the graph at the lengths it ran.")
    header = "| run | own lengths | mean ms own | mean ms padded | speed-up | MACs own | MACs padded |"
    cells = [(p["own"].label.replace(", own lengths", ""), p["own"].lengths_text,
              three_figures(p["own"].latency["mean"]), three_figures(p["max"].latency["mean"]),
              f"**{p['speedup']:.2f}x**", _macs(p["own"].macs_per_inference), _macs(p["max"].macs_per_inference))
             for p in pairs]
    return (["## At the data's own lengths and at the longest", "", intro, "", header, "|---|---|---:|---:|---:|---:|---:|"]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in cells] + [""])


def _macs(value: Optional[float]) -> str:
    return "—" if value is None else f"{value / 1e6:.1f} M"


def _weights(weight_bytes: Optional[int], gb_per_s: Optional[float]) -> str:
    if weight_bytes is None:
        return "—"
    return f"{weight_bytes / 1e6:.1f}" + (f" ({gb_per_s:.1f})" if gb_per_s is not None else "")


def _caches_text(summaries: list) -> str:
    """The caches of the CPUs the runs were on, e.g. " (AMD EPYC: L2 1 MB, L3 32 MB)"."""
    hosts = [s.host for s in summaries if s.host and describe_caches(s.host.get("cpu_caches"))]
    texts = {f"{host.get('cpu_model') or 'unknown CPU'}: {describe_caches(host['cpu_caches'])}" for host in hosts}
    return f" ({'; '.join(sorted(texts))})" if texts else ""


def _share(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"**{value * 100:.0f} %**" if value >= BUSY_SHARE else f"{value * 100:.0f} %"


def speedups(summaries: list) -> list:
    """Per artifact run with a TF baseline at the same threads: the ratios the report states."""
    found = []
    for s in summaries:
        if s.kind != ARTIFACT or s.status != "ok":
            continue
        for mode in ("tf.function", "eager"):
            base = baseline_for(s, summaries, mode)
            if base is None:
                continue
            found.append({"artifact": s, "baseline": base, "mode": mode,
                          "speedup": base.latency["p50"] / s.latency["p50"],
                          "memory_saving_mb": base.peak_rss_mb - s.peak_rss_mb,
                          "memory_ratio": base.peak_rss_mb / s.peak_rss_mb})
    return found


def _quantization_section(summaries: list) -> list:
    ratios = quantization_ratios(summaries)
    if not ratios:
        return []
    return (["## Integer against fp32 artifacts", "",
             "Same source model, threads and backend; measured in this study on this host (int8 speed depends on "
             "the CPU's int8 instructions, see *Host*).", ""] + [f"- {line}" for line in ratios] + [""])


def _baseline_section(summaries: list) -> list:
    ratios = speedups(summaries)
    baselines = [s for s in summaries if s.kind == BASELINE and s.status == "ok"]
    if not baselines:
        return ["## Against the TF fp32 baseline", "",
                "No TF baseline was measured (run the study with `--baseline` on the host).", ""]
    lines = ["## Against the TF fp32 baseline", "",
             "Each artifact against its own source model in TensorFlow fp32 at the same thread count (TF's "
             "intra- and inter-op pools both sized to it), same texts, same timed step "
             "(speed-up = baseline p50 / artifact p50).", "",
             "| artifact | baseline | p50 ms artifact | p50 ms TF | speed-up | peak RSS MB artifact | peak RSS MB TF "
             "| memory saving |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in ratios:
        a, b = r["artifact"], r["baseline"]
        lines.append(f"| {_cell(a.label + _int8_mark(a.quant, a.host))} | TF fp32 {r['mode']} | "
                     f"{three_figures(a.latency['p50'])} | "
                     f"{three_figures(b.latency['p50'])} | "
                     f"**{speed_ratio_text(r['speedup'])}** | {_mb(a.peak_rss_mb)} | "
                     f"{_mb(b.peak_rss_mb)} | {r['memory_saving_mb']:.0f} MB less ({r['memory_ratio']:.1f}x smaller) |")
    lines += ["", "| TF baseline | import TF ms | init ms | first inference ms | agreement with the artifact |",
              "|---|---:|---:|---:|---|"]
    for b in baselines:
        agreement = b.agreement
        text = ("—" if not agreement else f"logit cosine {agreement['mean_cosine']:.4f}, same label on "
                f"{agreement['label_agreement'] * 100:.0f} % of {agreement['texts']} texts")
        if agreement and b.conversion_cosine is not None:
            text += f" (the converter measured cosine {b.conversion_cosine:.4f} for the artifact against TF)"
        lines.append(f"| {_cell(b.label)} | " + " | ".join(three_figures(v) for v in (b.import_ms, b.init_ms,
                                                                                     b.first_inference_ms)) + " | "
                     f"{text} |")
    lines += ["", "Agreement compares the baseline's logits with the artifact's on the bench texts. Close to the "
              "converter's own check of the artifact against its TF model (in brackets), it shows the baseline runs "
              "the artifact's weights and the difference is quantization. Baseline init includes the call that traces "
              "the `tf.function`.", ""]
    return lines


def _constraints_line(given: list) -> str:
    return "Constraints: " + ("; ".join(given) if given else "none given (`--max-latency-ms`, `--max-memory-mb`, "
                                                             "`--max-energy-mj`, `--min-accuracy`)") + "."


def _recommendation_section(rec: dict) -> list:
    given = rec["constraints"]
    lines = ["## Recommendation", "", _constraints_line(given), ""]
    if rec["status"] == "ok":
        best = rec["best"]
        lines.append(f"**Recommended: {_cell(best['label'])}** (`{best['artifact']}`, {best['threads']} "
                     f"thread{'s' if best['threads'] != 1 else ''}, {best['backend']}). {_cell(rec['reason'])}"
                     + _int8_mark(best['quant'], best['host']))
    else:
        lines.append(f"**No artifact to recommend**: {_cell(rec['reason'])}")
    if given and rec["verdicts"]:
        lines += ["", "| candidate | meets all | fails |", "|---|---|---|"]
        for v in rec["verdicts"]:
            lines.append(f"| {_cell(v['label'])} | {'yes' if v['meets_all'] else 'no'} | "
                         f"{_cell('; '.join(v['failed']) or '—')} |")
    return lines + [""]


def _figures_section(summaries: list, plots: dict, out: Path, notes: list) -> list:
    lines = ["## Figures", ""]
    lines += [f"- {note}" for note in notes]
    captions = {
        "accuracy_latency": _accuracy_caption(summaries),
        "energy": "Energy per inference with its uncertainty (edge-power's attribution: integral of power above "
                  "idle over the timed loop)." + (" **Emulated meter**: every bar says so." if any(
                      s.emulated for s in summaries) else ""),
        "memory": "Peak resident memory of each run's process, and the model's size (file for an artifact, "
                  "fp32 parameters for a TF baseline).",
        "latency_distribution": "Distribution of every timed inference of each run (box: p25–p75, line: p50, "
                                "whiskers: p1–p99).",
        "devices": "Each artifact run on every board: one colour per model, one marker per board.",
    }
    for name, path in plots.items():
        lines += [f"![{name}]({path.relative_to(out) if path.is_relative_to(out) else path})", "",
                  captions[name], ""]
    if "energy" not in plots and plots:
        lines += ["No energy figure: no run was measured with a meter (`--meter ... --port ...`).", ""]
    return lines


def _accuracy_caption(summaries: list) -> str:
    measured = [s for s in summaries if s.status == "ok" and s.accuracy is not None]
    if measured:
        return "Accuracy against p50 latency; the dashed line is the Pareto front of the artifacts (none is " \
               "both faster and more accurate than a point on it)."
    reasons = sorted({s.accuracy_text for s in summaries if s.status == "ok"})
    return (f"No run has a measured accuracy ({'; '.join(reasons)}), so this chart shows latency only "
            "(p50 bar, p90 and p99 marks) instead of accuracy against latency.")


# ---- studies on devices (edge-bench --device) ----------------------------------------------------

def devices_of(summaries: list) -> list:
    """The devices of a study in the order they first appear (empty: a study on this host)."""
    return list(dict.fromkeys(s.device for s in summaries if s.device))


def _devices_section(summaries: list, devices: list) -> list:
    lines = ["## Devices", "",
             "| device | board / CPU | arch | cores | memory | OS | Python | glibc | runs ok / failed |",
             "|---|---|---|---:|---:|---|---|---|---|"]
    for device in devices:
        mine = [s for s in summaries if s.device == device]
        host = next((s.host for s in mine if s.host), None) or {}
        board = host.get("board") or host.get("cpu_model") or "unknown (never reached)"
        memory = f"{host['memory_total_mb'] / 1024:.1f} GB" if host.get("memory_total_mb") else "—"
        ok = sum(s.status == "ok" for s in mine)
        lines.append(f"| {_cell(device)} | {_cell(board)} | {host.get('machine') or '—'} | "
                     f"{host.get('cores_usable') or '—'} | {memory} | {_cell(host.get('os') or '—')} | "
                     f"{host.get('python') or '—'} | {host.get('glibc') or '—'} | {ok} / {len(mine) - ok} |")
    return lines + ["", "Each device ran its own copy of the artifacts (pushed over SSH, content-addressed by "
                    "graph SHA-256) in a virtualenv holding this edge-slm's wheel; rows carry the facts the "
                    "device reported about itself.", ""]


def _per_device_sections(summaries: list, devices: list) -> list:
    lines = []
    for device in devices:
        mine = [s for s in summaries if s.device == device]
        section = _results_section(mine)
        section[0] = f"## Results on {device}"
        lines += section
        lengths = _lengths_section(mine)
        if lengths:
            lengths[0] += f" on {device}"
        lines += lengths
        if not any(s.kind == BASELINE for s in mine):
            lines += [f"No TF baseline on {device}: its edge-slm has no host extra (TensorFlow), and a baseline "
                      "measured on another machine is no baseline.", ""]
    return lines


def _cross_device_section(summaries: list, per_device: dict, constraints: list) -> list:
    devices = list(per_device)
    lines = ["## Across devices", "", _constraints_line(constraints), "",
             "| device | recommended artifact | why |", "|---|---|---|"]
    for device, rec in per_device.items():
        best = rec["best"]
        choice = (f"**{_cell(best['label'])}** ({best['threads']} thr, {_cell(best['backend'])})"
                  if rec["status"] == "ok" else "none")
        lines.append(f"| {_cell(device)} | {choice} | {_cell(rec['reason'])} |")
    runs = list(dict.fromkeys(s.run_label for s in summaries if s.kind == ARTIFACT))
    by = {(s.run_label, s.device): s for s in summaries if s.kind == ARTIFACT}
    lines += ["", "p50 latency (ms) and energy per inference of each artifact run, side by side:", "",
              "| run | " + " | ".join(f"{_cell(d)} p50 | {_cell(d)} energy" for d in devices) + " |",
              "|---|" + "---:|---|" * len(devices)]
    for label in runs:
        cells = []
        for device in devices:
            s = by.get((label, device))
            if s is None:
                cells += ["not run", "—"]
            elif s.status != "ok":
                cells += ["failed", "—"]
            else:
                cells += [three_figures(s.latency["p50"]), _cell(s.energy_text)]
        lines.append(f"| {_cell(label)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _method_section(rows: list) -> list:
    settings = rows[0].get("settings") or {}
    amounts = [f"{settings['runs']} timed runs" if settings.get("runs") else None,
               f"at least {settings['min_seconds']:g} s" if settings.get("min_seconds") else None]
    runs = " and ".join(a for a in amounts if a)
    lines = ["## Method", "",
             f"- Every run is a fresh process: `edge-run --bench` for an artifact, `edge_slm.bench.baseline` "
             f"for a TF baseline; {settings.get('warmup', '?')} warm-up runs, then {runs or 'the default runs'}.",
             "- The timed step is what an application pays per request: tokenize (the artifact's WordPiece "
             "tokenizer) into the input buffers, set inputs, invoke, read the logits; batch 1. Without `--data`: the built-in "
             "sample texts padded to the artifact's longest sequence; with it, each run twice: the texts at "
             "their own lengths, and padded to the longest (column *lengths*).",
             "- Peak RSS is the process's VmHWM after the timed loop; init is measured inside the process."]
    if settings.get("data"):
        lines.append(f"- Texts and labels: `{settings['data']}` (accuracy only for trained weights).")
    else:
        lines.append("- Texts: edge-run's built-in SST-2-like sentences (no `--data`: no accuracy).")
    if settings.get("meter"):
        lines.append(f"- Energy: meter `{settings['meter']}`, {settings.get('baseline_seconds')} s idle baseline "
                     "before and after each timed loop; energy per inference = integral of (P − P_idle) over "
                     "the loop / inferences, uncertainty combined in quadrature (see power/README.md).")
    lines.append("- A run that fails is recorded with its error and retried by `--resume`; the last row of a "
                 "run in results.jsonl wins.")
    return lines + [""]
