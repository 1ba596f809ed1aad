"""Where a quantized graph loses accuracy: its tensors against the fp32 graph's, op by op.

Both graphs run on the same inputs with every intermediate tensor kept (the interpreter's
preserve-all-tensors debugging mode); tensors are matched by name (TF's converter and quantizer
keep the fp32 graph's tensor names), integer tensors are dequantized with their own scale. For
each matched tensor, the relative noise power e = |q - f|^2 / |f|^2 summed over the texts. An op's
*added* error is e(output) minus the largest e among its inputs. Ops that read or write an integer
tensor (int8 weights, quantized activations) are where quantization noise enters: their added
errors, as shares of the total, rank the ops and layers (a layer's share is the sum of its ops').
Float ops only pass the noise on, but some amplify it (a softmax over large attention scores, a
saturating tanh, LayerNorm statistics near zero): the few that amplify most are listed apart.

TF's tf.lite.experimental.QuantizationDebugger gives per-layer statistics for calibrated integer
graphs only (it instruments the quantizer's output with NumericVerify ops), not for dynamic-range
graphs, and needs the calibrated model; this works for every mode from the two finished graphs.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

EXPLAIN_TEXTS = 16  # every tensor of both graphs is kept per text: a few seconds for MiniLM int8
TOP_OPS = 5
_INTEGER_TYPES = (np.int8, np.uint8, np.int16)
LAYER_INDEX = re.compile(r"layer_\._(\d+)")  # transformers' TF scope of encoder layer N
_SCOPES = ("embeddings", "pooler", "pre_classifier", "classifier")


@dataclass(frozen=True)
class _Op:
    kind: str
    inputs: tuple
    outputs: tuple
    quantized: bool      # reads or writes an integer tensor with a scale: where quantization noise enters


def graph_ops(graph: bytes) -> tuple:
    """([_Op] in execution order, tensor names) of the main subgraph."""
    # deferred: TensorFlow's flatbuffer schema (seconds to import); edge-convert has it loaded by now
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils  # deferred with the schema above

    model = flatbuffer_utils.convert_bytearray_to_object(graph)
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kinds = [code_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model.operatorCodes]
    subgraph = model.subgraphs[0]
    names = [t.name.decode() for t in subgraph.tensors]
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}
    scaled = {i for i, t in enumerate(subgraph.tensors)
              if t.type in integer and t.quantization is not None and t.quantization.scale is not None
              and len(t.quantization.scale) > 0}
    ops = []
    for op in subgraph.operators:
        inputs, outputs = tuple(i for i in op.inputs if i >= 0), tuple(i for i in op.outputs if i >= 0)
        kind = kinds[op.opcodeIndex]
        ops.append(_Op(kind, inputs, outputs, kind != "DEQUANTIZE" and bool(scaled & set(inputs + outputs))))
    return ops, names


class _Activations:
    """One graph in the interpreter with every op output kept, read back as float64."""

    def __init__(self, graph: bytes):
        from ai_edge_litert.interpreter import Interpreter  # deferred like the rest of the interpreter users

        self.ops, self.names = graph_ops(graph)
        with warnings.catch_warnings():  # "for debugging purposes only": that is what this is
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_content=graph, experimental_preserve_all_tensors=True)
        self.interpreter.allocate_tensors()
        self.inputs = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
        details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        self.produced = {}
        for op in self.ops:
            for index in op.outputs:
                quantization = details[index]["quantization_parameters"]
                self.produced[index] = (quantization["scales"], quantization["zero_points"])

    def run(self, sample: dict) -> dict:
        """{tensor name: values} of every float or per-tensor-quantized op output for one input."""
        length = next(iter(sample.values())).shape[-1]
        if self.interpreter.get_input_details()[0]["shape"][-1] != length:  # a length-aware graph
            for index in self.inputs.values():
                self.interpreter.resize_tensor_input(index, [1, length])
            self.interpreter.allocate_tensors()
        for name, index in self.inputs.items():
            self.interpreter.set_tensor(index, sample[name])
        self.interpreter.invoke()
        values = {}
        for index, (scales, zero_points) in self.produced.items():
            value = self.interpreter.get_tensor(index)
            if value.dtype in _INTEGER_TYPES and len(scales) == 1:
                value = (value.astype(np.float64) - zero_points[0]) * scales[0]
            elif value.dtype != np.float32:
                continue  # int32 indices, shapes, booleans: not signal
            values[self.names[index]] = value.astype(np.float64)
        return values


def layer_of(tensor_name: str) -> str:
    """'layer 3', 'embeddings', 'pooler', 'classifier', ... from TF's scope in the tensor name."""
    first = tensor_name.split(";")[0]
    match = LAYER_INDEX.search(first)
    if match:
        return f"layer {match.group(1)}"
    scopes = first.split("/")
    return next((s for s in _SCOPES if s in scopes), "other")


