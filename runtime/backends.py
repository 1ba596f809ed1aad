"""Interpreter backends: ai-edge-litert, tflite-runtime, or TensorFlow's own tf.lite.

Each is one small spec (module to import, distribution that carries it, install hint); `auto`
takes the first that imports, preferring ai-edge-litert (the maintained runtime, and ~4x faster
than tflite-runtime 2.14 on the same graph here). Load failures that mean "this runtime is too
old for the graph" or "this runtime was built for another numpy" become one-line EdgeErrors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Optional

from edge_slm.common.errors import EXIT_RUNTIME_REFUSED, EdgeError
from edge_slm.common.native import captured_native_stderr


@dataclass(frozen=True)
class BackendSpec:
    name: str
    module: str          # module to import
    interpreter: str     # attribute path of the Interpreter class in it
    op_resolver: str     # attribute path of its OpResolverType enum (absent in some builds)
    distribution: str    # pip distribution whose version we report
    install_hint: str


BACKENDS = {
    spec.name: spec
    for spec in (
        BackendSpec("litert", "ai_edge_litert.interpreter", "Interpreter", "OpResolverType", "ai-edge-litert",
                    "pip install ai-edge-litert (or pip install 'edge-slm[device]')"),
        BackendSpec("tflite-runtime", "tflite_runtime.interpreter", "Interpreter", "OpResolverType", "tflite-runtime",
                    "pip install 'tflite-runtime==2.14.*' 'numpy<2' (or pip install 'edge-slm[tflite-runtime]')"),
        BackendSpec("tensorflow", "tensorflow", "lite.Interpreter", "lite.experimental.OpResolverType", "tensorflow",
                    "pip install tensorflow (host only; devices use ai-edge-litert)"),
    )
}
BACKEND_CHOICES = ("auto",) + tuple(BACKENDS)
AUTO_ORDER = ("litert", "tflite-runtime", "tensorflow")
# Which kernels run the graph, as the interpreter's OpResolverType (None: its default).
# xnnpack: the default, the XNNPACK delegate over the built-in kernels. none: the built-in optimized
# kernels alone. reference: the built-in reference kernels, plain C++ without CPU-specific paths.
# Measured x86 vs emulated Cortex-A72 (tests/device): XNNPACK's and the optimized kernels' int8
# arithmetic differs by CPU (full-int8 logits up to ~2 apart, a few labels flip); the reference
# kernels give identical int8 logits and float logits within 1e-5.
DELEGATES = {"xnnpack": None, "none": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}
DEFAULT_DELEGATE = "xnnpack"


@dataclass
class Backend:
    name: str
    version: str
    interpreter_class: type
    op_resolver_type: Optional[type] = None  # the backend's OpResolverType enum; None: it has none
    delegate: str = DEFAULT_DELEGATE

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "delegate": self.delegate}


def with_delegate(backend: Backend, delegate: str) -> Backend:
    """The backend set to open interpreters with `delegate` (one of DELEGATES)."""
    if delegate not in DELEGATES:
        raise EdgeError(f"unknown delegate {delegate!r}", f"one of {', '.join(DELEGATES)}")
    resolver = DELEGATES[delegate]
    if resolver and not hasattr(backend.op_resolver_type, resolver):
        raise EdgeError(f"backend {backend.name} {backend.version} cannot run with --delegate {delegate} "
                        f"(its interpreter has no OpResolverType.{resolver})",
                        "use --backend litert, or --delegate xnnpack", exit_code=EXIT_RUNTIME_REFUSED)
    return dataclasses.replace(backend, delegate=delegate)


def resolve_backend(name: str = "auto") -> Backend:
    """Import the named backend (or the first available for 'auto')."""
    if name == "auto":
        failures = []
        for candidate in AUTO_ORDER:
            try:
                return _import_backend(BACKENDS[candidate])
            except EdgeError as e:
                failures.append(f"{candidate}: {e.message}")
        raise EdgeError("no TFLite interpreter is installed (" + "; ".join(failures) + ")",
                        BACKENDS["litert"].install_hint)
    spec = BACKENDS.get(name)
    if spec is None:
        raise EdgeError(f"unknown backend {name!r}", f"one of {', '.join(BACKEND_CHOICES)}")
    return _import_backend(spec)


def _import_backend(spec: BackendSpec) -> Backend:
    # TensorFlow's C++ start-up lines (absl, oneDNN, CUDA stubs) would come before edge-run's own
    quiet = captured_native_stderr() if spec.name == "tensorflow" else contextlib.nullcontext()
    with quiet:
        return _load_backend(spec)


def _load_backend(spec: BackendSpec) -> Backend:
    try:
        interpreter_class = importlib.import_module(spec.module)
        for attribute in spec.interpreter.split("."):
            interpreter_class = getattr(interpreter_class, attribute)
    except ImportError as e:
        version = _installed_version(spec.distribution)
        if version is None:
            raise EdgeError(f"backend {spec.name} is not installed", spec.install_hint) from None
        raise _numpy_abi_error(spec, version, e) or EdgeError(
            f"backend {spec.name} {version} failed to import: {_first_line(e)}", spec.install_hint) from None
    except AttributeError as e:  # numpy 2 vs a numpy-1 build sometimes surfaces as this
        version = _installed_version(spec.distribution)
        raise _numpy_abi_error(spec, version, e) or EdgeError(
            f"backend {spec.name} {version} failed to import: {_first_line(e)}", spec.install_hint) from None
    top_module = importlib.import_module(spec.module.split(".")[0])
    version = getattr(top_module, "__version__", None) or _installed_version(spec.distribution)
    op_resolver_type = functools.reduce(lambda parent, name: getattr(parent, name, None), spec.op_resolver.split("."),
                                        importlib.import_module(spec.module))
    return Backend(spec.name, version or "unknown", interpreter_class, op_resolver_type)


def _numpy_abi_error(spec: BackendSpec, version: Optional[str], error: BaseException) -> Optional[EdgeError]:
    text = str(error)
    if "numpy" not in text.lower() and "_ARRAY_API" not in text:
        return None
    numpy_version = _installed_version("numpy") or "unknown"
    wanted = "numpy<2" if numpy_version.startswith("2") else "numpy>=2"
    return EdgeError(f"backend {spec.name} {version} was built against another numpy ABI than the "
                     f"installed numpy {numpy_version}",
                     f"install {wanted} in this environment, or use --backend litert")


def open_interpreter(backend: Backend, model_path, threads: Optional[int] = None):
    """Create and allocate an interpreter; translate the runtime's load errors into one line.

    The interpreter mmaps the file (trailing zip and all): the graph is never copied into Python.
    """
    kwargs = {"num_threads": threads} if threads else {}
    resolver = DELEGATES[backend.delegate]
    if resolver:
        kwargs["experimental_op_resolver_type"] = getattr(backend.op_resolver_type, resolver)
    try:
        with quiet_native_stderr():  # e.g. "INFO: Created TensorFlow Lite XNNPACK delegate"
            interpreter = backend.interpreter_class(model_path=str(model_path), **kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise _load_error(backend, e) from None
    return interpreter


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence file descriptor 2, where the runtimes' C++ code logs, for the block.

    Load errors still arrive as Python exceptions; the log would only reach the user's terminal.
    EDGE_SLM_DEBUG=1 keeps it.
    """
    if os.environ.get("EDGE_SLM_DEBUG"):
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_OP_VERSION = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)' version '(\d+)'")
_CUSTOM_OP = re.compile(r"Encountered unresolved custom op: ([A-Za-z0-9_]+)")


