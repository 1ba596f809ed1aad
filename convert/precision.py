"""Mixed precision for int8: layers or lookups left out of static int8, by name or by measurement.

**The feed-forward output layers keep float outputs (default, `--int8-float-layers ffn-output`).**
BERT-family models carry a few huge channels in the residual stream, and the feed-forward output
layer writes them: in the fine-tuned MiniLM, layer 0's writes channel 99 up to 192 while the median
channel stays under 0.9. A static int8 output has one scale for all 384 channels, so its step (1.5)
zeroes almost every other channel: their median relative error was 0.79 there, and after the
LayerNorm that rescales the small channels back up, 28 % of the whole layer output. The graph's int8
logits kept a mean cosine of only 0.92 with fp32 (label agreement 95.6 %).

These layers now keep float outputs that go straight to the (float) residual add, and their weights
are int8 with dynamic-range kernels (the input quantized per token at run time, as the dynamic mode
does: dynamic_range_dense). Fine-tuned MiniLM, all 872 SST-2 dev texts, 3 calibration sets:
agreement with fp32 95.6-96.3 % -> 97.8-98.9 %, cosine 0.92 -> 0.96-0.97, dev accuracy 86.70-86.93 %
on the three sets (TF 86.47 %; all static: 85.78-86.47 %), file 24.1 MB, latency +1.3 % (1.15 against
1.14 ms per text; README "int8 and dynamic on real weights").
Before this, `ffn-output` left the layers float but the quantizer requantized each float output to
int8 right after the layer (to feed the int8 RESHAPE behind it): it cost +58 % latency and fixed
nothing. float_output_nodes keeps those reshapes float too.
int8-only accelerators have no dynamic-range kernels: `--int8-float-layers none` makes every dense
layer static int8, at the accuracy above.

`--int8-float-layers auto` chooses by measurement instead of by name: the dense layers are grouped by
their place in the block (query of every layer, key of every layer, ...), the graph is calibrated
once, and int8 is made once with each group kept that way; the group whose version brings the logits
closest to the fp32 graph's, on held-out texts of the calibration pool, is kept. (Ranked on the
calibration texts themselves, every candidate looked better than it was.)

The embeddings: int8 looks them up in float (graph.QUANT_MODES), and the word table is stored with
one int8 scale per column (word_table_by_column), or in float32 with --float-embeddings.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from edge_slm.common.native import captured_native_stderr

from .explain import LAYER_INDEX, graph_ops
from .graph import opcode_index

# Tensor-name patterns of each architecture's feed-forward output dense layer (TF's scopes in
# transformers' TF classes): BERT/ELECTRA/TinyBERT/MiniLM and MobileBERT, DistilBERT.
FLOAT_LAYER_GROUPS = {
    "ffn-output": re.compile(r"layer_\._\d+/output/dense/|ffn\.\d+/output/dense/|/ffn/lin2/"),
}
DEFAULT_FLOAT_LAYERS = ("ffn-output",)  # see the module docstring
AUTO_FLOAT_LAYERS = "auto"  # --int8-float-layers auto: the group chosen by choose_float_group
SELECTION_TEXTS = 64        # calibration texts each candidate runs on: seconds per candidate for MiniLM


def float_nodes(fp32_graph: bytes, groups) -> list:
    """Output tensor names of the FULLY_CONNECTED ops of `groups` in the fp32 graph: the dense layers
    that keep float outputs (see float_output_nodes)."""
    patterns = [FLOAT_LAYER_GROUPS[g] for g in groups]
    ops, names = graph_ops(fp32_graph)
    return [names[op.outputs[0]] for op in ops
            if op.kind == "FULLY_CONNECTED" and any(p.search(names[op.outputs[0]].split(";")[0] + "/")
                                                    for p in patterns)]


def float_output_nodes(fp32_graph: bytes, dense_nodes) -> list:
    """`dense_nodes` plus the reshapes that carry their outputs on: the nodes the int8 quantizer is told
    to leave in float. Without the reshapes it requantizes each float output to int8 right after the
    layer, which is where the outlier channels did their damage."""
    ops, names = graph_ops(fp32_graph)
    carried = {index for index, name in enumerate(names) if name in set(dense_nodes)}
    nodes = list(dense_nodes)
    for op in ops:  # execution order: a reshape of a reshape follows its input
        if op.kind == "RESHAPE" and op.inputs and op.inputs[0] in carried:
            carried.add(op.outputs[0])
            nodes.append(names[op.outputs[0]])
    return nodes


def dynamic_range_dense(int8_graph: bytes, per_channel: bool = True) -> tuple:
    """(graph, count): the int8 graph with each FULLY_CONNECTED that the quantizer left in float (float
    input and float32 weights: the float_output_nodes layers) given int8 weights, symmetric with a scale
    per output channel (per_channel=False: one scale, for runtimes without per-channel dynamic-range
    kernels, graph.CompatTarget), and dynamic-range kernels that quantize the input per token at run
    time: what the dynamic mode's converter writes for every dense layer. The output stays float."""
    from tensorflow.lite.python import schema_py_generated as schema  # deferred like the others here
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    model = flatbuffer_utils.convert_bytearray_to_object(int8_graph)
    subgraph = model.subgraphs[0]
    dense_codes = {index for index, code in enumerate(model.operatorCodes)
                   if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED}
    float_type = schema.TensorType.FLOAT32
    targets = [op for op in subgraph.operators
               if op.opcodeIndex in dense_codes and subgraph.tensors[op.inputs[0]].type == float_type
               and subgraph.tensors[op.inputs[1]].type == float_type
               and model.buffers[subgraph.tensors[op.inputs[1]].buffer].data is not None]
    if not targets:
        return int8_graph, 0
    version = PER_CHANNEL_DYNAMIC_DENSE_VERSION if per_channel else DYNAMIC_DENSE_VERSION
    code = opcode_index(model, schema, schema.BuiltinOperator.FULLY_CONNECTED, version)
    for op in targets:
        weights = subgraph.tensors[op.inputs[1]]
        values = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.float32).reshape(
            [int(d) for d in weights.shape])
        quantized, scales = _symmetric_int8(values, 1 if per_channel else None)
        if sum(t.buffer == weights.buffer for t in subgraph.tensors) == 1:
            model.buffers[weights.buffer].data = quantized.reshape(-1).view(np.uint8)
        else:  # a buffer the deduplicator shares with another tensor keeps its float values for it
            model.buffers.append(schema.BufferT())
            model.buffers[-1].data = quantized.reshape(-1).view(np.uint8)
            weights.buffer = len(model.buffers) - 1
        _mark_int8(weights, schema, scales, axis=0)
        op.builtinOptions.asymmetricQuantizeInputs = True  # as TF's dynamic-range converter sets it
        op.opcodeIndex = code
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), len(targets)