def explain(reference_graph: bytes, quantized_graph: bytes, samples: Iterable[dict], top: int = TOP_OPS) -> dict:
    """The ops and layers that add most of the quantized graph's error against `reference_graph`
    (the fp32 graph it was made from), on `samples` ({input name: [1, seq_len] array})."""
    reference, quantized = _Activations(reference_graph), _Activations(quantized_graph)
    noise, power, texts = defaultdict(float), defaultdict(float), 0
    for sample in samples:
        expected, got = reference.run(sample), quantized.run(sample)
        for name, value in got.items():
            want = expected.get(name)
            if want is not None and want.shape == value.shape:
                noise[name] += float(np.sum((value - want) ** 2))
                power[name] += float(np.sum(want ** 2))
        texts += 1
    if not texts:
        raise ValueError("explain needs at least one sample")
    error = {name: noise[name] / power[name] for name in noise if power[name] > 0}
    names = quantized.names
    carried = {}  # tensor index -> the error reaching it (measured, else that of its inputs)
    created, amplified = [], []
    for op in quantized.ops:
        incoming = max((carried.get(i, 0.0) for i in op.inputs), default=0.0)
        measured = [(error[names[o]], names[o]) for o in op.outputs if names[o] in error]
        outgoing = max(measured)[0] if measured else incoming
        for o in op.outputs:
            carried[o] = error.get(names[o], outgoing)
        if measured:
            tensor = max(measured)[1]
            row = {"op": op.kind, "tensor": tensor, "layer": layer_of(tensor), "added": max(0.0, outgoing - incoming),
                   "relative_error": outgoing ** 0.5}
            (created if op.quantized else amplified).append(row)
    total = sum(r["added"] for r in created)
    layers = defaultdict(float)
    for row in created:
        row["share"] = row["added"] / total if total > 0 else 0.0
        layers[row["layer"]] += row["share"]
    created.sort(key=lambda r: -r["added"])
    amplified.sort(key=lambda r: -r["added"])
    output = next((error[names[o]] for op in reversed(quantized.ops) for o in op.outputs if names[o] in error), 0.0)

    def public(rows):
        return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k != "added"} for r in rows]

    return {
        "method": "per-op added relative noise power against the fp32 graph (see edge_slm.convert.explain)",
        "texts": texts,
        "tensors_compared": len(error),
        "output_relative_error": round(output ** 0.5, 6),
        "layers": [{"layer": name, "share": round(share, 6)}
                   for name, share in sorted(layers.items(), key=lambda item: -item[1])[:top]],
        "top_ops": public(created[:top]),
        "amplifiers": public(amplified[:3]),
    }


def render_explanation(label: str, explanation: dict) -> str:
    """Plain-text lines for the terminal: the layers and ops that carry most of the error."""
    lines = [f"{label}: logits off by {explanation['output_relative_error'] * 100:.2f} % (relative); "
             f"error added, by layer ({explanation['texts']} texts):"]
    lines += [f"  {layer['share'] * 100:5.1f} %  {layer['layer']}" for layer in explanation["layers"]]
    lines.append("  by op:")
    lines += [f"  {op['share'] * 100:5.1f} %  {op['op']:<16} {_short(op['tensor'])}" for op in explanation["top_ops"]]
    lines.append("  float ops that amplify the noise most (relative error after them):")
    lines += [f"  {op['relative_error'] * 100:5.1f} %  {op['op']:<16} {_short(op['tensor'])}"
              for op in explanation["amplifiers"]]
    return "\n".join(lines)


def _short(tensor_name: str) -> str:
    """The scope path after the model's own prefix, e.g. 'encoder/layer_._4/output/dense/Tensordot'."""
    first = tensor_name.split(";")[0]
    parts = first.split("/")
    return "/".join(parts[2:]) if len(parts) > 3 else first
