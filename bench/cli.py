"""`edge-bench`: the model-selection study from the command line (a thin shell over study.py).

    edge-bench ARTIFACT... -o DIR [--data FILE] [--threads 1,2,4] [--backend auto] [--baseline]
                                  [--meter um25c --port P] [--resume] [constraints]
    edge-bench report DIR/results.jsonl [-o DIR] [constraints]

Two commands, no click group: a group cannot also take ARTIFACT... as its own arguments without
a default-command hack, so main() looks at the first word. `report` selects the report command;
an artifact file literally named `report` is passed as ./report.
Exit codes (README "Conventions"): 0 done (failed runs are in the report, not an exit code), 2 bad
input, 130 interrupted (Ctrl-C or SIGTERM; the finished runs are kept).
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from edge_slm.common.cli import CONTEXT_SETTINGS, FINITE, loop_options, meter_options, output_options, run_click, warn
from edge_slm.common.errors import EdgeError
from edge_slm.runtime.backends import BACKEND_CHOICES
from edge_slm.runtime.engine import PLAIN_GRAPH_LONGEST

from .devices import DEFAULT_DEVICE_DIR, DEVICE_EXTRAS, DeviceOptions
from .fleet import DeviceSpec, FleetOptions
from .plan import (DEFAULT_TIMEOUT_S, METER_MIN_SECONDS, METER_SIDES, StudySettings, default_threads,
                   parse_backends, parse_threads)
from .report import speedups, write_report
from .study import run_study
from .summary import BUSY_SHARE, LATENCY_STATS, Constraints, parse_accuracy


def constraint_options(command):
    """The recommendation's constraints: the same on both commands."""
    for decorator in reversed((
        click.option("--max-latency-ms", type=FINITE, help="Recommend only artifacts at most this slow (ms)."),
        click.option("--latency-stat", type=click.Choice(LATENCY_STATS), default="p50", show_default=True,
                     help="Which latency --max-latency-ms bounds."),
        click.option("--max-memory-mb", type=FINITE, help="... whose peak RSS is at most this (MB)."),
        click.option("--max-energy-mj", type=FINITE, help="... whose energy per inference is at most this (mJ)."),
        click.option("--min-accuracy", help="... whose measured accuracy is at least this: 0.88 or 88%."),
    )):
        command = decorator(command)
    return command


def _constraints(max_latency_ms, latency_stat, max_memory_mb, max_energy_mj, min_accuracy) -> Constraints:
    constraints = Constraints(max_latency_ms, max_memory_mb, max_energy_mj, parse_accuracy(min_accuracy),
                              latency_stat)
    constraints.check()
    return constraints


def device_options(command):
    """edge-bench --device: the boards to run on, over the system OpenSSH client."""
    for decorator in reversed((
        click.option("--device", "device_names", multiple=True, metavar="[USER@]HOST",
                     help="Run the study on this board over SSH (an ssh_config alias works); repeat for "
                          "several boards, which run in parallel."),
        click.option("--ssh-config", type=click.Path(exists=True, dir_okay=False),
                     help="ssh_config file to use instead of ~/.ssh/config (ssh -F)."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Accept and remember the host key of a device seen for the first time "
                          "(StrictHostKeyChecking=accept-new); a changed key is always refused."),
        click.option("--device-extra", type=click.Choice(DEVICE_EXTRAS), default=DEVICE_EXTRAS[0],
                     show_default=True, help="The extra installed on the devices (tflite-runtime: older boards)."),
        click.option("--device-dir", default=DEFAULT_DEVICE_DIR, show_default=True,
                     help="Folder on the devices for the virtualenv, artifacts and data (relative: to HOME)."),
        click.option("--device-python", default="python3", show_default=True,
                     help="The Python on the devices that the virtualenv is made from."),
        click.option("--offline-device", is_flag=True,
                     help="The devices have no package index: download their wheels here and push them."),
        click.option("--device-port", "device_ports", multiple=True, metavar="DEVICE=PORT",
                     help="The meter's port on one device, where it differs from --port."),
        click.option("--meter-on", type=click.Choice(METER_SIDES), default=METER_SIDES[0], show_default=True,
                     help="Where the meter is read: on the device, or here while the device runs (the board's "
                          "loop window mapped to this clock by timestamps exchanged over SSH)."),
    )):
        command = decorator(command)
    return command


