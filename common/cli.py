"""The conventions every edge-slm command shares (README: "Conventions"): `-h`, one-line errors
`PROG: error: ... (hint: ...)` for usage errors too, the exit-code table, SIGTERM handled as Ctrl-C
(finished work flushed, exit 130), and the option groups several commands declare."""

from __future__ import annotations

import signal
import threading
from typing import Optional

import click

from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EdgeError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# The timed loop (edge-run --bench, edge-bench, the TF baseline).
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
DEFAULT_IDLE_SECONDS = 3.0  # the meter's idle baseline before and after the loop


def _apply(command, decorators):
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def loop_options(command):
    """--runs / --min-seconds / --warmup: how long the timed loop runs."""
    return _apply(command, (
        click.option("--runs", type=int, help=f"Timed runs [default: {DEFAULT_RUNS} unless --min-seconds]."),
        click.option("--min-seconds", type=float, help="Keep timing at least this long."),
        click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True,
                     help="Untimed warm-up inferences."),
    ))


def meter_options(command):
    """--meter / --port / --baseline-seconds: energy per inference from a USB power meter."""
    return _apply(command, (
        click.option("--meter", help="Power meter type for energy per inference (edge-power list)."),
        click.option("--port", help="Meter port: a device path or a pyserial URL (socket://, rfc2217://)."),
        click.option("--baseline-seconds", type=float, default=DEFAULT_IDLE_SECONDS, show_default=True,
                     help="Idle power measured before and after the timed loop (s)."),
    ))


def output_options(command):
    """--json / -q: machine-readable output and no progress output, on every command."""
    return _apply(command, (
        click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON."),
        click.option("-q", "--quiet", is_flag=True, help="No progress output (errors still print)."),
    ))


def check_loop_settings(runs: Optional[int], min_seconds: Optional[float], warmup: int = 0,
                        threads: Optional[int] = None) -> None:
    if runs is not None and runs <= 0:
        raise EdgeError(f"--runs must be positive, got {runs}", "e.g. --runs 200")
    if min_seconds is not None and min_seconds <= 0:
        raise EdgeError(f"--min-seconds must be positive, got {min_seconds}", "e.g. --min-seconds 10")
    if warmup < 0:
        raise EdgeError(f"--warmup must be 0 or more, got {warmup}", "e.g. --warmup 10")
    if threads is not None and threads <= 0:
        raise EdgeError(f"--threads must be positive, got {threads}", "e.g. --threads 2")


def check_meter_settings(meter: Optional[str], port: Optional[str], baseline_seconds: float) -> None:
    if (meter is None) != (port is None):
        raise EdgeError("--meter and --port go together", "e.g. --meter um25c --port /dev/rfcomm0")
    if meter and baseline_seconds <= 0:
        raise EdgeError(f"--baseline-seconds must be positive, got {baseline_seconds}",
                        "measure at least a second of idle power, e.g. --baseline-seconds 3")


def warn(message: str) -> None:
    click.echo(message if message.startswith("warning: ") else f"warning: {message}", err=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_click(command, argv=None, prog_name: str = "edge-slm") -> int:
    """Run a click command under the shared conventions; returns the exit code.

    SIGTERM raises KeyboardInterrupt like Ctrl-C, so a `kill` unwinds through the same `finally`
    blocks (partial results flushed, temporary files removed) and exits 130 as Ctrl-C does."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
        return 0
    except EdgeError as e:
        click.echo(f"{prog_name}: error: {e.one_line()}", err=True)
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as e:  # --help
        return e.exit_code
    except click.UsageError as e:
        click.echo(f"{prog_name}: error: {' '.join(e.format_message().split())} (hint: {prog_name} --help)", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as e:
        click.echo(f"{prog_name}: error: {' '.join(e.format_message().split())} (hint: {prog_name} --help)", err=True)
        return EXIT_BAD_INPUT if e.exit_code == 1 else e.exit_code
    except BrokenPipeError:  # `edge-run ... | head` closes stdout early: not an error
        return 0
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
