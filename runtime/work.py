"""Work per inference: the multiply-accumulates (MACs) a graph does at a given sequence length,
counted from its own ops and tensor shapes, and the GOP/s a run achieved.

Counted: FULLY_CONNECTED (output elements x input depth), BATCH_MATMUL (output elements x the
contracted dimension), CONV_2D (output elements x kernel height x width x input channels),
DEPTHWISE_CONV_2D (output elements x kernel height x width). Element-wise ops, softmax, layer norm
and gathers are not MACs and are left out; so the figure is the matrix work, which dominates
BERT-family models. 1 MAC = 2 operations (GOP/s).

Weight bytes: the constant tensors those ops read (filters and biases, each tensor once, as stored in
the artifact), which every inference reads whatever its length. Short requests do little work per
weight byte, so once the weights do not fit the CPU's caches they are streamed from memory on every
inference: the weight GB/s a run needed shows when a board is limited by memory bandwidth rather
than by arithmetic. (A runtime may repack weights: XNNPACK adds per-channel sums and scales, and
widens fp16 weights to fp32.)

Shapes come from a second interpreter of the same file without the default delegate: XNNPACK
takes over partitions of the graph and the interpreter no longer updates the shapes of the tensors
inside them, so the delegated interpreter reports stale shapes after a resize. That interpreter is
resized to each length and run once (reshapes whose target is computed at run time only know their
output shape after an invoke). The op and tensor listing is the interpreter's `_get_ops_details` /
`_get_tensor_details`: TFLite has no public API for it (present in ai-edge-litert 2.x,
tflite-runtime 2.14 and tf.lite); where it is missing the count is None, never a guess.
"""

from __future__ import annotations

import sys
from typing import Iterable, Optional

import numpy as np

COUNTED_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")


def op_macs(op_name: str, input_shapes: list, output_shape: list) -> int:
    """MACs of one op from its tensors' shapes (0 for ops that are not matrix work)."""
    out = int(np.prod(output_shape)) if output_shape else 0
    if op_name == "FULLY_CONNECTED":
        return out * int(input_shapes[1][-1])           # weights [units, depth]
    if op_name == "BATCH_MATMUL":
        rows, cols = input_shapes[0][-2:]               # lhs [..., M, K], or [..., K, M] when adjoint
        return out * int(cols if rows == output_shape[-2] else rows)
    if op_name == "CONV_2D":
        return out * int(np.prod(input_shapes[1][1:]))  # filter [out channels, h, w, in channels]
    if op_name == "DEPTHWISE_CONV_2D":
        return out * int(input_shapes[1][1] * input_shapes[1][2])  # filter [1, h, w, channels]
    return 0


def stored_weight(tensor: int, producers: dict, graph_inputs: set) -> Optional[int]:
    """The stored constant behind an op's input, or None for an activation. A constant is a tensor
    that no op writes and that is not a graph input; fp16 graphs store the weights in float16 and
    widen them with a DEQUANTIZE op, whose input is then the stored weight."""
    producer = producers.get(tensor)
    if producer is None:
        return None if tensor in graph_inputs else tensor
    if producer["op_name"] == "DEQUANTIZE" and producer["inputs"][0] not in producers:
        return producer["inputs"][0]
    return None


def tensor_bytes(details: dict, itemsize: Optional[int] = None) -> int:
    return int(np.prod(details["shape"])) * (itemsize or np.dtype(details["dtype"]).itemsize)


class MacCounter:
    """MACs per inference of one graph, per sequence length (cached), and the bytes of weights the
    matrix ops read (the same at every length)."""

    def __init__(self, model_path, interpreter_class, input_roles: dict, dynamic: bool,
                 weight_itemsize: Optional[int] = None):
        self.model_path = str(model_path)
        # bytes per weight value of the model that runs (None: as stored in this graph); a TF baseline
        # counted on its artifact's graph holds the same weights in float32
        self.weight_itemsize = weight_itemsize
        self.interpreter_class = interpreter_class
        self.input_roles = input_roles  # input tensor name -> role
        self.dynamic = dynamic
        self._interpreter = None
        self._cache: dict = {}
        self.unavailable: Optional[str] = None
        self.weight_bytes: Optional[int] = None  # known after the first count

    def _open(self):
        module = sys.modules[self.interpreter_class.__module__]
        resolver = getattr(module, "OpResolverType", None)
        if resolver is None or not hasattr(self.interpreter_class, "_get_ops_details"):
            self.unavailable = "this runtime does not list a graph's ops"
            return None
        interpreter = self.interpreter_class(model_path=self.model_path, num_threads=1,
                                             experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        return interpreter

    def macs(self, length: int) -> Optional[int]:
        if length in self._cache:
            return self._cache[length]
        if self._interpreter is None and self.unavailable is None:
            self._interpreter = self._open()
        interpreter = self._interpreter
        if interpreter is None:
            return None
        inputs = interpreter.get_input_details()
        if not self.dynamic and int(inputs[0]["shape"][-1]) != length:
            return None  # a fixed-length graph does only its own length's work
        if self.dynamic:
            for d in inputs:
                interpreter.resize_tensor_input(d["index"], [1, length])
            interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            ids = np.zeros(d["shape"], d["dtype"])
            ids[...] = 1 if self.input_roles.get(d["name"]) != "token_type_ids" else 0
            interpreter.set_tensor(d["index"], ids)
        interpreter.invoke()
        ops = interpreter._get_ops_details()  # no public listing: see the module doc
        producers = {i: op for op in ops for i in op["outputs"]}
        graph_inputs = {d["index"] for d in inputs}
        total, weights = 0, set()
        for op in ops:
            if op["op_name"] not in COUNTED_OPS:
                continue
            shapes = [list(interpreter._get_tensor_details(i, 0)["shape"]) if i >= 0 else None
                      for i in op["inputs"]]
            output = list(interpreter._get_tensor_details(op["outputs"][0], 0)["shape"])
            total += op_macs(op["op_name"], shapes, output)
            weights.update(stored_weight(i, producers, graph_inputs) for i in op["inputs"] if i >= 0)
        weights.discard(None)
        if self.weight_bytes is None:
            self.weight_bytes = sum(tensor_bytes(interpreter._get_tensor_details(i, 0), self.weight_itemsize)
                                    for i in weights)
        self._cache[length] = total
        return total

    def close(self) -> None:
        self._interpreter = None


def work_summary(counter: MacCounter, run_lengths: Iterable, latencies_ms: Iterable) -> dict:
    """MACs per inference (mean over the runs, and per length) and the GOP/s the runs achieved:
    2 x all MACs done / all time spent."""
    run_lengths = list(run_lengths)
    per_length = {}
    for length in sorted(set(run_lengths)):
        per_length[length] = counter.macs(length)
        if per_length[length] is None:
            return {"macs_per_inference": None, "gops_per_s": None,
                    "note": counter.unavailable or f"the graph does not run at {length} tokens"}
    total_macs = sum(per_length[n] for n in run_lengths)
    seconds = sum(latencies_ms) / 1e3
    weight_bytes = counter.weight_bytes
    return {
        "macs_per_inference": total_macs / len(run_lengths) if run_lengths else None,
        "macs_by_length": {str(n): m for n, m in per_length.items()},
        "gops_per_s": 2 * total_macs / seconds / 1e9 if seconds > 0 else None,
        "weight_bytes_per_inference": weight_bytes,
        # the memory traffic the weights alone need when no cache holds them
        "weight_gb_per_s": (weight_bytes * len(run_lengths) / seconds / 1e9
                            if weight_bytes is not None and seconds > 0 else None),
        "counted_ops": list(COUNTED_OPS),
    }