def device_specs(names, ports) -> list:
    by_device = {}
    for item in ports:
        name, sep, port = item.partition("=")
        if not sep or not name or not port:
            raise EdgeError(f"bad --device-port {item!r}", "give DEVICE=PORT, e.g. --device-port pi4=/dev/ttyUSB0")
        if name not in names:
            raise EdgeError(f"--device-port names {name!r}, which is not a --device",
                            f"one of: {', '.join(names) or 'no --device given'}")
        by_device[name] = port
    return [DeviceSpec(name, by_device.get(name)) for name in names]


@click.command(context_settings=CONTEXT_SETTINGS,
               epilog=f"With --meter and no --min-seconds, each run is timed at least {METER_MIN_SECONDS:g} s. "
                      "Regenerate the report from the results (other constraints, after --resume): "
                      "edge-bench report DIR/results.jsonl (edge-bench report --help).")
@click.argument("artifacts", nargs=-1, metavar="ARTIFACT...")
@click.option("-o", "--out-dir", required=True, help="Study directory: results.jsonl, report.md, PNG plots.")
@click.option("--data", help="Labelled texts (TSV/CSV/JSONL): accuracy for trained weights; the bench feeds them.")
@click.option("--threads", "threads_text", help=f"Thread counts, comma-separated [default: the usable cores, "
                                                f"{default_threads()} here].")
@click.option("--backend", "backend_text", default="auto", show_default=True,
              help=f"Interpreter(s), comma-separated: {', '.join(BACKEND_CHOICES)}.")
@loop_options
@meter_options
@click.option("--seq-len", type=click.IntRange(min=2, max=PLAIN_GRAPH_LONGEST),
              help="Plain .tflite files (no edge-slm metadata) whose graph takes any length: time random requests "
                   "of this many tokens.")
@click.option("--baseline", is_flag=True, help="Also time each artifact's source model in TensorFlow fp32 "
                                               "(tf.function) at the same threads: host only.")
@click.option("--baseline-eager", is_flag=True, help="Also time the source models in TF eager mode.")
@click.option("--resume", is_flag=True, help="Continue DIR/results.jsonl: skip finished runs, retry failed ones.")
@click.option("--retry-busy", is_flag=True, help="With --resume: also re-measure runs during which other processes "
                                                 f"used {BUSY_SHARE:.0%} or more of the CPU.")
