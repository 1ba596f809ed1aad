"""Text datasets for prediction, evaluation, calibration and training.

One reader for every input the tools take: plain lines, TSV, CSV or JSONL, from a file or stdin,
with a text column and an optional label column (auto-detected, overridable). A bad row is an
EdgeError naming file:line, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import require_file
from .artifact import sha256_hex

FORMATS = ("plain", "tsv", "csv", "jsonl")
MAX_INPUT_BYTES = 256 << 20  # SST-2's whole training set is 4 MB
TEXT_COLUMN_NAMES = ("text", "sentence", "sentence1", "review", "content", "document", "query")
LABEL_COLUMN_NAMES = ("label", "labels", "target", "class", "y", "sentiment")
_EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "plain"}

Column = Union[str, int, None]


@dataclass
class Dataset:
    source: str
    texts: list = field(default_factory=list)
    labels: Optional[list] = None  # raw label strings, or None when the input has no label column
    line_numbers: list = field(default_factory=list)
    format: str = "plain"

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> Optional[list]:
        """Distinct labels: numerically sorted when all are ints, else sorted as strings."""
        if self.labels is None:
            return None
        distinct = set(self.labels)
        if all(_is_int(x) for x in distinct):
            return sorted(distinct, key=int)
        return sorted(distinct)

    def where(self, index: int) -> str:
        return f"{self.source}:{self.line_numbers[index]}"


def read_dataset(path, text_column: Column = None, label_column: Column = None,
                 fmt: Optional[str] = None, require_labels: bool = False, flag: str = "--input") -> Dataset:
    """Read `path` ('-' = stdin). Columns are names or 0-based indices; None = auto-detect. `flag` is
    the option of the command that was run, for the hints."""
    source = "<stdin>" if str(path) == "-" else str(path)
    raw = _read_bytes(path, source, flag)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise EdgeError(f"{source}:{line} is not UTF-8 text", "convert the file to UTF-8 (e.g. iconv -t utf-8)") from None
    fmt = fmt or _detect_format(source, text)
    if fmt not in FORMATS:
        raise EdgeError(f"unknown input format {fmt!r}", f"one of {', '.join(FORMATS)}")
    reader = {"plain": _read_plain, "tsv": _read_delimited, "csv": _read_delimited, "jsonl": _read_jsonl}[fmt]
    dataset = reader(source, text, fmt, text_column, label_column)
    if not dataset.texts:
        raise EdgeError(f"{source} holds no text", "give one text per line, or rows with a text column")
    if require_labels and dataset.labels is None:
        raise EdgeError(f"{source} has no label column", "add a 'label' column or pass --label-column")
    return dataset


def _read_bytes(path, source: str, flag: str) -> bytes:
    """The whole input, refused past MAX_INPUT_BYTES: a stream without end (a device, `yes |`) must
    not grow until the kernel kills the process."""
    if source == "<stdin>":
        raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        p = require_file(path, "input file", flag, "pass a text, TSV, CSV or JSONL file", pipes_ok=True)
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_INPUT_BYTES + 1)
        except OSError as e:
            raise EdgeError(f"cannot read {p}: {e.strerror or e}", "check the file's permissions") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise EdgeError(f"{source} is larger than {MAX_INPUT_BYTES >> 20} MiB of text",
                        "split it into smaller files")
    return raw


def _detect_format(source: str, text: str) -> str:
    fmt = _EXTENSIONS.get(Path(source).suffix.lower())
    if fmt:
        return fmt
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    if "\t" in first:
        return "tsv"
    return "plain"


def _read_plain(source, text, fmt, text_column, label_column) -> Dataset:
    if label_column is not None:
        raise EdgeError(f"{source} is plain text: it has no label column", "use TSV, CSV or JSONL for labels")
    ds = Dataset(source=source, format=fmt)
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():  # blank lines separate nothing in plain input
            ds.texts.append(line)
            ds.line_numbers.append(number)
    return ds


def _read_delimited(source, text, fmt, text_column, label_column) -> Dataset:
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV (GLUE style) never quotes: a stray '"' is part of the text.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    csv.field_size_limit(MAX_INPUT_BYTES)  # a long text is a long text (128 KB by default), as in plain input
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    ds = Dataset(source=source, format=fmt)
    text_index = label_index = None
    width = None
    try:
        for row in rows:
            number = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            if width is None:
                width = len(row)
                text_index, label_index, is_header = _choose_columns(source, row, text_column, label_column)
                if is_header:
                    continue
            if len(row) != width:
                raise EdgeError(f"{source}:{number} has {len(row)} columns, expected {width}",
                                f"fix that row (is there a stray {'tab' if fmt == 'tsv' else 'comma or quote'}?)")
            _append(ds, source, number, row[text_index], None if label_index is None else row[label_index])
    except csv.Error as e:
        raise EdgeError(f"{source}:{rows.line_num} is not valid {fmt.upper()}: {e}", "fix the quoting of that row") from None
    return ds


def _choose_columns(source, first_row, text_column, label_column):
    """Return (text index, label index or None, whether the first row is a header)."""
    names = [cell.strip().lower() for cell in first_row]
    is_header = any(n in TEXT_COLUMN_NAMES or n in LABEL_COLUMN_NAMES for n in names) or (
        any(isinstance(c, str) and c.strip().lower() in names for c in (text_column, label_column)))

    def resolve(column, candidates, role):
        if column is None:
            if is_header:
                return next((names.index(c) for c in candidates if c in names), None)
            return None
        if isinstance(column, int) or str(column).isdigit():
            index = int(column)
            if index >= len(first_row):
                raise EdgeError(f"{source}: {role} column {index} does not exist (rows have {len(first_row)})",
                                "columns are numbered from 0")
            return index
        if not is_header or column.strip().lower() not in names:
            raise EdgeError(f"{source} has no {role} column named {column!r}",
                            f"header columns are: {', '.join(first_row) if is_header else '(no header)'}")
        return names.index(column.strip().lower())

    text_index = resolve(text_column, TEXT_COLUMN_NAMES, "text")
    label_index = resolve(label_column, LABEL_COLUMN_NAMES, "label")
    if text_index is None:
        if is_header:
            raise EdgeError(f"{source} has no text column (header: {', '.join(first_row)})",
                            "name it 'text' or pass --text-column")
        # Headerless: text first, and a last column is the label (the GLUE layout).
        text_index = 0
        if label_column is None and len(first_row) >= 2:
            label_index = len(first_row) - 1
    return text_index, label_index, is_header


def _read_jsonl(source, text, fmt, text_column, label_column) -> Dataset:
    ds = Dataset(source=source, format=fmt)
    text_key = label_key = None
    has_labels = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise EdgeError(f"{source}:{number} is not valid JSON ({e.msg})", "one JSON object per line") from None
        except RecursionError:
            raise EdgeError(f"{source}:{number} is nested too deeply", "one flat JSON object per line") from None
        if not isinstance(record, dict):
            raise EdgeError(f"{source}:{number} is not a JSON object", "one JSON object per line")
        if text_key is None:
            text_key = _json_key(source, number, record, text_column, TEXT_COLUMN_NAMES, "text")
            label_key = (_json_key(source, number, record, label_column, LABEL_COLUMN_NAMES, "label")
                         if label_column is not None or any(k in record for k in LABEL_COLUMN_NAMES) else None)
            has_labels = label_key is not None
        if text_key not in record:
            raise EdgeError(f"{source}:{number} has no {text_key!r} field", "every line needs the text field")
        label = None
        if has_labels:
            if label_key not in record:
                raise EdgeError(f"{source}:{number} has no {label_key!r} field", "label every line or none")
            label = record[label_key]
            if isinstance(label, bool) or not isinstance(label, (int, str)):
                raise EdgeError(f"{source}:{number}: label {label!r} is neither an int nor a string",
                                "labels must be class ids (0, 1, …) or names ('positive', …)")
            label = str(label)
        value = record[text_key]
        if not isinstance(value, str):
            raise EdgeError(f"{source}:{number}: {text_key!r} is not a string", "the text field must be a string")
        _append(ds, source, number, value, label)
    return ds


def _json_key(source, number, record, column, candidates, role):
    if column is not None:
        if str(column) not in record:
            raise EdgeError(f"{source}:{number} has no {role} field {column!r}",
                            f"fields are: {', '.join(map(str, record))}")
        return str(column)
    key = next((k for k in candidates if k in record), None)
    if key is None:
        raise EdgeError(f"{source}:{number} has no {role} field", f"name it '{candidates[0]}' or pass --{role}-column")
    return key


def _append(ds: Dataset, source, number, text, label) -> None:
    if not text.strip():
        raise EdgeError(f"{source}:{number} has an empty text", "remove the row or give it text")
    if label is not None:
        label = label.strip()
        if not label:
            raise EdgeError(f"{source}:{number} has an empty label", "label every row, or drop the label column")
        if ds.labels is None:
            if ds.texts:  # an earlier row had no label
                raise EdgeError(f"{source}:{number}: some rows are labelled and some not", "label every row or none")
            ds.labels = []
        ds.labels.append(label)
    ds.texts.append(text)
    ds.line_numbers.append(number)


def _is_int(value: str) -> bool:
    try:
        int(value)
        return True
    except ValueError:
        return False


def label_ids(dataset: Dataset, label_names: list) -> list:
    """Map the dataset's raw labels to indices into `label_names` (the model's labels).

    A label matches a name (case-insensitively) or, when it is an int, is an index into the names.
    """
    if dataset.labels is None:
        raise EdgeError(f"{dataset.source} has no labels", "add a label column to evaluate accuracy")
    by_name = {str(name).lower(): i for i, name in enumerate(label_names)}
    ids = []
    for i, label in enumerate(dataset.labels):
        index = by_name.get(label.lower())
        if index is None and _is_int(label) and 0 <= int(label) < len(label_names):
            index = int(label)
        if index is None:
            raise EdgeError(f"{dataset.where(i)}: label {label!r} is not one of the model's labels "
                            f"{list(label_names)}", "use the model's label names or their indices")
        ids.append(index)
    return ids


# ---- which texts a model was calibrated on -------------------------------------------------------
# An int8 artifact records short hashes of its calibration texts (not the texts: they may be private),
# so that an evaluation on data that overlaps them can say so.
FINGERPRINT_HEX = 16


def text_fingerprint(text: str) -> str:
    """A hash of the text with case and whitespace normalized: "A  film." and "a film." match."""
    return sha256_hex(" ".join(text.lower().split()).encode("utf-8"))[:FINGERPRINT_HEX]


def overlapping_texts(fingerprints, texts) -> int:
    """How many of `texts` have one of these fingerprints."""
    known = set(fingerprints or ())
    return sum(text_fingerprint(t) in known for t in texts) if known else 0


def calibrated_on(metadata: Optional[dict], texts) -> int:
    """How many of `texts` the artifact was calibrated on (0 when it records no calibration)."""
    return overlapping_texts(((metadata or {}).get("calibration") or {}).get("fingerprints"), texts)
