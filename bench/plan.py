"""The study's plan: its settings, and one run per artifact x threads x backend (plus, opt-in,
one TF fp32 baseline per source model x threads)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from edge_slm.common.cli import (DEFAULT_IDLE_SECONDS, DEFAULT_RUNS, DEFAULT_WARMUP, MAX_THREADS, check_loop_settings,
                                 check_meter_settings)
from edge_slm.common.errors import EdgeError
from edge_slm.common.files import require_file
from edge_slm.power.meter import check_port_url
from edge_slm.power.session import METER_NAMES
from edge_slm.runtime.artifact import read_artifact
from edge_slm.runtime.backends import BACKEND_CHOICES
from edge_slm.runtime.engine import graph_takes_any_length
from edge_slm.runtime.data import read_dataset

ARTIFACT = "artifact"
BASELINE = "tf-baseline"
BASELINE_MODES = ("tf.function", "eager")
# A UM meter refreshes ~2x/s: windows shorter than this leave energy dominated by the edges.
METER_MIN_SECONDS = 10.0
DEFAULT_TIMEOUT_S = 1800.0


# ---- inputs --------------------------------------------------------------------------------------

def parse_threads(text: str) -> list:
    """'1,2,4' -> [1, 2, 4] (order kept, duplicates dropped)."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item.isdigit() or not 0 < int(item) <= MAX_THREADS:
            raise EdgeError(f"bad --threads list {text!r}: {item!r} is not an integer from 1 to {MAX_THREADS}",
                            "give thread counts separated by commas, e.g. --threads 1,2,4")
        if int(item) not in values:
            values.append(int(item))
    return values


def parse_backends(text: str) -> list:
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if item not in BACKEND_CHOICES:
            raise EdgeError(f"unknown backend {item!r} in --backend {text!r}",
                            f"one or more of {', '.join(BACKEND_CHOICES)}, separated by commas")
        if item not in values:
            values.append(item)
    return values


