"""`edge-bench`: the model-selection study as a library (plan.py, execute.py, store.py, summary.py,
report.py and plots.py hold its parts).

    rows = run_study(["a.tflite", "b.tflite"], "study/", threads=[1, 2], baseline_modes=["tf.function"])

plan_runs() makes one run per artifact x threads x backend (plus, opt-in, one TF fp32 baseline per
source model x threads). run_study() runs each in a fresh process (`edge-run ... --output`, or
`edge_slm.bench.baseline` for a baseline), so every run starts with clean memory figures and a
crashing graph becomes a failed row instead of ending the study. Each finished run is appended to
DIR/results.jsonl at once (flush + fsync), so an interrupt keeps the finished runs and `resume`
skips them. summarize() turns a row into the figures the report and the recommendation use;
recommend() picks the best artifact under constraints, or says which constraint nothing meets.

Device side: this module imports no TensorFlow (baselines run in their own, host-only processes).

results.jsonl, one JSON object per line (schema "edge-slm.study-run", version 1):
  schema, schema_version, key (what --resume matches), kind ("artifact" | "tf-baseline"),
  artifact (absolute path), threads, backend (edge-run's --backend; "tensorflow" for baselines),
  mode (baselines: "tf.function" | "eager"), source (the source model a baseline stands for),
  device (edge-bench --device: the board it ran on; null: this host),
  lengths (with --data: "own" = each text at its own length, "max" = padded to the artifact's longest;
  null without --data: the longest),
  settings (runs, min_seconds, warmup, data, meter, baseline_seconds), host (the facts of the machine
  it ran on; a board's include glibc and free disk from its probe),
  started, finished, wall_s, status ("ok" | "failed"), exit_code, error (one line, or null),
  warnings (the run's warning lines), other_cpu_share (the share of the machine's CPU other
  processes used during the run, 0..1, or null), result (the run's document: "edge-slm.run" without its
  per-text predictions, or "edge-slm.tf-baseline"; null when the run failed).
A run may appear more than once (a failed run retried by --resume): the last row of a key wins.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Optional

from edge_slm.common.documents import utc_now
from edge_slm.common.errors import EXIT_INTERRUPTED, EdgeError
from edge_slm.common.files import prepare_out_dir, write_json

from .execute import execute
from .fleet import FleetOptions, run_on_devices
from .plan import StudySettings, check_artifacts, default_threads, plan_runs
from .report import write_report as render_report
from .store import DEVICES_FILE, RESULTS_FILE, append_row, latest_rows, read_rows
from .summary import BUSY_SHARE, Constraints, summarize, three_figures


# ---- the study -----------------------------------------------------------------------------------

@dataclass
class StudyOutcome:
    results_path: Path
    planned: int
    skipped: int                                # finished in an earlier session (--resume)
    rows: list = field(default_factory=list)    # the rows this session added
    report: Optional[object] = None             # report.ReportFiles when a report was written
    devices: list = field(default_factory=list)  # fleet.DeviceReport per device (edge-bench --device)


def run_study(artifacts: Iterable, out_dir, *, threads: Optional[Iterable] = None,
              backends: Iterable = ("auto",), baseline_modes: Iterable = (),
              settings: StudySettings = StudySettings(), resume: bool = False, retry_busy: bool = False,
              write_report: bool = True,
              constraints: Optional["Constraints"] = None, python: str = sys.executable,
              devices: Iterable = (), fleet: Optional[FleetOptions] = None, seq_len: Optional[int] = None,
              on_progress: Callable[[str], None] = lambda message: None) -> StudyOutcome:
    """Run the study into out_dir/results.jsonl, then write the report there.

    resume skips the runs results.jsonl already has (failed ones are retried); retry_busy also
    re-measures those during which other processes used BUSY_SHARE or more of the CPU. Raises
    EdgeError for bad input before any run; an interrupt (KeyboardInterrupt) becomes an EdgeError
    with exit code 130 after the finished runs are safely on disk.

    devices (fleet.DeviceSpec): run on those boards over SSH instead of here (fleet.py), all at
    once; a device that failed is an EdgeError naming it, raised after the report is written.
    seq_len: the length of the random requests for plain .tflite files that take any length."""
    devices = list(devices)
    if devices:
        return _run_on_devices(artifacts, out_dir, devices, fleet or FleetOptions(), threads=threads,
                               backends=list(backends), baseline_modes=list(baseline_modes), settings=settings,
                               resume=resume, retry_busy=retry_busy, write_report=write_report,
                               constraints=constraints, seq_len=seq_len, on_progress=on_progress)
    settings.check()
    if settings.meter_on != "device":
        raise EdgeError("--meter-on workstation is for boards: here, the meter is read where the run is",
                        "add --device HOST, or drop --meter-on")
    settings = settings.effective()
    baseline_modes = list(baseline_modes)
    if baseline_modes and importlib.util.find_spec("tensorflow") is None:
        raise EdgeError("TF baselines need TensorFlow, which is not installed here",
                        "run --baseline on the host (pip install 'edge-slm[host]'), or drop --baseline on the device")
    threads = list(threads) if threads else [default_threads()]
    planned = plan_runs(artifacts, threads, list(backends), baseline_modes,
                        warn=lambda m: on_progress(f"warning: {m}"), with_data=settings.data is not None,
                        plain_seq_len=seq_len)
    out = prepare_out_dir(out_dir)
    results_path = out / RESULTS_FILE
    if retry_busy and not resume:
        raise EdgeError("--retry-busy re-measures runs of an earlier session", "use it together with --resume")
    done = _finished_keys(results_path, resume, settings, on_progress, retry_busy)
    todo = [run for run in planned if run.key not in done]
    outcome = StudyOutcome(results_path, planned=len(planned), skipped=len(planned) - len(todo))
    if outcome.skipped:
        on_progress(f"resuming: {outcome.skipped} of {len(planned)} runs already finished in {results_path}")
    try:
        for number, run in enumerate(todo, 1):
            on_progress(f"[{number}/{len(todo)}] {run.describe()} ...")
            row = execute(run, settings, python=python)
            append_row(results_path, row)
            outcome.rows.append(row)
            on_progress(f"[{number}/{len(todo)}] {progress_line(row)}")
    except KeyboardInterrupt:
        kept = outcome.skipped + len(outcome.rows)
        what = f"{kept} finished run(s) kept in {results_path}" if kept else "before any run finished"
        raise EdgeError(f"interrupted: {what}",
                        "rerun the same command with --resume to run the rest", exit_code=EXIT_INTERRUPTED) from None
    if write_report:
        outcome.report = render_report(results_path, out, constraints=constraints)
    return outcome


def _run_on_devices(artifacts, out_dir, devices: list, fleet: FleetOptions, *, threads, backends: list,
                    baseline_modes: list, settings: StudySettings, resume: bool, retry_busy: bool,
                    write_report: bool, constraints, seq_len: Optional[int], on_progress) -> StudyOutcome:
    settings.check(port_here=settings.meter_on == "workstation")
    settings = settings.effective()
    artifacts = check_artifacts(artifacts)
    names = [spec.destination for spec in devices]
    if len(set(names)) != len(names):
        raise EdgeError(f"a device is given twice: {', '.join(n for n in names if names.count(n) > 1)}",
                        "give each --device once")
    out = prepare_out_dir(out_dir)
    results_path = out / RESULTS_FILE
    if retry_busy:
        raise EdgeError("--retry-busy needs the CPU share of other processes, which is measured only here",
                        "drop --retry-busy with --device")
    done = _finished_keys(results_path, resume, settings, on_progress)
    outcome = StudyOutcome(results_path, planned=0, skipped=0)

    def plan_for(spec, device) -> list:
        counts = list(threads) if threads else [device.facts.get("cores_usable") or 1]
        # A baseline measured on another machine is no baseline: only a device with TensorFlow runs one.
        modes = baseline_modes if device.has_host_extra() else []
        if baseline_modes and not modes:
            on_progress(f"warning: no TF baseline on {spec.destination}: its edge-slm has no host extra "
                        "(--device-extra device,host installs TensorFlow there)")
        runs = [replace(run, device=spec.destination)
                for run in plan_runs(artifacts, counts, backends, modes, with_data=settings.data is not None,
                                     plain_seq_len=seq_len)]
        todo = [run for run in runs if run.key not in done]
        outcome.planned += len(runs)
        outcome.skipped += len(runs) - len(todo)
        if len(todo) < len(runs):
            on_progress(f"{spec.destination}: resuming: {len(runs) - len(todo)} of {len(runs)} runs already finished")
        return todo

    try:
        reports = run_on_devices(devices, plan_for, settings, results_path, fleet, on_progress=on_progress,
                                 describe_row=progress_line)
    except KeyboardInterrupt:
        raise EdgeError(f"interrupted: every finished run is kept in {results_path}; the devices' runs were stopped",
                        "rerun the same command with --resume to run the rest", exit_code=EXIT_INTERRUPTED) from None
    outcome.rows = [row for report in reports for row in report.rows]
    outcome.devices = reports
    write_json(out / DEVICES_FILE, {"schema": "edge-slm.study-devices", "schema_version": 1, "written": utc_now(),
                                    "devices": [asdict(report) | {"rows": len(report.rows)} for report in reports]})
    if write_report and results_path.exists() and results_path.stat().st_size:
        outcome.report = render_report(results_path, out, constraints=constraints)
    failed = [report for report in reports if report.error]
    if failed:
        raise EdgeError("; ".join(report.error for report in failed), failed[0].error_hint)
    return outcome


def _finished_keys(results_path: Path, resume: bool, settings: StudySettings, on_progress,
                   retry_busy: bool = False) -> set:
    if not results_path.exists() or results_path.stat().st_size == 0:
        return set()
    rows = read_rows(results_path, repair=resume, warn=lambda m: on_progress(f"warning: {m}"))
    if rows and not resume:
        raise EdgeError(f"{results_path} already holds {len(rows)} run(s)",
                        "pass --resume to skip the finished runs, or choose another -o directory")
    finished = [row for row in latest_rows(rows) if row["status"] == "ok"]
    for row in finished:
        if row.get("settings") != settings.measurement():
            raise EdgeError(f"{results_path} was measured with other settings ({_settings_text(row['settings'])}) "
                            f"than this run ({_settings_text(settings.measurement())})",
                            "resume with the same --runs/--min-seconds/--warmup/--data/--meter, or use another -o")
    if retry_busy:
        finished = [row for row in finished if (row.get("other_cpu_share") or 0) < BUSY_SHARE]
    return {row["key"] for row in finished}  # failed runs are retried: timeouts and unplugged meters pass


def _settings_text(measurement: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in measurement.items() if v is not None) or "defaults"


def progress_line(row: dict) -> str:
    s = summarize(row)
    if s.status != "ok":
        return f"{s.label}: FAILED: {s.error}"
    parts = [f"p50 {three_figures(s.latency['p50'])} ms", f"peak RSS {s.peak_rss_mb:.0f} MB"]
    if s.energy_mj is not None:
        parts.append(s.energy_text)
    if s.accuracy is not None or s.random_weights:
        parts.append(f"accuracy {s.accuracy_text}")
    return f"{s.label}: " + ", ".join(parts) + f" ({row['wall_s']:.0f} s)"
