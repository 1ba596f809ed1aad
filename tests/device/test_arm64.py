"""The emulated aarch64 device (`make device-arm64`, README "On a board"): artifacts converted on
x86 give the same answers on ARM kernels, with the device-only install a board gets.

The device is Debian's arm64 Python under QEMU user mode (CPU: Cortex-A72, a Raspberry Pi 4), with
edge-slm[device] installed from this checkout's wheel. Every emulated process costs seconds of
start-up, so the work is batched: one device process runs edge-run's command (`main(argv)`, the
console script's own entry) once per artifact and delegate, one tokenizes all of SST-2 dev; the
wrapper scripts run edge-run as a user would for the benchmark, meter and CPU-model checks.
The x86-vs-aarch64 figures go to <device>/agreement-litert.json and agreement-tflite-runtime.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bench.test_report import make_row
from tests.conftest import HOST_STACK, REPO, TINY_SEQ_LEN, host_stack_probe, write_tiny_checkpoint

DEVICE_ENV = "EDGE_SLM_DEVICE_ARM64"  # set by `make test`: then a device that cannot be built fails
FAMILIES = ("bert", "distilbert", "mobilebert")
MODES = ("fp32", "fp16", "dynamic", "int8")
COMPAT = "tflite-runtime-2.14"
DELEGATES = ("xnnpack", "reference")  # "none" (the optimized built-in kernels) differs by CPU in int8
TEXT_COUNT = 100  # SST-2 dev sentences per artifact and delegate (a tiny graph: ~30 ms each emulated)
EXACT = 1e-4      # max |logit difference| x86 vs aarch64 where the kernels are the same arithmetic
MIN_LABEL_AGREEMENT = 0.99
# Random init at BERT's 0.02 gives a tiny graph near-constant logits: every text the same label, and
# a label-agreement check that cannot fail. At 0.5 the labels split (20-60 % positive here).
# MobileBERT's random init takes every dense kernel from it too (architectures.py): at 0.5 its
# bottleneck and FFN layers, glorot-sized (~0.2) before, blew its dynamic-int8 logits up until ARM's
# and x86's kernels disagreed on 4 % of labels (max |delta| 1.7); 0.2 is the scale they had.
INITIALIZER_RANGE = {"bert": 0.5, "distilbert": 0.5, "mobilebert": 0.2}
MIN_CLASS_SHARE = 0.1
DEVICE_TIMEOUT_S = 1800  # per emulated process; the batch of all artifacts takes minutes on a busy host

DRIVER = r"""
import json, sys
from edge_slm.runtime.cli import main
print(json.dumps([main(argv) for argv in json.load(open(sys.argv[1]))]))
"""

# tflite-runtime 2.14's optimized int8 kernels (xnnpack, none) die with SIGSEGV under QEMU 10 on every
# CPU model tried (cortex-a72, cortex-a76, max); its reference kernels run them. Not known for a board.
TFLITE_RUNTIME_CRASHES_UNDER_QEMU = {("int8", "xnnpack")}

TOKENIZE = r"""
import json, sys
from pathlib import Path
from edge_slm.runtime.artifact import read_artifact
from edge_slm.runtime.tokenizer import WordPieceTokenizer
artifact = read_artifact(Path(sys.argv[1]))
tokenizer = WordPieceTokenizer.from_metadata(artifact.vocab, artifact.metadata["tokenizer"])
texts = [line.split("\t")[0] for line in open(sys.argv[2], encoding="utf-8").read().splitlines()[1:]]
print(json.dumps([tokenizer.encode_ids(text, 512) for text in texts]))
"""


def device_run(command, *args, env=None, timeout=DEVICE_TIMEOUT_S) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env.update(env or {})
    return subprocess.run([str(command), *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


@pytest.fixture(scope="session")
def device() -> Path:
    """The device folder, built or brought up to date with this checkout (idempotent, seconds when
    nothing changed)."""
    root = Path(os.environ.get(DEVICE_ENV) or REPO / "build" / "device-arm64")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device_arm64.py"), "--root", str(root)],
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if os.environ.get(DEVICE_ENV):
            pytest.fail(f"{DEVICE_ENV} is set but the device cannot be built: {reason}")
        pytest.skip(f"the emulated aarch64 device cannot be built here: {reason}")
    return root


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, minilm_dir) -> dict:
    """{(family, mode, compat or ""): path}: tiny random-init graphs of each family, converted here."""
    pytest.importorskip("tensorflow")
    from edge_slm.convert.api import convert

    out = tmp_path_factory.mktemp("arm64-artifacts")
    found = {}
    for family in FAMILIES:
        checkpoint = write_tiny_checkpoint(out / f"tiny-{family}", minilm_dir, family)
        config = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps(dict(config, initializer_range=INITIALIZER_RANGE[family])))
        for compat in (None, COMPAT):
            for result in convert(str(checkpoint), MODES, TINY_SEQ_LEN, out / family, random_init=True,
                                  validate=False, compat=compat):
                found[(family, result.quant, compat or "")] = Path(result.artifact_path)
    return found


@pytest.fixture(scope="session")
def dev_texts(sst2_dev, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arm64-texts") / "dev-head.tsv"
    path.write_text("\n".join(sst2_dev.read_text(encoding="utf-8").splitlines()[: TEXT_COUNT + 1]) + "\n",
                    encoding="utf-8")
    return path


def edge_run_argv(model: Path, texts: Path, delegate: str, backend: str, out: Path) -> list:
    return ["--model", str(model), "--input", str(texts), "--backend", backend, "--delegate", delegate,
            "-q", "-o", str(out)]


def logits_of(doc_path: Path) -> np.ndarray:
    return np.array([p["logits"] for p in json.loads(doc_path.read_text())["predictions"]], dtype=np.float64)


def run_jobs(python, jobs: list, work: Path, name: str) -> subprocess.Popen:
    """Start one process of `python` running edge-run's main(argv) for each argv in `jobs`."""
    job_file = work / f"{name}-jobs.json"
    job_file.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([str(python), "-P", "-c", DRIVER, str(job_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen, count: int) -> None:
    try:
        out, err = process.communicate(timeout=DEVICE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == [0] * count, err[-3000:]


def compare(device_python, keys: list, artifacts: dict, texts: Path, backend: str, work: Path,
            skip=frozenset()) -> dict:
    """edge-run on x86 (ai-edge-litert) and on the device (`backend`), one process each, running at
    once; per artifact and delegate but the (mode, delegate) pairs in `skip`:
    {name: {max_abs_logit_delta, label_agreement, x86_positive_share, texts}}."""
    runs = [(n, key, delegate) for n, key in enumerate(keys) for delegate in DELEGATES if (key[1], delegate) not in skip]
    jobs = {side: [] for side in ("x86", "arm64")}
    for n, key, delegate in runs:
        for side, side_backend in (("x86", "litert"), ("arm64", backend)):
            jobs[side].append(edge_run_argv(artifacts[key], texts, delegate, side_backend,
                                            work / f"{n}-{delegate}-{side}.json"))
    device = run_jobs(device_python, jobs["arm64"], work, "arm64")
    finish(run_jobs(sys.executable, jobs["x86"], work, "x86"), len(jobs["x86"]))
    finish(device, len(jobs["arm64"]))
    figures = {}
    for n, (family, mode, compat), delegate in runs:
        x86, arm = (logits_of(work / f"{n}-{delegate}-{side}.json") for side in ("x86", "arm64"))
        assert x86.shape == arm.shape == (TEXT_COUNT, 2)
        figures[f"{family}/{mode}{'/compat' if compat else ''}/{delegate}"] = {
            "max_abs_logit_delta": float(np.abs(x86 - arm).max()),
            "label_agreement": float((x86.argmax(1) == arm.argmax(1)).mean()),
            "x86_positive_share": float((x86.argmax(1) == 1).mean()), "texts": len(x86)}
    return figures


@pytest.fixture(scope="session")
def litert_figures(device, artifacts, dev_texts, tmp_path_factory) -> dict:
    """x86 vs the device, ai-edge-litert, every family and mode (the compat ones are the other device's)."""
    keys = sorted(k for k in artifacts if not k[2])
    figures = compare(device / "bin" / "python3", keys, artifacts, dev_texts, "litert",
                      tmp_path_factory.mktemp("arm64-litert"))
    (device / "agreement-litert.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


@pytest.fixture(scope="session")
def tflite_runtime_figures(device, artifacts, dev_texts, tmp_path_factory) -> dict:
    """x86 ai-edge-litert vs the tflite-runtime device, on the --compat artifacts. (x86 tflite-runtime
    2.14 is no reference: its int8 reference kernels gave other labels than ai-edge-litert on x86 and
    tflite-runtime on ARM, e.g. 81 % vs ~20 % positive for the tiny MobileBERT.)"""
    keys = sorted(k for k in artifacts if k[2])
    figures = compare(device / "tflite-runtime" / "bin" / "python3", keys, artifacts,
                      dev_texts, "tflite-runtime", tmp_path_factory.mktemp("arm64-tflite-runtime"),
                      skip=TFLITE_RUNTIME_CRASHES_UNDER_QEMU)
    (device / "agreement-tflite-runtime.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


# ---- the install ---------------------------------------------------------------------------------
def test_the_device_install_is_the_wheel_without_the_host_stack(device, artifacts):
    python = device / "bin" / "python3"
    proc = device_run(python, "-c", "import json, platform, importlib.util, edge_slm.runtime as r; "
                      f"print(json.dumps([platform.machine(), r.__file__, "
                      f"[m for m in {list(HOST_STACK)!r} if importlib.util.find_spec(m)]]))")
    assert proc.returncode == 0, proc.stderr
    machine, runtime_file, host_stack_installed = json.loads(proc.stdout)
    assert machine == "aarch64"
    assert Path(runtime_file).is_relative_to(device / "site")  # the installed wheel, not this source tree
    assert host_stack_installed == []
    # and edge-run's predict + bench path imports none of it (the x86 check, on the device)
    proc, probe = host_stack_probe(python, "--model", artifacts[("bert", "dynamic", "")], "--text", "fine",
                                   "--bench", "--runs", "2", "--warmup", "1", "-q")
    assert probe["code"] == 0, proc.stderr
    assert probe["host_modules"] == []


# ---- the answers ---------------------------------------------------------------------------------
def test_the_labels_compared_are_not_all_one_class(litert_figures):
    """Guard: a graph giving every text one label would make the label checks below unfailable."""
    for name, f in litert_figures.items():
        if "/fp32/" in name:
            assert MIN_CLASS_SHARE <= f["x86_positive_share"] <= 1 - MIN_CLASS_SHARE, (name, f)


def test_float_graphs_give_x86_logits_on_arm(litert_figures):
    assert len(litert_figures) == len(FAMILIES) * len(MODES) * len(DELEGATES)
    for name, f in litert_figures.items():
        if "/fp32/" in name or "/fp16/" in name:
            assert f["max_abs_logit_delta"] <= EXACT, (name, f)


def test_reference_kernels_give_x86_logits_on_arm_in_every_mode(litert_figures):
    for name, f in litert_figures.items():
        if name.endswith("/reference"):
            assert f["max_abs_logit_delta"] <= EXACT, (name, f)


def test_xnnpack_gives_x86_labels_on_arm(litert_figures):
    for name, f in litert_figures.items():
        assert f["label_agreement"] >= MIN_LABEL_AGREEMENT, (name, f)


def test_the_tflite_runtime_device_runs_the_compat_artifacts(tflite_runtime_figures):
    """Every compat artifact runs on tflite-runtime 2.14 on ARM; the float and dynamic ones give x86's
    labels. Its logits are another runtime's (up to ~0.2 apart for dynamic int8, ~1e-4 for fp32):
    recorded, not held to 1e-4. Full int8 runs only on its reference kernels here, and those disagree
    with ai-edge-litert's (50-75 % of labels; x86 tflite-runtime 2.14 disagrees with both): recorded,
    not checked."""
    expected = len(FAMILIES) * (len(MODES) * len(DELEGATES) - len(TFLITE_RUNTIME_CRASHES_UNDER_QEMU))
    assert len(tflite_runtime_figures) == expected
    for name, f in tflite_runtime_figures.items():
        if "/int8/" not in name:
            assert f["label_agreement"] >= MIN_LABEL_AGREEMENT, (name, f)


def test_token_ids_on_arm_equal_x86_on_all_of_sst2_dev(device, artifacts, sst2_dev):
    args = ("-P", "-c", TOKENIZE, artifacts[("bert", "fp32", "")], sst2_dev)
    proc = device_run(device / "bin" / "python3", *args)
    assert proc.returncode == 0, proc.stderr
    x86 = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300)
    device_ids, x86_ids = json.loads(proc.stdout), json.loads(x86.stdout)
    assert len(device_ids) == 872 and device_ids == x86_ids


# ---- what ran, and the labels of emulated figures ------------------------------------------------
def test_bench_says_the_cpu_was_emulated_and_labels_its_timings(device, artifacts, tmp_path):
    out = tmp_path / "bench.json"
    proc = device_run(device / "bin" / "edge-run", "--model", artifacts[("bert", "dynamic", "")], "--bench",
                      "--runs", "3", "--warmup", "1", "-o", out, env={"EDGE_SLM_DEVICE_CPU": "cortex-a76"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    host = doc["host"]
    assert host["machine"] == "aarch64" and host["emulated"] is True
    emulator = host["emulator"]
    assert emulator["name"] == "qemu-aarch64" and emulator["cpu"] == "cortex-a76"
    # the wrapper's declaration and QEMU's own trace in /proc/self/status, independently
    assert [e.split("=")[0].split(" ")[0] for e in emulator["evidence"]] == ["EDGE_SLM_EMULATOR", "/proc/self/status"]
    assert doc["benchmark"]["emulated"] is True and doc["backend"]["delegate"] == "xnnpack"
    text = proc.stdout
    assert "EMULATED by qemu-aarch64" in text and "cortex-a76" in text
    for prefix in ("init ", "latency ", "throughput "):
        line = next(line for line in text.splitlines() if line.startswith(prefix))
        assert "(emulated)" in line, line

    # edge-bench's report of these figures says so too
    from edge_slm.bench.report import write_report

    results = tmp_path / "study" / "results.jsonl"
    results.parent.mkdir()
    results.write_text(json.dumps(make_row("tiny-bert", host=host)) + "\n")
    report = write_report(results, tmp_path / "study").markdown.read_text()
    assert "**Emulated CPU** (qemu-aarch64" in report and "cortex-a76" in report
    assert "(emulated CPU)" in report.split("## Results", 1)[1]


def test_device_reads_the_emulated_meter_served_by_the_host(device, artifacts, tmp_path):
    meter = subprocess.Popen([sys.executable, "-m", "edge_slm.power.cli", "emulate", "--protocol", "um25c",
                              "--trace", "steps:0=2.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = meter.stdout.readline().strip().removeprefix("port: ")
        out = tmp_path / "energy.json"
        proc = device_run(device / "bin" / "edge-run", "--model", artifacts[("bert", "dynamic", "")], "--bench",
                          "--min-seconds", "2", "--warmup", "1", "--meter", "um25c", "--port", port,
                          "--baseline-seconds", "1", "-q", "-o", out)
    finally:
        meter.terminate()
        meter.communicate(timeout=30)
    assert proc.returncode == 0, proc.stderr
    energy = json.loads(out.read_text())["energy"]
    assert energy["meter"] == "um25c" and energy["emulated"] is True
    assert energy["samples_used"] > 0 and energy["inferences"] > 0



def test_a_machine_without_apt_gets_one_line_from_the_builder(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "git").symlink_to("/usr/bin/git")  # everything the builder runs, but apt-get and dpkg-deb
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device_arm64.py"), "--root", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PATH=str(tools)))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == ("device-arm64: error: apt-get and dpkg-deb are needed "
                                   "(hint: run on a Debian 12 machine)")
