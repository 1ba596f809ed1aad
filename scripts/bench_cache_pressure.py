"""`make bench-cache-pressure`: is a short request limited by arithmetic or by memory?

Short requests do little arithmetic per weight byte (every inference reads all the weights, whatever
its length). So a short request is fast only while the weights stay in the CPU's caches, and a
neighbour that streams through memory on another core (another tenant of a VM, another process on a
board) evicts them. This times, in one process, each model's length-aware dynamic-int8 artifact at
25 tokens (SST-2 dev's mean) and its fixed-128 artifact, alternating rounds without and with such a
neighbour (a process adding to a 64 MB array on the other core). A length-aware/fixed ratio that
falls when the neighbour runs means the short requests were riding on the cache.

Takes the artifacts `make bench-lengths` converted (its work directory, printed in its log):
  python scripts/bench_cache_pressure.py --artifacts /tmp/edge-lengths-XXXX
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NEIGHBOUR = """
import sys, time
import numpy as np
a = np.ones(64 * 2 ** 20 // 8)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    a += 1.0
"""
SHORT_LEN, FIXED_LEN = 25, 128


def steady_ms(model, length: int, seconds: float = 1.0) -> float:
    """Mean ms per inference at `length` tokens, after one warm-up inference, over ~`seconds`."""
    model.pad_every_request_to(length)
    model.fill_random(np.random.default_rng(0))
    model.run_prepared()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run_prepared()
        runs += 1
    return (time.perf_counter() - start) / runs * 1e3


def measure(name: str, work: Path, rounds: int) -> dict:
    from edge_slm.runtime.engine import load_model

    short = load_model(work / name / "dynamic" / f"{name}-dynamic.tflite", threads=1)
    fixed = load_model(work / name / "fixed" / f"{name}-dynamic.tflite", threads=1)
    figures = {"quiet": [], "neighbour": []}
    for _ in range(rounds):
        for condition in ("quiet", "neighbour"):
            neighbour = None
            if condition == "neighbour":
                neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, "30"])
                time.sleep(0.5)  # let it fill its array
            try:
                figures[condition].append({"length_aware_ms": steady_ms(short, SHORT_LEN),
                                           "fixed_ms": steady_ms(fixed, FIXED_LEN)})
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait(timeout=30)
    result = {}
    for condition, rows in figures.items():
        aware = statistics.median(r["length_aware_ms"] for r in rows)
        fixed_ms = statistics.median(r["fixed_ms"] for r in rows)
        result[condition] = {"length_aware_ms_at_25": aware, "fixed_128_ms": fixed_ms, "ratio": fixed_ms / aware,
                             "rounds": rows}
    counter = short.mac_counter
    counter.macs(SHORT_LEN)  # the weights are listed with the first count
    result["weight_bytes"] = counter.weight_bytes
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, help="the work directory of make bench-lengths")
    parser.add_argument("--models", default="tinybert,distilbert,mobilebert")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench-results/cache_pressure.json")
    args = parser.parse_args()

    from edge_slm.common.documents import host_facts, utc_now
    from edge_slm.common.files import write_json

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if len(os.sched_getaffinity(0)) < 2:
        print("bench_cache_pressure: error: needs 2 cores, one for the neighbour (hint: run it on the "
              "2-core host)", file=sys.stderr)
        return 2
    document = {"benchmark": "short requests with and without a memory-streaming neighbour", "created": utc_now(),
                "host": host_facts(), "settings": {"rounds": args.rounds, "short_len": SHORT_LEN,
                                                   "fixed_len": FIXED_LEN, "threads": 1,
                                                   "neighbour": "numpy: a += 1.0 over a 64 MB array, other core"},
                "models": {}}
    for name in args.models.split(","):
        document["models"][name] = r = measure(name, Path(args.artifacts), args.rounds)
        print(f"{name:11s} weights {r['weight_bytes'] / 1e6:5.1f} MB | quiet: 25 tokens "
              f"{r['quiet']['length_aware_ms_at_25']:.2f} ms, 128 {r['quiet']['fixed_128_ms']:.2f} ms, "
              f"{r['quiet']['ratio']:.2f}x | neighbour: {r['neighbour']['length_aware_ms_at_25']:.2f} ms, "
              f"{r['neighbour']['fixed_128_ms']:.2f} ms, {r['neighbour']['ratio']:.2f}x", flush=True)
        write_json(Path(args.out), document)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
