"""A board the study runs on: probed once, provisioned once per edge-slm version, artifacts pushed once.

    device = Device(SshTransport("pi@raspberrypi"), DeviceOptions())
    device.probe(); device.provision(wheel_builder); remote = device.push_artifact(path)

Layout on the device, under --device-dir (relative paths are relative to the login's home):
    <dir>/<version>/<extra>/venv/            the virtualenv: this checkout's wheel + the extra
    <dir>/<version>/<extra>/installed.json   written last: its presence means the venv is complete
    <dir>/artifacts/<graph sha256>/<name>    each artifact, content-addressed (not sent again)
    <dir>/data/<sha256>/<name>               the --data file, sent once
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edge_slm.common.documents import edge_slm_version
from edge_slm.common.errors import EdgeError

from .plan import artifact_metadata
from .transport import Completed, DeviceUnreachable, DiskFull, Transport

DEFAULT_DEVICE_DIR = ".cache/edge-slm"
DEVICE_EXTRAS = ("device", "tflite-runtime", "device,host")  # device,host: TF too, for --baseline there
MIN_PYTHON = (3, 9)  # pyproject's requires-python
PROVISION_TIMEOUT_S = 1800.0
SHELL_TIMEOUT_S = 120.0

# Runs under any Python 3 on the device (no f-strings): its facts as one JSON line, with the keys
# of common.documents.host_facts plus what provisioning needs.
PROBE = r"""
import json, os, platform, shutil, sys
root = os.path.join(os.path.expanduser("~"), sys.argv[1])  # an absolute argv[1] stays as it is
marker = os.path.join(root, sys.argv[2], sys.argv[3], "installed.json")
def text(path):
    try:
        with open(path, "rb") as f:
            return f.read().rstrip(b"\0\n").decode("utf-8", "replace") or None
    except (IOError, OSError):
        return None
cpu = None
for line in (text("/proc/cpuinfo") or "").splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("model name", "Model", "Hardware", "cpu model", "Processor") and value.strip():
        cpu = value.strip()
        break
memory = None
for line in (text("/proc/meminfo") or "").splitlines():
    if line.startswith("MemTotal:"):
        memory = round(int(line.split()[1]) / 1024.0, 1)
existing = root
while existing and not os.path.isdir(existing):
    existing = os.path.dirname(existing)
free = shutil.disk_usage(existing or ".").free if hasattr(shutil, "disk_usage") else None
libc = platform.libc_ver()
installed = text(marker)
print(json.dumps({
    "cpu_model": cpu or platform.machine(), "machine": platform.machine(), "cores_logical": os.cpu_count(),
    "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "memory_total_mb": memory, "os": platform.platform(), "board": text("/proc/device-tree/model"),
    "python": platform.python_version(), "python_implementation": platform.python_implementation(),
    "python_version": list(sys.version_info[:2]), "python_executable": sys.executable,
    "glibc": libc[1] if libc[0] == "glibc" else None,
    "free_disk_mb": None if free is None else round(free / 1e6, 1), "device_dir": root,
    "edge_slm_installed": json.loads(installed) if installed else None}))
"""
# The shell part: a device without the Python asked for says so instead of failing obscurely.
PROBE_SHELL = ('if command -v "$1" >/dev/null 2>&1; then exec "$1" -c "$2" "$3" "$4" "$5"; fi; '
               'echo "no-python $(uname -m)"')


@dataclass
class DeviceOptions:
    device_dir: str = DEFAULT_DEVICE_DIR
    extra: str = "device"
    python: str = "python3"
    offline: bool = False          # the workstation downloads the device's wheels and pushes them


@dataclass
class Phases:
    """Wall seconds of each phase of one device's study."""
    probe_s: float = 0.0
    provision_s: float = 0.0
    push_s: float = 0.0
    runs_s: float = 0.0
    provisioned: bool = False      # False: the device already had this version
    pushed: list = field(default_factory=list)    # artifacts (and data) sent this time
    already_there: list = field(default_factory=list)


