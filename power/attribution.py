"""Energy per inference from timestamped power readings, an idle baseline and an inference window.

    E_window = integral over [t0, t1] of (P(t) - P_idle) dt,   energy per inference = E_window / n

Readings, not polls. A meter that refreshes more slowly than it is polled (an RDTech UM: about 2
new readings a second, polled about 7 times) answers several polls with the same reading. The
driver flags those repeats, and they count once: one independent reading, however often it was
read. A reading was taken at the meter's refresh, after the previous poll (which still showed the
old reading) and no later than the first poll showing it: its time is the middle of that
interval, whose half-width is a timing uncertainty. Without repeat flags every sample is a reading
taken when it was received.

P(t) inside the window is the nearest reading certainly taken inside the window (each stands for
the time closer to it than to its neighbours, the first one back to t0 and the last one on to t1).
A reading taken before t0 but still shown when the window starts, or one that may have been taken
on either side of a mark, never leaks into the window, so a workload whose power switches with the
window marks is integrated without an edge error. P_idle is the mean of the idle baselines
measured before and after the window (MLPerf Power's practice: idle on both sides, power and
performance from the same timed run).

The uncertainty (reported per inference, like the energy) combines in quadrature:
  edges        the stretch between each mark and the nearest reading certainly inside the window
               (up to a refresh period plus a poll for a UM meter) is extrapolated; the power
               there could be anything between that reading and the one just outside:
               |P_in - P_out| x the stretch, both edges added (a bound, not a 1-sigma); this is
               the term that depends on the meter's refresh rate
  timing       the driver's timestamp uncertainty x the power step at each edge
  statistical  2 x standard error of the mean active and mean idle power, from the number of
               independent readings (k=2)
  resolution   half a step of the meter's power reading, active and idle, times the window
               (a bound: rounding is not assumed to average out)
  drift        half the difference between the before- and after-baselines, times the window
The window needed for the target uncertainty (±2 % by default) is always computed, for the worst
reading phase at the edges; a shorter window is flagged (`window_long_enough`) and warned about.

The meter's own energy counter, when the samples carry one (a UM meter's data group, 1 mWh steps),
gives a second figure for long runs: the counter's rise from the last reading before the window to
the first one after it, less the idle power over that span. Its uncertainty combines the counter's
step (a bound: the difference of two truncated counts), the same edge term (a counter that sums
each reading over the time it was shown misplaces the stretch at each mark), the span's timing x
idle power, and the idle level's statistics, resolution and drift over the span. When the two
figures differ by more than their combined uncertainty a warning says so.

When the meter was lost for part of the window (a gap longer than `gap_threshold_s`, by default
ten polls, three readings and at least 1 s), the energy is scaled up from the covered part,
`partial` is set and a warning says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_slm.common.errors import EdgeError

MIN_READINGS_IN_WINDOW = 10
WH_TO_J = 3600.0


@dataclass
class EnergyEstimate:
    inferences: int
    window_s: float
    energy_per_inference_j: Optional[float] = None
    uncertainty_j: Optional[float] = None  # per inference
    components_j: Dict[str, float] = field(default_factory=dict)  # per inference
    energy_window_j: Optional[float] = None
    avg_idle_w: Optional[float] = None
    idle_before_w: Optional[float] = None
    idle_after_w: Optional[float] = None
    avg_active_w: Optional[float] = None
    samples_used: int = 0  # polls answered inside the window, repeats included
    readings_used: int = 0  # independent readings certainly taken inside the window
    samples_idle: int = 0
    readings_idle_before: int = 0
    readings_idle_after: int = 0
    sample_rate_hz: Optional[float] = None
    reading_rate_hz: Optional[float] = None  # independent readings per second
    coverage: float = 0.0
    partial: bool = False
    target_relative_uncertainty: float = 0.02
    needed_window_s: Optional[float] = None
    needed_inferences: Optional[int] = None
    window_long_enough: Optional[bool] = None
    counter_energy_per_inference_j: Optional[float] = None
    counter_uncertainty_j: Optional[float] = None
    counter_components_j: Dict[str, float] = field(default_factory=dict)
    counter_span_s: Optional[float] = None
    counter_agrees: Optional[bool] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def relative_uncertainty(self) -> Optional[float]:
        if self.energy_per_inference_j in (None, 0.0) or self.uncertainty_j is None:
            return None
        return self.uncertainty_j / abs(self.energy_per_inference_j)

    def as_dict(self) -> dict:
        def mj(x: Optional[float]) -> Optional[float]:
            return None if x is None else round(x * 1e3, 6)

        def w(x: Optional[float]) -> Optional[float]:
            return None if x is None else round(x, 6)

        def hz(x: Optional[float]) -> Optional[float]:
            return None if x is None else round(x, 3)

        per_joule = (1.0 / self.energy_per_inference_j
                     if self.energy_per_inference_j and self.energy_per_inference_j > 0 else None)
        return {
            "energy_per_inference_mj": mj(self.energy_per_inference_j),
            "uncertainty_mj": mj(self.uncertainty_j),
            "relative_uncertainty": (None if self.relative_uncertainty is None
                                     else round(self.relative_uncertainty, 6)),
            "uncertainty_components_mj": {k: mj(v) for k, v in self.components_j.items()},
            "energy_window_j": w(self.energy_window_j),
            "avg_idle_w": w(self.avg_idle_w),
            "idle_before_w": w(self.idle_before_w),
            "idle_after_w": w(self.idle_after_w),
            "avg_active_w": w(self.avg_active_w),
            "inferences": self.inferences,
            "inferences_per_joule": None if per_joule is None else round(per_joule, 6),
            "samples_used": self.samples_used,
            "readings_used": self.readings_used,
            "samples_idle": self.samples_idle,
            "readings_idle_before": self.readings_idle_before,
            "readings_idle_after": self.readings_idle_after,
            "sample_rate_hz": hz(self.sample_rate_hz),
            "reading_rate_hz": hz(self.reading_rate_hz),
            "window_s": round(self.window_s, 6),
            "coverage": round(self.coverage, 6),
            "partial": self.partial,
            "target_relative_uncertainty": self.target_relative_uncertainty,
            "needed_window_s": None if self.needed_window_s is None else round(self.needed_window_s, 1),
            "needed_inferences": self.needed_inferences,
            "window_long_enough": self.window_long_enough,
            "counter_energy_per_inference_mj": mj(self.counter_energy_per_inference_j),
            "counter_uncertainty_mj": mj(self.counter_uncertainty_j),
            "counter_uncertainty_components_mj": {k: mj(v) for k, v in self.counter_components_j.items()},
            "counter_span_s": None if self.counter_span_s is None else round(self.counter_span_s, 6),
            "counter_agrees": self.counter_agrees,
        }


@dataclass
class Readings:
    """The independent readings among the samples, each with the interval it was taken in."""

    t: np.ndarray  # best estimate of when it was taken: the middle of [lo, hi]
    lo: np.ndarray
    hi: np.ndarray
    power_w: np.ndarray
    resolution_w: np.ndarray
    counter_wh: np.ndarray  # the meter's energy counter with this reading, NaN without one

    @property
    def half_width(self) -> np.ndarray:
        return self.hi - self.t


def group_readings(times: np.ndarray, watts: np.ndarray, steps: np.ndarray,
                   repeat: Optional[np.ndarray], counter: np.ndarray) -> Readings:
    """Collapse repeated samples (sorted by time) into readings; see the module's docstring."""
    fresh = np.ones(times.shape, dtype=bool) if repeat is None else ~repeat
    if fresh.size:
        fresh[0] = True
    first = np.nonzero(fresh)[0]
    hi = times[first]
    lo = hi.copy()
    if repeat is not None and first.size > 1:
        # Taken after the previous poll, and at most one refresh (the typical interval between
        # new readings) before the first poll that shows it, however long the link was away.
        refresh = float(np.median(np.diff(hi)))
        later = first > 0
        lo[later] = np.maximum(times[first[later] - 1], hi[later] - refresh)
    return Readings(t=0.5 * (lo + hi), lo=lo, hi=hi, power_w=watts[first], resolution_w=steps[first],
                    counter_wh=counter[first])