def float_embedding_table(dynamic_graph: bytes, fp32_graph: bytes) -> bytes:
    """The graph (dynamic, or int8 with its float lookups) with the word-embedding table in float32,
    copied from the fp32 graph, instead of int8 + DEQUANTIZE (--float-embeddings).

    Measured on the fine-tuned MiniLM, all 872 SST-2 dev texts, dynamic: 86.70 %, the same as with the
    default int8 table with a scale per column (word_table_by_column); with TF's single scale for the
    whole table it was 86.12 %. The file grows from 24 to 58 MB (30522 x 384 floats), latency is
    unchanged. Off by default: the per-column table gives the same answers at the int8 size.
    """
    return _float_gather_table(dynamic_graph, fp32_graph, "word", _reads_word_ids)


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


def _table_gather(graph: bytes, model, what: str, reads):
    """The one GATHER (explain._Op) of a rank-2 constant table whose indices tensor's name satisfies
    `reads`, or None."""
    subgraph = model.subgraphs[0]
    ops, names = graph_ops(graph)
    found = [op for op, raw in zip(ops, subgraph.operators)
             if op.kind == "GATHER" and len(subgraph.tensors[raw.inputs[0]].shape) == 2
             and model.buffers[subgraph.tensors[raw.inputs[0]].buffer].data is not None
             and reads(names[raw.inputs[1]])]
    if len(found) > 1:
        raise ValueError(f"expected at most one GATHER of the {what} table, found {len(found)}")
    return found[0] if found else None


def _gathers(graph: bytes, fp32_graph: bytes, what: str, reads) -> tuple:
    """(graph's model object, the fp32 graph's, the table GATHER in each or None): both sides of a table copy."""
    from tensorflow.lite.tools import flatbuffer_utils  # deferred like the rest of the flatbuffer users here

    model = flatbuffer_utils.convert_bytearray_to_object(graph)
    reference = flatbuffer_utils.convert_bytearray_to_object(fp32_graph)
    return (model, reference, _table_gather(graph, model, what, reads),
            _table_gather(fp32_graph, reference, what, reads))


def _reads_word_ids(indices: str) -> bool:
    return indices == "input_ids"


