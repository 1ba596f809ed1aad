"""Result documents: the `edge-run --json` document (schema "edge-slm.run", version 1), host facts, memory.

Schema v1, top-level keys (README "Results schema" documents each field):
  schema, schema_version, created, tool, host, backend, threads, model,
  predictions | null, evaluation | null, benchmark | null, energy | null
Adding keys is compatible; renaming or removing one bumps `schema_version`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Optional

from . import __version__

SCHEMA = "edge-slm.run"
SCHEMA_VERSION = 1
RANDOM_WEIGHTS_ACCURACY = "n/a (random weights)"
# The instructions that decide int8 inference speed (XNNPACK picks its int8 kernels by them at run time).
INT8_SPEED_FLAGS = {
    "x86": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"),
    "arm": ("asimd", "asimddp", "i8mm", "sve", "sve2"),
}
# Without one of these an int8 matrix product is done with wider multiplies: often no faster than fp32.
INT8_DOT_PRODUCT_FLAGS = {"x86": ("avx512_vnni", "avx_vnni", "amx_int8"), "arm": ("asimddp",)}
NO_INT8_DOT_PRODUCT = "no int8 dot-product instructions on this CPU"


def accuracy_withheld(random_init: Optional[bool], trained_steps: int = 0) -> bool:
    """The one rule for showing accuracy: only random weights that were never trained get
    RANDOM_WEIGHTS_ACCURACY instead of a number (their agreement with labels is chance). Trained
    weights get their number whatever their initialisation; None (unknown) is not withheld here."""
    return bool(random_init) and trained_steps <= 0


def edge_slm_version() -> str:
    return __version__


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host_facts() -> dict:
    emulation = emulation_facts()
    return {
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_mb": _meminfo_mb("MemTotal"),
        "os": platform.platform(),
        "board": _board_model(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_features": cpu_features(_cpuinfo(), platform.machine()),
        # an emulator shows the host's caches, not the emulated CPU's
        "cpu_caches": None if emulation["emulated"] else cpu_caches(),
        **emulation,
    }


def describe_caches(caches: Optional[dict]) -> str:
    """"L2 1 MB, L3 32 MB": the caches that can hold a model's weights ("" when unknown)."""
    return ", ".join(f"{name} {size / 2 ** 20:g} MB" for name, size in sorted((caches or {}).items())
                     if name != "L1d")


def cpu_caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> Optional[dict]:
    """CPU 0's data and unified caches in bytes, e.g. {"L1d": 49152, "L2": 1048576, "L3": 33554432}
    (an L3 is shared by several cores); None where the kernel lists none."""
    caches = {}
    for index in sorted(root.glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        if kind == "Instruction" or not size:
            continue
        multiplier = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(size[-1], 1)
        try:
            caches[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * multiplier
        except ValueError:
            continue
    return caches or None


EMULATOR_ENV = "EDGE_SLM_EMULATOR"


def emulation_facts() -> dict:
    """{"emulated": bool, "emulator": {name, version, cpu, evidence} | None}: is this CPU emulated?

    Two independent signs, either one suffices and both are recorded as evidence:
    - EDGE_SLM_EMULATOR="<emulator> <version> <cpu model>", set by the wrappers of the emulated
      device (scripts/device_arm64.py);
    - QEMU user mode emulates /proc/cpuinfo and uname but not /proc/self/status, whose Name is the
      emulator's own binary (qemu-aarch64), whatever launched it.
    """
    evidence = []
    name = version = cpu = None
    declared = os.environ.get(EMULATOR_ENV, "").split()
    if declared:
        evidence.append(f"{EMULATOR_ENV}={' '.join(declared)}")
        name, version, cpu = (declared + [None, None, None])[:3]
    process_name = _status_field("Name")
    if process_name and process_name.startswith("qemu-"):
        evidence.append(f"/proc/self/status Name: {process_name}")
        name = name or process_name
    if not evidence:
        return {"emulated": False, "emulator": None}
    return {"emulated": True, "emulator": {"name": name, "version": version, "cpu": cpu, "evidence": evidence}}


def describe_emulator(host: dict) -> str:
    """'qemu-aarch64 10.0.2, CPU cortex-a72' for an emulated host's facts."""
    emulator = host.get("emulator") or {}
    text = " ".join(str(x) for x in (emulator.get("name"), emulator.get("version")) if x) or "an emulator"
    return text + (f", CPU {emulator['cpu']}" if emulator.get("cpu") else "")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: Optional[str] = None) -> set:
    """Every flag /proc/cpuinfo lists (x86 `flags`, ARM `Features`); this machine's when not given."""
    present = set()
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            present.update(value.split())
    return present


def cpu_features(cpuinfo: str, machine: str) -> dict:
    """The int8-relevant flags of /proc/cpuinfo (x86 `flags`, ARM `Features`), and whether the CPU has
    an int8 dot-product path; None where /proc/cpuinfo does not say (another OS or architecture)."""
    arch = machine.lower()
    isa = ("x86" if arch in ("x86_64", "amd64", "i386", "i686") else
           "arm" if arch.startswith(("aarch64", "arm")) else None)
    present = cpu_flags(cpuinfo)
    if isa is None or not present:
        return {"isa": isa, "int8_flags": None, "int8_dot_product": None}
    return {"isa": isa, "int8_flags": [f for f in INT8_SPEED_FLAGS[isa] if f in present],
            "int8_dot_product": any(f in present for f in INT8_DOT_PRODUCT_FLAGS[isa])}


def lacks_int8_dot_product(host: Optional[dict]) -> bool:
    """True only when the host facts say so (older documents without cpu_features: unknown, False)."""
    return ((host or {}).get("cpu_features") or {}).get("int8_dot_product") is False


def _cpu_model() -> str:
    text = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def _board_model() -> Optional[str]:
    # Raspberry Pi, Jetson and most ARM boards name themselves here.
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace") or None
    except OSError:
        return None


def _meminfo_mb(key: str) -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _status_field(key: str) -> Optional[str]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return value.strip()
    except OSError:
        pass
    return None


def memory_mb() -> dict:
    """Current and peak resident set size of this process, in MB."""
    status = {}
    for name in ("VmRSS", "VmHWM"):
        try:
            status[name] = int(_status_field(name).split()[0]) / 1024
        except (AttributeError, ValueError, IndexError):
            pass
    if "VmHWM" not in status:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status["VmHWM"] = peak_kb / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return {"rss_mb": round(status.get("VmRSS", status["VmHWM"]), 2), "peak_rss_mb": round(status["VmHWM"], 2)}


def new_document() -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": utc_now(),
        "tool": {"name": "edge-run", "edge_slm": edge_slm_version()},
        "host": host_facts(),
        "backend": None,
        "threads": None,
        "model": None,
        "predictions": None,
        "evaluation": None,
        "benchmark": None,
        "energy": None,
    }
