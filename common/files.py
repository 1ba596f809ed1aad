"""Writing results safely: atomic file writes (temp file, fsync, rename), output folders proven
writable, JSON documents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import EdgeError


def require_file(path, what: str, flag: str, directory_hint: str, pipes_ok: bool = False) -> Path:
    """`path` as a Path if it is an existing regular file (or, with `pipes_ok`, a pipe such as
    `<(zcat texts.gz)`: it streams like stdin); else the one-line error naming `flag`."""
    if not str(path):
        raise EdgeError(f"{flag} is empty", f"pass the {what}'s path to {flag}")
    path = Path(path)
    try:
        if not path.exists():
            raise EdgeError(f"{what} not found: {path}", f"check the path passed to {flag}")
        if path.is_dir():
            raise EdgeError(f"{path} is a directory, not a {what}", directory_hint)
        if not (path.is_file() or (pipes_ok and path.is_fifo())):  # a device reads without end
            raise EdgeError(f"{path} is not a regular file", f"pass a regular file to {flag}")
    except OSError as e:  # e.g. a name longer than the file system allows
        raise EdgeError(f"cannot use {flag} {path}: {e.strerror or e}", f"check the path passed to {flag}") from None
    return path


def check_output_file(path, flag: str) -> Path:
    """Refuse, before any work, an output path that could not take the file: empty, a directory,
    a missing folder, or something other than a regular file (a device or a FIFO)."""
    if not str(path):
        raise EdgeError(f"{flag} is empty", f"pass a file path to {flag}, e.g. {flag} results.json")
    path = Path(path)
    try:
        if path.is_dir():
            raise EdgeError(f"{flag} {path} is a directory", f"pass a file path to {flag}")
        if not path.parent.is_dir():
            raise EdgeError(f"{flag}: directory {path.parent} does not exist", "create it first")
        target = Path(os.path.realpath(path))
        if target.exists() and not target.is_file():
            raise EdgeError(f"{flag} {path} is not a regular file",
                            f"pass a file path to {flag}, not a device or pipe")
    except OSError as e:  # e.g. a name longer than the file system allows
        raise EdgeError(f"cannot use {flag} {path}: {e.strerror or e}", f"pass another path to {flag}") from None
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    import tempfile  # here, not at the top: it brings shutil, bz2 and lzma, ~0.8 MB of edge-run's RSS

    path = Path(os.path.realpath(path))  # through a symlink: replace its target, keep the link
    if path.exists() and not path.is_file():
        # renaming over a device node or FIFO would destroy it (as root: /dev/null)
        raise EdgeError(f"{path} is not a regular file", "write results to a file path, not a device or pipe")
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
    path = check_output_file(path, "--output")
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
