"""Mixed precision for int8: the few dense layers whose int8 activations cost most stay in float.

BERT-family models' feed-forward output layer reads the GELU/ReLU output of the intermediate layer
(4x the hidden size, a long-tailed distribution with outlier channels): one int8 scale per tensor for
it loses most of the int8 error. Measured on MiniLM fine-tuned on SST-2 (all 872 dev texts, seq 64,
calibrated on 200 train texts), keeping in float only one kind of dense layer at a time:

    all dense layers int8      85.67 % (-0.80 points vs TF fp32 86.47 %), agreement 94.8 %
    query / key / value float  -1.49 / -0.34 / -1.26 points
    attention output float     -1.38 points;  intermediate float -1.03 points
    feed-forward output float  86.35 % (-0.11 points), agreement 97.8 %, mean |dlogit| 0.29 -> 0.09

`edge-convert --explain` on the int8 artifact ranks layer 3's feed-forward output layer first
(16-20 % of the added error), the GELU outputs feeding those layers next. Keeping only the explain
report's top 2-16 ops float did not help (-0.80 to -1.03 points), nor did layer 3's alone: the error
is spread over the six layers' feed-forward outputs (layers 0-3 float: +0.00 points), so the whole
group is the unit.
"""

from __future__ import annotations

import re

# Tensor-name patterns of each architecture's feed-forward output dense layer (TF's scopes in
# transformers' TF classes): BERT/ELECTRA/TinyBERT/MiniLM and MobileBERT, DistilBERT.
FLOAT_LAYER_GROUPS = {
    "ffn-output": re.compile(r"layer_\._\d+/output/dense/|ffn\.\d+/output/dense/|/ffn/lin2/"),
}
# Off by default: on this x86 host (litert, 1 thread, 7 alternated rounds in one process) the float
# feed-forward output layers made int8 22 % slower (p50 50.2 -> 61.6 ms under load), above the 5 % a
# default may cost; and int8-only accelerators would run those layers on the CPU.
DEFAULT_FLOAT_LAYERS = ()


def float_nodes(fp32_graph: bytes, groups) -> list:
    """Output tensor names of the FULLY_CONNECTED ops of `groups` in the fp32 graph: the nodes the
    int8 quantizer is told to leave in float."""
    from .explain import graph_ops

    patterns = [FLOAT_LAYER_GROUPS[g] for g in groups]
    ops, names = graph_ops(fp32_graph)
    return [names[op.outputs[0]] for op in ops
            if op.kind == "FULLY_CONNECTED" and any(p.search(names[op.outputs[0]].split(";")[0] + "/")
                                                    for p in patterns)]
