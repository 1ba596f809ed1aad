#!/usr/bin/env python3
"""Soak test of edge-power: record from an emulated meter for a long time, with faults.

Runs two real processes, as a user would: `edge-power emulate` (UM25C on a pty, 1 % of frames
preceded by garbage, unplugged once at --disconnect-at and back --reconnect-after seconds later,
served through a symlink so the port path survives) and `edge-power record` for --minutes. Then
it checks that every valid sample the emulator sent was stored (frames sent = CSV rows), that
every garbage burst was counted, and that the recorder reconnected once. Exit 0 when all hold.

    .venv/bin/python scripts/soak_power.py --minutes 10 --out-dir soak-results
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--protocol", default="um25c", choices=["um24c", "um25c", "um34c"])
    parser.add_argument("--garbage", type=float, default=0.01, help="fraction of frames with garbage")
    parser.add_argument("--disconnect-at", type=float, default=None,
                        help="seconds after start [default: half way]")
    parser.add_argument("--reconnect-after", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", default=None, help="where to keep samples and reports")
    args = parser.parse_args()

    duration = args.minutes * 60.0
    disconnect_at = args.disconnect_at if args.disconnect_at is not None else duration / 2
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="edge-power-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, EDGE_POWER_STATE_DIR=str(out / "state"))
    cli = [sys.executable, "-m", "edge_slm.power.cli"]
    link = out / f"tty-{args.protocol}"

    emulator = subprocess.Popen(
        cli + ["emulate", "--protocol", args.protocol, "--trace", "steps:0=2.0,60=3.5,120=2.0",
               "--garbage", str(args.garbage), "--seed", str(args.seed),
               "--disconnect-at", str(disconnect_at), "--reconnect-after", str(args.reconnect_after),
               "--link", str(link), "--stats-out", str(out / "emulator_stats.json")],
        env=env, stdout=subprocess.PIPE, stderr=open(out / "emulator.log", "w"), text=True)
    port = emulator.stdout.readline().strip().removeprefix("port: ")
    print(f"emulator pid {emulator.pid} serving {port}; recording {duration:.0f} s "
          f"(garbage {args.garbage:.1%}, unplug at {disconnect_at:.0f} s for {args.reconnect_after:g} s)",
          flush=True)
    started = time.monotonic()
    recorder = subprocess.run(
        cli + ["record", "--meter", args.protocol, "--port", port, "--duration", str(duration),
               "-o", str(out / "samples.csv"), "--summary-json", str(out / "record_summary.json")],
        env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    emulator.send_signal(signal.SIGTERM)
    emulator.wait(timeout=30)
    (out / "record.log").write_text(recorder.stdout + recorder.stderr)
    if recorder.returncode != 0:
        print(f"recorder failed ({recorder.returncode}):\n{recorder.stderr}", file=sys.stderr)
        return 1

    sent = json.loads((out / "emulator_stats.json").read_text())
    recorded = json.loads((out / "record_summary.json").read_text())
    with open(out / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    all_emulated = all(row["emulated"] == "true" for row in rows)
    checks = {
        "frames sent == rows stored": sent["frames_sent"] == len(rows),
        "rows stored == samples counted": len(rows) == recorded["samples"],
        "garbage injected == garbage counted": sent["garbage_injected"] == recorded["garbage_frames"],
        "one disconnect, one reconnect": (sent["disconnects"], sent["reconnects"],
                                          recorded["disconnects"], recorded["reconnects"]) == (1, 1, 1, 1),
        "every row labelled emulated": all_emulated and recorded["emulated"] is True,
    }
    report = {
        "duration_s": round(elapsed, 1),
        "frames_sent": sent["frames_sent"],
        "rows_stored": len(rows),
        "garbage_injected": sent["garbage_injected"],
        "garbage_counted": recorded["garbage_frames"],
        "garbage_bytes": recorded["garbage_bytes"],
        "emulator_requests": sent["requests"],
        "meter_timeouts": recorded["timeouts"],
        "disconnects": recorded["disconnects"],
        "reconnects": recorded["reconnects"],
        "rate_hz": recorded["rate_hz"],
        # The meter refreshes every 0.5 s: most polls repeat the reading before (repeat=true).
        "new_readings": sum(row["repeat"] == "false" for row in rows),
        "new_readings_per_s": round(sum(row["repeat"] == "false" for row in rows) / elapsed, 3),
        "warnings": recorded["warnings"],
        "checks": checks,
        "out_dir": str(out),
    }
    (out / "soak_report.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        if key not in ("checks", "warnings"):
            print(f"{key:>20}: {value}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
