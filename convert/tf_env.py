"""Import TensorFlow the way the converter needs it, and keep its native chatter off the terminal.

transformers' TF classes need Keras 2 (tf-keras), which TF only uses when TF_USE_LEGACY_KERAS is
set before TensorFlow is first imported; so every converter module gets TF from `tensorflow()`.
"""

from __future__ import annotations

import os
from typing import Optional

from edge_slm.common.native import captured_native_stderr


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


def first_error_line(lines: list, fallback: str) -> str:
    """The most telling line of a converter log: the first that says 'error'."""
    for line in lines:
        if "error" in line.lower():
            return " ".join(line.split())[:300]
    return fallback
