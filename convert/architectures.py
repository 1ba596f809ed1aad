"""One small spec per supported architecture, chosen by the checkpoint's config.model_type.

In the style of Hugging Face Optimum's exporters: what differs between BERT-family models is
data (TF class, which inputs the graph takes, the task head's weight names), so adding an
architecture is adding a spec here, not another branch in the converter. Importing this module
does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

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
                         ("pre_classifier.", "classifier.")),
        ArchitectureSpec("mobilebert", "TFMobileBertForSequenceClassification", _BERT_INPUTS, ("classifier.",),
                         dense_kernels_from_config=True),
        ArchitectureSpec("electra", "TFElectraForSequenceClassification", _BERT_INPUTS, ("classifier.",)),
    )
}


def spec_for(model_type) -> ArchitectureSpec:
    try:
        return SPECS[model_type]
    except KeyError:
        raise EdgeError(f"unsupported architecture model_type={model_type!r}",
                        f"edge-convert supports {', '.join(sorted(SPECS))} (BERT-family WordPiece models)") from None
