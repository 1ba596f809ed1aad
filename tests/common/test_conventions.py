"""One set of conventions for the five commands (README "Conventions")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
import pytest

from edge_slm.bench.cli import main as bench_main
from edge_slm.common.cli import FINITE, run_click
from edge_slm.common.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_RUNTIME_REFUSED, EXIT_VALIDATION_FAILED,
                                    EdgeError)
from edge_slm.convert.cli import main as convert_main
from edge_slm.power.cli import main as power_main
from edge_slm.runtime.cli import main as run_main
from edge_slm.train.cli import main as train_main
from tests.conftest import error_line

COMMANDS = {"edge-run": run_main, "edge-convert": convert_main, "edge-train": train_main,
            "edge-bench": bench_main}
POWER_SUBCOMMANDS = ("list", "watch", "record", "emulate")


@pytest.mark.parametrize("prog", COMMANDS)
def test_help_names_json_and_quiet(prog, cli_caller):
    code, out, _ = cli_caller(COMMANDS[prog])("-h")
    assert code == 0 and "--json" in out and "-q, --quiet" in out


@pytest.mark.parametrize("subcommand", POWER_SUBCOMMANDS)
def test_edge_power_subcommands_take_json_and_quiet(subcommand, cli_caller):
    code, out, _ = cli_caller(power_main)(subcommand, "-h")
    assert code == 0 and "--json" in out and "-q, --quiet" in out


@pytest.mark.parametrize("prog,main", [*COMMANDS.items(), ("edge-power", power_main)])
def test_usage_errors_are_one_line_with_a_hint(prog, main, cli_caller):
    code, _, err = cli_caller(main)("--no-such-option")
    line = error_line(err, prog)
    assert code == EXIT_BAD_INPUT and "--no-such-option" in line


def test_edge_power_without_a_command_is_one_line(cli_caller):
    code, _, err = cli_caller(power_main)()
    assert code == EXIT_BAD_INPUT and "no command given" in error_line(err, "edge-power")


def test_edge_power_errors_name_the_program(cli_caller):
    code, _, err = cli_caller(power_main)("record", "--port", "/dev/ttyEDGE-absent", "--duration", "1", "-o", "x.csv")
    assert code != 0 and error_line(err, "edge-power")


def test_output_flag_names_one_meaning(cli_caller):
    """-o is --output FILE for the commands that write one file and --out-dir DIR for those writing a folder."""
    helps = {prog: cli_caller(main)("-h")[1] for prog, main in COMMANDS.items()}
    helps["edge-power record"] = cli_caller(power_main)("record", "-h")[1]
    for prog in ("edge-run", "edge-power record"):
        assert "-o, --output" in helps[prog], prog
    for prog in ("edge-convert", "edge-train", "edge-bench"):
        assert "-o, --out-dir" in helps[prog], prog


def test_exit_codes_are_distinct():
    codes = [EXIT_BAD_INPUT, EXIT_RUNTIME_REFUSED, EXIT_VALIDATION_FAILED, EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes) and 0 not in codes


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_exit_130_after_cleanup(stop, capsys):
    cleaned = []

    @click.command()
    def command():
        try:
            os.kill(os.getpid(), stop)
            for _ in range(10_000_000):  # the signal arrives at the next bytecode boundary
                pass
        finally:
            cleaned.append(True)

    assert run_click(command, [], "edge-test") == EXIT_INTERRUPTED
    assert cleaned == [True]
    assert capsys.readouterr().err == "edge-test: interrupted\n"  # one line: no blank line before it off a terminal


def test_edge_errors_keep_their_exit_code(capsys):
    @click.command()
    def command():
        raise EdgeError("the runtime refused the graph", "re-convert it", exit_code=EXIT_RUNTIME_REFUSED)

    assert run_click(command, [], "edge-test") == EXIT_RUNTIME_REFUSED
    assert capsys.readouterr().err.strip() == "edge-test: error: the runtime refused the graph (hint: re-convert it)"


@pytest.mark.parametrize("failure,expected", [
    (RecursionError("maximum recursion depth exceeded while decoding a JSON array"), "nested too deeply"),
    (OSError(36, "File name too long", "a" * 300), "File name too long"),
    (MemoryError(), "out of memory"),
])
def test_what_the_environment_refuses_is_one_line_not_a_traceback(failure, expected, capsys):
    @click.command()
    def command():
        raise failure

    assert run_click(command, [], "edge-test") == EXIT_BAD_INPUT
    assert expected in error_line(capsys.readouterr().err, "edge-test")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_float_options_refuse_values_that_are_not_finite(value, capsys):
    @click.command()
    @click.option("--seconds", type=FINITE)
    def command(seconds):
        raise AssertionError("not reached")

    assert run_click(command, ["--seconds", value], "edge-test") == EXIT_BAD_INPUT
    assert "not a finite number" in error_line(capsys.readouterr().err, "edge-test")


_PRINTER = """
import sys, click
from edge_slm.common.cli import FINITE, run_click
@click.command()
def command():
    for i in range(200_000):
        click.echo(f"line {i}")
sys.exit(run_click(command, [], "edge-test"))
"""


def test_a_full_stdout_is_one_error_line(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", _PRINTER], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == EXIT_BAD_INPUT
    assert "No space left on device" in error_line(done.stderr, "edge-test")


def test_a_reader_that_stops_early_is_not_an_error():
    """`edge-run ... | head -1`: exit 0 and nothing on stderr (click's main would exit 1)."""
    child = subprocess.Popen([sys.executable, "-c", _PRINTER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.readline()
    child.stdout.close()
    try:
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0 and err == b""
