"""The edge-slm artifact: a TFLite flatbuffer with its associated files appended as a zip.

This follows TFLite's associated-files convention: the interpreter reads the flatbuffer and
ignores trailing bytes, while `unzip -l model.tflite` lists the files. Layout (format 1):

    <flatbuffer graph bytes> <zip: metadata.json, vocab.txt, labels.txt>

metadata.json records the SHA-256 of the graph bytes; the reader refuses a file whose graph does
not match, because a damaged flatbuffer often still loads and silently gives wrong numbers.
Writer (convert, host) and reader (runtime, device) both live here; it needs only the stdlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import EdgeError

FORMAT = "edge-slm-artifact"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VOCAB_FILE = "vocab.txt"
LABELS_FILE = "labels.txt"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite

INPUT_ROLES = ("input_ids", "attention_mask", "token_type_ids")
QUANT_MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
# Keys a format-1 metadata.json must have; the rest is informative.
REQUIRED_KEYS = ("format", "format_version", "graph", "tokenizer", "labels", "inputs", "outputs",
                 "quantization", "random_weights", "source", "tools")


@dataclass
class Artifact:
    """What the reader hands to the runtime. `metadata` is None for a plain .tflite."""

    path: Path
    graph: bytes
    file_size: int
    metadata: Optional[dict] = None
    vocab: list = field(default_factory=list)
    labels: list = field(default_factory=list)

    @property
    def has_metadata(self) -> bool:
        return self.metadata is not None


def graph_sha256(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


def build_metadata(*, graph: bytes, tokenizer: dict, labels: list, inputs: list, outputs: list,
                   quantization: str, random_weights: bool, source: str,
                   extra: Optional[dict] = None) -> dict:
    """The metadata.json for `graph`. `inputs` is [{"name": tensor name, "role": ...}, ...]."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "graph": {"sha256": graph_sha256(graph), "bytes": len(graph)},
        "tokenizer": dict(tokenizer),
        "labels": list(labels),
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "quantization": quantization,
        "random_weights": bool(random_weights),
        "source": source,
    }
    meta.update(extra or {})
    check_metadata(meta)
    return meta


def check_metadata(meta: Any, where: str = "metadata.json") -> dict:
    """Raise EdgeError unless `meta` is a usable format-1 metadata dict."""
    if not isinstance(meta, dict):
        raise EdgeError(f"{where} is not a JSON object", "re-create the artifact with edge-convert")
    if meta.get("format") != FORMAT:
        raise EdgeError(f"{where} is not edge-slm metadata (format={meta.get('format')!r})",
                        "re-create the artifact with edge-convert")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EdgeError(f"{where} has format_version {version!r}; this edge-slm reads up to "
                        f"{FORMAT_VERSION}", "upgrade edge-slm on the device")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise EdgeError(f"{where} lacks {', '.join(missing)}", "re-create the artifact with edge-convert")
    roles = [i.get("role") for i in meta["inputs"]]
    unknown = [r for r in roles if r not in INPUT_ROLES]
    if unknown or "input_ids" not in roles:
        raise EdgeError(f"{where} has input roles {roles}; expected input_ids plus optional "
                        "attention_mask/token_type_ids", "re-create the artifact with edge-convert")
    if meta["quantization"] not in QUANT_MODES:
        raise EdgeError(f"{where} has unknown quantization {meta['quantization']!r}",
                        f"one of {', '.join(QUANT_MODES)}")
    tok = meta["tokenizer"]
    if not isinstance(tok, dict) or not isinstance(tok.get("max_seq_len"), int) or tok["max_seq_len"] <= 0:
        raise EdgeError(f"{where} has no positive tokenizer.max_seq_len",
                        "re-create the artifact with edge-convert")
    return meta


