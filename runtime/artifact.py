"""The edge-slm artifact: a TFLite flatbuffer with its associated files appended as a zip.

This follows TFLite's associated-files convention: the interpreter reads the flatbuffer and
ignores trailing bytes, while `unzip -l model.tflite` lists the files. Layout (format 1):

    <flatbuffer graph bytes> <zip: metadata.json, vocab.txt, labels.txt>

metadata.json records the SHA-256 of the graph bytes; the reader refuses a file whose graph does
not match, because a damaged flatbuffer often still loads and silently gives wrong numbers.
Writer (convert, host) and reader (runtime, device) both live here; it needs only the stdlib.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edge_slm.common.errors import EdgeError
from edge_slm.common.files import atomic_write_bytes, require_file

FORMAT = "edge-slm-artifact"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VOCAB_FILE = "vocab.txt"
LABELS_FILE = "labels.txt"
_CHUNK = 1 << 20
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
    graph_size: int  # the flatbuffer is bytes [0, graph_size) of the file; not held in memory
    file_size: int
    metadata: Optional[dict] = None
    vocab_text: str = ""  # vocab.txt as written: one token per line, "\n"-terminated
    labels: list = field(default_factory=list)

    @property
    def has_metadata(self) -> bool:
        return self.metadata is not None

    @property
    def vocab(self) -> list:
        return self.vocab_text.split("\n")[:-1] if self.vocab_text else []

    def read_graph(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read(self.graph_size)


try:  # CPython's builtin SHA-256: hashlib would map OpenSSL's libcrypto, +3.6 MB RSS on the device
    from _sha256 import sha256 as _sha256
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # Python >= 3.12
    except ImportError:
        from hashlib import sha256 as _sha256


def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data` as hex, without mapping OpenSSL (the runtime's one way to hash)."""
    return _sha256(data).hexdigest()


