"""A loaded model: artifact + tokenizer + interpreter, with buffers prepared once.

The per-inference path is: tokenize into preallocated arrays, set_tensor per input, invoke,
read logits. Nothing on that path allocates more than the token list.

Length-aware graphs (input shape_signature [1, -1], edge-convert's default) run each request at
its own number of tokens: the inputs are resized (resize_tensor_input + allocate_tensors) only
when the length differs from the previous request's. That costs 0.05-0.3 ms here for
TinyBERT and DistilBERT, and 0.5-0.65 ms for MobileBERT, most of it in XNNPACK re-planning on
the first invoke after the resize (0.8-0.9 ms before the converter kept each XNNPACK partition to a
few layers: convert/graph.py split_delegate_partitions). Rounding lengths up to
multiples of 8 to save resizes gained nothing on SST-2 dev order: it pays for padding on every
request. Fixed-length graphs pad every request to their length.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .artifact import Artifact, read_artifact
from .backends import DEFAULT_DELEGATE, Backend, open_interpreter, resolve_backend, with_delegate
from .work import MacCounter
from edge_slm.common.errors import EXIT_RUNTIME_REFUSED, EdgeError

DEFAULT_SEQ_LEN = 128
# A plain graph that takes any length names no longest; BERT-family position tables hold 512 rows, and
# past that a resize would only ask for attention arenas that grow with the square of the length.
PLAIN_GRAPH_LONGEST = 512


@dataclass
class Prediction:
    index: int
    label: str
    probability: float
    probabilities: list
    logits: list
    tokens: Optional[int] = None  # the text's tokens ([CLS] and [SEP] included)


@dataclass
class InputSlot:
    role: str      # input_ids | attention_mask | token_type_ids (guessed from names in a plain .tflite)
    index: int     # interpreter tensor index
    buffer: np.ndarray  # (1, longest sequence)


class SequenceBuffers:
    """Input arrays as long as the longest sequence, and the length the next request runs at:
    its own number of tokens (length-aware graph), or `pad_to` (fixed-length graph, --seq-len)."""

    def __init__(self, arrays: dict, dynamic: bool):
        self.full = arrays                      # role -> (1, max_len) array
        self.max_len = next(iter(arrays.values())).shape[-1]
        self.dynamic = dynamic
        self.pad_to = None if dynamic else self.max_len
        self.length = self.max_len              # of the prepared request
        self._views = {self.max_len: arrays}    # width -> role -> (1, width) view

    def pad_every_request_to(self, length: Optional[int]) -> None:
        """Run every request at `length` tokens (None: each at its own, for a length-aware graph)."""
        if length is None:
            self.pad_to = None if self.dynamic else self.max_len
            return
        if not self.dynamic and length != self.max_len:
            raise EdgeError(f"this fixed-length graph runs only at {self.max_len} tokens, not {length}",
                            "omit --seq-len, or convert without --fixed-length for other lengths")
        if not 2 <= length <= self.max_len:
            raise EdgeError(f"--seq-len must be within 2..{self.max_len} (the artifact's longest sequence), "
                            f"got {length}", f"e.g. --seq-len {self.max_len}")
        self.pad_to = length

    @property
    def width(self) -> int:
        """How many tokens a request may have: the longest sequence, or the length every request pads to."""
        return self.pad_to or self.max_len

    def prepare_ids(self, tokenizer, ids: list) -> int:
        """Write a request's token ids (at most `width`) into the buffers; returns the number of real tokens."""
        width = self.width
        views = self._views.get(width)
        if views is None:
            views = self._views[width] = {role: array[:, :width] for role, array in self.full.items()}
        tokens = tokenizer.fill(ids, views)
        self.length = self.pad_to or tokens
        return tokens

    def current(self, role: str) -> np.ndarray:
        return self.full[role][:, :self.length]


