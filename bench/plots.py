"""The study's PNG plots. matplotlib is imported only when a plot is drawn, with the Agg backend
(pip install 'edge-slm[report]'); without it the Markdown report is still written, and says so."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Optional

from edge_slm.common.files import atomic_write_bytes

from .plan import ARTIFACT, BASELINE
from .summary import RunSummary, three_figures

PLOT_FILES = {"accuracy_latency": "accuracy_latency.png", "energy": "energy.png", "memory": "memory.png",
              "latency_distribution": "latency_distribution.png", "devices": "devices.png"}
BOARD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def render_plots(summaries: list, out: Path) -> dict:
    import matplotlib  # deferred: optional (edge-slm[report]), only when plotting

    matplotlib.use("Agg")  # files only: no display on a device or in CI
    import matplotlib.pyplot as plt  # deferred: optional (edge-slm[report]), only when plotting

    ok = [s for s in summaries if s.status == "ok" and s.latency]
    if not ok:
        return {}
    colors = model_colors(ok)
    plots = {}
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 110}):
        figures = {"accuracy_latency": accuracy_latency_figure(plt, ok, colors),
                   "energy": energy_figure(plt, ok, colors),
                   "memory": _memory_figure(plt, ok, colors),
                   "latency_distribution": _distribution_figure(plt, ok, colors),
                   "devices": _devices_figure(plt, ok, colors)}
        for name, figure in figures.items():
            if figure is None:
                continue
            path = out / PLOT_FILES[name]
            _save(figure, path)
            plt.close(figure)
            plots[name] = path
    return plots


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def model_colors(summaries: list) -> dict:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    models = list(dict.fromkeys(s.model for s in summaries))
    return {model: palette[i % len(palette)] for i, model in enumerate(models)}


def _bar_style(s: RunSummary, colors: dict) -> dict:
    """Artifacts solid, TF baselines hatched outlines: the legend says which is which."""
    if s.kind == BASELINE:
        return {"color": "white", "edgecolor": colors[s.model], "hatch": "///", "linewidth": 1.2}
    return {"color": colors[s.model], "edgecolor": colors[s.model]}


def _kind_handles(runs: list) -> list:
    from matplotlib.patches import Patch  # deferred: optional (edge-slm[report]), only when plotting

    handles = []
    if any(s.kind == ARTIFACT for s in runs):
        handles.append(Patch(facecolor="0.45", edgecolor="0.45", label="edge-slm artifact (TFLite)"))
    if any(s.kind == BASELINE for s in runs):
        handles.append(Patch(facecolor="white", edgecolor="0.35", hatch="///", label="TF fp32 baseline (host)"))
    return handles


def _axis(ax, values: list, label: str, headroom: float = 1.0) -> None:
    """Log scale when the values span more than 20x (TF baselines next to artifacts), with plain
    tick labels (0.1, 1, 10 rather than 10^-1); the label says which scale it is."""
    from matplotlib.ticker import FuncFormatter  # deferred: optional (edge-slm[report]), only when plotting

    positive = [v for v in values if v and v > 0]
    log = len(positive) > 1 and max(positive) / min(positive) > 20
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 1.6, max(positive) * headroom * 2.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_xlim(0, max(positive or [1]) * (1.15 + 0.5 * (headroom - 1)))
    ax.set_xlabel(label + (" — log scale" if log else ""))
    ax.grid(True, axis="x", which="major", alpha=0.3)


def _finish(fig, handles: list, note: Optional[str] = None) -> None:
    """Legend (and a note) below the axes, where they cover no data."""
    note_lines = textwrap.wrap(note, 130) if note else []
    legend_rows = math.ceil(len(handles) / 3) if handles else 0
    note_in = 0.16 * len(note_lines) + (0.05 if note_lines else 0)
    bottom_in = 0.22 * legend_rows + note_in + 0.05
    fig.tight_layout(rect=(0, bottom_in / fig.get_figheight(), 1, 1))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), frameon=False, fontsize=8,
                   bbox_to_anchor=(0.5, note_in / fig.get_figheight()))
    if note_lines:
        fig.text(0.01, 0.01, "\n".join(note_lines), fontsize=7.5, ha="left", va="bottom", color="0.25")


def _height(count: int) -> float:
    return max(3.0, 1.4 + 0.42 * count)


def _rows(ax, runs: list, label=lambda s: s.label) -> list:
    y = list(range(len(runs)))[::-1]
    ax.set_yticks(y)
    ax.set_yticklabels([label(s) for s in runs])
    ax.set_ylim(-0.7, len(runs) - 0.3)
    return y


def accuracy_latency_figure(plt, runs: list, colors: dict):
    measured = [s for s in runs if s.accuracy is not None]
    if not measured:
        return _latency_only_figure(plt, runs, colors)
    from matplotlib.lines import Line2D  # deferred: optional (edge-slm[report]), only when plotting

    fig, ax = plt.subplots(figsize=(10, 5))
    # Points are numbered and named in a key beside the axes: labels next to clustered points overlap.
    key = []
    for number, s in enumerate(measured, 1):
        ax.scatter(s.latency["p50"], s.accuracy * 100, s=70, marker="X" if s.kind == BASELINE else "o",
                   color=colors[s.model], edgecolor="black", linewidth=0.6, zorder=3)
        ax.annotate(str(number), (s.latency["p50"], s.accuracy * 100), textcoords="offset points", xytext=(5, 5),
                    fontsize=8, fontweight="bold")
        key.append(f"{number:>2}  {s.label}: {s.accuracy * 100:.1f} %, {three_figures(s.latency['p50'])} ms")
    # Runs without a measured accuracy keep their latency: a dotted line, never a made-up point.
    missing = [s for s in runs if s.accuracy is None]
    for number, s in enumerate(missing, len(measured) + 1):
        ax.axvline(s.latency["p50"], linestyle=":", linewidth=1.2, color=colors[s.model], zorder=1)
        key.append(f"{number:>2}  {s.label}: accuracy {s.accuracy_text}, {three_figures(s.latency['p50'])} ms")
    ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, va="top", ha="left", fontsize=7.5,
            family="monospace")
    handles = [Line2D([], [], marker="o", linestyle="", color="0.55", markeredgecolor="black",
                      label="artifact (TFLite)")]
    if any(s.kind == BASELINE for s in measured):
        handles.append(Line2D([], [], marker="X", linestyle="", color="0.55", markeredgecolor="black",
                              label="TF fp32 baseline (host)"))
    front = pareto_front([s for s in measured if s.kind == ARTIFACT])
    if front:
        xs = [s.latency["p50"] for s in front]
        ys = [s.accuracy * 100 for s in front]
        ax.step(xs, ys, where="post", linestyle="--", color="0.3", linewidth=1.2, zorder=2)
        ax.scatter(xs, ys, s=160, facecolor="none", edgecolor="0.3", linewidth=1.0, zorder=2)
        handles.append(Line2D([], [], linestyle="--", marker="o", markerfacecolor="none", color="0.3",
                              label="Pareto front of the artifacts"))
    if missing:
        handles.append(Line2D([], [], linestyle=":", color="0.4", label="p50 of a run without measured accuracy"))
    _axis(ax, [s.latency["p50"] for s in runs], "p50 latency per inference (ms)", headroom=1.3)
    # The lines' numbers go at the top, one row lower whenever a line is too close to a numbered one.
    positions = [ax.transAxes.inverted().transform(ax.transData.transform((s.latency["p50"], 1.0)))[0]
                 for s in missing]
    for number, (s, level) in enumerate(zip(missing, label_levels(positions)), len(measured) + 1):
        ax.annotate(str(number), (s.latency["p50"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12 - 11 * level), textcoords="offset points", fontsize=8, color=colors[s.model],
                    fontweight="bold")
    accuracies = [s.accuracy * 100 for s in measured]
    span = max(max(accuracies) - min(accuracies), 2.0)
    ax.set_ylim(min(accuracies) - 0.25 * span, max(accuracies) + 0.25 * span)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("Accuracy vs p50 latency (up and left is better)")
    note = ("Dotted lines: runs without a measured accuracy (" + "; ".join(sorted({s.accuracy_text for s in missing}))
            + "), placed by their p50 latency only." if missing else None)
    _finish(fig, handles, note)
    return fig


def label_levels(positions: list, min_gap: float = 0.05) -> list:
    """A row (0 = top) for each label at these x positions (axes fractions): the highest row whose
    labels are all at least min_gap away."""
    rows, levels = [], []
    for x in positions:
        level = next((i for i, taken in enumerate(rows) if all(abs(x - t) >= min_gap for t in taken)), len(rows))
        if level == len(rows):
            rows.append([])
        rows[level].append(x)
        levels.append(level)
    return levels


def pareto_front(runs: list) -> list:
    """The runs no other run beats on both p50 latency (lower) and accuracy (higher), by latency."""
    front = []
    for s in runs:
        dominated = any(o is not s and o.latency["p50"] <= s.latency["p50"] and o.accuracy >= s.accuracy
                        and (o.latency["p50"] < s.latency["p50"] or o.accuracy > s.accuracy) for o in runs)
        if not dominated:
            front.append(s)
    return sorted(front, key=lambda s: s.latency["p50"])


def _latency_only_figure(plt, runs: list, colors: dict):
    from matplotlib.lines import Line2D  # deferred: optional (edge-slm[report]), only when plotting

    reasons = "; ".join(sorted({s.accuracy_text for s in runs}))
    fig, ax = plt.subplots(figsize=(8.5, _height(len(runs))))
    y = _rows(ax, runs)
    for yi, s in zip(y, runs):
        lat = s.latency
        ax.barh(yi, lat["p50"], height=0.6, **_bar_style(s, colors))
        ax.plot([lat["p90"]], [yi], marker="|", markersize=13, markeredgewidth=1.6, color="black", linestyle="")
        ax.plot([lat["p99"]], [yi], marker="|", markersize=13, markeredgewidth=1.6, color="#d62728", linestyle="")
        ax.annotate(f"  p50 {three_figures(lat['p50'])} ms", (max(lat["p99"], lat["p90"], lat["p50"]), yi), va="center",
                    fontsize=7.5)
    _axis(ax, [v for s in runs for v in (s.latency["p50"], s.latency["p99"])], "latency per inference (ms)",
          headroom=2.2)
    ax.set_title(f"p50 latency per run — accuracy not plotted: {reasons}")
    handles = _kind_handles(runs) + [
        Line2D([], [], marker="|", markersize=9, markeredgewidth=1.6, color="black", linestyle="", label="p90"),
        Line2D([], [], marker="|", markersize=9, markeredgewidth=1.6, color="#d62728", linestyle="", label="p99")]
    _finish(fig, handles, f"Accuracy vs latency needs measured accuracies. These runs have none ({reasons}), so "
                          "this chart shows latency only, and no accuracy point is drawn.")
    return fig


def _devices_figure(plt, runs: list, colors: dict):
    """edge-bench --device: each artifact run's p50 on every board, one colour per model, one
    marker per board (energy beside it when measured)."""
    runs = [s for s in runs if s.device and s.kind == ARTIFACT]
    if not runs:
        return None
    from matplotlib.lines import Line2D  # deferred: optional (edge-slm[report]), only when plotting

    boards = list(dict.fromkeys(s.device for s in runs))
    markers = {board: BOARD_MARKERS[i % len(BOARD_MARKERS)] for i, board in enumerate(boards)}
    labels = list(dict.fromkeys(s.run_label for s in runs))
    with_energy = any(s.energy_mj is not None for s in runs)
    fig, axes = plt.subplots(1, 2 if with_energy else 1, figsize=(11 if with_energy else 8, _height(len(labels))),
                             squeeze=False, sharey=True)
    y = {label: i for i, label in enumerate(reversed(labels))}
    for s in runs:
        style = {"marker": markers[s.device], "color": colors[s.model], "s": 60, "edgecolors": "black",
                 "linewidths": 0.5}
        axes[0][0].scatter(s.latency["p50"], y[s.run_label], **style)
        if with_energy and s.energy_mj is not None:
            axes[0][1].scatter(s.energy_mj, y[s.run_label], **style)
    axes[0][0].set_yticks(list(y.values()))
    axes[0][0].set_yticklabels(list(y))
    _axis(axes[0][0], [s.latency["p50"] for s in runs], "p50 latency per inference (ms)")
    axes[0][0].set_title("p50 latency on each board")
    if with_energy:
        _axis(axes[0][1], [s.energy_mj for s in runs if s.energy_mj is not None], "energy per inference (mJ)")
        emulated = any(s.emulated for s in runs)
        axes[0][1].set_title("energy per inference" + (" — EMULATED meter" if emulated else ""))
    handles = [Line2D([], [], marker=markers[b], color="0.4", markeredgecolor="black", linestyle="", label=b)
               for b in boards]
    handles += [Line2D([], [], marker="s", color=c, linestyle="", label=m) for m, c in colors.items()
                if any(s.model == m for s in runs)]
    _finish(fig, handles, "Marker: the board; colour: the model.")
    return fig


def energy_figure(plt, runs: list, colors: dict):
    from matplotlib.lines import Line2D  # deferred: optional (edge-slm[report]), only when plotting

    measured = [s for s in runs if s.energy_mj is not None]
    if not measured:
        return None
    emulated = any(s.emulated for s in measured)
    fig, ax = plt.subplots(figsize=(8.5, _height(len(measured))))
    y = _rows(ax, measured)
    for yi, s in zip(y, measured):
        error = s.energy_uncertainty_mj or 0
        ax.barh(yi, s.energy_mj, height=0.6, xerr=error, capsize=3, error_kw={"ecolor": "black", "elinewidth": 1},
                **_bar_style(s, colors))
        ax.annotate(f"  {s.energy_text}", (s.energy_mj + error, yi), va="center", fontsize=7.5)
    _axis(ax, [s.energy_mj + (s.energy_uncertainty_mj or 0) for s in measured] + [s.energy_mj for s in measured],
          "energy per inference (mJ)" + (", EMULATED meter" if emulated else ""), headroom=2.6)
    ax.set_title("Energy per inference" + (" — EMULATED meter, not a device's power draw" if emulated else ""))
    handles = _kind_handles(measured) + [Line2D([], [], color="black", marker="|", linestyle="-",
                                                label="± uncertainty" + (" (emulated)" if emulated else ""))]
    _finish(fig, handles, "Emulated: measured through edge-power emulate (real meter protocol, power following "
                          "CPU load)." if emulated else None)
    return fig


def _memory_figure(plt, runs: list, colors: dict):
    from matplotlib.patches import Patch  # deferred: optional (edge-slm[report]), only when plotting

    fig, ax = plt.subplots(figsize=(8.5, _height(len(runs)) + 0.3))
    y = _rows(ax, runs)
    for yi, s in zip(y, runs):
        size_mb = (s.model_bytes or 0) / 1e6
        ax.barh(yi + 0.17, s.peak_rss_mb or 0, height=0.34, **_bar_style(s, colors))
        ax.barh(yi - 0.17, size_mb, height=0.34, color="0.78", edgecolor="0.45")
        ax.annotate(f" {s.peak_rss_mb:.0f} MB peak RSS", (s.peak_rss_mb or 0, yi + 0.17), va="center", fontsize=7)
        ax.annotate(f" {size_mb:.1f} MB model", (size_mb, yi - 0.17), va="center", fontsize=7, color="0.3")
    _axis(ax, [s.peak_rss_mb for s in runs] + [(s.model_bytes or 0) / 1e6 for s in runs], "MB", headroom=2.4)
    ax.set_title("Peak resident memory (RSS) and model size per run")
    _finish(fig, _kind_handles(runs) + [Patch(facecolor="0.78", edgecolor="0.45",
                                              label="model size (artifact file; TF: fp32 parameters)")])
    return fig


def _distribution_figure(plt, runs: list, colors: dict):
    with_samples = [s for s in runs if s.latencies_ms]
    if not with_samples:
        return None
    fig, ax = plt.subplots(figsize=(8.5, _height(len(with_samples))))
    y = _rows(ax, with_samples, label=lambda s: f"{s.label} (n={len(s.latencies_ms)})")
    import matplotlib  # deferred: optional (edge-slm[report]), only when plotting

    # `vert` is deprecated from matplotlib 3.11; `orientation` only exists from 3.10.
    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    horizontal = {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
    boxes = ax.boxplot([s.latencies_ms for s in with_samples], positions=y, whis=(1, 99), **horizontal,
                       widths=0.55, patch_artist=True, showfliers=True, manage_ticks=False,
                       flierprops={"marker": ".", "markersize": 2.5, "alpha": 0.5},
                       medianprops={"color": "black", "linewidth": 1.4})
    for patch, s in zip(boxes["boxes"], with_samples):
        style = _bar_style(s, colors)
        patch.set_facecolor(style["color"])
        patch.set_edgecolor(style["edgecolor"])
        patch.set_hatch(style.get("hatch"))
    _axis(ax, [v for s in with_samples for v in (min(s.latencies_ms), max(s.latencies_ms))],
          "latency per inference (ms)")
    ax.set_title("Latency distribution per run")
    _finish(fig, _kind_handles(with_samples),
            "Box: p25–p75; black line: p50; whiskers: p1–p99; dots: single inferences beyond them.")
    return fig
