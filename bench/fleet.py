"""The study on boards: one worker thread per device, in parallel, each over its own SSH connection.

Per device: connect and probe (once), provision (once per edge-slm version), push the artifacts and
the data (content-addressed: once), then every planned run as one `edge-run --bench --json`
process on the board, each row appended to results.jsonl the moment it finishes. A device that
fails once probed (provisioning, a push, the connection dropping mid-study) gets failed rows for
its remaining runs, so --resume retries them; one that cannot be reached or probed has no rows
(its plan depends on its cores) and its error is reported. The other devices go on. Ctrl-C stops
every remote process: the local ssh clients are killed, their channels close, and each run's
watchdog on the board kills its process group (transport.GUARD).
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edge_slm.common.documents import utc_now
from edge_slm.common.errors import EdgeError

from .devices import Device, DeviceOptions, build_wheel, download_device_wheels
from .execute import execute, new_row
from .plan import StudySettings
from .store import append_row
from .transport import SshTransport


@dataclass
class DeviceSpec:
    destination: str                 # [USER@]HOST or an ssh_config alias
    port: Optional[str] = None       # the meter's port on this device


@dataclass
class FleetOptions:
    ssh_config: Optional[str] = None
    accept_new_host_key: bool = False
    device: DeviceOptions = field(default_factory=DeviceOptions)


@dataclass
class DeviceReport:
    name: str
    facts: Optional[dict] = None
    phases: Optional[dict] = None
    error: Optional[str] = None       # the one line that stopped this device, or None
    error_hint: str = ""
    rows: list = field(default_factory=list)


class _Wheels:
    """Builds this checkout's wheel (and downloads device wheels) once per study, for all workers."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self._lock = threading.Lock()
        self._wheel: Optional[Path] = None
        self._downloads: dict = {}

    def wheel(self) -> Path:
        with self._lock:
            if self._wheel is None:
                self._wheel = build_wheel(self.scratch / "wheel")
            return self._wheel

    def device_wheels(self, facts: dict, extra: str, device: str) -> Path:
        wheel = self.wheel()
        key = (facts["machine"], facts.get("glibc"), tuple(facts["python_version"]), extra)
        with self._lock:
            if key not in self._downloads:
                out = self.scratch / f"wheels-{len(self._downloads)}"
                out.mkdir()
                self._downloads[key] = download_device_wheels(wheel, facts, extra, out, device)
            return self._downloads[key]


def run_on_devices(specs: list, plan_for: Callable[[DeviceSpec, Device], list], settings: StudySettings,
                   results_path: Path, options: FleetOptions,
                   on_progress: Callable[[str], None] = lambda message: None,
                   describe_row: Callable[[dict], str] = lambda row: row["status"]) -> list:
    """Run on every device the runs plan_for(spec, probed device) gives (bound to it, finished ones
    left out), appending each row to results_path
    as it finishes; returns a DeviceReport per spec. Ctrl-C (KeyboardInterrupt) stops every
    device's remote process before it propagates."""
    stop = threading.Event()
    write_lock = threading.Lock()
    reports = [DeviceReport(spec.destination) for spec in specs]
    transports = {}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as scratch:
        wheels = _Wheels(Path(scratch))

        def work(spec: DeviceSpec, report: DeviceReport) -> None:
            todo = []
            try:
                transport = SshTransport(spec.destination, ssh_config=options.ssh_config,
                                         accept_new_host_key=options.accept_new_host_key)
            except EdgeError as e:
                report.error, report.error_hint = e.message, e.hint
                return
            transports[spec.destination] = transport
            device = Device(transport, options.device)
            done, runs_started = 0, None
            try:
                on_progress(f"{device.name}: connecting and probing ...")
                transport.connect()
                facts = device.probe()
                report.facts = device.host_facts()
                on_progress(f"{device.name}: {facts['machine']}, {facts.get('board') or facts['cpu_model']}, "
                            f"Python {facts['python']}, {facts.get('free_disk_mb')} MB free, edge-slm "
                            f"{device.version} {'installed' if device.installed() else 'not installed'}")
                if not device.installed():
                    on_progress(f"{device.name}: provisioning edge-slm {device.version} [{options.device.extra}] ...")
                todo = plan_for(spec, device)
                device.provision(wheels.wheel, wheels.device_wheels)
                remote_paths = {}
                for path in dict.fromkeys(run.artifact for run in todo):
                    remote_paths[path] = device.push_artifact(path)
                data = device.push_data(settings.data) if settings.data else None
                runs_started = time.monotonic()
                for run in todo:
                    if stop.is_set():
                        return
                    row = execute(run, settings, transport, artifact=remote_paths[run.artifact], data=data,
                                  port=spec.port, python=device.venv_python, host=report.facts)
                    if stop.is_set():
                        return  # interrupted mid-run: that run is not a result
                    with write_lock:
                        append_row(results_path, row)
                    report.rows.append(row)
                    done += 1
                    on_progress(f"{device.name}: [{done}/{len(todo)}] {describe_row(row)}")
            except Exception as e:  # noqa: BLE001 - one device's failure must not end the others' study
                if stop.is_set():
                    return
                if not isinstance(e, EdgeError):
                    e = EdgeError(f"device {device.name}: {type(e).__name__}: {e}", "this is a bug in edge-bench")
                report.error, report.error_hint = e.message, e.hint
                with write_lock:
                    for run in todo[done:]:
                        row = new_row(run, settings, report.facts or {}, utc_now(), e.message)
                        append_row(results_path, row)
                        report.rows.append(row)
            finally:
                if runs_started is not None:
                    device.phases.runs_s = time.monotonic() - runs_started
                report.phases = dataclasses.asdict(device.phases)
                transport.close()

        threads = [threading.Thread(target=work, args=(spec, report), name=f"device {spec.destination}", daemon=True)
                   for spec, report in zip(specs, reports)]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        except BaseException:  # Ctrl-C / SIGTERM: stop every remote process, then let the caller report
            stop.set()
            for transport in list(transports.values()):
                transport.abort()
            for thread in threads:
                thread.join(timeout=30)
            for transport in list(transports.values()):
                transport.close()  # a worker still busy here (a local wheel build) must not keep a connection
            raise
    return reports

