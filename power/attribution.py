"""Energy per inference from timestamped power samples, an idle baseline and an inference window.

    E_window = integral over [t0, t1] of (P(t) - P_idle) dt,   energy per inference = E_window / n

P(t) inside the window is the nearest in-window sample (each sample stands for the time closer
to it than to its neighbours, the first one back to t0 and the last one on to t1): samples taken
before t0 or after t1 never leak into the window, so a workload whose power switches with the
window marks is integrated without an edge error. P_idle is the mean of the idle baselines
measured before and after the window.

The uncertainty (reported per inference, like the energy) combines in quadrature:
  edges        the time between each window mark and the nearest sample inside the window is
               extrapolated; the power there could be anything between that sample and the one
               just outside: |P_in - P_out| x gap, both edges added (a bound, not a 1-sigma);
               this is the term that depends on the meter's sampling rate
  timing       the driver's timestamp uncertainty x the power step at each edge
  statistical  2 x standard error of the mean active and mean idle power, times the window
               (k=2; treats samples as independent)
  resolution   half a step of the meter's power reading, active and idle, times the window
               (a bound: rounding is not assumed to average out)
  drift        half the difference between the before- and after-baselines, times the window

When the meter was lost for part of the window (a gap longer than `gap_threshold_s`, by default
ten sample periods and at least 1 s), the energy
is scaled up from the covered part, `partial` is set and a warning says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_slm.common.errors import EdgeError

MIN_SAMPLES_IN_WINDOW = 10


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
    samples_used: int = 0
    samples_idle: int = 0
    sample_rate_hz: Optional[float] = None
    coverage: float = 0.0
    partial: bool = False
    needed_window_s: Optional[float] = None
    needed_inferences: Optional[int] = None
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
            "samples_idle": self.samples_idle,
            "sample_rate_hz": None if self.sample_rate_hz is None else round(self.sample_rate_hz, 3),
            "window_s": round(self.window_s, 6),
            "coverage": round(self.coverage, 6),
            "partial": self.partial,
            "needed_window_s": None if self.needed_window_s is None else round(self.needed_window_s, 1),
            "needed_inferences": self.needed_inferences,
        }


def _mean_and_se(values: np.ndarray) -> Tuple[Optional[float], float]:
    if values.size == 0:
        return None, 0.0
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def estimate_energy(t: Sequence[float], power_w: Sequence[float], *,
                    window: Tuple[float, float], inferences: int,
                    before: Optional[Tuple[float, float]] = None,
                    after: Optional[Tuple[float, float]] = None,
                    resolution_w: Sequence[float] | float = 0.0,
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
    steps = np.broadcast_to(np.asarray(resolution_w, dtype=float), times.shape)[order] \
        if np.ndim(resolution_w) else np.full(times.shape, float(resolution_w))
    span = t1 - t0
    est = EnergyEstimate(inferences=int(inferences), window_s=span)

    period = float(np.median(np.diff(times))) if times.size > 1 else span
    # Longer than ~10 sample periods (and than one missed poll of a slow meter) means lost.
    gap_limit = gap_threshold_s if gap_threshold_s is not None else max(10.0 * period, 1.0)

    # Baselines are half-open towards the window: a sample exactly on a mark is the window's.
    before_mask = (np.zeros(times.shape, dtype=bool) if before is None
                   else (times >= before[0]) & (times < before[1]))
    after_mask = (np.zeros(times.shape, dtype=bool) if after is None
                  else (times > after[0]) & (times <= after[1]))
    idle_before, se_before = _mean_and_se(watts[before_mask])
    idle_after, se_after = _mean_and_se(watts[after_mask])
    idle_mask = before_mask | after_mask
    est.idle_before_w, est.idle_after_w = idle_before, idle_after
    est.samples_idle = int(idle_mask.sum())
    idle_means = [m for m in (idle_before, idle_after) if m is not None]
    if not idle_means:
        est.warnings.append("no idle baseline samples: cannot attribute energy to inference "
                            "(was the meter connected before the workload started?)")
        return est
    idle = sum(idle_means) / len(idle_means)
    se_idle = (0.5 * math.hypot(se_before, se_after) if len(idle_means) == 2
               else (se_before if idle_before is not None else se_after))
    est.avg_idle_w = idle

    inside = (times >= t0) & (times <= t1)
    ti, pi, ri = times[inside], watts[inside], steps[inside]
    est.samples_used = int(ti.size)
    if ti.size == 0:
        est.partial = True
        est.warnings.append(f"no meter samples inside the {span:.1f} s inference window: "
                            f"no energy figure (meter lost before the workload?)")
        return est

    # Each sample stands for the time nearer to it than to its neighbours, within the window,
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
        est.warnings.append("meter samples do not cover the inference window: no energy figure")
        return est
    active = float((pi * weights).sum() / covered)
    est.avg_active_w = active
    est.sample_rate_hz = ti.size / covered
    energy = (active - idle) * span
    est.energy_window_j = energy
    n = max(int(inferences), 1)

    # Power just outside each edge: the neighbouring sample if close, else the idle level.
    prev = np.nonzero((times < t0) & (times >= t0 - gap_limit))[0]
    nxt = np.nonzero((times > t1) & (times <= t1 + gap_limit))[0]
    outside_start = float(watts[prev[-1]]) if prev.size else idle
    outside_end = float(watts[nxt[0]]) if nxt.size else idle
    step_start, step_end = float(abs(pi[0] - outside_start)), float(abs(pi[-1] - outside_end))
    _, se_active = _mean_and_se(pi)
    idle_steps = steps[idle_mask]
    components = {
        "edges": step_start * float(left[0]) + step_end * float(right[-1]),
        "timing": timestamp_uncertainty_s * (step_start + step_end),
        "statistical": 2.0 * span * math.hypot(se_active, se_idle),
        "resolution": 0.5 * span * (float(ri.mean()) + (float(idle_steps.mean()) if idle_steps.size else 0.0)),
        "drift": (0.5 * abs(idle_after - idle_before) * span if len(idle_means) == 2 else 0.0),
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
        # For advice, assume the worst sample phase: a whole sample period at both edges.
        worst_edges = (step_start + step_end) * (1.0 / est.sample_rate_hz)
        _advise_window(est, components, worst_edges, energy, target_relative_uncertainty)
    return est


def _advise_window(est: EnergyEstimate, components: Dict[str, float], worst_edges: float,
                   energy: float, target: float) -> None:
    """Warn when the window is too short for the meter's rate, with the length that would do."""
    span = est.window_s
    rel = math.sqrt(sum(v * v for v in components.values())) / abs(energy)
    few = est.samples_used < MIN_SAMPLES_IN_WINDOW
    if rel <= target and not few:
        return
    # How the terms grow with a longer window T': edges and timing stay, the statistical term
    # grows as sqrt(T'), resolution and drift as T'; the energy grows as T'.
    fixed = math.hypot(max(components["edges"], worst_edges), components["timing"])
    stat = components["statistical"]
    proportional = math.hypot(components["resolution"], components["drift"])
    excess_power = abs(energy) / span

    def rel_at(length: float) -> float:
        k = length / span
        return math.sqrt(fixed ** 2 + stat ** 2 * k + (proportional * k) ** 2) / (excess_power * length)

    rate = f"{est.sample_rate_hz:.1f} Hz" if est.sample_rate_hz else "the meter's rate"
    head = (f"inference window {span:.1f} s holds {est.samples_used} samples at {rate}: "
            f"energy per inference is ±{rel:.1%}")
    if proportional / abs(energy) >= target:
        est.warnings.append(f"{head}; baseline drift or meter resolution alone exceed ±{target:.0%}, "
                            f"so longer runs will not help: let the device settle first")
        return
    needed = span
    if rel > target:  # rel_at falls monotonically to its limit (< target here): bisect
        lo, hi = span, 2.0 * span
        while rel_at(hi) > target:
            lo, hi = hi, 2.0 * hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if rel_at(mid) <= target else (mid, hi)
        needed = hi
    if few:
        needed = max(needed, span * MIN_SAMPLES_IN_WINDOW / max(est.samples_used, 1))
    needed = math.ceil(needed * 10.0) / 10.0
    est.needed_window_s = needed
    est.needed_inferences = math.ceil(est.inferences * needed / span)
    est.warnings.append(f"{head}; for ±{target:.0%} run at least {needed:.1f} s "
                        f"(about {est.needed_inferences} inferences at the current rate)")
