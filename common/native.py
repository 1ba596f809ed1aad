"""Native libraries' own stderr lines (TensorFlow's C++ logging, TFLite's delegate notice),
kept off the terminal: edge-slm's output is its own one-line messages."""

from __future__ import annotations

import contextlib
import os
import warnings


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
    import tempfile  # deferred: it brings shutil, bz2 and lzma (see files.atomic_write_bytes)

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
