#!/usr/bin/env python3
"""Build the emulated aarch64 device (`make device-arm64`): a board's Python under QEMU user mode.

From nothing, and idempotently (each step keeps a stamp and is skipped when its inputs are
unchanged), under build/device-arm64/:

  apt/            a private apt state (its own sources, lists and .debs): the machine's apt
                  configuration is read, never changed, so no `dpkg --add-architecture` is needed
  sysroot/        Debian 12's arm64 Python 3.11 and the libraries it loads, unpacked with dpkg-deb -x
  qemu-aarch64    QEMU 10 user mode from bookworm-backports (Debian 12's QEMU 7.2 passes the host's
                  x86 /proc/cpuinfo through, and ai-edge-litert 2.3 then crashes in its CPU detection)
  wheels/<extra>/ the aarch64 wheels pip resolved for the wheel built from this checkout + the extra
  site/, bin/     the device: `edge-slm[device]` installed from the wheel (no source tree on its
                  path), and bin/python3, bin/edge-run, bin/edge-power running it under QEMU
  tflite-runtime/ a second device: `edge-slm[tflite-runtime]` (tflite-runtime 2.14, numpy<2)

The wrappers take the emulated CPU from EDGE_SLM_DEVICE_CPU (cortex-a72, as a Raspberry Pi 4, by
default; cortex-a76 is a Raspberry Pi 5) and tell edge-run it is emulated through EDGE_SLM_EMULATOR.
The Debian mirror is the one the machine's own apt sources name; nothing here names a host.
The last line printed is the path of the device's edge-run wrapper. Failures are one line:
`device-arm64: error: ... (hint: ...)` and exit status 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "build" / "device-arm64"
PROG = "device-arm64"

SUITE = "bookworm"  # the arm64 packages below are Debian 12's; its Python is 3.11
PYTHON_VERSION = "3.11"
ARM64_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1",
    "libstdc++6", "libexpat1", "zlib1g", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0",
    "libuuid1", "libncursesw6", "libtinfo6", "libreadline8", "libcrypt1", "libnsl2", "libtirpc3",
    "libgssapi-krb5-2", "libk5crypto3", "libkrb5-3", "libkrb5support0", "libkeyutils1", "libcom-err2",
    "libdb5.3",
)
QEMU_PACKAGE = "qemu-user"  # from <SUITE>-backports: QEMU 10, a static binary
QEMU_BINARY = "usr/bin/qemu-aarch64"
CPU_ENV = "EDGE_SLM_DEVICE_CPU"
DEFAULT_CPU = "cortex-a72"
# pip takes each --platform literally: every manylinux tag an aarch64 board with glibc >= 2.36
# accepts must be listed (ai-edge-litert 2.x is manylinux_2_27; tflite-runtime 2.14 manylinux_2_34).
AARCH64_TAGS = ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)) \
    + ("linux_aarch64",)
# The device commands; edge-convert, edge-train and edge-bench are workstation tools.
DEVICE_COMMANDS = ("edge-run", "edge-power")
DEVICES = {"device": "", "tflite-runtime": "tflite-runtime"}  # extra -> folder under the root
IMPORTS = {"device": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
NETWORK_TIMEOUT_S = 300


class BuildError(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"{PROG}: [{time.monotonic() - STARTED:5.1f} s] {text}", file=sys.stderr, flush=True)


def run(command: list, *, timeout: float = NETWORK_TIMEOUT_S, what: str, hint: str, **kwargs) -> str:
    """Run a command to completion; any failure is one BuildError naming the step."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError:
        raise BuildError(f"{what}: {command[0]} is not installed", hint) from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: no answer within {timeout:.0f} s", hint) from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines()
                 if line.strip() and not line.startswith(("WARNING", "W:"))]
        errors = [line for line in lines if re.match(r"(E:|ERROR|error)", line)]
        detail = (errors or lines or [f"exit status {done.returncode}"])[0]
        raise BuildError(f"{what} failed: {detail}", hint)
    return done.stdout


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fresh(stamp: Path, key: str) -> bool:
    return stamp.exists() and stamp.read_text() == key


def replace_dir(target: Path, built: Path) -> None:
    """Swap a finished folder in, so an interrupted build never leaves a half folder behind."""
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)


