"""edge-bench --device: studies on boards over SSH, against a real sshd on 127.0.0.1 (conftest.boards).

The two boards are logins on this machine (x86), each with its own HOME, so their own
~/.cache/edge-slm: provisioning installs the device extra into a fresh virtualenv there from this
machine's package index and pip cache. The emulated aarch64 board of issue #12 is not on main yet,
so board-b is a second x86 login. Every fault is a one-line error naming the device, and leaves
no process on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_slm.bench.devices import build_wheel, download_device_wheels, works_instead
from edge_slm.bench.store import read_rows
from edge_slm.bench.transport import DeviceUnreachable, SshTransport
from edge_slm.common.errors import EdgeError

from ..conftest import error_line, wait_for

FAST = ["--runs", "5", "--warmup", "1", "--threads", "1"]


def edge_bench(*args, timeout=900, env=None):
    """edge-bench in its own process (it starts threads and ssh clients): (code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "edge_slm.bench.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    return done.returncode, done.stdout, done.stderr


def processes_of(home: Path, needle: str = "edge_slm") -> list:
    """Processes a board's login started (its HOME in their environment) running `needle`."""
    found = []
    marker = f"HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ.split(b"\0") and needle in cmdline:
            found.append(int(entry.name))
    return found


def session_sshd(pid: int) -> int:
    """The sshd process serving the connection a process runs under."""
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        name, parent = stat[stat.index("(") + 1:stat.rindex(")")], int(stat[stat.rindex(")") + 2:].split()[1])
        if name == "sshd":
            return pid
        pid = parent
    raise AssertionError("no sshd above the process")


@pytest.fixture(scope="module")
def meters(boards):
    """One emulated UM25C per board (a meter sits in each board's supply cable)."""
    processes, ports = [], []
    env = dict(os.environ, EDGE_POWER_STATE_DIR=str(boards.power_state))
    for seed in (1, 2):
        process = subprocess.Popen([sys.executable, "-m", "edge_slm.power.cli", "emulate", "--protocol", "um25c",
                                    "--trace", "cpu", "--seed", str(seed)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        processes.append(process)
        ports.append(process.stdout.readline().strip().removeprefix("port: "))
    yield ports
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_every_remote_argument_is_quoted(boards):
    nasty = ["a b", "$(touch /tmp/pwned)", "'; rm -rf x", "*", "`id`", "\\n", ""]
    with SshTransport("board-a", ssh_config=str(boards.ssh_config)) as transport:
        result = transport.run(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *nasty])
    assert result.returncode == 0 and json.loads(result.stdout) == nasty


def test_a_login_that_never_answers_is_given_up(tmp_path):
    # An ssh whose ProxyCommand (or anything before its ConnectTimeout applies) never answers.
    silent_ssh = tmp_path / "ssh"
    silent_ssh.write_text("#!/bin/sh\nexec sleep 617\n")
    silent_ssh.chmod(0o755)
    transport = SshTransport("board-z", ssh=str(silent_ssh), connect_timeout_s=0.2)
    errors = []

    def connect():
        try:
            transport.connect()
        except DeviceUnreachable as e:
            errors.append(e.message)

    attempt = threading.Thread(target=connect, daemon=True)  # daemon: a regression must not hang pytest
    attempt.start()
    attempt.join(timeout=60)
    transport.close()
    assert not attempt.is_alive(), "connect() still waits for a login that never answers"
    assert errors and "board-z: no SSH connection after 0.6 s" in errors[0]
    assert [b"sleep", b"617"] not in _running_argvs(), "the silent login was left running"


def test_two_boards_one_study_then_nothing_is_provisioned_or_pushed_again(boards, meters, tiny_dynamic, tiny_fp32,
                                                                           tmp_path):
    common = [tiny_dynamic, tiny_fp32, "--device", "board-a", "--device", "board-b", "--ssh-config",
              boards.ssh_config, "--meter", "um25c", "--port", meters[0], "--device-port", f"board-b={meters[1]}",
              "--min-seconds", "1", "--baseline-seconds", "1", "--warmup", "1", "--threads", "1"]
    code, out, err = edge_bench(*common, "-o", tmp_path / "first")
    assert code == 0, err
    rows = read_rows(tmp_path / "first" / "results.jsonl")
    assert sorted((r["device"], Path(r["artifact"]).name) for r in rows) == sorted(
        (d, a.name) for d in ("board-a", "board-b") for a in (tiny_dynamic, tiny_fp32))
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["host"]["machine"] == "x86_64" and row["host"]["python"]
        assert row["result"]["energy"]["emulated"] is True
        # The run happened on the board, from the copy pushed there (content-addressed by graph hash).
        assert "/.cache/edge-slm/artifacts/" in row["result"]["model"]["path"]
        assert row["result"]["model"]["path"].startswith(str(boards.home(row["device"])))
    devices = json.loads((tmp_path / "first" / "devices.json").read_text())["devices"]
    for device in devices:
        assert device["error"] is None and device["phases"]["provisioned"] is True
        assert sorted(device["phases"]["pushed"]) == sorted([tiny_dynamic.name, tiny_fp32.name])
    report = (tmp_path / "first" / "report.md").read_text()
    assert "## Results on board-a" in report and "## Results on board-b" in report
    assert "## Across devices" in report and "(emulated)" in report
    assert "No TF baseline on board-a" in report

    code, out, err = edge_bench(*common, "-o", tmp_path / "second")
    assert code == 0, err
    for device in json.loads((tmp_path / "second" / "devices.json").read_text())["devices"]:
        assert device["phases"]["provisioned"] is False and device["phases"]["pushed"] == []
        assert sorted(device["phases"]["already_there"]) == sorted([tiny_dynamic.name, tiny_fp32.name])
    assert not processes_of(boards.home("board-a")) and not processes_of(boards.home("board-b"))


def test_data_on_a_board_is_timed_at_its_own_lengths_and_padded_as_here(boards, tiny_dynamic, tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na gorgeous film\t1\na dull film\t0\nfine\t1\n")
    code, _, err = edge_bench(tiny_dynamic, "--device", "board-a", "--ssh-config", boards.ssh_config, "--data", data,
                              *FAST, "-o", tmp_path / "study", "-q")
    assert code == 0, err
    rows = read_rows(tmp_path / "study" / "results.jsonl")
    assert [(r["device"], r["lengths"], r["status"]) for r in rows] == [("board-a", "own", "ok"),
                                                                        ("board-a", "max", "ok")]
    own, padded = (r["result"]["benchmark"]["sequence"] for r in rows)
    assert own["lengths"] == "own length" and own["run_length"]["max"] == 5  # [CLS] a gorgeous film [SEP]
    assert padded["lengths"] == "padded to 16" and padded["run_length"]["min"] == 16
    report = (tmp_path / "study" / "report.md").read_text()
    assert "## At the data's own lengths and at the longest on board-a" in report


def test_a_meter_read_here_while_the_board_runs(boards, meters, tiny_dynamic, tmp_path):
    code, _, err = edge_bench(tiny_dynamic, "--device", "board-a", "--ssh-config", boards.ssh_config,
                              "--meter", "um25c", "--port", meters[0], "--meter-on", "workstation",
                              "--min-seconds", "2", "--baseline-seconds", "1", "--warmup", "1", "--threads", "1",
                              "-o", tmp_path / "study", "-q", env={"EDGE_POWER_STATE_DIR": str(boards.power_state)})
    assert code == 0, err
    (row,) = read_rows(tmp_path / "study" / "results.jsonl")
    energy = row["result"]["energy"]
    assert energy["meter_on"] == "workstation" and energy["emulated"] is True
    assert energy["energy_per_inference_mj"] is not None and energy["uncertainty_mj"] > 0
    mapping = energy["clock_mapping"]
    assert 0 < mapping["uncertainty_s"] < 1.0  # half a round trip over the connection, plus drift
    window = row["result"]["benchmark"]["window_monotonic_s"]
    assert window[1] - window[0] >= 2.0
    assert "(emulated)" in (tmp_path / "study" / "report.md").read_text()


def test_a_board_dropping_mid_study_fails_its_runs_the_other_finishes_and_resume_fills_the_gaps(
        boards, tiny_dynamic, tiny_fp32, tmp_path):
    out = tmp_path / "study"
    args = [tiny_dynamic, tiny_fp32, "--device", "board-a", "--device", "board-b", "--ssh-config",
            boards.ssh_config, "--runs", "3000", "--warmup", "1", "--threads", "1", "-o", out, "-q"]
    study = subprocess.Popen([sys.executable, "-m", "edge_slm.bench.cli", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_on_b = wait_for(lambda: processes_of(boards.home("board-b"), "edge_slm.runtime.cli"),
                            what="a run on board-b")
        os.kill(session_sshd(run_on_b[0]), signal.SIGKILL)  # the board's network goes away
        _, err = study.communicate(timeout=600)
    finally:
        study.kill()
    line = error_line(err, "edge-bench")
    assert "device board-b: the connection dropped" in line and "--resume" in line
    rows = read_rows(out / "results.jsonl")
    by_device = {d: [r for r in rows if r["device"] == d] for d in ("board-a", "board-b")}
    assert [r["status"] for r in by_device["board-a"]] == ["ok", "ok"]
    assert [r["status"] for r in by_device["board-b"]] == ["failed", "failed"]
    assert all("device board-b: the connection dropped" in r["error"] for r in by_device["board-b"])
    wait_for(lambda: not processes_of(boards.home("board-b")), 30, "board-b's run to be killed")

    code, _, err = edge_bench(*args[:-1], "--resume", "--runs", "20")
    assert code == 2 and "measured with other settings" in err  # resume must keep the settings
    code, _, err = edge_bench(*args, "--resume")
    assert code == 0, err
    latest = {r["key"]: r for r in read_rows(out / "results.jsonl")}
    assert len(latest) == 4 and all(r["status"] == "ok" for r in latest.values())


@pytest.mark.parametrize("board, busy_with", [("board-a", "edge_slm.runtime.cli"), ("board-cold", "pip")])
def test_ctrl_c_stops_every_remote_process(boards, tiny_dynamic, tmp_path, board, busy_with):
    study = subprocess.Popen([sys.executable, "-m", "edge_slm.bench.cli", str(tiny_dynamic), "--device", board,
                              "--ssh-config", str(boards.ssh_config), "--runs", "100000", "--threads", "1",
                              "-o", str(tmp_path / "study"), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: processes_of(boards.home(board), busy_with), what=f"{busy_with} on {board}")
        study.send_signal(signal.SIGINT)
        _, err = study.communicate(timeout=90)
    finally:
        study.kill()
    assert study.returncode == 130
    assert "interrupted" in error_line(err, "edge-bench")
    wait_for(lambda: not processes_of(boards.home(board)), 30, f"nothing left running on {board}")
    assert not any("ControlMaster=yes" in " ".join(map(str, p)) for p in _ssh_clients_of(boards))


def _ssh_clients_of(boards) -> list:
    """The command lines of ssh clients still using this test's ssh_config (a leaked connection)."""
    return [[a.decode(errors="replace") for a in argv] for argv in _running_argvs()
            if argv and argv[0].endswith(b"ssh") and str(boards.ssh_config).encode() in argv]


def _running_argvs() -> list:
    """Every process's argv (bytes), read from /proc; processes that exit meanwhile are skipped."""
    argvs = []
    for entry in Path("/proc").iterdir():
        try:
            argvs.append((entry / "cmdline").read_bytes().split(b"\0")[:-1])
        except OSError:
            continue
    return argvs


@pytest.mark.parametrize("alias, expected, hint", [
    ("nowhere", "device nowhere: unknown host", "ssh_config"),
    ("refused", "device refused: connection refused", "sshd running"),
    ("stranger", "device stranger: authentication refused", "ssh-copy-id"),
    ("moved", "device moved: its host key has changed", "ssh-keygen -R"),
    ("fresh", "device fresh: its host key is not known", "--accept-new-host-key"),
    ("no-python", "device no-python: no python3 on the device", "--device-python"),
    ("old-python", "device old-python: Python 3.7.3 is too old", "--device-python"),
])
def test_each_fault_is_one_line_naming_the_device(boards, tiny_dynamic, tmp_path, alias, expected, hint):
    code, _, err = edge_bench(tiny_dynamic, "--device", alias, "--ssh-config", boards.ssh_config, *FAST,
                              "-o", tmp_path / "study", "-q", timeout=120)
    line = error_line(err, "edge-bench")
    assert code == 2 and expected in line and hint in line, line
    assert not processes_of(boards.home(alias), "")  # nothing left running as that login


def test_a_new_host_key_is_accepted_only_when_asked(boards, tiny_dynamic, tmp_path):
    known = boards.root / "known_hosts_empty"
    before = known.read_text()
    with SshTransport("fresh", ssh_config=str(boards.ssh_config), accept_new_host_key=True) as transport:
        assert transport.run(["true"]).returncode == 0
    assert known.read_text() != before  # remembered: from now on it is checked
    known.write_text(before)


def test_disk_full_while_pushing(boards, tiny_dynamic, tiny_fp32, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs as the board's artifact folder")
    artifacts = boards.home("board-a") / ".cache" / "edge-slm" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(artifacts)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        code, _, err = edge_bench(tiny_dynamic, tiny_fp32, "--device", "board-a", "--ssh-config", boards.ssh_config,
                                  *FAST, "-o", tmp_path / "study", "-q")
    finally:
        subprocess.run(["umount", "-l", str(artifacts)], check=True, timeout=30)
    line = error_line(err, "edge-bench")
    assert code == 2 and "device board-a: disk full while writing" in line and "free space" in line
    assert not list(artifacts.rglob("*.part"))
    rows = read_rows(tmp_path / "study" / "results.jsonl")
    assert {r["status"] for r in rows} == {"failed"}  # retried by --resume once there is room


def test_a_board_without_a_package_index_is_provisioned_from_here(boards, tiny_dynamic, tmp_path):
    args = [tiny_dynamic, "--device", "board-offline", "--ssh-config", boards.ssh_config, *FAST, "-q"]
    code, _, err = edge_bench(*args, "-o", tmp_path / "online")
    line = error_line(err, "edge-bench")
    assert code == 2 and "device board-offline: no " in line and "--offline-device" in line
    code, _, err = edge_bench(*args, "--offline-device", "-o", tmp_path / "offline")
    assert code == 0, err
    (row,) = read_rows(tmp_path / "offline" / "results.jsonl")
    assert row["status"] == "ok" and row["device"] == "board-offline"


def test_no_wheel_for_the_boards_platform_names_what_works(tmp_path):
    armv7 = {"machine": "armv7l", "glibc": "2.36", "python_version": [3, 11], "python": "3.11.2"}
    assert "64-bit OS" in works_instead("ai-edge-litert", "armv7l", (3, 11), "device")
    assert "--device-extra tflite-runtime" in works_instead("ai-edge-litert", "aarch64", (3, 9), "device")
    assert "--device-extra device" in works_instead("tflite-runtime", "aarch64", (3, 12), "tflite-runtime")
    wheel = build_wheel(tmp_path / "wheel")
    with pytest.raises(EdgeError) as refused:
        download_device_wheels(wheel, armv7, "device", tmp_path / "wheels", device="pi-zero")
    message = refused.value.one_line()
    assert message.startswith("device pi-zero: no ") and "wheel for armv7l / Python 3.11.2" in message
    assert "64-bit OS" in message
