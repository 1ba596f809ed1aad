"""Where a study's commands run: this machine (`LocalTransport`) or a board over SSH (`SshTransport`).

One interface, two implementations (the pattern of pyserial's serial_for_url): run(argv, timeout),
put(local, remote), get(remote, local), close(). The SSH side is the system OpenSSH client, so
a user's keys, agent, ~/.ssh/config aliases and ProxyJump work as they do for `ssh HOST`:

- one connection per device, opened once (`ControlMaster`), every command a session on it
  (~0.17 s here instead of ~0.4 s for a new handshake);
- `BatchMode=yes`: nothing ever waits on a password or host-key prompt; host keys are checked,
  and a new one is accepted only with accept_new_host_key (`StrictHostKeyChecking=accept-new`);
- every remote command line is built from shlex.quote'd arguments, never from a string typed by
  the user;
- a guarded command (the device's Python is known) runs in its own process group under a small
  watchdog that reads the session's stdin: when the connection drops or is closed (Ctrl-C, a
  timeout), stdin reaches EOF and the watchdog kills the group, so nothing is left on the board.

Connection-level failures are `DeviceUnreachable` (an EdgeError naming the device, with a hint),
classified from OpenSSH's own messages.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edge_slm.common.errors import EdgeError

CONTROL_PERSIST_S = 120
MASTER_LOGIN_TIMEOUT_FACTOR = 3  # the first login may take this many ConnectTimeouts, then it is given up
# Exit status of a guarded command stopped by its watchdog (connection closed): 128 + SIGKILL.
STOPPED_EXIT = 137
# Runs on the device under any Python 3: start argv in a new session (its own process group), and
# kill that group when our stdin reaches EOF (the SSH channel closed) or on SIGHUP/SIGTERM.
GUARD = """\
import os, signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, start_new_session=True)
def stop(*_):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    os._exit(137)
for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
    signal.signal(s, stop)
def watch():
    while os.read(0, 4096):
        pass
    stop()
threading.Thread(target=watch, daemon=True).start()
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


KEEP_OPEN = object()  # stdin for a guarded command: a pipe held open until it ends


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.returncode}"


class DeviceUnreachable(EdgeError):
    """The device cannot be reached (or stopped answering): every later run on it fails."""


class DiskFull(EdgeError):
    """A write on the device ran out of space."""


class Transport:
    """Run commands and move files on one machine. `name` is what errors and results call it."""

    name = "local"
    python: Optional[str] = None  # the machine's Python, which guarded commands run under

    def __init__(self):
        self._live: set = set()
        self._live_lock = threading.Lock()
        self._aborted = False

    def _communicate(self, argv: list, timeout: Optional[float], stdin) -> Completed:
        """Run argv in its own process group, collecting its output; killed on timeout, interrupt or abort()."""
        # A guard watches its stdin for the end of the connection: hold a pipe open that we never
        # write (communicate() would close a PIPE at once) until the command is over.
        keep_open = None
        if stdin is KEEP_OPEN:
            stdin, keep_open = os.pipe()
        try:
            process = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, errors="replace", start_new_session=True)
        finally:
            if keep_open is not None:
                os.close(stdin)
        with self._live_lock:
            self._live.add(process)
            if self._aborted:  # abort() came while this was starting: it must not outlive the study
                _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return Completed(process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = process.communicate()
            return Completed(process.returncode, stdout or "", stderr or "", timed_out=True)
        except BaseException:  # Ctrl-C, SIGTERM: never leave a benchmark running behind us
            _kill_group(process)
            process.wait()
            raise
        finally:
            with self._live_lock:
                self._live.discard(process)
            if keep_open is not None:
                os.close(keep_open)

    def clock_offset(self, rounds: int = 9) -> Tuple[float, float]:
        """(offset, uncertainty) in seconds: this machine's time.monotonic() = its own - offset."""
        raise NotImplementedError

    def abort(self) -> None:
        """Kill every command still running, and every one started from now on (from another
        thread: Ctrl-C while the workers wait on their devices)."""
        with self._live_lock:
            self._aborted = True
            for process in list(self._live):
                _kill_group(process)

    def run(self, argv: list, timeout: Optional[float] = None, *, guard: bool = False,
            stdin_path: Optional[str] = None) -> Completed:
        raise NotImplementedError

    def put(self, local: str, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop everything this transport started (safe to call twice)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass


class LocalTransport(Transport):
    """This machine. Each command runs in its own process group, killed whole on timeout or Ctrl-C."""

    name = "local"

    def run(self, argv, timeout=None, *, guard=False, stdin_path=None):
        if stdin_path is None:
            return self._communicate(list(argv), timeout, subprocess.DEVNULL)
        with open(stdin_path, "rb") as stdin:
            return self._communicate(list(argv), timeout, stdin)

    def clock_offset(self, rounds=9):
        return 0.0, 0.0  # one clock

    def put(self, local, remote):
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def get(self, remote, local):
        shutil.copyfile(remote, local)


# OpenSSH's own words -> (what happened, hint). Checked in order against ssh's stderr.
_SSH_FAILURES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "its host key has changed since it was last seen",
     "if the board was reinstalled, verify the new key and remove the old one with "
     "`ssh-keygen -R HOST`; otherwise someone may be intercepting the connection"),
    ("Host key verification failed", "its host key is not known",
     "verify the key and run `ssh {dest}` once, or pass --accept-new-host-key"),
    ("No ED25519 host key is known", "its host key is not known",
     "verify the key and run `ssh {dest}` once, or pass --accept-new-host-key"),
    ("Could not resolve hostname", "unknown host (the name does not resolve)",
     "check the name, or its Host alias in your ssh_config (~/.ssh/config, or the --ssh-config file)"),
    ("Name or service not known", "unknown host (the name does not resolve)",
     "check the name, or its Host alias in your ssh_config (~/.ssh/config, or the --ssh-config file)"),
    ("Connection refused", "connection refused",
     "is sshd running on the device, and is the port right (Port in ssh_config, or HOST's sshd_config)?"),
    ("Permission denied", "authentication refused",
     "install your public key on the device (ssh-copy-id {dest}) or load it into ssh-agent; "
     "edge-bench never asks for a password (BatchMode)"),
    ("Too many authentication failures", "authentication refused",
     "set IdentitiesOnly yes and the right IdentityFile for this host in ssh_config"),
    ("Connection timed out", "the connection timed out", "is the device on and on this network?"),
    ("No route to host", "no route to host", "is the device on and on this network?"),
    ("Network is unreachable", "the network is unreachable", "is the device on and on this network?"),
)
_DROPPED = ("Connection closed", "Connection reset", "Broken pipe", "client_loop", "Timeout, server",
            "mux_client", "Control socket connect", "port 22: Connection", "closed by remote host")