class Model:
    def __init__(self, artifact: Artifact, backend: Backend, interpreter, init_seconds: float):
        self.artifact = artifact
        self.backend = backend
        self.interpreter = interpreter
        self.init_seconds = init_seconds
        self.metadata = artifact.metadata
        self.labels = list(artifact.labels)
        self.tokenizer = None
        details = interpreter.get_input_details()
        self.dynamic = takes_any_length(details)
        self.seq_len = self._longest_sequence(details)
        self._make_buffers(details)
        self.output_index = self._output_index()
        self.length = int(details[0]["shape"][-1])  # what the interpreter is allocated for
        self.resizes = 0
        self.resize_seconds = 0.0
        self._mac_counter = None
        if artifact.has_metadata:
            from .tokenizer import WordPieceTokenizer  # deferred: a plain .tflite needs no tokenizer tables

            self.tokenizer = WordPieceTokenizer.from_metadata(artifact.vocab_text, self.metadata["tokenizer"])

    # ---- set-up -----------------------------------------------------------------------------
    def _longest_sequence(self, details: list) -> int:
        graph_len = int(details[0]["shape_signature"][-1])
        if not self.metadata:
            return DEFAULT_SEQ_LEN if self.dynamic else int(details[0]["shape"][-1])
        max_len = self.metadata["tokenizer"]["max_seq_len"]
        # Artifacts made before length-aware graphs have no "sequence" (fixed-length): the graph says.
        kind = (self.metadata.get("sequence") or {}).get("kind")
        if kind not in (None, "dynamic" if self.dynamic else "fixed"):
            raise EdgeError(f"{self.artifact.path}: metadata says a {kind}-length graph, but the graph's input "
                            f"shape is {[int(x) for x in details[0]['shape_signature']]}",
                            "re-create the artifact with edge-convert")
        if not self.dynamic and graph_len != max_len:
            raise EdgeError(f"{self.artifact.path}: metadata max_seq_len {max_len} != graph input length "
                            f"{graph_len}", "re-create the artifact with edge-convert")
        return max_len

    def _make_buffers(self, details: list) -> None:
        """Input slots and their arrays, `seq_len` tokens long."""
        self.slots = self._input_slots(details)
        self.buffers = {slot.role: slot.buffer for slot in self.slots}
        self.sequence = SequenceBuffers(self.buffers, self.dynamic)

    def _input_slots(self, details: list) -> list:
        roles = _roles_by_tensor_name(self.metadata, details) if self.metadata else {}
        slots = []
        for d in details:
            shape = tuple(int(x) if x > 0 else 1 for x in d["shape_signature"][:-1]) + (self.seq_len,)
            role = roles.get(d["name"]) or _guess_role(d["name"])
            slots.append(InputSlot(role, d["index"], np.zeros(shape, dtype=d["dtype"])))
        return slots

    def _output_index(self) -> int:
        details = self.interpreter.get_output_details()
        if self.metadata:
            wanted = {o["name"] for o in self.metadata["outputs"] if o.get("role") == "logits"}
            for d in details:
                if d["name"] in wanted:
                    return d["index"]
        return details[0]["index"]

    # ---- facts ------------------------------------------------------------------------------
    @property
    def random_weights(self) -> Optional[bool]:
        return self.metadata["random_weights"] if self.metadata else None

    @property
    def file_bytes(self) -> int:
        return self.artifact.file_size

    def describe(self) -> dict:
        return {
            "path": str(self.artifact.path),
            "file_bytes": self.artifact.file_size,
            "has_metadata": self.artifact.has_metadata,
            "metadata": self.metadata,
            "inputs": [{"role": s.role, "shape": list(s.buffer.shape), "dtype": str(s.buffer.dtype)}
                       for s in self.slots],
            "sequence": {"kind": "dynamic" if self.dynamic else "fixed", "max_len": self.seq_len},
        }

    # ---- inference --------------------------------------------------------------------------
    def require_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise EdgeError(f"{self.artifact.path} is a plain .tflite without edge-slm metadata: it has "
                            "no vocabulary, so it cannot take text", "use --bench (random inputs), or "
                            "convert the model with edge-convert")

    def pad_every_request_to(self, length: Optional[int]) -> None:
        """Run every request at `length` tokens (None: each at its own, for a length-aware graph). A plain
        .tflite that takes any length names no longest: its buffers grow to the length asked, and the
        graph itself says at invoke whether it runs that long."""
        if length is not None and self.dynamic and not self.metadata and length > self.seq_len:
            if length > PLAIN_GRAPH_LONGEST:
                raise EdgeError(f"--seq-len {length} is past {PLAIN_GRAPH_LONGEST}, the longest edge-run runs a plain "
                                "graph at (BERT-family position tables hold 512)",
                                f"pass --seq-len {PLAIN_GRAPH_LONGEST} or less")
            self.seq_len = length
            self._make_buffers(self.interpreter.get_input_details())
        self.sequence.pad_every_request_to(length)

    def tokenize(self, text: str) -> list:
        """`text`'s token ids as the next request takes them ([CLS] and [SEP] included, truncated to fit)."""
        self.require_tokenizer()
        return self.tokenizer.encode_ids(text, self.sequence.width)

    def prepare(self, text: str) -> int:
        """Tokenize `text` into the input buffers; returns the number of real tokens."""
        return self.prepare_ids(self.tokenize(text))

    def prepare_ids(self, ids: list) -> int:
        """Token ids from `tokenize` into the input buffers; returns the number of real tokens."""
        return self.sequence.prepare_ids(self.tokenizer, ids)

    def fill_random(self, rng: np.random.Generator) -> None:
        """Random inputs of the right dtype, as TFLite's benchmark_model does, at --seq-len or the longest."""
        for slot in self.slots:
            buf = slot.buffer
            if np.issubdtype(buf.dtype, np.integer):
                if slot.role == "attention_mask":
                    buf[...] = 1
                elif slot.role == "token_type_ids":
                    buf[...] = 0
                else:  # small ids are valid in any vocabulary
                    buf[...] = rng.integers(1, 100, size=buf.shape, dtype=buf.dtype)
            else:
                buf[...] = rng.standard_normal(buf.shape).astype(buf.dtype)
        self.sequence.length = self.sequence.pad_to or self.seq_len

    @property
    def mac_counter(self) -> MacCounter:
        """Counts this graph's multiply-accumulates per length (work.py), on first use."""
        if self._mac_counter is None:
            names = [d["name"] for d in self.interpreter.get_input_details()]  # the slots' order
            self._mac_counter = MacCounter(self.artifact.path, self.backend.interpreter_class,
                                           {name: slot.role for name, slot in zip(names, self.slots)}, self.dynamic)
        return self._mac_counter

    @property
    def run_length(self) -> int:
        """The sequence length the prepared request runs at."""
        return self.sequence.length

    def _resize(self, length: int) -> None:
        start = time.perf_counter()
        try:
            for slot in self.slots:
                self.interpreter.resize_tensor_input(slot.index, [1, length])
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), "no message")
            raise EdgeError(f"{self.backend.name} {self.backend.version} cannot resize the graph to {length} "
                            f"tokens: {first}", "convert the model with --fixed-length",
                            exit_code=EXIT_RUNTIME_REFUSED) from None
        self.length = length
        self.resizes += 1
        self.resize_seconds += time.perf_counter() - start

    def run_prepared(self) -> np.ndarray:
        """set inputs + invoke + read logits of the buffers as they are (resized first when a
        length-aware graph gets another length than the previous request)."""
        interpreter = self.interpreter
        length = self.sequence.length
        if length != self.length:
            self._resize(length)
        for slot in self.slots:
            interpreter.set_tensor(slot.index, slot.buffer[:, :length])
        try:
            interpreter.invoke()
        except RuntimeError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), "no message")
            raise EdgeError(f"inference failed at {length} tokens in {self.backend.name} {self.backend.version}: "
                            f"{first}",
                            "check that the inputs fit the graph (vocabulary size, sequence length)",
                            exit_code=EXIT_RUNTIME_REFUSED) from None
        return interpreter.get_tensor(self.output_index)

    def logits(self, texts) -> np.ndarray:
        self.require_tokenizer()
        rows = []
        for text in texts:
            self.prepare(text)
            rows.append(self.run_prepared().reshape(-1).astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def predict_one(self, text: str) -> Prediction:
        return self.predict_ids(self.tokenize(text))

    def predict_ids(self, ids: list) -> Prediction:
        """The prediction for token ids from `tokenize`."""
        tokens = self.prepare_ids(ids)
        prediction = self.to_prediction(self.run_prepared())
        prediction.tokens = tokens
        return prediction

    def to_prediction(self, raw_logits: np.ndarray) -> Prediction:
        # Plain floats: on a few logits numpy's per-call overhead cost ~50 us per text between
        # inferences, 5 % of a TinyBERT request at dev's lengths (README: what edge-run adds).
        logits = [float(x) for x in raw_logits.reshape(-1).tolist()]
        probabilities = softmax(logits)
        index = max(range(len(logits)), key=logits.__getitem__)  # the first of equal maxima, as argmax
        label = self.labels[index] if index < len(self.labels) else str(index)
        return Prediction(index, label, probabilities[index], probabilities, logits)


def softmax(logits: list) -> list:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _guess_role(tensor_name: str) -> str:
    """Role of an input of a plain .tflite, from its name (only used for random bench inputs)."""
    name = tensor_name.lower()
    if "mask" in name:
        return "attention_mask"
    if "type" in name or "segment" in name:
        return "token_type_ids"
    return "input_ids"


def _roles_by_tensor_name(metadata: dict, details: list) -> dict:
    """Map interpreter input names to roles; metadata names must match the graph's inputs."""
    graph_names = [d["name"] for d in details]
    roles = {}
    for entry in metadata["inputs"]:
        name = entry["name"]
        if name not in graph_names:
            raise EdgeError(f"metadata names input {name!r}, but the graph's inputs are {graph_names}",
                            "the metadata does not belong to this graph; re-create the artifact")
        roles[name] = entry["role"]
    missing = [n for n in graph_names if n not in roles]
    if missing:
        raise EdgeError(f"graph inputs {missing} have no role in the metadata", "re-create the artifact")
    return roles


def takes_any_length(input_details: list) -> bool:
    """A length-aware graph: an input dimension of -1 in its shape signature."""
    return any(-1 in [int(x) for x in d["shape_signature"]] for d in input_details)


def graph_takes_any_length(path, backend: str = "auto") -> Optional[bool]:
    """Whether a .tflite's graph takes any sequence length; None when it does not load here (its run
    will say why)."""
    try:
        return takes_any_length(open_interpreter(resolve_backend(backend), model_path=path).get_input_details())
    except EdgeError:
        return None


def load_model(path, backend: str = "auto", threads: Optional[int] = None, verify: bool = True,
               delegate: str = DEFAULT_DELEGATE) -> Model:
    """Read, verify and load an artifact; `init_seconds` covers read + load + allocate."""
    start = time.perf_counter()
    artifact = read_artifact(Path(path), verify=verify)
    chosen = with_delegate(resolve_backend(backend), delegate)
    interpreter = open_interpreter(chosen, threads=threads, model_path=artifact.path)
    return Model(artifact, chosen, interpreter, init_seconds=time.perf_counter() - start)
