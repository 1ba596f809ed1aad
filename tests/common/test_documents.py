"""Result documents: the host's int8-relevant CPU features, whether the CPU was emulated (and how that
was known), and the one rule for showing accuracy."""

from __future__ import annotations

import platform

from edge_slm.common.documents import (EMULATOR_ENV, accuracy_withheld, cpu_caches, cpu_features, describe_caches,
                                       describe_emulator, host_facts, lacks_int8_dot_product)

EPYC_AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: avx2 avx512f avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8\n")
PI_4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
PI_5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp\n"


def test_x86_without_vnni_or_amx_has_no_int8_dot_product():
    features = cpu_features(EPYC_AVX2_ONLY, "x86_64")
    assert features == {"isa": "x86", "int8_flags": ["avx2"], "int8_dot_product": False}
    assert lacks_int8_dot_product({"cpu_features": features})


def test_x86_with_vnni_and_amx_lists_them():
    features = cpu_features(SAPPHIRE_RAPIDS, "x86_64")
    assert features["int8_flags"] == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",
                                      "amx_bf16"]
    assert features["int8_dot_product"] is True


def test_arm_dot_product_is_asimddp():
    assert cpu_features(PI_4, "aarch64") == {"isa": "arm", "int8_flags": ["asimd"], "int8_dot_product": False}
    assert cpu_features(PI_5, "aarch64")["int8_dot_product"] is True


def test_unknown_cpu_is_not_called_slow():
    assert cpu_features("", "x86_64")["int8_dot_product"] is None
    assert cpu_features(PI_5, "riscv64")["int8_dot_product"] is None
    assert not lacks_int8_dot_product({"cpu_model": "an older document without cpu_features"})
    assert not lacks_int8_dot_product(None)


def test_host_facts_carry_this_cpus_features():
    features = host_facts()["cpu_features"]
    assert set(features) == {"isa", "int8_flags", "int8_dot_product"}
    if platform.machine() == "x86_64":
        flags = open("/proc/cpuinfo").read()
        assert features["isa"] == "x86" and ("avx2" in features["int8_flags"]) == (" avx2" in flags)


def test_trained_weights_show_accuracy_whatever_their_init():
    assert accuracy_withheld(True)                       # random weights, never trained
    assert not accuracy_withheld(True, trained_steps=6)  # random init, then trained
    assert not accuracy_withheld(False)
    assert not accuracy_withheld(None)                   # unknown: the caller says why there is no number


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


def test_cpu_caches_are_read_from_sysfs_without_instruction_caches(tmp_path):
    for index, (level, kind, size) in enumerate([("1", "Data", "48K"), ("1", "Instruction", "32K"),
                                                 ("2", "Unified", "1024K"), ("3", "Unified", "32768K")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(value + "\n")
    caches = cpu_caches(tmp_path)
    assert caches == {"L1d": 48 * 1024, "L2": 1024 ** 2, "L3": 32 * 1024 ** 2}
    assert describe_caches(caches) == "L2 1 MB, L3 32 MB"
    assert cpu_caches(tmp_path / "missing") is None and describe_caches(None) == ""


def test_an_emulated_cpu_reports_no_caches(monkeypatch):
    """QEMU user mode shows the host's /sys: those caches are not the emulated CPU's."""
    monkeypatch.setenv(EMULATOR_ENV, "qemu-aarch64 10.0 cortex-a72")
    assert host_facts()["cpu_caches"] is None