def _mean_and_se(values: np.ndarray) -> Tuple[Optional[float], float]:
    if values.size == 0:
        return None, 0.0
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def _as_array(values, like: np.ndarray, order: np.ndarray, fill: float) -> np.ndarray:
    if values is None:
        return np.full(like.shape, fill)
    if np.ndim(values) == 0:
        return np.full(like.shape, float(values))
    return np.asarray([fill if v is None else v for v in values], dtype=float)[order]


def estimate_energy(t: Sequence[float], power_w: Sequence[float], *,
                    window: Tuple[float, float], inferences: int,
                    before: Optional[Tuple[float, float]] = None,
                    after: Optional[Tuple[float, float]] = None,
                    resolution_w: Sequence[float] | float = 0.0,
                    repeat: Optional[Sequence[bool]] = None,
                    counter_wh: Optional[Sequence[Optional[float]]] = None,
                    counter_step_wh: Optional[float] = None,
                    timestamp_uncertainty_s: float = 0.0,
                    gap_threshold_s: Optional[float] = None,
                    target_relative_uncertainty: float = 0.02) -> EnergyEstimate:
    t0, t1 = float(window[0]), float(window[1])
    if not t1 > t0:
        raise EdgeError(f"empty inference window ({t0:.3f} .. {t1:.3f} s)",
                        "the workload must run for a measurable time")
    if inferences < 0:
        raise EdgeError(f"negative inference count {inferences}", "the workload returns how many it ran")
    times = np.asarray(t, dtype=float)
    order = np.argsort(times, kind="stable")
    times = times[order]
    watts = np.asarray(power_w, dtype=float)[order]
    steps = _as_array(resolution_w, times, order, 0.0)
    repeats = None if repeat is None else np.asarray(repeat, dtype=bool)[order]
    readings = group_readings(times, watts, steps, repeats, _as_array(counter_wh, times, order, math.nan))
    span = t1 - t0
    est = EnergyEstimate(inferences=int(inferences), window_s=span,
                         target_relative_uncertainty=target_relative_uncertainty)

    poll_period = float(np.median(np.diff(times))) if times.size > 1 else span
    reading_period = float(np.median(np.diff(readings.t))) if readings.t.size > 1 else span
    # Longer than ~10 polls, 3 readings (a slow meter's refresh) and 1 s means the meter was lost.
    gap_limit = (gap_threshold_s if gap_threshold_s is not None
                 else max(10.0 * poll_period, 3.0 * reading_period, 1.0))

    # Baselines are half-open towards the window: a reading exactly on a mark is the window's; one
    # that may have been taken on either side of a mark belongs to neither.
    r = readings
    before_mask = (np.zeros(r.t.shape, dtype=bool) if before is None
                   else (r.t >= before[0]) & (r.hi < before[1]))
    after_mask = (np.zeros(r.t.shape, dtype=bool) if after is None
                  else (r.lo > after[0]) & (r.t <= after[1]))
    idle_before, se_before = _mean_and_se(r.power_w[before_mask])
    idle_after, se_after = _mean_and_se(r.power_w[after_mask])
    idle_mask = before_mask | after_mask
    est.idle_before_w, est.idle_after_w = idle_before, idle_after
    est.readings_idle_before, est.readings_idle_after = int(before_mask.sum()), int(after_mask.sum())
    est.samples_idle = int(sum(((times >= edges[0]) & (times <= edges[1])).sum()
                               for edges in (before, after) if edges is not None))
    idle_means = [m for m in (idle_before, idle_after) if m is not None]
    if not idle_means:
        est.warnings.append("no idle baseline samples: cannot attribute energy to inference "
                            "(was the meter connected before the workload started?)")
        return est
    idle = sum(idle_means) / len(idle_means)
    se_idle = (0.5 * math.hypot(se_before, se_after) if len(idle_means) == 2
               else (se_before if idle_before is not None else se_after))
    est.avg_idle_w = idle

    est.samples_used = int(((times >= t0) & (times <= t1)).sum())
    inside = (r.lo >= t0) & (r.hi <= t1)
    ti, pi, ri = r.t[inside], r.power_w[inside], r.resolution_w[inside]
    est.readings_used = int(ti.size)
    if ti.size == 0:
        est.partial = True
        est.warnings.append(f"no meter readings inside the {span:.1f} s inference window: "
                            f"no energy figure (meter lost before the workload?)")
        return est

    # Each reading stands for the time nearer to it than to its neighbours, within the window,
    # and for at most gap_limit/2 either side: a longer gap is not bridged (the meter was away).
    reach = gap_limit / 2.0
    halves = np.minimum(np.diff(ti) / 2.0, reach)
    left = np.concatenate(([min(ti[0] - t0, reach)], halves))
    right = np.concatenate((halves, [min(t1 - ti[-1], reach)]))
    weights = left + right
    covered = float(weights.sum())
    est.coverage = min(1.0, covered / span)
    est.partial = est.coverage < 1.0 - 1e-9
    if covered <= 0.0:
        est.warnings.append("meter readings do not cover the inference window: no energy figure")
        return est
    active = float((pi * weights).sum() / covered)
    est.avg_active_w = active
    est.sample_rate_hz = est.samples_used / covered
    est.reading_rate_hz = ti.size / covered
    energy = (active - idle) * span
    est.energy_window_j = energy
    n = max(int(inferences), 1)

    # Power just outside each edge: the neighbouring reading if close, else the idle level.
    first_in, last_in = np.nonzero(inside)[0][[0, -1]]
    outside_start = (float(r.power_w[first_in - 1])
                     if first_in > 0 and r.t[first_in - 1] >= t0 - gap_limit else idle)
    outside_end = (float(r.power_w[last_in + 1])
                   if last_in + 1 < r.t.size and r.t[last_in + 1] <= t1 + gap_limit else idle)
    step_start, step_end = float(abs(pi[0] - outside_start)), float(abs(pi[-1] - outside_end))
    # The stretch extrapolated at each edge, out to where the reading may really have been taken.
    stretch_start = float(left[0] + r.half_width[first_in])
    stretch_end = float(right[-1] + r.half_width[last_in])
    _, se_active = _mean_and_se(pi)
    idle_steps = r.resolution_w[idle_mask]
    idle_resolution = float(idle_steps.mean()) if idle_steps.size else 0.0
    drift_w = 0.5 * abs(idle_after - idle_before) if len(idle_means) == 2 else 0.0
    components = {
        "edges": step_start * stretch_start + step_end * stretch_end,
        "timing": timestamp_uncertainty_s * (step_start + step_end),
        "statistical": 2.0 * span * math.hypot(se_active, se_idle),
        "resolution": 0.5 * span * (float(ri.mean()) + idle_resolution),
        "drift": drift_w * span,
    }
    total = math.sqrt(sum(v * v for v in components.values()))
    if inferences > 0:
        est.energy_per_inference_j = energy / n
        est.uncertainty_j = total / n
        est.components_j = {k: v / n for k, v in components.items()}
    else:
        est.warnings.append("the workload reported 0 inferences: no energy per inference")

    if est.partial:
        est.warnings.append(
            f"energy is partial: the meter covered {est.coverage:.0%} of the {span:.1f} s inference "
            f"window; the figure assumes the power stayed the same over the rest")
    if len(idle_means) < 2:
        est.warnings.append("only one idle baseline was measured: baseline drift is not assessed")
    elif abs(idle_after - idle_before) > 0.25 * max(abs(active - idle), 1e-9):
        est.warnings.append(f"idle power drifted from {idle_before:.3f} W before to {idle_after:.3f} W "
                            f"after the workload: let the device settle or lengthen the baseline")
    if abs(energy) <= total:
        est.warnings.append(f"active power {active:.3f} W is not distinguishable from idle "
                            f"{idle:.3f} W at this uncertainty: energy per inference is within noise")
    elif inferences > 0:
        # For the advice, assume the worst reading phase: a whole reading period plus the widest
        # interval a reading may have been taken in, at both edges.
        worst_stretch = 1.0 / est.reading_rate_hz + float(np.median(r.hi - r.lo))
        _advise_window(est, components, (step_start + step_end) * worst_stretch, energy)

    if counter_step_wh and inferences > 0:
        _counter_estimate(est, r, (t0, t1), idle, counter_step_wh, components["edges"], {
            "statistical": 2.0 * se_idle, "resolution": 0.5 * idle_resolution, "drift": drift_w},
            timestamp_uncertainty_s, total)
    return est


