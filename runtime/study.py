"""`edge-bench`: the model-selection study as a library.

    rows = run_study(["a.tflite", "b.tflite"], "study/", threads=[1, 2], baseline_modes=["tf.function"])

plan_runs() makes one run per artifact x threads x backend (plus, opt-in, one TF fp32 baseline per
source model x threads). run_study() runs each in a fresh process (`edge-run ... --output`, or
`edge_slm.convert.baseline` for a baseline), so every run starts with clean memory figures and a
crashing graph becomes a failed row instead of ending the study. Each finished run is appended to
DIR/results.jsonl at once (flush + fsync), so an interrupt keeps the finished runs and `resume`
skips them. summarize() turns a row into the figures the report and the recommendation use;
recommend() picks the best artifact under constraints, or says which constraint nothing meets.

Device side: this module imports no TensorFlow (baselines run in their own, host-only processes).

results.jsonl, one JSON object per line (schema "edge-slm.study-run", version 1):
  schema, schema_version, key (what --resume matches), kind ("artifact" | "tf-baseline"),
  artifact (absolute path), threads, backend (edge-run's --backend; "tensorflow" for baselines),
  mode (baselines: "tf.function" | "eager"), source (the source model a baseline stands for),
  settings (runs, min_seconds, warmup, data, meter, baseline_seconds), host (the study's host facts),
  started, finished, wall_s, status ("ok" | "failed"), exit_code, error (one line, or null),
  warnings (the run's warning lines), other_cpu_share (the share of the machine's CPU other
  processes used during the run, 0..1, or null), result (the run's document: "edge-slm.run" without its
  per-text predictions, or "edge-slm.tf-baseline"; null when the run failed).
A run may appear more than once (a failed run retried by --resume): the last row of a key wins.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from .artifact import atomic_write_text, read_artifact
from .backends import BACKEND_CHOICES
from .errors import EdgeError
from .results import RANDOM_WEIGHTS_ACCURACY, host_facts, prepare_out_dir, utc_now

RESULTS_FILE = "results.jsonl"
ROW_SCHEMA = "edge-slm.study-run"
ROW_SCHEMA_VERSION = 1
ARTIFACT = "artifact"
BASELINE = "tf-baseline"
BASELINE_MODES = ("tf.function", "eager")
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
# A UM meter samples at ~7 Hz: windows shorter than this leave energy dominated by the edges.
METER_MIN_SECONDS = 10.0
DEFAULT_TIMEOUT_S = 1800.0
LATENCY_STATS = ("p50", "p90", "p99")
BUSY_SHARE = 0.10  # other processes using this share of the CPU during a run make its figures suspect

# `python -c` rather than the console scripts: works in any environment that has the package.
_EDGE_RUN = "import sys; from edge_slm.runtime.cli import main; sys.exit(main(sys.argv[1:], 'edge-run'))"
_TF_BASELINE = "import sys; from edge_slm.convert.baseline import main; sys.exit(main(sys.argv[1:]))"


# ---- inputs --------------------------------------------------------------------------------------

def parse_threads(text: str) -> list:
    """'1,2,4' -> [1, 2, 4] (order kept, duplicates dropped)."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item.isdigit() or int(item) <= 0:
            raise EdgeError(f"bad --threads list {text!r}: {item!r} is not a positive integer",
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


@dataclass(frozen=True)
class StudySettings:
    """How every run of a study measures; runs of one results.jsonl must share these."""

    runs: Optional[int] = None            # timed runs (DEFAULT_RUNS unless min_seconds is given)
    min_seconds: Optional[float] = None   # with a meter: METER_MIN_SECONDS unless given
    warmup: int = DEFAULT_WARMUP
    data: Optional[str] = None            # labelled texts: accuracy, and the texts the bench feeds
    meter: Optional[str] = None
    port: Optional[str] = None
    baseline_seconds: float = 3.0         # the meter's idle baseline before and after each run
    timeout_s: float = DEFAULT_TIMEOUT_S  # per run; a hung run is killed and reported

    def effective(self) -> "StudySettings":
        runs, min_seconds = self.runs, self.min_seconds
        if self.meter and min_seconds is None:
            min_seconds = METER_MIN_SECONDS
        if runs is None and min_seconds is None:
            runs = DEFAULT_RUNS
        data = str(Path(self.data).resolve()) if self.data else None
        return StudySettings(runs, min_seconds, self.warmup, data, self.meter, self.port,
                             self.baseline_seconds, self.timeout_s)

    def measurement(self) -> dict:
        """What makes runs comparable (the port may change between sessions: a pty is renamed)."""
        return {"runs": self.runs, "min_seconds": self.min_seconds, "warmup": self.warmup, "data": self.data,
                "meter": self.meter, "baseline_seconds": self.baseline_seconds if self.meter else None}

    def check(self) -> None:
        if self.runs is not None and self.runs <= 0:
            raise EdgeError(f"--runs must be positive, got {self.runs}", "e.g. --runs 200")
        if self.min_seconds is not None and self.min_seconds <= 0:
            raise EdgeError(f"--min-seconds must be positive, got {self.min_seconds}", "e.g. --min-seconds 10")
        if self.warmup < 0:
            raise EdgeError(f"--warmup must be 0 or more, got {self.warmup}", "e.g. --warmup 10")
        if self.timeout_s <= 0:
            raise EdgeError(f"--timeout must be positive, got {self.timeout_s}", "e.g. --timeout 1800")
        if (self.meter is None) != (self.port is None):
            raise EdgeError("--meter and --port go together", "e.g. --meter um25c --port /dev/rfcomm0")
        if self.meter:
            from edge_slm.power.session import METER_NAMES

            if self.meter not in METER_NAMES:
                raise EdgeError(f"unknown meter {self.meter!r}", f"one of {', '.join(METER_NAMES)}")
            if "://" not in self.port and not os.path.exists(self.port):
                raise EdgeError(f"meter port {self.port} does not exist",
                                "check the device path (edge-power list shows serial ports and emulators)")
            if self.baseline_seconds <= 0:
                raise EdgeError(f"--baseline-seconds must be positive, got {self.baseline_seconds}",
                                "measure at least a second of idle power, e.g. --baseline-seconds 3")
        if self.data:
            from .data import read_dataset

            read_dataset(self.data)  # a bad file is one error now, not one failed run per artifact


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

    @property
    def key(self) -> str:
        if self.kind == BASELINE:
            return f"{BASELINE}|{self.source}|{self.mode}|threads={self.threads}"
        graph = f"|graph={self.graph_sha256[:16]}" if self.graph_sha256 else ""
        return f"{ARTIFACT}|{self.artifact}{graph}|{self.backend}|threads={self.threads}"

    def describe(self) -> str:
        name = Path(self.artifact).name
        if self.kind == BASELINE:
            return f"TF fp32 {self.mode} baseline of {name}, {self.threads} thread(s)"
        return f"{name}, {self.threads} thread(s), backend {self.backend}"


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


def _probe_metadata(path: str) -> Optional[dict]:
    """The artifact's metadata, or None (plain .tflite, or unreadable: its run will say why)."""
    try:
        return read_artifact(path, verify=False).metadata
    except EdgeError:
        return None


def plan_runs(artifacts: Iterable, threads: Iterable, backends: Iterable = ("auto",),
              baseline_modes: Iterable = (), warn: Callable[[str], None] = lambda message: None) -> list:
    """Every artifact x threads x backend, each followed by its source model's TF baselines
    (once per source, mode and thread count) so that the two are measured close in time."""
    paths = check_artifacts(artifacts)
    modes = list(baseline_modes)
    unknown = [m for m in modes if m not in BASELINE_MODES]
    if unknown:
        raise EdgeError(f"unknown baseline mode {unknown[0]!r}", f"one of {', '.join(BASELINE_MODES)}")
    metadata = {path: _probe_metadata(path) for path in paths}
    if modes:
        for path, meta in metadata.items():
            if meta is None:
                warn(f"no TF baseline for {Path(path).name}: it has no edge-slm metadata naming its source model")
    planned, seen = [], set()
    for thread_count in threads:
        for path in paths:
            meta = metadata[path]
            for backend in backends:
                planned.append(PlannedRun(ARTIFACT, path, thread_count, backend, takes_text=meta is not None,
                                          graph_sha256=meta["graph"]["sha256"] if meta else None))
            if meta is None:
                continue
            for mode in modes:
                run = PlannedRun(BASELINE, path, thread_count, "tensorflow", mode, source_identity(meta))
                if run.key not in seen:
                    seen.add(run.key)
                    planned.append(run)
    return planned


# ---- running one ---------------------------------------------------------------------------------

def _command(run: PlannedRun, settings: StudySettings, output: Path, python: str) -> list:
    script = _TF_BASELINE if run.kind == BASELINE else _EDGE_RUN
    args = [python, "-c", script]
    if run.kind == BASELINE:
        args += [run.artifact, "--mode", run.mode]
    else:
        args += ["--model", run.artifact, "--bench", "--backend", run.backend]
    args += ["--threads", str(run.threads), "--warmup", str(settings.warmup), "--output", str(output), "-q"]
    if settings.runs is not None:
        args += ["--runs", str(settings.runs)]
    if settings.min_seconds is not None:
        args += ["--min-seconds", str(settings.min_seconds)]
    if settings.data and run.takes_text:
        args += ["--input", settings.data]
    if settings.meter:
        args += ["--meter", settings.meter, "--port", settings.port, "--baseline-seconds",
                 str(settings.baseline_seconds)]
    return args


def execute(run: PlannedRun, settings: StudySettings, scratch: Path, python: str = sys.executable) -> dict:
    """Run one planned run in a fresh process; returns its results row (status ok or failed)."""
    output = Path(tempfile.mkstemp(prefix=".run-", suffix=".json", dir=scratch)[1])
    output.unlink()  # the run writes it atomically; its absence means the run did not finish
    started, clock = utc_now(), time.monotonic()
    machine_before, children_before = _machine_cpu_seconds(), _children_cpu_seconds()
    process = subprocess.Popen(_command(run, settings, output, python), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    timed_out = False
    try:
        _, stderr = process.communicate(timeout=settings.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        _, stderr = process.communicate()
    except BaseException:  # Ctrl-C, SIGTERM: never leave a benchmark running behind us
        process.kill()
        process.wait()
        output.unlink(missing_ok=True)
        raise
    other_cpu = _other_cpu_share(machine_before, _machine_cpu_seconds(),
                                 _children_cpu_seconds() - children_before)
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    result, error = None, None
    if timed_out:
        error = f"timed out after {settings.timeout_s:g} s and was killed"
    elif process.returncode == 0:
        try:
            result = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            error = f"finished but its result file is unreadable ({type(e).__name__})"
    else:
        error = _failure(process.returncode, lines)
    output.unlink(missing_ok=True)
    if result is not None and result.get("predictions") is not None:
        # Per-text predictions would make every row as long as the data set; evaluation keeps the counts.
        result = dict(result, predictions=None, predictions_dropped=len(result["predictions"]))
    return {
        "schema": ROW_SCHEMA, "schema_version": ROW_SCHEMA_VERSION, "key": run.key, "kind": run.kind,
        "artifact": run.artifact, "threads": run.threads, "backend": run.backend, "mode": run.mode,
        "source": run.source, "settings": settings.measurement(), "host": host_facts(),
        "started": started, "finished": utc_now(), "wall_s": round(time.monotonic() - clock, 3),
        "status": "ok" if result is not None else "failed",
        "exit_code": None if timed_out else process.returncode, "error": error,
        "other_cpu_share": other_cpu,
        "warnings": [line.split("warning: ", 1)[1] for line in lines if "warning: " in line][:20],
        "result": result,
    }


def _machine_cpu_seconds():
    """(busy, total) CPU-seconds of the whole machine so far, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # grows as each run is waited for
    return usage.ru_utime + usage.ru_stime


def _other_cpu_share(before, after, run_cpu_s: float) -> Optional[float]:
    """The share of the machine's CPU that processes other than the run used while it ran:
    on a shared host (or a device doing other work) that load inflates the run's latency."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy = after[0] - before[0]
    return round(min(1.0, max(0.0, (busy - run_cpu_s) / (after[1] - before[1]))), 4)


def _failure(returncode: int, lines: list) -> str:
    """One line saying why a run failed: the tool's own error line, else how it died."""
    for line in reversed(lines):
        for marker in ("edge-run: error: ", "edge-baseline: error: "):
            if marker in line:
                return line.split(marker, 1)[1]
    last = lines[-1] if lines else "no output"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed ({name}); last output: {last}"[:400]
    return f"exited with code {returncode}: {last}"[:400]


# ---- results.jsonl -------------------------------------------------------------------------------

def append_row(path: Path, row: dict) -> None:
    """One line per finished run, on disk before the next run starts."""
    line = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EdgeError(f"cannot append to {path}: {e.strerror or e}",
                        "free disk space or fix the permissions, then rerun with --resume") from None


def read_rows(path, repair: bool = False, warn: Callable[[str], None] = lambda message: None) -> list:
    """Every row of a results.jsonl, in order. A cut-off last line (power loss mid-write) is
    skipped with a warning (and cut from the file with repair=True); any other bad line is an
    error naming file:line."""
    path = Path(path)
    if not path.exists():
        raise EdgeError(f"results file not found: {path}", "pass the results.jsonl an edge-bench run wrote")
    if path.is_dir():
        raise EdgeError(f"{path} is a directory", f"pass the results file inside it: {path / RESULTS_FILE}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}", "check the file") from None
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    if tail.strip():
        warn(f"{path}: the last line was cut off mid-write; that run is ignored")
        if repair:
            atomic_write_text(path, "".join(line + "\n" for line in lines))
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise EdgeError(f"{path}:{number} is not valid JSON",
                            "the file is damaged; remove that line (or start a new study with another -o)") from None
        if not isinstance(row, dict) or row.get("schema") != ROW_SCHEMA:
            raise EdgeError(f"{path}:{number} is not an edge-bench results row",
                            "pass the results.jsonl an edge-bench run wrote")
        if row.get("schema_version", 0) > ROW_SCHEMA_VERSION:
            raise EdgeError(f"{path}:{number} has schema_version {row['schema_version']}; this edge-slm reads "
                            f"up to {ROW_SCHEMA_VERSION}", "upgrade edge-slm")
        rows.append(row)
    return rows


def latest_rows(rows: list) -> list:
    """The last row of each key, in the order keys first appeared."""
    latest = {}
    for row in rows:
        latest[row["key"]] = row
    order = list(dict.fromkeys(row["key"] for row in rows))
    return [latest[key] for key in order]


# ---- the study -----------------------------------------------------------------------------------

@dataclass
class StudyOutcome:
    results_path: Path
    planned: int
    skipped: int                                # finished in an earlier session (--resume)
    rows: list = field(default_factory=list)    # the rows this session added
    report: Optional[object] = None             # report.ReportFiles when a report was written


def run_study(artifacts: Iterable, out_dir, *, threads: Optional[Iterable] = None,
              backends: Iterable = ("auto",), baseline_modes: Iterable = (),
              settings: StudySettings = StudySettings(), resume: bool = False, retry_busy: bool = False,
              write_report: bool = True,
              constraints: Optional["Constraints"] = None, python: str = sys.executable,
              on_progress: Callable[[str], None] = lambda message: None) -> StudyOutcome:
    """Run the study into out_dir/results.jsonl, then write the report there.

    resume skips the runs results.jsonl already has (failed ones are retried); retry_busy also
    re-measures those during which other processes used BUSY_SHARE or more of the CPU. Raises
    EdgeError for bad input before any run; an interrupt (KeyboardInterrupt) becomes an EdgeError
    with exit code 130 after the finished runs are safely on disk."""
    settings.check()
    settings = settings.effective()
    baseline_modes = list(baseline_modes)
    if baseline_modes and importlib.util.find_spec("tensorflow") is None:
        raise EdgeError("TF baselines need TensorFlow, which is not installed here",
                        "run --baseline on the host (pip install 'edge-slm[host]'), or drop --baseline on the device")
    threads = list(threads) if threads else [default_threads()]
    planned = plan_runs(artifacts, threads, list(backends), baseline_modes,
                        warn=lambda m: on_progress(f"warning: {m}"))
    out = prepare_out_dir(out_dir)
    results_path = out / RESULTS_FILE
    if retry_busy and not resume:
        raise EdgeError("--retry-busy re-measures runs of an earlier session", "use it together with --resume")
    done = _finished_keys(results_path, resume, settings, on_progress, retry_busy)
    todo = [run for run in planned if run.key not in done]
    outcome = StudyOutcome(results_path, planned=len(planned), skipped=len(planned) - len(todo))
    if outcome.skipped:
        on_progress(f"resuming: {outcome.skipped} of {len(planned)} runs already finished in {results_path}")
    try:
        for number, run in enumerate(todo, 1):
            on_progress(f"[{number}/{len(todo)}] {run.describe()} ...")
            row = execute(run, settings, out, python)
            append_row(results_path, row)
            outcome.rows.append(row)
            on_progress(f"[{number}/{len(todo)}] {progress_line(row)}")
    except KeyboardInterrupt:
        kept = outcome.skipped + len(outcome.rows)
        raise EdgeError(f"interrupted: {kept} finished run(s) kept in {results_path}",
                        "rerun the same command with --resume to run the rest", exit_code=130) from None
    if write_report:
        from .report import write_report as render

        outcome.report = render(results_path, out, constraints=constraints)
    return outcome


def _finished_keys(results_path: Path, resume: bool, settings: StudySettings, on_progress,
                   retry_busy: bool = False) -> set:
    if not results_path.exists() or results_path.stat().st_size == 0:
        return set()
    rows = read_rows(results_path, repair=resume, warn=lambda m: on_progress(f"warning: {m}"))
    if rows and not resume:
        raise EdgeError(f"{results_path} already holds {len(rows)} run(s)",
                        "pass --resume to skip the finished runs, or choose another -o directory")
    finished = [row for row in latest_rows(rows) if row["status"] == "ok"]
    for row in finished:
        if row.get("settings") != settings.measurement():
            raise EdgeError(f"{results_path} was measured with other settings ({_settings_text(row['settings'])}) "
                            f"than this run ({_settings_text(settings.measurement())})",
                            "resume with the same --runs/--min-seconds/--warmup/--data/--meter, or use another -o")
    if retry_busy:
        finished = [row for row in finished if (row.get("other_cpu_share") or 0) < BUSY_SHARE]
    return {row["key"] for row in finished}  # failed runs are retried: timeouts and unplugged meters pass


def _settings_text(measurement: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in measurement.items() if v is not None) or "defaults"


def three_figures(value: Optional[float]) -> str:
    """Three significant figures, trailing zeros kept: 0.0300, 4.10, 12.3, 764 (ms, mJ)."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:#.3g}"


def progress_line(row: dict) -> str:
    s = summarize(row)
    if s.status != "ok":
        return f"{s.label}: FAILED: {s.error}"
    parts = [f"p50 {three_figures(s.latency['p50'])} ms", f"peak RSS {s.peak_rss_mb:.0f} MB"]
    if s.energy_mj is not None:
        parts.append(s.energy_text)
    if s.accuracy is not None or s.random_weights:
        parts.append(f"accuracy {s.accuracy_text}")
    return f"{s.label}: " + ", ".join(parts) + f" ({row['wall_s']:.0f} s)"


# ---- figures of a row ----------------------------------------------------------------------------

@dataclass
class RunSummary:
    """The figures of one results row, with the caveats that qualify them."""

    key: str
    kind: str
    label: str
    model: str
    quant: str                      # dynamic, fp32, ... ; "TF fp32" for a baseline
    mode: Optional[str]             # baseline: tf.function | eager
    threads: int
    backend: str                    # e.g. "litert 2.3.0", "tensorflow 2.21.0 tf.function"
    status: str
    error: Optional[str]
    artifact: str
    source: Optional[str]           # source identity (artifacts with metadata and baselines)
    random_weights: Optional[bool]  # None: a plain .tflite, nobody knows
    accuracy: Optional[float]       # only for trained weights on labelled data; never for random weights
    accuracy_text: str
    latency: Optional[dict] = None  # p50, p90, p99, mean, std, min, max (ms)
    latencies_ms: list = field(default_factory=list)
    runs: Optional[int] = None
    init_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    import_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    model_bytes: Optional[int] = None  # artifact file; baseline: fp32 parameter bytes
    energy_mj: Optional[float] = None
    energy_uncertainty_mj: Optional[float] = None
    energy_text: str = "not measured (no meter)"
    emulated: Optional[bool] = None
    energy_partial: bool = False
    energy_relative_uncertainty: Optional[float] = None
    energy_needed_window_s: Optional[float] = None  # the meter's advice: a window this long gives +-2 %
    other_cpu_share: Optional[float] = None  # CPU used by other processes during the run, 0..1
    agreement: Optional[dict] = None   # baseline: its logits against the artifact's
    conversion_cosine: Optional[float] = None  # the converter's own check of the artifact against TF
    host: Optional[dict] = None
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(row: dict) -> RunSummary:
    result = row.get("result") or {}
    kind = row["kind"]
    if kind == BASELINE:
        model_info = result.get("model") or {}
        meta = model_info.get("metadata") or _metadata_of(row["artifact"]) or {}
        name = (meta.get("model") or {}).get("name") or Path(row["artifact"]).stem
        quant = "TF fp32"
        framework = result.get("framework") or {}
        backend = f"tensorflow {framework.get('tensorflow', '?')} {row['mode']}"
        random_weights = model_info.get("random_weights", meta.get("random_weights"))
        label = f"{name} TF fp32 {row['mode']}, {row['threads']} thr"
    else:
        meta = ((result.get("model") or {}).get("metadata")) or _metadata_of(row["artifact"]) or {}
        name = (meta.get("model") or {}).get("name") or Path(row["artifact"]).stem
        # No metadata: a plain .tflite when it ran; when it failed, nobody knows what it is.
        quant = meta.get("quantization") or ("plain .tflite" if result else "?")
        backend_info = result.get("backend") or {}
        backend = (f"{backend_info['name']} {backend_info['version']}" if backend_info
                   else row["backend"])
        random_weights = meta.get("random_weights") if meta else None
        label = f"{name if meta else Path(row['artifact']).name}{' ' + quant if meta else ''}, {row['threads']} thr"
        if row["backend"] != "auto":
            label += f", {row['backend']}"
    accuracy, accuracy_text = _accuracy(result, row, random_weights)
    summary = RunSummary(
        key=row["key"], kind=kind, label=label, model=name, quant=quant, mode=row.get("mode"), threads=row["threads"],
        backend=backend, status=row["status"], error=row.get("error"), artifact=row["artifact"],
        source=row.get("source") or (source_identity(meta) if meta.get("source") else None),
        random_weights=random_weights, accuracy=accuracy, accuracy_text=accuracy_text,
        agreement=result.get("agreement"), other_cpu_share=row.get("other_cpu_share"),
        conversion_cosine=(meta.get("validation") or {}).get("mean_cosine"),
        host=(result.get("host") or row.get("host")),
        warnings=list(row.get("warnings") or []))
    bench = result.get("benchmark")
    if bench:
        summary.latency = dict(bench["latency_ms"])
        summary.latencies_ms = list(bench.get("latencies_ms") or [])
        summary.runs = bench.get("runs")
        summary.init_ms = bench.get("init_ms")
        summary.first_inference_ms = bench.get("first_inference_ms")
        summary.import_ms = bench.get("import_ms")
        summary.peak_rss_mb = (bench.get("memory") or {}).get("peak_rss_mb")
        summary.model_bytes = bench.get("parameter_bytes") if kind == BASELINE else bench.get("model_file_bytes")
    _energy(summary, result.get("energy"), row)
    return summary


def _metadata_of(path: str) -> Optional[dict]:
    """A failed run has no result document: name it from the artifact, if it is still readable."""
    return _probe_metadata(path) if Path(path).is_file() else None


def _accuracy(result: dict, row: dict, random_weights: Optional[bool]):
    """(accuracy or None, the text to show). Random weights never yield a number."""
    if random_weights:
        return None, RANDOM_WEIGHTS_ACCURACY
    evaluation = result.get("evaluation")
    if evaluation is None:
        if row["status"] != "ok":
            return None, "not measured (run failed)"
        if not (row.get("settings") or {}).get("data"):
            return None, "not measured (no --data)"
        if random_weights is None and row["kind"] == ARTIFACT:
            return None, "not measured (plain .tflite: no tokenizer)"
        return None, "not measured (the data has no labels)"
    status = evaluation.get("status")
    if status == RANDOM_WEIGHTS_ACCURACY:
        return None, RANDOM_WEIGHTS_ACCURACY
    if status != "ok":
        return None, str(status)
    accuracy = float(evaluation["accuracy"])
    return accuracy, f"{accuracy * 100:.1f} % ({evaluation['correct']}/{evaluation['examples']})"


def _energy(summary: RunSummary, energy: Optional[dict], row: dict) -> None:
    if energy is None:
        meter = (row.get("settings") or {}).get("meter")
        summary.energy_text = "not measured (run failed)" if meter and row["status"] != "ok" else (
            "not measured (no meter)" if not meter else "not measured")
        return
    summary.emulated = bool(energy.get("emulated"))
    summary.energy_partial = bool(energy.get("partial"))
    summary.energy_relative_uncertainty = energy.get("relative_uncertainty")
    summary.energy_needed_window_s = energy.get("needed_window_s")
    tag = " (emulated)" if summary.emulated else ""
    value = energy.get("energy_per_inference_mj")
    if value is None:
        summary.energy_text = f"not measured{tag}"
        return
    summary.energy_mj = float(value)
    summary.energy_uncertainty_mj = energy.get("uncertainty_mj")
    uncertainty = "" if summary.energy_uncertainty_mj is None else f" ± {three_figures(summary.energy_uncertainty_mj)}"
    summary.energy_text = (f"{three_figures(summary.energy_mj)}{uncertainty} mJ{tag}"
                           + (" PARTIAL (meter lost mid-run)" if summary.energy_partial else ""))


def baseline_for(summary: RunSummary, summaries: list, mode: str = "tf.function") -> Optional[RunSummary]:
    """The successful TF baseline of an artifact's source model at the same thread count."""
    if summary.kind != ARTIFACT or summary.source is None:
        return None
    for other in summaries:
        if (other.kind == BASELINE and other.status == "ok" and other.source == summary.source
                and other.threads == summary.threads and other.mode == mode):
            return other
    return None


# ---- the recommendation --------------------------------------------------------------------------

@dataclass(frozen=True)
class Constraints:
    max_latency_ms: Optional[float] = None
    max_memory_mb: Optional[float] = None
    max_energy_mj: Optional[float] = None
    min_accuracy: Optional[float] = None  # a fraction, 0..1
    latency_stat: str = "p50"             # which latency figure max_latency_ms bounds

    def check(self) -> None:
        for name, value in (("--max-latency-ms", self.max_latency_ms), ("--max-memory-mb", self.max_memory_mb),
                            ("--max-energy-mj", self.max_energy_mj)):
            if value is not None and value <= 0:
                raise EdgeError(f"{name} must be positive, got {value:g}", f"e.g. {name} 50")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise EdgeError(f"--min-accuracy must be within 0..1, got {self.min_accuracy:g}",
                            "a fraction (0.88) or a percentage (88%)")
        if self.latency_stat not in LATENCY_STATS:
            raise EdgeError(f"unknown latency statistic {self.latency_stat!r}", f"one of {', '.join(LATENCY_STATS)}")

    def describe(self) -> list:
        texts = []
        if self.max_latency_ms is not None:
            texts.append(f"{self.latency_stat} latency <= {self.max_latency_ms:g} ms")
        if self.max_memory_mb is not None:
            texts.append(f"peak RSS <= {self.max_memory_mb:g} MB")
        if self.max_energy_mj is not None:
            texts.append(f"energy <= {self.max_energy_mj:g} mJ/inference")
        if self.min_accuracy is not None:
            texts.append(f"accuracy >= {self.min_accuracy * 100:g} %")
        return texts


def parse_accuracy(text: Optional[str]) -> Optional[float]:
    """'0.88' or '88%' -> 0.88; a bare number above 1 is ambiguous and refused."""
    if text is None:
        return None
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise EdgeError(f"bad --min-accuracy {text!r}", "a fraction (0.88) or a percentage (88%)") from None
    if not 0 <= value <= 1:
        raise EdgeError(f"--min-accuracy {text} is outside 0..1", "a fraction (0.88) or a percentage (88%)")
    return value


def _checks(s: RunSummary, c: Constraints) -> list:
    """[(constraint, met, the figure it was judged on)] for one candidate."""
    checks = []
    if c.max_latency_ms is not None:
        value = s.latency[c.latency_stat]
        checks.append((f"{c.latency_stat} latency <= {c.max_latency_ms:g} ms", value <= c.max_latency_ms,
                       f"{c.latency_stat} {three_figures(value)} ms"))
    if c.max_memory_mb is not None:
        checks.append((f"peak RSS <= {c.max_memory_mb:g} MB", s.peak_rss_mb <= c.max_memory_mb,
                       f"peak RSS {s.peak_rss_mb:.1f} MB"))
    if c.max_energy_mj is not None:
        met = s.energy_mj is not None and s.energy_mj <= c.max_energy_mj
        checks.append((f"energy <= {c.max_energy_mj:g} mJ/inference", met, f"energy {s.energy_text}"))
    if c.min_accuracy is not None:
        met = s.accuracy is not None and s.accuracy >= c.min_accuracy
        checks.append((f"accuracy >= {c.min_accuracy * 100:g} %", met, f"accuracy {s.accuracy_text}"))
    return checks


def recommend(summaries: list, constraints: Constraints = Constraints()) -> dict:
    """The best artifact run that meets every constraint, and why; or which constraint nothing meets.

    Ranking among those that meet them: highest accuracy when every one has a measured accuracy
    (ties: lower latency), else lowest latency (accuracy unknown, e.g. random weights). TF
    baselines are references, not candidates: they do not run on the device."""
    c = constraints
    stat = c.latency_stat
    candidates = [s for s in summaries if s.kind == ARTIFACT and s.status == "ok" and s.latency]
    result = {"constraints": c.describe(), "latency_stat": stat, "candidates": len(candidates),
              "best": None, "unmet": [], "verdicts": []}
    if not candidates:
        result.update(status="none", reason="no artifact run finished successfully, so there is nothing to recommend.")
        return result
    verdicts = []
    for s in candidates:
        checks = _checks(s, c)
        verdicts.append({"label": s.label, "artifact": s.artifact, "meets_all": all(ok for _, ok, _ in checks),
                         "failed": [f"{name} ({figure})" for name, ok, figure in checks if not ok]})
    result["verdicts"] = verdicts
    feasible = [s for s, v in zip(candidates, verdicts) if v["meets_all"]]
    if not feasible:
        names = [name for name, _, _ in _checks(candidates[0], c)]
        unmet = [name for i, name in enumerate(names) if not any(_checks(s, c)[i][1] for s in candidates)]
        result["unmet"] = unmet
        if unmet:
            why = "; ".join(f"nothing meets {name}: {_closest(candidates, name, c)}" for name in unmet) + "."
        else:
            closest = min(zip(candidates, verdicts), key=lambda sv: (len(sv[1]["failed"]), sv[0].latency[stat]))
            why = (f"each constraint is met by some artifact, but none meets all together; closest: "
                   f"{closest[0].label}, which fails {', '.join(closest[1]['failed'])}.")
        result.update(status="none", reason=why)
        return result
    measured = all(s.accuracy is not None for s in feasible)
    if measured:
        best = min(feasible, key=lambda s: (-s.accuracy, s.latency[stat]))
        rule, tail = f"the highest accuracy ({best.accuracy_text})", ""
    else:
        best = min(feasible, key=lambda s: s.latency[stat])
        unknown = sorted({s.accuracy_text for s in feasible if s.accuracy is None})
        rule = f"the lowest {stat} latency"
        tail = f" Accuracy is not known for every candidate ({'; '.join(unknown)}), so latency decides."
    scope = (f"of the {len(feasible)} of {len(candidates)} artifact runs that meet {' and '.join(c.describe())}"
             if c.describe() else f"of the {len(candidates)} artifact runs (no constraints given)")
    figures = [f"{stat} {three_figures(best.latency[stat])} ms", f"peak RSS {best.peak_rss_mb:.1f} MB",
               f"{best.model_bytes / 1e6:.1f} MB file" if best.model_bytes else None,
               f"energy {best.energy_text}" if best.energy_mj is not None else None,
               f"accuracy {best.accuracy_text}"]
    result.update(status="ok", best={"label": best.label, "artifact": best.artifact, "threads": best.threads,
                                     "backend": best.backend},
                  reason=f"{best.label} has {rule} {scope}: " + ", ".join(f for f in figures if f) + "." + tail)
    return result


def _closest(candidates: list, name: str, c: Constraints) -> str:
    """The candidate nearest to a constraint nobody meets, with its figure."""
    if name.startswith(c.latency_stat):
        best = min(candidates, key=lambda s: s.latency[c.latency_stat])
        return f"the fastest is {best.label} at {three_figures(best.latency[c.latency_stat])} ms"
    if name.startswith("peak RSS"):
        best = min(candidates, key=lambda s: s.peak_rss_mb)
        return f"the leanest is {best.label} at {best.peak_rss_mb:.1f} MB"
    if name.startswith("energy"):
        measured = [s for s in candidates if s.energy_mj is not None]
        if not measured:
            return "energy was not measured (run the study with --meter)"
        best = min(measured, key=lambda s: s.energy_mj)
        return f"the most frugal is {best.label} at {best.energy_text}"
    measured = [s for s in candidates if s.accuracy is not None]
    if not measured:
        texts = sorted({s.accuracy_text for s in candidates})
        return f"no artifact has a measured accuracy ({'; '.join(texts)})"
    best = max(measured, key=lambda s: s.accuracy)
    return f"the most accurate is {best.label} at {best.accuracy_text}"
