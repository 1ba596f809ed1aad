"""Energy attribution: exact cases by hand, held readings, the meter's own counter, and the
accuracy bar on an emulated UM25C that refreshes every 0.5 s like the real one.

The bar (idle 2.0 W, active 3.5 W, windows of 5 s and 30 s over 12 seeds: the uncertainty covers
the true error every time, and the error is within ±2 % wherever the tool says the window is long
enough) runs offline: the real driver, sampler, session and attribution read the emulator's real
byte stream through `VirtualSerial` on a virtual clock (power/accuracy.py), faster than real time.
`make bench-power` runs the same bar and writes bench-results/power_accuracy.json.
"""

import json
import math

import numpy as np
import pytest

from edge_slm.power.accuracy import emulated_step_session
from edge_slm.power.attribution import estimate_energy
from edge_slm.common.errors import EdgeError

IDLE_W, ACTIVE_W = 2.0, 3.5


def step_samples(t0, t1, *, rate=10.0, phase=0.031, end=None, idle_after=IDLE_W, gap=None):
    """Noise-free samples of a step from IDLE_W to ACTIVE_W over [t0, t1]."""
    end = end if end is not None else t1 + 3.0
    t = np.arange(phase, end, 1.0 / rate)
    if gap:
        t = t[(t < gap[0]) | (t > gap[1])]
    p = np.where((t >= t0) & (t <= t1), ACTIVE_W, np.where(t < t0, IDLE_W, idle_after))
    return t, p


def test_step_workload_is_integrated_exactly_and_edges_bound_the_uncertainty():
    t0, t1 = 3.013, 13.0172
    t, p = step_samples(t0, t1)
    est = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3.0),
                          inferences=400, resolution_w=0.001)
    truth = (ACTIVE_W - IDLE_W) * (t1 - t0) / 400
    assert est.energy_per_inference_j == pytest.approx(truth, rel=1e-12)
    assert (est.avg_idle_w, est.avg_active_w) == pytest.approx((IDLE_W, ACTIVE_W))
    assert est.components_j["drift"] == 0.0 and est.components_j["statistical"] == 0.0
    # The gap from each mark to the first/last sample inside, times the 1.5 W step.
    first_gap = t[t >= t0][0] - t0
    last_gap = t1 - t[t <= t1][-1]
    assert est.components_j["edges"] == pytest.approx(1.5 * (first_gap + last_gap) / 400)
    assert est.components_j["resolution"] == pytest.approx(0.5 * (t1 - t0) * 0.002 / 400)
    assert not est.partial and est.coverage == pytest.approx(1.0)
    assert est.samples_used == 100
    result = est.as_dict()
    json.dumps(result)  # JSON-able
    assert result["inferences_per_joule"] == pytest.approx(1 / truth)


def test_baseline_drift_enters_the_uncertainty_and_is_warned():
    t0, t1 = 3.0, 13.0
    t, p = step_samples(t0, t1, idle_after=2.6)
    est = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3.0),
                          inferences=100)
    assert est.avg_idle_w == pytest.approx(2.3)
    assert est.components_j["drift"] == pytest.approx(0.5 * 0.6 * 10 / 100)
    assert any("drifted" in w for w in est.warnings)


def test_meter_lost_mid_window_gives_partial_energy_from_the_covered_part():
    t0, t1 = 3.0, 23.0
    t, p = step_samples(t0, t1, gap=(11.0, 40.0))  # lost at 11 s, never back
    est = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=None, inferences=1000)
    assert est.partial
    assert 0.35 < est.coverage < 0.5
    # Steady power: scaling the covered part up gives the full-window figure.
    assert est.energy_per_inference_j == pytest.approx(1.5 * 20 / 1000, rel=1e-9)
    assert any("partial" in w and "%" in w for w in est.warnings)
    assert any("one idle baseline" in w for w in est.warnings)


def test_short_window_warns_with_the_seconds_and_inferences_needed():
    t0, t1 = 3.0, 4.0
    t, p = step_samples(t0, t1, rate=7.0)
    est = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3),
                          inferences=50, timestamp_uncertainty_s=0.01)
    warning = next(w for w in est.warnings if "run at least" in w)
    assert "7 independent meter readings (7.0/s, 7 polls)" in warning and "inferences" in warning
    assert est.window_long_enough is False
    assert est.needed_window_s > 1.0 and est.needed_inferences > 50
    assert est.needed_inferences == math.ceil(50 * est.needed_window_s / 1.0)
    # A window of the advised length meets the 2 % target whatever the sample phase.
    t1 = t0 + est.needed_window_s
    for phase in np.linspace(0.0, 1 / 7.0, 8, endpoint=False):
        t, p = step_samples(t0, t1, rate=7.0, phase=phase)
        longer = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3),
                                 inferences=est.needed_inferences, timestamp_uncertainty_s=0.01)
        assert longer.relative_uncertainty <= 0.02 and longer.window_long_enough
        assert not any("run at least" in w for w in longer.warnings)


