"""One small spec per supported architecture, chosen by the checkpoint's config.model_type.

In the style of Hugging Face Optimum's exporters: what differs between BERT-family models is
data (TF class, which inputs the graph takes, the task head's weight names), so adding an
architecture is adding a spec here, not another branch in the converter. Importing this module
does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge_slm.common.errors import EdgeError


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str                 # config.model_type this spec serves
    tf_class: str                   # transformers TF class with a sequence-classification head
    inputs: tuple                   # graph inputs, in order (roles of the artifact format)
    head_prefixes: tuple            # PyTorch names of the task head; a base checkpoint lacks them
    # Random init: every dense kernel ~ N(0, initializer_range), as the PyTorch class initialises it.
    # transformers' TF MobileBERT builds five of its dense layers per block with Keras' glorot_uniform
    # default: the NoNorm residual stream then grows ~1.6x per layer (max |h| 0.12 -> 8,600 over 24
    # layers) and training from scratch learned nothing (dev loss 0.70 after 150 steps, activations
    # 1e8-1e9 later); with this init, edge-train reached 79.5 % on SST-2 dev in 1,100 steps.
    dense_kernels_from_config: bool = False
    # config.json's size fields (each a positive int when present) and (width, heads): the width
    # must split evenly into heads. Absent fields take transformers' defaults.
    size_fields: tuple = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "max_position_embeddings")
    head_split: Optional[tuple] = ("hidden_size", "num_attention_heads")

    def check_config(self, config: dict, where: str) -> None:
        """One line for a config transformers would refuse with a traceback, or build wrongly."""
        hint = "restore the checkpoint's config.json or the registry entry's config"
        for name in self.size_fields:
            value = config.get(name)
            if value is not None and (type(value) is not int or value < 1):
                raise EdgeError(f"{where}: {name} must be a positive integer, got {value!r}", hint)
        if config.get("max_position_embeddings", 2) < 2:
            raise EdgeError(f"{where}: max_position_embeddings {config['max_position_embeddings']} leaves no room "
                            "for [CLS] and [SEP]", hint)
        if self.head_split and all(config.get(name) is not None for name in self.head_split):
            width, heads = (config[name] for name in self.head_split)
            if width % heads:
                raise EdgeError(f"{where}: {self.head_split[0]} {width} does not split into {heads} attention heads",
                                hint)

    def dummy_inputs(self, seq_len: int, vocab_size: int) -> dict:
        """Half real tokens, half padding, int32 [1, seq_len]: enough to build the model's variables."""
        length = max(2, seq_len // 2)
        ids = np.zeros((1, seq_len), np.int32)
        ids[0, :length] = 1 + np.arange(length) % (vocab_size - 1)
        mask = np.zeros((1, seq_len), np.int32)
        mask[0, :length] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((1, seq_len), np.int32)}
        return {name: arrays[name] for name in self.inputs}

    def is_head_weight(self, pt_name: str) -> bool:
        return pt_name.startswith(self.head_prefixes)


_BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

SPECS = {
    spec.model_type: spec
    for spec in (
        # BERT itself, and checkpoints with BERT's layout: TinyBERT, MiniLM.
        ArchitectureSpec("bert", "TFBertForSequenceClassification", _BERT_INPUTS, ("classifier.",)),
        # DistilBERT has no segment embeddings, so no token_type_ids input.
        ArchitectureSpec("distilbert", "TFDistilBertForSequenceClassification", ("input_ids", "attention_mask"),
                         ("pre_classifier.", "classifier."),
                         size_fields=("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim",
                                      "max_position_embeddings"),
                         head_split=("dim", "n_heads")),
        # MobileBERT's heads split its bottleneck width, not hidden_size; transformers checks that.
        ArchitectureSpec("mobilebert", "TFMobileBertForSequenceClassification", _BERT_INPUTS, ("classifier.",),
                         dense_kernels_from_config=True,
                         size_fields=ArchitectureSpec.size_fields + ("embedding_size", "intra_bottleneck_size",
                                                                     "num_feedforward_networks"),
                         head_split=None),
        ArchitectureSpec("electra", "TFElectraForSequenceClassification", _BERT_INPUTS, ("classifier.",)),
    )
}


def spec_for(model_type) -> ArchitectureSpec:
    try:
        return SPECS[model_type]
    except KeyError:
        raise EdgeError(f"unsupported architecture model_type={model_type!r}",
                        f"edge-convert supports {', '.join(sorted(SPECS))} (BERT-family WordPiece models)") from None
