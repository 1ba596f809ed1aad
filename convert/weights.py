"""Build the TF model of a spec and fill its weights: random, safetensors, tf_model.h5 or .bin.

transformers 4.57's TF loader fails on safetensors checkpoints (it iterates a safe_open handle),
so safetensors files are read here as numpy arrays and handed to transformers' own PyTorch->TF
name/layout mapping (`load_pytorch_state_dict_in_tf2_model`), which needs no torch. Every
weight of the encoder must come from the file; only the task head may be missing (a base
checkpoint), and then the model is marked as having random weights.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edge_slm.common.errors import EdgeError

from .architectures import ArchitectureSpec
from .tf_env import tensorflow

# PyTorch buffers that are not weights (recomputed by the TF classes).
_IGNORED_UNUSED = ("position_ids", "token_type_ids")


@dataclass
class WeightsReport:
    origin: str                              # "random" or the weights file
    file_format: Optional[str] = None        # safetensors | tf-h5 | pytorch
    loaded: int = 0                          # TF variables filled from the file
    newly_initialized: list = field(default_factory=list)  # head variables left random
    unused: list = field(default_factory=list)             # file tensors the model has no use for
    seed: Optional[int] = None

    @property
    def random_weights(self) -> bool:
        """True when any weight is random: predictions then mean nothing."""
        return self.origin == "random" or bool(self.newly_initialized)

    def as_dict(self) -> dict:
        return {"origin": self.origin, "format": self.file_format, "loaded_variables": self.loaded,
                "newly_initialized": self.newly_initialized, "unused_tensors": self.unused[:20],
                "unused_tensor_count": len(self.unused), "seed": self.seed}


def make_config(spec: ArchitectureSpec, config_fields: dict, labels: Optional[list]):
    import transformers  # deferred: transformers loads TensorFlow

    fields = {k: v for k, v in config_fields.items() if k not in ("architectures", "transformers_version")}
    if labels:  # id2label also sets num_labels
        fields.pop("num_labels", None)
        fields["id2label"] = {i: name for i, name in enumerate(labels)}
        fields["label2id"] = {name: i for i, name in enumerate(labels)}
    try:
        return transformers.CONFIG_MAPPING[spec.model_type].from_dict(fields)
    except (TypeError, ValueError) as e:
        raise EdgeError(f"the {spec.model_type} config is invalid: {e}", "check config.json") from None


def build_model(spec: ArchitectureSpec, config, seq_len: int, weights_file: Optional[Path], seed: int):
    """(TF model, WeightsReport). `weights_file` None means random initialisation."""
    tf = tensorflow()
    import transformers  # deferred: transformers loads TensorFlow

    tf.keras.utils.set_random_seed(seed)  # the random parts (all, or the head) are reproducible
    model_class = getattr(transformers, spec.tf_class)
    dummy = spec.dummy_inputs(seq_len, config.vocab_size)
    if weights_file is None:
        model = model_class(config)
        model(dummy, training=False)
        if spec.dense_kernels_from_config:
            rng = np.random.default_rng(seed)
            for layer in model.submodules:
                if isinstance(layer, tf.keras.layers.Dense) and layer.built:
                    layer.kernel.assign(rng.normal(0.0, config.initializer_range, layer.kernel.shape).astype(np.float32))
        return model, WeightsReport(origin="random", seed=seed)
    if weights_file.name == "tf_model.h5":
        return _load_tf_h5(model_class, config, weights_file, spec, seed)
    if weights_file.name == "pytorch_model.bin":
        state, file_format = _read_pytorch_bin(weights_file), "pytorch"
    else:
        state, file_format = read_safetensors(weights_file), "safetensors"
    model = model_class(config)
    model(dummy, training=False)
    report = load_state_dict(model, state, spec)
    report.origin, report.file_format, report.seed = str(weights_file), file_format, seed
    return model, report


def read_safetensors(path: Path) -> dict:
    """{name: numpy array} of a .safetensors file, or of every shard an index lists."""
    from safetensors import safe_open  # deferred: host extra, only when reading safetensors
    from safetensors.numpy import load_file  # deferred: host extra, only when reading safetensors

    files = [path]
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text(encoding="utf-8"))
        files = [path.parent / name for name in sorted(set(index.get("weight_map", {}).values()))]
    state = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                layout = (handle.metadata() or {}).get("format", "pt")
            if layout != "pt":
                raise EdgeError(f"{file} holds {layout!r}-layout tensors; edge-convert reads PyTorch-layout "
                                "safetensors", "use the checkpoint's PyTorch safetensors or tf_model.h5")
            state.update(load_file(str(file)))
        except EdgeError:
            raise
        except Exception as e:  # safetensors raises its own error types for bad files and dtypes
            raise EdgeError(f"cannot read {file}: {' '.join(str(e).split())[:200]}",
                            "re-download the checkpoint (bfloat16 files need converting to float32)") from None
    return state


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _read_pytorch_bin(path: Path) -> dict:
    if not torch_installed():
        raise EdgeError(f"{path.name} is a PyTorch pickle and reading it needs PyTorch, which is not installed",
                        "pip install torch, or save the checkpoint as model.safetensors, or use --random-init")
    import torch  # deferred: optional (edge-slm[pytorch]), only for pytorch_model.bin

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # no arbitrary pickles
    except Exception as e:
        raise EdgeError(f"cannot read {path}: {' '.join(str(e).split())[:200]}",
                        "re-download the checkpoint, or save it as model.safetensors") from None
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()}


def load_state_dict(model, state: dict, spec: ArchitectureSpec) -> WeightsReport:
    """Assign PyTorch-named, PyTorch-layout arrays to the model's TF variables."""
    tf = tensorflow()
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model  # deferred: transformers loads TensorFlow

    try:
        _, info = load_pytorch_state_dict_in_tf2_model(
            model, state, tf_inputs=False, allow_missing_keys=True, output_loading_info=True,
            tf_to_pt_weight_rename=getattr(model, "tf_to_pt_weight_rename", None), skip_logger_warnings=True)
    except (tf.errors.InvalidArgumentError, ValueError, AssertionError) as e:
        raise EdgeError(f"the checkpoint's tensor shapes do not fit its config ({type(e).__name__})",
                        "the weights and config.json belong to different models") from None
    missing = list(info["missing_keys"])
    encoder_missing = [k for k in missing if not spec.is_head_weight(k)]
    total = len(model.weights)
    if encoder_missing:
        raise EdgeError(f"the checkpoint lacks {len(encoder_missing)} of the {total} weights of "
                        f"{spec.tf_class} (e.g. {encoder_missing[0]})",
                        f"is it really a {spec.model_type} checkpoint matching its config.json?")
    unused = sorted(k for k in info["unexpected_keys"] if not k.endswith(_IGNORED_UNUSED))
    return WeightsReport(origin="", loaded=total - len(missing), newly_initialized=missing, unused=unused)


def _load_tf_h5(model_class, config, path: Path, spec: ArchitectureSpec, seed: int):
    try:
        model, info = model_class.from_pretrained(str(path.parent), config=config, output_loading_info=True,
                                                  use_safetensors=False)
    except (OSError, ValueError) as e:
        raise EdgeError(f"cannot load {path}: {' '.join(str(e).split())[:200]}",
                        "re-download the checkpoint") from None
    # from_pretrained names missing layers TF-style ("classifier"); map to PyTorch-style prefixes.
    missing = sorted(str(k).replace("/", ".") for k in info["missing_keys"])
    encoder_missing = [k for k in missing if not spec.is_head_weight(k if k.endswith(".") else k + ".")]
    if encoder_missing:
        raise EdgeError(f"{path} lacks weights of {spec.tf_class} (e.g. {encoder_missing[0]})",
                        f"is it really a {spec.model_type} checkpoint matching its config.json?")
    report = WeightsReport(origin=str(path), file_format="tf-h5", newly_initialized=missing,
                           unused=sorted(map(str, info["unexpected_keys"])), seed=seed)
    report.loaded = len(model.weights) - len(missing)
    return model, report

