"""edge-power: list ports, watch a meter live, record samples to CSV, emulate a meter on a pty.

Thin over the library, under the conventions every edge-slm command shares (common/cli.py): every
failure a user can fix is one line `edge-power: error: <what> (hint: <what to do>)` with a non-zero
exit code and no traceback; Ctrl-C and SIGTERM stop cleanly (files closed, summary printed) and exit
130. Whatever is measured through an emulator says "EMULATED" on every line of output and
`emulated` in files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from edge_slm.common.cli import CONTEXT_SETTINGS, FINITE, output_options, refuse_unused_options, run_click
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_text, check_output_file

from .emulated_ports import running_emulators, state_dir
from .line_protocol import DEFAULT_LINE_FORMAT
from .emulator import EMULATED_PROTOCOLS, EmulatedSignal, FaultPlan, PtyEmulator, make_engine
from .meter import METERS, meter_class, meter_names
from .sampler import Sampler
from .traces import parse_trace

BAUD = click.IntRange(min=1, max=4_000_000)  # past any USB serial adapter; pyserial takes an int


def _check_probe_timeout(probe_timeout_s: float) -> None:
    if probe_timeout_s <= 0:
        raise EdgeError(f"--probe-timeout must be positive, got {probe_timeout_s}", "e.g. --probe-timeout 3")


def _meter_options(baud: Optional[int], line_format: Optional[str], meter: str) -> dict:
    options = {}
    if baud:
        options["baudrate"] = baud
    if line_format:
        takers = [name for name, cls in sorted(METERS.items()) if "line_format" in cls.extra_options]
        if "line_format" not in meter_class(meter).extra_options:
            raise EdgeError(f"--line-format applies to --meter {' or '.join(takers)}, not {meter}",
                            f"drop --line-format or use --meter {takers[0]}")
        options["line_format"] = line_format
    return options


def meter_arguments(command):
    """The options every command that reads a meter takes."""
    command = click.option("--probe-timeout", "probe_timeout_s", type=FINITE, default=3.0, show_default=True,
                           help="Seconds to wait for the first valid reading.")(command)
    command = click.option("--line-format", default=None,
                           help=f"Line meters: the line format [default: {DEFAULT_LINE_FORMAT}].")(command)
    command = click.option("--baud", type=BAUD, default=None,
                           help="Baud rate [default: the meter's, 9600 for UM, 115200 for line].")(command)
    command = click.option("--port", required=True,
                           help="Device path (/dev/rfcomm0, /dev/ttyUSB0) or pyserial URL "
                                "(socket://, rfc2217://).")(command)
    command = click.option("--meter", type=click.Choice(meter_names(), case_sensitive=False),
                           default="um25c", show_default=True, help="Meter type.")(command)
    return command


def _label(emulated: bool) -> str:
    return " EMULATED" if emulated else ""


def _info(quiet: bool):
    """Where status lines go: stderr, unless -q."""
    return (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))


@click.group(context_settings=CONTEXT_SETTINGS, help="USB power meters over serial: energy per inference for edge-slm.")
def cli() -> None:
    pass


@cli.command("list", help="List serial ports and running emulators.")
@output_options
def list_command(as_json: bool, quiet: bool) -> None:
    from serial.tools import list_ports  # deferred: port listing only for `edge-power list`

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    emulators = running_emulators()
    if as_json:
        click.echo(json.dumps({"ports": [{"device": p.device, "description": p.description, "hwid": p.hwid}
                                         for p in ports],
                               "emulators": [dict(entry, emulated=True) for entry in emulators]}, indent=2))
        return
    click.echo("serial ports:" if ports else "serial ports: none found")
    for port in ports:
        details = "; ".join(x for x in (port.description, port.hwid) if x and x != "n/a")
        click.echo(f"  {port.device}  {details}")
    click.echo("emulators:" if emulators else "emulators: none running")
    for entry in emulators:
        link = f" (also {entry['link']})" if entry.get("link") else ""
        click.echo(f"  {entry['pty']}{link}  {entry['protocol']}  pid {entry['pid']}  EMULATED")


@cli.command(help="Print live voltage, current and power until Ctrl-C (or --count readings).")
@meter_arguments
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="Stop after this many readings (0: run until Ctrl-C).")
@output_options
def watch(meter: str, port: str, baud: Optional[int], line_format: Optional[str],
          probe_timeout_s: float, count: int, as_json: bool, quiet: bool) -> None:
    _check_probe_timeout(probe_timeout_s)
    sampler = Sampler(meter, port, meter_options=_meter_options(baud, line_format, meter),
                      probe_timeout_s=probe_timeout_s,
                      warn=lambda m: click.echo(f"warning: {m}", err=True))
    sampler.start()
    _info(quiet)(f"{sampler.driver.describe()}: Ctrl-C to stop{_label(sampler.emulated)}")
    shown = 0
    try:
        while not count or shown < count:
            samples = sampler.samples
            for s in samples[shown:count or None]:
                if as_json:  # one JSON object per reading
                    click.echo(json.dumps({"t": s.t, "voltage_v": s.voltage_v, "current_a": s.current_a,
                                           "power_w": s.power_w, "emulated": sampler.emulated}))
                    continue
                volts = "      -  " if s.voltage_v is None else f"{s.voltage_v:7.3f} V"
                amps = "       -  " if s.current_a is None else f"{s.current_a:8.4f} A"
                click.echo(f"{volts} {amps} {s.power_w:8.4f} W{_label(sampler.emulated)}")
            shown = len(samples) if not count else min(len(samples), count)
            time.sleep(0.05)
    finally:
        sampler.stop()


@cli.command(help="Record samples to CSV for --duration seconds (Ctrl-C stops early, keeping all).")
@meter_arguments
@click.option("--duration", type=FINITE, required=True, help="Seconds to record.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="CSV FILE to write the samples to (streamed as they arrive).")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary (counts, rate, emulated, events) as JSON.")
@output_options
def record(meter: str, port: str, baud: Optional[int], line_format: Optional[str],
           probe_timeout_s: float, duration: float, out: str, summary_json: Optional[str], as_json: bool,
           quiet: bool) -> None:
    if duration <= 0:
        raise EdgeError(f"--duration must be positive, got {duration}", "e.g. --duration 60")
    check_output_file(out, "--output")
    if summary_json is not None:
        check_output_file(summary_json, "--summary-json")  # before recording, not after
    _check_probe_timeout(probe_timeout_s)
    sampler = Sampler(meter, port, csv_path=out, meter_options=_meter_options(baud, line_format, meter),
                      probe_timeout_s=probe_timeout_s,
                      warn=lambda m: click.echo(f"warning: {m}", err=True))
    sampler.start()
    _info(quiet)(f"recording {sampler.driver.describe()} for {duration:g} s to {out}{_label(sampler.emulated)}")
    interrupted = False
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        interrupted = True
    summary = sampler.stop()
    samples = sampler.samples
    mean_w = sum(s.power_w for s in samples) / len(samples) if samples else float("nan")
    energy_j = sum(0.5 * (a.power_w + b.power_w) * (b.t - a.t) for a, b in zip(samples, samples[1:]))
    data = summary.as_dict()
    data.update({"mean_power_w": round(mean_w, 6), "energy_j": round(energy_j, 6),
                 "interrupted": interrupted, "source": "emulated meter" if summary.emulated else "meter"})
    if summary_json is not None:
        atomic_write_text(summary_json, json.dumps(data, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_recorded(summary, sampler, port, mean_w, energy_j, interrupted, out)
    if interrupted:  # everything is on disk; exit as interrupted (130)
        raise KeyboardInterrupt


def _print_recorded(summary, sampler, port, mean_w, energy_j, interrupted, out) -> None:
    click.echo(f"recorded {summary.samples} samples in {summary.stopped_at - summary.started_at:.1f} s "
               f"({summary.rate_hz:.2f} Hz) from {sampler.driver.model} at {port}: mean {mean_w:.4f} W, "
               f"{energy_j:.3f} J; garbage frames {summary.garbage_frames}, disconnects "
               f"{summary.disconnects}, reconnects {summary.reconnects}"
               f"{' (interrupted)' if interrupted else ''} -> {out}{_label(summary.emulated)}")


def _parse_stall(text: str):
    start, _, length = text.partition(":")
    try:
        stall = float(start), float(length) if length else float("inf")
    except ValueError:
        stall = None
    if stall is None or not (0 <= stall[0] < float("inf") and stall[1] >= 0):  # nan fails the comparisons
        raise EdgeError(f"bad --stall {text!r}", "give START:SECONDS, e.g. --stall 30:5 (or 30 for forever)")
    return stall


def _check_emulate_settings(*, noise_w, bus_voltage, line_rate, drop_bytes, garbage, duration, disconnect_at,
                            reconnect_after) -> None:
    """Settings the emulator would take silently and then misbehave on (send nothing, run 0 s)."""
    checks = (
        (noise_w >= 0, f"--noise-w must be 0 or more, got {noise_w}", "e.g. --noise-w 0.02"),
        (bus_voltage > 0, f"--bus-voltage must be positive, got {bus_voltage}", "e.g. --bus-voltage 5.1"),
        (line_rate > 0, f"--line-rate must be positive, got {line_rate}", "e.g. --line-rate 20"),
        (0 <= drop_bytes <= 1, f"--drop-bytes is a probability, got {drop_bytes}", "e.g. --drop-bytes 0.01"),
        (0 <= garbage <= 1, f"--garbage is a probability, got {garbage}", "e.g. --garbage 0.05"),
        (duration is None or duration > 0, f"--duration must be positive, got {duration}",
         "e.g. --duration 60, or leave it out to run until Ctrl-C"),
        (disconnect_at is None or disconnect_at >= 0, f"--disconnect-at must be 0 or more, got {disconnect_at}",
         "e.g. --disconnect-at 30"),
        (reconnect_after is None or reconnect_after >= 0,
         f"--reconnect-after must be 0 or more, got {reconnect_after}", "e.g. --reconnect-after 5"),
    )
    for holds, message, hint in checks:
        if not holds:
            raise EdgeError(message, hint)


def _check_emulate_combination(ctx: click.Context, trace_spec: str, protocol: str) -> None:
    """Options that the chosen trace or protocol would ignore: an error rather than a silent no-op."""
    def given(name: str) -> bool:  # set by the user, not click's default
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    cpu_trace = trace_spec == "cpu"
    needs = [(given(name) and not cpu_trace, option, "--trace cpu")
             for name, option in (("active_w", "--active-w"), ("follow_pid", "--follow-pid"))]
    # a bare "constant" trace runs at --idle-w too
    needs.append((given("idle_w") and trace_spec not in ("cpu", "constant", "constant:"), "--idle-w",
                  "--trace cpu or a bare --trace constant"))
    needs += [(given(name) and protocol != "line", option, "--protocol line")
              for name, option in (("line_format", "--line-format"), ("line_rate", "--line-rate"))]
    needs.append((given("reconnect_after") and not given("disconnect_at"), "--reconnect-after", "--disconnect-at"))
    refuse_unused_options(needs)


@cli.command(help="Emulate a meter on a pseudo-terminal, driven by a power trace, with optional faults.")
@click.option("--protocol", type=click.Choice(EMULATED_PROTOCOLS), default="um25c",
              show_default=True)
@click.option("--trace", "trace_spec", default="constant:2.0", show_default=True,
              help="constant:W | steps:T=W,T=W,... | file:PATH.csv | cpu")
@click.option("--idle-w", type=FINITE, default=2.0, show_default=True, help="cpu trace: power at idle.")
@click.option("--active-w", type=FINITE, default=3.5, show_default=True,
              help="cpu trace: power with every core busy.")
@click.option("--follow-pid", type=click.IntRange(min=1), default=None,
              help="cpu trace: follow this process's CPU load instead of the machine's.")
@click.option("--noise-w", type=FINITE, default=0.02, show_default=True, help="Gaussian noise on power.")
@click.option("--bus-voltage", type=FINITE, default=5.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise and faults.")
@click.option("--line-format", default=DEFAULT_LINE_FORMAT, show_default=True)
@click.option("--line-rate", type=FINITE, default=20.0, show_default=True, help="line: lines per second.")
@click.option("--refresh-s", type=FINITE, default=None,
              help="UM meters: seconds between new readings; polls in between get the same one "
                   "[default: the model's, 0.5; 0: a new reading on every poll].")
@click.option("--baud", type=BAUD, default=None, help="Pacing baud rate [default: the meter's].")
@click.option("--drop-bytes", type=FINITE, default=0.0, help="Probability each byte of a frame is lost.")
@click.option("--garbage", type=FINITE, default=0.0, help="Probability a frame is preceded by garbage.")
@click.option("--stall", "stalls", multiple=True, help="START:SECONDS of silence (repeatable).")
@click.option("--disconnect-at", type=FINITE, default=None, help="Unplug after this many seconds.")
@click.option("--reconnect-after", type=FINITE, default=None, help="Come back this many seconds later.")
@click.option("--link", default=None, help="Serve through this symlink (stable across reconnects).")
@click.option("--duration", type=FINITE, default=None, help="Stop after this many seconds.")
@click.option("--stats-out", type=click.Path(dir_okay=False), default=None,
              help="Write the emulator's counters (frames sent, garbage injected, ...) as JSON at exit.")
@output_options
def emulate(protocol, trace_spec, idle_w, active_w, follow_pid, noise_w, bus_voltage, seed,
            line_format, line_rate, refresh_s, baud, drop_bytes, garbage, stalls, disconnect_at,
            reconnect_after, link, duration, stats_out, as_json, quiet) -> None:
    _check_emulate_combination(click.get_current_context(), trace_spec, protocol)
    _check_emulate_settings(noise_w=noise_w, bus_voltage=bus_voltage, line_rate=line_rate, drop_bytes=drop_bytes,
                            garbage=garbage, duration=duration, disconnect_at=disconnect_at,
                            reconnect_after=reconnect_after)
    if stats_out is not None:
        check_output_file(stats_out, "--stats-out")
    if link is not None and not Path(link).parent.is_dir():
        raise EdgeError(f"--link: directory {Path(link).parent} does not exist", "create it first")
    trace = parse_trace(trace_spec, idle_w=idle_w, active_w=active_w, follow_pid=follow_pid)
    signal_source = EmulatedSignal(trace, bus_voltage_v=bus_voltage, noise_w=noise_w, seed=seed)
    engine = make_engine(protocol, signal_source, line_format=line_format, line_rate_hz=line_rate,
                         refresh_s=refresh_s)
    faults = FaultPlan(drop_byte_probability=drop_bytes, garbage_probability=garbage,
                       stalls=tuple(_parse_stall(s) for s in stalls), disconnect_at_s=disconnect_at,
                       reconnect_after_s=reconnect_after, seed=seed)
    if reconnect_after is not None and link is None:
        state_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        link = str(state_dir() / f"tty-{protocol}-{os.getpid()}")
    emulator = PtyEmulator(engine, faults=faults, baudrate=baud, link=link, protocol=protocol)

    emulator.start()
    # The first stdout line names the port, for scripts that start an emulator and read its port.
    click.echo(json.dumps({"port": emulator.port, "emulated": True}) if as_json else f"port: {emulator.port}")
    _info(quiet)(f"EMULATED {engine.describe} on {emulator.pty_path}; trace: {trace.describe}; Ctrl-C to stop")
    sys.stdout.flush()
    interrupted = False
    try:
        end = None if duration is None else time.monotonic() + duration
        while (end is None or time.monotonic() < end) and emulator.stats.error is None:
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
    stats = emulator.stop()
    if stats_out is not None:
        atomic_write_text(stats_out, json.dumps(stats.as_dict(), indent=2) + "\n")
    _info(quiet)(f"emulator stopped: {stats.frames_sent} frames sent, {stats.garbage_injected} garbage "
                 f"bursts, {stats.frames_corrupted} corrupted, {stats.disconnects} disconnects, "
                 f"{stats.reconnects} reconnects")
    if stats.error:
        raise EdgeError(f"emulator failed: {stats.error}", "this is a bug in edge-power emulate")
    if interrupted:  # counters written; exit as interrupted (130)
        raise KeyboardInterrupt


def main(argv: Optional[list] = None) -> int:
    return run_click(cli, argv, "edge-power")


if __name__ == "__main__":
    sys.exit(main())