def write_artifact(path, graph: bytes, metadata: dict, vocab: list, labels: list) -> Path:
    """Write graph + associated files atomically: a killed writer leaves no partial file."""
    if graph[4:8] != TFLITE_IDENTIFIER:
        raise EdgeError("graph bytes are not a TFLite flatbuffer", "pass the converter's output")
    check_metadata(metadata)
    if metadata["graph"]["sha256"] != graph_sha256(graph):
        raise EdgeError("metadata graph.sha256 does not match the graph", "build metadata from this graph")
    zip_bytes = io.BytesIO()
    with zipfile.ZipFile(zip_bytes, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # metadata.json first: its local header marks where the zip starts (see _has_zip_trace).
        zf.writestr(METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        zf.writestr(VOCAB_FILE, "".join(f"{token}\n" for token in vocab))
        zf.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
    path = Path(path)
    atomic_write_bytes(path, graph + zip_bytes.getvalue())
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
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


def read_artifact(path, verify: bool = True) -> Artifact:
    """Read a .tflite (with or without edge-slm metadata). Every failure is an EdgeError."""
    path = Path(path)
    if not path.exists():
        raise EdgeError(f"model file not found: {path}", "check the path passed to --model")
    if path.is_dir():
        raise EdgeError(f"{path} is a directory, not a .tflite file", "pass the .tflite file inside it")
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
                what = "empty" if file_size == 0 else "not a TFLite model (no TFL3 identifier)"
                raise EdgeError(f"{path} is {what}", "pass a .tflite file made by edge-convert or TFLite's converter")
            f.seek(0)
            zf, graph_end = _open_appended_zip(f, path)
            if zf is None:
                f.seek(0)
                return Artifact(path=path, graph=f.read(), file_size=file_size)
            with zf:
                metadata, vocab, labels = _read_members(zf, path)
            f.seek(0)
            graph = f.read(graph_end)
    except PermissionError:
        raise EdgeError(f"no permission to read {path}", "check the file's permissions") from None
    except OSError as e:
        raise EdgeError(f"cannot read {path}: {e.strerror or e}", "check the file and the disk") from None

    expected = metadata["graph"]
    if verify and (len(graph) != expected.get("bytes") or graph_sha256(graph) != expected.get("sha256")):
        raise EdgeError(f"{path} is damaged: its graph does not match the SHA-256 recorded at conversion",
                        "copy the file to the device again (compare `sha256sum` on both ends)")
    return Artifact(path=path, graph=graph, file_size=file_size, metadata=metadata,
                    vocab=vocab, labels=labels)


def _open_appended_zip(f, path: Path):
    """Return (ZipFile, offset where the zip starts) or (None, None) for a plain .tflite."""
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        if _has_zip_trace(f):
            raise EdgeError(f"{path} is truncated or damaged: its metadata zip is unreadable",
                            "copy the file to the device again") from None
        return None, None
    infos = zf.infolist()
    if not any(i.filename == METADATA_FILE for i in infos):
        zf.close()
        raise EdgeError(f"{path} has appended files but no {METADATA_FILE}",
                        "it was not written by edge-convert; re-create it")
    # zipfile shifts header offsets by the bytes prepended to the zip, so these are file offsets.
    return zf, min(i.header_offset for i in infos)


def _has_zip_trace(f) -> bool:
    f.seek(0)
    data = f.read()
    name = METADATA_FILE.encode()
    start = data.find(b"PK\x03\x04")
    while start != -1:
        if data[start + 30:start + 30 + len(name)] == name:
            return True
        start = data.find(b"PK\x03\x04", start + 1)
    return False


def _read_members(zf: zipfile.ZipFile, path: Path):
    try:
        raw = zf.read(METADATA_FILE)
        metadata = json.loads(raw.decode("utf-8"))
        check_metadata(metadata, where=f"{path}:{METADATA_FILE}")
        vocab_name = metadata["tokenizer"].get("vocab_file", VOCAB_FILE)
        names = set(zf.namelist())
        vocab = zf.read(vocab_name).decode("utf-8").splitlines() if vocab_name in names else []
        labels = (zf.read(LABELS_FILE).decode("utf-8").splitlines() if LABELS_FILE in names
                  else [str(x) for x in metadata["labels"]])
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeError(f"{path} has a damaged metadata zip ({type(e).__name__})",
                        "copy the file to the device again") from None
    if not vocab:
        raise EdgeError(f"{path} carries no vocabulary", "re-create the artifact with edge-convert")
    if labels != [str(x) for x in metadata["labels"]]:
        raise EdgeError(f"{path}: labels.txt disagrees with metadata.json", "re-create the artifact")
    return metadata, vocab, labels
