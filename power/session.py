"""Energy per inference around a benchmark loop: the one entry point the runtime calls.

    result, payload = measure_workload(workload, meter="um25c", port="/dev/rfcomm0")

`workload()` runs the benchmark loop and returns `(inferences, payload)` (or just the count).
The sampler is started and must give a first reading before anything else happens (so a wrong
port or meter fails fast, before the benchmark), then: idle baseline for `baseline_s`, mark the
window start, run the workload, mark the window end, let the device settle for `settle_s`, idle
baseline again for `after_baseline_s`, stop. All marks use the host monotonic clock, the same
clock that stamps the samples. This is MLPerf Power's practice for one board: power and
performance from the same timed run, idle measured before and after it, and the result says
whether the window was long enough for the stated uncertainty (`window_long_enough`,
`needed_window_s`, and a warning when it was not).

If the meter is lost during the run, the workload still finishes: the result is marked partial,
a one-line warning says so, and the samples so far stay in the CSV.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple

from edge_slm.common.errors import EdgeError

from .attribution import estimate_energy
from .meter import METERS, meter_names
from .sampler import Sampler

__all__ = ["measure_workload", "METERS", "METER_NAMES"]

METER_NAMES = tuple(meter_names())


def print_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _split_workload_return(returned: Any) -> Tuple[int, Any]:
    inferences, payload = (returned if isinstance(returned, tuple) and len(returned) == 2
                           else (returned, None))
    if isinstance(inferences, bool) or not isinstance(inferences, int) or inferences < 0:
        raise EdgeError(f"the workload returned {inferences!r} as its inference count",
                        "workload() must return (inferences, payload) with inferences an int >= 0")
    return inferences, payload


def measure_workload(workload: Callable[[], Any], *, meter: str, port: str, baseline_s: float = 3.0,
                     samples_csv: Optional[str] = None,
                     warn: Callable[[str], None] = print_to_stderr,
                     after_baseline_s: Optional[float] = None, settle_s: float = 0.5,
                     probe_timeout_s: float = 3.0, meter_options: Optional[dict] = None,
                     target_relative_uncertainty: float = 0.02,
                     clock: Optional[Callable[[], float]] = None) -> Tuple[dict, Any]:
    """Measure `workload()` with the meter at `port`; returns (JSON-able result, payload).

    `clock`: a VirtualClock (emulator.py) for sessions faster than real time against an emulator's
    VirtualSerial (given as meter_options={"opener": ...}); the workload sleeps on that clock.
    """
    if baseline_s <= 0:
        raise EdgeError(f"baseline must be positive, got {baseline_s} s",
                        "measure at least a second of idle power")
    after_baseline_s = baseline_s if after_baseline_s is None else after_baseline_s
    warnings = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    timing = {} if clock is None else {"clock": clock, "sleep": clock.sleep}
    sampler = Sampler(meter, port, csv_path=samples_csv, meter_options=meter_options,
                      probe_timeout_s=probe_timeout_s, warn=note, **timing)
    sampler.start()
    clock, sleep = sampler.clock, sampler.sleep
    try:
        before_start = clock()
        sleep(max(0.0, before_start + baseline_s - clock()))
        window_start = sampler.mark("inference window start")
        inferences, payload = _split_workload_return(workload())
        window_end = sampler.mark("inference window end")
        after = None
        if sampler.connected:
            sleep(settle_s)
            after_start = clock()
            sleep(after_baseline_s)
            after = (after_start, clock())
        else:
            note("meter not connected after the workload: no after-baseline")
    finally:
        summary = sampler.stop()

    samples = sampler.samples
    estimate = estimate_energy(
        [s.t for s in samples], [s.power_w for s in samples],
        resolution_w=[s.resolution_w for s in samples], repeat=[s.repeat for s in samples],
        counter_wh=[s.energy_wh for s in samples],
        counter_step_wh=sampler.driver.energy_counter_step_wh,
        window=(window_start, window_end), before=(before_start, window_start), after=after,
        inferences=inferences, timestamp_uncertainty_s=sampler.driver.timestamp_uncertainty_s,
        target_relative_uncertainty=target_relative_uncertainty)
    for message in estimate.warnings:
        note(message)
    if summary.disconnects and not estimate.partial:
        note(f"meter disconnected {summary.disconnects} time(s) during the measurement; "
             f"the inference window was still covered")
    if summary.garbage_frames:
        note(f"{summary.garbage_frames} garbage frame(s) ({summary.garbage_bytes} bytes) from the "
             f"meter were skipped")

    result = estimate.as_dict()
    result.update({
        "meter": meter,
        "meter_model": sampler.driver.model,
        "port": port,
        "emulated": summary.emulated,
        "source": "emulated meter" if summary.emulated else "meter",
        "emulator": summary.emulator,
        "partial": estimate.partial or (summary.error is not None),
        "garbage_frames": summary.garbage_frames,
        "garbage_bytes": summary.garbage_bytes,
        "meter_timeouts": summary.timeouts,
        "disconnects": summary.disconnects,
        "reconnects": summary.reconnects,
        "samples_total": summary.samples,
        "samples_csv": samples_csv,
        "window_start_monotonic_s": round(window_start, 6),
        "window_end_monotonic_s": round(window_end, 6),
        "baseline_s": baseline_s,
        "after_baseline_s": None if after is None else round(after[1] - after[0], 6),
        "method": "integral of (P - P_idle) over the timed loop's window (power and performance "
                  "from the same run), nearest independent reading certainly inside the window; "
                  "P_idle = mean of the idle baselines measured before and after the loop",
        "uncertainty_note": "edges (the meter's refresh rate), timing, 2-sigma statistics over "
                            "independent readings, resolution and baseline drift combined in "
                            "quadrature",
        "warnings": warnings,
    })
    return result, payload
