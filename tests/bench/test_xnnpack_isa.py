"""scripts/xnnpack_isa.py: the bench tooling that restricts LiteRT's XNNPACK to its AVX2 kernels."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "xnnpack_isa.py"
spec = importlib.util.spec_from_file_location("xnnpack_isa", SCRIPT)
xnnpack_isa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xnnpack_isa)

x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="XNNPACK's x86 arch flags")


def test_layout_check_names_each_feature_the_flags_get_wrong():
    avx512_vnni_cpu = {"avx", "f16c", "fma", "avx2", "avx512f", "avx_vnni", "avx512_vnni"}
    # ai-edge-litert 2.3 on the AMD EPYC host of this project: sse .. avx512vnnigfni, no fp16, amx, vnniint8
    assert xnnpack_isa.check_layout(0xF6FFF, avx512_vnni_cpu) == []
    assert xnnpack_isa.check_layout(0xFF, avx512_vnni_cpu) == ["avx512f", "avx_vnni", "avx512_vnni"]
    assert xnnpack_isa.check_layout(0xFF, {"avx", "f16c", "fma", "avx2"}) == []  # an AVX2-only CPU
    assert xnnpack_isa.check_layout(0x7F, {"avx", "f16c", "fma", "avx2"}) == ["avx2"]  # another layout


@x86_only
def test_the_hardware_config_entry_is_found_in_the_litert_library():
    library = xnnpack_isa.litert_library()
    assert xnnpack_isa.symbol_address(library, xnnpack_isa.SYMBOL) > 0
    with pytest.raises(xnnpack_isa.RestrictionError, match="no symbol"):
        xnnpack_isa.symbol_address(library, b"no_such_symbol_in_litert")


@x86_only
def test_restriction_leaves_xnnpack_only_the_avx2_flags():
    """In a fresh process: the flags XNNPACK picks its kernels from, read back through its own entry."""
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import xnnpack_isa as x; "
             "before, after = x.restrict('avx2'); print(json.dumps([before, after, x.arch_flags().value]))")
    proc = subprocess.run([sys.executable, "-c", probe, str(SCRIPT.parent)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after, read_back = json.loads(proc.stdout)
    assert after == read_back == before & 0xFF


def test_command_line_errors_are_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT), "sse9", "-m", "json.tool"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "xnnpack_isa: error: unknown kernel set 'sse9' (known: avx2) (hint: run without the restriction)"]
    usage = subprocess.run([sys.executable, str(SCRIPT), "avx2"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: xnnpack_isa.py")
