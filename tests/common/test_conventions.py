"""One set of conventions for the five commands (README "Conventions")."""

from __future__ import annotations

import os
import signal

import click
import pytest

from edge_slm.bench.cli import main as bench_main
from edge_slm.common.cli import run_click
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
    assert capsys.readouterr().err.strip() == "edge-test: interrupted"


def test_edge_errors_keep_their_exit_code(capsys):
    @click.command()
    def command():
        raise EdgeError("the runtime refused the graph", "re-convert it", exit_code=EXIT_RUNTIME_REFUSED)

    assert run_click(command, [], "edge-test") == EXIT_RUNTIME_REFUSED
    assert capsys.readouterr().err.strip() == "edge-test: error: the runtime refused the graph (hint: re-convert it)"
