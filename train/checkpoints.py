"""Crash-safe checkpoints: each written into a temporary folder and renamed into place, then its
weights hard-linked over DIR/tf_model.h5 with one rename, so DIR is loadable at every moment."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from edge_slm.common.files import atomic_write_text

from .settings import CHECKPOINT_PREFIX, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE


def remove_stale_temporaries(out: Path) -> None:
    """What a killed run (SIGKILL) can leave behind: half-written checkpoints, a staged weights link."""
    for path in out.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    (out / f".{WEIGHTS_FILE}.publishing").unlink(missing_ok=True)


def last_checkpoint(out_dir) -> Optional[Path]:
    """The newest complete checkpoint folder in out_dir (complete = renamed into place), or None."""
    found = []
    for path in Path(out_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def write_checkpoint(out: Path, step: int, model, tokenizer_dir: Path, optimizer_state: list, state: dict) -> Path:
    """checkpoint-N written in a temporary folder and renamed; then its weights replace out/'s."""
    final = out / f"{CHECKPOINT_PREFIX}{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=out))
    try:
        model.save_pretrained(str(tmp))  # config.json + tf_model.h5
        for item in tokenizer_dir.iterdir():
            shutil.copyfile(item, tmp / item.name)
        np.savez(tmp / OPTIMIZER_FILE, *optimizer_state)
        (tmp / STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
        fsync_folder(tmp)
        if final.exists():  # only after a crash between this rename and the old folder's removal
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_checkpoint(final, out)
    for old in out.glob(f"{CHECKPOINT_PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def publish_checkpoint(checkpoint: Path, out: Path) -> None:
    """Make out/ the checkpoint's model. Config and tokenizer files are the same at every checkpoint of a
    run, so out/ is consistent at every moment; the weights change with one rename."""
    for item in checkpoint.iterdir():
        if item.name not in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE):
            atomic_write_text(out / item.name, item.read_text(encoding="utf-8"))
    staged = out / f".{WEIGHTS_FILE}.publishing"
    staged.unlink(missing_ok=True)
    try:
        os.link(checkpoint / WEIGHTS_FILE, staged)  # no second copy of the weights on disk
    except OSError:
        shutil.copyfile(checkpoint / WEIGHTS_FILE, staged)
    os.replace(staged, out / WEIGHTS_FILE)


def fsync_folder(folder: Path) -> None:
    """Data on disk before the rename that publishes it (a power cut must not leave an empty file)."""
    for item in folder.iterdir():
        with open(item, "rb") as f:
            os.fsync(f.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