def _advise_window(est: EnergyEstimate, components: Dict[str, float], worst_edges: float,
                   energy: float) -> None:
    """The window needed for the target uncertainty; a warning when this one is shorter."""
    span = est.window_s
    target = est.target_relative_uncertainty
    rel = math.sqrt(sum(v * v for v in components.values())) / abs(energy)
    few = est.readings_used < MIN_READINGS_IN_WINDOW
    # How the terms grow with a longer window T': edges and timing stay, the statistical term
    # grows as sqrt(T'), resolution and drift as T'; the energy grows as T'.
    fixed = math.hypot(max(components["edges"], worst_edges), components["timing"])
    stat = components["statistical"]
    proportional = math.hypot(components["resolution"], components["drift"])
    excess_power = abs(energy) / span

    def rel_at(length: float) -> float:
        k = length / span
        return math.sqrt(fixed ** 2 + stat ** 2 * k + (proportional * k) ** 2) / (excess_power * length)

    rate = f"{est.reading_rate_hz:.1f}/s" if est.reading_rate_hz else "the meter's rate"
    head = (f"inference window {span:.1f} s holds {est.readings_used} independent meter readings "
            f"({rate}, {est.samples_used} polls): energy per inference is ±{rel:.1%}")
    if proportional / abs(energy) >= target:
        est.window_long_enough = False
        est.warnings.append(f"{head}; baseline drift or meter resolution alone exceed ±{target:.0%}, "
                            f"so longer runs will not help: let the device settle first")
        return
    # rel_at falls monotonically to its limit (< target here): bisect for where it meets target.
    lo, hi = 0.0, span
    while rel_at(hi) > target:
        lo, hi = hi, 2.0 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if rel_at(mid) <= target else (mid, hi)
    needed = max(hi, span * MIN_READINGS_IN_WINDOW / max(est.readings_used, 1))
    needed = math.ceil(needed * 10.0) / 10.0
    est.needed_window_s = needed
    est.needed_inferences = math.ceil(est.inferences * needed / span)
    est.window_long_enough = rel <= target and not few
    if not est.window_long_enough:
        est.warnings.append(f"{head}; for ±{target:.0%} run at least {needed:.1f} s "
                            f"(about {est.needed_inferences} inferences at the current rate)")