def _file_prefix_sha256(f, size: int) -> str:
    """SHA-256 of the first `size` bytes, streamed so the graph never sits in memory."""
    digest = _sha256()
    f.seek(0)
    remaining = size
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def build_metadata(*, graph: bytes, tokenizer: dict, labels: list, inputs: list, outputs: list,
                   quantization: str, random_weights: bool, source: str,
                   extra: Optional[dict] = None) -> dict:
    """The metadata.json for `graph`. `inputs` is [{"name": tensor name, "role": ...}, ...]."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "graph": {"sha256": sha256_hex(graph), "bytes": len(graph)},
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


def describe_model(meta: Optional[dict]) -> dict:
    """What a measured artifact is, from its metadata (a plain .tflite has none: unknown)."""
    if not meta:
        return {"name": None, "architecture": "unknown (plain .tflite: no edge-slm metadata)", "weights": "unknown",
                "quantization": None, "seq_len": None}
    model = meta.get("model") or {}
    shape = (f" {model['num_layers']}L-{model['hidden_size']}"
             if model.get("num_layers") and model.get("hidden_size") else "")
    return {"name": model.get("name"), "architecture": f"{model.get('architecture') or model.get('model_type')}{shape}",
            "weights": "random init" if meta["random_weights"] else "trained",
            "quantization": meta["quantization"], "seq_len": meta["tokenizer"]["max_seq_len"]}


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
    shapes = {"graph": dict, "tokenizer": dict, "labels": list, "inputs": list, "outputs": list}
    wrong = [k for k, kind in shapes.items() if not isinstance(meta[k], kind)]
    wrong += [] if isinstance(meta.get("sequence") or {}, dict) else ["sequence"]
    if wrong or not all(isinstance(i, dict) for i in meta["inputs"]):
        raise EdgeError(f"{where} is damaged: {', '.join(wrong) or 'inputs'} has the wrong type",
                        "re-create the artifact with edge-convert")
    roles = [i.get("role") for i in meta["inputs"]]
    unknown = [r for r in roles if r not in INPUT_ROLES]
    if unknown or "input_ids" not in roles:
        raise EdgeError(f"{where} has input roles {roles}; expected input_ids plus optional "
                        "attention_mask/token_type_ids", "re-create the artifact with edge-convert")
    if meta["quantization"] not in QUANT_MODES:
        raise EdgeError(f"{where} has unknown quantization {meta['quantization']!r}",
                        f"one of {', '.join(QUANT_MODES)}")
    tok = meta["tokenizer"]
    if type(tok.get("max_seq_len")) is not int or tok["max_seq_len"] < 2:  # [CLS] and [SEP] at least
        raise EdgeError(f"{where} has no tokenizer.max_seq_len of 2 or more",
                        "re-create the artifact with edge-convert")
    return meta


def write_artifact(path, graph: bytes, metadata: dict, vocab: list, labels: list) -> Path:
    """Write graph + associated files atomically: a killed writer leaves no partial file."""
    if graph[4:8] != TFLITE_IDENTIFIER:
        raise EdgeError("graph bytes are not a TFLite flatbuffer", "pass the converter's output")
    check_metadata(metadata)
    if metadata["graph"]["sha256"] != sha256_hex(graph):
        raise EdgeError("metadata graph.sha256 does not match the graph", "build metadata from this graph")
    import zipfile  # writer-only, like tempfile

    zip_bytes = io.BytesIO()
    with zipfile.ZipFile(zip_bytes, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # metadata.json first: its local header marks where the zip starts (see _has_zip_trace).
        zf.writestr(METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        zf.writestr(VOCAB_FILE, "".join(f"{token}\n" for token in vocab))
        zf.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
    path = Path(path)
    atomic_write_bytes(path, graph + zip_bytes.getvalue())
    return path


def read_artifact(path, verify: bool = True) -> Artifact:
    """Read a .tflite (with or without edge-slm metadata). Every failure is an EdgeError."""
    path = require_file(path, "model file", "--model", "pass the .tflite file inside it")
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
                what = "empty" if file_size == 0 else "not a TFLite model (no TFL3 identifier)"
                raise EdgeError(f"{path} is {what}", "pass a .tflite file made by edge-convert or TFLite's converter")
            found = _read_appended_zip(f, file_size, path)
            if found is None:
                if _has_zip_trace(f):
                    raise EdgeError(f"{path} is truncated or damaged: its metadata zip is unreadable",
                                    "copy the file to the device again")
                return Artifact(path=path, graph_size=file_size, file_size=file_size)
            members, graph_end = found
            metadata, vocab_text, labels = _parse_members(members, path)
            expected = metadata["graph"]
            if verify and (graph_end != expected.get("bytes")
                           or _file_prefix_sha256(f, graph_end) != expected.get("sha256")):
                raise EdgeError(f"{path} is damaged: its graph does not match the SHA-256 recorded at "
                                "conversion", "copy the file to the device again (compare `sha256sum` on both ends)")
    except PermissionError:
        raise EdgeError(f"no permission to read {path}", "check the file's permissions") from None
    except OSError as e:
        raise EdgeError(f"cannot read {path}: {e.strerror or e}", "check the file and the disk") from None
    return Artifact(path=path, graph_size=graph_end, file_size=file_size, metadata=metadata,
                    vocab_text=vocab_text, labels=labels)


# The device reads the zip with this small reader instead of zipfile, which would bring bz2,
# lzma, shutil and threading along (~1 MB resident). It reads what write_artifact writes: a
# zip without zip64, members stored or deflated.
_EOCD = struct.Struct("<4s4H2LH")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")


def _read_appended_zip(f, file_size: int, path: Path):
    """Return ({name: bytes}, offset where the zip starts), or None when there is no zip."""
    tail_size = min(file_size, _EOCD.size + 0xFFFF)
    f.seek(file_size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return None
    _, _, _, _, count, cd_size, cd_offset, comment_size = _EOCD.unpack_from(tail, at)
    if at + _EOCD.size + comment_size != len(tail):
        return None  # those bytes were graph data that happened to look like a zip end
    zip_start = file_size - tail_size + at - cd_size - cd_offset
    damaged = EdgeError(f"{path} has a damaged metadata zip", "copy the file to the device again")
    if zip_start < 8:
        raise damaged
    f.seek(zip_start + cd_offset)
    directory = f.read(cd_size)
    members = {}
    position = 0
    for _ in range(count):
        if position + _CENTRAL.size > len(directory):
            raise damaged
        fields = _CENTRAL.unpack_from(directory, position)
        if fields[0] != b"PK\x01\x02":
            raise damaged
        method, crc, compressed, size = fields[4], fields[7], fields[8], fields[9]
        name_size, extra_size, comment_size, local_offset = fields[10], fields[11], fields[12], fields[16]
        name = directory[position + _CENTRAL.size:position + _CENTRAL.size + name_size].decode("utf-8", "replace")
        position += _CENTRAL.size + name_size + extra_size + comment_size
        f.seek(zip_start + local_offset)
        local = f.read(_LOCAL.size)
        if len(local) < _LOCAL.size or local[:4] != b"PK\x03\x04":
            raise damaged
        local_fields = _LOCAL.unpack(local)
        f.seek(local_fields[9] + local_fields[10], os.SEEK_CUR)
        data = f.read(compressed)
        try:
            data = zlib.decompress(data, -15) if method == 8 else data
        except zlib.error:
            raise damaged from None
        if method not in (0, 8) or len(data) != size or zlib.crc32(data) != crc:
            raise damaged
        members[name] = data
    if METADATA_FILE not in members:
        raise EdgeError(f"{path} has appended files but no {METADATA_FILE}",
                        "it was not written by edge-convert; re-create it")
    return members, zip_start


def _has_zip_trace(f) -> bool:
    """Whether the remains of our zip (metadata.json's local header) are in the file."""
    marker = b"PK\x03\x04"
    name = METADATA_FILE.encode()
    overlap = 30 + len(name)
    f.seek(0)
    tail = b""
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return False
        window = tail + chunk
        start = window.find(marker)
        while start != -1:
            if window[start + 30:start + 30 + len(name)] == name:
                return True
            start = window.find(marker, start + 1)
        tail = window[-overlap:]


def _parse_members(members: dict, path: Path):
    try:
        metadata = json.loads(members[METADATA_FILE].decode("utf-8"))
        check_metadata(metadata, where=f"{path}:{METADATA_FILE}")
        vocab_bytes = members.get(metadata["tokenizer"].get("vocab_file", VOCAB_FILE), b"")
        vocab_text = vocab_bytes.decode("utf-8")
        labels = (members[LABELS_FILE].decode("utf-8").splitlines() if LABELS_FILE in members
                  else [str(x) for x in metadata["labels"]])
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgeError(f"{path} has a damaged metadata zip ({type(e).__name__})",
                        "copy the file to the device again") from None
    if not vocab_text.strip():
        raise EdgeError(f"{path} carries no vocabulary", "re-create the artifact with edge-convert")
    if labels != [str(x) for x in metadata["labels"]]:
        raise EdgeError(f"{path}: labels.txt disagrees with metadata.json", "re-create the artifact")
    return metadata, vocab_text, labels
