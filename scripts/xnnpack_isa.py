"""Run a benchmark process with LiteRT's XNNPACK restricted to an older x86 kernel set (bench tooling).

    python scripts/xnnpack_isa.py avx2 -m edge_slm.runtime.cli --model m.tflite --input dev.tsv

Why: how much a shorter sequence saves depends on the CPU's int8 engine. On a host with AVX-512
VNNI (or AMX) XNNPACK runs dynamic int8 with kernels far more efficient at 128 tokens than at 25;
on an AVX2-only host (the issue's own figures) dynamic int8 runs at about fp32 speed and the gain
follows the work. Restricting the same library on the same machine to its AVX2 kernels shows the
artifacts on that class of engine. It is the same hardware (caches, memory), so its figures stand
for "AVX2 kernels on this CPU", never for an AVX2-only host, and are labelled so.

How: XNNPACK reads the CPU's features once, into a static hardware config whose arch flags pick
every kernel. Before any interpreter exists, this calls the library's own xnn_init_hardware_config
(found in the shared library's symbol table) and clears the flags above the kernel set. The flag
layout is XNNPACK's (sse=bit 0 ... avx2=bit 7, avx512f=9, avx512vnni=18, as in ai-edge-litert 2.3);
the flags read are checked against /proc/cpuinfo first, and a build whose flags do not match is
refused rather than restricted wrongly.
"""

from __future__ import annotations

import ctypes
import runpy
import struct
import sys
from pathlib import Path

# XNNPACK's enum xnn_arch_flags (x86): bit of each feature whose presence is checked against the CPU
FEATURE_BITS = {"avx": 4, "f16c": 5, "fma": 6, "avx2": 7, "avx512f": 9, "avx_vnni": 14, "avx512_vnni": 18}
# kernel sets this can restrict to: the flags kept (sse, sse2, ssse3, sse4.1, avx, f16c, fma3, avx2)
KERNEL_SETS = {"avx2": (1 << 8) - 1}
ARCH_FLAGS_OFFSET = 8  # in struct xnn_hardware_config (the first store of init_hardware_config)
SYMBOL = b"xnn_init_hardware_config"
LIBRARY = "libpywrap_litert_common.so"


class RestrictionError(Exception):
    pass


def symbol_address(path: Path, name: bytes) -> int:
    """st_value of `name` in an ELF64 shared library's .symtab (a local symbol: not in .dynsym)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise RestrictionError(f"{path} is not a 64-bit ELF library")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strings_offset = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_offset, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            start = strings_offset + name_offset
            if data[start:start + len(name) + 1] == name + b"\0":
                return value
    raise RestrictionError(f"{path} has no symbol {name.decode()} (a stripped or other LiteRT build)")


def load_bias(path: Path) -> int:
    """Where the library is mapped in this process: its mapping at file offset 0 (a shared library is
    linked at address 0, so symbol values are offsets from there)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] == str(path) and int(parts[2], 16) == 0:
            return int(parts[0].split("-")[0], 16)
    raise RestrictionError(f"{path} is not loaded in this process")


def check_layout(flags: int, cpu_features: set) -> list:
    """Features whose flag disagrees with the CPU: non-empty means the layout is not XNNPACK's as known."""
    return [feature for feature, bit in FEATURE_BITS.items() if bool(flags >> bit & 1) != (feature in cpu_features)]


def litert_library() -> Path:
    import ai_edge_litert.interpreter as litert  # loads the library into this process

    return (Path(litert.__file__).parent / LIBRARY).resolve()


def arch_flags() -> ctypes.c_uint64:
    """The arch flags in this process's XNNPACK hardware config (initialised by the call), writable."""
    path = litert_library()
    init = ctypes.CFUNCTYPE(ctypes.c_void_p)(load_bias(path) + symbol_address(path, SYMBOL))
    return ctypes.c_uint64.from_address(init() + ARCH_FLAGS_OFFSET)


def restrict(kernel_set: str) -> tuple:
    """Restrict this process's XNNPACK to `kernel_set`; (flags before, flags after). Call before any
    interpreter is created: XNNPACK picks its kernels from these flags once."""
    from edge_slm.common.documents import cpu_flags  # deferred: only a restriction needs the package

    if kernel_set not in KERNEL_SETS:
        raise RestrictionError(f"unknown kernel set {kernel_set!r} (known: {', '.join(KERNEL_SETS)})")
    flags = arch_flags()
    before = flags.value
    wrong = check_layout(before, cpu_flags())
    if wrong:
        raise RestrictionError(f"XNNPACK's arch flags {before:#x} in {LIBRARY} disagree with this CPU on "
                               f"{', '.join(wrong)}: not the flag layout this was written for (ai-edge-litert 2.3)")
    flags.value = before & KERNEL_SETS[kernel_set]
    return before, flags.value


def main(argv: list) -> int:
    if len(argv) < 3 or argv[1] != "-m":
        print("usage: xnnpack_isa.py KERNEL_SET -m MODULE [ARGS...]", file=sys.stderr)
        return 2
    try:
        restrict(argv[0])
    except RestrictionError as e:
        print(f"xnnpack_isa: error: {e} (hint: run without the restriction)", file=sys.stderr)
        return 2
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
