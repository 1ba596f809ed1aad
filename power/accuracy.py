"""Accuracy of energy per inference against an emulated meter whose truth is known (EMULATED).

    result, truth_j = emulated_step_session(window_s=30.0, seed=3)

The emulated device draws `idle_w`, then `active_w` for exactly the timed loop, then `idle_w`
again. The real driver, sampler, session and attribution read the emulator's real byte stream
through a VirtualSerial on a VirtualClock (faster than real time; the meter refreshes as the model
does, 0.5 s for a UM meter, unless `refresh_s` says otherwise), so the only thing not real is the
meter. The truth is (active_w - idle_w) x the loop's duration / inferences. The loop starts at a
seeded phase of the meter's refresh, so seeds cover the edge cases. `scripts/bench_power.py`
runs the bar over many seeds; the tests run it too.
"""

from __future__ import annotations

import random
from typing import Optional, Tuple

from .emulator import EmulatedSignal, FaultPlan, VirtualClock, VirtualSerial, make_engine
from .session import measure_workload
from .traces import LevelTrace


def emulated_step_session(window_s: float, seed: int, *, protocol: str = "um25c",
                          refresh_s: Optional[float] = None, idle_w: float = 2.0,
                          active_w: float = 3.5, noise_w: float = 0.02, baseline_s: float = 3.0,
                          inferences_per_s: float = 50.0, faults: Optional[FaultPlan] = None,
                          samples_csv: Optional[str] = None) -> Tuple[dict, float]:
    """One measure_workload session on the virtual clock: (result, true energy per inference J)."""
    clock = VirtualClock()
    level = LevelTrace(idle_w)
    engine = make_engine(protocol, EmulatedSignal(level, noise_w=noise_w, seed=seed), refresh_s=refresh_s)
    port = VirtualSerial(engine, clock, faults=faults, seed=seed)
    inferences = max(1, round(window_s * inferences_per_s))
    switched = {}

    def workload():
        switched["on"] = clock()
        level.set(active_w)
        clock.sleep(window_s)  # the meter is polled meanwhile, as by the sampler's thread
        level.set(idle_w)
        switched["off"] = clock()
        return inferences, None

    phase = random.Random(seed).uniform(0.0, 1.0)  # where the loop starts within a refresh period
    result, _ = measure_workload(workload, meter=protocol, port=f"virtual-{protocol}",
                                 meter_options={"opener": port.opener}, clock=clock,
                                 baseline_s=baseline_s + phase, after_baseline_s=baseline_s,
                                 samples_csv=samples_csv, warn=lambda message: None)
    truth_j = (active_w - idle_w) * (switched["off"] - switched["on"]) / inferences
    return result, truth_j
