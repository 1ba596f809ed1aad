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

from .explain import graph_ops

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
    patterns = [FLOAT_LAYER_GROUPS[g] for g in groups]
    ops, names = graph_ops(fp32_graph)
    return [names[op.outputs[0]] for op in ops
            if op.kind == "FULLY_CONNECTED" and any(p.search(names[op.outputs[0]].split(";")[0] + "/")
                                                    for p in patterns)]


def float_embedding_table(dynamic_graph: bytes, fp32_graph: bytes) -> bytes:
    """The dynamic-range graph with its word-embedding table in float32 (copied from the fp32 graph)
    instead of int8 + DEQUANTIZE.

    `--explain` ranks that table first in MiniLM's dynamic artifact (a third of the added error: one
    int8 scale per row of 384 values). Measured on the fine-tuned MiniLM, all 872 SST-2 dev texts:
    86.12 % -> 86.70 % (TF fp32 86.47 %), agreement 99.20 -> 99.31 %, mean |dlogit| 0.024 -> 0.019;
    the file grows from 23 to 58 MB (30522 x 384 floats); latency unchanged (p50 ratio 0.985, 7
    alternated rounds, litert, 1 thread). Off by default for the file size: 2.5x on an edge device's
    storage and memory for one more agreeing text in 872.
    """
    # deferred: TensorFlow's flatbuffer schema (seconds to import); edge-convert has it loaded by now
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    def word_gather(graph):
        ops, names = graph_ops(graph)
        found = [(i, op) for i, op in enumerate(ops)
                 if op.kind == "GATHER" and any(names[t] == "input_ids" for t in op.inputs)]
        if len(found) != 1:
            raise ValueError(f"expected one GATHER of input_ids, found {len(found)}")
        return found[0]

    model = flatbuffer_utils.convert_bytearray_to_object(dynamic_graph)
    reference = flatbuffer_utils.convert_bytearray_to_object(fp32_graph)
    subgraph = model.subgraphs[0]
    _, gather = word_gather(dynamic_graph)
    _, reference_gather = word_gather(fp32_graph)
    table, output = subgraph.tensors[gather.inputs[0]], gather.outputs[0]
    if table.type != schema.TensorType.INT8:
        return dynamic_graph  # already float (e.g. a table too small for TF to quantize)
    float_table = reference.subgraphs[0].tensors[reference_gather.inputs[0]]
    model.buffers[table.buffer].data = reference.buffers[float_table.buffer].data
    for tensor in (table, subgraph.tensors[output]):
        tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
    [dequantize] = [i for i, op in enumerate(subgraph.operators) if list(op.inputs) == [output]]
    dequantized = subgraph.operators[dequantize].outputs[0]
    for op in subgraph.operators:  # readers of the DEQUANTIZE output read the float GATHER output
        op.inputs = [output if i == dequantized else i for i in op.inputs]
    del subgraph.operators[dequantize]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