def describe_ssh_failure(destination: str, stderr: str, *, connected: bool) -> DeviceUnreachable:
    """One error naming the device, from what ssh printed when it exited 255."""
    for marker, what, hint in _SSH_FAILURES:
        if marker in stderr:
            return DeviceUnreachable(f"device {destination}: {what}", hint.format(dest=destination))
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "Warning: Permanently added" not in line]
    last = lines[-1] if lines else "ssh exited with code 255 and no message"
    if connected or any(marker in stderr for marker in _DROPPED):
        return DeviceUnreachable(f"device {destination}: the connection dropped ({last})",
                                 "check the device's power and network, then rerun with --resume")
    return DeviceUnreachable(f"device {destination}: ssh failed: {last}",
                             f"try `ssh {destination} true` by hand to see why")


def _valid_destination(destination: str) -> bool:
    """What ssh takes as a destination; anything else would print ssh's usage text, not an error."""
    if not destination or destination.startswith("-") or any(c.isspace() for c in destination):
        return False
    rest = destination
    port = None
    if rest.startswith("ssh://"):
        rest = rest[len("ssh://"):]
        host_part = rest.rpartition("@")[2]
        if not host_part.startswith("[") and ":" in host_part:
            rest, _, port = rest.rpartition(":")
    user, at, host = rest.rpartition("@")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(host) and (not at or bool(user))


