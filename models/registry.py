"""The model registry: named models (checkpoint ids, labels, architecture) read from TOML.

The built-in entries live in registry.toml beside this file; `load_registry(extra_files)` adds or
replaces entries from the user's own TOML files, so adding a model needs no code. Every problem
in a file is an EdgeError naming the file and the entry.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from edge_slm.common.errors import EdgeError

BUILTIN_REGISTRY = Path(__file__).with_name("registry.toml")
_REQUIRED = {"hf_id": str, "labels": list, "seq_len": int, "config": dict}
_OPTIONAL = {"base_id": str, "reference": dict}


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    hf_id: str
    labels: list
    seq_len: int
    config: dict                      # transformers config fields; "model_type" picks the architecture
    base_id: Optional[str] = None
    reference: Optional[dict] = None  # {"dataset", "accuracy" (0..1), "source"} from the model card
    defined_in: str = field(default="", compare=False)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def load_registry(extra_files: Iterable = ()) -> dict:
    """{name: RegistryEntry}: the built-in entries, then each extra file's (later files win)."""
    entries = {}
    for path in (BUILTIN_REGISTRY, *extra_files):
        entries.update(_read_file(Path(path)))
    return entries


def lookup(name: str, registry: dict) -> RegistryEntry:
    try:
        return registry[name]
    except KeyError:
        raise EdgeError(f"unknown model {name!r}", _suggestion(name, registry)) from None


def _suggestion(name: str, registry: dict) -> str:
    close = difflib.get_close_matches(name, list(registry), n=1)
    known = ", ".join(sorted(registry))
    if close:
        return f"did you mean {close[0]!r}? registry names: {known}"
    return f"registry names: {known}; or pass a local checkpoint directory or a Hugging Face id (owner/name)"


def _read_file(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeError(f"registry file not found: {path}", "check the path passed to --registry") from None
    except IsADirectoryError:
        raise EdgeError(f"registry {path} is a directory", "pass a .toml file") from None
    except OSError as e:
        raise EdgeError(f"cannot read registry {path}: {e.strerror or e}", "check the file's permissions") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgeError(f"registry {path} is not valid TOML: {e}", "fix the file (see models/registry.toml)") from None
    return {name: _entry(path, name, table) for name, table in data.items()}


def _entry(path: Path, name: str, table) -> RegistryEntry:
    where = f"registry {path}, entry [{name}]"
    hint = "see the keys documented at the top of models/registry.toml"
    if not isinstance(table, dict):
        raise EdgeError(f"{where} is not a table", hint)
    for key, kind in _REQUIRED.items():
        if key not in table:
            raise EdgeError(f"{where} lacks {key!r}", hint)
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        # bool is an int in Python; a seq_len of `true` is a mistake, not 1.
        if key in table and (not isinstance(table[key], kind) or isinstance(table[key], bool)):
            raise EdgeError(f"{where}: {key!r} should be a {kind.__name__}", hint)
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise EdgeError(f"{where} has unknown keys {', '.join(unknown)}", hint)
    labels = table["labels"]
    if len(labels) < 2 or not all(isinstance(x, str) and x.strip() for x in labels):
        raise EdgeError(f"{where}: 'labels' should list at least two non-empty names", hint)
    if len(set(labels)) != len(labels):  # two classes of one name could never be told apart
        raise EdgeError(f"{where}: 'labels' names a class twice", hint)
    if table["seq_len"] < 2:
        raise EdgeError(f"{where}: 'seq_len' should be at least 2 ([CLS] and [SEP])", hint)
    if not isinstance(table["config"].get("model_type"), str):
        raise EdgeError(f"{where}: [{name}.config] lacks model_type", hint)
    positions = table["config"].get("max_position_embeddings")
    if isinstance(positions, int) and not isinstance(positions, bool) and table["seq_len"] > positions:
        raise EdgeError(f"{where}: 'seq_len' {table['seq_len']} exceeds the model's max_position_embeddings "
                        f"({positions})", f"set seq_len = {positions} or less")
    reference = table.get("reference")
    if reference is not None:
        accuracy = reference.get("accuracy")
        if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not 0 <= accuracy <= 1:
            raise EdgeError(f"{where}: reference.accuracy should be a fraction in [0, 1]", hint)
    return RegistryEntry(name=name, hf_id=table["hf_id"], labels=list(labels), seq_len=table["seq_len"],
                         config=dict(table["config"]), base_id=table.get("base_id"), reference=reference,
                         defined_in=str(path))
