"""Writing results safely: atomic file writes (temp file, fsync, rename), output folders proven
writable, JSON documents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import EdgeError


def require_file(path, what: str, flag: str, directory_hint: str) -> Path:
    """`path` as a Path if it is an existing file; else the one-line error naming the command's `flag`."""
    path = Path(path)
    if not path.exists():
        raise EdgeError(f"{what} not found: {path}", f"check the path passed to {flag}")
    if path.is_dir():
        raise EdgeError(f"{path} is a directory, not a {what}", directory_hint)
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    import tempfile  # here, not at the top: it brings shutil, bz2 and lzma, ~0.8 MB of edge-run's RSS

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, document: dict) -> None:
    """Atomic: an interrupted write never leaves a half-written results file."""
    path = Path(path)
    if path.is_dir():
        raise EdgeError(f"--output {path} is a directory", "pass a file path such as results.json")
    if not path.parent.exists():
        raise EdgeError(f"--output directory {path.parent} does not exist", "create it first")
    try:
        atomic_write_text(path, json.dumps(document, indent=2, default=_json_default) + "\n")
    except OSError as e:
        raise EdgeError(f"cannot write {path}: {e.strerror or e}", "check the directory's permissions") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def prepare_out_dir(out_dir) -> Path:
    """Create an output directory and prove it takes a file (os.access says yes to root even on a
    read-only mount)."""
    import tempfile  # deferred, as in atomic_write_bytes

    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise EdgeError(f"output directory {path} is a file", "pass a directory to -o")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise EdgeError(f"output directory {path} is not writable ({e.strerror or e})",
                        "pass a directory you can write to with -o") from None
    return path
