"""DIR/results.jsonl: one row per finished run, appended and fsynced at once, so an interrupt keeps
the finished runs; a torn last line (a crash mid-write) is repaired on --resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_text

RESULTS_FILE = "results.jsonl"
DEVICES_FILE = "devices.json"  # edge-bench --device: each device's facts, phase times and error
ROW_SCHEMA = "edge-slm.study-run"
ROW_SCHEMA_VERSION = 1


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
        inside = path / RESULTS_FILE
        raise EdgeError(f"{path} is a directory", f"pass the results file inside it: {inside}"
                        if path.name != RESULTS_FILE else "remove it; edge-bench writes results.jsonl as a file")
    if not path.is_file():  # a FIFO would wait for a writer forever
        raise EdgeError(f"{path} is not a regular file", "pass the results.jsonl an edge-bench run wrote")
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
        except (ValueError, RecursionError):
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