# ---- Debian packages: Python for arm64, QEMU for the host -------------------------------------
def debian_archive() -> tuple:
    """(URI, keyring) of the machine's configured Debian archive for SUITE."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else ():
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0], fields.get("Signed-By", "").strip()
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = re.match(r"\s*deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)\s", line)
            if match and match.group(3) == SUITE:
                options = dict(o.split("=", 1) for o in (match.group(1) or "").split() if "=" in o)
                return match.group(2), options.get("signed-by", "")
    raise BuildError(f"no Debian '{SUITE}' source in /etc/apt/sources.list.d or /etc/apt/sources.list",
                     f"this builder expects a Debian 12 ({SUITE}) machine with its apt sources configured")


def apt_options(apt_dir: Path) -> list:
    return ["-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State={apt_dir / 'state'}", "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "APT::Architecture=amd64", "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
            "-o", "Debug::NoLocking=1", "-o", "Acquire::Retries=1", "-o", "Acquire::http::Timeout=30",
            "-o", "Acquire::https::Timeout=30", "-o", "APT::Sandbox::User=root"]


def build_sysroot(root: Path) -> None:
    sysroot, qemu = root / "sysroot", root / "qemu-aarch64"
    key = digest(SUITE, ARM64_PACKAGES, QEMU_PACKAGE)
    stamp = root / ".sysroot-stamp"
    if fresh(stamp, key) and sysroot.is_dir() and qemu.is_file():
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BuildError("apt-get and dpkg-deb are needed", "run on a Debian 12 machine")
    uri, keyring = debian_archive()
    apt_dir = root / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "debs"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    signed = f" signed-by={keyring}" if keyring else ""
    (apt_dir / "sources.list").write_text(
        f"deb [arch=arm64{signed}] {uri} {SUITE} main\n"
        f"deb [arch=amd64{signed}] {uri} {SUITE}-backports main\n")
    options = apt_options(apt_dir)
    hint = f"the Debian archive in the machine's apt sources ({uri}) must be reachable"
    say(f"apt: {SUITE} arm64 + {SUITE}-backports lists (private apt state in {apt_dir})")
    run(["apt-get", *options, "--error-on=any", "-q", "update"], what="apt-get update", hint=hint)
    debs = apt_dir / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    wanted = [f"{name}:arm64" for name in ARM64_PACKAGES] + [f"{QEMU_PACKAGE}:amd64"]
    say(f"apt: downloading {len(wanted)} packages")
    run(["apt-get", *options, "-q", "download", *wanted], cwd=debs, what="apt-get download", hint=hint)
    damaged = "the download is damaged; delete build/device-arm64 and run again"
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        built = Path(scratch) / "sysroot"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda deb: run(["dpkg-deb", "-x", str(deb), str(built)], timeout=300,
                                          what=f"dpkg-deb -x {deb.name}", hint=damaged),
                          sorted(debs.glob("*_arm64.deb"))))
        qemu_deb = next(debs.glob(f"{QEMU_PACKAGE}_*_amd64.deb"))
        # Only qemu-aarch64 out of the package's 60 MB of emulators.
        run(["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -xO "./$2" > "$3" && chmod 755 "$3"', "sh",
             str(qemu_deb), QEMU_BINARY, str(Path(scratch) / "qemu-aarch64")],
            timeout=300, what=f"unpacking {QEMU_BINARY} from {qemu_deb.name}", hint=damaged)
        replace_dir(sysroot, built)
        (Path(scratch) / "qemu-aarch64").replace(qemu)
    stamp.write_text(key)


def qemu_version(root: Path) -> str:
    out = run([str(root / "qemu-aarch64"), "--version"], timeout=60, what="qemu-aarch64 --version",
              hint="delete build/device-arm64 and run again")
    match = re.search(r"version (\d+\.\d+\.\d+)", out)
    return match.group(1) if match else "unknown"


# ---- the wheel of this checkout and its aarch64 dependencies -----------------------------------
def build_wheel(root: Path) -> Path:
    """`pip wheel --no-deps .`: the same wheel a user installs on a board."""
    out = root / "wheel"
    if out.exists():
        shutil.rmtree(out)
    say("pip wheel --no-deps . (this checkout)")
    # From a copy of the checkout's files (tracked and new, not ignored): setuptools reuses its
    # build/ folder, where a module deleted from the source would live on into the wheel.
    listed = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=60,
                 what="git ls-files", hint="run from a git checkout of edge-slm")
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        source = Path(scratch) / "edge-slm"
        for name in filter(None, listed.split("\0")):
            if (REPO / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, source / name)
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
             str(source)], what="pip wheel",
            hint="pip and setuptools>=68 are needed in the Python running this script (make install)")
    return next(out.glob("edge_slm-*.whl"))


def wheel_content(wheel: Path) -> str:
    """Digest of the files in the wheel, not of the zip (whose timestamps change every build)."""
    sha = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith(".dist-info/RECORD"):
                sha.update(name.encode() + b"\0" + archive.read(name))
    return sha.hexdigest()


def requirements(wheel: Path) -> list:
    """Requires-Dist of the wheel (with their extra markers): what pip resolves for an extra."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return sorted(line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:"))