def _float_gather_table(dynamic_graph: bytes, fp32_graph: bytes, what: str, reads) -> bytes:
    """Copy the float table of the one GATHER of a rank-2 constant table whose indices tensor's
    name satisfies `reads` from the fp32 graph into the dynamic graph, dropping its DEQUANTIZE."""
    # deferred: TensorFlow's flatbuffer schema (seconds to import); edge-convert has it loaded by now
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    model, reference, gather, reference_gather = _gathers(dynamic_graph, fp32_graph, what, reads)
    subgraph = model.subgraphs[0]
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


def word_table_by_column(graph: bytes, fp32_graph: bytes, per_column: bool = True) -> bytes:
    """`graph` with its word-embedding table in int8 with one scale per embedding dimension (column),
    looked up in int8 and dequantized after the lookup (GATHER -> DEQUANTIZE, per-channel).

    TF's dynamic-range quantizer gives the 30522 x 384 table one scale; MiniLM's columns span 5x in
    range (max |value| 0.22 to 1.05), so most columns kept a fifth of int8's resolution, and
    `--explain` ranked the table first in the dynamic artifact (a third of the added error). Measured
    on the fine-tuned MiniLM, all 872 SST-2 dev texts: dynamic 86.12 -> 86.70 % (TF fp32 86.47 %), as
    with the float32 table, at the int8 table's size. Works on a graph whose table is int8 (dynamic)
    or float with a float lookup (int8 mode, which leaves GATHER float). per_column=False: one scale for
    the whole table, for runtimes without a per-channel DEQUANTIZE (graph.CompatTarget)."""
    from tensorflow.lite.python import schema_py_generated as schema  # deferred like the others here
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    model, reference, gather, reference_gather = _gathers(graph, fp32_graph, "word", _reads_word_ids)
    subgraph = model.subgraphs[0]
    if gather is None or reference_gather is None:
        return graph
    float_table = reference.subgraphs[0].tensors[reference_gather.inputs[0]]
    values = np.frombuffer(bytes(reference.buffers[float_table.buffer].data), np.float32).reshape(
        [int(d) for d in float_table.shape])
    quantized, scales = _symmetric_int8(values, 0 if per_column else None)
    version = PER_CHANNEL_DEQUANTIZE_VERSION if per_column else INT8_DEQUANTIZE_VERSION
    table, output = subgraph.tensors[gather.inputs[0]], subgraph.tensors[gather.outputs[0]]
    raw_gather = next(op for op in subgraph.operators if list(op.outputs) == [gather.outputs[0]])
    if table.type == schema.TensorType.FLOAT32:  # a float lookup: it now writes int8, dequantized after
        int8_output = schema.TensorT()
        int8_output.shape, int8_output.shapeSignature = output.shape, output.shapeSignature
        int8_output.name = output.name + b"/int8"
        int8_output.buffer = 0
        subgraph.tensors.append(int8_output)
        raw_gather.outputs = [len(subgraph.tensors) - 1]
        dequantize = schema.OperatorT()
        dequantize.opcodeIndex = opcode_index(model, schema, schema.BuiltinOperator.DEQUANTIZE, version)
        dequantize.inputs, dequantize.outputs = [len(subgraph.tensors) - 1], [gather.outputs[0]]
        subgraph.operators.insert(subgraph.operators.index(raw_gather) + 1, dequantize)
        output = int8_output
    elif table.type != schema.TensorType.INT8:
        return graph
    else:  # the lookup's own DEQUANTIZE reads the new scales
        opcode_index(model, schema, schema.BuiltinOperator.DEQUANTIZE, version)
    model.buffers[table.buffer].data = quantized.reshape(-1).view(np.uint8)
    for tensor, axis in ((table, 1), (output, len(output.shape) - 1)) if per_column else ((table, 0), (output, 0)):
        _mark_int8(tensor, schema, scales, axis)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _symmetric_int8(values: np.ndarray, axis) -> tuple:
    """(int8 values, float32 scales): symmetric, zero point 0, the scale from the max |value| over
    `axis` (a table's axis 0: a scale per column; a dense layer's [out, in] axis 1: a scale per output
    channel; None: one scale for all)."""
    scales = np.maximum(np.abs(values).max(axis=axis, keepdims=True), np.finfo(np.float32).tiny) / 127.0
    quantized = np.clip(np.round(values / scales), -127, 127).astype(np.int8)
    return quantized, scales.reshape(-1).astype(np.float32)


def _mark_int8(tensor, schema, scales: np.ndarray, axis: int) -> None:
    """Type `tensor` int8 with `scales` along `axis` (one scale: axis 0), zero points 0."""
    tensor.type = schema.TensorType.INT8
    tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.scale = scales.tolist()
    tensor.quantization.zeroPoint = [0] * len(scales)
    tensor.quantization.quantizedDimension = axis


