"""Boards behind a real sshd, for the edge-bench --device tests and scripts/bench_devices.py.

One sshd on 127.0.0.1 at a free port, everything it needs (host key, user keys, sshd_config,
authorized_keys, an ssh_config with the device aliases, known_hosts) in a temporary folder; the
system's configuration is not touched and the process is stopped at the end. Each alias logs in
with its own key, and the key's `environment=` options in authorized_keys make it a different
"device": its own HOME (so its own ~/.cache/edge-slm), its own PATH (which python3 it has).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, timeout=60)
    return (path.with_suffix(".pub")).read_text().strip()


def _plain_python() -> str:
    """The Python this test environment's venv was made from: a plain interpreter, no edge-slm."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base if base.exists() else Path(sys._base_executable))


@dataclass
class Boards:
    root: Path
    ssh_config: Path
    port: int
    sshd: subprocess.Popen
    homes: dict            # alias -> HOME of that login
    power_state: Path      # EDGE_POWER_STATE_DIR of the boards and their emulated meters

    def home(self, alias: str) -> Path:
        return self.homes[alias]


# alias -> what the login's PATH offers as python3
DEVICES = ("board-a", "board-b")


class SshdMissing(RuntimeError):
    pass


@contextlib.contextmanager
def running_boards(root: Path):
    """Start sshd with the board logins in `root` (an empty folder); stop it on exit."""
    if SSHD is None or shutil.which("ssh") is None:
        raise SshdMissing("OpenSSH server/client not installed (.ci/run installs openssh-server)")
    port = free_port()
    host_key_pub = _keygen(root / "host_key")
    python = _plain_python()
    # The boards install from this machine's package index and pip cache, as configured here.
    env_common = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    power_state = root / "power-state"
    env_common["EDGE_POWER_STATE_DIR"] = str(power_state)  # so the boards see the emulators' labels
    env_common["PIP_CACHE_DIR"] = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                                                 text=True, timeout=60).stdout.strip() or str(root / "pip-cache")
    lines, aliases, homes = [], [], {}

    def login(alias: str, *, python_bin=None, path=None, authorized=True, extra_env=None, known_hosts="known_hosts",
              port_=None, hostname="127.0.0.1"):
        home = root / "homes" / alias
        bindir = home / "bin"
        bindir.mkdir(parents=True)
        if python_bin:
            (bindir / "python3").symlink_to(python_bin)
        homes[alias] = home
        key = root / f"key-{alias}"
        pub = _keygen(key)
        env = dict(env_common, HOME=str(home), PATH=path or f"{bindir}:/usr/local/bin:/usr/bin:/bin",
                   **(extra_env or {}))
        if authorized:
            options = ",".join(f'environment="{k}={v}"' for k, v in env.items())
            lines.append(f"{options} {pub}")
        aliases.append(f"Host {alias}\n  HostName {hostname}\n  Port {port_ or port}\n  User {_user()}\n"
                       f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {root / known_hosts}\n"
                       f"  ConnectTimeout 10\n")
        return home

    for alias in DEVICES:
        login(alias, python_bin=python)
    login("board-cold", python_bin=python)  # interrupted while it is being provisioned
    # A board without a package index: pip there finds nothing; --offline-device brings the wheels.
    (root / "no-wheels").mkdir()
    login("board-offline", python_bin=python,
          extra_env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(root / "no-wheels")})
    # Faults.
    login("refused", python_bin=python, port_=free_port())
    login("nowhere", python_bin=python, hostname="no-such-board.invalid")
    login("stranger", python_bin=python, authorized=False)
    login("moved", python_bin=python, known_hosts="known_hosts_other")
    login("fresh", python_bin=python, known_hosts="known_hosts_empty")
    farm = root / "no-python-bin"
    farm.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if not tool.name.startswith("python"):
            (farm / tool.name).symlink_to(tool)
    login("no-python", path=str(farm))
    old = login("old-python")
    # A Python that reports itself as 3.7 (no such interpreter is installable here): it runs the
    # probe's code with the version it reports patched, which is all the probe looks at.
    (old / "pretend37.py").write_text(
        "import platform, sys\n"
        "sys.version_info = (3, 7, 3, 'final', 0)\n"
        "platform.python_version = lambda: '3.7.3'\n"
        "code, sys.argv = sys.argv[2], ['-c'] + sys.argv[3:]\n"
        "exec(compile(code, '<string>', 'exec'))\n")
    (old / "bin" / "python3").write_text(f"#!/bin/sh\nexec {python} {old / 'pretend37.py'} \"$@\"\n")
    (old / "bin" / "python3").chmod(0o755)

    (root / "authorized_keys").write_text("\n".join(lines) + "\n")
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key_pub}\n")
    other = _keygen(root / "other_host_key")
    (root / "known_hosts_other").write_text(f"[127.0.0.1]:{port} {other}\n")
    (root / "known_hosts_empty").write_text("")
    (root / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PubkeyAuthentication yes\nPermitUserEnvironment yes\nPermitRootLogin prohibit-password\n"
        "MaxSessions 50\nMaxStartups 50\nLogLevel ERROR\n")
    ssh_config = root / "ssh_config"
    ssh_config.write_text("\n".join(aliases))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory (Debian creates it at boot)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "w"))
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
    try:
        yield Boards(root, ssh_config, port, process, homes, power_state)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