def _load_error(backend: Backend, error: BaseException) -> EdgeError:
    text = str(error)
    match = _OP_VERSION.search(text)
    if match:
        op, version = match.groups()
        return EdgeError(
            f"the graph needs {op} version {version}, which {backend.name} {backend.version} does not have",
            "pip install ai-edge-litert (newer runtime), or re-convert with "
            "edge-convert --compat tflite-runtime-2.14", exit_code=EXIT_RUNTIME_REFUSED)
    match = _CUSTOM_OP.search(text)
    if match:
        return EdgeError(f"the graph uses custom op {match.group(1)}, unknown to {backend.name} {backend.version}",
                         "re-convert without SELECT_TF_OPS / custom ops", exit_code=EXIT_RUNTIME_REFUSED)
    if "flatbuffer" in text.lower() or "model provided" in text.lower():
        return EdgeError(f"{backend.name} {backend.version} cannot parse the graph: {_first_line(error)}",
                         "the .tflite is damaged or not a TFLite model; copy or convert it again", exit_code=EXIT_RUNTIME_REFUSED)
    return EdgeError(f"{backend.name} {backend.version} failed to load the graph: {_first_line(error)}",
                     "try another --backend, or re-convert the model", exit_code=EXIT_RUNTIME_REFUSED)


def _installed_version(distribution: str) -> Optional[str]:
    import importlib.metadata  # only on error paths: it costs ~3 MB RSS

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
