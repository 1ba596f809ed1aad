"""TF model -> TFLite flatbuffers, one per quantization mode, sharing the expensive steps.

The graph the device runs: int32 inputs [1, n] named after their roles (n any length up to the
maximum by default, shape_signature [1, -1]; exactly seq_len with --fixed-length), float32 logits
[1, num_labels]. Two measured choices keep conversion fast:
- the traced function is handed to the converter without a trackable object, so TF does not
  re-save the whole Keras model as a SavedModel on every call (that re-trace was ~85 % of
  MobileBERT's conversion time), and it is frozen once for all modes (freezing DistilBERT takes
  ~8 s, which TF's converter would repeat per call);
- integer modes (int8, int16x8) calibrate and quantize the fp32 flatbuffer, as TF's converter
  does internally after its own fp32 conversion, so the fp32 conversion is done once for all.
  This uses TF's calibrator and MLIR quantizer directly (tensorflow.lite.python internals;
  pyproject pins TF < 2.22, and tests compare the result with TF's public converter path).
fp16 and dynamic-range quantization happen inside the MLIR conversion, so each runs it once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edge_slm.common.errors import EdgeError
from edge_slm.common.native import captured_native_stderr

from .architectures import ArchitectureSpec
from .explain import LAYER_INDEX
from .tf_env import first_error_line, tensorflow


@dataclass(frozen=True)
class QuantMode:
    name: str
    description: str
    min_agreement: float       # default validation threshold: label agreement with the TF model
    integer: bool = False      # calibrated integer activations, made from the fp32 graph
    float_ops: tuple = ()      # TFLite op types the integer quantizer leaves in float


# The residual stream of BERT-family models has outlier channels: one int8 scale per tensor for
# it and for LayerNorm (decomposed into these ops) loses most of the signal. Measured on MiniLM
# fine-tuned on SST-2 (dev, 872 texts, seq 64): all-int8 lost 2.75 points and ran 10.8 ms; with
# these ops in float, 1.15 points and 8.8 ms (dynamic: 0.34 points, 3.1 ms; fp32 9.2 ms).
_LAYER_NORM_AND_RESIDUAL_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL", "SUB", "ADD")
# The attention core (scores Q.K^T, softmax, probabilities.V) stays float too: it is a small share of
# the work at short lengths, int8 softmax probabilities lose the small weights, and XNNPACK runs the
# float ops where the int8 ones ran slower kernels. Measured on the fine-tuned MiniLM (872 SST-2 dev
# texts, 3 disjoint sets of 50 train texts for calibration): 85.63 -> 85.93 % mean dev accuracy (TF
# fp32 86.47 %), edge-run 3.46 -> 2.06 ms per text; random-weight bare invokes at 128 tokens: TinyBERT
# 16.4 -> 3.7 ms, DistilBERT 52.7 -> 22.0, MobileBERT 44.0 -> 13.2 (litert, 1 thread, x86 with VNNI).
_ATTENTION_CORE_OPS = ("BATCH_MATMUL", "SOFTMAX")
# The embedding lookups (GATHER) are float too: a calibrated int8 lookup gives the whole word table one
# scale (and the position and token-type tables a coarse shared one). The word table is then stored
# in int8 with a scale per column (precision.word_table_by_column), the others in float32 (small).
# Fine-tuned MiniLM, same 3 calibration sets as above: 85.93 -> 86.24 % mean, file 23.6 -> 24.2 MB.
_EMBEDDING_LOOKUP_OPS = ("GATHER",)

QUANT_MODES = {
    m.name: m
    for m in (
        QuantMode("fp32", "float32, no quantization", 0.99),
        QuantMode("fp16", "float16 weights, float32 compute", 0.98),
        QuantMode("dynamic", "int8 weights, activations quantized on the fly (dynamic range)", 0.95),
        QuantMode("int8", "int8 weights and activations, calibrated; LayerNorm, residual adds, the attention "
                          "core (scores, softmax, weighted sum) and the embedding lookups stay float",
                  0.90, integer=True,
                  float_ops=_LAYER_NORM_AND_RESIDUAL_OPS + _ATTENTION_CORE_OPS + _EMBEDDING_LOOKUP_OPS),
        QuantMode("int16x8", "int16 activations, int8 weights, calibrated", 0.95, integer=True),
    )
}


FLOAT_MODES = ("fp32", "fp16")


@dataclass(frozen=True)
class CompatTarget:
    name: str
    per_tensor_dynamic_dense: bool  # dynamic range: per-tensor FULLY_CONNECTED weights (op version < 12)
    per_channel_dequantize: bool    # DEQUANTIZE version 5 (per-channel int8), e.g. a word table by column


# tflite-runtime 2.14 (the last release) rejects per-channel dynamic-range FULLY_CONNECTED
# (op version 12); per-tensor weights give a version it knows. Nor has it DEQUANTIZE version 5, so
# its word tables keep one int8 scale. Its fp32, fp16 and int8 graphs from TF 2.21 load as they are
# (tests/test_convert_compat.py runs all of them there).
COMPAT_TARGETS = {t.name: t for t in (CompatTarget("tflite-runtime-2.14", per_tensor_dynamic_dense=True,
                                                   per_channel_dequantize=False),)}


def trace(model, spec: ArchitectureSpec, seq_len: int, dynamic: bool = True) -> tuple:
    """Trace and freeze the function serving logits, once: for any length up to seq_len (dynamic,
    input shape_signature [1, -1]: the runtime resizes the inputs to each request's length), or for
    exactly seq_len tokens (--fixed-length: every request padded to seq_len).

    Returns what TF's converter computes in its own freezing step: (graph_def, input tensors,
    output tensors, frozen function). Autograph is off: the transformers TF classes are plain
    graph-compatible Python, and autograph's source rewriting took most of the tracing time.
    """
    tf = tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph  # deferred: TensorFlow loads only when converting

    signature = [tf.TensorSpec([1, None if dynamic else seq_len], tf.int32, name=name) for name in spec.inputs]

    def serve(*inputs):
        return {"logits": model(dict(zip(spec.inputs, inputs)), training=False).logits}

    tracing = tf.function(serve, input_signature=signature, autograph=False)
    with dense_as_batched_matmul(tf) if dynamic else contextlib.nullcontext():
        concrete = tracing.get_concrete_function()
    frozen_function, graph_def = convert_variables_to_constants_v2_as_graph(concrete, lower_control_flow=False)
    inputs = [t for t in frozen_function.inputs if t.dtype != tf.resource]
    return graph_def, inputs, frozen_function.outputs, frozen_function


@contextlib.contextmanager
def dense_as_batched_matmul(tf):
    """While tracing a length-aware graph, run Keras Dense on [1, L, H] as one matmul on the rank-3
    input, which TF's converter writes as a FULLY_CONNECTED that keeps [1, L, N] (as at a fixed length).

    Keras Dense calls tf.tensordot on rank-3 inputs, which with an unknown L computes its reshape
    targets at run time (SHAPE, GATHER, REDUCE_PROD, PACK, CONCATENATION per dense layer). XNNPACK
    cannot take those ops, so its graph fell apart around them: MobileBERT ran 3,446 ops in 436
    delegate partitions (860 ops in 2 at a fixed length). Flattening to [L, H] with constant reshape
    targets took that to 1,159 ops in 3, but left 290 reshapes around the dense layers that XNNPACK
    re-plans on every length change; with this, 872 ops, the fixed graph's plus the position ids'
    range and the partition ends. Same arithmetic, same weights.
    (Making every computed reshape target constant, e.g. the attention masks', broke TF's int8
    calibrator on length-aware graphs: tensor shapes stuck at the first sample's length.)"""
    modules = [tf, tf.compat.v2]  # tf_keras calls it through tensorflow.compat.v2
    saved = [(module, module.tensordot) for module in modules]
    original = tf.tensordot

    def tensordot(a, b, axes, name=None):
        dims = a.shape.as_list() if getattr(a, "shape", None) is not None and a.shape.rank is not None else None
        if (dims and len(dims) >= 3 and axes in (1, [[len(dims) - 1], [0]]) and b.shape.rank == 2
                and dims[-1] is not None and b.shape[-1] is not None):
            return tf.matmul(a, b, name=name)
        return original(a, b, axes, name=name)

    for module in modules:
        module.tensordot = tensordot
    try:
        yield
    finally:
        for module, before in saved:
            module.tensordot = before


def _converter(frozen: tuple):
    """TF's concrete-function converter, minus its per-call freezing (seconds per call for
    DistilBERT's 66M constants): it gets the graph frozen once by trace()."""
    from tensorflow.lite.python.lite import TFLiteFrozenGraphConverterV2  # deferred: TensorFlow loads only when converting

    class FrozenOnceConverter(TFLiteFrozenGraphConverterV2):
        def _freeze_concrete_function(self):
            return frozen

    return FrozenOnceConverter([frozen[3]])


def convert_graph(frozen: tuple, mode: QuantMode, compat: Optional[CompatTarget]) -> bytes:
    """Run TF's converter for fp32, fp16 or dynamic (integer modes go through quantize_integer)."""
    tf = tensorflow()
    if mode.integer:
        raise ValueError(f"{mode.name} is made from the fp32 graph by quantize_integer")
    converter = _converter(frozen)
    if mode.name in ("fp16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode.name == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode.name == "dynamic" and compat and compat.per_tensor_dynamic_dense:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    with captured_native_stderr() as log:
        try:
            return bytes(converter.convert())
        except Exception as e:
            failure = e
    raise EdgeError(f"TFLite conversion ({mode.name}) failed: {first_error_line(log, str(failure).splitlines()[0])}",
                    "rerun with EDGE_SLM_DEBUG=1 for the converter's full log")


def quantize_integer(fp32_graph: bytes, mode: QuantMode, representative: Callable) -> bytes:
    """Calibrate the fp32 graph on `representative()` (lists of input arrays in graph order) and
    quantize it to int8 or int16x8 activations; inputs and logits stay int32/float32. Callers soften
    the attention mask's constant first (see soften_attention_mask). int8 leaves mode.float_ops in
    float (edge-convert's int8 goes through calibrate_int8 and quantize_calibrated itself, to keep
    some dense layers' outputs float: precision.float_output_nodes)."""
    if mode.name == "int8":
        return quantize_calibrated(calibrate_int8(fp32_graph, representative), mode)
    tf = tensorflow()
    from tensorflow.lite.python.convert import deduplicate_readonly_buffers  # deferred: TensorFlow loads only when converting
    from tensorflow.lite.python.optimize import calibrator  # deferred: TensorFlow loads only when converting

    with captured_native_stderr() as log:
        try:
            calibrate = calibrator.Calibrator(calibrator.add_intermediate_tensors(fp32_graph))
            # 16x8 goes through the older quantizer in TF too; float fallback for ops without
            # 16x8 kernels, int64 bias as TF's default for 16x8.
            quantized = calibrate.calibrate_and_quantize(
                representative, tf.float32, tf.float32, True, activations_type=tf.int16, bias_type=tf.int64)
            return bytes(deduplicate_readonly_buffers(quantized))
        except Exception as e:
            failure = e
    raise _quantization_failed(mode.name, log, failure)


def calibrate_int8(fp32_graph: bytes, representative: Callable) -> bytes:
    """The fp32 graph with each tensor's calibrated range, ready for quantize_calibrated (which can
    run on it several times, e.g. to compare which layers to leave in float)."""
    from tensorflow.lite.python.optimize import calibrator  # deferred: TensorFlow loads only when converting

    with captured_native_stderr() as log:
        try:
            return bytes(calibrator.Calibrator(calibrator.add_intermediate_tensors(fp32_graph))
                         .calibrate(representative))
        except Exception as e:
            failure = e
    raise _quantization_failed("int8", log, failure)


def quantize_calibrated(calibrated: bytes, mode: QuantMode, float_nodes=()) -> bytes:
    """int8 from a calibrated graph: what TFLiteConverter does for int8 with experimental_new_quantizer
    (the default), leaving `float_nodes` and mode.float_ops in float."""
    tf = tensorflow()
    from tensorflow.lite.python.convert import deduplicate_readonly_buffers, mlir_quantize  # deferred: TensorFlow loads only when converting

    with captured_native_stderr() as log:
        try:
            quantized = mlir_quantize(calibrated, False, input_data_type=tf.float32, output_data_type=tf.float32,
                                      denylisted_ops=list(mode.float_ops) or None,
                                      denylisted_nodes=list(float_nodes) or None)
            return bytes(deduplicate_readonly_buffers(quantized))
        except Exception as e:
            failure = e
    raise _quantization_failed(mode.name, log, failure)


def _quantization_failed(mode_name: str, log, failure: Exception) -> EdgeError:
    return EdgeError(f"{mode_name} quantization failed: {first_error_line(log, str(failure).splitlines()[0])}",
                     "rerun with EDGE_SLM_DEBUG=1 for the quantizer's full log")


def graph_facts(graph: bytes) -> dict:
    """Inputs and outputs as the device interpreter (ai-edge-litert) reports them, and the op set with versions."""
    from ai_edge_litert.interpreter import Interpreter  # deferred: the interpreter library loads only for this check
    from tensorflow.lite.python import schema_py_generated as schema  # deferred: TensorFlow loads only when converting
    from tensorflow.lite.tools import flatbuffer_utils  # deferred: TensorFlow loads only when converting

    interpreter = Interpreter(model_content=graph)  # the device runtime's view of the graph

    def tensors(details):
        return [{"name": d["name"], "shape": [int(x) for x in d["shape"]],
                 "shape_signature": [int(x) for x in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
                for d in details]

    model = flatbuffer_utils.convert_bytearray_to_object(graph)
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    opcodes = [(code_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM"), c.version)
               for c in model.operatorCodes]
    counts = Counter()
    float_ops = Counter()
    subgraph = model.subgraphs[0]
    for op in subgraph.operators:
        name = opcodes[op.opcodeIndex][0]
        counts[name] += 1
        outputs = [subgraph.tensors[i].type for i in op.outputs if i >= 0]
        if name != "DEQUANTIZE" and any(t == schema.TensorType.FLOAT32 for t in outputs):
            float_ops[name] += 1
    versions = {}
    for name, version in opcodes:
        versions.setdefault(name, []).append(version)
    return {
        "inputs": tensors(interpreter.get_input_details()),
        "outputs": tensors(interpreter.get_output_details()),
        "op_count": sum(counts.values()),
        "op_counts": dict(sorted(counts.items())),
        "float_op_count": sum(float_ops.values()),
        "float_op_types": sorted(float_ops),
        "op_versions": {name: sorted(set(v)) for name, v in sorted(versions.items())},
    }


def check_graph_io(facts: dict, spec: ArchitectureSpec, seq_len: int, num_labels: int, dynamic: bool = True) -> list:
    """[{"name", "role"}] of the inputs, after checking the graph is the one the device expects."""
    inputs = facts["inputs"]
    roles = []
    expected = [1, -1] if dynamic else [1, seq_len]
    for tensor in inputs:
        role = tensor["name"] if tensor["name"] in spec.inputs else None  # trace() names them by role
        if role is None or tensor["shape_signature"] != expected or tensor["dtype"] != "int32":
            raise RuntimeError(f"converted graph input {tensor} is not an int32 {expected} {spec.inputs}")
        roles.append({"name": tensor["name"], "role": role})
    if sorted(r["role"] for r in roles) != sorted(spec.inputs):
        raise RuntimeError(f"converted graph inputs {inputs} do not match {spec.inputs}")
    outputs = facts["outputs"]
    if len(outputs) != 1 or outputs[0]["shape"] != [1, num_labels] or outputs[0]["dtype"] != "float32":
        raise RuntimeError(f"converted graph outputs {outputs} are not float32 logits [1, {num_labels}]")
    return roles


_RUN_ONCE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
length = int(sys.argv[2])  # a length-aware graph runs at its longest: the shapes its kernels must take
for d in interpreter.get_input_details():
    if -1 in d["shape_signature"]:
        interpreter.resize_tensor_input(d["index"], [1, length])
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
interpreter.invoke()
"""


def check_runtime_survives(path, mode: QuantMode, max_len: int, timeout: float = 300) -> None:
    """Load and run the graph once in a child process: some graphs TF produces abort the TFLite
    runtime in a kernel's Prepare (e.g. TF 2.21's 16x8 BERT graphs, in SUB), which would kill
    this process, and on the device the app, instead of raising."""
    child = subprocess.run([sys.executable, "-c", _RUN_ONCE, str(path), str(max_len)], capture_output=True, text=True,
                           timeout=timeout)
    if child.returncode < 0 or child.returncode > 1:
        raise EdgeError(f"the {mode.name} graph crashes the TFLite runtime (ai-edge-litert) when it runs "
                        f"(exit status {child.returncode}); TF's {mode.name} quantization of this model is broken",
                        "use another --quant mode (dynamic or int8)")
    if child.returncode == 1:
        last = (child.stderr.strip().splitlines() or ["no message"])[-1]
        raise EdgeError(f"the {mode.name} graph fails in the TFLite runtime: {last[:200]}",
                        "rerun with EDGE_SLM_DEBUG=1; report it with the model's config")


# e^-20 ~ 2e-9: masked positions still get no attention (fp32 logits move ~1e-5 on MiniLM), while
# the attention scores keep an int8 step of ~0.13 instead of ~40 (MiniLM int8 agreement 45% -> 69%).
MASK_MAGNITUDE_FOR_INTEGER_MODES = 20.0
MASK_CONSTANT_MIN = 1e4  # |c| of the "masked position" constants: -10000 (BERT), 1e30 (DistilBERT)


def soften_attention_mask(fp32_graph: bytes, magnitude: float) -> bytes:
    """The fp32 graph with the huge constants of its additive attention mask set to ±magnitude.

    BERT-family models add (1 - mask) * -10000 (DistilBERT: 1e30) to the attention scores. Integer
    quantization then gives that sum a scale of ~40 per step, which rounds every real score (|s| < 15)
    to zero: attention becomes uniform and the logits noise. With ±magnitude (e^-magnitude is
    still ~0 after softmax) the scores keep a usable scale. Only constants on the data path from the
    attention_mask input are touched.
    """
    from tensorflow.lite.tools import flatbuffer_utils  # deferred: TensorFlow loads only when converting

    model = flatbuffer_utils.convert_bytearray_to_object(fp32_graph)
    subgraph = model.subgraphs[0]
    mask_inputs = [i for i in subgraph.inputs if subgraph.tensors[i].name.decode() == "attention_mask"]
    reached, changed = set(mask_inputs), True
    while changed:  # every tensor computed from the mask
        changed = False
        for op in subgraph.operators:
            if any(i in reached for i in op.inputs) and not set(op.outputs) <= reached:
                reached.update(op.outputs)
                changed = True
    for op in subgraph.operators:
        if not any(i in reached for i in op.inputs):
            continue
        for i in op.inputs:
            buffer = model.buffers[subgraph.tensors[i].buffer] if i >= 0 else None
            if buffer is None or buffer.data is None or subgraph.tensors[i].type != 0:  # float32 constants
                continue
            values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.float32)
            if values.size == 1 and abs(values[0]) >= MASK_CONSTANT_MIN:
                buffer.data = np.array([np.sign(values[0]) * magnitude], np.float32).tobytes()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def opcode_index(model, schema, builtin: int, version: int) -> int:
    """Index of `builtin`'s operator code in the model (added if missing), at `version` at least."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode = builtin, min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


# Delegate partitions of a length-aware graph: at most about this many ops each (split_delegate_partitions).
OPS_PER_PARTITION = 200


def split_delegate_partitions(graph: bytes, ops_per_partition: Optional[int] = None) -> tuple:
    """(graph, boundaries): a length-aware graph with an exact copy (TILE, multiples 1) of the
    hidden states between every few encoder layers, so that XNNPACK takes the encoder as several
    delegate partitions of at most ~ops_per_partition (default OPS_PER_PARTITION) ops instead of one.

    Why: XNNPACK re-plans a partition's memory whenever the input length changes, in time that grows
    with the square of the partition's values (xnn_plan_value_allocation_tracker led the profile).
    MobileBERT's 24 layers (~1,150 ops) were one partition: ~0.8 ms per length change against 2.6 ms
    for the inference itself at 25 tokens, and SST-2 dev in order changes length on 842 of 872 texts.
    XNNPACK does not take TILE, so each copy ends a partition; it costs one copy of the hidden states
    (25 x 512 floats at 25 tokens). The layers per partition follow from the largest layer's op count:
    MobileBERT (36 ops per layer) gets a copy every 5 layers (4 copies), DistilBERT and a 6-layer
    MiniLM one, TinyBERT's 4 layers none. Only float hidden states are copied. Same arithmetic: the logits
    are bit-identical. Fixed-length graphs never re-plan and are not split.
    """
    from tensorflow.lite.python import schema_py_generated as schema  # deferred: TensorFlow loads only when converting
    from tensorflow.lite.tools import flatbuffer_utils  # deferred: TensorFlow loads only when converting

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(graph))  # writable: inputs are rewired
    subgraph = model.subgraphs[0]

    def layer_of(tensor_index: int) -> Optional[int]:
        found = LAYER_INDEX.search(subgraph.tensors[tensor_index].name.decode().split(";")[0])
        return int(found.group(1)) if found else None

    op_layers = [layer_of(op.outputs[0]) if len(op.outputs) else None for op in subgraph.operators]
    ops_per_layer = Counter(layer for layer in op_layers if layer is not None)
    if not ops_per_layer:
        return graph, 0
    layers_per_partition = max(1, (ops_per_partition or OPS_PER_PARTITION) // max(ops_per_layer.values()))
    producer_layer = {out: layer for op, layer in zip(subgraph.operators, op_layers) for out in op.outputs}
    # Hidden states leaving layer k for layer k+1, at each partition's end: {tensor: [(op, input slot)]}
    boundaries: dict = {}
    for op_number, (op, layer) in enumerate(zip(subgraph.operators, op_layers)):
        if layer is None or layer % layers_per_partition or layer == 0:
            continue
        for slot, tensor in enumerate(op.inputs):
            if (tensor >= 0 and producer_layer.get(tensor) == layer - 1
                    and subgraph.tensors[tensor].type == schema.TensorType.FLOAT32):
                boundaries.setdefault(tensor, []).append((op_number, slot))
    if not boundaries:
        return graph, 0
    tile = opcode_index(model, schema, schema.BuiltinOperator.TILE, 1)
    inserted_before: dict = {}
    for tensor, readers in boundaries.items():
        source = subgraph.tensors[tensor]
        copy = schema.TensorT()
        copy.name = f"{source.name.decode()}/partition_end"
        copy.type, copy.shape, copy.buffer = source.type, list(source.shape), 0
        copy.shapeSignature = None if source.shapeSignature is None else list(source.shapeSignature)
        multiples = schema.TensorT()
        multiples.name, multiples.type, multiples.shape = f"{copy.name}/multiples", schema.TensorType.INT32, [len(copy.shape)]
        model.buffers.append(schema.BufferT())
        model.buffers[-1].data = np.ones(len(copy.shape), np.int32).view(np.uint8)
        multiples.buffer = len(model.buffers) - 1
        subgraph.tensors.extend([copy, multiples])
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = tile, [tensor, len(subgraph.tensors) - 1], [len(subgraph.tensors) - 2]
        for op_number, slot in readers:
            subgraph.operators[op_number].inputs[slot] = len(subgraph.tensors) - 2
        inserted_before.setdefault(min(op_number for op_number, _ in readers), []).append(op)
    operators = []
    for op_number, op in enumerate(subgraph.operators):
        operators.extend(inserted_before.get(op_number, ()))
        operators.append(op)
    subgraph.operators = operators
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), len(boundaries)
