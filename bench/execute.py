"""Running one planned run in a fresh process (clean memory figures; a crashing graph is a failed
row, not the end of the study), with the machine's CPU use by other processes during it."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from typing import Optional

from edge_slm.common.documents import host_facts, utc_now
from edge_slm.runtime import cli as edge_run

from . import baseline
from .plan import BASELINE, PlannedRun, StudySettings
from .remote_meter import metered_run
from .store import ROW_SCHEMA, ROW_SCHEMA_VERSION
from .transport import LocalTransport, Transport


# ---- running one ---------------------------------------------------------------------------------

def _command(run: PlannedRun, settings: StudySettings, python: str, artifact: str, data: Optional[str],
             port: Optional[str]) -> list:
    # `python -m` rather than the console scripts: works in any environment that has the package.
    args = [python, "-m", (baseline if run.kind == BASELINE else edge_run).__name__]
    if run.kind == BASELINE:
        args += [artifact, "--mode", run.mode]
    else:
        args += ["--model", artifact, "--bench", "--backend", run.backend]
    args += ["--threads", str(run.threads), "--warmup", str(settings.warmup), "--json", "-q"]
    if settings.runs is not None:
        args += ["--runs", str(settings.runs)]
    if settings.min_seconds is not None:
        args += ["--min-seconds", str(settings.min_seconds)]
    if data and run.takes_text:
        args += ["--input", data]
    if run.seq_len is not None:
        args += ["--seq-len", str(run.seq_len)]
    if settings.meter and settings.meter_on == "device":
        args += ["--meter", settings.meter, "--port", port, "--baseline-seconds", str(settings.baseline_seconds)]
    return args


def execute(run: PlannedRun, settings: StudySettings, transport: Optional[Transport] = None, *,
            python: str = sys.executable, artifact: Optional[str] = None, data: Optional[str] = None,
            port: Optional[str] = None, host: Optional[dict] = None) -> dict:
    """Run one planned run in a fresh process; returns its results row (status ok or failed).

    transport None: here. Otherwise on that machine, with python, artifact, data and port its paths
    for them and host its facts; a lost connection raises transport.DeviceUnreachable."""
    here = transport is None
    transport = transport or LocalTransport()
    started, clock = utc_now(), time.monotonic()
    machine_before, children_before = _machine_cpu_seconds(), _children_cpu_seconds()
    argv = _command(run, settings, python, artifact or run.artifact, data or settings.data, port or settings.port)
    def launch():
        return transport.run(argv, settings.timeout_s, guard=True)

    if settings.meter and settings.meter_on == "workstation":
        completed = metered_run(launch, transport, meter=settings.meter, port=settings.port,
                                baseline_s=settings.baseline_seconds)
    else:
        completed = launch()
    # Other processes' CPU share is known only here (a device's /proc is not sampled).
    other_cpu = _other_cpu_share(machine_before, _machine_cpu_seconds(),
                                 _children_cpu_seconds() - children_before) if here else None
    lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
    result, error = None, None
    if completed.timed_out:
        error = f"timed out after {settings.timeout_s:g} s and was killed"
    elif completed.returncode == 0:
        try:
            result = json.loads(completed.stdout)
        except ValueError:
            error = "finished but printed no readable result document"
    else:
        error = _failure(completed.returncode, lines)
    if result is not None and result.get("predictions") is not None:
        # Per-text predictions would make every row as long as the data set; evaluation keeps the counts.
        result = dict(result, predictions=None, predictions_dropped=len(result["predictions"]))
    row = new_row(run, settings, host if host is not None else host_facts(), started, error)
    row.update(wall_s=round(time.monotonic() - clock, 3), status="ok" if result is not None else "failed",
               exit_code=None if completed.timed_out else completed.returncode, other_cpu_share=other_cpu,
               warnings=[line.split("warning: ", 1)[1] for line in lines if "warning: " in line][:20],
               result=result)
    return row


def new_row(run: PlannedRun, settings: StudySettings, host: dict, started: str, error: Optional[str]) -> dict:
    """A results row; as returned, a failed run that never started (its device was lost)."""
    return {
        "schema": ROW_SCHEMA, "schema_version": ROW_SCHEMA_VERSION, "key": run.key, "kind": run.kind,
        "artifact": run.artifact, "threads": run.threads, "backend": run.backend, "mode": run.mode,
        "source": run.source, "device": run.device, "lengths": run.lengths, "settings": settings.measurement(),
        "host": host,
        "started": started, "finished": utc_now(), "wall_s": 0.0, "status": "failed", "exit_code": None,
        "error": error, "other_cpu_share": None, "warnings": [], "result": None,
    }


def _machine_cpu_seconds():
    """(busy, total) CPU-seconds of the whole machine so far, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # grows as each run is waited for
    return usage.ru_utime + usage.ru_stime


def _other_cpu_share(before, after, run_cpu_s: float) -> Optional[float]:
    """The share of the machine's CPU that processes other than the run used while it ran:
    on a shared host (or a device doing other work) that load inflates the run's latency."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy = after[0] - before[0]
    return round(min(1.0, max(0.0, (busy - run_cpu_s) / (after[1] - before[1]))), 4)


def _failure(returncode: int, lines: list) -> str:
    """One line saying why a run failed: the tool's own error line, else how it died."""
    for line in reversed(lines):
        for marker in ("edge-run: error: ", "edge-baseline: error: "):
            if marker in line:
                return line.split(marker, 1)[1]
    last = lines[-1] if lines else "no output"
    if returncode < 0 or returncode > 128:  # killed here (-N), or on a device under its watchdog (128+N)
        number = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"crashed ({name}); last output: {last}"[:400]
    return f"exited with code {returncode}: {last}"[:400]
