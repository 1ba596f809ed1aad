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
    return _float_gather_table(dynamic_graph, fp32_graph, "word", lambda indices: indices == "input_ids")


def float_position_table(dynamic_graph: bytes, fp32_graph: bytes) -> bytes:
    """The length-aware dynamic-range graph with its position-embedding table in float32, as the
    fixed-length graph has it.

    A fixed-length graph slices the first seq_len positions at trace time, and TF's converter folds
    them into a float constant; a length-aware graph gathers them at run time from the whole table,
    which the dynamic-range quantizer then stores as int8. That added noise the fixed graph does
    not have: on the fine-tuned MiniLM (872 SST-2 dev texts) the length-aware dynamic artifact's
    logit-margin noise against fp32 was 0.038 (median) against the fixed graph's 0.025, and 8 labels
    differed between the two. The table is small (512 positions: +0.6 MB MiniLM, +1.2 MB DistilBERT).
    """
    return _float_gather_table(dynamic_graph, fp32_graph, "position",
                               lambda indices: indices not in ("input_ids", "token_type_ids", "attention_mask"))


def _float_gather_table(dynamic_graph: bytes, fp32_graph: bytes, what: str, reads) -> bytes:
    """Copy the float table of the one GATHER of a rank-2 constant table whose indices tensor's
    name satisfies `reads` from the fp32 graph into the dynamic graph, dropping its DEQUANTIZE."""
    # deferred: TensorFlow's flatbuffer schema (seconds to import); edge-convert has it loaded by now
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    def table_gather(graph, model):
        subgraph = model.subgraphs[0]
        ops, names = graph_ops(graph)
        found = [op for op, raw in zip(ops, subgraph.operators)
                 if op.kind == "GATHER" and len(subgraph.tensors[raw.inputs[0]].shape) == 2
                 and model.buffers[subgraph.tensors[raw.inputs[0]].buffer].data is not None
                 and reads(names[raw.inputs[1]])]
        if len(found) > 1:
            raise ValueError(f"expected at most one GATHER of the {what} table, found {len(found)}")
        return found[0] if found else None

    model = flatbuffer_utils.convert_bytearray_to_object(dynamic_graph)
    reference = flatbuffer_utils.convert_bytearray_to_object(fp32_graph)
    subgraph = model.subgraphs[0]
    gather, reference_gather = table_gather(dynamic_graph, model), table_gather(fp32_graph, reference)
    if gather is None or reference_gather is None:
        return dynamic_graph  # e.g. a fixed-length graph, whose positions are a folded constant
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
