"""Which serial ports are served by a running `edge-power emulate`, so figures get labelled.

Each emulator writes one small JSON file per pseudo-terminal it serves, named after the pty path,
holding its pid and the pid's start time. A port counts as emulated only when all of this holds:
the port resolves (through symlinks) to a registered pty, the pid is alive with the same start
time (pids are reused), and, where /proc lets us look, that process holds the pty open. The
emulator only ever registers ptys it created itself, so a real meter (/dev/ttyUSB0,
/dev/rfcomm0, a socket:// URL) can never be labelled emulated. Stdlib only.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

STATE_DIR_ENV = "EDGE_POWER_STATE_DIR"


def state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "edge-slm"
    return Path(tempfile.gettempdir()) / f"edge-slm-{os.getuid()}"


def _registry_dir(create: bool = False) -> Optional[Path]:
    directory = state_dir() / "emulators"
    if create:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        owner = directory.stat().st_uid
    except OSError:  # absent, or another user's state we may not read: no emulators of ours
        return None
    # Trust only our own state: another user could plant entries in a shared /tmp.
    return directory if owner == os.getuid() else None


def _entry_name(pty_path: str) -> str:
    return pty_path.strip("/").replace("/", "_") + ".json"


def process_start_time(pid: int) -> Optional[str]:
    """The pid's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    return stat[stat.rindex(")") + 2:].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holds_open(pid: int, path: str) -> Optional[bool]:
    """Whether process `pid` has `path` open; None when /proc does not let us see."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") == path:
                return True
        except OSError:
            continue
    return False


def is_pseudo_terminal(path: str) -> bool:
    """Unix98 pty slaves: character devices with major 136..143 on Linux, /dev/ttys* on macOS."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        return stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143
    return stat.S_ISCHR(st.st_mode) and path.startswith("/dev/ttys")


def register_emulated_pty(pty_path: str, *, protocol: str, link: Optional[str] = None,
                          instance: str = "") -> Path:
    """`instance` tells apart emulators of one process, and stays the same across reconnects."""
    if not is_pseudo_terminal(pty_path):  # a real serial port must never be registered
        raise ValueError(f"not a pseudo-terminal: {pty_path}")
    entry = {"pty": pty_path, "link": link, "protocol": protocol, "pid": os.getpid(),
             "pid_start_time": process_start_time(os.getpid()), "instance": instance}
    path = _registry_dir(create=True) / _entry_name(pty_path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)
    return path


def unregister_emulated_pty(pty_path: str) -> None:
    directory = _registry_dir()
    if directory is None:
        return
    path = directory / _entry_name(pty_path)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _valid_entry(entry: dict) -> bool:
    pid = entry.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    started = process_start_time(pid)
    if started is not None and started != entry.get("pid_start_time"):
        return False  # the pid now belongs to another process
    return _holds_open(pid, entry.get("pty", "")) is not False


def emulated_port_info(port: str) -> Optional[dict]:
    """The registry entry of the emulator serving `port`, or None for anything else."""
    if "://" in port:
        return None
    directory = _registry_dir()
    if directory is None:
        return None
    real = os.path.realpath(port)
    try:
        entry = json.loads((directory / _entry_name(real)).read_text())
    except (OSError, ValueError):
        return None
    if entry.get("pty") != real or not _valid_entry(entry):
        return None
    return entry


def running_emulators() -> List[dict]:
    directory = _registry_dir()
    if directory is None:
        return []
    found = []
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _valid_entry(entry):
            found.append(entry)
    return found