def default_threads() -> int:
    """The cores this process may use: what a device would give the model."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


METER_SIDES = ("device", "workstation")  # where the meter is read: where the run is, or here


@dataclass(frozen=True)
class StudySettings:
    """How every run of a study measures; runs of one results.jsonl must share these."""

    runs: Optional[int] = None            # timed runs (DEFAULT_RUNS unless min_seconds is given)
    min_seconds: Optional[float] = None   # with a meter: METER_MIN_SECONDS unless given
    warmup: int = DEFAULT_WARMUP
    data: Optional[str] = None            # labelled texts: accuracy, and the texts the bench feeds
    meter: Optional[str] = None
    port: Optional[str] = None
    baseline_seconds: float = DEFAULT_IDLE_SECONDS  # the meter's idle baseline before and after each run
    timeout_s: float = DEFAULT_TIMEOUT_S  # per run; a hung run is killed and reported
    meter_on: str = "device"              # edge-bench --device: the meter is read on the board, or here

    def effective(self) -> "StudySettings":
        runs, min_seconds = self.runs, self.min_seconds
        if self.meter and min_seconds is None:
            min_seconds = METER_MIN_SECONDS
        if runs is None and min_seconds is None:
            runs = DEFAULT_RUNS
        data = str(Path(self.data).resolve()) if self.data else None
        return StudySettings(runs, min_seconds, self.warmup, data, self.meter, self.port,
                             self.baseline_seconds, self.timeout_s, self.meter_on)

    def measurement(self) -> dict:
        """What makes runs comparable (the port may change between sessions: a pty is renamed)."""
        measured = {"runs": self.runs, "min_seconds": self.min_seconds, "warmup": self.warmup, "data": self.data,
                    "meter": self.meter, "baseline_seconds": self.baseline_seconds if self.meter else None}
        if self.meter and self.meter_on != "device":
            measured["meter_on"] = self.meter_on
        return measured

    def check(self, port_here: bool = True) -> None:
        """port_here=False: the meter is plugged into a device, whose ports cannot be checked from here."""
        check_loop_settings(self.runs, self.min_seconds, self.warmup)
        check_meter_settings(self.meter, self.port, self.baseline_seconds)
        if self.timeout_s <= 0:
            raise EdgeError(f"--timeout must be positive, got {self.timeout_s}", "e.g. --timeout 1800")
        if self.meter_on not in METER_SIDES:
            raise EdgeError(f"unknown --meter-on {self.meter_on!r}", f"one of {', '.join(METER_SIDES)}")
        if self.meter:
            if self.meter not in METER_NAMES:
                raise EdgeError(f"unknown meter {self.meter!r}", f"one of {', '.join(METER_NAMES)}")
            if port_here:
                check_port_url(self.port)
                if "://" not in self.port and not os.path.exists(self.port):
                    raise EdgeError(f"meter port {self.port} does not exist",
                                    "check the device path (edge-power list shows serial ports and emulators)")
        if self.data is not None:
            # every run reads it again, so a pipe would serve only the first
            require_file(self.data, "data file", "--data", "pass a text, TSV, CSV or JSONL file")
            read_dataset(self.data, flag="--data")  # a bad file is one error now, not one failed run per artifact


# ---- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    kind: str                      # ARTIFACT | BASELINE
    artifact: str                  # absolute path (a baseline: the artifact whose source it rebuilds)
    threads: int
    backend: str                   # edge-run --backend; "tensorflow" for a baseline
    mode: Optional[str] = None     # baseline: tf.function | eager
    source: Optional[str] = None   # baseline: source-model identity, shared by its artifacts
    takes_text: bool = True        # False for a plain .tflite: no tokenizer, random inputs
    graph_sha256: Optional[str] = None  # from the metadata: a re-converted file is a new run on --resume
    device: Optional[str] = None   # edge-bench --device: the board it runs on (None: this host)
    # With --data: None = each text at its own length, N = every request padded to N (the artifact's
    # longest); without --data there is one run, at the longest (no key suffix).
    lengths: Optional[str] = None  # None (no --data) | "own" | "max"
    seq_len: Optional[int] = None  # the --seq-len of a "max" run, or of a plain graph that takes any length

    @property
    def key(self) -> str:
        where = f"device={self.device}|" if self.device else ""
        suffix = f"|len={self.lengths}" if self.lengths else (f"|seq={self.seq_len}" if self.seq_len else "")
        if self.kind == BASELINE:
            return f"{where}{BASELINE}|{self.source}|{self.mode}|threads={self.threads}{suffix}"
        graph = f"|graph={self.graph_sha256[:16]}" if self.graph_sha256 else ""
        return f"{where}{ARTIFACT}|{self.artifact}{graph}|{self.backend}|threads={self.threads}{suffix}"

    def describe(self) -> str:
        name = Path(self.artifact).name
        where = f" on {self.device}" if self.device else ""
        at = {"own": ", the data's own lengths", "max": f", padded to {self.seq_len}"}.get(
            self.lengths, f", {self.seq_len} tokens" if self.seq_len else "")
        if self.kind == BASELINE:
            return f"TF fp32 {self.mode} baseline of {name}, {self.threads} thread(s){at}{where}"
        return f"{name}, {self.threads} thread(s), backend {self.backend}{at}{where}"


def source_identity(metadata: dict) -> str:
    """Which source model an artifact was made from: artifacts sharing it share a TF baseline."""
    weights = metadata.get("weights") or {}
    return (f"{metadata['source']}|seq={metadata['tokenizer']['max_seq_len']}|weights={weights.get('origin')}"
            f"|seed={weights.get('seed')}")


def check_artifacts(artifacts: Iterable) -> list:
    """Absolute paths, in order, without duplicates; a missing path is an error before any run.

    Only existence is checked here: a corrupt or crashing artifact is measured and reported as a
    failed run, so that one bad file does not hide the others' results."""
    paths = []
    for artifact in artifacts:
        path = Path(artifact).expanduser()
        if not path.exists():
            raise EdgeError(f"artifact not found: {artifact}", "check the path (edge-convert writes NAME-QUANT.tflite)")
        if path.is_dir():
            raise EdgeError(f"{artifact} is a directory", f"pass the .tflite files in it, e.g. {artifact}/*.tflite")
        resolved = str(path.resolve())
        if resolved not in paths:
            paths.append(resolved)
    if not paths:
        raise EdgeError("no ARTIFACT given", "pass one or more .tflite files, e.g. edge-bench models/*.tflite -o study")
    return paths


