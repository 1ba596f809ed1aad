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


def edge_slm_version() -> str:
    return __version__


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host_facts() -> dict:
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
        **emulation_facts(),
    }


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


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
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