class SshTransport(Transport):
    """One board over the system `ssh`, through one multiplexed connection.

    destination: [USER@]HOST or an ssh_config alias. ssh_config: a file for `ssh -F` instead of
    the user's ~/.ssh/config. python: the device's Python, set once known; guarded commands run
    under it (see GUARD)."""

    def __init__(self, destination: str, *, ssh_config: Optional[str] = None, accept_new_host_key: bool = False,
                 connect_timeout_s: float = 15.0, ssh: str = "ssh"):
        if not _valid_destination(destination):
            raise EdgeError(f"bad --device {destination!r}",
                            "give [USER@]HOST, ssh://[USER@]HOST[:PORT] or a Host alias of your ssh_config")
        if shutil.which(ssh) is None:
            raise EdgeError("the OpenSSH client (ssh) is not installed here",
                            "install it (Debian: apt-get install openssh-client)")
        super().__init__()
        self.name = destination
        self.destination = destination
        self._control_dir = tempfile.mkdtemp(prefix="edge-ssh-")  # short: socket paths are limited to ~104 bytes
        self._control_path = os.path.join(self._control_dir, "%C")
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s:g}",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                   "-o", f"ControlPath={self._control_path}"]
        if accept_new_host_key:
            options += ["-o", "StrictHostKeyChecking=accept-new"]
        self._base = [ssh] + (["-F", str(ssh_config)] if ssh_config else []) + options
        self._master_started = False
        # ConnectTimeout bounds the TCP connect and the handshake; this bounds the whole login too.
        self._master_timeout_s = MASTER_LOGIN_TIMEOUT_FACTOR * connect_timeout_s
        self._lock = threading.Lock()

    # ---- the connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the shared connection (authenticates once); raises DeviceUnreachable."""
        with self._lock:
            if self._master_started:
                return
            if self._aborted:
                raise EdgeError(f"device {self.destination}: interrupted", "rerun with --resume")
            # The master forks into the background holding its stderr: give it a file, not a pipe
            # we would wait on until it exits. It outlives its last session by CONTROL_PERSIST_S only,
            # so even a SIGKILLed edge-bench leaves no connection open for long.
            with tempfile.TemporaryFile(mode="w+", dir=self._control_dir) as log:
                master = ["-o", "ControlMaster=yes", "-o", f"ControlPersist={CONTROL_PERSIST_S}", "-f", "-N"]
                try:
                    process = subprocess.run(self._base + master + ["--", self.destination],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                             timeout=self._master_timeout_s)
                except subprocess.TimeoutExpired:  # e.g. a ProxyCommand that never answers
                    raise DeviceUnreachable(f"device {self.destination}: no SSH connection after "
                                            f"{self._master_timeout_s:g} s",
                                            f"try `ssh {self.destination} true` by hand to see why") from None
                log.seek(0)
                message = log.read()
            if process.returncode != 0:
                raise describe_ssh_failure(self.destination, message, connected=False)
            self._master_started = True

    def _command(self, remote: str) -> list:
        # ControlMaster=no: a session on the shared connection; if that is gone, a plain connection.
        return self._base + ["-o", "ControlMaster=no", "--", self.destination, remote]

    def remote_line(self, argv: list, guard: bool) -> str:
        """The command line sshd hands to the login shell: only quoted arguments."""
        if guard:
            if self.python is None:
                raise RuntimeError("a guarded command needs the device's Python (probe first)")
            argv = [self.python, "-c", GUARD] + list(argv)
        return " ".join(shlex.quote(str(arg)) for arg in argv)

    def run(self, argv, timeout=None, *, guard=False, stdin_path=None):
        self.connect()
        command = self._command(self.remote_line(argv, guard))
        if stdin_path is not None:
            with open(stdin_path, "rb") as stdin:
                result = self._communicate(command, timeout, stdin)
        else:
            result = self._communicate(command, timeout, KEEP_OPEN if guard else subprocess.DEVNULL)
        if result.returncode == 255 and not result.timed_out:
            raise describe_ssh_failure(self.destination, result.stderr, connected=True)
        return result

    def clock_offset(self, rounds=9):
        """Timestamps exchanged over one session: the round trip with the shortest time bounds the
        offset best (Cristian's method); its uncertainty is half that round trip."""
        self.connect()
        echo = "import sys, time\nfor _ in sys.stdin:\n    print(repr(time.monotonic()), flush=True)\n"
        process = subprocess.Popen(self._command(self.remote_line([self.python, "-c", echo], guard=False)),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        best = None
        try:
            for _ in range(rounds):
                sent = time.monotonic()
                process.stdin.write("\n")
                process.stdin.flush()
                line = process.stdout.readline()
                received = time.monotonic()
                if not line:
                    raise describe_ssh_failure(self.destination, process.stderr.read(), connected=True)
                half = (received - sent) / 2
                if best is None or half < best[1]:
                    best = (float(line) - (sent + received) / 2, half)
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.wait()
        return best

    def put(self, local, remote):
        """Copy a file atomically (to REMOTE.part, renamed once complete), creating the folder."""
        # A closed connection ends cat's input early like a normal end of file: check the size.
        script = ('mkdir -p "$(dirname "$1")" && cat > "$1.part" && test "$(wc -c < "$1.part")" -eq "$2" '
                  '&& mv -f "$1.part" "$1"')
        size = os.path.getsize(local)
        result = self.run(["sh", "-c", script, "sh", str(remote), str(size)], stdin_path=str(local))
        if result.returncode != 0:
            self.run(["rm", "-f", f"{remote}.part"])
            raise remote_write_error(self.destination, remote, result)

    def get(self, remote, local):
        result = self.run(["cat", str(remote)])
        if result.returncode != 0:
            raise EdgeError(f"device {self.destination}: cannot read {remote}: {result.last_error_line()}",
                            "check the path on the device")
        Path(local).write_text(result.stdout, encoding="utf-8")

    def close(self):
        with self._lock:
            if self._master_started:
                subprocess.run(self._base + ["-O", "exit", "--", self.destination], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15)
                self._master_started = False
            shutil.rmtree(self._control_dir, ignore_errors=True)


def remote_write_error(device: str, remote: str, result: Completed) -> EdgeError:
    if "No space left on device" in result.stderr:
        return DiskFull(f"device {device}: disk full while writing {remote}",
                         f"free space on {device} (or give --device-dir on a bigger disk), then rerun with --resume")
    return EdgeError(f"device {device}: cannot write {remote}: {result.last_error_line()}",
                     "check the permissions of --device-dir on the device")