def pip_target_options(python_version: str) -> list:
    nodot = python_version.replace(".", "")
    options = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{nodot}",
               "--abi", "abi3", "--abi", "none"]
    for tag in AARCH64_TAGS:
        options += ["--platform", tag]
    return options


def download_wheels(wheel: Path, extra: str, python_version: str, into: Path) -> list:
    """pip download of the wheel + extra for aarch64 CPython `python_version`: binary wheels only."""
    into.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "-q", *pip_target_options(python_version), "-d", str(into),
         f"edge-slm[{extra}] @ {wheel.as_uri()}"],
        what=f"pip download edge-slm[{extra}] for aarch64 CPython {python_version}",
        hint="PyPI must be reachable, and every dependency must have an aarch64 wheel")
    return sorted(p.name for p in into.glob("*.whl"))


def install_device(root: Path, wheel: Path, extra: str, folder: str, qemu: str) -> Path:
    """The device `extra` in root/folder: site/ from the wheels, bin/ wrappers. Returns bin/."""
    device = root / folder if folder else root
    cache = root / "wheels" / extra
    key = digest(wheel_content(wheel), extra, AARCH64_TAGS, qemu)
    stamp = device / ".site-stamp"
    if not fresh(stamp, key):
        deps_key = digest(requirements(wheel), extra, AARCH64_TAGS)
        if not fresh(cache / ".stamp", deps_key):
            if cache.exists():
                shutil.rmtree(cache)
            say(f"pip download edge-slm[{extra}] for aarch64 CPython {PYTHON_VERSION}")
            download_wheels(wheel, extra, PYTHON_VERSION, cache)
            (cache / ".stamp").write_text(deps_key)
        device.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=device) as scratch:
            site = Path(scratch) / "site"
            say(f"installing edge-slm[{extra}] into {device / 'site'}")
            # Host pip installs for the target platform; it byte-compiles with this CPython 3.11
            # (same .pyc magic as the device's 3.11), which saves the emulated device seconds per start.
            run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(cache),
                 *pip_target_options(PYTHON_VERSION), "--target", str(site), f"edge-slm[{extra}] @ {wheel.as_uri()}"],
                what=f"pip install edge-slm[{extra}] --target", hint="delete build/device-arm64 and run again")
            shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with the host's shebang
            replace_dir(device / "site", site)
        write_wrappers(root, device, qemu)
        smoke_test(device / "bin", IMPORTS[extra])
        stamp.write_text(key)
    write_wrappers(root, device, qemu)
    return device / "bin"


# ---- wrappers ----------------------------------------------------------------------------------
PYTHON_WRAPPER = """#!/bin/sh
# The emulated aarch64 device's python3 (written by scripts/device_arm64.py): Debian 12's arm64
# CPython {python_version} under QEMU {qemu} user mode, with only {site} on its path.
# CPU model: ${cpu_env} (default {default_cpu}; cortex-a72 ~ Raspberry Pi 4, cortex-a76 ~ Pi 5).
root='{root}'
cpu="${{{cpu_env}:-{default_cpu}}}"
unset PYTHONHOME
PYTHONPATH='{site}' PYTHONNOUSERSITE=1 EDGE_SLM_EMULATOR="qemu-aarch64 {qemu} $cpu" \\
  exec "$root/qemu-aarch64" -cpu "$cpu" -L "$root/sysroot" "$root/sysroot/usr/bin/python{python_version}" "$@"
"""

COMMAND_WRAPPER = """#!/bin/sh
# {command} on the emulated aarch64 device (written by scripts/device_arm64.py).
# -P: the current directory stays off sys.path, so a source tree there is never imported.
exec '{python}' -P -c 'import sys; sys.argv[0] = "{command}"; from {module} import {function}; sys.exit({function}())' "$@"
"""


def entry_points(site: Path) -> dict:
    text = next(site.glob("edge_slm-*.dist-info")).joinpath("entry_points.txt").read_text()
    return dict(re.findall(r"^(edge-[a-z]+)\s*=\s*(\S+)\s*$", text, re.M))


def write_wrappers(root: Path, device: Path, qemu: str) -> None:
    bin_dir = device / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python3"
    write_executable(python, PYTHON_WRAPPER.format(
        root=root, site=device / "site", qemu=qemu, python_version=PYTHON_VERSION, cpu_env=CPU_ENV,
        default_cpu=DEFAULT_CPU))
    scripts = entry_points(device / "site")
    for command in DEVICE_COMMANDS:
        module, function = scripts[command].split(":")
        write_executable(bin_dir / command, COMMAND_WRAPPER.format(
            command=command, python=python, module=module, function=function))