def test_no_samples_in_window_or_no_baseline_gives_no_energy_but_says_why():
    t, p = step_samples(3.0, 4.0, gap=(2.5, 10.0))
    est = estimate_energy(t, p, window=(3.0, 4.0), before=(0, 3.0), inferences=10)
    assert est.energy_per_inference_j is None and est.partial
    assert "no meter readings inside" in est.warnings[0]
    est = estimate_energy(t, p, window=(3.0, 4.0), before=(20, 30), inferences=10)
    assert est.energy_per_inference_j is None and "no idle baseline" in est.warnings[0]


def test_zero_inferences_and_bad_windows():
    t, p = step_samples(3.0, 8.0)
    est = estimate_energy(t, p, window=(3.0, 8.0), before=(0, 3.0), inferences=0)
    assert est.energy_per_inference_j is None and est.energy_window_j == pytest.approx(7.5, rel=0.05)
    with pytest.raises(EdgeError):
        estimate_energy(t, p, window=(8.0, 3.0), before=(0, 3.0), inferences=1)
    with pytest.raises(EdgeError):
        estimate_energy(t, p, window=(3.0, 8.0), before=(0, 3.0), inferences=-1)


def held_samples(t0, t1, *, refresh=0.5, tick_phase=0.2, poll=1 / 7.0, poll_phase=0.05, end=None,
                 noise=0.0, seed=0, counter_scale=1.0):
    """Polls of a meter that measures every `refresh` s and shows each reading until the next:
    (poll times, power shown, repeat flags, energy counter in Wh as whole mWh)."""
    end = end if end is not None else t1 + 3.0
    ticks = np.arange(tick_phase, end, refresh)
    noise_w = np.random.default_rng(seed).normal(0.0, noise, ticks.size)
    tick_power = np.where((ticks >= t0) & (ticks <= t1), ACTIVE_W, IDLE_W) + noise_w
    # The counter adds each reading over the time it was shown, as the emulator's does.
    counted_wh = np.concatenate(([0.0], np.cumsum(tick_power[:-1] * refresh))) / 3600.0 * counter_scale
    polls = np.arange(poll_phase, end, poll)
    polls = polls[polls >= ticks[0]]
    shown = np.searchsorted(ticks, polls, side="right") - 1
    repeat = np.concatenate(([False], shown[1:] == shown[:-1]))
    return polls, tick_power[shown], repeat, np.floor(counted_wh[shown] * 1000.0) / 1000.0


def test_a_held_reading_counts_once_and_never_leaks_into_the_window():
    t0, t1 = 3.25, 8.25  # just after refreshes at 3.2 and 8.2 s: the idle reading is shown into the window
    t, p, repeat, _ = held_samples(t0, t1)
    truth = (ACTIVE_W - IDLE_W) * (t1 - t0) / 250
    est = estimate_energy(t, p, repeat=repeat, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3),
                          inferences=250)
    assert est.energy_per_inference_j == pytest.approx(truth, rel=1e-9)
    assert est.readings_used == 9 and est.samples_used == 35  # 3.7 .. 7.7 s certainly inside
    assert est.reading_rate_hz == pytest.approx(9 / 5.0) and est.sample_rate_hz == pytest.approx(7.0)
    # The edge term: the 1.5 W step at t0 over the stretch out to the first poll that showed the first
    # reading taken inside (3.7 s); at t1 the reading taken at 8.2 s shows no step.
    first_shown = t[t > 3.7][0]
    assert est.components_j["edges"] == pytest.approx(1.5 * (first_shown - t0) / 250)
    # Taking every poll for a new reading (as before the refresh was modelled) counts the idle
    # reading shown after t0 as the workload's, and trusts 3.5 times too many readings.
    naive = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3), inferences=250)
    assert naive.energy_per_inference_j < 0.95 * truth
    assert naive.readings_used == 35


def test_statistics_count_independent_readings_not_polls():
    t0, t1 = 3.0, 63.0
    t, p, repeat, _ = held_samples(t0, t1, noise=0.05, seed=4)
    held = estimate_energy(t, p, repeat=repeat, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3),
                           inferences=3000)
    naive = estimate_energy(t, p, window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3), inferences=3000)
    # Each reading is polled 3-4 times: treating the repeats as independent shrinks the standard
    # error by about sqrt(3.5).
    ratio = held.components_j["statistical"] / naive.components_j["statistical"]
    assert 1.5 < ratio < 2.4
    assert 118 <= held.readings_used <= 120 and naive.readings_used > 3 * held.readings_used