def _counter_anchor(r: Readings, candidates: np.ndarray, step_j: float) -> Tuple[int, float]:
    """The reading (of `candidates`, nearest the window first) to read the counter at, and how
    far the energy really counted may lie above its truncated count, in J.

    Anywhere, up to one step. But where the count has just gone up, the true count crossed that
    whole number since the previous reading: it lies above it by at most the energy of that one
    interval, a fraction of a step for a low-power device."""
    for k in candidates:
        previous = k - 1
        if previous >= 0 and not math.isnan(r.counter_wh[previous]) and r.counter_wh[k] > r.counter_wh[previous]:
            interval = float(r.hi[k] - r.lo[previous])
            return int(k), min(step_j, max(r.power_w[k], r.power_w[previous]) * interval)
    return int(candidates[0]), step_j


def _counter_estimate(est: EnergyEstimate, r: Readings, window: Tuple[float, float], idle_w: float,
                      step_wh: float, edges_j: float, idle_terms_w: Dict[str, float],
                      timestamp_uncertainty_s: float, readings_total_j: float) -> None:
    """The second figure, from the meter's own energy counter; see the module's docstring."""
    t0, t1 = window
    has = ~np.isnan(r.counter_wh)
    before = np.nonzero(has & (r.hi <= t0))[0][::-1]
    after = np.nonzero(has & (r.lo >= t1))[0]
    if before.size == 0 or after.size == 0:
        return
    counts = r.counter_wh[before[-1]:after[-1] + 1]
    if np.any(np.diff(counts[~np.isnan(counts)]) < 0):
        est.warnings.append("the meter's energy counter went back during the run (cleared, or "
                            "another data group selected): no counter figure")
        return
    step_j = step_wh * WH_TO_J
    a, above_a = _counter_anchor(r, before, step_j)
    b, above_b = _counter_anchor(r, after, step_j)
    span_c = float(r.t[b] - r.t[a])
    excess = float(r.counter_wh[b] - r.counter_wh[a]) * WH_TO_J - idle_w * span_c
    components = {
        # Both counts truncated: the difference is off by less than the larger excess above one.
        "counter_step": max(above_a, above_b),
        "edges": edges_j,
        "timing": idle_w * (float(r.half_width[a] + r.half_width[b]) + 2.0 * timestamp_uncertainty_s),
        **{name: value * span_c for name, value in idle_terms_w.items()},
    }
    total = math.sqrt(sum(v * v for v in components.values()))
    n = max(est.inferences, 1)
    est.counter_span_s = span_c
    est.counter_energy_per_inference_j = excess / n
    est.counter_uncertainty_j = total / n
    est.counter_components_j = {k: v / n for k, v in components.items()}
    difference = abs(excess - (est.energy_window_j or 0.0))
    combined = math.hypot(total, readings_total_j)
    est.counter_agrees = difference <= combined
    if not est.counter_agrees:
        est.warnings.append(
            f"the meter's own energy counter gives {excess / n * 1e3:.3f} ± {total / n * 1e3:.3f} "
            f"mJ/inference, its readings {est.energy_window_j / n * 1e3:.3f} ± "
            f"{readings_total_j / n * 1e3:.3f}: they disagree beyond their combined uncertainty "
            f"(a meter that misses or repeats readings, or a counter that is not this run's)")
