"""Host facts say whether the CPU was emulated, and how that was known."""

from __future__ import annotations

from edge_slm.common.documents import EMULATOR_ENV, describe_emulator, host_facts


def test_a_native_process_is_not_emulated(monkeypatch):
    monkeypatch.delenv(EMULATOR_ENV, raising=False)
    facts = host_facts()
    assert facts["emulated"] is False and facts["emulator"] is None


def test_the_emulated_device_wrapper_declares_its_emulator(monkeypatch):
    monkeypatch.setenv(EMULATOR_ENV, "qemu-aarch64 10.0.2 cortex-a76")
    facts = host_facts()
    assert facts["emulated"] is True
    assert facts["emulator"] == {"name": "qemu-aarch64", "version": "10.0.2", "cpu": "cortex-a76",
                                 "evidence": [f"{EMULATOR_ENV}=qemu-aarch64 10.0.2 cortex-a76"]}
    assert describe_emulator(facts) == "qemu-aarch64 10.0.2, CPU cortex-a76"