def counter_estimate(**options):
    t0, t1 = 3.0, 123.0
    t, p, repeat, counter = held_samples(t0, t1, noise=0.02, seed=2, **options)
    truth = (ACTIVE_W - IDLE_W) * (t1 - t0) / 6000
    est = estimate_energy(t, p, repeat=repeat, counter_wh=counter, counter_step_wh=0.001,
                          window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3), inferences=6000)
    return est, truth


def test_the_meters_energy_counter_is_a_second_figure_with_its_1_mwh_step_in_the_uncertainty():
    est, truth = counter_estimate()
    assert est.counter_agrees and not any("disagree" in w for w in est.warnings)
    assert abs(est.counter_energy_per_inference_j - truth) <= est.counter_uncertainty_j
    # Read where the count has just gone up, the truncation costs a fraction of the 3.6 J step.
    assert 0 < est.counter_components_j["counter_step"] * 6000 < 3.6
    assert est.counter_span_s > est.window_s
    assert est.as_dict()["counter_uncertainty_components_mj"]["counter_step"] > 0


def test_a_counter_that_disagrees_with_the_readings_is_reported():
    est, truth = counter_estimate(counter_scale=1.2)
    assert est.counter_agrees is False
    assert any("disagree beyond their combined uncertainty" in w for w in est.warnings)
    assert est.energy_per_inference_j == pytest.approx(truth, rel=0.01)  # the readings stand


def test_a_counter_cleared_during_the_run_gives_no_counter_figure():
    t0, t1 = 3.0, 13.0
    t, p, repeat, counter = held_samples(t0, t1)
    counter = np.where(t > 8.0, counter - counter[t > 8.0][0], counter)  # cleared at 8 s
    est = estimate_energy(t, p, repeat=repeat, counter_wh=counter, counter_step_wh=0.001,
                          window=(t0, t1), before=(0, t0), after=(t1 + 0.5, t1 + 3), inferences=100)
    assert est.counter_energy_per_inference_j is None and est.energy_per_inference_j is not None
    assert any("counter went back" in w for w in est.warnings)


def bar_cases(window_s, seeds):
    cases = []
    for seed in seeds:
        result, truth_j = emulated_step_session(window_s, seed)  # UM25C, 0.5 s refresh
        error_j = result["energy_per_inference_mj"] / 1e3 - truth_j
        counter_error_j = result["counter_energy_per_inference_mj"] / 1e3 - truth_j
        cases.append((seed, result, error_j / truth_j, abs(error_j) * 1e3 <= result["uncertainty_mj"],
                      abs(counter_error_j) * 1e3 <= result["counter_uncertainty_mj"]))
    return cases


@pytest.mark.parametrize("window_s", [5.0, 30.0])
def test_energy_bar_on_a_um25c_that_refreshes_twice_a_second(window_s):
    cases = bar_cases(window_s, range(12))
    for seed, result, error, covered, counter_covered in cases:
        assert result["emulated"] and result["source"] == "emulated meter"
        assert 1.7 <= result["reading_rate_hz"] <= 2.2 and 6.5 <= result["sample_rate_hz"] <= 8.0
        assert covered and counter_covered, (seed, error, result["relative_uncertainty"])
        if result["window_long_enough"]:
            assert abs(error) <= 0.02, (seed, error)
        else:
            assert result["needed_window_s"] > window_s
            assert any("run at least" in w for w in result["warnings"])
        # MLPerf Power's practice: idle measured before and after the timed loop.
        assert result["readings_idle_before"] >= 5 and result["readings_idle_after"] >= 5
    uncertainties = [result["relative_uncertainty"] for _, result, _, _, _ in cases]
    if window_s == 5.0:  # ±2 % needs far more than 5 s at 2 readings a second: the tool says so
        assert not any(result["window_long_enough"] for _, result, _, _, _ in cases)
        assert max(uncertainties) < 0.16
    else:  # not vacuous: the edge term shrinks with the window
        assert max(uncertainties) < 0.03
    print(f"{window_s:g} s: max |error| {max(abs(c[2]) for c in cases):.3%}, uncertainty "
          f"±{min(uncertainties):.2%}..±{max(uncertainties):.2%} over {len(cases)} seeds")


def test_a_window_the_tool_calls_long_enough_meets_2_percent():
    for seed, result, error, covered, _ in bar_cases(90.0, range(3)):
        assert result["window_long_enough"] and result["needed_window_s"] < 90.0
        assert covered and abs(error) <= 0.02
