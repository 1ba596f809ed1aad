#!/usr/bin/env python3
"""`make bench-power`: the energy accuracy bar on an EMULATED UM25C that refreshes like the real one.

For each window length and seed, one measure_workload session on the virtual clock
(edge_slm.power.accuracy): idle 2.0 W, 3.5 W during the timed loop, the meter refreshing every
0.5 s and polled as fast as the driver goes. Checks, over every case:
  - the reported uncertainty covers the true error (readings, and the meter's energy counter);
  - energy per inference is within ±2 % of the truth wherever the tool says the window is long
    enough for ±2 % (`window_long_enough`), and the tool says so for no window it cannot back.
Writes bench-results/power_accuracy.json; exit 0 when every check holds. Every figure is EMULATED.

    .venv/bin/python scripts/bench_power.py --windows 5,30,90 --seeds 12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge_slm.common.documents import host_facts, utc_now
from edge_slm.common.files import write_json
from edge_slm.power.accuracy import emulated_step_session

REPO = Path(__file__).resolve().parents[1]


def run_case(window_s: float, seed: int, protocol: str, refresh_s) -> dict:
    result, truth_j = emulated_step_session(window_s, seed, protocol=protocol, refresh_s=refresh_s)
    measured_j = result["energy_per_inference_mj"] / 1e3
    error_j = measured_j - truth_j
    counter_j = result["counter_energy_per_inference_mj"]
    counter_error_j = None if counter_j is None else counter_j / 1e3 - truth_j
    return {
        "window_s": window_s,
        "seed": seed,
        "measured_window_s": result["window_s"],
        "truth_mj": round(truth_j * 1e3, 6),
        "energy_per_inference_mj": result["energy_per_inference_mj"],
        "uncertainty_mj": result["uncertainty_mj"],
        "relative_error": round(error_j / truth_j, 6),
        "relative_uncertainty": result["relative_uncertainty"],
        "covered": abs(error_j) * 1e3 <= result["uncertainty_mj"],
        "window_long_enough": result["window_long_enough"],
        "needed_window_s": result["needed_window_s"],
        "readings_used": result["readings_used"],
        "samples_used": result["samples_used"],
        "reading_rate_hz": result["reading_rate_hz"],
        "sample_rate_hz": result["sample_rate_hz"],
        "counter_energy_per_inference_mj": counter_j,
        "counter_uncertainty_mj": result["counter_uncertainty_mj"],
        "counter_relative_error": None if counter_j is None else round(counter_error_j / truth_j, 6),
        "counter_covered": None if counter_j is None else abs(counter_error_j) * 1e3 <= result["counter_uncertainty_mj"],
        "counter_agrees": result["counter_agrees"],
        "emulated": result["emulated"],
    }


def summarise(cases: list) -> dict:
    by_window = {}
    for window in sorted({c["window_s"] for c in cases}):
        rows = [c for c in cases if c["window_s"] == window]
        long_enough = [c for c in rows if c["window_long_enough"]]
        by_window[f"{window:g}"] = {
            "cases": len(rows),
            "max_abs_relative_error": round(max(abs(c["relative_error"]) for c in rows), 6),
            "relative_uncertainty_range": [min(c["relative_uncertainty"] for c in rows),
                                           max(c["relative_uncertainty"] for c in rows)],
            "covered": sum(c["covered"] for c in rows),
            "said_long_enough": len(long_enough),
            "long_enough_max_abs_relative_error": (round(max(abs(c["relative_error"]) for c in long_enough), 6)
                                                   if long_enough else None),
            "needed_window_s_range": [min(c["needed_window_s"] for c in rows), max(c["needed_window_s"] for c in rows)],
            "readings_per_s_median": sorted(c["reading_rate_hz"] for c in rows)[len(rows) // 2],
            "polls_per_s_median": sorted(c["sample_rate_hz"] for c in rows)[len(rows) // 2],
            "counter_max_abs_relative_error": round(max(abs(c["counter_relative_error"]) for c in rows), 6),
            "counter_relative_uncertainty_range": [
                round(min(c["counter_uncertainty_mj"] / c["truth_mj"] for c in rows), 6),
                round(max(c["counter_uncertainty_mj"] / c["truth_mj"] for c in rows), 6)],
            "counter_covered": sum(bool(c["counter_covered"]) for c in rows),
            "counter_agrees": sum(bool(c["counter_agrees"]) for c in rows),
        }
    checks = {
        "uncertainty covers the error in every case": all(c["covered"] for c in cases),
        "within ±2 % wherever the tool says the window is long enough":
            all(abs(c["relative_error"]) <= 0.02 for c in cases if c["window_long_enough"]),
        "counter uncertainty covers its error in every case": all(c["counter_covered"] for c in cases),
        "every figure labelled emulated": all(c["emulated"] for c in cases),
    }
    return {"by_window": by_window, "checks": checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="5,30,90", help="timed window lengths, seconds")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--protocol", default="um25c", choices=["um24c", "um25c", "um34c"])
    parser.add_argument("--refresh-s", type=float, default=None,
                        help="meter refresh period [default: the model's, 0.5 s]")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "power_accuracy.json"))
    args = parser.parse_args()

    windows = [float(w) for w in args.windows.split(",")]
    started = time.monotonic()
    cases = [run_case(w, seed, args.protocol, args.refresh_s) for w in windows for seed in range(args.seeds)]
    summary = summarise(cases)
    document = {
        "benchmark": "power_accuracy",
        "created": utc_now(),
        "host": host_facts(),
        "source": "EMULATED meter (edge_slm.power.accuracy, virtual clock)",
        "meter": args.protocol,
        "refresh_s": args.refresh_s if args.refresh_s is not None else "model default (0.5 s)",
        "device": {"idle_w": 2.0, "active_w": 3.5, "noise_w": 0.02, "inferences_per_s": 50.0},
        "target_relative_uncertainty": 0.02,
        "seconds": round(time.monotonic() - started, 1),
        **summary,
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, document)
    for window, row in summary["by_window"].items():
        print(f"{window:>4} s window, {row['cases']} seeds (EMULATED {args.protocol}): max |error| "
              f"{row['max_abs_relative_error']:.3%}, uncertainty ±{row['relative_uncertainty_range'][0]:.2%}"
              f"..±{row['relative_uncertainty_range'][1]:.2%}, covered {row['covered']}/{row['cases']}, "
              f"long enough {row['said_long_enough']}/{row['cases']} (needed "
              f"{row['needed_window_s_range'][0]:g}..{row['needed_window_s_range'][1]:g} s); counter max "
              f"|error| {row['counter_max_abs_relative_error']:.2%}, covered {row['counter_covered']}/{row['cases']}")
    for name, ok in summary["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"-> {args.out}")
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
