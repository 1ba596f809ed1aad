"""Meters on the virtual clock: the emulator's real byte stream through an in-memory VirtualSerial.

Tests that need timing use these, not real sleeps: what they measure cannot move with the load on
the machine. The one real-time pty test is marked `e2e_pty`.
"""

import csv

import pytest

from edge_slm.power.emulator import EmulatedSignal, VirtualClock, VirtualSerial, make_engine
from edge_slm.power.meter import create_meter
from edge_slm.power.sampler import Sampler
from edge_slm.power.traces import ConstantTrace


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    """Emulator registrations of this test only (see emulated_ports.py)."""
    monkeypatch.setenv("EDGE_POWER_STATE_DIR", str(tmp_path / "state"))


def virtual_port(protocol="um25c", *, trace=None, watts=2.0, faults=None, seed=3, engine_options=None):
    """(VirtualSerial, VirtualClock): an emulated meter of `protocol` drawing `trace` (or `watts`)."""
    clock = VirtualClock()
    engine = make_engine(protocol, EmulatedSignal(trace or ConstantTrace(watts), seed=seed),
                         **(engine_options or {}))
    return VirtualSerial(engine, clock, faults=faults, seed=seed), clock


def virtual_meter(meter, protocol, *, driver_options=None, **port_options):
    """(driver, port, clock): the `meter` driver opened on a virtual `protocol` meter."""
    port, clock = virtual_port(protocol, **port_options)
    driver = create_meter(meter, "virtual", clock=clock, sleep=clock.sleep, opener=port.opener,
                          **(driver_options or {}))
    driver.open()
    return driver, port, clock


def virtual_sampler(meter="um25c", protocol="um25c", *, sampler_options=None, **port_options):
    """(Sampler not yet started, port, clock); started, it samples whenever the clock sleeps."""
    port, clock = virtual_port(protocol, **port_options)
    sampler = Sampler(meter, f"virtual-{protocol}", meter_options={"opener": port.opener}, clock=clock,
                      sleep=clock.sleep, **(sampler_options or {}))
    return sampler, port, clock


def read_for(driver, clock, seconds):
    samples = []
    while clock() < seconds:
        samples += driver.read_samples()
    return samples


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