@click.option("--timeout", type=FINITE, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds one run may take before it is killed and reported as failed.")
@click.option("--no-report", is_flag=True, help="Only collect results.jsonl.")
@device_options
@constraint_options
@output_options
def study_command(artifacts, out_dir, data, threads_text, backend_text, runs, min_seconds, warmup, meter, port,
                  baseline_seconds, seq_len, baseline, baseline_eager, resume, retry_busy, timeout, no_report,
                  device_names, ssh_config, accept_new_host_key, device_extra, device_dir, device_python,
                  offline_device, device_ports, meter_on, quiet,
                  max_latency_ms, latency_stat, max_memory_mb, max_energy_mj, min_accuracy, as_json):
    """Compare edge-slm artifacts on this device: every ARTIFACT x thread count x backend in a fresh
    process (accuracy, latency, init, peak memory, size, energy), optionally against TF fp32, then
    write a Markdown report with plots and recommend an artifact under the constraints."""
    constraints = _constraints(max_latency_ms, latency_stat, max_memory_mb, max_energy_mj, min_accuracy)
    threads = parse_threads(threads_text) if threads_text is not None else None
    backends = parse_backends(backend_text)
    modes = (["tf.function"] if baseline else []) + (["eager"] if baseline_eager else [])
    settings = StudySettings(runs=runs, min_seconds=min_seconds, warmup=warmup, data=data, meter=meter, port=port,
                             baseline_seconds=baseline_seconds, timeout_s=timeout, meter_on=meter_on)
    devices = device_specs(device_names, device_ports)
    fleet = FleetOptions(ssh_config=ssh_config, accept_new_host_key=accept_new_host_key,
                         device=DeviceOptions(device_dir=device_dir, extra=device_extra, python=device_python,
                                              offline=offline_device))
    outcome = run_study(artifacts, out_dir, threads=threads, backends=backends, baseline_modes=modes,
                        settings=settings, resume=resume, retry_busy=retry_busy, write_report=not no_report,
                        constraints=constraints, devices=devices, fleet=fleet, seq_len=seq_len,
                        on_progress=(lambda m: None) if quiet else _progress)
    if outcome.report is None:
        click.echo(f"results: {outcome.results_path}")
    else:
        _print_report(outcome.report, as_json)
    failed = [row for row in outcome.rows if row["status"] != "ok"]
    if outcome.rows and len(failed) == len(outcome.rows) and not outcome.skipped:
        # a study that measured nothing must not look like success to a script or CI
        raise EdgeError(f"none of the {len(failed)} run(s) finished; the first: {failed[0]['error'] or 'no result'}",
                        f"see {outcome.results_path}; run that artifact with edge-run to see the whole error")


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("results")
@click.option("-o", "--out-dir", help="Where report.md and the plots go [default: beside RESULTS].")
@constraint_options
@output_options
def report_command(results, out_dir, max_latency_ms, latency_stat, max_memory_mb, max_energy_mj, min_accuracy,
                   as_json, quiet):
    """Write the report (report.md + PNG plots) of a study from its results.jsonl, and recommend an
    artifact under the constraints."""
    constraints = _constraints(max_latency_ms, latency_stat, max_memory_mb, max_energy_mj, min_accuracy)
    files = write_report(results, out_dir, constraints=constraints, warn=(lambda message: None) if quiet else warn)
    _print_report(files, as_json)


def _print_report(files, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"report": str(files.markdown), "plots": {k: str(v) for k, v in files.plots.items()},
                               "recommendation": files.recommendation,
                               "runs": [_without_samples(s.as_dict()) for s in files.summaries]}, indent=2))
        return
    ratios = {id(r["artifact"]): r for r in speedups(files.summaries) if r["mode"] == "tf.function"}
    click.echo(f"{'run':<44} {'p50 ms':>9} {'peak MB':>8}  {'energy/inference':<26} {'vs TF fp32':>10}  accuracy")
    for s in files.summaries:
        if s.status != "ok":
            click.echo(f"{s.label:<44} FAILED: {s.error}")
            continue
        ratio = ratios.get(id(s))
        speedup = f"{ratio['speedup']:.2f}x" if ratio else "-"
        click.echo(f"{s.label:<44} {s.latency['p50']:>9.3f} {s.peak_rss_mb:>8.1f}  {s.energy_text:<26} "
                   f"{speedup:>10}  {s.accuracy_text}")
    for device, rec in files.per_device.items():
        if rec["status"] == "ok":
            click.echo(f"recommended on {device}: {rec['best']['label']}: {rec['reason']}")
        else:
            click.echo(f"no recommendation on {device}: {rec['reason']}")
    rec = files.recommendation
    # With boards, only per-board recommendations: one across boards would compare different machines.
    if not files.per_device:
        if rec["status"] == "ok":
            click.echo(f"recommended: {rec['best']['label']} ({rec['best']['artifact']}): {rec['reason']}")
        else:
            click.echo(f"no recommendation: {rec['reason']}")
    for note in files.notes:
        click.echo(f"note: {note}")
    click.echo(f"report: {files.markdown}")


def _without_samples(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "latencies_ms"}


def main(argv: Optional[list] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "report":
        return run_click(report_command, args[1:], "edge-bench report")
    return run_click(study_command, args, "edge-bench")


if __name__ == "__main__":
    sys.exit(main())
