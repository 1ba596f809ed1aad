"""Import TensorFlow the way the converter needs it, and keep its native chatter off the terminal.

transformers' TF classes need Keras 2 (tf-keras), which TF only uses when TF_USE_LEGACY_KERAS is
set before TensorFlow is first imported; so every converter module gets TF from `tensorflow()`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Optional


def tensorflow(threads: Optional[int] = None):
    """TensorFlow, imported with its native start-up lines (absl, oneDNN, CUDA stubs, cuInit's "failed
    call ... (303)" on a machine without a GPU) kept off the terminal; EDGE_SLM_DEBUG=1 shows them.
    `threads` sizes both of TF's thread pools; TF fixes them at its first op, so only the first call
    of a process can set them."""
    if _imported:
        return _imported[0]
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ INFO/WARNING lines
    with captured_native_stderr():
        import tensorflow as tf  # deferred: TensorFlow loads only when converting

        if not os.environ.get("EDGE_SLM_DEBUG"):
            import absl.logging  # deferred: comes with TensorFlow

            tf.get_logger().setLevel("ERROR")
            # e.g. "providing without the trackable_obj argument is deprecated": that path is deliberate
            absl.logging.set_verbosity(absl.logging.ERROR)
            import transformers  # deferred: transformers loads TensorFlow

            transformers.logging.set_verbosity_error()
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.constant(0)  # the device probe (cuInit) happens at the first op: inside the capture
    _imported.append(tf)
    return tf


_imported: list = []  # the module, once imported and initialised


@contextlib.contextmanager
def captured_native_stderr():
    """Route file descriptor 2 (where TF's C++ code prints) to a buffer for the block.

    Yields a list that receives the captured lines when the block ends, so that a failure can
    quote the converter's own error instead of dumping its whole log. EDGE_SLM_DEBUG=1 disables.
    """
    lines: list = []
    if os.environ.get("EDGE_SLM_DEBUG"):
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def first_error_line(lines: list, fallback: str) -> str:
    """The most telling line of a converter log: the first that says 'error'."""
    for line in lines:
        if "error" in line.lower():
            return " ".join(line.split())[:300]
    return fallback
