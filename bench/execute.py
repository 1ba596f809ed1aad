"""Running one planned run in a fresh process (clean memory figures; a crashing graph is a failed
row, not the end of the study), with the machine's CPU use by other processes during it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from edge_slm.common.documents import host_facts, utc_now
from edge_slm.runtime import cli as edge_run

from . import baseline
from .plan import BASELINE, PlannedRun, StudySettings
from .store import ROW_SCHEMA, ROW_SCHEMA_VERSION


# ---- running one ---------------------------------------------------------------------------------

def _command(run: PlannedRun, settings: StudySettings, output: Path, python: str) -> list:
    # `python -m` rather than the console scripts: works in any environment that has the package.
    args = [python, "-m", (baseline if run.kind == BASELINE else edge_run).__name__]
    if run.kind == BASELINE:
        args += [run.artifact, "--mode", run.mode]
    else:
        args += ["--model", run.artifact, "--bench", "--backend", run.backend]
    args += ["--threads", str(run.threads), "--warmup", str(settings.warmup), "--output", str(output), "-q"]
    if settings.runs is not None:
        args += ["--runs", str(settings.runs)]
    if settings.min_seconds is not None:
        args += ["--min-seconds", str(settings.min_seconds)]
    if settings.data and run.takes_text:
        args += ["--input", settings.data]
    if settings.meter:
        args += ["--meter", settings.meter, "--port", settings.port, "--baseline-seconds",
                 str(settings.baseline_seconds)]
    return args


def execute(run: PlannedRun, settings: StudySettings, scratch: Path, python: str = sys.executable) -> dict:
    """Run one planned run in a fresh process; returns its results row (status ok or failed)."""
    output = Path(tempfile.mkstemp(prefix=".run-", suffix=".json", dir=scratch)[1])
    output.unlink()  # the run writes it atomically; its absence means the run did not finish
    started, clock = utc_now(), time.monotonic()
    machine_before, children_before = _machine_cpu_seconds(), _children_cpu_seconds()
    process = subprocess.Popen(_command(run, settings, output, python), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    timed_out = False
    try:
        _, stderr = process.communicate(timeout=settings.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        _, stderr = process.communicate()
    except BaseException:  # Ctrl-C, SIGTERM: never leave a benchmark running behind us
        process.kill()
        process.wait()
        output.unlink(missing_ok=True)
        raise
    other_cpu = _other_cpu_share(machine_before, _machine_cpu_seconds(),
                                 _children_cpu_seconds() - children_before)
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    result, error = None, None
    if timed_out:
        error = f"timed out after {settings.timeout_s:g} s and was killed"
    elif process.returncode == 0:
        try:
            result = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            error = f"finished but its result file is unreadable ({type(e).__name__})"
    else:
        error = _failure(process.returncode, lines)
    output.unlink(missing_ok=True)
    if result is not None and result.get("predictions") is not None:
        # Per-text predictions would make every row as long as the data set; evaluation keeps the counts.
        result = dict(result, predictions=None, predictions_dropped=len(result["predictions"]))
    return {
        "schema": ROW_SCHEMA, "schema_version": ROW_SCHEMA_VERSION, "key": run.key, "kind": run.kind,
        "artifact": run.artifact, "threads": run.threads, "backend": run.backend, "mode": run.mode,
        "source": run.source, "settings": settings.measurement(), "host": host_facts(),
        "started": started, "finished": utc_now(), "wall_s": round(time.monotonic() - clock, 3),
        "status": "ok" if result is not None else "failed",
        "exit_code": None if timed_out else process.returncode, "error": error,
        "other_cpu_share": other_cpu,
        "warnings": [line.split("warning: ", 1)[1] for line in lines if "warning: " in line][:20],
        "result": result,
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
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed ({name}); last output: {last}"[:400]
    return f"exited with code {returncode}: {last}"[:400]
