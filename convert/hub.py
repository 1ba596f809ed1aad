"""Fetch a checkpoint folder from the Hugging Face hub (or its local cache).

Hub checkpoints are downloaded file by file into the hub cache and then loaded exactly like a
local directory, so there is one loading path for both. Unreachable hubs are detected with a
short connect probe instead of huggingface_hub's retries (~25 s offline).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from edge_slm.common.errors import EdgeError

PROBE_TIMEOUT_SECONDS = 3.0
# What a checkpoint folder holds, in the order a loader prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "tf_model.h5", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class HubUnreachable(EdgeError):
    pass


def fetch_checkpoint(hf_id: str, with_weights: bool = True) -> Path:
    """The folder holding hf_id's config, tokenizer files and (with_weights) one weights file."""
    cached = _cached_snapshot(hf_id, with_weights)
    if cached is not None:
        return cached
    if not hub_reachable():
        raise HubUnreachable(f"the Hugging Face hub is unreachable, so {hf_id} cannot be downloaded",
                             "pass a local checkpoint directory, or --random-init for random weights")
    import huggingface_hub  # deferred: only for hub checkpoints
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError  # deferred: only for hub checkpoints

    try:
        files = set(huggingface_hub.list_repo_files(hf_id))
        wanted = ["config.json"] + [f for f in TOKENIZER_FILES if f in files]
        if with_weights:
            weights = next((f for f in WEIGHT_FILES if f in files), None)
            if weights is None:
                raise EdgeError(f"{hf_id} on the hub has none of {', '.join(WEIGHT_FILES)}",
                                "pick a checkpoint with safetensors, tf_model.h5 or pytorch_model.bin weights")
            wanted.append(weights)
            if weights.endswith(".index.json"):
                wanted += _shards(huggingface_hub.hf_hub_download(hf_id, weights))
        paths = [Path(huggingface_hub.hf_hub_download(hf_id, f)) for f in wanted]
    except (RepositoryNotFoundError, GatedRepoError):
        raise EdgeError(f"no accessible model {hf_id!r} on the Hugging Face hub",
                        "check the id (owner/name), or log in with huggingface-cli for gated models") from None
    except EdgeError:
        raise
    except Exception as e:  # network failures mid-download come in many types
        raise EdgeError(f"downloading {hf_id} failed: {' '.join(str(e).split())[:200]}",
                        "retry, or pass a local checkpoint directory") from None
    return paths[0].parent


def hub_reachable() -> bool:
    from huggingface_hub import constants  # deferred: only for hub checkpoints

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def _cached_snapshot(hf_id: str, with_weights: bool):
    """A complete enough snapshot already in the hub cache, or None."""
    from huggingface_hub import try_to_load_from_cache  # deferred: only for hub checkpoints

    config = try_to_load_from_cache(hf_id, "config.json")
    if not isinstance(config, (str, os.PathLike)):
        return None
    folder = Path(config).parent
    if with_weights and not any((folder / name).is_file() for name in WEIGHT_FILES):
        return None
    return folder


def _shards(index_path: str) -> list:
    index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    return sorted(set(index.get("weight_map", {}).values()))