PER_CHANNEL_DEQUANTIZE_VERSION = 5  # TFLite's op versions of DEQUANTIZE: per-channel int8, int8
INT8_DEQUANTIZE_VERSION = 2
# FULLY_CONNECTED's, as TF's dynamic-range converter writes them: int8 weights with a scale per
# output channel (tflite-runtime 2.14 rejects it), one scale with per-token input quantization
PER_CHANNEL_DYNAMIC_DENSE_VERSION = 12
DYNAMIC_DENSE_VERSION = 9


def dense_groups(fp32_graph: bytes) -> dict:
    """{group label: (FULLY_CONNECTED output tensor names, weight count)}: the dense layers grouped by
    their place in the block, e.g. "layer_._*/attention/self/query" holds every layer's query layer."""
    # deferred: TensorFlow's flatbuffer schema (seconds to import); edge-convert has it loaded by now
    from tensorflow.lite.tools import flatbuffer_utils

    subgraph = flatbuffer_utils.convert_bytearray_to_object(fp32_graph).subgraphs[0]
    ops, names = graph_ops(fp32_graph)
    groups: dict = {}
    for op in ops:
        if op.kind != "FULLY_CONNECTED":
            continue
        output = names[op.outputs[0]]
        scope = LAYER_INDEX.sub("layer_._*", output.split(";")[0]).split("/")
        label = "/".join(scope[:-1])  # the dense layer's scope, without the op's own name
        if "layer_._*" in label:
            label = label[label.index("layer_._*"):]
        elif label:
            label = "/".join(label.split("/")[-2:])
        else:  # the graph's output tensor carries the output's name, not the layer's scope
            label = "output layer"
        weights = int(np.prod(subgraph.tensors[op.inputs[1]].shape))
        nodes, count = groups.get(label, ([], 0))
        groups[label] = (nodes + [output], count + weights)
    return groups


def graph_logits(graph: bytes, samples: list) -> np.ndarray:
    """(texts, labels) logits of `graph` in the device interpreter; `samples` are {input name: (1, n)
    int32 array}, each run at its own length."""
    from ai_edge_litert.interpreter import Interpreter  # deferred like the rest of the interpreter users

    interpreter = Interpreter(model_content=graph)
    inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    output = interpreter.get_output_details()[0]["index"]
    shape, rows = None, []
    for sample in samples:
        if next(iter(sample.values())).shape != shape:
            shape = next(iter(sample.values())).shape
            for name, array in sample.items():
                interpreter.resize_tensor_input(inputs[name], list(array.shape))
            interpreter.allocate_tensors()
        for name, array in sample.items():
            interpreter.set_tensor(inputs[name], array)
        interpreter.invoke()
        rows.append(interpreter.get_tensor(output).reshape(-1).astype(np.float64))
    return np.stack(rows)


def choose_float_group(reference_graph: bytes, quantize: Callable, samples: list) -> tuple:
    """(float node names, selection record): int8 made by `quantize(float_nodes)` once with no group
    and once with each dense group of `reference_graph` left in float; the group whose graph's logits
    have the least relative noise power against the reference graph's, on `samples`, is chosen (none
    when no group lowers it)."""
    with captured_native_stderr():  # the interpreter's "Created XNNPACK delegate" line, under -q too
        reference = graph_logits(reference_graph, samples)
    power = float(np.sum(reference ** 2)) or 1.0

    def noise(nodes) -> float:
        graph = quantize(nodes)
        with captured_native_stderr():
            logits = graph_logits(graph, samples)
        return float(np.sum((logits - reference) ** 2)) / power

    groups = dense_groups(reference_graph)
    total_weights = sum(count for _, count in groups.values())
    all_int8 = noise(())
    candidates = sorted(({"group": label, "dense_ops": len(nodes), "weight_share": round(count / total_weights, 4),
                          "relative_noise": noise(nodes)} for label, (nodes, count) in groups.items()),
                        key=lambda c: c["relative_noise"])
    chosen = candidates[0] if candidates and candidates[0]["relative_noise"] < all_int8 else None
    record = {"method": "auto", "texts": len(samples), "metric": "relative noise power of the logits against "
              "the fp32 graph (mask softened as for int8)",
              "all_int8_relative_noise": all_int8, "chosen": chosen["group"] if chosen else None,
              "candidates": candidates}
    return (groups[chosen["group"]][0] if chosen else []), record