def write_executable(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def smoke_test(bin_dir: Path, module: str) -> None:
    """The device starts, is aarch64, and imports its interpreter."""
    code = f"import platform, {module}; print(platform.machine())"
    out = run([str(bin_dir / "python3"), "-c", code], timeout=300, what=f"emulated python3 -c 'import {module}'",
              hint="delete build/device-arm64 and run again")
    if out.strip() != "aarch64":
        raise BuildError(f"the emulated python reports machine {out.strip()!r}, not aarch64",
                         "delete build/device-arm64 and run again")


def build(root: Path) -> Path:
    build_sysroot(root)
    qemu = qemu_version(root)
    wheel = build_wheel(root)
    bins = {extra: install_device(root, wheel, extra, folder, qemu) for extra, folder in DEVICES.items()}
    say(f"devices ready: {bins['device']} (edge-slm[device]), {bins['tflite-runtime']} (edge-slm[tflite-runtime]); "
        f"QEMU {qemu}, CPU ${CPU_ENV} (default {DEFAULT_CPU})")
    return bins["device"] / "edge-run"


# ---- install matrix: does `pip install edge-slm[extra]` resolve on real boards? ----------------
MATRIX_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
# tflite-runtime's last release (2.14) has aarch64 wheels for CPython 3.9-3.11 only.
MATRIX_EXPECTED = {"device": MATRIX_PYTHONS, "tflite-runtime": ("3.9", "3.10", "3.11")}
NO_WHEEL_SIGNS = ("Could not find a version", "No matching distribution")


def install_matrix(root: Path, out: Path) -> dict:
    """For aarch64 x each CPython, resolve each extra's whole dependency set to binary wheels.

    Downloads land in root/matrix/ (pip's cache makes reruns cheap); the result document goes to
    `out`. An expected combination that does not resolve is an error.
    """
    wheel = build_wheel(root)
    key = digest(requirements(wheel), AARCH64_TAGS, MATRIX_EXPECTED)
    if out.exists():
        cached = json.loads(out.read_text())
        settled = all(r["resolved"] for r in cached.get("rows", ()) if r["expected"])
        if cached.get("key") == key and settled:  # same requirements, same question: the answer stands
            say(f"matrix: unchanged requirements, results kept in {out}")
            return report_matrix(cached, out)
    rows = []
    for extra, expected in MATRIX_EXPECTED.items():
        for python_version in MATRIX_PYTHONS:
            into = root / "matrix" / f"cp{python_version.replace('.', '')}-{extra}"
            if into.exists():
                shutil.rmtree(into)
            say(f"matrix: edge-slm[{extra}] on aarch64 CPython {python_version}")
            try:
                wheels = download_wheels(wheel, extra, python_version, into)
                row = {"resolved": True, "wheels": [w for w in wheels if not w.startswith("edge_slm-")]}
            except BuildError as e:
                if not any(sign in e.message for sign in NO_WHEEL_SIGNS):
                    raise  # not an answer about wheels (no network, a broken pip): stop here
                row = {"resolved": False, "error": e.message}
            rows.append({"python": python_version, "extra": extra, "expected": python_version in expected, **row})
    doc = {"schema": "edge-slm.device-install-matrix", "key": key, "checked": utc_now(),
           "platform": "aarch64 (manylinux, glibc 2.36)",
           "platform_tags": list(AARCH64_TAGS), "requirements": requirements(wheel), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    return report_matrix(doc, out)


def report_matrix(doc: dict, out: Path) -> dict:
    rows = doc["rows"]
    for row in rows:
        state = "resolves" if row["resolved"] else "no wheels"
        print(f"aarch64  CPython {row['python']:<5} edge-slm[{row['extra']}]  {state}"
              + ("" if row["resolved"] == row["expected"] else "  UNEXPECTED"))
    missing = [f"[{r['extra']}] on {r['python']}" for r in rows if r["expected"] and not r["resolved"]]
    if missing:
        raise BuildError(f"no binary wheels for edge-slm{', '.join(missing)}; see {out}",
                         "a dependency dropped its aarch64 wheels; pin it or update the README's board table")
    return doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the devices live")
    parser.add_argument("--matrix", type=Path, metavar="JSON",
                        help="instead of building, check the install matrix (aarch64 x CPython 3.9-3.13) into JSON")
    args = parser.parse_args(argv)
    try:
        root = args.root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if args.matrix:
            install_matrix(root, args.matrix)
            print(args.matrix)
        else:
            print(build(root))
    except BuildError as e:
        print(f"{PROG}: error: {e.message} (hint: {e.hint})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted (hint: run it again; finished steps are kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