class Device:
    def __init__(self, transport: Transport, options: DeviceOptions = DeviceOptions()):
        self.transport = transport
        self.options = options
        self.name = transport.name
        self.facts: Optional[dict] = None
        self.phases = Phases()
        self.version = edge_slm_version()
        self.root = options.device_dir  # made absolute by the probe (relative: to the login's HOME)

    @property
    def home(self) -> str:
        """This version's folder on the device."""
        return f"{self.root}/{self.version}/{self.options.extra}"

    @property
    def venv_python(self) -> str:
        return f"{self.home}/venv/bin/python"

    def _error(self, what: str, hint: str) -> EdgeError:
        return EdgeError(f"device {self.name}: {what}", hint)

    def _shell(self, argv: list, timeout: float = SHELL_TIMEOUT_S, *, guard: bool = False) -> Completed:
        result = self.transport.run(argv, timeout, guard=guard)
        if result.timed_out:
            raise DeviceUnreachable(f"device {self.name}: `{argv[0]}` did not answer within {timeout:g} s",
                                    "is the device overloaded or its disk hung? rerun with --resume")
        return result

    # ---- probe ---------------------------------------------------------------------------------

    def probe(self) -> dict:
        start = time.monotonic()
        python = self.options.python
        result = self._shell(["sh", "-c", PROBE_SHELL, "sh", python, PROBE, self.options.device_dir, self.version,
                              self.options.extra])
        out = result.stdout.strip()
        if out.startswith("no-python"):
            raise self._error(f"no {python} on the device ({out.split()[-1]})",
                              "install Python 3.9 or newer there (e.g. apt-get install python3 python3-venv), "
                              "or name another interpreter with --device-python")
        try:
            facts = json.loads(out.splitlines()[-1])
            version = tuple(facts["python_version"])
        except (ValueError, IndexError, KeyError, TypeError):
            raise self._error(f"{python} did not answer the probe ({result.last_error_line()})",
                              "check that it is a working CPython 3.9+ (--device-python names another)") from None
        if version < MIN_PYTHON:
            need = ".".join(map(str, MIN_PYTHON))
            raise self._error(f"Python {facts['python']} is too old (edge-slm needs {need} or newer)",
                              f"install Python {need}+ on the device and pass it with --device-python")
        self.facts = facts
        self.root = facts["device_dir"].rstrip("/")
        self.transport.python = facts["python_executable"] or python
        self.phases.probe_s = time.monotonic() - start
        return facts

    def host_facts(self) -> dict:
        """The facts results rows carry (the keys of common.documents.host_facts, plus the device's)."""
        keep = ("cpu_model", "machine", "cores_logical", "cores_usable", "memory_total_mb", "os", "board",
                "python", "python_implementation", "glibc", "free_disk_mb")
        return {key: self.facts.get(key) for key in keep} if self.facts else {}

    def installed(self) -> bool:
        marker = (self.facts or {}).get("edge_slm_installed") or {}
        return marker.get("edge_slm") == self.version and marker.get("extra") == self.options.extra

    def has_host_extra(self) -> bool:
        return "host" in self.options.extra.split(",")

    # ---- provision -----------------------------------------------------------------------------

    def provision(self, wheel: Callable[[], Path], download_wheels: Callable[[dict, str, str], Path]) -> None:
        """Install this version's wheel with the extra into the device's venv, unless already there."""
        start = time.monotonic()
        if self.installed():
            return
        self.phases.provisioned = True
        local_wheel = wheel()
        wheels_dir = f"{self.home}/wheels"
        remote_wheel = f"{wheels_dir}/{local_wheel.name}"
        self._push_file(local_wheel, remote_wheel)
        pip = [self.venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
               "--no-warn-script-location"]
        if self.options.offline:
            local_dir = download_wheels(self.facts, self.options.extra, self.name)
            for path in sorted(local_dir.glob("*.whl")):
                if path.name != local_wheel.name:  # pip download copies it there too
                    self._push_file(path, f"{wheels_dir}/{path.name}")
            pip += ["--no-index", "--find-links", wheels_dir]
        self._shell(["rm", "-rf", f"{self.home}/venv", f"{self.home}/installed.json"])
        venv = self._shell([self.transport.python, "-m", "venv", f"{self.home}/venv"], PROVISION_TIMEOUT_S, guard=True)
        if venv.returncode != 0:
            self._provision_error(venv, "creating the virtualenv")
        installed = self._shell(pip + [f"{remote_wheel}[{self.options.extra}]"], PROVISION_TIMEOUT_S, guard=True)
        if installed.returncode != 0:
            self._provision_error(installed, f"installing edge-slm[{self.options.extra}]")
        marker = json.dumps({"edge_slm": self.version, "extra": self.options.extra, "wheel": local_wheel.name})
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write(marker + "\n")
            f.flush()
            self._push_file(Path(f.name), f"{self.home}/installed.json")
        self.phases.provision_s = time.monotonic() - start

    def _provision_error(self, result: Completed, doing: str) -> None:
        err = result.stderr
        machine, python = self.facts["machine"], self.facts["python"]
        if "No space left on device" in err:
            raise self._error(f"disk full while {doing}",
                              f"free space on the device ({self.facts.get('free_disk_mb')} MB were free) "
                              "or give --device-dir on a bigger disk")
        if "ensurepip is not available" in err or "No module named venv" in err:
            raise self._error("its Python cannot create virtualenvs",
                              "install the venv module there (Debian/Raspberry Pi OS: apt-get install python3-venv)")
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", err)
        if missing:
            package = missing.group(1)
            hint = works_instead(package, machine, tuple(self.facts["python_version"]), self.options.extra)
            if not self.options.offline:
                hint += "; if the board has no package index, pass --offline-device"
            raise self._error(f"no {package} wheel for {machine} / Python {python}", hint)
        if re.search(r"(Network is unreachable|Temporary failure in name resolution|Max retries exceeded|"
                     r"Could not fetch URL|NewConnectionError)", err):
            raise self._error("it cannot reach its package index",
                              "pass --offline-device: this machine downloads the wheels and pushes them")
        raise self._error(f"{doing} failed: {result.last_error_line()}",
                          "run the same pip command on the device to see the whole output")

    # ---- push ----------------------------------------------------------------------------------

    def _push_file(self, local: Path, remote: str) -> None:
        start = time.monotonic()
        self.transport.put(str(local), remote)
        self.phases.push_s += time.monotonic() - start

    def push_content(self, local: Path, folder: str, digest: str) -> str:
        """Send a file to <dir>/<folder>/<digest>/<name> unless a copy of that size is there."""
        start = time.monotonic()
        remote = f"{self.root}/{folder}/{digest}/{local.name}"
        size = local.stat().st_size
        same_size = 'test "$(wc -c < "$1" 2>/dev/null)" -eq "$2" 2>/dev/null'
        check = self._shell(["sh", "-c", same_size, "sh", remote, str(size)])
        if check.returncode == 0:
            self.phases.already_there.append(local.name)
            self.phases.push_s += time.monotonic() - start
            return remote
        try:
            self.transport.put(str(local), remote)
        except DiskFull as e:
            raise EdgeError(f"{e.message} ({size / 1e6:.1f} MB; {(self.facts or {}).get('free_disk_mb')} MB were "
                            "free when probed)", e.hint) from None
        self.phases.pushed.append(local.name)
        self.phases.push_s += time.monotonic() - start
        return remote

    def push_artifact(self, path: str) -> str:
        meta = artifact_metadata(path)
        digest = meta["graph"]["sha256"] if meta else file_sha256(Path(path))
        return self.push_content(Path(path), "artifacts", digest)

    def push_data(self, path: str) -> str:
        return self.push_content(Path(path), "data", file_sha256(Path(path)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def works_instead(package: str, machine: str, python: tuple, extra: str) -> str:
    """Which extra installs on a board without a wheel of `package` (facts: the wheels on PyPI
    for ai-edge-litert 2.x and tflite-runtime 2.14)."""
    if machine in ("armv7l", "armv6l", "i686", "i386"):
        return (f"neither ai-edge-litert nor tflite-runtime 2.14 publishes {machine} wheels: install a 64-bit "
                "OS (aarch64) on the board")
    if package.startswith("ai-edge-litert") and extra == "device" and python <= (3, 11):
        return "use --device-extra tflite-runtime (tflite-runtime 2.14 has wheels for Python 3.9-3.11)"
    if package.startswith("tflite-runtime") and python > (3, 11):
        return "use --device-extra device (ai-edge-litert): tflite-runtime 2.14 stops at Python 3.11"
    return (f"check that {package} publishes a wheel for {machine} and Python {'.'.join(map(str, python))}, "
            "or use the other --device-extra")


# ---- the workstation's side ------------------------------------------------------------------------

def source_root() -> Path:
    """The checkout this edge-slm runs from (the wheel for the devices is built from it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise EdgeError("cannot build the device wheel: this edge-slm is not running from a source checkout",
                        "run edge-bench --device from a checkout (make install), or pip install it there")
    return root


def build_wheel(out_dir: Path) -> Path:
    """The wheel of this checkout (pure Python: one wheel fits every device)."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir),
                             str(source_root())], capture_output=True, text=True, timeout=600)
    wheels = sorted(out_dir.glob("edge_slm-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeError(f"building the edge-slm wheel failed: {last}", f"run pip wheel {source_root()} to see why")
    return wheels[-1]


def platform_tags(facts: dict) -> list:
    """Every tag pip on the device would accept (pip download does not widen one tag to older ones)."""
    machine = facts["machine"]
    tags = []
    glibc = facts.get("glibc")
    if glibc:
        major, minor = (int(x) for x in glibc.split(".")[:2])
        tags += [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
        tags += [f"manylinux2014_{machine}"] if minor >= 17 else []
    return tags + [f"linux_{machine}"]


def download_device_wheels(wheel: Path, facts: dict, extra: str, out_dir: Path, device: str) -> Path:
    """`pip download` the device's dependencies for its platform and Python, here."""
    major, minor = facts["python_version"]
    argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(out_dir),
            "--python-version", f"{major}.{minor}", "--implementation", "cp", "--abi", f"cp{major}{minor}"]
    for tag in platform_tags(facts):
        argv += ["--platform", tag]
    result = subprocess.run(argv + [f"{wheel}[{extra}]"], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", result.stderr)
        if missing:
            package = missing.group(1)
            raise EdgeError(f"device {device}: no {package} wheel for {facts['machine']} / Python {facts['python']}",
                            works_instead(package, facts["machine"], (major, minor), extra))
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeError(f"device {device}: downloading its wheels here failed: {last}",
                        f"run {' '.join(shlex.quote(a) for a in argv)} to see why")
    return out_dir
