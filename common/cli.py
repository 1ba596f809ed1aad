"""The conventions every edge-slm command shares (README: "Conventions"): `-h`, one-line errors
`PROG: error: ... (hint: ...)` for usage errors too, the exit-code table, SIGTERM handled as Ctrl-C
(finished work flushed, exit 130), and the option groups several commands declare."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from typing import Optional

import click

from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EdgeError


class FiniteFloat(click.ParamType):
    """A float option that refuses nan and inf: no duration, rate or limit means either."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloat()
MAX_THREADS = 1024  # past what any board has, and inside the interpreter's int

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
        click.option("--min-seconds", type=FINITE, help="Keep timing at least this long."),
        click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True,
                     help="Untimed warm-up inferences."),
    ))


def meter_options(command):
    """--meter / --port / --baseline-seconds: energy per inference from a USB power meter."""
    return _apply(command, (
        click.option("--meter", help="Power meter type for energy per inference (edge-power list)."),
        click.option("--port", help="Meter port: a device path or a pyserial URL (socket://, rfc2217://)."),
        click.option("--baseline-seconds", type=FINITE, default=DEFAULT_IDLE_SECONDS, show_default=True,
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
    if threads is not None and not 0 < threads <= MAX_THREADS:
        raise EdgeError(f"--threads must be 1 to {MAX_THREADS}, got {threads}", "e.g. --threads 2")


def check_meter_settings(meter: Optional[str], port: Optional[str], baseline_seconds: float) -> None:
    if (meter is None) != (port is None):
        raise EdgeError("--meter and --port go together", "e.g. --meter um25c --port /dev/rfcomm0")
    if meter and baseline_seconds <= 0:
        raise EdgeError(f"--baseline-seconds must be positive, got {baseline_seconds}",
                        "measure at least a second of idle power, e.g. --baseline-seconds 3")


def refuse_unused_options(needs) -> None:
    """(unused, option, needed) triples: an option the rest of the command line would ignore is an
    error, not a silent no-op (the user meant something by it)."""
    for unused, option, needed in needs:
        if unused:
            raise EdgeError(f"{option} applies only with {needed}", f"add {needed}, or drop {option}")


def warn(message: str) -> None:
    click.echo(message if message.startswith("warning: ") else f"warning: {message}", err=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_click(command, argv=None, prog_name: str = "edge-slm") -> int:
    """Run a click command under the shared conventions; returns the exit code.

    SIGTERM raises KeyboardInterrupt like Ctrl-C, so a `kill` unwinds through the same `finally`
    blocks (partial results flushed, temporary files removed) and exits 130 as Ctrl-C does.
    The command runs through make_context/invoke rather than click's `main`, which would print a
    blank line before our interrupt line and turn a closed stdout into exit 1."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with command.make_context(prog_name, args) as ctx:
            command.invoke(ctx)
        sys.stdout.flush()  # a full or closed stdout surfaces here, in the handlers below, not at exit
        return 0
    except EdgeError as e:
        _error(prog_name, e.one_line())
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # on a terminal the ^C echo ends the line; finish it so the message stands on its own
        click.echo(("\n" if sys.stderr.isatty() else "") + f"{prog_name}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as e:  # --help
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError:  # its message is the whole help text
        _error(prog_name, f"no command given (hint: {prog_name} --help)")
        return EXIT_BAD_INPUT
    except click.ClickException as e:
        _error(prog_name, f"{' '.join(e.format_message().split())} (hint: {prog_name} --help)")
        return EXIT_BAD_INPUT if e.exit_code == 1 else e.exit_code
    except BrokenPipeError:  # `edge-run ... | head` closes stdout early: not an error
        _silence_stdout()
        return 0
    except RecursionError:  # json's decoder on input nested thousands deep
        _error(prog_name, "an input is nested too deeply to read (hint: check the JSON files passed)")
        return EXIT_BAD_INPUT
    except MemoryError:
        _error(prog_name, "out of memory (hint: a smaller input, model or --runs)")
        return EXIT_BAD_INPUT
    except OSError as e:  # what the environment refused (disk full, name too long) where no check named it
        stdout_failed = not e.filename and _stdout_failed()
        where = f"{e.filename}: " if e.filename else ("stdout: " if stdout_failed else "")
        _error(prog_name, f"{where}{e.strerror or e} (hint: check the paths, the disk and the output)")
        if stdout_failed:
            _silence_stdout()
        return EXIT_BAD_INPUT
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _error(prog_name: str, text: str) -> None:
    click.echo(f"{prog_name}: error: {text}", err=True)


def _stdout_failed() -> bool:
    try:
        sys.stdout.flush()
        return False
    except (OSError, ValueError):
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