def artifact_metadata(path: str) -> Optional[dict]:
    """The artifact's metadata, or None (plain .tflite, or unreadable: its run will say why)."""
    try:
        return read_artifact(path, verify=False).metadata
    except EdgeError:
        return None


def plan_runs(artifacts: Iterable, threads: Iterable, backends: Iterable = ("auto",),
              baseline_modes: Iterable = (), warn: Callable[[str], None] = lambda message: None,
              with_data: bool = False, plain_seq_len: Optional[int] = None) -> list:
    """Every artifact x threads x backend, each followed by its source model's TF baselines
    (once per source, mode and thread count) so that the two are measured close in time. With
    data, each of those twice: at the texts' own lengths and padded to the artifact's longest.
    A plain .tflite (no metadata) whose graph takes any length runs random requests of
    `plain_seq_len` tokens: nothing else says how long they are."""
    paths = check_artifacts(artifacts)
    modes = list(baseline_modes)
    unknown = [m for m in modes if m not in BASELINE_MODES]
    if unknown:
        raise EdgeError(f"unknown baseline mode {unknown[0]!r}", f"one of {', '.join(BASELINE_MODES)}")
    metadata = {path: artifact_metadata(path) for path in paths}
    plain_lengths = _plain_lengths([path for path, meta in metadata.items() if meta is None], plain_seq_len)
    if modes:
        for path, meta in metadata.items():
            if meta is None:
                warn(f"no TF baseline for {Path(path).name}: it has no edge-slm metadata naming its source model")
    planned, seen = [], set()
    for thread_count in threads:
        for path in paths:
            meta = metadata[path]
            lengths = _lengths(meta, with_data) if meta else plain_lengths[path]
            for backend in backends:
                for at in lengths:
                    planned.append(PlannedRun(ARTIFACT, path, thread_count, backend, takes_text=meta is not None,
                                              graph_sha256=meta["graph"]["sha256"] if meta else None, **at))
            if meta is None:
                continue
            for mode in modes:
                for at in lengths:
                    run = PlannedRun(BASELINE, path, thread_count, "tensorflow", mode, source_identity(meta), **at)
                    if run.key not in seen:
                        seen.add(run.key)
                        planned.append(run)
    return planned


def _plain_lengths(plain_paths: list, seq_len: Optional[int]) -> dict:
    """path -> the runs' lengths of each plain .tflite: its own fixed shape, or `seq_len` tokens."""
    lengths = {}
    for path in plain_paths:
        any_length = graph_takes_any_length(path)
        if any_length and seq_len is None:
            raise EdgeError(f"{Path(path).name} takes any sequence length and, without edge-slm metadata, "
                            "does not say its longest", "pass --seq-len N, e.g. --seq-len 128")
        lengths[path] = [{"seq_len": seq_len}] if any_length else [{}]
    if seq_len is not None and [{"seq_len": seq_len}] not in lengths.values():
        raise EdgeError("--seq-len applies only to plain .tflite files whose graph takes any length; none is given",
                        "drop --seq-len: edge-slm artifacts name their longest, and --data times the texts' own")
    return lengths


def _lengths(meta: Optional[dict], with_data: bool) -> list:
    if not (with_data and meta):  # random inputs or sample texts: the longest sequence only
        return [{}]
    return [{"lengths": "own"}, {"lengths": "max", "seq_len": meta["tokenizer"]["max_seq_len"]}]
