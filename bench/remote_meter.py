"""Energy of a run on a board, read from a meter on the workstation (edge-bench --meter-on workstation).

A common set-up: the meter sits in the board's supply cable and talks Bluetooth to the workstation.
The workstation samples it on its own monotonic clock for the whole run: an idle baseline, the
board's `edge-run --bench` process, a settle, an idle baseline again. The board reports its timed
loop's window on the board's monotonic clock (benchmark.window_monotonic_s); the window is mapped
onto the workstation's clock by timestamps exchanged over the connection just before and just
after the run (transport.clock_offset). The mapping's uncertainty (half the best round trip, plus
half the drift between the two exchanges) joins the meter's timestamp uncertainty at both edges
of the window, so it is part of the energy's stated uncertainty.
"""

from __future__ import annotations

import json
import math
from typing import Callable

from edge_slm.power.attribution import estimate_energy
from edge_slm.power.sampler import Sampler

from .transport import Completed, Transport

SETTLE_S = 0.5


def metered_run(run: Callable[[], Completed], transport: Transport, *, meter: str, port: str,
                baseline_s: float) -> Completed:
    """run() on the board with the meter read here; a successful run's document gets its `energy`."""
    warnings = []
    sampler = Sampler(meter, port, warn=warnings.append)
    sampler.start()  # a wrong port or meter fails here, before the board does anything
    clock, sleep = sampler.clock, sampler.sleep
    try:
        before_start = clock()
        sleep(baseline_s)
        offset_before = transport.clock_offset()
        run_start = clock()
        completed = run()
        offset_after = transport.clock_offset()
        sleep(SETTLE_S)
        after_start = clock()
        sleep(baseline_s)
        after = (after_start, clock())
    finally:
        summary = sampler.stop()
    if completed.returncode != 0 or completed.timed_out:
        return completed
    document = json.loads(completed.stdout)
    bench = document.get("benchmark") or {}
    if "window_monotonic_s" not in bench:  # a TF baseline's loop does not report its window
        return completed
    offset = (offset_before[0] + offset_after[0]) / 2
    drift = abs(offset_after[0] - offset_before[0])
    mapping_s = max(offset_before[1], offset_after[1]) + drift / 2
    board_start, board_end = bench["window_monotonic_s"]
    samples = sampler.samples
    estimate = estimate_energy(
        [s.t for s in samples], [s.power_w for s in samples], resolution_w=[s.resolution_w for s in samples],
        window=(board_start - offset, board_end - offset), before=(before_start, run_start), after=after,
        inferences=bench["runs"],
        timestamp_uncertainty_s=math.hypot(sampler.driver.timestamp_uncertainty_s, mapping_s))
    energy = estimate.as_dict()
    energy.update(meter=meter, meter_model=sampler.driver.model, port=port, meter_on="workstation",
                  emulated=summary.emulated, source="emulated meter" if summary.emulated else "meter",
                  partial=estimate.partial or summary.error is not None, samples_total=summary.samples,
                  disconnects=summary.disconnects, baseline_s=baseline_s,
                  clock_mapping={"offset_s": round(offset, 6), "uncertainty_s": round(mapping_s, 6),
                                 "drift_s": round(drift, 6), "method": "best of 9 round trips over the "
                                 "connection before and after the run (Cristian)"},
                  warnings=warnings + list(estimate.warnings))
    document["energy"] = energy
    return Completed(completed.returncode, json.dumps(document), completed.stderr)
